//! The Job statuses the reconciler writes, computed (pure) from the Job as read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::crd::Job;
use crate::crd::conditions::{self, Desired};
use crate::crd::job::{JobPhase, JobStatus};
use crate::executor::dag::Dag;
use crate::server::jobs::{finish, initial_steps, phase_conditions};

/// Why a spec cannot run (a DAG cycle), if it cannot.
pub fn invalid_spec(job: &Job) -> Option<String> {
    Dag::from_steps(&job.spec.steps).err().map(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// What every status this file builds ends with: the health conditions (their
/// times from the status as read) and `observedGeneration` ([`finish`]).
fn settle(job: &Job, s: JobStatus, now: Timestamp) -> JobStatus {
    let before = job
        .status
        .as_ref()
        .map_or(&[][..], |s| s.conditions.as_slice());
    finish(
        s,
        before,
        job.spec.cancel == Some(true),
        job.metadata.generation,
        now,
    )
}

/// Status of a Job that stays Queued.
pub fn queued_status(job: &Job, reason: &str, message: &str, now: Timestamp) -> JobStatus {
    let mut s = job.status.clone().unwrap_or_default();
    s.phase = Some(JobPhase::Queued);
    s.observed_generation = job.metadata.generation;
    s.conditions = conditions::merge(
        &s.conditions,
        &[Desired::new("Scheduled", false, reason, message)],
        job.metadata.generation,
        now,
    );
    settle(job, s, now)
}

/// Status of a Job handed to `runner`: the epoch moves on.
pub fn assigned_status(job: &Job, runner: &str, now: Timestamp) -> JobStatus {
    let mut s = job.status.clone().unwrap_or_default();
    s.phase = Some(JobPhase::Assigned);
    s.runner = Some(runner.to_owned());
    s.epoch = Some(s.epoch.unwrap_or(0) + 1);
    s.observed_generation = job.metadata.generation;
    if s.steps.is_empty() {
        // A hand-over keeps what the previous runner reported.
        s.steps = initial_steps(&job.spec);
    }
    s.conditions = conditions::merge(
        &s.conditions,
        &[Desired::new(
            "Scheduled",
            true,
            "Assigned",
            format!("assigned to runner {runner}"),
        )],
        job.metadata.generation,
        now,
    );
    settle(job, s, now)
}

/// Status of a Job whose runner was lost: Queued again, waiting for a hand-over
/// (runner and epoch stay, so the next assignment moves the epoch on).
pub fn requeued_status(job: &Job, runner: &str, now: Timestamp) -> JobStatus {
    let mut s = job.status.clone().unwrap_or_default();
    s.phase = Some(JobPhase::Queued);
    s.conditions = conditions::merge(
        &s.conditions,
        &[Desired::new(
            "Scheduled",
            false,
            "RunnerLost",
            format!("runner {runner} was lost; waiting for another"),
        )],
        job.metadata.generation,
        now,
    );
    s.conditions = phase_conditions(
        &s.conditions,
        JobPhase::Queued,
        Some("RunnerLost"),
        None,
        job.metadata.generation,
        now,
    );
    settle(job, s, now)
}

/// Status of a Queued Job cancelled before it started.
pub fn cancelled_status(job: &Job, now: Timestamp) -> JobStatus {
    let mut s = job.status.clone().unwrap_or_default();
    s.phase = Some(JobPhase::Cancelled);
    s.completion_time = Some(Time(now));
    s.observed_generation = job.metadata.generation;
    s.steps = initial_steps(&job.spec)
        .into_iter()
        .map(|mut st| {
            st.phase = crate::crd::job::StepPhase::Cancelled;
            st.reason = Some("Cancelled".into());
            st
        })
        .collect();
    s.conditions = conditions::merge(
        &s.conditions,
        &[Desired::new(
            "Scheduled",
            false,
            "Cancelled",
            "cancelled before it started",
        )],
        job.metadata.generation,
        now,
    );
    s.conditions = phase_conditions(
        &s.conditions,
        JobPhase::Cancelled,
        Some("Cancelled"),
        Some("spec.cancel was set before the Job started"),
        job.metadata.generation,
        now,
    );
    settle(job, s, now)
}

/// Status of a finished Job, settled again: a `spec.cancel` set after the end still
/// moves `observedGeneration`, and a Job finished before the health conditions
/// existed gets them. Equal to the current status when nothing is due.
pub fn settled_status(job: &Job, now: Timestamp) -> JobStatus {
    settle(job, job.status.clone().unwrap_or_default(), now)
}

/// When a finished Job is due for deletion, if it has a TTL.
pub fn ttl_due(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.ttl_seconds_after_finished?;
    let s = job.status.as_ref()?;
    if !s.phase.unwrap_or_default().is_finished() {
        return None;
    }
    let done = s.completion_time.as_ref()?.0;
    done.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(ttl)))
        .ok()
}
