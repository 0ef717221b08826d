//! Running assigned Jobs: claim, run the shared executor with sinks that post to
//! the server, report the end. One task per Job; `cancel` cancels its token.
//!
//! A runner that restarts asks the server for the Jobs assigned to it and runs them
//! again from their claim: the log sink resumes at the lengths the server holds, so
//! nothing is sent twice. A server that refuses a report with `StaleEpoch` (the Job
//! was handed to another runner) makes the run stop at once.
//!
//! The log sink keeps, per running step, the bytes it has sent (at most
//! [`STEP_LOG_KEEP`]): a controller that lost its log store (e.g. restarted on an
//! emptyDir) refuses the next chunk with 409 `LogGap` and the stored length, and the
//! sink re-sends from there out of that buffer, then goes on. It keeps finished
//! steps' bytes too, while the Job runs (at most [`JOB_LOG_KEEP`] in all): each
//! time the control channel opens again (a controller restarted, or another
//! replica took over), every kept log is checked against the server's length and
//! what it lacks is sent again, so a new leader on an empty log store ends up
//! with the whole log of every running Job.

use crate::domain::backoff::Schedule;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use super::BackendKind;
use super::client::{Client, ClientError};
use crate::backend::{JobTarget, KubernetesBackend, LocalBackend, LogChunk, Workflow};
use crate::crd::job::{JobPhase, StepStatus};
use crate::executor::{
    CancellationToken, Executor, ExecutorOptions, JobReport, LogSink, Recorded, StatusSink,
};
use crate::protocol::jobs::{AppendQuery, ClaimRequest, ClaimResponse, MAX_LOG_BODY, StatusReport};

mod direct;
mod sent;
mod upload;
use sent::{JOB_LOG_KEEP, STEP_LOG_KEEP, SentLog, gap_stored, resend_from};

/// Jobs in progress: (namespace, name) -> (epoch, its cancel token).
type Running = HashMap<(String, String), (i64, CancellationToken)>;

/// What a runner needs to run Jobs.
#[derive(Clone)]
pub struct JobRunner {
    pub client: Client,
    pub runner: String,
    pub backend: BackendKind,
    /// Local backend: workspaces live under here.
    pub work_dir: PathBuf,
    /// Kubernetes backend: the client step pods are created with.
    pub kube: Option<kube::Client>,
    /// Kubernetes backend: the image step pods copy `baton-entrypoint` from.
    pub tools_image: String,
    /// `--direct-only`, and the local backend's fixed workspace: see [`direct`].
    direct_only: bool,
    workspace: Option<PathBuf>,
    running: Arc<Mutex<Running>>,
    /// Whether a Job was ever started, and a wake-up when one ends.
    started: Arc<std::sync::atomic::AtomicBool>,
    ended: Arc<tokio::sync::Notify>,
    /// Counts control channel openings; running Jobs re-check their logs on each.
    connections: Arc<tokio::sync::watch::Sender<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl JobRunner {
    /// With the local backend, first kills the step processes a runner process
    /// that died left running under `work_dir`: those of Jobs it resumes would be
    /// killed then anyway, and those of Jobs handed to other runners meanwhile
    /// are not resumed here at all.
    pub fn new(
        client: Client,
        runner: String,
        backend: BackendKind,
        work_dir: PathBuf,
        kube: Option<kube::Client>,
    ) -> Self {
        if backend == BackendKind::Local {
            // said once per runner, not per Job: every Job's images are ignored alike
            info!(
                "backend local: steps run as processes in this runner; their images, imagePullPolicy and the Jobs' imagePullSecrets are ignored"
            );
            LocalBackend::reap_orphans(&work_dir);
        }
        Self {
            client,
            runner,
            backend,
            work_dir,
            kube,
            tools_image: crate::backend::DEFAULT_TOOLS_IMAGE.into(),
            direct_only: false,
            workspace: None,
            running: Arc::default(),
            started: Arc::default(),
            ended: Arc::default(),
            connections: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// Step pods get `baton-entrypoint` from `image`.
    pub fn with_tools_image(mut self, image: String) -> Self {
        self.tools_image = image;
        self
    }

    /// The control channel opened (again): running Jobs make sure the server
    /// holds their logs so far.
    pub fn reconnected(&self) {
        self.connections.send_modify(|n| *n += 1);
    }

    /// `--once`: resolves when the first Job run ends, or after `wait` if no Job
    /// was started by then.
    pub async fn once(self, wait: Duration) {
        let idle = async {
            tokio::time::sleep(wait).await;
            if self.started.load(std::sync::atomic::Ordering::SeqCst) {
                futures::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = self.ended.notified() => info!("--once: the Job's run ended; exiting"),
            () = idle => info!(?wait, "--once: no Job was assigned; exiting"),
        }
    }

    /// How many Jobs this runner is running.
    pub fn active(&self) -> usize {
        lock(&self.running).len()
    }

    /// Start a Job at `epoch` unless it already runs at that epoch (a repeated
    /// `assign`); a newer epoch replaces an older run.
    pub fn start(&self, namespace: &str, name: &str, epoch: i64, cancel: bool, token: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        let token_c = CancellationToken::new();
        {
            let mut running = lock(&self.running);
            if let Some((e, t)) = running.get(&key) {
                if *e >= epoch {
                    if cancel {
                        t.cancel();
                    }
                    return;
                }
                t.cancel();
            }
            running.insert(key.clone(), (epoch, token_c.clone()));
            self.started
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if cancel {
            token_c.cancel();
        }
        let this = self.clone();
        let token = token.to_owned();
        // One span per Job run: every line it logs carries the Job and epoch.
        let span = tracing::info_span!("job", namespace = %key.0, name = %key.1, epoch);
        let run = async move {
            this.run_job(&key.0, &key.1, epoch, &token, token_c).await;
            let mut running = lock(&this.running);
            if running.get(&key).is_some_and(|(e, _)| *e == epoch) {
                running.remove(&key);
                this.ended.notify_one();
            }
        };
        tokio::spawn(tracing::Instrument::instrument(run, span));
    }

    /// Cancel a running Job.
    pub fn cancel(&self, namespace: &str, name: &str) -> bool {
        match lock(&self.running).get(&(namespace.to_owned(), name.to_owned())) {
            Some((_, t)) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Run the Job's steps on this runner's backend.
    async fn execute(
        &self,
        ns: &str,
        name: &str,
        claim: &ClaimResponse,
        workflow: &Workflow,
        sink: &Sink,
        cancel: &CancellationToken,
    ) -> Result<JobReport, String> {
        match self.backend {
            BackendKind::Local => {
                // Resumable: a restarted runner finds its steps' records.
                let backend = LocalBackend::new(self.job_dir(ns, name))
                    .resumable()
                    .with_workspace(self.workspace.clone());
                Executor::new(&backend, ExecutorOptions::default())
                    .run(workflow, &claim.spec, sink, sink, cancel)
                    .await
                    .map_err(|e| e.to_string())
            }
            BackendKind::Kubernetes => match &self.kube {
                Some(client) => {
                    // Step pods are found again by their deterministic names and
                    // labels: a restarted runner resumes them (discover), never
                    // starts a running step twice.
                    let mut target =
                        JobTarget::new(ns, name, claim.uid.clone()).with_spec(&claim.spec);
                    target.tools_image = self.tools_image.clone();
                    let backend = KubernetesBackend::new(client.clone(), target);
                    Executor::new(&backend, ExecutorOptions::default())
                        .run(workflow, &claim.spec, sink, sink, cancel)
                        .await
                        .map_err(|e| e.to_string())
                }
                None => Err("no Kubernetes client for the kubernetes backend".to_owned()),
            },
        }
    }

    /// Local backend: where Job `ns/name` runs.
    fn job_dir(&self, ns: &str, name: &str) -> PathBuf {
        self.work_dir.join(ns).join(name)
    }

    async fn run_job(
        &self,
        ns: &str,
        name: &str,
        epoch: i64,
        token: &str,
        cancel: CancellationToken,
    ) {
        let req = ClaimRequest {
            runner: self.runner.clone(),
            epoch,
        };
        let mut attempt = 0u32;
        let claim = loop {
            match self.client.claim(ns, name, &req, token).await {
                Ok(c) => break c,
                Err(e @ ClientError::Refused { .. }) if e.status() != Some(503) => {
                    warn!(namespace = ns, job = name, epoch, "claim refused: {e}");
                    return;
                }
                Err(e) => {
                    attempt += 1;
                    if attempt > 10 || cancel.is_cancelled() {
                        warn!(namespace = ns, job = name, "claim failed: {e}");
                        return;
                    }
                    tokio::time::sleep(CLAIM.pause(attempt - 1)).await;
                }
            }
        };
        info!(namespace = ns, job = name, epoch, uid = %claim.uid, "job claimed; running");
        let sink = Sink {
            client: self.client.clone(),
            runner: self.runner.clone(),
            token: token.to_owned(),
            claim: claim.clone(),
            fenced: CancellationToken::new(),
            sent: Mutex::default(),
            local_root: (self.backend == BackendKind::Local).then(|| self.job_dir(ns, name)),
        };
        if self.refused(&claim, &sink).await {
            return;
        }
        let workflow = Workflow::new(claim.uid.clone());
        let run = self.execute(ns, name, &claim, &workflow, &sink, &cancel);
        let mut connections = self.connections.subscribe();
        connections.mark_unchanged();
        let replays = async {
            while connections.changed().await.is_ok() {
                sink.replay().await;
            }
            futures::future::pending::<()>().await;
        };
        let mut run = std::pin::pin!(run);
        let outcome = tokio::select! {
            outcome = &mut run => outcome,
            () = replays => Err("the runner stopped".to_owned()),
            () = sink.fenced.cancelled() => {
                if self.backend == BackendKind::Kubernetes {
                    // The Job's new runner adopts the step pods: leave them alone
                    // (cancelling would delete pods that are no longer ours).
                    info!(namespace = ns, job = name, epoch, "fenced off: leaving the step pods to the Job's new runner");
                    return;
                }
                // Local processes cannot be adopted: stop them, report nothing.
                cancel.cancel();
                let _ = run.await;
                info!(namespace = ns, job = name, epoch, "fenced off: local steps stopped");
                return;
            }
        };
        let report = match outcome {
            Ok(r) => StatusReport {
                runner: self.runner.clone(),
                epoch,
                phase: Some(r.phase),
                reason: r.reason,
                message: r.message,
                outputs: Some(r.outputs),
                ..Default::default()
            },
            Err(message) => StatusReport {
                runner: self.runner.clone(),
                epoch,
                phase: Some(JobPhase::Failed),
                reason: Some("RunFailed".into()),
                message: Some(message),
                ..Default::default()
            },
        };
        info!(namespace = ns, job = name, phase = ?report.phase, reason = ?report.reason, "job ended");
        sink.post(&report).await;
    }
}

/// A refusal that repeating will not change (bad request, gap, unknown Job).
/// Unreachable, 503 (a controller starting) and 401/403 (its token cache not
/// synced yet) are retried.
fn is_permanent(e: &ClientError) -> bool {
    matches!(e.status(), Some(400 | 404 | 409 | 413 | 415))
}

/// Status reports and log appends: 250 ms, doubling, at most 5 s (with jitter).
const CALLS: Schedule = Schedule::new(Duration::from_millis(250), Duration::from_secs(5));
/// A claim: 200 ms, doubling, at most 2 s, ten tries.
const CLAIM: Schedule = Schedule::new(Duration::from_millis(200), Duration::from_secs(2));

fn retry_pause(attempt: u64) -> Duration {
    CALLS.pause(u32::try_from(attempt).unwrap_or(u32::MAX))
}

/// Status and log sink of one run: everything goes to the server.
struct Sink {
    client: Client,
    runner: String,
    token: String,
    claim: ClaimResponse,
    /// Set when the server fences this run off (the Job moved to a new epoch, or
    /// is no longer active): see `run_job` for what the run does then.
    fenced: CancellationToken,
    /// Per running step: the bytes sent so far, for a resend after a `LogGap`.
    sent: Mutex<HashMap<String, SentLog>>,
    /// Local backend: the Job's directory (its change archives are under it).
    local_root: Option<PathBuf>,
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
    /// Post until the server takes it (a restarting controller is waited for); a
    /// fencing refusal stops the run, a malformed request is dropped.
    async fn post(&self, report: &StatusReport) {
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
        self.post(&StatusReport {
            runner: self.runner.clone(),
            epoch: self.claim.epoch,
            step: Some(without_changes.unwrap_or_else(|| status.clone())),
            ..Default::default()
        })
        .await;
    }

    async fn job_changed(&self, phase: JobPhase, reason: Option<&str>) {
        // The end is reported once, with the outputs, after the run.
        if phase.is_finished() {
            return;
        }
        self.post(&StatusReport {
            runner: self.runner.clone(),
            epoch: self.claim.epoch,
            phase: Some(phase),
            reason: reason.map(str::to_owned),
            ..Default::default()
        })
        .await;
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
    fn record(&self, chunk: &LogChunk) {
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
    async fn replay(&self) {
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
    fn resend(&self, step: &str, stored: u64) -> Option<(u64, Vec<u8>)> {
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

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;
