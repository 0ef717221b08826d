//! Where steps run: the backend trait the executor drives, and its shared types.
//!
//! Shaped after Woodpecker's pipeline backend: set up a workflow (one run of one
//! Job), start, wait for, tail, stop and destroy its steps, destroy the workflow.
//! A backend that outlives its executor (step pods on a cluster) also *discovers* a
//! workflow's steps, so a restarted executor resumes watching them instead of
//! starting them twice. For that, a step's identity is deterministic: the pair
//! (workflow id, step name), which each backend maps to its own names (a pod name,
//! a directory); a second `start_step` of the same identity is a no-op.
//!
//! Backends know nothing of `dependsOn`, `when`, timeouts or outputs parsing: that
//! is the executor's job, shared by every backend.

pub mod kubernetes;
pub mod local;
pub mod mask;

use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;

use crate::crd::Step;

pub use kubernetes::{DEFAULT_TOOLS_IMAGE, JobTarget, KubernetesBackend};
pub use local::LocalBackend;

/// Upper-case `s` with every character but ASCII letters and digits turned into
/// `_`: how names become parts of environment variable names.
pub fn env_token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// One run of one Job on a backend. Every step identity derives from `id`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Workflow {
    /// Stable for the run: the Job's uid on a cluster, a unique name locally.
    pub id: String,
}

impl Workflow {
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into() }
    }
}

/// What the executor asks a backend to start.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRequest {
    /// The step as the Job spec declares it.
    pub step: Step,
    /// Variables the executor adds before the step's own `env` (outputs of the
    /// steps upstream, as `BATON_OUTPUT_<KEY>`). A step's own `env` may refer to
    /// them with `$(NAME)`, as on Kubernetes.
    pub env: Vec<(String, String)>,
    /// Which attempt: 0 first, +1 for each re-run after the step's pod was lost
    /// ([`BackendError::Lost`]). A new attempt is a new identity (a new pod); a
    /// backend that never loses steps may ignore it.
    pub retry: u32,
    /// Where this attempt's log continues the step's log (the bytes earlier
    /// attempts left): its [`LogChunk`] offsets start here.
    pub log_offset: u64,
    /// The services upstream of the step that are up, as (step name, address):
    /// a backend that can make the name resolve to the address does (`/etc/hosts`
    /// of a step pod).
    pub hosts: Vec<(String, String)>,
}

impl StepRequest {
    /// The first attempt of `step`.
    pub fn new(step: Step, env: Vec<(String, String)>) -> Self {
        Self {
            step,
            env,
            retry: 0,
            log_offset: 0,
            hosts: Vec::new(),
        }
    }
}

/// What a backend knows of a step it was asked to start earlier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepState {
    /// Started and not yet ended: resume watching it, never start it again.
    Running,
    /// Ended with this exit code (128 + signal number when killed by a signal).
    Exited { exit_code: i32 },
}

/// How a step's process ended, as [`Backend::wait_step`] tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepExit {
    /// The exit code (128 + signal number when killed by a signal).
    pub code: i32,
    /// Why it ended, when the backend knows more than the code tells: `OOMKilled`,
    /// `ContainerCannotRun` (a step container's terminated reason). `None`: the
    /// executor names the end from the code (`Completed`, `Error`).
    pub reason: Option<&'static str>,
}

impl From<i32> for StepExit {
    fn from(code: i32) -> Self {
        Self { code, reason: None }
    }
}

/// A step found by [`Backend::discover`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredStep {
    pub name: String,
    pub state: StepState,
    /// The attempt found (the latest, when a lost step was re-run).
    pub retry: u32,
}

/// A piece of a step's log: `bytes` start at byte `offset` of the step's log, so a
/// consumer that stored how far it got resumes without duplicates. stdout and
/// stderr are one stream, in the order the step wrote them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    pub step: String,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// A step's log from some offset until the step's output closes.
pub type LogStream = BoxStream<'static, Result<LogChunk, BackendError>>;

/// Why a backend could not do what it was asked. [`BackendError::reason`] is the
/// short category a step's status carries when the error failed the step.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("set up workflow {workflow}: {source}")]
    Setup {
        workflow: String,
        #[source]
        source: std::io::Error,
    },
    #[error("step {step}: env {var}: {message}")]
    Env {
        step: String,
        var: String,
        message: String,
    },
    #[error(
        "step {step}: env {var} comes from secret {secret:?} key {key:?}; locally it is read from the variable {lookup}, which is not set"
    )]
    SecretNotFound {
        step: String,
        var: String,
        secret: String,
        key: String,
        lookup: String,
    },
    #[error("step {step}: workingDir {dir}: {message}")]
    WorkingDir {
        step: String,
        dir: String,
        message: String,
    },
    #[error("step {step}: {message}")]
    InvalidStep { step: String, message: String },
    #[error("step {step}: start {program:?}: {source}")]
    Spawn {
        step: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("step {step}: {doing}: {source}")]
    Io {
        step: String,
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("step {step}: not started in workflow {workflow}")]
    UnknownStep { workflow: String, step: String },
    #[error("step {step}: {doing}: {message}")]
    Failed {
        step: String,
        doing: &'static str,
        message: String,
    },
    /// The step's pod (or process) was lost to infrastructure or someone else:
    /// evicted, preempted, deleted, its node gone. The step did not fail on its
    /// own; the executor re-runs it while `spec.retries` allows.
    #[error("step {step}: {message}")]
    Lost {
        step: String,
        /// `PodLost` or `Evicted`.
        reason: &'static str,
        message: String,
    },
    /// The step could not start and will not by waiting: an image that cannot be
    /// pulled, a missing Secret.
    #[error("step {step}: cannot start: {message}")]
    CannotStart {
        step: String,
        /// `ImagePullFailed`, `SecretNotFound`, `InvalidEnv`, `StartFailed`.
        reason: &'static str,
        message: String,
    },
    /// The Job's content could not be put into its workspace.
    #[error("unpack the Job's content into the workspace: {message}")]
    Content {
        /// `ContentUnavailable` (it could not be brought to the workspace) or
        /// `ContentRefused` (it is not an archive that may be unpacked).
        reason: &'static str,
        message: String,
    },
    #[error("step {step}: {doing}: {source}")]
    Kube {
        step: String,
        doing: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
}

impl BackendError {
    /// Short, stable category (a step's `reason` when this error failed it).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Setup { .. } => "SetupFailed",
            Self::Env { .. } => "InvalidEnv",
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::WorkingDir { .. } => "InvalidWorkingDir",
            Self::InvalidStep { .. } => "InvalidStep",
            Self::Spawn { .. } => "StartFailed",
            Self::Lost { reason, .. }
            | Self::CannotStart { reason, .. }
            | Self::Content { reason, .. } => reason,
            Self::Io { .. }
            | Self::UnknownStep { .. }
            | Self::Failed { .. }
            | Self::Kube { .. } => "BackendError",
        }
    }

    /// Whether the step was lost rather than failed: re-run it if retries allow.
    pub fn is_lost(&self) -> bool {
        matches!(self, Self::Lost { .. })
    }
}

/// Where a runner keeps the change archives of the Job whose directory is
/// `root` (both backends: the runner uploads them from there).
pub fn archive_store(root: &std::path::Path) -> std::path::PathBuf {
    root.join("artifacts")
}

/// The archive with `digest` in the store of the Job at `root`.
pub fn archive_path(root: &std::path::Path, digest: &str) -> std::path::PathBuf {
    archive_in(&archive_store(root), digest)
}

/// The archive with `digest` in `store`, named by its digest.
pub fn archive_in(store: &std::path::Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    store.join(format!("{hex}.tar.zst"))
}

/// Where steps run. Every method is idempotent where it can be: starting a step
/// that exists, stopping one that ended, destroying what is gone all succeed.
///
/// Futures are `Send` so an executor can run on any tokio worker.
pub trait Backend: Send + Sync {
    /// Short name for diagnostics (`local`, `kubernetes`).
    fn name(&self) -> &'static str;

    /// The name an attempt of a step has on this backend, for the step's status
    /// (`podName`): deterministic, known before the step starts. `None` where
    /// attempts have no such name.
    fn step_ref(&self, _workflow: &Workflow, _step: &str, _retry: u32) -> Option<String> {
        None
    }

    /// Prepare what the workflow's steps share (the workspace).
    fn setup_workflow(
        &self,
        workflow: &Workflow,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The steps of `workflow` this backend already started, with their state.
    fn discover(
        &self,
        workflow: &Workflow,
    ) -> impl Future<Output = Result<Vec<DiscoveredStep>, BackendError>> + Send;

    /// Start a step. A step of the same name already started is left alone.
    fn start_step(
        &self,
        workflow: &Workflow,
        request: &StepRequest,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The step's log from byte `from_offset` on; the stream ends once the step's
    /// output is closed (after it exited).
    fn tail_step(
        &self,
        workflow: &Workflow,
        step: &str,
        from_offset: u64,
    ) -> impl Future<Output = Result<LogStream, BackendError>> + Send;

    /// Wait until the step ended; its exit code (128 + signal when killed) and,
    /// where the backend knows it, why.
    fn wait_step(
        &self,
        workflow: &Workflow,
        step: &str,
    ) -> impl Future<Output = Result<StepExit, BackendError>> + Send;

    /// The address a service step should listen on (`$BATON_SERVICE_LISTEN`):
    /// all of its pod's addresses by default; loopback where steps share the
    /// machine's network.
    fn listen_address(&self) -> &'static str {
        "0.0.0.0"
    }

    /// Wait until service `step` accepts TCP connections on `ports` (at once when
    /// it has none) and return the address its dependents reach it at. It keeps
    /// waiting while the service starts: the caller races it with the step's end.
    fn service_ready(
        &self,
        workflow: &Workflow,
        step: &str,
        ports: &[u16],
    ) -> impl Future<Output = Result<String, BackendError>> + Send;

    /// What the step wrote to `$BATON_OUTPUT`, at most `limit` bytes (a longer
    /// file is cut at `limit`; callers ask for one byte more than they accept).
    fn read_outputs(
        &self,
        workflow: &Workflow,
        step: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<u8>, BackendError>> + Send;

    /// Once `step` ended, pack what it changed under the workspace (it
    /// collects: `collect` or `artifacts`) and store the archive by its digest.
    /// `Ok(None)`: it changed nothing its globs select.
    fn collect_changes(
        &self,
        workflow: &Workflow,
        step: &Step,
    ) -> impl Future<Output = Result<Option<crate::archive::Packed>, BackendError>> + Send;

    /// Before the first step of a workflow: unpack the content archive at
    /// `archive` (a Job's `spec.content`) into the workspace its steps share.
    fn seed_workspace(
        &self,
        workflow: &Workflow,
        archive: &std::path::Path,
    ) -> impl Future<Output = Result<crate::archive::Extracted, BackendError>> + Send;

    /// Ask the step to end (SIGTERM), force it after `grace` (SIGKILL), and
    /// return once it ended.
    fn stop_step(
        &self,
        workflow: &Workflow,
        step: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Forget a step: kill it if it still runs, remove what it left.
    fn destroy_step(
        &self,
        workflow: &Workflow,
        step: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Destroy every step of the workflow and what they share.
    fn destroy_workflow(
        &self,
        workflow: &Workflow,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}
