//! What an on-demand runner is made of, pure: its name per attempt, its
//! RunnerToken, its Pod (Pod Security `restricted`), the namespace's runner
//! ServiceAccount and Role, and how its pod's state reads.

use crate::crd::reasons::reason;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, Pod, PodSecurityContext,
    PodSpec, Probe, SecretKeySelector, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::*;
use crate::crd::job::OnDemand;
use crate::crd::runner_token::SECRET_KEY;
use crate::crd::{Job, Runner, RunnerSpec, RunnerToken, RunnerTokenSpec};

/// The runner's name (= its token's and pod's) for `attempt` (1, 2, …) of Job
/// `job`: `<job>-runner`, then `<job>-runner-2`, …; always a DNS label.
pub fn runner_name(job: &str, attempt: u32) -> String {
    let base = if job.len() <= 50 && crate::server::input::is_dns_label(job) {
        job.to_owned()
    } else {
        let cut: String = job
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(39)
            .collect();
        let digest = &crate::domain::token::hash(job)[..10];
        format!("{}-{digest}", cut.trim_matches('-'))
    };
    if attempt <= 1 {
        format!("{base}-runner")
    } else {
        format!("{base}-runner-{attempt}")
    }
}

/// The attempt a Job is on: the newest of its runner tokens (0: none yet); if the
/// Job was handed to that attempt's runner and is queued again, that runner was
/// lost and the next attempt is due.
pub fn attempt_for(job_name: &str, latest: u32, handed_to: Option<&str>) -> u32 {
    if latest == 0 {
        1
    } else if handed_to == Some(runner_name(job_name, latest).as_str()) {
        latest + 1
    } else {
        latest
    }
}

fn labels(uid: &str, attempt: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (JOB_LABEL.to_owned(), uid.to_owned()),
        (ATTEMPT_LABEL.to_owned(), attempt.to_string()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "baton".to_owned(),
        ),
    ])
}

/// The Runner of attempt `attempt`, owned by the Job, created before its pod so the
/// name is the Job's before any process can register under it.
pub fn desired_runner(job: &Job, attempt: u32) -> Option<Runner> {
    let uid = job.uid()?;
    let mut runner = Runner::new(
        &runner_name(&job.name_any(), attempt),
        RunnerSpec {
            labels: BTreeMap::from([(JOB_LABEL.to_owned(), uid.clone())]),
            ..Default::default()
        },
    );
    runner.metadata.namespace = job.namespace();
    runner.metadata.labels = Some(labels(&uid, attempt));
    runner.metadata.owner_references = Some(vec![job.controller_owner_ref(&())?]);
    Some(runner)
}

/// Whether `runner` is the one the controller made for the Job `uid`.
pub fn is_jobs_runner(runner: &Runner, uid: &str) -> bool {
    runner.labels().get(JOB_LABEL).is_some_and(|v| v == uid)
}

/// The RunnerToken of attempt `attempt`, owned by the Job.
pub fn desired_token(job: &Job, attempt: u32) -> Option<RunnerToken> {
    let uid = job.uid()?;
    let runner = runner_name(&job.name_any(), attempt);
    let mut rt = RunnerToken::new(
        &runner,
        RunnerTokenSpec {
            runner_name: Some(runner.clone()),
            labels: BTreeMap::from([(JOB_LABEL.to_owned(), uid.clone())]),
            ttl: Some(TOKEN_TTL.into()),
        },
    );
    rt.metadata.namespace = job.namespace();
    rt.metadata.labels = Some(labels(&uid, attempt));
    rt.metadata.owner_references = Some(vec![job.controller_owner_ref(&())?]);
    Some(rt)
}

/// The runner container: `baton runner --once` against `server_url`, its token
/// from `secret`, trusting `ca_pem` when given.
fn runner_container(
    name: &str,
    ns: &str,
    image: String,
    secret: &str,
    server_url: &str,
    ca_pem: Option<&str>,
    od: &OnDemand,
) -> Container {
    let args = [
        "runner",
        "--server",
        server_url,
        "--name",
        name,
        "--namespace",
        ns,
        "--state-dir",
        "/tmp/state",
        "--backend",
        "kubernetes",
        "--health-addr",
        "0.0.0.0:9090",
        "--once",
    ]
    .map(str::to_owned)
    .to_vec();
    Container {
        name: "runner".into(),
        image: Some(image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(
            std::iter::once(EnvVar {
                name: "BATON_RUNNER_TOKEN".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.to_owned(),
                        key: SECRET_KEY.to_owned(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            // Step pods copy baton-entrypoint from the image the runner runs.
            .chain(std::iter::once(EnvVar {
                name: "BATON_TOOLS_IMAGE".into(),
                value: Some(image.clone()),
                ..Default::default()
            }))
            .chain(ca_pem.map(|pem| EnvVar {
                name: CA_PEM_ENV.into(),
                value: Some(pem.to_owned()),
                ..Default::default()
            }))
            .collect(),
        ),
        resources: od.resources.clone(),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        }]),
        // Ready = registered, adopted and connected: the pod watch then wakes the
        // Job up to be assigned at once.
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::Int(HEALTH_PORT),
                ..Default::default()
            }),
            period_seconds: Some(1),
            failure_threshold: Some(1),
            ..Default::default()
        }),
        security_context: Some(crate::domain::restricted::container()),
        ..Default::default()
    }
}

/// The runner pod of attempt `attempt`: `baton runner --once` with the token from
/// `secret`, trusting `ca_pem` (PEM text, as `BATON_CA_PEM`) when given, passing the
/// `restricted` Pod Security Standard.
pub fn desired_pod(
    job: &Job,
    attempt: u32,
    secret: &str,
    server_url: &str,
    ca_pem: Option<&str>,
    config: &OnDemandConfig,
) -> Option<Pod> {
    let uid = job.uid()?;
    let ns = job.namespace()?;
    let name = runner_name(&job.name_any(), attempt);
    let od = job.spec.on_demand.clone().unwrap_or_default();
    let image = od.image.clone().unwrap_or_else(|| config.image.clone());
    let container = runner_container(&name, &ns, image, secret, server_url, ca_pem, &od);
    Some(Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns),
            labels: Some(labels(&uid, attempt)),
            owner_references: Some(vec![job.controller_owner_ref(&())?]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            service_account_name: Some(
                od.service_account_name
                    .clone()
                    .unwrap_or_else(|| RUNNER_ACCOUNT.into()),
            ),
            // The runner talks to the API server (its step pods).
            automount_service_account_token: Some(true),
            enable_service_links: Some(false),
            node_selector: od.node_selector.clone(),
            tolerations: od.tolerations.clone(),
            // the runner's image may sit in the same private registry as the steps'
            image_pull_secrets: job.spec.image_pull_secrets.clone(),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUNNER_UID),
                run_as_group: Some(RUNNER_UID),
                seccomp_profile: Some(crate::domain::restricted::runtime_default()),
                ..Default::default()
            }),
            containers: vec![container],
            volumes: Some(vec![Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

/// The ServiceAccount, Role and RoleBinding runner pods use in `ns`: what the
/// kubernetes backend needs for step pods, and nothing more.
pub fn desired_rbac(ns: &str) -> (ServiceAccount, Role, RoleBinding) {
    let meta = || ObjectMeta {
        name: Some(RUNNER_ACCOUNT.into()),
        namespace: Some(ns.to_owned()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_owned(),
            "baton".to_owned(),
        )])),
        ..Default::default()
    };
    let rule = |resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..Default::default()
    };
    let role = Role {
        metadata: meta(),
        rules: Some(vec![
            // Step pods: create, find again after a restart (list/get), watch to
            // their end, delete on cancel/timeout and at the end (deletecollection).
            rule(
                &["pods"],
                &[
                    "create",
                    "get",
                    "list",
                    "watch",
                    "delete",
                    "deletecollection",
                ],
            ),
            // Tail step logs.
            rule(&["pods/log"], &["get"]),
            // Content into and changes out of workspace helper pods: exec is a
            // websocket GET, and newer API servers also check create.
            rule(&["pods/exec"], &["get", "create"]),
            // The Job's workspace volume.
            rule(&["persistentvolumeclaims"], &["create", "get", "delete"]),
            // The values of the Secrets steps read, to mask them in step logs (a
            // runner that creates pods can read any Secret through one anyway).
            rule(&["secrets"], &["get"]),
        ]),
    };
    let binding = RoleBinding {
        metadata: meta(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: RUNNER_ACCOUNT.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: RUNNER_ACCOUNT.into(),
            namespace: Some(ns.to_owned()),
            ..Default::default()
        }]),
    };
    let sa = ServiceAccount {
        metadata: meta(),
        ..Default::default()
    };
    (sa, role, binding)
}

/// Whether a pod ended or is going away.
pub fn is_gone(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        || matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Why a Job waits on its runner pod: an image that cannot be pulled, the
/// scheduler's verdict, or just starting.
pub fn pod_wait(pod: &Pod) -> (&'static str, String) {
    let name = pod.name_any();
    let status = pod.status.clone().unwrap_or_default();
    for cs in status.container_statuses.iter().flatten() {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or_default();
            if matches!(
                reason,
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
            ) {
                return (
                    reason::IMAGE_PULL_FAILED,
                    format!(
                        "runner pod {name}: {reason}: {}",
                        w.message.as_deref().unwrap_or("cannot pull the image")
                    ),
                );
            }
        }
    }
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unscheduled {
        return (
            reason::RUNNER_POD_PENDING,
            format!(
                "runner pod {name} is not scheduled: {}",
                c.message.as_deref().unwrap_or("no reason given")
            ),
        );
    }
    (
        reason::RUNNER_STARTING,
        format!("runner pod {name} is starting; waiting for its runner to register"),
    )
}
