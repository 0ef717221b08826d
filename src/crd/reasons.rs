//! Condition types and reasons of a Job's status: each name once, here, so the
//! controller, the runner API and the tests say the same thing.

/// `metav1.Condition` types a Job carries besides the health ones ([`super::conditions`]).
pub mod condition {
    /// True once a runner holds the Job; False with why it waits.
    pub const SCHEDULED: &str = "Scheduled";
    /// True while steps run.
    pub const RUNNING: &str = "Running";
    /// True when the Job ended Succeeded.
    pub const COMPLETE: &str = "Complete";
    /// True when the Job ended Failed or Cancelled.
    pub const FAILED: &str = "Failed";
}

/// Reasons of a Job's conditions and Events.
pub mod reason {
    // Phases, as reasons of the phase conditions.
    pub const QUEUED: &str = "Queued";
    pub const ASSIGNED: &str = "Assigned";
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const CANCELLED: &str = "Cancelled";
    /// Event: a runner reported the Job Running.
    pub const STARTED: &str = "Started";
    /// `spec.cancel` is set and the Job has not ended yet.
    pub const CANCELLING: &str = "Cancelling";

    // Why a Queued Job waits (`Scheduled=False`).
    /// The steps' DAG cannot run (a cycle); only a new Job helps.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const NO_MATCHING_RUNNER: &str = "NoMatchingRunner";
    pub const RUNNERS_BUSY: &str = "RunnersBusy";
    /// The runner `spec.runnerName` names is not adopted, connected and enabled.
    pub const NAMED_RUNNER_UNAVAILABLE: &str = "NamedRunnerUnavailable";
    /// Its runner vanished: the Job waits for a hand-over at the next epoch.
    pub const RUNNER_LOST: &str = "RunnerLost";
    /// No on-demand runner pods (the controller has no `--runner-server-url`).
    pub const ON_DEMAND_UNAVAILABLE: &str = "OnDemandUnavailable";
    pub const RUNNER_POD_PENDING: &str = "RunnerPodPending";
    pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
    pub const RUNNER_STARTING: &str = "RunnerStarting";
    /// A direct-only runner refused a Job that does not name it (`spec.runnerName`).
    pub const NOT_ASSIGNED_BY_NAME: &str = "NotAssignedByName";
    /// The on-demand runner's name is held by a Runner an operator decided on.
    pub const RUNNER_NAME_TAKEN: &str = "RunnerNameTaken";

    // How steps end (step `reason`, and the Job's when a step decides it).
    /// The Job failed because a step failed (its message names them and why).
    pub const STEP_FAILED: &str = "StepFailed";
    /// The Job exceeded `spec.timeout` (the Job's reason). Steps stopped by it, and
    /// steps over their own `timeout`, end [`DEADLINE_EXCEEDED`]; before step end
    /// reasons existed they ended `Timeout` too.
    pub const TIMEOUT: &str = "Timeout";
    pub const DEPENDENCY_FAILED: &str = "DependencyFailed";

    // Why a step ended (`status.steps[].reason`).
    /// Exited 0.
    pub const COMPLETED: &str = "Completed";
    /// Exited non-zero on its own.
    pub const ERROR: &str = "Error";
    /// Killed for going over its memory limit.
    pub const OOM_KILLED: &str = "OOMKilled";
    /// Its pod was evicted (node pressure, API eviction): re-run while retries allow.
    pub const EVICTED: &str = "Evicted";
    /// Stopped at its `timeout`, or at the Job's.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// The container runtime could not run its command (missing, not executable).
    pub const CONTAINER_CANNOT_RUN: &str = "ContainerCannotRun";
    /// Its pod was deleted, disrupted or its node lost: re-run while retries allow.
    pub const POD_LOST: &str = "PodLost";
    /// A service step stopped by Baton once the steps that need it ended.
    pub const SERVICE_STOPPED: &str = "ServiceStopped";
    /// A service step that ended on its own while steps still needed it.
    pub const SERVICE_EXITED: &str = "ServiceExited";
    /// What the step changed (`collect`, `artifacts`) could not be packed or stored.
    pub const COLLECT_FAILED: &str = "CollectFailed";
    /// The Job's `spec.content` could not be fetched from the controller.
    pub const CONTENT_UNAVAILABLE: &str = "ContentUnavailable";
    /// The Job's `spec.content` is not an archive that may be unpacked.
    pub const CONTENT_REFUSED: &str = "ContentRefused";
}
