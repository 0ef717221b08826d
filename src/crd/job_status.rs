//! Every change of a Job's status, in one place and pure: the controller's
//! (queue, assign, lost runner, cancel, settle) and a runner's reports (claim,
//! step changes, finish) are each a [`Transition`], and [`next`] turns the Job as
//! read plus one transition into the status to write. Both writers replace the
//! status at the resourceVersion they read, so a conflict is re-read and re-decided.
//!
//! Whatever the transition, the status ends with the same derived fields
//! ([`settle`]): the kstatus health conditions and `observedGeneration`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::conditions::{self, Desired, Health};
use super::job::{Job, JobPhase, JobSpec, JobStatus, StepPhase, StepStatus};
use super::reasons::{condition, reason};

/// What a runner reports: a step changed, or the Job did (or both).
#[derive(Clone, Copy, Debug, Default)]
pub struct Report<'a> {
    pub step: Option<&'a StepStatus>,
    pub phase: Option<JobPhase>,
    pub reason: Option<&'a str>,
    pub message: Option<&'a str>,
    /// The Job's outputs, with the final phase.
    pub outputs: Option<&'a BTreeMap<String, String>>,
}

/// One change of a Job's life.
#[derive(Clone, Copy, Debug)]
pub enum Transition<'a> {
    /// Stays Queued, waiting for `reason`.
    Wait { reason: &'a str, message: &'a str },
    /// Handed to `runner`: the epoch moves on.
    Assign { runner: &'a str },
    /// Its runner is gone: Queued again (runner and epoch stay, so the next
    /// assignment moves the epoch on and fences the old runner off).
    RunnerLost { runner: &'a str },
    /// `spec.cancel` with nobody to stop the steps: still Queued (`lost_runner`
    /// None), or its runner lost. Ends Cancelled at once.
    Cancel { lost_runner: Option<&'a str> },
    /// A runner's report (the fence was checked by the caller).
    Report(Report<'a>),
    /// Nothing new: only the derived fields (a `spec.cancel` after the end still
    /// moves `observedGeneration`; an old status gets the health conditions).
    Settle,
}

/// The status `job` should have after `t`. Equal to the current status when the
/// transition changes nothing, so callers can skip the write.
pub fn next(job: &Job, t: Transition<'_>, now: Timestamp) -> JobStatus {
    let current = job.status.clone().unwrap_or_default();
    let generation = job.metadata.generation;
    let s = match t {
        _ if current.phase.unwrap_or_default().is_finished() => current.clone(),
        Transition::Wait { reason, message } => scheduled(
            current.clone(),
            JobPhase::Queued,
            false,
            reason,
            message,
            generation,
            now,
        ),
        Transition::Assign { runner } => assigned(&current, &job.spec, runner, generation, now),
        Transition::RunnerLost { runner } => lost(current.clone(), runner, generation, now),
        Transition::Cancel { lost_runner } => {
            cancelled(current.clone(), &job.spec, lost_runner, generation, now)
        }
        Transition::Report(r) => reported(current.clone(), &job.spec, r, generation, now),
        Transition::Settle => current.clone(),
    };
    let s = without_stale_position(s);
    settle(
        s,
        &current.conditions,
        job.spec.cancel == Some(true),
        generation,
        now,
    )
}

/// A queue position belongs to a Queued Job only: leaving the queue drops it
/// (the queue's own batched writes give it back on a return to the queue).
fn without_stale_position(mut s: JobStatus) -> JobStatus {
    if s.phase.unwrap_or_default() != JobPhase::Queued {
        s.queue_position = None;
    }
    s
}

fn scheduled(
    mut s: JobStatus,
    phase: JobPhase,
    held: bool,
    why: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> JobStatus {
    s.phase = Some(phase);
    // Only `Scheduled`: the phase conditions of an earlier run are dropped.
    let desired = [Desired::new(condition::SCHEDULED, held, why, message)];
    s.conditions = conditions::merge(&s.conditions, &desired, generation, now);
    s
}

fn assigned(
    s: &JobStatus,
    spec: &JobSpec,
    runner: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> JobStatus {
    let mut s = s.clone();
    s.runner = Some(runner.to_owned());
    s.epoch = Some(s.epoch.unwrap_or(0) + 1);
    if s.steps.is_empty() {
        // A hand-over keeps what the previous runner reported.
        s.steps = initial_steps(spec);
    }
    let message = format!("assigned to runner {runner}");
    scheduled(
        s,
        JobPhase::Assigned,
        true,
        reason::ASSIGNED,
        &message,
        generation,
        now,
    )
}

fn lost(s: JobStatus, runner: &str, generation: Option<i64>, now: Timestamp) -> JobStatus {
    let message = format!("runner {runner} was lost; waiting for another");
    let s = scheduled(
        s,
        JobPhase::Queued,
        false,
        reason::RUNNER_LOST,
        &message,
        generation,
        now,
    );
    let mut s = s;
    s.conditions = phase_conditions(
        &s.conditions,
        JobPhase::Queued,
        Some(reason::RUNNER_LOST),
        None,
        generation,
        now,
    );
    s
}

fn cancelled(
    mut s: JobStatus,
    spec: &JobSpec,
    lost_runner: Option<&str>,
    generation: Option<i64>,
    now: Timestamp,
) -> JobStatus {
    if s.steps.is_empty() {
        s.steps = initial_steps(spec);
    }
    let step_message = lost_runner.map(|r| format!("cancelled while its runner {r} was lost"));
    for st in s.steps.iter_mut().filter(|st| !st.phase.is_finished()) {
        st.phase = StepPhase::Cancelled;
        st.reason = Some(reason::CANCELLED.into());
        st.message.clone_from(&step_message);
        if st.start_time.is_some() {
            st.completion_time = Some(Time(now));
        }
    }
    s.phase = Some(JobPhase::Cancelled);
    s.completion_time = Some(Time(now));
    let message = match lost_runner {
        None => "spec.cancel was set before the Job started".to_owned(),
        Some(r) => format!("spec.cancel was set and runner {r} is lost: its steps were stopped"),
    };
    if lost_runner.is_none() {
        s = scheduled(
            s,
            JobPhase::Cancelled,
            false,
            reason::CANCELLED,
            "cancelled before it started",
            generation,
            now,
        );
    }
    s.conditions = phase_conditions(
        &s.conditions,
        JobPhase::Cancelled,
        Some(reason::CANCELLED),
        Some(&message),
        generation,
        now,
    );
    s
}

fn reported(
    mut s: JobStatus,
    spec: &JobSpec,
    r: Report<'_>,
    generation: Option<i64>,
    now: Timestamp,
) -> JobStatus {
    if s.steps.is_empty() {
        s.steps = initial_steps(spec);
    }
    if let Some(step) = r.step {
        match s.steps.iter_mut().find(|st| st.name == step.name) {
            Some(st) => *st = step.clone(),
            None => s.steps.push(step.clone()),
        }
        if step.phase == StepPhase::Running && s.start_time.is_none() {
            s.start_time = Some(step.start_time.clone().unwrap_or(Time(now)));
        }
    }
    if let Some(phase) = r.phase {
        s.phase = Some(phase);
        if phase == JobPhase::Running && s.start_time.is_none() {
            s.start_time = Some(Time(now));
        }
        if phase.is_finished() {
            s.completion_time = Some(Time(now));
            if let Some(outputs) = r.outputs {
                s.outputs = outputs.clone();
            }
        }
        s.conditions = phase_conditions(&s.conditions, phase, r.reason, r.message, generation, now);
    }
    s
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
    why: Option<&str>,
    message: Option<&str>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut desired: Vec<Desired> = conditions::find(previous, condition::SCHEDULED)
        .map(|c| {
            Desired::new(
                condition::SCHEDULED,
                c.status == "True",
                &c.reason,
                &c.message,
            )
        })
        .into_iter()
        .collect();
    let why = why.unwrap_or(match phase {
        JobPhase::Succeeded => reason::SUCCEEDED,
        JobPhase::Failed => reason::FAILED,
        JobPhase::Cancelled => reason::CANCELLED,
        JobPhase::Running => reason::RUNNING,
        JobPhase::Assigned => reason::ASSIGNED,
        JobPhase::Queued => reason::QUEUED,
    });
    let msg = message.unwrap_or("");
    let running = phase == JobPhase::Running;
    desired.push(if running {
        Desired::new(condition::RUNNING, true, reason::RUNNING, "")
    } else {
        Desired::new(condition::RUNNING, false, why, msg)
    });
    if phase.is_finished() {
        let ok = phase == JobPhase::Succeeded;
        desired.push(Desired::new(condition::COMPLETE, ok, why, msg));
        desired.push(Desired::new(condition::FAILED, !ok, why, msg));
    }
    conditions::merge(previous, &desired, generation, now)
}

/// What every status write carries: the health conditions computed from the rest
/// of the status (their times from `before`, the conditions as read), and the
/// generation it was computed for (a writer always reads the Job first).
pub fn settle(
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

/// How a Job stands for GitOps tools (kstatus, Argo CD), from its status alone:
/// Queued / Assigned / Running: `Reconciling` (reason: the phase, or `Cancelling`
/// once `spec.cancel` is set); Succeeded: `Ready`; Failed and Cancelled: `Stalled`
/// (the Job will never produce its result); a spec that cannot run (`InvalidSpec`,
/// immutable): `Stalled` while still Queued.
pub fn health(status: &JobStatus, cancel: bool) -> Health {
    let phase = status.phase.unwrap_or_default();
    let runner = status.runner.as_deref().unwrap_or("?");
    match phase {
        JobPhase::Succeeded => {
            Health::current(reason::SUCCEEDED, "every step succeeded or was skipped")
        }
        JobPhase::Failed => ended_because(status, reason::FAILED, "the Job failed"),
        JobPhase::Cancelled => ended_because(status, reason::CANCELLED, "the Job was cancelled"),
        _ if cancel => Health::reconciling(
            reason::CANCELLING,
            match phase {
                JobPhase::Queued => "spec.cancel is set: the Job will not start".to_owned(),
                _ => format!("spec.cancel is set: runner {runner} is stopping its steps"),
            },
        ),
        JobPhase::Queued => queued_health(status),
        JobPhase::Assigned => Health::reconciling(
            reason::ASSIGNED,
            format!("assigned to runner {runner}, which has not started it yet"),
        ),
        JobPhase::Running => {
            let done = status
                .steps
                .iter()
                .filter(|s| s.phase.is_finished())
                .count();
            Health::reconciling(
                reason::RUNNING,
                format!(
                    "running on runner {runner}: {done} of {} steps finished",
                    status.steps.len()
                ),
            )
        }
    }
}

/// Stalled, with the `Failed` condition's reason and message when it has them.
fn ended_because(status: &JobStatus, fallback_reason: &str, fallback_message: &str) -> Health {
    let c = conditions::find(&status.conditions, condition::FAILED);
    let pick = |v: Option<&str>, fallback: &str| {
        v.filter(|v| !v.is_empty()).unwrap_or(fallback).to_owned()
    };
    Health::stalled(
        pick(c.map(|c| c.reason.as_str()), fallback_reason),
        pick(c.map(|c| c.message.as_str()), fallback_message),
    )
}

fn queued_health(status: &JobStatus) -> Health {
    let waiting =
        conditions::find(&status.conditions, condition::SCHEDULED).filter(|c| c.status == "False");
    match waiting {
        Some(c) if c.reason == reason::INVALID_SPEC => Health::stalled(
            reason::INVALID_SPEC,
            format!("the spec cannot run: {}", c.message),
        ),
        Some(c) => Health::reconciling(
            reason::QUEUED,
            format!("waiting for a runner ({}: {})", c.reason, c.message),
        ),
        None => Health::reconciling(reason::QUEUED, "waiting for a runner"),
    }
}

/// Why a runner may not act for a Job.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    #[error(
        "runner {runner} at epoch {epoch} does not hold this Job (held by {holder} at epoch {current})"
    )]
    Stale {
        runner: String,
        epoch: i64,
        holder: String,
        current: i64,
    },
    #[error("the Job is {0:?}: it takes no more reports")]
    NotActive(JobPhase),
}

/// Whether `runner` holding `epoch` may act for a Job with this status: it must
/// be the Job's runner at exactly that epoch, and the Job Assigned or Running.
pub fn fence(status: Option<&JobStatus>, runner: &str, epoch: i64) -> Result<(), Fenced> {
    let holder = status.and_then(|s| s.runner.as_deref());
    let current = status.and_then(|s| s.epoch).unwrap_or(0);
    if holder != Some(runner) || current != epoch {
        return Err(Fenced::Stale {
            runner: runner.to_owned(),
            epoch,
            holder: holder.unwrap_or("nobody").to_owned(),
            current,
        });
    }
    let phase = status.and_then(|s| s.phase).unwrap_or_default();
    if !matches!(phase, JobPhase::Assigned | JobPhase::Running) {
        return Err(Fenced::NotActive(phase));
    }
    Ok(())
}

/// When a finished Job is due for deletion, if it has a TTL.
pub fn ttl_due(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.ttl_seconds_after_finished?;
    let s = job.status.as_ref()?;
    if !s.phase.unwrap_or_default().is_finished() {
        return None;
    }
    let done = s.completion_time.as_ref()?.0;
    done.checked_add(SignedDuration::from_secs(i64::from(ttl)))
        .ok()
}

#[cfg(test)]
#[path = "job_status_tests.rs"]
mod tests;
