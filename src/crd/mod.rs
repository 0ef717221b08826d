//! The three custom resources (`Job`, `Runner`, `RunnerToken`, group `baton.dev`),
//! the helpers every reconciler shares for their status, and nothing that does I/O.
//!
//! The Rust types are the contract: `baton crd` prints the CRDs generated from them,
//! `config/crd/` holds that output, and a test fails when the two drift.

pub mod conditions;
pub mod duration;
pub mod job;
pub mod runner;
pub mod runner_token;
mod schema;

pub use job::{Job, JobSpec, JobStatus, Step, When};
pub use runner::{Runner, RunnerSpec, RunnerStatus};
pub use runner_token::{RunnerToken, RunnerTokenSpec, RunnerTokenStatus};

use kube::CustomResourceExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// API group of every Baton resource.
pub const GROUP: &str = "baton.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Every CRD Baton defines, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![Job::crd(), Runner::crd(), RunnerToken::crd()]
}

/// The CRDs as one multi-document YAML stream (what `baton crd` prints and
/// `config/crd/baton.dev.yaml` holds).
pub fn all_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}
