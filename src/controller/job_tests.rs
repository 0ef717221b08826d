#![allow(clippy::unwrap_used)]
use super::*;
use crate::crd::reasons::reason;
use std::collections::BTreeMap;

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
        direct_only: false,
    }
}

fn q(name: &str, selector: Option<LabelSelector>) -> Queued {
    Queued {
        name: name.into(),
        uid: format!("uid-{name}"),
        selector: selector.map(std::sync::Arc::new),
        ..Default::default()
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
    let no_values = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "os".into(),
            operator: "In".into(),
            values: None,
        }]),
        ..Default::default()
    };
    assert!(
        !selector_matches(&no_values, &labels),
        "In without values matches nothing"
    );
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
            invalid: Some("cycle".into()),
            ..q("j8", sel("pool", "a"))
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
        reason: reason::RUNNER_POD_PENDING,
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

#[test]
fn a_step_reading_a_runner_token_secret_is_an_invalid_spec() {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
    let reads = |secret: &str| EnvVar {
        name: "T".into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: "token".into(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let job = |secret: &str| {
        Job::new(
            "j",
            crate::crd::JobSpec {
                steps: vec![crate::crd::Step {
                    name: "s".into(),
                    image: "busybox".into(),
                    script: Some("true".into()),
                    env: Some(vec![reads(secret)]),
                    ..Default::default()
                }],
                ..Default::default()
            },
        )
    };
    let runner_secrets: BTreeSet<String> = ["builder-token".to_owned()].into();
    assert_eq!(invalid_spec(&job("app-creds"), &runner_secrets), None);
    let why = invalid_spec(&job("builder-token"), &runner_secrets).unwrap();
    assert!(
        why.contains("step s reads Secret builder-token (env T), which holds a runner token"),
        "{why}"
    );
    // Mounted as a volume: the same refusal.
    let mut mounted = job("app-creds");
    mounted.spec.steps[0].volumes = Some(vec![crate::crd::job::StepVolume {
        name: "t".into(),
        mount_path: "/t".into(),
        secret: Some(crate::crd::pod_template::ObjectVolume {
            name: "builder-token".into(),
            optional: None,
        }),
        ..Default::default()
    }]);
    let why = invalid_spec(&mounted, &runner_secrets).unwrap();
    assert!(
        why.contains("step s reads Secret builder-token (volume t)"),
        "{why}"
    );
}
