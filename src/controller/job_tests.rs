#![allow(clippy::unwrap_used)]
use super::*;
use std::collections::BTreeMap;

use crate::server::jobs::phase_conditions;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

fn sel(k: &str, v: &str) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some([(k.to_owned(), v.to_owned())].into()),
        ..Default::default()
    })
}

fn runner(name: &str, pool: &str, usable: bool, free: usize) -> RunnerView {
    RunnerView {
        name: name.into(),
        labels: [("pool".to_owned(), pool.to_owned())].into(),
        usable,
        free,
        on_demand_for: None,
    }
}

fn q(name: &str, selector: Option<LabelSelector>) -> Queued {
    Queued {
        name: name.into(),
        selector,
        invalid: None,
        on_demand: None,
    }
}

fn reason(d: Option<&Decision>) -> &str {
    match d {
        Some(Decision::Wait { reason, .. }) => reason,
        Some(Decision::Assign { runner }) => runner,
        None => "none",
    }
}

#[test]
fn selectors() {
    let labels: BTreeMap<String, String> = [
        ("pool".to_owned(), "a".to_owned()),
        ("os".to_owned(), "linux".to_owned()),
    ]
    .into();
    assert!(selector_matches(&LabelSelector::default(), &labels));
    assert!(selector_matches(&sel("pool", "a").unwrap(), &labels));
    assert!(!selector_matches(&sel("pool", "b").unwrap(), &labels));
    let expr = |op: &str, vals: &[&str]| LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "os".into(),
            operator: op.into(),
            values: Some(vals.iter().map(|v| (*v).to_owned()).collect()),
        }]),
        ..Default::default()
    };
    assert!(selector_matches(&expr("In", &["linux", "mac"]), &labels));
    assert!(!selector_matches(&expr("NotIn", &["linux"]), &labels));
    assert!(selector_matches(&expr("Exists", &[]), &labels));
    assert!(!selector_matches(&expr("DoesNotExist", &[]), &labels));
    assert!(!selector_matches(&expr("Bogus", &[]), &labels));
}

#[test]
fn fifo_capacity_and_reasons() {
    let runners = vec![
        runner("r1", "a", true, 1),
        runner("r2", "a", true, 2),
        runner("off", "b", false, 5),
    ];
    let queue = vec![
        q("j1", sel("pool", "a")),
        q("j2", sel("pool", "a")),
        q("j3", sel("pool", "a")),
        q("j4", sel("pool", "a")),
        q("j5", sel("pool", "b")),
        q("j6", sel("pool", "zzz")),
        q("j7", None),
        Queued {
            name: "j8".into(),
            selector: sel("pool", "a"),
            invalid: Some("cycle".into()),
            on_demand: None,
        },
    ];
    let plan = plan_queue(&queue, &runners);
    // Most free capacity first: r2 (2), then r1 and r2 tie at 1 -> r1 by name.
    assert_eq!(reason(plan.get("j1")), "r2");
    assert_eq!(reason(plan.get("j2")), "r1");
    assert_eq!(reason(plan.get("j3")), "r2");
    assert_eq!(reason(plan.get("j4")), "RunnersBusy");
    assert_eq!(
        reason(plan.get("j5")),
        "NoMatchingRunner",
        "unusable runner"
    );
    assert_eq!(reason(plan.get("j6")), "NoMatchingRunner");
    assert_eq!(reason(plan.get("j7")), "RunnerStarting");
    assert_eq!(reason(plan.get("j8")), "InvalidSpec");
}

#[test]
fn on_demand_runners_serve_only_their_own_job() {
    let mine = |name: &str, uid: &str| RunnerView {
        on_demand_for: Some(uid.into()),
        ..runner(name, "a", true, 1)
    };
    let slot = |runner: &str, uid: &str| on_demand::Slot {
        runner: Some(runner.into()),
        job_uid: uid.into(),
        reason: on_demand::POD_PENDING,
        message: "0/1 nodes are available".into(),
    };
    let runners = vec![mine("od-runner", "u1"), mine("other-runner", "u2")];
    let queue = vec![
        // A selector matching every runner still gets no on-demand one.
        q("static", Some(LabelSelector::default())),
        Queued {
            on_demand: Some(slot("od-runner", "u1")),
            ..q("od", None)
        },
        // A runner of the right name but made for another Job is not taken.
        Queued {
            on_demand: Some(slot("other-runner", "u9")),
            ..q("thief", None)
        },
    ];
    let plan = plan_queue(&queue, &runners);
    assert_eq!(reason(plan.get("static")), "NoMatchingRunner");
    assert_eq!(reason(plan.get("od")), "od-runner");
    assert_eq!(reason(plan.get("thief")), "RunnerPodPending");
    let mut busy = runners.clone();
    busy[0].free = 0;
    assert_eq!(
        reason(plan_queue(&queue[1..2], &busy).get("od")),
        "RunnerPodPending",
        "its runner already runs it: waits with the pod's reason"
    );
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
    let s = queued_status(&j, "NoMatchingRunner", "m", now);
    j.status = Some(s.clone());
    assert_eq!(
        queued_status(&j, "NoMatchingRunner", "m", now),
        s,
        "no rewrite"
    );
    let later = now + k8s_openapi::jiff::SignedDuration::from_secs(5);
    assert_eq!(
        queued_status(&j, "RunnersBusy", "m2", later).conditions[0].last_transition_time,
        s.conditions[0].last_transition_time,
        "reason change keeps the transition time"
    );
    let a = assigned_status(&j, "r1", later);
    assert_eq!(a.epoch, Some(1));
    assert_eq!(a.phase, Some(JobPhase::Assigned));
    assert_eq!(a.conditions[0].status, "True");
    j.status = Some(a);
    assert_eq!(
        assigned_status(&j, "r2", later).epoch,
        Some(2),
        "each hand-over moves the epoch"
    );

    let lost = requeued_status(&j, "r2", later);
    assert_eq!(lost.phase, Some(JobPhase::Queued));
    assert_eq!(lost.epoch, Some(1), "kept: the next hand-over moves it on");
    let mut k = job("h");
    k.status = Some(lost);
    k.status.as_mut().unwrap().steps[0].phase = crate::crd::job::StepPhase::Running;
    let again = assigned_status(&k, "r3", later);
    assert_eq!(again.epoch, Some(2));
    assert_eq!(
        again.steps[0].phase,
        crate::crd::job::StepPhase::Running,
        "steps kept"
    );

    let c = cancelled_status(&job("k"), now);
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
    j.status = Some(cancelled_status(&j, now));
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
    let queued = queued_status(&j, "NoMatchingRunner", "no runner matches", now);
    assert_eq!(
        pair(read(&queued, 1)),
        r("InProgress", "Reconciling=Queued")
    );
    let msg = &conditions::find(&queued.conditions, "Reconciling")
        .unwrap()
        .message;
    assert!(msg.contains("NoMatchingRunner: no runner matches"), "{msg}");

    let invalid = queued_status(&j, "InvalidSpec", "cycle a -> a", now);
    assert_eq!(pair(read(&invalid, 1)), r("Failed", "Stalled=InvalidSpec"));

    j.status = Some(queued);
    let assigned = assigned_status(&j, "r1", now);
    assert_eq!(
        pair(read(&assigned, 1)),
        r("InProgress", "Reconciling=Assigned")
    );
    let lost = requeued_status(&j, "r1", now);
    assert_eq!(pair(read(&lost, 1)), r("InProgress", "Reconciling=Queued"));

    // Cancelled before it started: Stalled, and the cancel's generation observed.
    let mut k = job("k");
    k.status = Some(queued_status(&k, "NoMatchingRunner", "m", now));
    k.spec.cancel = Some(true);
    k.metadata.generation = Some(2);
    assert_eq!(read(k.status.as_ref().unwrap(), 2).0, "InProgress");
    let c = cancelled_status(&k, now);
    assert_eq!(pair(read(&c, 2)), r("Failed", "Stalled=Cancelled"));
    assert!(conditions::find(&c.conditions, "Reconciling").is_none());

    // A finished Job whose spec moved on (a late spec.cancel) is settled again,
    // keeping its verdict; settling twice changes nothing.
    let mut done = job("d");
    let mut s = assigned_status(&done, "r1", now);
    s.phase = Some(JobPhase::Succeeded);
    s.conditions = phase_conditions(&s.conditions, JobPhase::Succeeded, None, None, Some(1), now);
    done.status = Some(s);
    done.spec.cancel = Some(true);
    done.metadata.generation = Some(2);
    assert_eq!(read(done.status.as_ref().unwrap(), 2).0, "InProgress");
    let settled = settled_status(&done, now);
    assert_eq!(pair(read(&settled, 2)), r("Current", "Ready=Succeeded"));
    done.status = Some(settled.clone());
    assert_eq!(settled_status(&done, now), settled);
}
