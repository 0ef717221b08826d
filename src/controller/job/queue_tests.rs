#![allow(clippy::unwrap_used)]
use super::*;
use crate::crd::job::{JobSpec, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

fn pool(p: &str) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some([("pool".to_owned(), p.to_owned())].into()),
        ..Default::default()
    })
}

fn at(second: i64) -> Option<Timestamp> {
    Some(Timestamp::from_second(1_800_000_000 + second).unwrap())
}

fn job(name: &str, priority: i32, created: i64, selector: Option<LabelSelector>) -> Queued {
    Queued {
        name: name.into(),
        uid: format!("uid-{name}"),
        priority,
        created: at(created),
        selector: selector.map(Arc::new),
        ..Default::default()
    }
}

fn runner(name: &str, pool: &str, free: usize) -> RunnerView {
    RunnerView {
        name: name.into(),
        labels: [("pool".to_owned(), pool.to_owned())].into(),
        usable: true,
        free,
        on_demand_for: None,
        direct_only: false,
    }
}

fn names(queue: &[Queued]) -> Vec<&str> {
    queue.iter().map(|j| j.name.as_str()).collect()
}

#[test]
fn higher_priority_first_then_oldest_then_by_name() {
    let mut queue = vec![
        job("old-low", -5, 0, pool("a")),
        job("new-high", 10, 50, pool("a")),
        job("b-mid", 0, 20, pool("a")),
        job("a-mid", 0, 20, pool("a")),
        job("older-mid", 0, 10, pool("a")),
        job("old-high", 10, 5, pool("a")),
    ];
    sort_queue(&mut queue);
    assert_eq!(
        names(&queue),
        [
            "old-high",
            "new-high",
            "older-mid",
            "a-mid",
            "b-mid",
            "old-low"
        ]
    );
}

#[test]
fn a_later_higher_priority_job_takes_the_free_room() {
    let mut queue = vec![
        job("first", 0, 0, pool("a")),
        job("urgent", 100, 60, pool("a")),
    ];
    sort_queue(&mut queue);
    let plan = plan_queue(&queue, &[runner("r1", "a", 1)]);
    assert_eq!(
        plan["urgent"],
        Decision::Assign {
            runner: "r1".into()
        }
    );
    assert!(
        matches!(&plan["first"], Decision::Wait { reason, message }
            if *reason == reason::RUNNERS_BUSY && message.starts_with("1 matching runner(s)")),
        "{:?}",
        plan["first"]
    );
}

/// The plan as it was before selectors were grouped: each Job parses its
/// selector against each runner.
fn one_by_one(queue: &[Queued], runners: &[RunnerView]) -> Vec<Option<String>> {
    let mut free: Vec<usize> = runners.iter().map(|r| r.free).collect();
    let mut order: Vec<usize> = (0..runners.len()).collect();
    order.sort_by(|&a, &b| runners[a].name.cmp(&runners[b].name));
    let mut out = Vec::new();
    for j in queue {
        let sel = j.selector.as_ref().unwrap();
        let mut best: Option<usize> = None;
        for &i in &order {
            let r = &runners[i];
            if r.usable && free[i] > 0 && selector_matches(sel, &r.labels) {
                best = match best {
                    Some(b) if free[b] >= free[i] => Some(b),
                    _ => Some(i),
                };
            }
        }
        out.push(best.map(|i| {
            free[i] -= 1;
            runners[i].name.clone()
        }));
    }
    out
}

#[test]
fn grouped_selectors_decide_as_one_by_one_matching_does() {
    let expr = |op: &str, vals: &[&str]| {
        Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "pool".into(),
                operator: op.into(),
                values: Some(vals.iter().map(|v| (*v).to_owned()).collect()),
            }]),
            ..Default::default()
        })
    };
    let selectors = [
        pool("a"),
        pool("b"),
        expr("In", &["a", "c"]),
        expr("NotIn", &["a"]),
        pool("none"),
        Some(LabelSelector::default()),
    ];
    let runners: Vec<RunnerView> = (0..12)
        .map(|i| {
            let mut r = runner(&format!("r{:02}", 11 - i), ["a", "b", "c"][i % 3], i % 4);
            r.usable = i % 5 != 0;
            r
        })
        .collect();
    let queue: Vec<Queued> = (0..60)
        .map(|i| {
            job(
                &format!("j{i:02}"),
                0,
                i,
                selectors[(i as usize * 7) % 6].clone(),
            )
        })
        .collect();
    let grouped: Vec<Option<String>> = decisions(&queue, &runners)
        .into_iter()
        .map(|d| match d {
            Decision::Assign { runner } => Some(runner),
            Decision::Wait { .. } => None,
        })
        .collect();
    assert_eq!(grouped, one_by_one(&queue, &runners));
    assert!(grouped.iter().any(Option::is_some) && grouped.iter().any(Option::is_none));
}

fn waiting(reason: &str, message: &str) -> Shown {
    Shown {
        position: None,
        waiting: Some((reason.into(), message.into())),
    }
}

#[test]
fn positions_are_written_only_where_they_differ() {
    let queue = vec![job("j1", 0, 0, pool("a")), job("j2", 0, 1, pool("a"))];
    let runners = [runner("r1", "a", 0)];
    let decided = decisions(&queue, &runners);
    let Decision::Wait { message, .. } = &decided[0] else {
        panic!("{decided:?}")
    };
    let busy = waiting(reason::RUNNERS_BUSY, message);
    let fresh = [busy.clone(), busy.clone()];
    let todo = upkeep(&queue, &decided, &fresh, &runners);
    assert_eq!(todo.positions, [("j1".into(), 1), ("j2".into(), 2)]);
    assert!(todo.kick.is_empty(), "same reasons: {:?}", todo.kick);

    let placed = [
        Shown {
            position: Some(1),
            ..busy.clone()
        },
        Shown {
            position: Some(3),
            ..busy
        },
    ];
    let todo = upkeep(&queue, &decided, &placed, &runners);
    assert_eq!(todo.positions, [("j2".into(), 2)], "j1 is in place already");

    let settled = [
        placed[0].clone(),
        Shown {
            position: Some(2),
            ..placed[1].clone()
        },
    ];
    assert_eq!(
        upkeep(&queue, &decided, &settled, &runners),
        Upkeep::default(),
        "nothing changed: nothing to write, nobody to reconcile"
    );
}

#[test]
fn places_are_exact_at_the_head_and_within_a_quarter_behind_it() {
    assert!(worth_writing(None, 5_000), "a Job with no place gets one");
    assert!(worth_writing(Some(3), 2), "exact at the head");
    assert!(worth_writing(Some(11), 10), "10 is in the head");
    assert!(!worth_writing(Some(10), 10));
    assert!(!worth_writing(Some(100), 80), "off by 20 of 80: a quarter");
    assert!(worth_writing(Some(100), 79), "off by 21 of 79: more");
    assert!(!worth_writing(Some(60), 75), "moved back by 15 of 75");
    assert!(worth_writing(Some(60), 81), "moved back by 21 of 81");
    assert!(!worth_writing(Some(i32::MAX), i32::MAX));
    assert!(worth_writing(Some(i32::MIN), i32::MAX), "no overflow");
}

#[test]
fn a_deep_queue_moving_up_by_one_is_rewritten_at_the_head_only() {
    let queue: Vec<Queued> = (0..1_000)
        .map(|i| job(&format!("j{i}"), 0, i, pool("a")))
        .collect();
    let runners = [runner("r1", "a", 0)];
    let decided = decisions(&queue, &runners);
    let Decision::Wait { reason, message } = &decided[0] else {
        panic!("{:?}", decided[0])
    };
    // Each Job shows the place it had before the one ahead of it left.
    let shown: Vec<Shown> = (2..)
        .take(queue.len())
        .map(|p| Shown {
            position: Some(p),
            waiting: Some(((*reason).to_owned(), message.clone())),
        })
        .collect();
    let todo = upkeep(&queue, &decided, &shown, &runners);
    let written: Vec<i32> = todo.positions.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        written,
        (1..=EXACT_HEAD).collect::<Vec<_>>(),
        "1 of 1,000 left"
    );
}

#[test]
fn a_job_the_plan_assigns_gets_no_position_and_those_behind_move_up() {
    let queue = vec![
        job("j1", 0, 0, pool("a")),
        job("j2", 0, 1, pool("a")),
        job("j3", 0, 2, pool("a")),
    ];
    let runners = [runner("r1", "a", 1)];
    let decided = decisions(&queue, &runners);
    assert!(matches!(decided[0], Decision::Assign { .. }), "{decided:?}");
    let Decision::Wait { reason, message } = &decided[1] else {
        panic!("{decided:?}")
    };
    let was = |position| Shown {
        position: Some(position),
        waiting: Some(((*reason).to_owned(), message.clone())),
    };
    let todo = upkeep(&queue, &decided, &[was(1), was(2), was(3)], &runners);
    assert_eq!(todo.kick, ["j1"], "j1 goes to r1");
    assert_eq!(
        todo.positions,
        [("j2".into(), 1), ("j3".into(), 2)],
        "j1 keeps what it shows (its assignment clears it); j2 and j3 move up"
    );
    let fresh = Shown::default();
    let todo = upkeep(
        &queue,
        &decided,
        &[fresh.clone(), fresh.clone(), fresh],
        &runners,
    );
    assert!(
        !todo.positions.iter().any(|(name, _)| name == "j1"),
        "a Job assigned on sight is never given a position: {:?}",
        todo.positions
    );
}

#[test]
fn upkeep_reconciles_jobs_whose_decision_changed() {
    let mut queue = vec![
        job("goes", 5, 0, pool("a")),
        job("same-reason", 0, 1, pool("zzz")),
        job("new-reason", 0, 2, pool("a")),
        job("od-ready", 0, 3, None),
        job("od-waiting", 0, 4, None),
    ];
    sort_queue(&mut queue);
    let mut own = runner("od-runner", "x", 1);
    own.on_demand_for = Some("uid-od-ready".into());
    let runners = [runner("r1", "a", 1), own];
    let decided = decisions(&queue, &runners);
    let no_match = "no adopted, connected and enabled runner matches runnerSelector";
    let shown = [
        waiting(reason::NO_MATCHING_RUNNER, no_match),
        waiting(reason::NO_MATCHING_RUNNER, no_match),
        waiting(reason::NO_MATCHING_RUNNER, no_match),
        waiting(reason::RUNNER_POD_PENDING, "pending"),
        waiting(reason::RUNNER_POD_PENDING, "pending"),
    ];
    let todo = upkeep(&queue, &decided, &shown, &runners);
    assert_eq!(todo.kick, ["goes", "new-reason", "od-ready"]);
}

#[test]
fn only_queued_live_jobs_have_a_place() {
    let with = |phase: JobPhase, cancel: bool| {
        let mut j = Job::new(
            "j",
            JobSpec {
                cancel: cancel.then_some(true),
                ..Default::default()
            },
        );
        j.status = Some(JobStatus {
            phase: Some(phase),
            ..Default::default()
        });
        j
    };
    assert!(waits_in_queue(&with(JobPhase::Queued, false)));
    assert!(
        waits_in_queue(&Job::new("new", JobSpec::default())),
        "no status yet"
    );
    assert!(!waits_in_queue(&with(JobPhase::Queued, true)), "cancelled");
    assert!(!waits_in_queue(&with(JobPhase::Assigned, false)));
    assert!(!waits_in_queue(&with(JobPhase::Running, false)));
    assert!(!waits_in_queue(&with(JobPhase::Succeeded, false)));
    let mut deleting = with(JobPhase::Queued, false);
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(0).unwrap()),
    );
    assert!(!waits_in_queue(&deleting));
}

fn named(name: &str, runner: &str, selector: Option<LabelSelector>) -> Queued {
    Queued {
        runner_name: Some(runner.into()),
        ..job(name, 0, 0, selector)
    }
}

#[test]
fn a_job_naming_its_runner_goes_there_whatever_the_selectors() {
    let mut direct = runner("direct", "b", 1);
    direct.direct_only = true;
    let runners = [runner("shared", "a", 5), direct];
    let queue = vec![
        // Its selector matches `shared` only: unused when it names a runner.
        named("mine", "direct", pool("a")),
        named("no-selector", "shared", None),
        // A direct-only runner is never found by its labels.
        job("by-labels", 0, 1, pool("b")),
        named("later", "direct", None),
        named("ghost", "nowhere", None),
    ];
    let plan = plan_queue(&queue, &runners);
    let to = |r: &str| Decision::Assign { runner: r.into() };
    assert_eq!(plan["mine"], to("direct"));
    assert_eq!(plan["no-selector"], to("shared"));
    let reason_of = |n: &str| match &plan[n] {
        Decision::Wait { reason, message } => (*reason, message.clone()),
        d => panic!("{n}: {d:?}"),
    };
    assert_eq!(reason_of("by-labels").0, reason::NO_MATCHING_RUNNER);
    assert_eq!(
        reason_of("later").0,
        reason::RUNNERS_BUSY,
        "direct has room for one"
    );
    let (why, message) = reason_of("ghost");
    assert_eq!(why, reason::NAMED_RUNNER_UNAVAILABLE);
    assert!(message.contains("runner nowhere (runnerName)"), "{message}");
}

#[test]
fn a_named_runner_that_cannot_take_jobs_is_waited_for() {
    let mut off = runner("off", "a", 1);
    off.usable = false;
    let mut pod = runner("pod", "a", 1);
    pod.on_demand_for = Some("uid-other".into());
    let queue = vec![named("to-off", "off", None), named("to-pod", "pod", None)];
    let decided = decisions(&queue, &[off, pod]);
    for d in &decided {
        assert!(
            matches!(d, Decision::Wait { reason, .. } if *reason == reason::NAMED_RUNNER_UNAVAILABLE),
            "{d:?}"
        );
    }
    // Waiting for a named runner is not an on-demand wait: no kick without a change.
    let shown: Vec<Shown> = decided
        .iter()
        .map(|d| match d {
            Decision::Wait { reason, message } => waiting(reason, message),
            Decision::Assign { .. } => Shown::default(),
        })
        .collect();
    assert!(upkeep(&queue, &decided, &shown, &[]).kick.is_empty());
}

#[test]
fn jobs_of_one_selector_share_one_copy_of_it() {
    let mut selectors = Selectors::default();
    let a1 = selectors.share(&pool("a").unwrap());
    let a2 = selectors.share(&pool("a").unwrap());
    let b = selectors.share(&pool("b").unwrap());
    assert!(Arc::ptr_eq(&a1, &a2), "equal selectors share a copy");
    assert!(!Arc::ptr_eq(&a1, &b));
    assert_eq!(
        *b,
        pool("b").unwrap(),
        "a shared copy is the selector itself"
    );
    // Same labels, one more expression: a different selector.
    let mut stricter = pool("a").unwrap();
    stricter.match_expressions = Some(vec![LabelSelectorRequirement {
        key: "gpu".into(),
        operator: "Exists".into(),
        values: None,
    }]);
    let s = selectors.share(&stricter);
    assert!(!Arc::ptr_eq(&a1, &s));
    assert_eq!(*s, stricter);
}
