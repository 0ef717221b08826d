//! The executor: runs a Job's steps over any [`Backend`] — DAG order with maximal
//! parallelism, `when`, step and Job timeouts, `$BATON_OUTPUT`, cancellation —
//! and reports through a [`StatusSink`] and a [`LogSink`]. One piece of code for
//! local mode and for runners; only the backend and the sinks differ.
//!
//! - Scheduling and `when`: [`dag`] (pure; its module doc defines the semantics).
//! - Outputs format and passing convention: [`outputs`].
//! - Timeouts: a step over its `timeout`, or running when the Job's `timeout`
//!   passes, is stopped (SIGTERM, then SIGKILL after the grace period) and ends
//!   Failed with reason `Timeout`; steps not started by then are Skipped `JobTimeout`.
//! - Cancellation: cancel the [`CancellationToken`]; running steps are stopped the
//!   same way and end Cancelled, steps not started are Cancelled, the Job ends
//!   Cancelled.
//! - Resuming: steps the backend already knows ([`Backend::discover`]) are watched
//!   and tailed (from [`LogSink::resume_offset`]), never started again. What the
//!   server recorded of earlier runs ([`StatusSink::recorded`]) decides the rest: a
//!   finished step's result stands; a step recorded running that the backend does
//!   not have went with its runner (lost, `RunnerLost`, re-run while retries
//!   allow); timeouts stay on real time (the Job's counts from its recorded
//!   `startTime`, a resumed step's from its own).
//! - Logs: ordered chunks per step with byte offsets; a step's log is complete
//!   before its final status is reported.

pub mod dag;
pub mod outputs;
mod run;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
pub use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendError, LogChunk};
use crate::crd::duration::ParseDurationError;
use crate::crd::job::{JobPhase, StepPhase, StepStatus};
use dag::DagError;

/// Tunables of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorOptions {
    /// Between SIGTERM and SIGKILL when a step is stopped (timeout, cancel).
    pub grace: Duration,
    /// Cap on the bytes of `$BATON_OUTPUT` files of one Job, all steps together.
    pub outputs_limit: usize,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(5),
            outputs_limit: outputs::DEFAULT_LIMIT,
        }
    }
}

/// Receives every phase change. A sink that must abort the Job (a server that
/// fenced this runner off) cancels the run's token.
pub trait StatusSink: Send + Sync {
    /// A step changed: Running when it starts (or is resumed), then how it ended;
    /// Skipped or Cancelled ones are reported once, with a reason.
    fn step_changed(&self, status: &StepStatus) -> impl Future<Output = ()> + Send;
    /// The Job changed: Running at the start, then how it ended.
    fn job_changed(&self, phase: JobPhase, reason: Option<&str>)
    -> impl Future<Output = ()> + Send;
    /// What was recorded of the Job before this run (a runner resuming it after a
    /// restart, or taking it over); nothing for a first run.
    fn recorded(&self) -> Recorded {
        Recorded::default()
    }
    /// Whether every step's start reaches the record ([`Self::recorded`] of a later
    /// run) before the step is started. Then a run with nothing recorded has
    /// nothing to discover, and the backend is not asked (one API list less per
    /// Job on pods).
    fn records_starts(&self) -> bool {
        false
    }
}

impl Recorded {
    /// Nothing of the Job ever started: no start time, no step past Pending.
    pub fn is_nothing(&self) -> bool {
        self.start_time.is_none() && self.steps.iter().all(|s| s.phase == StepPhase::Pending)
    }
}

/// The Job's status as recorded before this run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded {
    /// `status.startTime`: the Job's `timeout` counts from here.
    pub start_time: Option<Time>,
    /// `status.steps`: a finished step's result stands; a resumed step's `timeout`
    /// counts from its `startTime`.
    pub steps: Vec<StepStatus>,
}

/// Receives steps' logs: per step, chunks in order, each starting where the
/// previous ended.
pub trait LogSink: Send + Sync {
    fn append(&self, chunk: LogChunk) -> impl Future<Output = ()> + Send;
    /// How many bytes of `step`'s log the sink already holds; a resumed step is
    /// tailed from there.
    fn resume_offset(&self, _step: &str) -> u64 {
        0
    }
}

/// A sink that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl StatusSink for Discard {
    async fn step_changed(&self, _: &StepStatus) {}
    async fn job_changed(&self, _: JobPhase, _: Option<&str>) {}
}

impl LogSink for Discard {
    async fn append(&self, _: LogChunk) {}
}

/// How one step ended.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    pub status: StepStatus,
    /// Wall time from start to end, for steps that ran.
    pub duration: Option<Duration>,
    /// What it wrote to `$BATON_OUTPUT`, in file order.
    pub outputs: Vec<(String, String)>,
}

/// How a Job ended.
#[derive(Clone, Debug, PartialEq)]
pub struct JobReport {
    /// Succeeded, Failed or Cancelled.
    pub phase: JobPhase,
    /// `StepFailed`, `Timeout` or `Cancelled` when it did not succeed.
    pub reason: Option<String>,
    pub message: Option<String>,
    /// One per step, in spec order.
    pub steps: Vec<StepReport>,
    /// Union of the steps' outputs, later in DAG order winning.
    pub outputs: BTreeMap<String, String>,
    pub duration: Duration,
}

/// Why a Job could not be run at all (step failures are in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("the steps do not form a DAG: {}", join(.0))]
    InvalidDag(Vec<DagError>),
    #[error("{}: {source}", .step.as_deref().map_or("spec.timeout".to_owned(), |s| format!("step {s}: timeout")))]
    InvalidTimeout {
        /// `None` for the Job's own timeout.
        step: Option<String>,
        #[source]
        source: ParseDurationError,
    },
    #[error("set up the workflow")]
    Setup(#[source] BackendError),
    #[error("discover the workflow's steps")]
    Discover(#[source] BackendError),
    #[error("seed the workspace")]
    Seed(#[source] BackendError),
}

impl ExecutorError {
    /// The Job's `reason` when this error failed it.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Seed(e) => e.reason(),
            _ => "RunFailed",
        }
    }
}

fn join(errors: &[DagError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs Jobs on one backend.
#[derive(Debug)]
pub struct Executor<'a, B> {
    backend: &'a B,
    options: ExecutorOptions,
}

impl<'a, B: Backend> Executor<'a, B> {
    pub fn new(backend: &'a B, options: ExecutorOptions) -> Self {
        Self { backend, options }
    }
}
