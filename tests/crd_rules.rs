//! The CRD's validation rules, checked without a cluster: kube's CEL evaluator runs
//! the same `x-kubernetes-validations` the API server runs at apply time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/fixtures.rs"]
mod fixtures;

use baton::crd::manifest::{self, Manifest};
use baton::crd::{Job, JobSpec, Step};

#[test]
fn every_invalid_fixture_is_refused_with_its_message() {
    let table = fixtures::invalid_fixtures();
    assert!(
        table.len() >= 12,
        "the table should hold at least 12 invalid manifests, has {}",
        table.len()
    );
    for fx in table {
        let err = manifest::parse_all(&fx.yaml)
            .expect_err(&format!("{} was accepted", fx.path.display()));
        let text = err.to_string();
        assert!(
            text.contains(&fx.expect_local),
            "{}: expected {:?} in {text:?}",
            fx.path.display(),
            fx.expect_local
        );
    }
}

#[test]
fn every_example_is_a_valid_job() {
    let examples = fixtures::yaml_files("examples");
    assert!(!examples.is_empty(), "examples/ holds no manifests");
    for (path, yaml) in examples {
        let docs = manifest::parse_all(&yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            docs.iter().all(|d| matches!(d, Manifest::Job(_))),
            "{}: not only Jobs",
            path.display()
        );
    }
}

fn job(steps: Vec<Step>) -> Job {
    Job::new(
        "j",
        JobSpec {
            steps,
            ..Default::default()
        },
    )
}

fn step(name: &str) -> Step {
    Step {
        name: name.into(),
        image: "busybox".into(),
        script: Some("true".into()),
        ..Default::default()
    }
}

#[test]
fn spec_is_immutable_except_cancel() {
    let old = job(vec![step("a")]);

    let mut cancelled = old.clone();
    cancelled.spec.cancel = Some(true);
    assert!(
        cancelled.validate_cel_update(&old).is_ok(),
        "cancelling must be allowed"
    );

    let mut more_steps = old.clone();
    more_steps.spec.steps.push(step("b"));
    let err = more_steps
        .validate_cel_update(&old)
        .unwrap_err()
        .to_string();
    assert!(err.contains("immutable"), "{err}");

    let mut timeout_added = old.clone();
    timeout_added.spec.timeout = Some("5m".into());
    assert!(
        timeout_added.validate_cel_update(&old).is_err(),
        "adding an optional field is a change too"
    );

    let mut uncancelled = cancelled.clone();
    uncancelled.spec.cancel = Some(false);
    let err = uncancelled
        .validate_cel_update(&cancelled)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be undone"), "{err}");
}

#[test]
fn immutability_rule_names_every_spec_field_but_cancel() {
    // A spec with every field set: its JSON keys are the spec's fields.
    let spec = serde_json::json!({
        "runnerSelector": {}, "runnerName": "r1", "onDemand": {}, "imagePullSecrets": [], "steps": [], "workspace": {}, "timeout": "1s",
        "retries": 0, "ttlSecondsAfterFinished": 0, "podTemplate": {}, "priority": 0, "cancel": true,
        "inputs": [], "content": {"digest": "sha256:0", "size": 0},
    });
    // ... and the schema's, so a field added to the type but not above fails here.
    let crd = serde_json::to_value(<Job as kube::CustomResourceExt>::crd()).unwrap();
    let schema_keys = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    let listed = spec
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        schema_keys
            .iter()
            .collect::<std::collections::BTreeSet<_>>(),
        listed.iter().collect(),
        "the JSON above must set every spec field"
    );
    let parsed: JsonSpecKeys = serde_json::from_value(spec.clone()).unwrap();
    let round_trip = serde_json::to_value(&parsed.0).unwrap();
    for key in round_trip.as_object().unwrap().keys() {
        let named = baton::crd::job::IMMUTABLE_SPEC_RULE.contains(&format!("self.{key}"));
        assert_eq!(named, key != "cancel", "field {key}");
    }
}

/// Round-trips through `JobSpec` so a field added to the type but not to the JSON
/// above fails to show up... and a renamed one fails to parse.
struct JsonSpecKeys(JobSpec);
impl<'de> serde::Deserialize<'de> for JsonSpecKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        JobSpec::deserialize(d).map(JsonSpecKeys)
    }
}

#[test]
fn pull_secrets_are_secret_names_at_most_16_each_once_and_immutable() {
    let refs = |names: &[&str]| {
        Some(
            names
                .iter()
                .map(|n| k8s_openapi::api::core::v1::LocalObjectReference {
                    name: (*n).to_owned(),
                })
                .collect::<Vec<_>>(),
        )
    };
    let with = |names: &[&str]| {
        let mut j = job(vec![step("a")]);
        j.spec.image_pull_secrets = refs(names);
        j
    };
    assert!(
        with(&["registry-login", "ghcr.io-token"])
            .validate_cel()
            .is_ok()
    );
    let err = with(&["Registry_Login"])
        .validate_cel()
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be a Secret name"), "{err}");
    let err = with(&["x"; 2]).validate_cel().unwrap_err().to_string();
    assert!(err.contains("named once"), "{err}");
    let many: Vec<String> = (0..17).map(|i| format!("login-{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let err = with(&many).validate_cel().unwrap_err().to_string();
    assert!(err.contains("at most 16"), "{err}");
    assert!(with(&many[..16]).validate_cel().is_ok());

    let old = with(&["registry-login"]);
    let err = with(&["other"])
        .validate_cel_update(&old)
        .unwrap_err()
        .to_string();
    assert!(err.contains("immutable"), "{err}");
    let mut policy = old.clone();
    policy.spec.steps[0].image_pull_policy = Some(baton::crd::job::PullPolicy::Always);
    assert!(
        policy.validate_cel_update(&old).is_err(),
        "a step's pull policy is part of the immutable spec"
    );
}

#[test]
fn valid_jobs_pass() {
    let mut b = step("b");
    b.depends_on = Some(vec!["a".into()]);
    assert!(job(vec![step("a"), b]).validate_cel().is_ok());
}

#[test]
fn config_crd_matches_the_rust_types() {
    for (file, yaml) in baton::crd::files().unwrap() {
        let path = fixtures::repo_path(&format!("config/crd/{file}"));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "{} is out of date with src/crd: run `make crd` to regenerate it",
            path.display()
        );
    }
}

#[test]
fn a_wide_job_of_the_maximum_size_is_valid() {
    // 1 root -> 198 parallel -> 1 join: the largest Job the CRD admits (200 steps,
    // the join depending on 198) must pass the rules the API server runs.
    let mut steps = vec![step("root")];
    for i in 0..198 {
        let mut s = step(&format!("leaf-{i}"));
        s.depends_on = Some(vec!["root".into()]);
        steps.push(s);
    }
    let mut join = step("join");
    join.depends_on = Some((0..198).map(|i| format!("leaf-{i}")).collect());
    steps.push(join);
    let job = job(steps);
    assert!(job.validate_cel().is_ok(), "{:?}", job.validate_cel());
}
