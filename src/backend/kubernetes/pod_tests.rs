#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::{EnvVarSource, ResourceRequirements, SecretKeySelector};

use super::*;
use crate::crd::job::Workspace;

fn target(workspace: Option<Workspace>) -> JobTarget {
    let mut t = JobTarget::new("ns", "build", "0b5c6c5e-1111-2222-3333-444455556666");
    t.workspace = workspace;
    t
}

fn script_step(script: &str) -> Step {
    Step {
        name: "compile".into(),
        image: "localhost/baton/step:latest".into(),
        script: Some(script.into()),
        ..Default::default()
    }
}

fn build(target: &JobTarget, step: &Step, retry: u32, node: Option<&str>) -> Pod {
    let injected = vec![("BATON_OUTPUT_VERSION".to_owned(), "1.2".to_owned())];
    let attempt = Attempt {
        step,
        retry,
        injected: &injected,
        hosts: &[],
        nonce: "n0nce",
        log_offset: 42,
    };
    step_pod(target, &attempt, node).unwrap()
}

fn container(pod: &Pod) -> &Container {
    &pod.spec.as_ref().unwrap().containers[0]
}

/// Kubernetes' `$(NAME)` expansion of command and args, to check what a pod runs.
fn kube_expand(input: &str, vars: &BTreeMap<&str, &str>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                }
                b'(' => match input[i + 2..].find(')') {
                    Some(end) => {
                        let name = &input[i + 2..i + 2 + end];
                        match vars.get(name) {
                            Some(v) => out.push_str(v),
                            None => out.push_str(&format!("$({name})")),
                        }
                        i += 3 + end;
                    }
                    None => {
                        out.push_str("$(");
                        i += 2;
                    }
                },
                _ => {
                    out.push('$');
                    i += 1;
                }
            }
        } else {
            let c = input[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[test]
fn names_are_deterministic_distinct_per_retry_and_dns_labels() {
    let uid = "0b5c6c5e-1111-2222-3333-444455556666";
    let a = pod_name("build", uid, "compile", 0);
    assert_eq!(a, pod_name("build", uid, "compile", 0));
    assert!(a.starts_with("build-compile-"), "{a}");
    assert_ne!(a, pod_name("build", uid, "compile", 1));
    assert_ne!(a, pod_name("build", "another-uid", "compile", 0));
    assert_ne!(a, pod_name("build", uid, "test", 0));

    let long_job = "a.very.long.job.name.".repeat(12);
    let long_step = "s".repeat(63);
    for name in [
        pod_name(&long_job, uid, &long_step, 10),
        pod_name("Job_With-Caps", uid, "x", 0),
        pod_name("-", uid, "-", 0),
    ] {
        assert!(name.len() <= 63, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
    }
    let claim = workspace_claim_name(&long_job, uid);
    assert!(
        claim.len() <= 63 && claim.contains("-workspace-"),
        "{claim}"
    );
    assert_eq!(workspace_claim_name("build", uid), "build-workspace");
}

#[test]
fn labels_annotations_and_owner() {
    let pod = build(&target(None), &script_step("true"), 2, None);
    let meta = &pod.metadata;
    let labels = meta.labels.as_ref().unwrap();
    assert_eq!(
        labels[LABEL_JOB_UID],
        "0b5c6c5e-1111-2222-3333-444455556666"
    );
    assert_eq!(labels[LABEL_JOB_NAME], "build");
    assert_eq!(labels[LABEL_STEP], "compile");
    assert_eq!(labels[LABEL_RETRY], "2");
    assert!(
        !labels.contains_key(LABEL_RUNNER),
        "no runner's watch to be seen by"
    );
    let mut of_runner = target(None);
    of_runner.runner_label = Some("r1".into());
    let watched = build(&of_runner, &script_step("true"), 2, None);
    assert_eq!(
        watched.metadata.labels.as_ref().unwrap()[LABEL_RUNNER],
        "r1"
    );
    let annotations = meta.annotations.as_ref().unwrap();
    assert_eq!(annotations[ANNOTATION_NONCE], "n0nce");
    assert_eq!(annotations[ANNOTATION_LOG_OFFSET], "42");
    let owner = &meta.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Job", "build"));
    assert_eq!(owner.api_version, "baton.dev/v1alpha1");
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(false));
    assert_eq!(meta.namespace.as_deref(), Some("ns"));
    assert_eq!(
        meta.name.as_deref(),
        Some(
            pod_name(
                "build",
                "0b5c6c5e-1111-2222-3333-444455556666",
                "compile",
                2
            )
            .as_str()
        )
    );

    // Ours by the Job's uid as controller owner; the same labels under another
    // owner, or no owner, are not.
    assert!(is_ours(&pod, &target(None)));
    let mut planted = pod.clone();
    planted.metadata.owner_references.as_mut().unwrap()[0].uid = "another-job".into();
    assert!(!is_ours(&planted, &target(None)));
    planted.metadata.owner_references = None;
    assert!(!is_ours(&planted, &target(None)));
    let mut not_controller = pod.clone();
    not_controller.metadata.owner_references.as_mut().unwrap()[0].controller = Some(false);
    assert!(!is_ours(&not_controller, &target(None)));

    let long = JobTarget::new("ns", "j.".repeat(50), "uid");
    let pod = build(&long, &script_step("true"), 0, None);
    let value = &pod.metadata.labels.unwrap()[LABEL_JOB_NAME];
    assert!(value.len() <= 63 && value.ends_with('j'), "{value}");
}

#[test]
fn the_pod_passes_the_restricted_pod_security_standard() {
    let pod = build(&target(None), &script_step("true"), 0, None);
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.automount_service_account_token, Some(false));
    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(1000));
    assert_eq!(psc.run_as_group, Some(1000));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(spec.containers.len(), 1, "no container Baton does not vet");
    assert_eq!(spec.init_containers.as_ref().unwrap().len(), 1);
    assert!(spec.ephemeral_containers.is_none());
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_owned()])
        );
        assert!(sc.capabilities.as_ref().unwrap().add.is_none());
        assert_ne!(sc.privileged, Some(true));
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    }
    for v in spec.volumes.iter().flatten() {
        assert!(v.host_path.is_none(), "restricted forbids hostPath");
    }
    assert!(spec.host_network.is_none() && spec.host_pid.is_none() && spec.host_ipc.is_none());

    let mut custom = target(None);
    custom.run_as_user = 2000;
    custom.run_as_group = 3000;
    let pod = build(&custom, &script_step("true"), 0, None);
    let psc = pod.spec.unwrap().security_context.unwrap();
    assert_eq!(
        (psc.run_as_user, psc.run_as_group),
        (Some(2000), Some(3000))
    );
}

#[test]
fn a_script_reaches_the_shell_unchanged_by_kubernetes_expansion() {
    let script = "echo $(date) $$ $HOME ${X} $(BATON_OUTPUT_VERSION) cost: 5$\nfor i in $(seq 1 3); do echo $i; done";
    let pod = build(&target(None), &script_step(script), 0, None);
    let command = container(&pod).command.clone().unwrap();
    assert!(container(&pod).args.is_none());
    let vars = BTreeMap::from([
        ("date", "NO"),
        ("BATON_OUTPUT_VERSION", "NO"),
        ("HOME", "NO"),
    ]);
    let expanded: Vec<String> = command.iter().map(|w| kube_expand(w, &vars)).collect();
    assert_eq!(
        &expanded[..4],
        ["/baton/bin/baton-entrypoint", "run", "n0nce", "--"]
    );
    assert_eq!(expanded[4..7], ["sh", "-e", "-c"]);
    assert_eq!(expanded[7], script);
    assert_eq!(expanded[8], "compile", "$0 is the step name, as locally");
}

#[test]
fn a_command_keeps_kubernetes_expansion() {
    let step = Step {
        name: "greet".into(),
        image: "busybox".into(),
        command: Some(vec!["echo".into(), "$(GREETING)".into()]),
        args: Some(vec!["$$(GREETING)".into(), "plain".into()]),
        ..Default::default()
    };
    let pod = build(&target(None), &step, 0, None);
    let command = container(&pod).command.clone().unwrap();
    assert_eq!(
        command[4..],
        ["echo", "$(GREETING)", "$$(GREETING)", "plain"]
    );
    assert!(container(&pod).termination_message_path.is_none());

    for bad in [
        Step {
            args: Some(vec!["x".into()]),
            ..Default::default()
        },
        Step {
            command: Some(vec![]),
            ..Default::default()
        },
    ] {
        let attempt = Attempt {
            step: &bad,
            retry: 0,
            injected: &[],
            hosts: &[],
            nonce: "n",
            log_offset: 0,
        };
        let err = step_pod(&target(None), &attempt, None).unwrap_err();
        assert_eq!(err.reason(), "InvalidStep", "{bad:?}");
    }
}

#[test]
fn no_command_and_no_script_runs_the_images_entrypoint() {
    let step = Step {
        name: "distroless".into(),
        image: "localhost/baton/baton:dev".into(),
        ..Default::default()
    };
    let pod = build(&target(None), &step, 0, None);
    let c = container(&pod);
    assert!(c.command.is_none() && c.args.is_none(), "{c:?}");
    // Its outputs come back as the termination message.
    assert_eq!(c.termination_message_path.as_deref(), Some(OUTPUT_FILE));
    assert!(
        is_unwrapped(&pod),
        "read back from the pod (a resumed runner)"
    );
    assert!(!is_unwrapped(&build(
        &target(None),
        &script_step("true"),
        0,
        None
    )));
}

#[test]
fn an_init_container_brings_the_entrypoint_from_the_tools_image() {
    let mut target = target(Some(Workspace::default()));
    target.tools_image = "registry.example/baton:1.2".into();
    let pod = build(&target, &script_step("true"), 0, None);
    let spec = pod.spec.unwrap();
    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, INIT_CONTAINER);
    assert_eq!(init.image.as_deref(), Some("registry.example/baton:1.2"));
    assert_eq!(
        init.command.as_ref().unwrap(),
        &[
            "/usr/local/bin/baton-entrypoint",
            "install",
            "/baton/bin/baton-entrypoint"
        ]
    );
    // Only the scratch volume: the init container never sees the workspace.
    let mounts = init.volume_mounts.as_ref().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].mount_path, BATON_DIR);
    let sc = init.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
}

#[test]
fn env_order_secrets_and_reserved_names() {
    let secret = EnvVar {
        name: "TOKEN".into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: "creds".into(),
                key: "token".into(),
                optional: None,
            }),
            ..Default::default()
        }),
    };
    let mut step = script_step("true");
    step.env = Some(vec![
        EnvVar {
            name: "MSG".into(),
            value: Some("v=$(BATON_OUTPUT_VERSION)".into()),
            value_from: None,
        },
        secret.clone(),
        EnvVar {
            name: "BATON_OUTPUT".into(),
            value: Some("/elsewhere".into()),
            value_from: None,
        },
    ]);
    let pod = build(&target(None), &step, 0, None);
    let env = container(&pod).env.clone().unwrap();
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["BATON_OUTPUT_VERSION", "MSG", "TOKEN", "BATON_OUTPUT"]
    );
    assert_eq!(
        env[1].value.as_deref(),
        Some("v=$(BATON_OUTPUT_VERSION)"),
        "Kubernetes expands it"
    );
    assert_eq!(env[2], secret, "secretKeyRef passed straight to the pod");
    assert_eq!(env[3].value.as_deref(), Some(OUTPUT_FILE));
}

#[test]
fn outputs_volume_resources_and_working_dir() {
    let mut step = script_step("true");
    step.resources = Some(Box::new(ResourceRequirements {
        limits: Some(BTreeMap::from([("memory".into(), Quantity("64Mi".into()))])),
        ..Default::default()
    }));
    let pod = build(&target(None), &step, 0, None);
    let c = container(&pod);
    assert_eq!(c.resources, step.resources.map(|r| *r));
    assert_eq!(c.working_dir, None, "the image's own directory");
    let mounts = c.volume_mounts.clone().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].mount_path, BATON_DIR);
    let volumes = pod.spec.unwrap().volumes.unwrap();
    assert!(volumes[0].empty_dir.is_some());
    assert!(pod.metadata.name.is_some());
}

#[test]
fn a_workspace_is_mounted_and_is_the_default_working_dir() {
    let ws = target(Some(Workspace::default()));
    let pod = build(&ws, &script_step("true"), 0, None);
    let c = container(&pod);
    assert_eq!(c.working_dir.as_deref(), Some(WORKSPACE_DIR));
    let mounts = c.volume_mounts.clone().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == WORKSPACE_DIR && m.name == "workspace")
    );
    let env = c.env.clone().unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "BATON_WORKSPACE" && e.value.as_deref() == Some(WORKSPACE_DIR))
    );
    let volumes = pod.spec.as_ref().unwrap().volumes.clone().unwrap();
    let claim = volumes
        .iter()
        .find_map(|v| v.persistent_volume_claim.as_ref())
        .unwrap();
    assert_eq!(claim.claim_name, "build-workspace");

    let mut step = script_step("true");
    step.working_dir = Some("src/app".into());
    assert_eq!(
        container(&build(&ws, &step, 0, None))
            .working_dir
            .as_deref(),
        Some("/workspace/src/app")
    );
    step.working_dir = Some("/tmp".into());
    assert_eq!(
        container(&build(&ws, &step, 0, None))
            .working_dir
            .as_deref(),
        Some("/tmp")
    );
}

#[test]
fn the_workspace_claim() {
    assert!(workspace_claim(&target(None)).is_none());
    let claim = workspace_claim(&target(Some(Workspace::default()))).unwrap();
    assert_eq!(claim.metadata.name.as_deref(), Some("build-workspace"));
    assert_eq!(claim.metadata.owner_references.unwrap()[0].kind, "Job");
    let spec = claim.spec.unwrap();
    assert_eq!(spec.storage_class_name, None, "the cluster's default class");
    assert_eq!(
        spec.resources.unwrap().requests.unwrap()["storage"],
        Quantity("1Gi".into())
    );

    let claim = workspace_claim(&target(Some(Workspace {
        size: Some(Quantity("5Gi".into())),
        storage_class_name: Some("fast".into()),
    })))
    .unwrap();
    let spec = claim.spec.unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        spec.resources.unwrap().requests.unwrap()["storage"],
        Quantity("5Gi".into())
    );
}

#[test]
fn pods_are_pinned_to_the_workspace_node() {
    let ws = target(Some(Workspace::default()));
    assert!(
        build(&ws, &script_step("true"), 0, None)
            .spec
            .unwrap()
            .affinity
            .is_none()
    );
    let pod = build(&ws, &script_step("true"), 0, Some("node-a"));
    let terms = pod
        .spec
        .unwrap()
        .affinity
        .unwrap()
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms;
    let field = &terms[0].match_fields.as_ref().unwrap()[0];
    assert_eq!(field.key, "metadata.name");
    assert_eq!(field.operator, "In");
    assert_eq!(field.values.as_deref(), Some(&["node-a".to_owned()][..]));
}

#[test]
fn selectors() {
    assert_eq!(job_selector("u"), "baton.dev/job-uid=u");
    assert_eq!(
        step_selector("u", "s"),
        "baton.dev/job-uid=u,baton.dev/step=s"
    );
}

#[test]
fn a_service_declares_its_ports_and_is_ready_when_the_first_accepts() {
    let mut step = script_step("exec httpd -f -p 8080");
    step.service = Some(true);
    step.ports = Some(vec![
        crate::crd::job::ServicePort { port: 8080 },
        crate::crd::job::ServicePort { port: 9090 },
    ]);
    let pod = build(&target(None), &step, 0, None);
    let c = container(&pod);
    let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [8080, 9090]);
    let probe = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .tcp_socket
        .as_ref()
        .unwrap();
    assert_eq!(
        probe.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080)
    );
    // Not a service: no ports, no probe, whatever it declares.
    let plain = build(&target(None), &script_step("true"), 0, None);
    assert!(container(&plain).ports.is_none() && container(&plain).readiness_probe.is_none());
}

#[test]
fn a_dependent_finds_its_services_by_name_in_etc_hosts() {
    let step = script_step("wget http://db:5432");
    let hosts = vec![("db".to_owned(), "10.1.2.3".to_owned())];
    let attempt = Attempt {
        step: &step,
        retry: 0,
        injected: &[],
        hosts: &hosts,
        nonce: "n",
        log_offset: 0,
    };
    let pod = step_pod(&target(None), &attempt, None).unwrap();
    let aliases = pod.spec.unwrap().host_aliases.unwrap();
    assert_eq!(aliases.len(), 1);
    assert_eq!(aliases[0].ip, "10.1.2.3");
    assert_eq!(
        aliases[0].hostnames.as_deref(),
        Some(&["db".to_owned()][..])
    );
}

#[test]
fn pull_secrets_and_pull_policy_reach_the_pod() {
    use crate::crd::job::{JobSpec, PullPolicy};
    use k8s_openapi::api::core::v1::LocalObjectReference;

    // Unset: no secrets, and IfNotPresent (what Baton always used; never Kubernetes'
    // Always-for-:latest guess).
    let pod = build(&target(None), &script_step("true"), 0, None);
    assert_eq!(pod.spec.as_ref().unwrap().image_pull_secrets, None);
    assert_eq!(
        container(&pod).image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );

    let spec = JobSpec {
        image_pull_secrets: Some(vec![LocalObjectReference {
            name: "registry-login".into(),
        }]),
        ..Default::default()
    };
    let with = JobTarget::new("ns", "build", "uid").with_spec(&spec);
    for (policy, expected) in [
        (PullPolicy::Always, "Always"),
        (PullPolicy::IfNotPresent, "IfNotPresent"),
        (PullPolicy::Never, "Never"),
    ] {
        let mut step = script_step("true");
        step.image_pull_policy = Some(policy);
        let pod = build(&with, &step, 0, None);
        assert_eq!(container(&pod).image_pull_policy.as_deref(), Some(expected));
        let secrets = pod.spec.unwrap().image_pull_secrets.unwrap();
        assert_eq!(secrets.len(), 1);
        assert_eq!(secrets[0].name, "registry-login");
    }
}
