//! `Runner`: one runner process, created by the controller when it registers.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation that turns deleting a connected Runner into a `delete` command:
/// the runner wipes its state directory and exits.
pub const DECOMMISSION_ANNOTATION: &str = "baton.dev/decommission";

/// What an operator wants of a runner.
// printcolumn(...) repeats keys by design; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "baton.dev",
    version = "v1alpha1",
    kind = "Runner",
    namespaced,
    cel,
    status = "RunnerStatus",
    shortname = "br",
    category = "baton",
    derive = "PartialEq",
    printcolumn(name = "Adoption", type_ = "string", json_path = ".status.adoption"),
    printcolumn(
        name = "Connected",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Connected\")].status"
    ),
    printcolumn(name = "Disabled", type_ = "boolean", json_path = ".spec.disabled"),
    printcolumn(name = "Active", type_ = "integer", json_path = ".status.activeJobs"),
    printcolumn(
        name = "Direct-Only",
        type_ = "boolean",
        json_path = ".status.directOnly",
        priority = 1
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.version",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RunnerSpec {
    /// `Adopted` (give it a token and jobs) or `Rejected` (refuse its requests).
    /// Unset while undecided: the runner waits as Pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adoption: Option<AdoptionDecision>,

    /// Stop giving this runner jobs (it is sent `disable`; `enable` when cleared).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,

    /// Labels a Job's `runnerSelector` matches against.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// How many Jobs the runner runs at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("maxConcurrentJobs must be between 1 and 1000"))]
    pub max_concurrent_jobs: Option<i32>,
}

/// An operator's decision about a runner.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdoptionDecision {
    Adopted,
    Rejected,
}

/// The runner's place in the adoption lifecycle.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AdoptionState {
    /// Registered without a token; waits for an operator.
    #[default]
    Pending,
    /// Registered with a valid token; usable at once.
    Preadopted,
    /// Adopted by an operator; holds a token issued for it.
    Adopted,
    /// Refused: listed, but every request is refused and it gets no jobs.
    Rejected,
}

/// Observed state of a Runner.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunnerStatus {
    /// Pending, Preadopted, Adopted or Rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adoption: Option<AdoptionState>,
    /// The id the runner generated and keeps in its state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_id: Option<String>,
    /// The runner's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The public key (`ed25519:…`) bound to this Runner at its first registration:
    /// only the holder of its private key (or of a token issued for this runner
    /// name) may register and connect as it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// SHA-256 fingerprint of `publicKey`, as OpenSSH prints it (`SHA256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    /// Jobs the runner is running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_jobs: Option<i32>,
    /// True when the runner was started with `--direct-only`: it takes only Jobs
    /// that name it (`spec.runnerName`), none by its labels. As its last control
    /// channel said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_only: Option<bool>,
    /// `Adopted`, `Connected`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
