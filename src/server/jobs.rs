//! The job half of the runner API: what a runner sends and gets while it runs a
//! Job. The status rules behind it are [`crate::crd::job_status`].
//!
//! - `GET  /v1/jobs?runner=R[&namespace=NS]` (runner token): Jobs assigned to R.
//! - `POST /v1/jobs/{ns}/{name}/claim` (runner token, `{runner, epoch}`): the Job's
//!   spec, uid and the log lengths already stored, so a resumed run continues.
//! - `POST /v1/jobs/{ns}/{name}/status` (runner token, [`crate::protocol::jobs::StatusReport`]).
//! - `POST /v1/jobs/{ns}/{name}/logs?step&offset&runner&epoch` (runner token, bytes).
//! - `GET  /v1/jobs/{ns}/{name}/logs?step[&follow=true]` (a Kubernetes bearer token
//!   whose user may `get` that Job).
//!
//! Fencing: every runner request names the runner and the epoch it was assigned;
//! it is accepted only when the token is valid for that runner and the Job's
//! `status.runner` and `status.epoch` are exactly those (else 409 `StaleEpoch`).
//! Status writes replace the status with the resourceVersion the check read, so a
//! hand-over between the check and the write makes the write fail, never land.

use warp::http::StatusCode;

use super::input::ApiError;
use crate::crd::JobStatus;
use crate::crd::job_status;

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
