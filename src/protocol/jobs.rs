//! The job routes' wire types: what a runner sends and gets while it runs a Job
//! (list, claim, status report, log append) and the query of a user's log read.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::crd::job::{JobPhase, JobSpec, StepStatus};
use crate::crd::job_status;

/// Largest status report (outputs may be up to 1 MiB).
pub const MAX_STATUS_BODY: u64 = 2 * 1024 * 1024;
/// Largest log chunk.
pub const MAX_LOG_BODY: u64 = 1024 * 1024;

/// Who is asking: a runner and the epoch it holds.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClaimRequest {
    pub runner: String,
    pub epoch: i64,
}

/// What a claim returns: everything the runner needs to run (or resume) the Job.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimResponse {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub epoch: i64,
    pub spec: JobSpec,
    /// Bytes of each step's log the server already holds.
    pub log_offsets: BTreeMap<String, u64>,
    /// `status.startTime`: a resumed run's Job timeout counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// `status.steps` as recorded: a finished step's result stands, a resumed
    /// step's timeout counts from its `startTime`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepStatus>,
}

/// A runner's report: a step changed, or the Job did (or both).
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatusReport {
    pub runner: String,
    pub epoch: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Job's outputs, with the final phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<BTreeMap<String, String>>,
}

/// One Job assigned to a runner (`GET /v1/jobs`).
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub namespace: String,
    pub name: String,
    pub epoch: i64,
    /// `spec.cancel` is set: run nothing more, end Cancelled.
    #[serde(default)]
    pub cancel: bool,
}

/// `POST .../logs` query.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppendQuery {
    pub step: String,
    pub offset: u64,
    pub runner: String,
    pub epoch: i64,
}

/// The audience a user's token for reading logs must be minted for
/// (`kubectl create token SA --audience baton`): a token meant for the API server
/// (or for anything else) is refused, so Baton never holds a credential that works
/// elsewhere.
pub const LOG_TOKEN_AUDIENCE: &str = "baton";

/// `GET .../logs` query.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    pub step: String,
    #[serde(default)]
    pub follow: bool,
    /// Start at this byte of the stored log (what earlier reads returned), not at 0.
    #[serde(default)]
    pub offset: u64,
}

/// `GET /v1/jobs` query.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub runner: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Answer to a log append.
#[derive(Deserialize, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AppendResponse {
    pub length: u64,
    pub accepted: u64,
}

impl StatusReport {
    /// The report as the Job status transition reads it.
    pub fn as_report(&self) -> job_status::Report<'_> {
        job_status::Report {
            step: self.step.as_ref(),
            phase: self.phase,
            reason: self.reason.as_deref(),
            message: self.message.as_deref(),
            outputs: self.outputs.as_ref(),
        }
    }
}
