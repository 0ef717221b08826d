#![allow(clippy::unwrap_used)]
use super::*;
use crate::crd::Step;
use crate::crd::conditions;

/// The status after a report, the way the runner API computes it.
fn apply_report(
    status: &JobStatus,
    spec: &JobSpec,
    r: &TestReport,
    generation: Option<i64>,
    now: Timestamp,
) -> JobStatus {
    let mut job = Job::new("j", spec.clone());
    job.metadata.generation = generation;
    job.status = Some(status.clone());
    let report = Report {
        step: r.step.as_ref(),
        phase: r.phase,
        reason: r.reason.as_deref(),
        message: r.message.as_deref(),
        outputs: r.outputs.as_ref(),
    };
    next(&job, Transition::Report(report), now)
}

#[derive(Default)]
struct TestReport {
    step: Option<StepStatus>,
    phase: Option<JobPhase>,
    reason: Option<String>,
    message: Option<String>,
    outputs: Option<BTreeMap<String, String>>,
}

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
            .map(|e| match e {
                Fenced::Stale { .. } => "StaleEpoch",
                Fenced::NotActive(_) => "NotActive",
            });
        assert_eq!(got, *want, "{status:?} {runner} {epoch}");
    }
}

#[test]
fn reports_build_the_status() {
    let now = Timestamp::now();
    let spec = spec();
    let s0 = held(JobPhase::Assigned);
    let running = TestReport {
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

    let step = TestReport {
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

    let done = TestReport {
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
    let end = |phase, reason: Option<&str>| TestReport {
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
    let step = TestReport {
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

fn wait(j: &Job, why: &str, message: &str, now: Timestamp) -> JobStatus {
    next(
        j,
        Transition::Wait {
            reason: why,
            message,
        },
        now,
    )
}
fn assign(j: &Job, runner: &str, now: Timestamp) -> JobStatus {
    next(j, Transition::Assign { runner }, now)
}
fn lost(j: &Job, runner: &str, now: Timestamp) -> JobStatus {
    next(j, Transition::RunnerLost { runner }, now)
}
fn cancel(j: &Job, now: Timestamp) -> JobStatus {
    next(j, Transition::Cancel { lost_runner: None }, now)
}
fn settle_(j: &Job, now: Timestamp) -> JobStatus {
    next(j, Transition::Settle, now)
}

fn job(name: &str) -> Job {
    let mut j = Job::new(
        name,
        crate::crd::JobSpec {
            steps: vec![crate::crd::Step {
                name: "a".into(),
                image: "busybox".into(),
                script: Some("true".into()),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    j.metadata.namespace = Some("ns".into());
    j.metadata.generation = Some(1);
    j
}

#[test]
fn statuses_are_computed_and_stable() {
    let now = Timestamp::now();
    let mut j = job("j");
    let s = wait(&j, "NoMatchingRunner", "m", now);
    j.status = Some(s.clone());
    assert_eq!(wait(&j, "NoMatchingRunner", "m", now), s, "no rewrite");
    let later = now + k8s_openapi::jiff::SignedDuration::from_secs(5);
    assert_eq!(
        wait(&j, "RunnersBusy", "m2", later).conditions[0].last_transition_time,
        s.conditions[0].last_transition_time,
        "reason change keeps the transition time"
    );
    let a = assign(&j, "r1", later);
    assert_eq!(a.epoch, Some(1));
    assert_eq!(a.phase, Some(JobPhase::Assigned));
    assert_eq!(a.conditions[0].status, "True");
    j.status = Some(a);
    assert_eq!(
        assign(&j, "r2", later).epoch,
        Some(2),
        "each hand-over moves the epoch"
    );

    let lost = lost(&j, "r2", later);
    assert_eq!(lost.phase, Some(JobPhase::Queued));
    assert_eq!(lost.epoch, Some(1), "kept: the next hand-over moves it on");
    let mut k = job("h");
    k.status = Some(lost);
    k.status.as_mut().unwrap().steps[0].phase = crate::crd::job::StepPhase::Running;
    let again = assign(&k, "r3", later);
    assert_eq!(again.epoch, Some(2));
    assert_eq!(
        again.steps[0].phase,
        crate::crd::job::StepPhase::Running,
        "steps kept"
    );

    let c = cancel(&job("k"), now);
    assert_eq!(c.phase, Some(JobPhase::Cancelled));
    assert!(
        c.steps
            .iter()
            .all(|s| s.phase == crate::crd::job::StepPhase::Cancelled)
    );
}

#[test]
fn ttl() {
    let now = Timestamp::now();
    let mut j = job("j");
    j.spec.ttl_seconds_after_finished = Some(30);
    assert_eq!(ttl_due(&j), None, "not finished");
    j.status = Some(cancel(&j, now));
    assert_eq!(
        ttl_due(&j),
        Some(now + k8s_openapi::jiff::SignedDuration::from_secs(30))
    );
}

/// kstatus' reading, the health condition's reason, and observedGeneration.
fn read(s: &JobStatus, generation: i64) -> (&'static str, String) {
    let reason = ["Reconciling", "Stalled", "Ready"]
        .iter()
        .find_map(|t| {
            conditions::find(&s.conditions, t)
                .filter(|c| c.type_ == "Ready" || c.status == "True")
                .map(|c| format!("{t}={}", c.reason))
        })
        .unwrap_or_default();
    (
        conditions::kstatus(&s.conditions, Some(generation), s.observed_generation),
        reason,
    )
}

#[test]
fn kstatus_reads_every_phase() {
    let now = Timestamp::now();
    let r = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    let pair = |(k, why): (&'static str, String)| (k.to_owned(), why);
    let mut j = job("j");
    let queued = wait(&j, "NoMatchingRunner", "no runner matches", now);
    assert_eq!(
        pair(read(&queued, 1)),
        r("InProgress", "Reconciling=Queued")
    );
    let msg = &conditions::find(&queued.conditions, "Reconciling")
        .unwrap()
        .message;
    assert!(msg.contains("NoMatchingRunner: no runner matches"), "{msg}");

    let invalid = wait(&j, "InvalidSpec", "cycle a -> a", now);
    assert_eq!(pair(read(&invalid, 1)), r("Failed", "Stalled=InvalidSpec"));

    j.status = Some(queued);
    let assigned = assign(&j, "r1", now);
    assert_eq!(
        pair(read(&assigned, 1)),
        r("InProgress", "Reconciling=Assigned")
    );
    let lost = lost(&j, "r1", now);
    assert_eq!(pair(read(&lost, 1)), r("InProgress", "Reconciling=Queued"));

    // Cancelled before it started: Stalled, and the cancel's generation observed.
    let mut k = job("k");
    k.status = Some(wait(&k, "NoMatchingRunner", "m", now));
    k.spec.cancel = Some(true);
    k.metadata.generation = Some(2);
    assert_eq!(read(k.status.as_ref().unwrap(), 2).0, "InProgress");
    let c = cancel(&k, now);
    assert_eq!(pair(read(&c, 2)), r("Failed", "Stalled=Cancelled"));
    assert!(conditions::find(&c.conditions, "Reconciling").is_none());

    // A finished Job whose spec moved on (a late spec.cancel) is settled again,
    // keeping its verdict; settling twice changes nothing.
    let mut done = job("d");
    let mut s = assign(&done, "r1", now);
    s.phase = Some(JobPhase::Succeeded);
    s.conditions = phase_conditions(&s.conditions, JobPhase::Succeeded, None, None, Some(1), now);
    done.status = Some(s);
    done.spec.cancel = Some(true);
    done.metadata.generation = Some(2);
    assert_eq!(read(done.status.as_ref().unwrap(), 2).0, "InProgress");
    let settled = settle_(&done, now);
    assert_eq!(pair(read(&settled, 2)), r("Current", "Ready=Succeeded"));
    done.status = Some(settled.clone());
    assert_eq!(settle_(&done, now), settled);
}

#[test]
fn an_allowed_failure_is_kept_and_the_job_succeeds_with_it_named() {
    let now = Timestamp::now();
    let spec = spec();
    let s0 = held(JobPhase::Running);
    let lint = StepStatus {
        name: "a".into(),
        phase: StepPhase::Failed,
        exit_code: Some(3),
        reason: Some("Error".into()),
        failure_allowed: Some(true),
        ..Default::default()
    };
    let step = TestReport {
        step: Some(lint.clone()),
        ..Default::default()
    };
    let s1 = apply_report(&s0, &spec, &step, Some(1), now);
    assert_eq!(s1.steps[0], lint);
    assert!(s1.steps[0].is_allowed_failure());
    let done = TestReport {
        phase: Some(JobPhase::Succeeded),
        reason: Some("Succeeded".into()),
        message: Some("a failed (allowed)".into()),
        ..Default::default()
    };
    let s2 = apply_report(&s1, &spec, &done, Some(1), now);
    assert_eq!(s2.phase, Some(JobPhase::Succeeded));
    let complete = conditions::find(&s2.conditions, "Complete").unwrap();
    assert_eq!(
        (complete.status.as_str(), complete.message.as_str()),
        ("True", "a failed (allowed)")
    );
    assert_eq!(
        conditions::kstatus(&s2.conditions, Some(1), s2.observed_generation),
        "Current"
    );
}

#[test]
fn a_queue_position_stays_while_queued_and_goes_with_the_queue() {
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let mut job = Job::new("j", spec());
    job.status = Some(JobStatus {
        phase: Some(JobPhase::Queued),
        queue_position: Some(3),
        ..Default::default()
    });
    let wait = Transition::Wait {
        reason: reason::RUNNERS_BUSY,
        message: "busy",
    };
    assert_eq!(next(&job, wait, now).queue_position, Some(3));
    let assigned = next(&job, Transition::Assign { runner: "r1" }, now);
    assert_eq!(assigned.phase, Some(JobPhase::Assigned));
    assert_eq!(assigned.queue_position, None);
    let cancelled = next(&job, Transition::Cancel { lost_runner: None }, now);
    assert_eq!(cancelled.queue_position, None);
}
