#![allow(clippy::unwrap_used)]
use k8s_openapi::api::core::v1::PodStatus;
use kube::api::ObjectMeta;

use super::*;
use crate::controller::on_demand::{ATTEMPT_LABEL, JOB_LABEL};
use crate::crd::job::{JobPhase, JobStatus};

fn job(handed_to: Option<&str>, account: Option<&str>) -> Job {
    let mut j: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": "j", "namespace": "ns", "uid": "u-1" },
        "spec": {
            "onDemand": { "serviceAccountName": account },
            "steps": [{ "name": "a", "image": "busybox", "script": "true" }]
        }
    }))
    .unwrap();
    j.status = handed_to.map(|r| JobStatus {
        phase: Some(JobPhase::Queued),
        runner: Some(r.into()),
        epoch: Some(1),
        ..Default::default()
    });
    j
}

fn token(j: &Job, attempt: u32) -> TokenSeen {
    let t = desired_token(j, attempt).unwrap();
    TokenSeen {
        name: t.name_any(),
        attempt: Some(attempt),
        spec: t.spec,
    }
}

fn pod(attempt: u32, phase: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(runner_name("j", attempt)),
            labels: Some(
                [
                    (JOB_LABEL.to_owned(), "u-1".to_owned()),
                    (ATTEMPT_LABEL.to_owned(), attempt.to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        }),
    }
}

/// The plan in one line.
fn describe(p: &PodPlan) -> String {
    let names = |v: &[String]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(",")
        }
    };
    format!(
        "token={} revoke={} delete={} rbac={} runner={} create={} slot={}:{}",
        p.apply_token
            .as_ref()
            .map_or("-".to_owned(), ResourceExt::name_any),
        names(&p.revoke_tokens),
        names(&p.delete_pods),
        p.apply_rbac,
        match (&p.create_runner, &p.delete_runner) {
            (Some(r), _) => format!("+{}", r.name_any()),
            (None, Some(name)) => format!("-{name}"),
            (None, None) => "-".to_owned(),
        },
        p.create_pod
            .as_ref()
            .map_or("-".to_owned(), ResourceExt::name_any),
        p.slot.runner.as_deref().unwrap_or("-"),
        p.slot.reason,
    )
}

#[test]
fn runner_pod_plan_table() {
    let fresh = job(None, None);
    let lost = job(Some("j-runner"), None);
    let own = job(None, Some("builder"));
    let seen = |tokens: Vec<TokenSeen>, pods: Vec<Pod>, secret_ready| PodObserved {
        tokens,
        pods,
        secret_ready,
        ca_pem: None,
        runner: None,
    };
    let cases = [
        (
            "nothing yet: the token first",
            &fresh,
            seen(vec![], vec![], false),
            "token=j-runner revoke=- delete=- rbac=false runner=- create=- slot=-:RunnerStarting",
        ),
        (
            "token minted: account and pod",
            &fresh,
            seen(vec![token(&fresh, 1)], vec![], true),
            "token=- revoke=- delete=- rbac=true runner=+j-runner create=j-runner slot=j-runner:RunnerStarting",
        ),
        (
            "the Job's own ServiceAccount: no account applied",
            &own,
            seen(vec![token(&own, 1)], vec![], true),
            "token=- revoke=- delete=- rbac=false runner=+j-runner create=j-runner slot=j-runner:RunnerStarting",
        ),
        (
            "pod up: wait on it, create nothing",
            &fresh,
            seen(vec![token(&fresh, 1)], vec![pod(1, "Running")], true),
            "token=- revoke=- delete=- rbac=false runner=- create=- slot=j-runner:RunnerStarting",
        ),
        (
            "pod ended before it took the Job: replaced",
            &fresh,
            seen(vec![token(&fresh, 1)], vec![pod(1, "Failed")], true),
            "token=- revoke=- delete=j-runner rbac=false runner=- create=- slot=-:RunnerStarting",
        ),
        (
            "runner lost mid-Job: the next attempt",
            &lost,
            seen(vec![token(&lost, 1)], vec![pod(1, "Running")], false),
            "token=j-runner-2 revoke=j-runner delete=j-runner rbac=false runner=- create=- slot=-:RunnerStarting",
        ),
        (
            "next attempt's token minted",
            &lost,
            seen(vec![token(&lost, 1), token(&lost, 2)], vec![], true),
            "token=- revoke=j-runner delete=- rbac=true runner=+j-runner-2 create=j-runner-2 slot=j-runner-2:RunnerStarting",
        ),
    ];
    let config = OnDemandConfig::default();
    for (what, j, seen, want) in cases {
        let plan = plan_runner_pod(j, &seen, &config, "http://baton:8080");
        assert_eq!(describe(&plan), want, "{what}");
    }
}

/// The runner name belongs to the Job: its Runner is created before the pod; a
/// Pending squatter is removed first; a Runner an operator decided on stops it.
#[test]
fn the_runner_name_is_the_jobs_before_its_pod_exists() {
    let fresh = job(None, None);
    let with_runner = |runner: Option<Runner>| PodObserved {
        tokens: vec![token(&fresh, 1)],
        pods: vec![],
        secret_ready: true,
        ca_pem: None,
        runner,
    };
    let ours = desired_runner(&fresh, 1).unwrap();
    let squatter = Runner::new("j-runner", Default::default());
    let mut adopted = squatter.clone();
    adopted.spec.adoption = Some(crate::crd::runner::AdoptionDecision::Adopted);
    let cases = [
        (
            "ours already",
            with_runner(Some(ours)),
            "token=- revoke=- delete=- rbac=true runner=- create=j-runner slot=j-runner:RunnerStarting",
        ),
        (
            "a Pending squatter",
            with_runner(Some(squatter)),
            "token=- revoke=- delete=- rbac=false runner=-j-runner create=- slot=-:RunnerStarting",
        ),
        (
            "an operator's Runner",
            with_runner(Some(adopted)),
            "token=- revoke=- delete=- rbac=false runner=- create=- slot=-:RunnerNameTaken",
        ),
    ];
    let config = OnDemandConfig::default();
    for (what, seen, want) in cases {
        let plan = plan_runner_pod(&fresh, &seen, &config, "http://baton:8080");
        assert_eq!(describe(&plan), want, "{what}");
    }
}

#[test]
fn no_runner_api_address_waits_with_a_reason_that_names_the_fix() {
    let slot = unavailable(&job(None, None));
    assert_eq!(
        slot.reason,
        crate::crd::reasons::reason::ON_DEMAND_UNAVAILABLE
    );
    assert!(
        slot.message.contains("--runner-server-url"),
        "{}",
        slot.message
    );
    assert_eq!(slot.runner, None);
}
