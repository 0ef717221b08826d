//! Following a step pod's log: from its start (the log API has no byte offsets),
//! through the [`Unframer`] and the [`Masker`] (both deterministic functions of
//! the whole log, so every read yields the same bytes at the same offsets),
//! skipping what the caller already holds, re-opened the same way when the
//! connection drops before the container ended.

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, StreamExt};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod, Secret};
use kube::api::{Api, LogParams};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::outputs::{Frame, Unframer, unframe};
use super::pod::CONTAINER;
use super::{AttemptState, is_status, kube_err, lock, secrets, watch};
use crate::backend::mask::{Masker, Patterns};
use crate::backend::{BackendError, LogChunk, LogStream};

const READ_SIZE: usize = 64 * 1024;
/// Re-opened connections in a row that brought no new byte before giving up.
const MAX_REOPEN: u32 = 10;
/// The pause before re-opening a log that ended early: 200 ms, doubling, at most 2 s.
const REOPEN: crate::domain::backoff::Schedule =
    crate::domain::backoff::Schedule::new(Duration::from_millis(200), Duration::from_secs(2));
/// After a log stream ended: how long the pod's status may lag behind the
/// container's end before the stream is taken as dropped and re-opened.
const STATUS_LAG: Duration = Duration::from_secs(5);

fn log_params(follow: bool) -> LogParams {
    LogParams {
        follow,
        container: Some(CONTAINER.into()),
        ..Default::default()
    }
}

/// The attempt's log from `from_offset` (of the step's log) on, in a task that
/// ends with the container or when the stream is dropped.
pub fn follow(
    pods: Api<Pod>,
    secrets: Api<Secret>,
    attempt: Arc<AttemptState>,
    from_offset: u64,
    span: tracing::Span,
) -> LogStream {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(run(pods, secrets, attempt, from_offset, tx).instrument(span));
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

/// Where the stripped log stands: what was delivered or skipped.
struct Cursor {
    /// The attempt's first byte in the step's log.
    base: u64,
    /// Stripped bytes of this attempt delivered (or skipped as already held).
    done: u64,
    /// Stripped bytes of the current read of the log.
    pos: u64,
}

impl Cursor {
    /// The part of `bytes` (the next stripped bytes of this read) not delivered yet.
    fn take(&mut self, bytes: Vec<u8>) -> Option<LogChunk> {
        let start = self.pos;
        self.pos += bytes.len() as u64;
        if self.pos <= self.done {
            return None;
        }
        let from = self.done.max(start);
        let skip = usize::try_from(from - start).unwrap_or(usize::MAX);
        self.done = self.pos;
        Some(LogChunk {
            step: String::new(),
            offset: self.base + from,
            bytes: bytes.get(skip..).unwrap_or_default().to_vec(),
        })
    }
}

type Sender = mpsc::Sender<Result<LogChunk, BackendError>>;

async fn send(tx: &Sender, step: &str, chunk: Option<LogChunk>) -> bool {
    match chunk {
        Some(mut chunk) if !chunk.bytes.is_empty() => {
            chunk.step = step.to_owned();
            tx.send(Ok(chunk)).await.is_ok()
        }
        _ => true,
    }
}

/// The Secret values to mask; `None` (after telling the reader why) when they
/// cannot be read: then no byte of the log is passed on.
async fn secrets_of(
    secrets: &Api<Secret>,
    attempt: &AttemptState,
    tx: &Sender,
) -> Option<Patterns> {
    match secrets::of_attempt(secrets, attempt).await {
        Ok(patterns) => Some(patterns),
        Err(error) => {
            let _ = tx.send(Err(error)).await;
            None
        }
    }
}

async fn run(
    pods: Api<Pod>,
    secrets: Api<Secret>,
    attempt: Arc<AttemptState>,
    from_offset: u64,
    tx: Sender,
) {
    let step = attempt.step.clone();
    let mut cursor = Cursor {
        base: attempt.log_offset,
        done: from_offset.saturating_sub(attempt.log_offset),
        pos: 0,
    };
    let mut fruitless = 0;
    loop {
        if !watch::wait_log_ready(&pods, &attempt).await {
            tracing::debug!(pod = %attempt.pod, "the step pod has no log and never will");
            return;
        }
        let Some(patterns) = secrets_of(&secrets, &attempt, &tx).await else {
            return;
        };
        let before = cursor.done;
        cursor.pos = 0;
        let mut unframer = Unframer::new(&attempt.nonce);
        let mut masker = Masker::new(patterns);
        match pods.log_stream(&attempt.pod, &log_params(true)).await {
            Ok(reader) => {
                let mut reader = std::pin::pin!(reader);
                let mut buf = vec![0u8; READ_SIZE];
                loop {
                    match reader.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            let out = masker.push(&unframer.push(&buf[..n]));
                            if !send(&tx, &step, cursor.take(out)).await {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, pod = %attempt.pod, "read the step log; re-opening it");
                            break;
                        }
                    }
                }
            }
            Err(e) if is_status(&e, kube::core::Status::is_not_found) => return,
            Err(e) => tracing::warn!(error = %e, pod = %attempt.pod, "open the step log"),
        }
        if watch::wait_finished(&pods, &attempt, STATUS_LAG).await {
            // The container ended: this read was the whole log.
            let (rest, frame) = unframer.finish();
            let mut rest = masker.push(&rest);
            rest.extend(masker.finish());
            if !send(&tx, &step, cursor.take(rest)).await {
                return;
            }
            *lock(&attempt.frame) = frame;
            return;
        }
        fruitless = if cursor.done > before {
            0
        } else {
            fruitless + 1
        };
        if fruitless >= MAX_REOPEN {
            let message = format!(
                "the log of pod {} kept ending before its container did",
                attempt.pod
            );
            let _ = tx
                .send(Err(BackendError::Failed {
                    step: step.clone(),
                    doing: "follow the step log",
                    message,
                }))
                .await;
            return;
        }
        if fruitless > 0 {
            tokio::time::sleep(REOPEN.pause(fruitless - 1)).await;
        }
    }
}

/// The outputs frame of an ended attempt, read from its whole log (when no tail
/// read it to the end). `None` if it printed none or its pod is gone.
pub async fn read_frame(
    pods: &Api<Pod>,
    attempt: &AttemptState,
) -> Result<Option<Frame>, BackendError> {
    if attempt.unwrapped {
        let frame = termination_outputs(pods, attempt).await?;
        *lock(&attempt.frame) = frame.clone();
        return Ok(frame);
    }
    let step = attempt.step.as_str();
    let reader = match pods.log_stream(&attempt.pod, &log_params(false)).await {
        Ok(reader) => reader,
        Err(e) if is_status(&e, kube::core::Status::is_not_found) => return Ok(None),
        Err(e) => return Err(kube_err(step, "read the step log for $BATON_OUTPUT")(e)),
    };
    let mut log = Vec::new();
    std::pin::pin!(reader)
        .read_to_end(&mut log)
        .await
        .map_err(|source| BackendError::Io {
            step: step.to_owned(),
            doing: "read the step log for $BATON_OUTPUT",
            source,
        })?;
    let (_, frame) = unframe(&attempt.nonce, &log);
    *lock(&attempt.frame) = frame.clone();
    Ok(frame)
}

/// The outputs of a step that ran its image's own entrypoint (no wrapper to
/// frame them): the termination message, which the kubelet read from
/// `$BATON_OUTPUT` (see `pod::step_pod`).
async fn termination_outputs(
    pods: &Api<Pod>,
    attempt: &AttemptState,
) -> Result<Option<Frame>, BackendError> {
    // The attempt's watch saw the pod end: its termination message is there.
    let seen = attempt.last_seen().filter(|p| terminated(p).is_some());
    let pod = match seen {
        Some(pod) => Ok(Some((*pod).clone())),
        None => pods.get_opt(&attempt.pod).await,
    };
    let pod = match pod {
        Ok(Some(pod)) => pod,
        Ok(None) => return Ok(None),
        Err(e) => {
            return Err(kube_err(
                &attempt.step,
                "read the step pod for $BATON_OUTPUT",
            )(e));
        }
    };
    let message = terminated(&pod).and_then(|t| t.message.clone());
    Ok(message
        .filter(|m| !m.is_empty())
        .map(|m| Frame::of_file(m.as_bytes())))
}

/// The step container's end, if it ended.
fn terminated(pod: &Pod) -> Option<&ContainerStateTerminated> {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(base: u64, done: u64) -> Cursor {
        Cursor { base, done, pos: 0 }
    }

    #[test]
    fn a_fresh_read_delivers_everything_at_the_base() {
        let mut c = cursor(100, 0);
        let chunk = c.take(b"abc".to_vec()).unwrap_or_else(|| panic!("a chunk"));
        assert_eq!((chunk.offset, chunk.bytes.as_slice()), (100, &b"abc"[..]));
        let chunk = c.take(b"de".to_vec()).unwrap_or_else(|| panic!("a chunk"));
        assert_eq!((chunk.offset, chunk.bytes.as_slice()), (103, &b"de"[..]));
    }

    #[test]
    fn a_resumed_read_skips_what_the_caller_holds() {
        // The caller holds 4 bytes; a re-read delivers from the 5th on, once.
        let mut c = cursor(0, 4);
        assert!(c.take(b"abc".to_vec()).is_none());
        let chunk = c.take(b"def".to_vec()).unwrap_or_else(|| panic!("a chunk"));
        assert_eq!((chunk.offset, chunk.bytes.as_slice()), (4, &b"ef"[..]));
        // The connection drops; the next read starts over.
        c.pos = 0;
        assert!(c.take(b"abcdef".to_vec()).is_none());
        let chunk = c.take(b"gh".to_vec()).unwrap_or_else(|| panic!("a chunk"));
        assert_eq!((chunk.offset, chunk.bytes.as_slice()), (6, &b"gh"[..]));
    }
}
