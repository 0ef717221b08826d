//! One run of one Job: drive the [`Scheduler`] with step tasks on the backend,
//! and turn how each step ended into its status.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;
use tracing::Instrument;

mod outcome;
mod resume;
mod retry;
mod services;

use super::dag::{Dag, Scheduler};
use super::outputs;
use super::{CancellationToken, Executor, ExecutorError, JobReport, LogSink, StatusSink};
use crate::archive::Packed;
use crate::backend::{Backend, BackendError, StepExit, StepRequest, Workflow};
use crate::crd::Step;
use crate::crd::duration;
use crate::crd::job::{JobPhase, JobSpec, StepPhase, StepStatus};
use resume::Start;

/// Why running steps were stopped before they ended on their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopCause {
    Cancelled,
    JobTimeout,
}

/// How a step's process ended, as seen by its task.
enum StepEnd {
    StartFailed(BackendError),
    Ended {
        exit: Result<StepExit, BackendError>,
        how: How,
        outputs: Option<Result<Vec<u8>, BackendError>>,
        /// The archive of what it changed, for a step that collects (boxed:
        /// rarely there, and it would double the size of every end).
        changes: Option<Box<Result<Option<Packed>, BackendError>>>,
        log: LogEnd,
    },
}

/// Where a step's log stood when its task ended: the next attempt continues it.
#[derive(Clone, Copy, Debug)]
struct LogEnd {
    offset: u64,
    /// The last byte delivered, if this task delivered any.
    last: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    Exited,
    TimedOut,
    Stopped,
}

/// One attempt of a step for its task: its start request (none when resuming one
/// the backend already runs), where its log continues, when it times out.
struct Attempt {
    request: Option<StepRequest>,
    log_from: u64,
    deadline: Option<Instant>,
    /// Known lost already (gone with the runner that ran it): ends at once so.
    lost: Option<BackendError>,
}

/// The spec, checked: its DAG and parsed timeouts.
struct Plan<'s> {
    spec: &'s JobSpec,
    step_timeouts: Vec<Option<Duration>>,
    job_timeout: Option<Duration>,
}

impl<'s> Plan<'s> {
    fn new(spec: &'s JobSpec) -> Result<(Self, Dag), ExecutorError> {
        let dag = Dag::from_steps(&spec.steps).map_err(ExecutorError::InvalidDag)?;
        let step_timeouts = spec
            .steps
            .iter()
            .map(|s| {
                s.timeout
                    .as_deref()
                    .map(duration::parse)
                    .transpose()
                    .map_err(|source| ExecutorError::InvalidTimeout {
                        step: Some(s.name.clone()),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        let job_timeout = spec
            .timeout
            .as_deref()
            .map(duration::parse)
            .transpose()
            .map_err(|source| ExecutorError::InvalidTimeout { step: None, source })?;
        Ok((
            Self {
                spec,
                step_timeouts,
                job_timeout,
            },
            dag,
        ))
    }
}

/// What the run knows of every step.
struct State {
    sched: Scheduler,
    statuses: Vec<StepStatus>,
    /// When each step's current attempt started.
    started: Vec<Option<Start>>,
    durations: Vec<Option<Duration>>,
    outputs: Vec<Vec<(String, String)>>,
    outputs_used: usize,
    /// The attempt each step is at (re-runs after lost pods).
    retries: Vec<u32>,
    /// Where each service step is reached, once it is up.
    addresses: Vec<Option<String>>,
    /// What services listen on, on this backend (`$BATON_SERVICE_LISTEN`).
    listen: &'static str,
}

impl State {
    /// Every step Pending, nothing run yet.
    fn new(dag: Dag, spec: &JobSpec, listen: &'static str) -> Self {
        let n = spec.steps.len();
        Self {
            sched: Scheduler::new(
                dag,
                spec.steps
                    .iter()
                    .map(|s| s.when.unwrap_or_default())
                    .collect(),
            )
            .allow_failures(spec.steps.iter().map(Step::allows_failure).collect())
            .services(spec.steps.iter().map(Step::is_service).collect()),
            statuses: spec
                .steps
                .iter()
                .map(|s| StepStatus {
                    name: s.name.clone(),
                    ..Default::default()
                })
                .collect(),
            started: vec![None; n],
            durations: vec![None; n],
            outputs: vec![Vec::new(); n],
            outputs_used: 0,
            retries: vec![0; n],
            addresses: vec![None; n],
            listen,
        }
    }

    /// `BATON_OUTPUT_<KEY>` for every output of the steps upstream of `step`,
    /// and `BATON_SERVICE_<NAME>` for every service upstream that is up.
    fn injected_env(&self, step: usize) -> Vec<(String, String)> {
        let dag = self.sched.dag();
        let upstream = dag.upstream(step);
        let mut env = BTreeMap::new();
        for &u in dag.order().iter().filter(|u| upstream.contains(u)) {
            for (k, v) in &self.outputs[u] {
                env.insert(outputs::env_name(k), v.clone());
            }
        }
        env.extend(self.service_env(step));
        if self.sched.is_service(step) {
            env.insert("BATON_SERVICE_LISTEN".to_owned(), self.listen.to_owned());
        }
        env.into_iter().collect()
    }

    fn mark_running(&mut self, step: usize) {
        self.started[step] = Some(Start::now());
        let status = &mut self.statuses[step];
        status.phase = StepPhase::Running;
        status.start_time = Some(now());
    }

    fn set_retry(&mut self, step: usize, retry: u32) {
        self.retries[step] = retry;
        self.statuses[step].retries = (retry > 0).then(|| i32::try_from(retry).unwrap_or(i32::MAX));
    }

    fn mark_ended(
        &mut self,
        step: usize,
        phase: StepPhase,
        reason: Option<&str>,
        message: Option<String>,
    ) {
        self.sched.finish(step, phase);
        if let Some(started) = self.started[step] {
            self.durations[step] = Some(started.elapsed());
        }
        let allowed = phase == StepPhase::Failed && self.sched.allows_failure(step);
        let status = &mut self.statuses[step];
        status.phase = phase;
        status.failure_allowed = allowed.then_some(true);
        status.reason = reason.map(str::to_owned);
        status.message = message;
        status.completion_time = Some(now());
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

impl<B: Backend> Executor<'_, B> {
    /// Run `spec` as `workflow` to the end. Returns an error only when nothing could
    /// run (invalid DAG or timeouts, backend setup); step failures are in the report.
    /// Does not destroy the workflow: the caller decides when (logs, resuming).
    pub async fn run<S: StatusSink, L: LogSink>(
        &self,
        workflow: &Workflow,
        spec: &JobSpec,
        status: &S,
        logs: &L,
        cancel: &CancellationToken,
    ) -> Result<JobReport, ExecutorError> {
        self.run_seeded(workflow, spec, None, status, logs, cancel)
            .await
    }

    /// [`Executor::run`], with the workspace seeded from the content archive at
    /// `content` before the first step. A workflow whose steps the backend
    /// already knows (a resumed one) is not seeded again: its steps may have
    /// changed the workspace since.
    pub async fn run_seeded<S: StatusSink, L: LogSink>(
        &self,
        workflow: &Workflow,
        spec: &JobSpec,
        content: Option<&std::path::Path>,
        status: &S,
        logs: &L,
        cancel: &CancellationToken,
    ) -> Result<JobReport, ExecutorError> {
        let (plan, dag) = Plan::new(spec)?;
        self.backend
            .setup_workflow(workflow)
            .await
            .map_err(ExecutorError::Setup)?;
        let discovered = if status.records_starts() && status.recorded().is_nothing() {
            Vec::new()
        } else {
            self.backend
                .discover(workflow)
                .await
                .map_err(ExecutorError::Discover)?
        };
        if let Some(archive) = content.filter(|_| discovered.is_empty()) {
            let seeded = self.backend.seed_workspace(workflow, archive).await;
            let seeded = seeded.map_err(ExecutorError::Seed)?;
            tracing::debug!(workflow = %workflow.id, files = seeded.written, bytes = seeded.bytes, "workspace seeded from the Job's content");
        }
        let mut state = State::new(dag, spec, self.backend.listen_address());
        // A resumed Job's timeout counts from when it first started, not from now.
        let job_started = Start::recorded(status.recorded().start_time.as_ref());
        let job_deadline = plan.job_timeout.map(|t| job_started.deadline(t));
        status.job_changed(JobPhase::Running, None).await;

        let stop_all = CancellationToken::new();
        // One per step, under stop_all: a service is stopped on its own when done.
        let stops: Vec<CancellationToken> =
            spec.steps.iter().map(|_| stop_all.child_token()).collect();
        let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel();
        let control = |i: usize| services::Control {
            stop: stops[i].clone(),
            up: spec.steps[i].is_service().then(|| up_tx.clone()),
        };
        let mut cause = None;
        let mut running = FuturesUnordered::new();
        let resumed = self
            .resume(&mut state, &plan, workflow, discovered, status, logs)
            .await;
        for (i, attempt) in resumed {
            running.push(self.step_task(workflow, i, attempt, &plan, control(i), logs));
        }

        loop {
            if cause.is_none() && cancel.is_cancelled() {
                cause = Some(StopCause::Cancelled);
                stop_all.cancel();
            }
            // Past already (a resumed Job): start nothing more.
            if cause.is_none() && job_deadline.is_some_and(|d| d <= Instant::now()) {
                tracing::info!(workflow = %workflow.id, "job timeout; stopping its steps");
                cause = Some(StopCause::JobTimeout);
                stop_all.cancel();
            }
            if cause.is_none() {
                let advance = state.sched.advance();
                for (i, reason) in advance.skipped {
                    state.mark_ended(
                        i,
                        StepPhase::Skipped,
                        Some(reason.as_str()),
                        Some(reason.message().to_owned()),
                    );
                    status.step_changed(&state.statuses[i]).await;
                }
                for i in advance.start {
                    let mut request =
                        StepRequest::new(spec.steps[i].clone(), state.injected_env(i));
                    request.hosts = state.service_hosts(i);
                    state.mark_running(i);
                    self.name_attempt(&mut state, workflow, i);
                    status.step_changed(&state.statuses[i]).await;
                    let attempt = Attempt {
                        request: Some(request),
                        log_from: 0,
                        deadline: state.deadline(&plan, i),
                        lost: None,
                    };
                    running.push(self.step_task(workflow, i, attempt, &plan, control(i), logs));
                }
            }
            for i in state.sched.services_done() {
                stops[i].cancel();
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                Some((i, end)) = running.next() => {
                    if let Some(request) = self.rerun(&mut state, &plan, i, &end, cause, logs).await {
                        state.service_restarted(i);
                        self.name_attempt(&mut state, workflow, i);
                        status.step_changed(&state.statuses[i]).await;
                        let attempt = Attempt {
                            log_from: request.log_offset,
                            request: Some(request),
                            deadline: state.deadline(&plan, i),
                            lost: None,
                        };
                        running.push(self.step_task(workflow, i, attempt, &plan, control(i), logs));
                    } else {
                        self.record(&mut state, &plan, i, end, cause);
                        status.step_changed(&state.statuses[i]).await;
                    }
                }
                Some((i, address)) = up_rx.recv() => {
                    if state.sched.phase(i) == StepPhase::Running {
                        state.service_up(i, address);
                        status.step_changed(&state.statuses[i]).await;
                    }
                }
                () = cancel.cancelled(), if cause.is_none() => {
                    tracing::info!(workflow = %workflow.id, "job cancelled; stopping its steps");
                    cause = Some(StopCause::Cancelled);
                    stop_all.cancel();
                }
                () = sleep_until(job_deadline), if cause.is_none() => {
                    tracing::info!(workflow = %workflow.id, "job timeout; stopping its steps");
                    cause = Some(StopCause::JobTimeout);
                    stop_all.cancel();
                }
            }
        }

        Ok(self
            .conclude(state, &plan, cause, status, job_started)
            .await)
    }

    /// Start (unless resuming), tail, and wait for one step; stop it on its timeout
    /// or when the run stops everything. Ends once its log is fully delivered.
    async fn step_task<L: LogSink>(
        &self,
        workflow: &Workflow,
        i: usize,
        attempt: Attempt,
        plan: &Plan<'_>,
        control: services::Control,
        logs: &L,
    ) -> (usize, StepEnd) {
        let services::Control { stop, up } = control;
        let name = plan.spec.steps[i].name.as_str();
        let span = tracing::info_span!("step", workflow = %workflow.id, step = name);
        let Attempt {
            request,
            log_from,
            deadline,
            lost,
        } = attempt;
        async move {
            if let Some(error) = lost {
                let log = LogEnd {
                    offset: log_from,
                    last: None,
                };
                let how = How::Exited;
                let (exit, outputs, changes) = (Err(error), None, None);
                return (
                    i,
                    StepEnd::Ended {
                        exit,
                        how,
                        outputs,
                        changes,
                        log,
                    },
                );
            }
            if let Some(request) = &request
                && let Err(error) = self.backend.start_step(workflow, request).await
            {
                return (i, StepEnd::StartFailed(error));
            }
            let forward = async {
                let mut end = LogEnd {
                    offset: log_from,
                    last: None,
                };
                match self.backend.tail_step(workflow, name, log_from).await {
                    Ok(mut chunks) => {
                        while let Some(chunk) = chunks.next().await {
                            match chunk {
                                Ok(chunk) => {
                                    if let Some(&last) = chunk.bytes.last() {
                                        end = LogEnd {
                                            offset: chunk.offset + chunk.bytes.len() as u64,
                                            last: Some(last),
                                        };
                                    }
                                    logs.append(chunk).await;
                                }
                                Err(error) => {
                                    tracing::warn!(%error, "tail step log");
                                    break;
                                }
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "tail step log"),
                }
                end
            };
            let watch = async {
                tokio::select! {
                    exit = self.backend.wait_step(workflow, name) => (exit, How::Exited),
                    () = sleep_until(deadline) => (self.stop(workflow, name).await, How::TimedOut),
                    () = stop.cancelled() => (self.stop(workflow, name).await, How::Stopped),
                }
            };
            let watch = self.announce_up(workflow, i, name, plan, up, watch);
            let ((exit, how), log) = tokio::join!(watch, forward);
            let outputs = match exit {
                Ok(_) => Some(
                    self.backend
                        .read_outputs(workflow, name, self.options.outputs_limit.saturating_add(1))
                        .await,
                ),
                Err(_) => None,
            };
            let step = &plan.spec.steps[i];
            let changes = match exit {
                Ok(_) if step.collects() => {
                    Some(Box::new(self.backend.collect_changes(workflow, step).await))
                }
                _ => None,
            };
            (
                i,
                StepEnd::Ended {
                    exit,
                    how,
                    outputs,
                    changes,
                    log,
                },
            )
        }
        .instrument(span)
        .await
    }

    /// The step's status names its current attempt as the backend calls it.
    fn name_attempt(&self, state: &mut State, workflow: &Workflow, i: usize) {
        let status = &mut state.statuses[i];
        status.pod_name = self
            .backend
            .step_ref(workflow, &status.name, state.retries[i]);
    }

    async fn stop(&self, workflow: &Workflow, step: &str) -> Result<StepExit, BackendError> {
        self.backend
            .stop_step(workflow, step, self.options.grace)
            .await?;
        self.backend.wait_step(workflow, step).await
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
