//! The job half of the runner API: what a runner sends and gets while it runs a
//! Job, and the pure rules behind it.
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

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use warp::http::StatusCode;

use super::input::ApiError;
use crate::crd::conditions::{self, Desired, Health};
use crate::crd::job::{JobPhase, JobSpec, JobStatus, StepPhase, StepStatus};

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

/// Whether `runner` holding `epoch` may act for a Job with this status.
pub fn fence(status: Option<&JobStatus>, runner: &str, epoch: i64) -> Result<(), ApiError> {
    let holder = status.and_then(|s| s.runner.as_deref());
    let current = status.and_then(|s| s.epoch).unwrap_or(0);
    if holder != Some(runner) || current != epoch {
        return Err(stale(format!(
            "runner {runner} at epoch {epoch} does not hold this Job (held by {} at epoch {current})",
            holder.unwrap_or("nobody")
        )));
    }
    let phase = status.and_then(|s| s.phase).unwrap_or_default();
    if !matches!(phase, JobPhase::Assigned | JobPhase::Running) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "NotActive",
            format!("the Job is {phase:?}: it takes no more reports"),
        ));
    }
    Ok(())
}

/// The step list a status starts with: every step Pending, in spec order.
pub fn initial_steps(spec: &JobSpec) -> Vec<StepStatus> {
    spec.steps
        .iter()
        .map(|s| StepStatus {
            name: s.name.clone(),
            phase: StepPhase::Pending,
            ..Default::default()
        })
        .collect()
}

/// `Running`, `Complete` and `Failed` from the phase; `Scheduled` kept as it is.
pub fn phase_conditions(
    previous: &[Condition],
    phase: JobPhase,
    reason: Option<&str>,
    message: Option<&str>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut desired: Vec<Desired> = previous
        .iter()
        .filter(|c| c.type_ == "Scheduled")
        .map(|c| Desired::new("Scheduled", c.status == "True", &c.reason, &c.message))
        .collect();
    let why = reason.unwrap_or(match phase {
        JobPhase::Succeeded => "Succeeded",
        JobPhase::Failed => "Failed",
        JobPhase::Cancelled => "Cancelled",
        JobPhase::Running => "Running",
        JobPhase::Assigned => "Assigned",
        JobPhase::Queued => "Queued",
    });
    let msg = message.unwrap_or("").to_owned();
    let running = phase == JobPhase::Running;
    desired.push(Desired::new(
        "Running",
        running,
        if running { "Running" } else { why },
        if running { "" } else { &msg },
    ));
    if phase.is_finished() {
        desired.push(Desired::new(
            "Complete",
            phase == JobPhase::Succeeded,
            why,
            &msg,
        ));
        desired.push(Desired::new(
            "Failed",
            phase != JobPhase::Succeeded,
            why,
            &msg,
        ));
    }
    conditions::merge(previous, &desired, generation, now)
}

/// How a Job stands for GitOps tools (kstatus, Argo CD), from its status alone:
/// Queued / Assigned / Running: `Reconciling` (reason: the phase, or `Cancelling`
/// once `spec.cancel` is set); Succeeded: `Ready`; Failed and Cancelled: `Stalled`
/// (the Job will never produce its result); a spec that cannot run (`InvalidSpec`,
/// immutable): `Stalled` while still Queued.
pub fn health(status: &JobStatus, cancel: bool) -> Health {
    let phase = status.phase.unwrap_or_default();
    let cond = |t: &str| conditions::find(&status.conditions, t);
    let runner = status.runner.as_deref().unwrap_or("?");
    let ended_because = |fallback_reason: &str, fallback_message: &str| {
        let c = cond("Failed");
        let reason = c
            .map(|c| c.reason.as_str())
            .filter(|r| !r.is_empty())
            .unwrap_or(fallback_reason)
            .to_owned();
        let message = c
            .map(|c| c.message.as_str())
            .filter(|m| !m.is_empty())
            .unwrap_or(fallback_message)
            .to_owned();
        (reason, message)
    };
    match phase {
        JobPhase::Succeeded => Health::current("Succeeded", "every step succeeded or was skipped"),
        JobPhase::Failed => {
            let (reason, message) = ended_because("Failed", "the Job failed");
            Health::stalled(reason, message)
        }
        JobPhase::Cancelled => {
            let (reason, message) = ended_because("Cancelled", "the Job was cancelled");
            Health::stalled(reason, message)
        }
        _ if cancel => Health::reconciling(
            "Cancelling",
            match phase {
                JobPhase::Queued => "spec.cancel is set: the Job will not start".to_owned(),
                _ => format!("spec.cancel is set: runner {runner} is stopping its steps"),
            },
        ),
        JobPhase::Queued => match cond("Scheduled").filter(|c| c.status == "False") {
            Some(c) if c.reason == "InvalidSpec" => {
                Health::stalled("InvalidSpec", format!("the spec cannot run: {}", c.message))
            }
            Some(c) => Health::reconciling(
                "Queued",
                format!("waiting for a runner ({}: {})", c.reason, c.message),
            ),
            None => Health::reconciling("Queued", "waiting for a runner"),
        },
        JobPhase::Assigned => Health::reconciling(
            "Assigned",
            format!("assigned to runner {runner}, which has not started it yet"),
        ),
        JobPhase::Running => {
            let done = status
                .steps
                .iter()
                .filter(|s| s.phase.is_finished())
                .count();
            Health::reconciling(
                "Running",
                format!(
                    "running on runner {runner}: {done} of {} steps finished",
                    status.steps.len()
                ),
            )
        }
    }
}

/// Settle what every status write carries: the health conditions computed from the
/// rest of the status (their times from `before`, the conditions as read), and the
/// generation this status was computed for (a write always reads the Job first, so
/// it has seen that generation's spec).
pub fn finish(
    mut status: JobStatus,
    before: &[Condition],
    cancel: bool,
    generation: Option<i64>,
    now: Timestamp,
) -> JobStatus {
    let h = health(&status, cancel);
    status.conditions = conditions::set_health(&status.conditions, before, &h, generation, now);
    status.observed_generation = generation;
    status
}

/// The status after a runner's report. A finished Job never changes again.
pub fn apply_report(
    status: &JobStatus,
    spec: &JobSpec,
    report: &StatusReport,
    generation: Option<i64>,
    now: Timestamp,
) -> JobStatus {
    let mut next = status.clone();
    if next.phase.unwrap_or_default().is_finished() {
        return next;
    }
    if next.steps.is_empty() {
        next.steps = initial_steps(spec);
    }
    if let Some(step) = &report.step {
        match next.steps.iter_mut().find(|s| s.name == step.name) {
            Some(s) => *s = step.clone(),
            None => next.steps.push(step.clone()),
        }
        if step.phase == StepPhase::Running && next.start_time.is_none() {
            next.start_time = Some(step.start_time.clone().unwrap_or(Time(now)));
        }
    }
    if let Some(phase) = report.phase {
        // Assigned -> Running -> finished; a late Running after the end is ignored.
        next.phase = Some(phase);
        if phase == JobPhase::Running && next.start_time.is_none() {
            next.start_time = Some(Time(now));
        }
        if phase.is_finished() {
            next.completion_time = Some(Time(now));
            if let Some(outputs) = &report.outputs {
                next.outputs = outputs.clone();
            }
        }
        next.conditions = phase_conditions(
            &next.conditions,
            phase,
            report.reason.as_deref(),
            report.message.as_deref(),
            generation,
            now,
        );
    }
    finish(
        next,
        &status.conditions,
        spec.cancel == Some(true),
        generation,
        now,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crd::Step;

    fn spec() -> JobSpec {
        JobSpec {
            steps: ["a", "b"]
                .iter()
                .map(|n| Step {
                    name: (*n).into(),
                    image: "busybox".into(),
                    script: Some("true".into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn held(phase: JobPhase) -> JobStatus {
        JobStatus {
            phase: Some(phase),
            runner: Some("r1".into()),
            epoch: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn fencing_table() {
        let cases: &[(Option<JobStatus>, &str, i64, Option<&str>)] = &[
            (Some(held(JobPhase::Assigned)), "r1", 2, None),
            (Some(held(JobPhase::Running)), "r1", 2, None),
            (Some(held(JobPhase::Running)), "r1", 1, Some("StaleEpoch")),
            (Some(held(JobPhase::Running)), "r1", 3, Some("StaleEpoch")),
            (Some(held(JobPhase::Running)), "r2", 2, Some("StaleEpoch")),
            (None, "r1", 0, Some("StaleEpoch")),
            (Some(held(JobPhase::Succeeded)), "r1", 2, Some("NotActive")),
            (Some(held(JobPhase::Cancelled)), "r1", 2, Some("NotActive")),
        ];
        for (status, runner, epoch, want) in cases {
            let got = fence(status.as_ref(), runner, *epoch)
                .err()
                .map(|e| e.reason);
            assert_eq!(got, *want, "{status:?} {runner} {epoch}");
        }
    }

    #[test]
    fn reports_build_the_status() {
        let now = Timestamp::now();
        let spec = spec();
        let s0 = held(JobPhase::Assigned);
        let running = StatusReport {
            runner: "r1".into(),
            epoch: 2,
            phase: Some(JobPhase::Running),
            ..Default::default()
        };
        let s1 = apply_report(&s0, &spec, &running, Some(1), now);
        assert_eq!(s1.phase, Some(JobPhase::Running));
        assert_eq!(s1.steps.len(), 2);
        assert!(s1.start_time.is_some());
        let c = |s: &JobStatus, t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| c.status.clone())
        };
        assert_eq!(c(&s1, "Running").as_deref(), Some("True"));
        let ks = |s: &JobStatus| conditions::kstatus(&s.conditions, Some(1), s.observed_generation);
        assert_eq!(ks(&s1), "InProgress");
        assert_eq!(s1.observed_generation, Some(1));
        assert_eq!(
            conditions::find(&s1.conditions, "Reconciling").map(|c| c.message.as_str()),
            Some("running on runner r1: 0 of 2 steps finished")
        );
        // The same report again changes nothing (no write).
        assert_eq!(apply_report(&s1, &spec, &running, Some(1), now), s1);

        let step = StatusReport {
            runner: "r1".into(),
            epoch: 2,
            step: Some(StepStatus {
                name: "b".into(),
                phase: StepPhase::Succeeded,
                exit_code: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s2 = apply_report(&s1, &spec, &step, Some(1), now);
        assert_eq!(s2.steps[1].phase, StepPhase::Succeeded);
        assert_eq!(s2.steps[0].phase, StepPhase::Pending);

        let done = StatusReport {
            runner: "r1".into(),
            epoch: 2,
            phase: Some(JobPhase::Failed),
            reason: Some("StepFailed".into()),
            outputs: Some([("k".to_owned(), "v".to_owned())].into()),
            ..Default::default()
        };
        let s3 = apply_report(&s2, &spec, &done, Some(1), now);
        assert_eq!(s3.phase, Some(JobPhase::Failed));
        assert_eq!(s3.outputs.get("k").map(String::as_str), Some("v"));
        assert!(s3.completion_time.is_some());
        assert_eq!(c(&s3, "Failed").as_deref(), Some("True"));
        assert_eq!(c(&s3, "Complete").as_deref(), Some("False"));
        assert_eq!(c(&s3, "Running").as_deref(), Some("False"));
        assert_eq!(ks(&s3), "Failed");
        assert_eq!(c(&s3, "Stalled").as_deref(), Some("True"));
        assert_eq!(c(&s3, "Reconciling"), None, "absent, not False");
        assert_eq!(
            conditions::find(&s3.conditions, "Stalled").map(|c| c.reason.as_str()),
            Some("StepFailed")
        );
        // Finished: nothing moves it again.
        assert_eq!(apply_report(&s3, &spec, &running, Some(1), now), s3);
    }

    #[test]
    fn kstatus_reads_how_a_job_ended() {
        let now = Timestamp::now();
        let mut spec = spec();
        let end = |phase, reason: Option<&str>| StatusReport {
            runner: "r1".into(),
            epoch: 2,
            phase: Some(phase),
            reason: reason.map(str::to_owned),
            message: reason.map(|r| format!("because {r}")),
            ..Default::default()
        };
        let read = |s: &JobStatus, generation| {
            let health = ["Reconciling", "Stalled", "Ready"]
                .iter()
                .filter_map(|t| conditions::find(&s.conditions, t))
                .find(|c| c.type_ == "Ready" || c.status == "True")
                .map(|c| format!("{}={}", c.type_, c.reason))
                .unwrap_or_default();
            let k = conditions::kstatus(&s.conditions, Some(generation), s.observed_generation);
            format!("{k} {health}")
        };
        let s0 = held(JobPhase::Running);
        let ok = apply_report(&s0, &spec, &end(JobPhase::Succeeded, None), Some(1), now);
        assert_eq!(read(&ok, 1), "Current Ready=Succeeded");
        let timeout = apply_report(
            &s0,
            &spec,
            &end(JobPhase::Failed, Some("Timeout")),
            Some(1),
            now,
        );
        assert_eq!(read(&timeout, 1), "Failed Stalled=Timeout");
        assert_eq!(
            conditions::find(&timeout.conditions, "Stalled").map(|c| c.message.as_str()),
            Some("because Timeout")
        );
        // spec.cancel moved the generation on; the runner's report observes it.
        spec.cancel = Some(true);
        let step = StatusReport {
            runner: "r1".into(),
            epoch: 2,
            step: Some(StepStatus {
                name: "a".into(),
                phase: StepPhase::Cancelled,
                ..Default::default()
            }),
            ..Default::default()
        };
        let cancelling = apply_report(&s0, &spec, &step, Some(2), now);
        assert_eq!(read(&cancelling, 2), "InProgress Reconciling=Cancelling");
        let cancelled = apply_report(
            &cancelling,
            &spec,
            &end(JobPhase::Cancelled, Some("Cancelled")),
            Some(2),
            now,
        );
        assert_eq!(read(&cancelled, 2), "Failed Stalled=Cancelled");
    }
}
