#![allow(clippy::unwrap_used)]
use super::*;
use crate::crd::reasons::reason;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
};

fn job(name: &str) -> Job {
    let mut j: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": name, "namespace": "ns", "uid": "u-1" },
        "spec": {
            "onDemand": {
                "nodeSelector": { "disk": "ssd" },
                "tolerations": [{ "key": "ci", "operator": "Exists" }],
                "resources": { "limits": { "memory": "256Mi" } }
            },
            "steps": [{ "name": "a", "image": "busybox", "script": "true" }]
        }
    }))
    .unwrap();
    j.metadata.generation = Some(1);
    j
}

#[test]
fn names_are_dns_labels_per_attempt() {
    assert_eq!(runner_name("build", 1), "build-runner");
    assert_eq!(runner_name("build", 2), "build-runner-2");
    let long = "a.very.long.job.name.that.is.a.dns.subdomain.but.not.a.label.at.all";
    let n = runner_name(long, 12);
    assert!(crate::server::input::is_dns_label(&n), "{n}");
    assert_ne!(n, runner_name(&format!("{long}x"), 12), "distinct");
}

#[test]
fn attempts_move_on_only_after_a_hand_over() {
    assert_eq!(attempt_for("j", 0, None), 1, "first");
    assert_eq!(attempt_for("j", 1, None), 1, "not handed yet: same pod");
    assert_eq!(
        attempt_for("j", 1, Some("j-runner")),
        2,
        "its runner was lost"
    );
    assert_eq!(attempt_for("j", 2, Some("j-runner")), 2, "already replaced");
    assert_eq!(attempt_for("j", 2, Some("j-runner-2")), 3);
}

#[test]
fn token_is_owned_by_the_job_and_bound_to_the_runner() {
    let t = desired_token(&job("j"), 2).unwrap();
    assert_eq!(t.metadata.name.as_deref(), Some("j-runner-2"));
    assert_eq!(t.spec.runner_name.as_deref(), Some("j-runner-2"));
    assert_eq!(
        t.spec.labels.get(JOB_LABEL).map(String::as_str),
        Some("u-1")
    );
    let owner = &t.metadata.owner_references.unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Job", "u-1"));
}

#[test]
fn runner_pod_is_restricted_and_takes_the_token_from_the_secret() {
    let cfg = OnDemandConfig::default();
    let pod = desired_pod(&job("j"), 1, "j-runner-token", "http://h:1", None, &cfg).unwrap();
    assert_eq!(pod.metadata.name.as_deref(), Some("j-runner"));
    let spec = pod.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.service_account_name.as_deref(), Some(RUNNER_ACCOUNT));
    assert_eq!(spec.node_selector.unwrap().get("disk").unwrap(), "ssd");
    assert_eq!(spec.tolerations.unwrap().len(), 1);
    let psc = spec.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some(DEFAULT_IMAGE));
    let args = c.args.clone().unwrap().join(" ");
    assert!(
        args.contains("--server http://h:1 --name j-runner --namespace ns")
            && args.contains("--backend kubernetes")
            && args.ends_with("--once"),
        "{args}"
    );
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    let envs = c.env.clone().unwrap();
    assert_eq!(envs.len(), 2, "no CA configured: no {CA_PEM_ENV}");
    assert_eq!(
        (envs[1].name.as_str(), envs[1].value.as_deref()),
        ("BATON_TOOLS_IMAGE", Some(DEFAULT_IMAGE)),
        "step pods take the entrypoint from the runner's own image"
    );
    let env = &envs[0];
    assert_eq!(env.name, "BATON_RUNNER_TOKEN");
    assert!(env.value.is_none(), "never the plaintext in the pod spec");
    let key = env.value_from.clone().unwrap().secret_key_ref.unwrap();
    assert_eq!(
        (key.name.as_str(), key.key.as_str()),
        ("j-runner-token", "token")
    );
    assert_eq!(c.volume_mounts.clone().unwrap()[0].mount_path, "/tmp");
    assert!(c.resources.is_some());

    let mut own = job("j");
    own.spec.on_demand.as_mut().unwrap().image = Some("my/runner:1".into());
    let pod = desired_pod(&own, 1, "s", "http://h:1", None, &cfg).unwrap();
    assert_eq!(
        pod.spec.unwrap().containers[0].image.as_deref(),
        Some("my/runner:1")
    );
}

#[test]
fn runner_pod_pulls_with_the_jobs_pull_secrets() {
    let cfg = OnDemandConfig::default();
    let pod = desired_pod(&job("j"), 1, "s", "http://h:1", None, &cfg).unwrap();
    assert_eq!(pod.spec.unwrap().image_pull_secrets, None);

    let mut private = job("j");
    private.spec.image_pull_secrets =
        Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
            name: "registry-login".into(),
        }]);
    let pod = desired_pod(&private, 1, "s", "http://h:1", None, &cfg).unwrap();
    let secrets = pod.spec.unwrap().image_pull_secrets.unwrap();
    assert_eq!(secrets[0].name, "registry-login");
}

/// A self-signed CA certificate (rcgen is only a dev-dependency of the integration
/// tests, so a fixed one): CN=baton-unit-test-ca, valid 100 years from 2026 (its key thrown away).
const TEST_CA: &str = include_str!("on_demand_test_ca.pem");

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("baton-on-demand-ca-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ca.crt");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn runner_pod_gets_the_ca_as_plain_pem_text() {
    let cfg = OnDemandConfig::default();
    let pod = desired_pod(
        &job("j"),
        1,
        "j-runner-token",
        "https://h:1",
        Some(TEST_CA),
        &cfg,
    )
    .unwrap();
    let c = &pod.spec.unwrap().containers[0];
    let envs = c.env.clone().unwrap();
    let ca = envs.iter().find(|e| e.name == CA_PEM_ENV).unwrap();
    assert_eq!(ca.value.as_deref(), Some(TEST_CA));
    assert!(ca.value_from.is_none(), "a value, not a Secret reference");
    assert!(
        envs.iter().any(|e| e.name == "BATON_RUNNER_TOKEN"),
        "the token still comes from its Secret"
    );
    // No volume for it: nothing to mount across namespaces.
    assert_eq!(c.volume_mounts.clone().unwrap().len(), 1);
}

#[test]
fn runner_ca_file_is_checked_at_load_and_passes_certificates_only() {
    // A key next to the certificate (a careless bundle) never reaches a pod spec.
    let bundle = format!(
        "# comment\n{TEST_CA}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    );
    let path = temp_file("bundle", &bundle);
    let ca = RunnerCa::load(path.clone()).unwrap();
    let pem = ca.pem();
    assert!(
        !pem.contains("PRIVATE KEY") && !pem.contains("comment"),
        "{pem}"
    );
    let certs =
        crate::domain::ca::parse_ca_pem(pem.as_bytes(), &crate::domain::ca::CaOrigin::Pem).unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(pem, crate::domain::ca::to_pem(&certs));
    assert_eq!(
        pem.trim(),
        TEST_CA.trim(),
        "re-encoded as the usual 64-column PEM"
    );

    // Rotated: the new file is read for the next pod; turned bad: the last good stays.
    std::fs::write(&path, "junk\n").unwrap();
    assert_eq!(ca.pem(), pem, "a bad new file keeps the last good CA");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(ca.pem(), pem, "a vanished file keeps the last good CA");

    // At start, a bad file is an error naming it.
    let missing = path.with_file_name("missing.crt");
    let err = RunnerCa::load(missing.clone()).unwrap_err().to_string();
    assert!(
        err.contains("read the CA file") && err.contains(&*missing.to_string_lossy()),
        "{err}"
    );
    let junk = temp_file("junk", "junk\n");
    let err = RunnerCa::load(junk.clone()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("the CA file {} holds no PEM certificate", junk.display())
    );
    let bad = temp_file(
        "bad",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let err = RunnerCa::load(bad.clone()).unwrap_err().to_string();
    assert!(err.contains("holds a bad certificate"), "{err}");
    for p in [path, junk, bad] {
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
    }
}

#[test]
fn rbac_is_namespaced_and_minimal() {
    let (_, role, binding) = desired_rbac("ns");
    let rules = role.rules.unwrap();
    let resources: Vec<String> = rules
        .iter()
        .flat_map(|r| r.resources.clone().unwrap())
        .collect();
    assert_eq!(
        resources,
        [
            "pods",
            "pods/log",
            "pods/exec",
            "persistentvolumeclaims",
            "secrets"
        ]
    );
    assert!(
        rules
            .iter()
            .all(|r| r.api_groups == Some(vec![String::new()]))
    );
    assert!(!rules.iter().any(|r| r.verbs.iter().any(|v| v == "*")));
    assert_eq!(binding.role_ref.kind, "Role");
}

fn pod_with(status: PodStatus) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("j-runner".into()),
            ..Default::default()
        },
        spec: None,
        status: Some(status),
    }
}

#[test]
fn wait_reasons_come_from_the_pod() {
    let waiting = |reason: &str| PodStatus {
        container_statuses: Some(vec![ContainerStatus {
            name: "runner".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some("pull failed".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    };
    assert_eq!(
        pod_wait(&pod_with(waiting("ErrImagePull"))).0,
        reason::IMAGE_PULL_FAILED
    );
    assert_eq!(
        pod_wait(&pod_with(waiting("ImagePullBackOff"))).0,
        reason::IMAGE_PULL_FAILED
    );
    assert_eq!(
        pod_wait(&pod_with(waiting("ContainerCreating"))).0,
        reason::RUNNER_STARTING
    );
    let unscheduled = PodStatus {
        conditions: Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            message: Some("0/1 nodes are available: 1 node(s) didn't match".into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let (reason, message) = pod_wait(&pod_with(unscheduled));
    assert_eq!(reason, reason::RUNNER_POD_PENDING);
    assert!(message.contains("0/1 nodes are available"), "{message}");
    assert!(!is_gone(&pod_with(PodStatus::default())));
    assert!(is_gone(&pod_with(PodStatus {
        phase: Some("Failed".into()),
        ..Default::default()
    })));
}
