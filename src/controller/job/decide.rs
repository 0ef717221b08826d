//! The Job reconciler's pure middle: from the Job as read and what was observed
//! around it, the [`JobPlan`] — the status to write and what follows once it
//! lands (an Event, a control message to the runner, clean-up, deletion, which
//! other Jobs to look at again) and when to look again.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::queue::Decision;
use crate::crd::job::{JobPhase, JobStatus};
use crate::crd::job_status::{self, Transition};
use crate::crd::reasons::{condition, reason};
use crate::crd::{Job, conditions};

/// A waiting on-demand Job looks again this long after its last reconcile, as a
/// safety net only. A Job waiting for a shared runner has no such timer: the
/// queue's upkeep ([`super::board`]) reconciles it when a plan of its namespace
/// (after a Runner or a Job changed) assigns it or changes its reason.
pub const QUEUE_RESYNC: Duration = Duration::from_secs(30);
/// How often an Assigned Job not yet Running is re-sent to its runner, and a
/// cancel to a runner that has not stopped yet.
pub const ASSIGN_RESEND: Duration = Duration::from_secs(10);
/// After a status write that changes who holds the Job, or one that met a newer
/// version: look again soon, with fresh data.
pub const SOON: Duration = Duration::from_millis(200);

/// After a status write met a conflict: the newer Job, arriving through the
/// watch, reconciles it again at once; this only bounds the wait if it never
/// does. (Retrying on a timer instead re-reads the same stale cache: under a
/// burst of Jobs that was most of the controller's requests.)
pub const AFTER_CONFLICT: Duration = Duration::from_secs(5);

/// The holder of an active Job, as observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerSeen {
    Connected,
    /// Disconnected for this long (a reconnect resets it).
    Away(Duration),
    /// An on-demand runner whose pod is gone or going: lost at once.
    PodGone,
}

/// What the reconciler read around the Job (caches, the hub, the queue).
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// A Queued Job's verdict from the queue plan (None: the plan left it out).
    pub queue: Option<Decision>,
    /// Other Jobs the same plan assigns: they need not wait for a resync.
    pub also_assigned: Vec<String>,
    /// An Assigned or Running Job's runner.
    pub runner: Option<RunnerSeen>,
    /// `--runner-lost-after`.
    pub runner_lost_after: Duration,
    /// `--keep-step-pods`: leave finished Jobs' step pods and workspace for debugging.
    pub keep_step_pods: bool,
}

/// A message for the Job's runner on its control channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tell {
    Assign { runner: String, epoch: i64 },
    Cancel { runner: String },
}

/// An Event on the Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// What a finished Job leaves behind, to remove.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanUp {
    /// On-demand runner pods that never took it.
    pub unused_runner_pods: bool,
    /// Its step pods and workspace claim.
    pub step_pods: bool,
}

/// When to reconcile again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Only on a change of the Job (or a kick).
    OnChange,
    After(Duration),
}

/// Everything one reconcile does, decided before any of it is done.
#[derive(Clone, Debug, PartialEq)]
pub struct JobPlan {
    /// Written first, at the resourceVersion read; unless it lands, nothing
    /// below but the requeue happens (a conflict looks again when the newer Job arrives, [`AFTER_CONFLICT`]).
    pub status: Option<JobStatus>,
    /// An Event, when the write changed how the Job stands.
    pub note: Option<Note>,
    pub tell: Option<Tell>,
    /// An assignment the watch cache may not show yet (runner, epoch).
    pub assigned: Option<(String, i64)>,
    /// Reconcile the namespace's Queued Jobs again (capacity freed up).
    pub kick_namespace: bool,
    /// Reconcile these Jobs again.
    pub kick_jobs: Vec<String>,
    /// Reset the runner-away clock of this Job.
    pub forget_away: bool,
    pub clean_up: Option<CleanUp>,
    /// `ttlSecondsAfterFinished` passed: delete the Job (and its stored logs).
    pub delete: bool,
    pub requeue: Requeue,
}

impl JobPlan {
    fn new(requeue: Requeue) -> Self {
        Self {
            status: None,
            note: None,
            tell: None,
            assigned: None,
            kick_namespace: false,
            kick_jobs: Vec::new(),
            forget_away: false,
            clean_up: None,
            delete: false,
            requeue,
        }
    }

    /// Write `status` unless it is what the Job already has.
    fn write(mut self, job: &Job, status: JobStatus) -> Self {
        if job.status.as_ref() != Some(&status) {
            self.status = Some(status);
        }
        self
    }
}

/// The pure middle of the Job reconciler.
pub fn decide(job: &Job, seen: &Observed, now: Timestamp) -> JobPlan {
    if job.metadata.deletion_timestamp.is_some() {
        return JobPlan::new(Requeue::OnChange);
    }
    let phase = job
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default();
    let cancel = job.spec.cancel == Some(true);
    match phase {
        _ if phase.is_finished() => finished(job, seen, now),
        JobPhase::Queued if cancel => cancelled_in_queue(job, now),
        JobPhase::Queued => queued(job, seen, now),
        JobPhase::Assigned | JobPhase::Running => active(job, seen, now),
        _ => JobPlan::new(Requeue::OnChange),
    }
}

fn finished(job: &Job, seen: &Observed, now: Timestamp) -> JobPlan {
    let mut plan = JobPlan::new(Requeue::OnChange);
    // The cache cuts a finished Job's conditions only once it is settled: a
    // status without them is never written back.
    if !super::retained::conditions_cut(job) {
        plan = plan.write(job, job_status::next(job, Transition::Settle, now));
    }
    // Its runner has room again: the queue may move.
    plan.kick_namespace = true;
    plan.forget_away = true;
    plan.clean_up = Some(CleanUp {
        unused_runner_pods: job.spec.spawns_runner(),
        step_pods: !seen.keep_step_pods,
    });
    match job_status::ttl_due(job) {
        Some(due) if due > now => {
            let wait = (due.as_second() - now.as_second()).max(1);
            plan.requeue = Requeue::After(Duration::from_secs(wait.unsigned_abs()));
        }
        Some(_) => plan.delete = true,
        None => {}
    }
    plan
}

fn cancelled_in_queue(job: &Job, now: Timestamp) -> JobPlan {
    let next = job_status::next(job, Transition::Cancel { lost_runner: None }, now);
    let mut plan = JobPlan::new(Requeue::OnChange).write(job, next);
    plan.note = Some(Note {
        warning: false,
        reason: reason::CANCELLED,
        message: "cancelled while Queued: it never started".into(),
    });
    plan.kick_namespace = true;
    plan
}

fn queued(job: &Job, seen: &Observed, now: Timestamp) -> JobPlan {
    match &seen.queue {
        None => JobPlan::new(Requeue::After(QUEUE_RESYNC)),
        Some(Decision::Assign { runner }) => {
            let next = job_status::next(job, Transition::Assign { runner }, now);
            let epoch = next.epoch.unwrap_or(1);
            let mut plan = JobPlan::new(Requeue::After(ASSIGN_RESEND)).write(job, next);
            plan.assigned = Some((runner.clone(), epoch));
            plan.kick_jobs.clone_from(&seen.also_assigned);
            plan.tell = Some(Tell::Assign {
                runner: runner.clone(),
                epoch,
            });
            // A first assignment's Event would come a claim's round trip
            // before the runner's `Started`, which names the runner and epoch
            // too: one Event request per Job saved. A hand-over keeps its own.
            plan.note = (epoch > 1).then(|| Note {
                warning: false,
                reason: reason::ASSIGNED,
                message: format!("assigned to runner {runner} at epoch {epoch}"),
            });
            plan
        }
        Some(Decision::Wait {
            reason: why,
            message,
        }) => {
            // A Job waiting for a shared runner is reconciled again by the queue's
            // upkeep when its decision changes: no timer per Job, so an idle queue
            // costs nothing. An invalid spec waits for an edit (and the spec is
            // immutable). An on-demand Job watches its own pod, and looks again.
            let requeue = if !job.spec.spawns_runner() || *why == reason::INVALID_SPEC {
                Requeue::OnChange
            } else {
                Requeue::After(QUEUE_RESYNC)
            };
            let next = job_status::next(
                job,
                Transition::Wait {
                    reason: why,
                    message,
                },
                now,
            );
            let mut plan = JobPlan::new(requeue).write(job, next);
            // An Event only when the reason changes, not on each resync.
            let before = job
                .status
                .as_ref()
                .and_then(|s| conditions::find(&s.conditions, condition::SCHEDULED))
                .map(|c| c.reason.as_str());
            if plan.status.is_some() && before != Some(*why) {
                plan.note = Some(Note {
                    warning: true,
                    reason: why,
                    message: message.clone(),
                });
            }
            plan
        }
    }
}

/// Assigned or Running: watch the runner; hand the Job over (or, when it is
/// cancelled, end it) once the runner is lost.
fn active(job: &Job, seen: &Observed, now: Timestamp) -> JobPlan {
    let status = job.status.clone().unwrap_or_default();
    let Some(runner) = status.runner.clone() else {
        // Not something Baton writes: leave it to whoever did.
        return JobPlan::new(Requeue::OnChange);
    };
    let cancel = job.spec.cancel == Some(true);
    let lost_after = seen.runner_lost_after;
    let away = match seen.runner.unwrap_or(RunnerSeen::Away(Duration::ZERO)) {
        RunnerSeen::Connected => None,
        RunnerSeen::Away(d) => Some(d),
        RunnerSeen::PodGone => Some(lost_after),
    };
    match away {
        Some(gone) if gone >= lost_after => lost(job, &runner, gone, cancel, now),
        Some(gone) => {
            // Not lost yet: look again when it would be. A cancel is still sent:
            // a runner that comes back in time gets it (or finds it on reconnect).
            let mut plan = JobPlan::new(Requeue::After((lost_after - gone).max(SOON)));
            if cancel {
                plan.tell = Some(Tell::Cancel { runner });
            }
            plan
        }
        None => {
            let recheck = ASSIGN_RESEND.min(lost_after);
            let mut plan = JobPlan::new(Requeue::After(recheck));
            plan.tell = if cancel {
                Some(Tell::Cancel { runner })
            } else if status.phase == Some(JobPhase::Assigned) {
                // The runner may have missed it (reconnecting): say it again; a
                // runner already on it ignores the repeat.
                let epoch = status.epoch.unwrap_or(0);
                Some(Tell::Assign { runner, epoch })
            } else {
                None
            };
            plan
        }
    }
}

/// The runner is lost: a cancelled Job ends Cancelled (nobody is left to stop
/// its steps but the clean-up that follows); any other goes back to the queue,
/// and the next hand-over moves the epoch on, fencing the old runner off.
fn lost(job: &Job, runner: &str, gone: Duration, cancel: bool, now: Timestamp) -> JobPlan {
    let (t, note) = if cancel {
        let message = format!("cancelled; runner {runner} gone for {}s", gone.as_secs());
        let t = Transition::Cancel {
            lost_runner: Some(runner),
        };
        (
            t,
            Note {
                warning: false,
                reason: reason::CANCELLED,
                message,
            },
        )
    } else {
        let message = format!(
            "runner {runner} gone for {}s: handing the Job over",
            gone.as_secs()
        );
        let t = Transition::RunnerLost { runner };
        (
            t,
            Note {
                warning: true,
                reason: reason::RUNNER_LOST,
                message,
            },
        )
    };
    let mut plan = JobPlan::new(Requeue::After(SOON)).write(job, job_status::next(job, t, now));
    plan.note = Some(note);
    plan.forget_away = true;
    plan
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
