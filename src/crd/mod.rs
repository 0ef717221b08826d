//! The three custom resources (`Job`, `Runner`, `RunnerToken`, group `baton.dev`),
//! the helpers every reconciler shares for their status, and nothing that does I/O.
//!
//! The Rust types are the contract: `baton crd` prints the CRDs generated from them,
//! `config/crd/` holds that output, and a test fails when the two drift.

pub mod artifacts;
pub mod conditions;
pub mod content;
pub mod duration;
pub mod job;
pub mod job_status;
pub mod manifest;
pub mod pod_template;
pub mod reasons;
pub mod runner;
pub mod runner_token;
mod schema;

pub use job::{Job, JobSpec, JobStatus, Step, When};
pub use runner::{Runner, RunnerSpec, RunnerStatus};
pub use runner_token::{RunnerToken, RunnerTokenSpec, RunnerTokenStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every Baton resource.
pub const GROUP: &str = "baton.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Every CRD Baton defines, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![Job::crd(), Runner::crd(), RunnerToken::crd()]
}

/// Each CRD as (file name under `config/crd/`, YAML document).
pub fn files() -> Result<Vec<(String, String)>, serde_saphyr::SerializeError> {
    all()
        .into_iter()
        .map(|crd| {
            let file = format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"));
            Ok((file, format!("---\n{}", serde_saphyr::to_string(&crd)?)))
        })
        .collect()
}

/// The CRDs as one multi-document YAML stream: what `baton crd` prints.
pub fn all_yaml() -> Result<String, serde_saphyr::SerializeError> {
    Ok(files()?.into_iter().map(|(_, yaml)| yaml).collect())
}
