#![allow(clippy::unwrap_used)]
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::*;
use crate::crd::job::{JobPhase, JobSpec, StepPhase, StepStatus};
use crate::crd::{Job, Step};

const LOST_AFTER: Duration = Duration::from_secs(60);

/// A Job in `phase`, held by r1 at epoch 1 unless Queued; `static_runner`:
/// with a runnerSelector (else on-demand).
fn job(phase: JobPhase, cancel: bool, static_runner: bool) -> Job {
    let mut j = Job::new(
        "j",
        JobSpec {
            steps: vec![Step {
                name: "a".into(),
                image: "busybox".into(),
                script: Some("true".into()),
                ..Default::default()
            }],
            cancel: cancel.then_some(true),
            runner_selector: static_runner.then(LabelSelector::default),
            ..Default::default()
        },
    );
    j.metadata.namespace = Some("ns".into());
    j.metadata.generation = Some(1);
    let held = phase != JobPhase::Queued;
    j.status = Some(JobStatus {
        phase: Some(phase),
        runner: held.then(|| "r1".into()),
        epoch: held.then_some(1),
        steps: vec![StepStatus {
            name: "a".into(),
            phase: match phase {
                JobPhase::Running => StepPhase::Running,
                JobPhase::Succeeded => StepPhase::Succeeded,
                _ => StepPhase::Pending,
            },
            ..Default::default()
        }],
        completion_time: phase.is_finished().then(|| Time(now())),
        ..Default::default()
    });
    j
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn seen(queue: Option<Decision>, runner: Option<RunnerSeen>) -> Observed {
    Observed {
        queue,
        also_assigned: vec!["other".into()],
        runner,
        runner_lost_after: LOST_AFTER,
        keep_step_pods: false,
    }
}

/// The plan in one line: what is written, told, noted, cleaned, and when next.
fn describe(plan: &JobPlan) -> String {
    let status = plan.status.as_ref().map_or("-".to_owned(), |s| {
        format!("{:?}@{}", s.phase.unwrap_or_default(), s.epoch.unwrap_or(0))
    });
    let tell = match &plan.tell {
        None => "-".to_owned(),
        Some(Tell::Assign { runner, epoch }) => format!("assign({runner}@{epoch})"),
        Some(Tell::Cancel { runner }) => format!("cancel({runner})"),
    };
    let note = plan.note.as_ref().map_or("-", |n| n.reason);
    let clean = match plan.clean_up {
        None => "-",
        Some(CleanUp {
            unused_runner_pods: true,
            step_pods: true,
        }) => "runner+steps",
        Some(CleanUp {
            unused_runner_pods: false,
            step_pods: true,
        }) => "steps",
        Some(CleanUp {
            step_pods: false, ..
        }) => "kept",
    };
    let requeue = match plan.requeue {
        Requeue::OnChange => "change".to_owned(),
        Requeue::After(d) => format!("{}ms", d.as_millis()),
    };
    let mut flags = String::new();
    for (on, name) in [
        (plan.delete, " delete"),
        (plan.kick_namespace, " kick-ns"),
        (!plan.kick_jobs.is_empty(), " kick-others"),
        (plan.forget_away, " forget-away"),
        (plan.assigned.is_some(), " recent"),
    ] {
        if on {
            flags.push_str(name);
        }
    }
    format!("status={status} tell={tell} note={note} clean={clean} next={requeue}{flags}")
}

fn assign() -> Option<Decision> {
    Some(Decision::Assign {
        runner: "r2".into(),
    })
}

/// Queued again after its runner r1 at epoch 1 was lost.
fn handed_over() -> Job {
    let mut j = job(JobPhase::Queued, false, true);
    let status = j.status.as_mut().unwrap();
    (status.runner, status.epoch) = (Some("r1".into()), Some(1));
    j
}

fn busy() -> Option<Decision> {
    Some(Decision::Wait {
        reason: crate::crd::reasons::reason::RUNNERS_BUSY,
        message: "all busy".into(),
    })
}

fn invalid() -> Option<Decision> {
    Some(Decision::Wait {
        reason: crate::crd::reasons::reason::INVALID_SPEC,
        message: "cycle".into(),
    })
}

#[test]
fn queued_jobs() {
    use JobPhase::Queued;
    let away = Some(RunnerSeen::Away(Duration::from_secs(5)));
    type Case = (
        &'static str,
        Job,
        Option<Decision>,
        Option<RunnerSeen>,
        &'static str,
    );
    let cases: &[Case] = &[
        (
            "assigned by the plan",
            job(Queued, false, true),
            assign(),
            None,
            "status=Assigned@1 tell=assign(r2@1) note=- clean=- next=10000ms kick-others recent",
        ),
        (
            "handed over: assigned again, at the next epoch, with an Event",
            handed_over(),
            assign(),
            None,
            "status=Assigned@2 tell=assign(r2@2) note=Assigned clean=- next=10000ms kick-others recent",
        ),
        (
            "waits: runners busy",
            job(Queued, false, true),
            busy(),
            None,
            "status=Queued@0 tell=- note=RunnersBusy clean=- next=change",
        ),
        (
            "on-demand waits: looks again (its pod may move)",
            job(Queued, false, false),
            busy(),
            None,
            "status=Queued@0 tell=- note=RunnersBusy clean=- next=30000ms",
        ),
        (
            "invalid spec waits for an edit",
            job(Queued, false, true),
            invalid(),
            None,
            "status=Queued@0 tell=- note=InvalidSpec clean=- next=change",
        ),
        (
            "left out of the plan",
            job(Queued, false, true),
            None,
            None,
            "status=- tell=- note=- clean=- next=30000ms",
        ),
        (
            "cancelled: ends at once",
            job(Queued, true, true),
            assign(),
            None,
            "status=Cancelled@0 tell=- note=Cancelled clean=- next=change kick-ns",
        ),
        (
            "cancelled on-demand: ends at once",
            job(Queued, true, false),
            None,
            away,
            "status=Cancelled@0 tell=- note=Cancelled clean=- next=change kick-ns",
        ),
    ];
    for (what, j, queue, runner, want) in cases {
        let plan = decide(j, &seen(queue.clone(), *runner), now());
        assert_eq!(describe(&plan), *want, "{what}");
    }
}

#[test]
fn waiting_again_for_the_same_reason_writes_nothing() {
    let mut j = job(JobPhase::Queued, false, true);
    let first = decide(&j, &seen(busy(), None), now());
    j.status = first.status;
    let later = now() + SignedDuration::from_secs(30);
    let again = decide(&j, &seen(busy(), None), later);
    assert_eq!(
        describe(&again),
        "status=- tell=- note=- clean=- next=change"
    );
}

/// Assigned and Running × cancel × the runner connected, away, lost, pod gone.
#[test]
fn active_jobs() {
    use JobPhase::{Assigned, Running};
    use RunnerSeen::{Away, Connected, PodGone};
    let short = Away(Duration::from_secs(20));
    let long = Away(Duration::from_secs(61));
    let cases: &[(JobPhase, bool, bool, RunnerSeen, &str)] = &[
        (
            Assigned,
            false,
            true,
            Connected,
            "status=- tell=assign(r1@1) note=- clean=- next=10000ms",
        ),
        (
            Running,
            false,
            true,
            Connected,
            "status=- tell=- note=- clean=- next=10000ms",
        ),
        (
            Assigned,
            false,
            true,
            short,
            "status=- tell=- note=- clean=- next=40000ms",
        ),
        (
            Running,
            false,
            true,
            short,
            "status=- tell=- note=- clean=- next=40000ms",
        ),
        (
            Assigned,
            false,
            true,
            long,
            "status=Queued@1 tell=- note=RunnerLost clean=- next=200ms forget-away",
        ),
        (
            Running,
            false,
            true,
            long,
            "status=Queued@1 tell=- note=RunnerLost clean=- next=200ms forget-away",
        ),
        (
            Running,
            false,
            false,
            PodGone,
            "status=Queued@1 tell=- note=RunnerLost clean=- next=200ms forget-away",
        ),
        // Cancelled: told while it can hear; ended by the controller once it can't.
        (
            Assigned,
            true,
            true,
            Connected,
            "status=- tell=cancel(r1) note=- clean=- next=10000ms",
        ),
        (
            Running,
            true,
            true,
            Connected,
            "status=- tell=cancel(r1) note=- clean=- next=10000ms",
        ),
        (
            Running,
            true,
            true,
            short,
            "status=- tell=cancel(r1) note=- clean=- next=40000ms",
        ),
        (
            Assigned,
            true,
            true,
            long,
            "status=Cancelled@1 tell=- note=Cancelled clean=- next=200ms forget-away",
        ),
        (
            Running,
            true,
            true,
            long,
            "status=Cancelled@1 tell=- note=Cancelled clean=- next=200ms forget-away",
        ),
        (
            Running,
            true,
            false,
            PodGone,
            "status=Cancelled@1 tell=- note=Cancelled clean=- next=200ms forget-away",
        ),
    ];
    for (phase, cancel, static_runner, runner, want) in cases {
        let j = job(*phase, *cancel, *static_runner);
        let plan = decide(&j, &seen(None, Some(*runner)), now());
        let what = format!("{phase:?} cancel={cancel} static={static_runner} {runner:?}");
        assert_eq!(describe(&plan), *want, "{what}");
    }
}

/// The bug this table was written for: a cancelled Job whose runner is gone
/// used to wait for the runner forever. Now it ends, its running step marked
/// Cancelled, and the finished Job's clean-up removes the step pods.
#[test]
fn a_cancel_whose_runner_is_lost_ends_the_job() {
    let mut j = job(JobPhase::Running, true, true);
    let lost = seen(None, Some(RunnerSeen::Away(LOST_AFTER)));
    let plan = decide(&j, &lost, now());
    let status = plan.status.unwrap();
    assert_eq!(status.phase, Some(JobPhase::Cancelled));
    assert_eq!(status.steps[0].phase, StepPhase::Cancelled);
    assert!(status.completion_time.is_some());
    j.status = Some(status);
    let after = decide(&j, &lost, now());
    assert_eq!(after.clean_up.map(|c| c.step_pods), Some(true));
}

#[test]
fn finished_jobs() {
    use JobPhase::{Cancelled, Failed, Succeeded};
    let ttl = |phase, secs: Option<i32>, static_runner| {
        let mut j = job(phase, false, static_runner);
        j.spec.ttl_seconds_after_finished = secs;
        // Settled once already, so only what follows is planned.
        let settled = crate::crd::job_status::next(&j, Transition::Settle, now());
        j.status = Some(settled);
        j
    };
    let cases: &[(&str, Job, &str)] = &[
        (
            "no TTL",
            ttl(Succeeded, None, true),
            "status=- tell=- note=- clean=steps next=change kick-ns forget-away",
        ),
        (
            "on-demand: unused runner pods too",
            ttl(Failed, None, false),
            "status=- tell=- note=- clean=runner+steps next=change kick-ns forget-away",
        ),
        (
            "TTL not due",
            ttl(Cancelled, Some(30), true),
            "status=- tell=- note=- clean=steps next=30000ms kick-ns forget-away",
        ),
        (
            "TTL due",
            ttl(Succeeded, Some(0), true),
            "status=- tell=- note=- clean=steps next=change delete kick-ns forget-away",
        ),
    ];
    for (what, j, want) in cases {
        let plan = decide(j, &seen(None, Some(RunnerSeen::Connected)), now());
        assert_eq!(describe(&plan), *want, "{what}");
    }
    // Never settled (or its spec moved on): the status is settled first.
    let raw = job(Succeeded, true, true);
    let plan = decide(&raw, &seen(None, None), now());
    assert_eq!(plan.status.and_then(|s| s.observed_generation), Some(1));
    // --keep-step-pods.
    let mut keep = seen(None, None);
    keep.keep_step_pods = true;
    let plan = decide(&ttl(Succeeded, None, true), &keep, now());
    assert_eq!(plan.clean_up.map(|c| c.step_pods), Some(false));
}

#[test]
fn a_finished_job_the_cache_cut_plans_what_the_whole_one_does_but_no_write() {
    use crate::controller::job::retained;
    for phase in [JobPhase::Succeeded, JobPhase::Failed, JobPhase::Cancelled] {
        let mut j = job(phase, false, true);
        j.spec.ttl_seconds_after_finished = Some(30);
        j.status = Some(crate::crd::job_status::next(&j, Transition::Settle, now()));
        let whole = describe(&decide(&j, &seen(None, None), now()));
        retained::retain(&mut j);
        assert!(retained::conditions_cut(&j), "{phase:?}: settled, so cut");
        let plan = decide(&j, &seen(None, None), now());
        assert!(
            plan.status.is_none(),
            "{phase:?}: nothing written from a cut status"
        );
        assert_eq!(describe(&plan), whole, "{phase:?}");
    }
}

#[test]
fn a_job_being_deleted_is_left_alone() {
    let mut j = job(JobPhase::Running, true, true);
    j.metadata.deletion_timestamp = Some(Time(now()));
    let plan = decide(&j, &seen(None, Some(RunnerSeen::PodGone)), now());
    assert_eq!(
        describe(&plan),
        "status=- tell=- note=- clean=- next=change"
    );
}
