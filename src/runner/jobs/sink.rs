//! The sink of one run: step and Job status reports and log chunks, all posted
//! to the server (see the module above for how logs survive a new leader).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use tracing::{debug, info, warn};

use super::coalesce::{Coalesce, Part};
use super::sent::{JOB_LOG_KEEP, STEP_LOG_KEEP, SentLog, gap_stored, resend_from};
use super::{is_permanent, lock, retry_pause};
use crate::backend::LogChunk;
use crate::crd::job::{JobPhase, StepStatus};
use crate::executor::{CancellationToken, LogSink, Recorded, StatusSink};
use crate::protocol::jobs::{AppendQuery, ClaimResponse, MAX_LOG_BODY, StatusReport};
use crate::runner::client::{Client, ClientError};

/// Status and log sink of one run: everything goes to the server.
pub(super) struct Sink {
    pub(super) client: Client,
    pub(super) runner: String,
    pub(super) token: String,
    pub(super) claim: ClaimResponse,
    /// Set when the server fences this run off (the Job moved to a new epoch, or
    /// is no longer active): see `run_job` for what the run does then.
    pub(super) fenced: CancellationToken,
    /// Per running step: the bytes sent so far, for a resend after a `LogGap`.
    pub(super) sent: Mutex<HashMap<String, SentLog>>,
    /// The Job's directory on the runner (its change archives are under it).
    pub(super) archive_root: Option<PathBuf>,
    /// Reports held for the next one (see `coalesce`).
    pub(super) held: Mutex<Coalesce>,
}

/// How one POST of log bytes went.
enum Sent {
    Done,
    /// 409 `LogGap`: the server holds this many bytes.
    Gap(u64),
    /// Fenced off (the run is cancelled) or refused for good.
    Stopped,
}

impl Sink {
    /// End the Job Failed before any step ran, saying why.
    pub(super) async fn fail(&self, reason: &str, message: String) {
        warn!(namespace = %self.claim.namespace, job = %self.claim.name, reason, "job not run: {message}");
        self.finish(StatusReport {
            runner: self.runner.clone(),
            epoch: self.claim.epoch,
            phase: Some(JobPhase::Failed),
            reason: Some(reason.to_owned()),
            message: Some(message),
            ..Default::default()
        })
        .await;
    }

    /// Post the Job's final report, with a held step end riding on it.
    pub(super) async fn finish(&self, mut report: StatusReport) {
        let held = lock(&self.held).finish();
        match (held, &report.step) {
            (Some(step), None) => report.step = Some(step),
            (Some(step), Some(_)) => self.post(&self.report(Part::of_step(step))).await,
            (None, _) => {}
        }
        self.post(&report).await;
    }

    fn report(&self, part: Part) -> StatusReport {
        let (phase, reason) = part.phase.unzip();
        StatusReport {
            runner: self.runner.clone(),
            epoch: self.claim.epoch,
            step: part.step,
            phase,
            reason: reason.flatten(),
            ..Default::default()
        }
    }

    /// Post each part, but none that only restates what the claim read.
    async fn post_all(&self, parts: Vec<Part>) {
        let started = self.claim.start_time.is_some();
        for part in parts {
            if part.restates(&self.claim.steps, started) {
                debug!(job = %self.claim.name, step = ?part.step.as_ref().map(|s| &s.name), "not reported: the claim shows it recorded");
                continue;
            }
            self.post(&self.report(part)).await;
        }
    }

    /// Post until the server takes it (a restarting controller is waited for); a
    /// fencing refusal stops the run, a malformed request is dropped.
    pub(super) async fn post(&self, report: &StatusReport) {
        for attempt in 0u64.. {
            match self
                .client
                .report(&self.claim.namespace, &self.claim.name, report, &self.token)
                .await
            {
                Ok(()) => return,
                Err(e @ ClientError::Refused { status: 409, .. }) => {
                    warn!(job = %self.claim.name, "fenced off, stopping the run: {e}");
                    self.fenced.cancel();
                    return;
                }
                Err(e) if is_permanent(&e) => {
                    warn!(job = %self.claim.name, "report refused, dropped: {e}");
                    return;
                }
                Err(e) => {
                    warn!(job = %self.claim.name, attempt, "report failed, retrying: {e}");
                    tokio::time::sleep(retry_pause(attempt)).await;
                }
            }
        }
    }
}

impl StatusSink for Sink {
    async fn step_changed(&self, status: &StepStatus) {
        if status.phase.is_finished() {
            // Kept for a replay to a new leader, while the Job's total allows.
            let mut sent = lock(&self.sent);
            let total: usize = sent.values().map(|l| l.bytes.len()).sum();
            if total > JOB_LOG_KEEP && sent.remove(&status.name).is_some() {
                warn!(
                    job = %self.claim.name,
                    step = %status.name,
                    kept = JOB_LOG_KEEP,
                    "the Job's kept logs are over the bound: this finished step's log cannot be replayed to a new controller"
                );
            }
        }
        let without_changes = self.upload_changes(status).await;
        let status = without_changes.unwrap_or_else(|| status.clone());
        let parts = lock(&self.held).step(status);
        self.post_all(parts).await;
    }

    async fn job_changed(&self, phase: JobPhase, reason: Option<&str>) {
        // The end is reported once, with the outputs, after the run.
        if phase.is_finished() {
            return;
        }
        let parts = lock(&self.held).job(phase, reason);
        self.post_all(parts).await;
    }

    /// A step's start is posted (and taken) before its pod or process is made; a
    /// report refused for good is dropped, but then a second start of the same
    /// attempt finds its pod by name and adopts it.
    fn records_starts(&self) -> bool {
        true
    }

    /// What the claim says was recorded: a resumed run continues its clocks.
    fn recorded(&self) -> Recorded {
        Recorded {
            start_time: self.claim.start_time.clone(),
            steps: self.claim.steps.clone(),
        }
    }
}

impl Sink {
    /// POST `bytes` of `step`'s log at `offset` until the server answers.
    async fn send(&self, step: &str, offset: u64, bytes: &[u8]) -> Sent {
        let q = AppendQuery {
            step: step.to_owned(),
            offset,
            runner: self.runner.clone(),
            epoch: self.claim.epoch,
        };
        for attempt in 0u64.. {
            match self
                .client
                .append_log(
                    &self.claim.namespace,
                    &self.claim.name,
                    &q,
                    bytes.to_vec(),
                    &self.token,
                )
                .await
            {
                Ok(_) => return Sent::Done,
                Err(ClientError::Refused {
                    status: 409,
                    reason,
                    message,
                    ..
                }) if reason == "StaleEpoch" || reason == "NotActive" => {
                    warn!(job = %self.claim.name, "fenced off, stopping the run: {message}");
                    self.fenced.cancel();
                    return Sent::Stopped;
                }
                Err(ClientError::Refused {
                    status: 409,
                    reason,
                    message,
                    ..
                }) if reason == "LogGap" && gap_stored(&message).is_some() => {
                    return Sent::Gap(gap_stored(&message).unwrap_or_default());
                }
                Err(e) if is_permanent(&e) => {
                    warn!(job = %self.claim.name, step, "log chunk refused, dropped: {e}");
                    return Sent::Stopped;
                }
                Err(e) => {
                    warn!(job = %self.claim.name, step, attempt, "log append failed, retrying: {e}");
                    tokio::time::sleep(retry_pause(attempt)).await;
                }
            }
        }
        Sent::Stopped
    }

    /// Keep a chunk for a later resend.
    pub(super) fn record(&self, chunk: &LogChunk) {
        let mut sent = lock(&self.sent);
        let log = sent
            .entry(chunk.step.clone())
            .or_insert_with(|| SentLog::new(chunk.offset));
        if log.record(chunk.offset, &chunk.bytes, STEP_LOG_KEEP) {
            warn!(
                job = %self.claim.name,
                step = %chunk.step,
                kept = STEP_LOG_KEEP,
                "step log longer than the resend buffer: only its first bytes are kept for a resend"
            );
        }
    }

    /// After the control channel opened again: each kept step log's last byte is
    /// sent again. A server holding it all ignores it; one holding less answers
    /// `LogGap` and [`LogSink::append`] sends what it lacks. (A one-byte probe,
    /// not an empty one: the server requires a Content-Length, which an empty
    /// body does not always carry.)
    pub(super) async fn replay(&self) {
        let tails: Vec<LogChunk> = lock(&self.sent)
            .iter()
            .filter_map(|(step, log)| {
                let last = *log.bytes.last()?;
                Some(LogChunk {
                    step: step.clone(),
                    offset: log.end() - 1,
                    bytes: vec![last],
                })
            })
            .collect();
        for tail in tails {
            self.append(tail).await;
        }
    }

    /// The kept bytes of `step` from `stored` on (a copy), with their offset.
    pub(super) fn resend(&self, step: &str, stored: u64) -> Option<(u64, Vec<u8>)> {
        let sent = lock(&self.sent);
        let log = sent.get(step)?;
        resend_from(log.start, &log.bytes, stored).map(|(o, b)| (o, b.to_vec()))
    }
}

impl LogSink for Sink {
    async fn append(&self, chunk: LogChunk) {
        self.record(&chunk);
        let chunk_end = chunk.offset + chunk.bytes.len() as u64;
        // Each round re-sends from the server's length; a server that keeps losing
        // what it was sent is not chased for ever.
        'rounds: for _ in 0..4 {
            let stored = match self.send(&chunk.step, chunk.offset, &chunk.bytes).await {
                Sent::Done | Sent::Stopped => return,
                Sent::Gap(stored) => stored,
            };
            let Some((from, bytes)) = self.resend(&chunk.step, stored) else {
                warn!(
                    job = %self.claim.name,
                    step = %chunk.step,
                    offset = chunk.offset,
                    stored,
                    "log gap: the server lacks bytes this runner no longer holds; chunk dropped"
                );
                return;
            };
            info!(
                job = %self.claim.name,
                step = %chunk.step,
                from,
                bytes = bytes.len(),
                "log gap: the server holds less than was sent; resending"
            );
            let piece = usize::try_from(MAX_LOG_BODY).unwrap_or(usize::MAX);
            let mut offset = from;
            for part in bytes.chunks(piece) {
                match self.send(&chunk.step, offset, part).await {
                    Sent::Done => offset += part.len() as u64,
                    Sent::Gap(_) => continue 'rounds,
                    Sent::Stopped => return,
                }
            }
            if offset >= chunk_end {
                return;
            }
        }
        warn!(job = %self.claim.name, step = %chunk.step, offset = chunk.offset, "log gap persists; chunk dropped");
    }

    fn resume_offset(&self, step: &str) -> u64 {
        self.claim.log_offsets.get(step).copied().unwrap_or(0)
    }
}
