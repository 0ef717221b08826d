//! Table-driven tests of the DAG checks, the `when` rule and the scheduler.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::*;
use StepPhase::{Cancelled, Failed, Pending, Running, Skipped, Succeeded};

fn dag(nodes: &[(&str, &[&str])]) -> Result<Dag, Vec<DagError>> {
    Dag::build(nodes.iter().map(|(n, d)| (*n, d.iter().copied())))
}

#[test]
fn decide_table() {
    use Decision::{Run, Skip, Wait};
    use SkipReason::*;
    let cases: &[(When, &[StepPhase], bool, Decision)] = &[
        (When::OnSuccess, &[], false, Run),
        (When::OnFailure, &[], false, Skip(NotOnFailure)),
        (When::Always, &[], false, Run),
        (When::OnSuccess, &[Succeeded, Running], false, Wait),
        (When::Always, &[Pending], false, Wait),
        (When::OnFailure, &[Failed, Running], true, Wait),
        (When::OnSuccess, &[Succeeded, Succeeded], false, Run),
        (
            When::OnSuccess,
            &[Succeeded, Failed],
            true,
            Skip(DependencyFailed),
        ),
        // Direct dependencies fine, but something further up failed.
        (When::OnSuccess, &[Succeeded], true, Skip(DependencyFailed)),
        (When::OnSuccess, &[Skipped], false, Skip(DependencySkipped)),
        (
            When::OnSuccess,
            &[Succeeded, Cancelled],
            false,
            Skip(DependencyCancelled),
        ),
        (When::OnFailure, &[Failed], true, Run),
        (When::OnFailure, &[Skipped], true, Run),
        (When::OnFailure, &[Succeeded], false, Skip(NotOnFailure)),
        (When::OnFailure, &[Skipped], false, Skip(NotOnFailure)),
        (When::Always, &[Failed, Skipped, Cancelled], true, Run),
        (When::Always, &[Succeeded], false, Run),
    ];
    for (when, deps, upstream_failed, want) in cases {
        assert_eq!(
            decide(*when, deps, *upstream_failed),
            *want,
            "{when:?} {deps:?} upstream_failed={upstream_failed}"
        );
    }
}

#[test]
fn reports_cycles_with_their_path() {
    let err = dag(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]).unwrap_err();
    assert_eq!(
        err,
        vec![DagError::Cycle(vec![
            "a".into(),
            "b".into(),
            "c".into(),
            "a".into()
        ])]
    );
    assert_eq!(
        err[0].to_string(),
        "dependency cycle: a -> b -> c -> a (each step depends on the next)"
    );
}

#[test]
fn reports_every_problem_at_once() {
    let err = dag(&[
        ("a", &["a", "ghost"]),
        ("b", &["c"]),
        ("c", &["b"]),
        ("a", &[]),
    ])
    .unwrap_err();
    let text: Vec<String> = err.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        vec![
            "step name \"a\" is used more than once",
            "step \"a\" depends on itself",
            "step \"a\" depends on \"ghost\", which is not a step of this Job",
            "dependency cycle: b -> c -> b (each step depends on the next)",
        ]
    );
}

#[test]
fn two_separate_cycles_are_both_named() {
    let err = dag(&[
        ("a", &["b"]),
        ("b", &["a"]),
        ("x", &["y"]),
        ("y", &["x"]),
        ("ok", &[]),
    ])
    .unwrap_err();
    assert_eq!(err.len(), 2, "{err:?}");
}

#[test]
fn order_is_topological_with_spec_order_ties() {
    let d = dag(&[
        ("join", &["left", "right"]),
        ("right", &["root"]),
        ("left", &["root"]),
        ("root", &[]),
    ])
    .unwrap();
    let names: Vec<&str> = d.order().iter().map(|&i| d.name(i)).collect();
    assert_eq!(names, ["root", "right", "left", "join"]);
    let upstream: Vec<&str> = d.upstream(0).iter().map(|&i| d.name(i)).collect();
    assert_eq!(upstream, ["right", "left", "root"]);
}

/// Each step's final phase and skip reason.
type Finals = BTreeMap<String, (StepPhase, Option<&'static str>)>;

/// Run the scheduler to the end: every step it starts ends as `outcomes` says
/// (Succeeded if absent), a whole wave at a time. Returns the waves (steps started
/// together) and each step's final phase and skip reason.
fn simulate(
    nodes: &[(&str, &[&str], When)],
    outcomes: &[(&str, StepPhase)],
) -> (Vec<Vec<String>>, Finals) {
    let d = Dag::build(nodes.iter().map(|(n, deps, _)| (*n, deps.iter().copied()))).unwrap();
    let mut sched = Scheduler::new(d, nodes.iter().map(|(_, _, w)| *w).collect());
    let outcomes: BTreeMap<&str, StepPhase> = outcomes.iter().copied().collect();
    let mut waves = Vec::new();
    let mut reasons = BTreeMap::new();
    loop {
        let adv = sched.advance();
        for (i, reason) in &adv.skipped {
            reasons.insert(*i, reason.as_str());
        }
        if adv.start.is_empty() {
            assert!(!sched.any_running());
            break;
        }
        waves.push(adv.start.iter().map(|&i| nodes[i].0.to_string()).collect());
        for i in adv.start {
            sched.finish(i, outcomes.get(nodes[i].0).copied().unwrap_or(Succeeded));
        }
    }
    assert!(sched.pending().is_empty(), "every step is decided");
    let finals = (0..nodes.len())
        .map(|i| {
            (
                nodes[i].0.to_string(),
                (sched.phase(i), reasons.get(&i).copied()),
            )
        })
        .collect();
    (waves, finals)
}

type Case<'a> = (
    &'a str,
    &'a [(&'a str, &'a [&'a str], When)],
    &'a [(&'a str, StepPhase)],
    &'a [&'a [&'a str]],
    &'a [(&'a str, StepPhase, Option<&'a str>)],
);

#[test]
fn scheduler_table() {
    use When::{Always, OnFailure, OnSuccess};
    let cases: &[Case] = &[
        (
            "diamond runs with maximal parallelism",
            &[
                ("a", &[], OnSuccess),
                ("b", &["a"], OnSuccess),
                ("c", &["a"], OnSuccess),
                ("d", &["b", "c"], OnSuccess),
            ],
            &[],
            &[&["a"], &["b", "c"], &["d"]],
            &[
                ("a", Succeeded, None),
                ("b", Succeeded, None),
                ("c", Succeeded, None),
                ("d", Succeeded, None),
            ],
        ),
        (
            "a failing branch next to a succeeding one",
            &[
                ("root", &[], OnSuccess),
                ("bad", &["root"], OnSuccess),
                ("good", &["root"], OnSuccess),
                ("after-bad", &["bad"], OnSuccess),
                ("after-good", &["good"], OnSuccess),
                ("join", &["after-bad", "after-good"], OnSuccess),
                ("notify", &["bad"], OnFailure),
                ("cleanup", &["join"], Always),
            ],
            &[("bad", Failed)],
            &[
                &["root"],
                &["bad", "good"],
                &["after-good", "notify"],
                &["cleanup"],
            ],
            &[
                ("root", Succeeded, None),
                ("bad", Failed, None),
                ("good", Succeeded, None),
                ("after-bad", Skipped, Some("DependencyFailed")),
                ("after-good", Succeeded, None),
                ("join", Skipped, Some("DependencyFailed")),
                ("notify", Succeeded, None),
                ("cleanup", Succeeded, None),
            ],
        ),
        (
            "onFailure not needed: it and what needs its success are skipped, always still runs",
            &[
                ("a", &[], OnSuccess),
                ("on-fail", &["a"], OnFailure),
                ("next", &["on-fail"], OnSuccess),
                ("fin", &["on-fail"], Always),
            ],
            &[],
            &[&["a"], &["fin"]],
            &[
                ("a", Succeeded, None),
                ("on-fail", Skipped, Some("NotOnFailure")),
                ("next", Skipped, Some("DependencySkipped")),
                ("fin", Succeeded, None),
            ],
        ),
        (
            "a failure upstream of an always step still blocks onSuccess after it",
            &[
                ("a", &[], OnSuccess),
                ("cleanup", &["a"], Always),
                ("deploy", &["cleanup"], OnSuccess),
                ("alert", &["cleanup"], OnFailure),
            ],
            &[("a", Failed)],
            &[&["a"], &["cleanup"], &["alert"]],
            &[
                ("a", Failed, None),
                ("cleanup", Succeeded, None),
                ("deploy", Skipped, Some("DependencyFailed")),
                ("alert", Succeeded, None),
            ],
        ),
        (
            "onFailure looks upstream only, and a root onFailure never runs",
            &[
                ("x", &[], OnSuccess),
                ("y", &[], OnSuccess),
                ("on-y-fail", &["y"], OnFailure),
                ("orphan", &[], OnFailure),
            ],
            &[("x", Failed)],
            &[&["x", "y"]],
            &[
                ("x", Failed, None),
                ("y", Succeeded, None),
                ("on-y-fail", Skipped, Some("NotOnFailure")),
                ("orphan", Skipped, Some("NotOnFailure")),
            ],
        ),
        (
            "onFailure reached through skipped steps; a failing onFailure step fails too",
            &[
                ("a", &[], OnSuccess),
                ("b", &["a"], OnSuccess),
                ("report", &["b"], OnFailure),
                ("after", &["report"], Always),
            ],
            &[("a", Failed), ("report", Failed)],
            &[&["a"], &["report"], &["after"]],
            &[
                ("a", Failed, None),
                ("b", Skipped, Some("DependencyFailed")),
                ("report", Failed, None),
                ("after", Succeeded, None),
            ],
        ),
    ];
    for (name, nodes, outcomes, want_waves, want_finals) in cases {
        let (waves, finals) = simulate(nodes, outcomes);
        let want_waves: Vec<Vec<String>> = want_waves
            .iter()
            .map(|w| w.iter().map(|s| s.to_string()).collect())
            .collect();
        assert_eq!(waves, want_waves, "{name}: waves");
        for (step, phase, reason) in *want_finals {
            assert_eq!(finals[*step], (*phase, *reason), "{name}: step {step}");
        }
    }
}

#[test]
fn adopted_steps_are_not_started_again() {
    let d = dag(&[("a", &[]), ("b", &["a"])]).unwrap();
    let mut sched = Scheduler::new(d, vec![When::OnSuccess; 2]);
    sched.adopt(0);
    assert_eq!(sched.advance(), Advance::default());
    sched.finish(0, Succeeded);
    assert_eq!(sched.advance().start, vec![1]);
}

#[test]
fn an_allowed_failure_counts_as_a_success_for_later_steps() {
    use When::{OnFailure, OnSuccess};
    let d = dag(&[
        ("lint", &[]),
        ("build", &["lint"]),
        ("on-lint-fail", &["lint"]),
        ("test", &["build"]),
        ("on-test-fail", &["test"]),
    ])
    .unwrap();
    let when = vec![OnSuccess, OnSuccess, OnFailure, OnSuccess, OnFailure];
    let mut sched = Scheduler::new(d, when).allow_failures(vec![true, false, false, false, false]);
    assert_eq!(sched.advance().start, vec![0]);
    sched.finish(0, Failed);
    assert_eq!(sched.phase(0), Succeeded, "lint's failure is allowed");
    let adv = sched.advance();
    assert_eq!(adv.start, vec![1]);
    assert_eq!(adv.skipped, vec![(2, SkipReason::NotOnFailure)]);
    sched.finish(1, Succeeded);
    assert_eq!(sched.advance().start, vec![3]);
    // A step without allowFailure still fails.
    sched.finish(3, Failed);
    assert_eq!(sched.phase(3), Failed);
    assert_eq!(sched.advance().start, vec![4]);
}

#[test]
fn a_service_lets_its_dependents_start_once_up_and_is_done_when_they_are() {
    use When::OnSuccess;
    let d = dag(&[
        ("db", &[]),
        ("migrate", &["db"]),
        ("test", &["migrate", "db"]),
        ("lint", &[]),
    ])
    .unwrap();
    let mut sched = Scheduler::new(d, vec![OnSuccess; 4]).services(vec![true, false, false, false]);
    assert_eq!(
        sched.advance().start,
        vec![0, 3],
        "db and lint start at once"
    );
    assert!(
        sched.advance().start.is_empty(),
        "migrate waits for db to be up"
    );
    sched.service_up(0);
    assert!(sched.is_up(0));
    assert_eq!(sched.advance().start, vec![1]);
    assert!(
        sched.services_done().is_empty(),
        "migrate, test and lint still to end"
    );
    sched.finish(1, Succeeded);
    assert_eq!(sched.advance().start, vec![2]);
    sched.finish(2, Succeeded);
    sched.finish(3, Succeeded);
    assert!(!sched.others_active());
    assert_eq!(
        sched.services_done(),
        vec![0],
        "nothing left to serve: stop db"
    );
    sched.finish(0, Succeeded);
    assert!(sched.services_done().is_empty());
}

#[test]
fn a_service_that_ends_early_fails_the_steps_waiting_for_it() {
    use When::{Always, OnSuccess};
    let d = dag(&[("db", &[]), ("test", &["db"]), ("report", &["test"])]).unwrap();
    let mut sched =
        Scheduler::new(d, vec![OnSuccess, OnSuccess, Always]).services(vec![true, false, false]);
    assert_eq!(sched.advance().start, vec![0]);
    assert!(sched.others_active(), "a service ending now ends too early");
    sched.finish(0, Failed);
    let adv = sched.advance();
    assert_eq!(adv.skipped, vec![(1, SkipReason::DependencyFailed)]);
    assert_eq!(adv.start, vec![2], "always still runs");
    // A service that never came up is not served to anyone.
    assert!(!sched.is_up(0));
}
