//! The job half of the runner API: what a runner sends and gets while it runs a
//! Job. The status rules behind it are [`crate::crd::job_status`].
//!
//! - `GET  /v1/jobs?runner=R[&namespace=NS]` (runner token): Jobs assigned to R.
//! - `POST /v1/jobs/{ns}/{name}/claim` (runner token, `{runner, epoch}`): the Job's
//!   spec, uid and the log lengths already stored, so a resumed run continues.
//! - `POST /v1/jobs/{ns}/{name}/status` (runner token, [`StatusReport`]).
//! - `POST /v1/jobs/{ns}/{name}/logs?step&offset&runner&epoch` (runner token, bytes).
//! - `GET  /v1/jobs/{ns}/{name}/logs?step[&follow=true]` (a Kubernetes bearer token
//!   whose user may `get` that Job).
//!
//! Fencing: every runner request names the runner and the epoch it was assigned;
//! it is accepted only when the token is valid for that runner and the Job's
//! `status.runner` and `status.epoch` are exactly those (else 409 `StaleEpoch`).
//! Status writes replace the status with the resourceVersion the check read, so a
//! hand-over between the check and the write makes the write fail, never land.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use warp::http::StatusCode;

use super::input::ApiError;
use crate::crd::job::{JobPhase, JobSpec, JobStatus, StepStatus};
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
    /// `status.steps` as recorded: a resumed step's timeout counts from its
    /// `startTime`.
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

/// `GET .../logs` query.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    pub step: String,
    #[serde(default)]
    pub follow: bool,
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

pub fn stale(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "StaleEpoch", message)
}

/// [`job_status::fence`] as the runner API answers it (409 with the reason).
pub fn fence(status: Option<&JobStatus>, runner: &str, epoch: i64) -> Result<(), ApiError> {
    job_status::fence(status, runner, epoch).map_err(|e| match e {
        job_status::Fenced::Stale { .. } => stale(e.to_string()),
        job_status::Fenced::NotActive(_) => {
            ApiError::new(StatusCode::CONFLICT, "NotActive", e.to_string())
        }
    })
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
