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
use crate::backend::kubernetes::{ListedPods, ListedSoon, PodHub};
use crate::backend::{JobTarget, KubernetesBackend, LocalBackend, Workflow};
use crate::crd::job::JobPhase;
use crate::executor::{CancellationToken, Executor, ExecutorOptions, JobReport};
use crate::protocol::jobs::{Assignment, ClaimRequest, ClaimResponse, StatusReport};

mod coalesce;
mod content;
mod direct;
mod sent;
mod sink;
mod upload;
use sink::Sink;

/// Jobs in progress: (namespace, name) -> (epoch, its cancel token).
type Running = HashMap<(String, String), (i64, CancellationToken)>;

/// Resumed Jobs whose step pods are listed with their namespace's, until
/// their run takes that list: (namespace, name) -> it.
type Listed = HashMap<(String, String), ListedSoon>;

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
    /// Kubernetes backend: one watch per namespace over this runner's step pods.
    pod_hub: Option<Arc<PodHub>>,
    /// Kubernetes backend: the image step pods copy `baton-entrypoint` from.
    pub tools_image: String,
    /// `--direct-only`, and the local backend's fixed workspace: see [`direct`].
    direct_only: bool,
    workspace: Option<PathBuf>,
    running: Arc<Mutex<Running>>,
    listed: Arc<Mutex<Listed>>,
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
        let pod_hub = (kube.as_ref()).map(|k| Arc::new(PodHub::new(k.clone(), &runner)));
        Self {
            client,
            runner,
            backend,
            work_dir,
            kube,
            pod_hub,
            tools_image: crate::backend::DEFAULT_TOOLS_IMAGE.into(),
            direct_only: false,
            workspace: None,
            running: Arc::default(),
            listed: Arc::default(),
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

    /// Start the Jobs the server lists as assigned to this runner in `namespace`
    /// (after a restart, on each reconnect). With the kubernetes backend, those
    /// with no run here yet find their step pods in one list of the namespace's
    /// ([`ListedPods`]), not in a list each: a thousand resumed Jobs, one list.
    /// It is taken while they claim; a run that discovers waits for it.
    pub fn resume(&self, namespace: &str, assigned: Vec<Assignment>, token: &str) {
        if let (Some(kube), BackendKind::Kubernetes) = (&self.kube, self.backend) {
            let running = lock(&self.running);
            // No run here: their pods are made by their own runs, after the list.
            let idle: Vec<_> = (assigned.iter())
                .map(|a| (a.namespace.clone(), a.name.clone()))
                .filter(|k| k.0 == namespace && !running.contains_key(k))
                .collect();
            if !idle.is_empty() {
                let pods = ListedPods::soon(kube.clone(), namespace.to_owned());
                let mut listed = lock(&self.listed);
                listed.retain(|(ns, _), _| ns != namespace);
                listed.extend(idle.into_iter().map(|k| (k, pods.clone())));
            }
        }
        for a in assigned {
            info!(namespace = %a.namespace, job = %a.name, epoch = a.epoch, "resuming an assigned job");
            self.start(&a.namespace, &a.name, a.epoch, a.cancel, token);
        }
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
        claim: &ClaimResponse,
        content: Option<&std::path::Path>,
        workflow: &Workflow,
        sink: &Sink,
        cancel: &CancellationToken,
    ) -> Result<JobReport, RunError> {
        let (ns, name) = (claim.namespace.as_str(), claim.name.as_str());
        match self.backend {
            BackendKind::Local => {
                // Resumable: a restarted runner finds its steps' records.
                let backend = LocalBackend::new(self.job_dir(ns, name))
                    .resumable()
                    .with_workspace(self.workspace.clone());
                Executor::new(&backend, ExecutorOptions::default())
                    .run_seeded(workflow, &claim.spec, content, sink, sink, cancel)
                    .await
                    .map_err(RunError::from)
            }
            BackendKind::Kubernetes => match (&self.kube, &self.pod_hub) {
                (Some(client), Some(hub)) => {
                    // Step pods are found again by their deterministic names and
                    // labels: a restarted runner resumes them (discover), never
                    // starts a running step twice.
                    let mut target =
                        JobTarget::new(ns, name, claim.uid.clone()).with_spec(&claim.spec);
                    target.tools_image = self.tools_image.clone();
                    let mut backend = KubernetesBackend::new(client.clone(), target)
                        .with_archive_root(self.job_dir(ns, name))
                        .with_pod_hub(hub.clone());
                    let listed = lock(&self.listed).remove(&(ns.to_owned(), name.to_owned()));
                    if let Some(pods) = listed {
                        backend = backend.with_listed(pods);
                    }
                    Executor::new(&backend, ExecutorOptions::default())
                        .run_seeded(workflow, &claim.spec, content, sink, sink, cancel)
                        .await
                        .map_err(RunError::from)
                }
                _ => Err(RunError::failed(
                    "no Kubernetes client for the kubernetes backend",
                )),
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
            archive_root: Some(self.job_dir(ns, name)),
            held: Mutex::default(),
        };
        if self.refused(&claim, &sink).await {
            return;
        }
        let content = match self.content(&claim, &sink).await {
            Ok(content) => content,
            Err((reason, message)) => return sink.fail(reason, message).await,
        };
        let workflow = Workflow::new(claim.uid.clone());
        let run = self.execute(&claim, content.as_deref(), &workflow, &sink, &cancel);
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
            () = replays => Err(RunError::failed("the runner stopped")),
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
            Err(RunError { reason, message }) => StatusReport {
                runner: self.runner.clone(),
                epoch,
                phase: Some(JobPhase::Failed),
                reason: Some(reason.to_owned()),
                message: Some(message),
                ..Default::default()
            },
        };
        info!(namespace = ns, job = name, phase = ?report.phase, reason = ?report.reason, "job ended");
        sink.finish(report).await;
    }
}

/// Why a run ended before the executor could report: the Job's reason and message.
struct RunError {
    reason: &'static str,
    message: String,
}

impl RunError {
    fn failed(message: &str) -> Self {
        Self {
            reason: "RunFailed",
            message: message.to_owned(),
        }
    }
}

impl From<crate::executor::ExecutorError> for RunError {
    fn from(e: crate::executor::ExecutorError) -> Self {
        let message = anyhow::Error::from(e);
        let reason = message
            .downcast_ref::<crate::executor::ExecutorError>()
            .map_or("RunFailed", crate::executor::ExecutorError::reason);
        Self {
            reason,
            message: format!("{message:#}"),
        }
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

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;
