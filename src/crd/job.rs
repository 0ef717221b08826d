//! `Job`: work to run — a DAG of steps handed to one runner.

use std::collections::BTreeMap;

use super::artifacts::{Collect, StepArtifacts};
pub use super::content::{Content, Input};
use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::pod_template::{PodTemplate, StepVolume};

/// The spec of a Job. Immutable once created, except `cancel`.
// printcolumn(...) repeats keys by design; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "baton.dev",
    version = "v1alpha1",
    kind = "Job",
    namespaced,
    cel,
    status = "JobStatus",
    shortname = "bj",
    shortname = "bjob",
    category = "baton",
    derive = "PartialEq",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Runner", type_ = "string", json_path = ".status.runner"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Scheduled\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Position",
        type_ = "integer",
        json_path = ".status.queuePosition",
        priority = 1
    ),
    printcolumn(
        name = "Priority",
        type_ = "integer",
        json_path = ".spec.priority",
        priority = 1
    ),
    printcolumn(
        name = "Epoch",
        type_ = "integer",
        json_path = ".status.epoch",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    cel,
    validation = Rule::new("size(self.steps) >= 1").message("a Job needs at least one step"),
    validation = Rule::new("self.steps.all(s, !has(s.dependsOn) || s.dependsOn.all(d, d != s.name))")
        .message("a step cannot depend on itself"),
    // sets.contains keeps the estimated cost inside the API server's budget at 200x200;
    // a nested exists() over the steps does not fit.
    validation = Rule::new("self.steps.all(s, !has(s.dependsOn) || sets.contains(self.steps.map(t, t.name), s.dependsOn))")
        .message("dependsOn must name other steps of this Job"),
    validation = Rule::new("!(has(self.runnerName) && has(self.onDemand))")
        .message("set runnerName (run on that runner) or onDemand (spawn a runner pod), not both"),
    validation = Rule::new("!(has(self.runnerSelector) && has(self.onDemand))")
        .message("set runnerSelector (run on an adopted runner) or onDemand (spawn a runner pod), not both"),
    validation = Rule::new(IMMUTABLE_SPEC_RULE)
        .message("a Job's spec is immutable once created, except spec.cancel"),
    validation = Rule::new("!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)")
        .message("spec.cancel cannot be undone once true"),
)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// Run on an adopted runner whose labels match this selector. When absent, an
    /// on-demand runner pod is spawned for this Job (see `onDemand`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_selector: Option<LabelSelector>,

    /// Run on the Runner of this name and no other, whatever its labels
    /// (`runnerSelector` is then not used). While that runner is not adopted,
    /// connected and enabled, or is full, the Job waits and says why. The only way
    /// onto a runner started with `--direct-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("runnerName must be a Runner's name: lowercase letters, digits, '-' and '.'"))]
    pub runner_name: Option<String>,

    /// Settings for the on-demand runner pod spawned when `runnerSelector` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand: Option<Box<OnDemand>>,

    /// Secrets (type `kubernetes.io/dockerconfigjson`, in the Job's namespace) the
    /// node logs in to private registries with, to pull the steps' images and the
    /// on-demand runner's: every step pod's and the runner pod's `imagePullSecrets`.
    /// Steps never see their contents. At most 16, each named once. A missing or
    /// wrong Secret ends the step `ImagePullFailed` with the registry's answer.
    /// Ignored by `baton run` (local processes pull nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::pull_secrets")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// The steps to run: a DAG ordered by `dependsOn`, at least one, at most 200,
    /// each name once.
    // A list map keyed by name: the API server refuses a repeated name itself, in
    // linear time. A CEL rule comparing every step with every other cost about a
    // second of the API server's CPU on every write of a 200-step Job (status
    // reports included); `baton run` checks the names itself (`unique_step_names`).
    #[schemars(length(max = 200))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub steps: Vec<Step>,

    /// A volume mounted at `/workspace` in every step; all step pods then run on one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,

    /// Which paths of the directory sent with the Job (`job run --upload DIR`,
    /// or the current directory for `baton run`) land where under `/workspace`.
    /// Unset: all of it, at the top. `.git/` and what `.gitignore` files ignore
    /// are never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::content::inputs_schema")]
    pub inputs: Option<Vec<Input>>,

    /// The archive unpacked into `/workspace` before the first step, as the
    /// controller stores it; `job run --upload DIR` uploads it and sets this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,

    /// Upper bound on the whole Job's run time (e.g. `1h`). Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::duration")]
    pub timeout: Option<String>,

    /// How often a step whose pod was lost to infrastructure (eviction, node loss) is
    /// re-run. A step that failed on its own is never re-run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 10").message("retries must be between 0 and 10"))]
    pub retries: Option<i32>,

    /// Delete the Job (and its pods) this many seconds after it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("ttlSecondsAfterFinished cannot be negative"))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// Pod settings of every step pod (placement, labels, annotations, hosts,
    /// DNS); a step's own `podTemplate` wins field by field. Ignored locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<Box<PodTemplate>>,

    /// Queue order within the namespace: a higher priority is handed to a runner
    /// first; Jobs of one priority go first come, first served (creationTimestamp,
    /// then name). From -1000 to 1000; unset means 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= -1000 && self <= 1000").message("priority must be between -1000 and 1000"))]
    pub priority: Option<i32>,

    /// Set to true to cancel the Job in any phase. Cannot be undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<bool>,
}

impl JobSpec {
    /// A Job with neither `runnerSelector` nor `runnerName` gets a runner pod of
    /// its own (on demand).
    pub fn spawns_runner(&self) -> bool {
        self.runner_selector.is_none() && self.runner_name.is_none()
    }
}

/// Every spec field except `cancel` must equal its old value (set or unset alike).
/// Kept as one rule so the message is one sentence; a unit test checks it names
/// every field of [`JobSpec`] but `cancel`.
pub const IMMUTABLE_SPEC_RULE: &str = "\
has(self.runnerSelector) == has(oldSelf.runnerSelector) && (!has(self.runnerSelector) || self.runnerSelector == oldSelf.runnerSelector) && \
has(self.runnerName) == has(oldSelf.runnerName) && (!has(self.runnerName) || self.runnerName == oldSelf.runnerName) && \
has(self.onDemand) == has(oldSelf.onDemand) && (!has(self.onDemand) || self.onDemand == oldSelf.onDemand) && \
has(self.imagePullSecrets) == has(oldSelf.imagePullSecrets) && (!has(self.imagePullSecrets) || self.imagePullSecrets == oldSelf.imagePullSecrets) && \
self.steps == oldSelf.steps && \
has(self.workspace) == has(oldSelf.workspace) && (!has(self.workspace) || self.workspace == oldSelf.workspace) && \
has(self.inputs) == has(oldSelf.inputs) && (!has(self.inputs) || self.inputs == oldSelf.inputs) && \
has(self.content) == has(oldSelf.content) && (!has(self.content) || self.content == oldSelf.content) && \
has(self.timeout) == has(oldSelf.timeout) && (!has(self.timeout) || self.timeout == oldSelf.timeout) && \
has(self.retries) == has(oldSelf.retries) && (!has(self.retries) || self.retries == oldSelf.retries) && \
has(self.ttlSecondsAfterFinished) == has(oldSelf.ttlSecondsAfterFinished) && (!has(self.ttlSecondsAfterFinished) || self.ttlSecondsAfterFinished == oldSelf.ttlSecondsAfterFinished) && \
has(self.podTemplate) == has(oldSelf.podTemplate) && (!has(self.podTemplate) || self.podTemplate == oldSelf.podTemplate) && \
has(self.priority) == has(oldSelf.priority) && (!has(self.priority) || self.priority == oldSelf.priority)";

/// One step of a Job: a container (on a cluster) or a process (locally).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    cel,
    validation = Rule::new("!(has(self.command) && has(self.script))")
        .message("a step has either command/args or script, not both"),
    validation = Rule::new("!has(self.args) || has(self.command)")
        .message("args need a command"),
    validation = Rule::new("!has(self.ports) || (has(self.service) && self.service)")
        .message("ports belong to a service step (service: true)"),
    // The API server refuses a repeated name itself (a list map); this rule says
    // so in words, and `baton run` checks it without a server.
    validation = Rule::new("!has(self.volumes) || self.volumes.all(v, self.volumes.exists_one(w, w.name == v.name))")
        .message("volume names must be unique within a step"),
    validation = Rule::new("!has(self.volumes) || self.volumes.all(v, self.volumes.exists_one(w, w.mountPath == v.mountPath))")
        .message("two volumes of a step cannot share a mountPath"),
)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Unique within the Job; a DNS label (it names the step's pod).
    #[schemars(schema_with = "super::schema::step_name")]
    pub name: String,

    /// Container image the step runs in. Ignored by `baton run` (local processes).
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// When the node pulls `image` (see [`PullPolicy`]; its doc is the schema's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Executable and its arguments, run directly (no shell: the image needs none).
    /// Exclusive with `script`. With neither, the image's own entrypoint runs
    /// (its `$BATON_OUTPUT` is then read as the termination message: 4 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub command: Option<Vec<String>>,

    /// Further arguments appended to `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub args: Option<Vec<String>>,

    /// A shell script, run with `sh -e` (the image needs `sh`). Exclusive with `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub script: Option<String>,

    /// Environment variables, including `valueFrom.secretKeyRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub env: Option<Vec<EnvVar>>,

    /// Working directory of the step (default: the workspace, else the image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub working_dir: Option<String>,

    /// Steps that must finish before this one starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::step_names")]
    pub depends_on: Option<Vec<String>>,

    /// When the step runs, given how its dependencies ended (default `onSuccess`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,

    /// Upper bound on this step's run time (e.g. `10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::duration")]
    pub timeout: Option<String>,

    /// Compute resources of the step's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Box<ResourceRequirements>>,

    /// Let the step fail without failing the Job. Its failure is still recorded
    /// (phase `Failed`, exit code, reason, and `failureAllowed: true`), but the
    /// Job's outcome and the `when` rules of later steps count it as a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_failure: Option<bool>,

    /// Run alongside the steps that depend on it (a database, a cache): those start
    /// once it is up (accepting connections on its `ports`), reach it by its step
    /// name (on a cluster) or `$BATON_SERVICE_<NAME>` (both), and it is stopped
    /// when the Job's last other step ended. Ending before that fails the Job
    /// (`ServiceExited`). Locally it is a process on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<bool>,

    /// A service's TCP ports: it is up once each accepts a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8))]
    pub ports: Option<Vec<ServicePort>>,

    /// This step's pod settings, over the Job's `podTemplate`. Ignored locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<Box<PodTemplate>>,

    /// Volumes mounted into this step's container: `emptyDir` (with
    /// `medium: Memory`, a tmpfs), read-only `configMap` and `secret`. Ignored locally.
    /// Names are unique (a list map keyed by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::pod_template::volumes_schema")]
    pub volumes: Option<Vec<StepVolume>>,

    /// `changes`: once the step ended, pack what it added, modified and deleted
    /// under the workspace into an archive (`status.steps[].artifacts`; extract
    /// it with `baton run --output DIR`). Steps running beside it share the
    /// workspace: their changes in that time are in it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect: Option<Collect>,

    /// Globs of changed paths to collect (`dist/**`, `*.log`), relative to the
    /// workspace; implies `collect: changes`, limited to the paths they match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::artifacts::globs_schema")]
    pub artifacts: Option<Vec<String>>,
}

impl Step {
    /// Whether `allowFailure` is set.
    pub fn allows_failure(&self) -> bool {
        self.allow_failure == Some(true)
    }

    /// Whether the step collects its changes (`collect` or `artifacts`).
    pub fn collects(&self) -> bool {
        self.collect.is_some() || self.artifacts.is_some()
    }

    /// Whether `service` is set.
    pub fn is_service(&self) -> bool {
        self.service == Some(true)
    }

    /// A service's ports.
    pub fn service_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .flatten()
            .filter_map(|p| u16::try_from(p.port).ok())
            .collect()
    }

    /// Every Secret the step reads, with how: `("env NAME", secret)` for a
    /// `secretKeyRef`, `("volume NAME", secret)` for a secret volume.
    pub fn secrets_read(&self) -> Vec<(String, &str)> {
        let env = self.env.iter().flatten().filter_map(|var| {
            let secret = var.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((format!("env {}", var.name), secret.name.as_str()))
        });
        let volumes = self.volumes.iter().flatten().filter_map(|v| {
            let secret = v.secret.as_ref()?;
            Some((format!("volume {}", v.name), secret.name.as_str()))
        });
        env.chain(volumes).collect()
    }
}

/// One TCP port of a service step.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// The port number the service listens on.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("a port is between 1 and 65535"))]
    pub port: i32,
}

/// When a step runs, given how the steps it depends on (and the Job so far) ended.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum When {
    /// Only if nothing before it failed (the default).
    #[default]
    OnSuccess,
    /// Only if something before it failed.
    OnFailure,
    /// Whatever happened before it (cleanup).
    Always,
}

/// When the node pulls the step's image: `IfNotPresent` (the default: a copy
/// already on the node is used), `Always` (on every run of the step, so a moved
/// tag is seen and the registry checks `imagePullSecrets` each time) or `Never`
/// (only a copy already on the node; without one the step ends `ImagePullFailed`).
/// Ignored by `baton run`.
// The schema of an enum field takes this type's doc, not the field's.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PullPolicy {
    /// On every run of the step.
    Always,
    /// Only when the node has no copy (the default).
    #[default]
    IfNotPresent,
    /// Never: the node must hold the image already.
    Never,
}

impl PullPolicy {
    /// The container field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Pod settings of an on-demand runner.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OnDemand {
    /// Runner image (default: the controller's configured runner image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resources of the runner container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector of the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Service account of the runner pod (default: one the controller sets up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// The Job's shared volume, mounted at `/workspace`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    /// Requested size (default `1Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// Storage class of the volume (default: the cluster's default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Where a Job is in its life.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum JobPhase {
    #[default]
    Queued,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobPhase {
    /// Whether the Job has ended for good.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Where a step is in its life.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StepPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl StepPhase {
    /// Whether the step has ended for good.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Skipped | Self::Cancelled
        )
    }
}

/// Observed state of a Job, written by the controller and the server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// Queued, Assigned, Running, Succeeded, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,
    /// Name of the Runner the Job is assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// Incremented on each hand-over to a runner; results from older epochs are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// When the first step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the Job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// One entry per step, in spec order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepStatus>,
    /// What steps wrote as `key=value` lines to `$BATON_OUTPUT`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// `Scheduled`, `Running`, `Complete`, `Failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// While Queued: its place in its namespace's queue, from 1 (next to be handed
    /// a runner), in queue order (`spec.priority`, then age). Absent otherwise.
    /// Written in batches, only when it changes: it may lag a second or two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i32>,
    /// Not part of the resource: true on the controller's cached copy of a
    /// finished Job whose conditions it dropped (`controller::job::retained`),
    /// so that no status is ever written from that copy.
    #[serde(skip)]
    #[schemars(skip)]
    pub conditions_cut: bool,
}

/// Observed state of one step.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// The step's name.
    pub name: String,
    /// Pending, Running, Succeeded, Failed, Skipped or Cancelled.
    pub phase: StepPhase,
    /// Exit code of the step's process, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the step ended as it did: `Completed`, `Error` (exited non-zero),
    /// `OOMKilled`, `Evicted`, `PodLost`, `DeadlineExceeded` (its timeout or the
    /// Job's), `ImagePullFailed`, `ContainerCannotRun`, `Cancelled`; for a step that
    /// never ran, why it was skipped (e.g. `DependencyFailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable detail of the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the step finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The step's pod, on a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// How many times the step was re-run after losing its pod to infrastructure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i32>,
    /// True when the step Failed but has `allowFailure`: the Job and later steps
    /// count it as a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_allowed: Option<bool>,
    /// The archive of what the step changed, when it collects (`collect`,
    /// `artifacts`) and changed anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<StepArtifacts>,
}

impl StepStatus {
    /// Whether the step ended Failed with its failure allowed.
    pub fn is_allowed_failure(&self) -> bool {
        self.phase == StepPhase::Failed && self.failure_allowed == Some(true)
    }
}
