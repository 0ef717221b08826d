//! The step pod, and the workspace claim, as pure functions of the Job's identity
//! and one step attempt. Everything the contract demands of a step pod is decided
//! here (name, labels, owner, security, volumes, placement), so it is tested
//! without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};

use super::JobTarget;
use super::shape;
use crate::backend::BackendError;
use crate::crd::Step;
use crate::domain::restricted;

/// The step's container; the only one in a step pod.
pub const CONTAINER: &str = "step";
pub const LABEL_JOB_UID: &str = "baton.dev/job-uid";
pub const LABEL_JOB_NAME: &str = "baton.dev/job-name";
pub const LABEL_STEP: &str = "baton.dev/step";
pub const LABEL_RETRY: &str = "baton.dev/retry";
/// The runner that created the step pod ([`super::pod_hub`]).
pub const LABEL_RUNNER: &str = "baton.dev/runner";
/// The per-attempt nonce of the outputs frame (see [`outputs`]).
pub const ANNOTATION_NONCE: &str = "baton.dev/outputs-nonce";
/// Where this attempt's log starts within the step's log (earlier attempts before it).
pub const ANNOTATION_LOG_OFFSET: &str = "baton.dev/log-offset";
/// Where every step sees the Job's workspace.
pub const WORKSPACE_DIR: &str = "/workspace";
/// A per-pod scratch volume holding the `$BATON_OUTPUT` file and the entrypoint.
pub const BATON_DIR: &str = "/baton";
pub const OUTPUT_FILE: &str = "/baton/output";
/// The init container that copies the entrypoint out of the tools image.
pub const INIT_CONTAINER: &str = "baton-init";
/// Where the entrypoint sits in the tools image, and where the init container
/// puts it for the step container.
const ENTRYPOINT_IN_IMAGE: &str = "/usr/local/bin/baton-entrypoint";
const ENTRYPOINT: &str = "/baton/bin/baton-entrypoint";
const DEFAULT_WORKSPACE_SIZE: &str = "1Gi";
/// Kubernetes' limit on a pod name that is also a hostname (a DNS label).
const MAX_NAME: usize = 63;

/// One attempt of one step, as the executor asked for it.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    pub step: &'a Step,
    /// 0 for the first run; +1 for each re-run after a lost pod.
    pub retry: u32,
    /// Variables the executor adds before the step's own `env`.
    pub injected: &'a [(String, String)],
    /// Services upstream that are up, as (step name, pod IP): `/etc/hosts` entries.
    pub hosts: &'a [(String, String)],
    /// Frames this attempt's outputs in its log (random per attempt).
    pub nonce: &'a str,
    /// Where this attempt's log continues the step's log.
    pub log_offset: u64,
}

/// The deterministic pod name of a step attempt: `<job>-<step>-<hash8>`, the hash
/// over (job uid, step, retry), the readable part cut so the whole is a DNS label.
pub fn pod_name(job_name: &str, job_uid: &str, step: &str, retry: u32) -> String {
    let mut hasher = Sha256::new();
    for part in [job_uid, step, &retry.to_string()] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let hash = hex::encode(hasher.finalize());
    let readable = dns_label_prefix(&format!("{job_name}-{step}"), MAX_NAME - 9);
    format!("{readable}-{}", &hash[..8])
}

/// The Job's workspace claim: `<job>-workspace` (cut and hashed like pod names).
pub fn workspace_claim_name(job_name: &str, job_uid: &str) -> String {
    let name = format!("{job_name}-workspace");
    if name.len() <= MAX_NAME && !name.contains('.') {
        return name;
    }
    let hash = hex::encode(Sha256::digest(job_uid.as_bytes()));
    let readable = dns_label_prefix(job_name, MAX_NAME - 19);
    format!("{readable}-workspace-{}", &hash[..8])
}

/// `s` with every character outside `[a-z0-9-]` turned into `-`, cut to `max`
/// characters, without leading or trailing `-` (never empty).
pub fn dns_label_prefix(s: &str, max: usize) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(max)
        .collect();
    let trimmed = cleaned.trim_matches('-');
    if trimmed.is_empty() {
        "step".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// A label value for a name that may be longer than 63 characters or hold dots.
pub fn label_value(s: &str) -> String {
    let cut: String = s.chars().take(MAX_NAME).collect();
    cut.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// Selects every step pod of the Job.
pub fn job_selector(job_uid: &str) -> String {
    format!("{LABEL_JOB_UID}={job_uid}")
}

/// Selects every attempt of one step of the Job.
pub fn step_selector(job_uid: &str, step: &str) -> String {
    format!("{LABEL_JOB_UID}={job_uid},{LABEL_STEP}={step}")
}

/// The owner reference every object of the Job carries (garbage collected with it).
pub fn owner_reference(target: &JobTarget) -> OwnerReference {
    OwnerReference {
        api_version: "baton.dev/v1alpha1".into(),
        kind: "Job".into(),
        name: target.job_name.clone(),
        uid: target.job_uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    }
}

/// Whether `pod` is one of this Job's: its controller owner is the Job (by uid).
/// A pod that merely carries the Job's labels or a step pod's name is not adopted:
/// its exit code and outputs would stand for the step's.
pub fn is_ours(pod: &k8s_openapi::api::core::v1::Pod, target: &JobTarget) -> bool {
    pod.metadata.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|o| o.controller == Some(true) && o.uid == target.job_uid && o.kind == "Job")
    })
}

/// Whether the pod's step container runs its image's own entrypoint (no
/// `baton-entrypoint` to frame its outputs): its termination message is read
/// from `$BATON_OUTPUT` instead (see [`step_pod`]).
pub fn is_unwrapped(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .any(|c| c.name == CONTAINER && c.termination_message_path.as_deref() == Some(OUTPUT_FILE))
}

/// Kubernetes expands `$(NAME)` (and turns `$$` into `$`) in a container's command
/// and args; doubling every `$` makes it hand a shell script over unchanged.
pub fn escape_dollars(s: &str) -> String {
    s.replace('$', "$$")
}

/// The claim behind `/workspace`: size default 1Gi, the class from the spec or the
/// cluster's default, owned by the Job.
pub fn workspace_claim(target: &JobTarget) -> Option<PersistentVolumeClaim> {
    let workspace = target.workspace.as_ref()?;
    let size = workspace
        .size
        .clone()
        .unwrap_or_else(|| Quantity(DEFAULT_WORKSPACE_SIZE.into()));
    Some(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(workspace_claim_name(&target.job_name, &target.job_uid)),
            namespace: Some(target.namespace.clone()),
            labels: Some(job_labels(target)),
            owner_references: Some(vec![owner_reference(target)]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: workspace.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), size)])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The claim behind `/workspace` as a volume and its mount (with a workspace).
pub fn workspace_volume(target: &JobTarget) -> Option<(Volume, VolumeMount)> {
    target.workspace.as_ref()?;
    let volume = Volume {
        name: "workspace".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: workspace_claim_name(&target.job_name, &target.job_uid),
            read_only: None,
        }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: "workspace".into(),
        mount_path: WORKSPACE_DIR.into(),
        ..Default::default()
    };
    Some((volume, mount))
}

/// Every pod of the Job runs as the same non-root user, so each can write what
/// the others left in the workspace.
/// What every pod of a Job shares (step pods and workspace helpers): run once,
/// no API token, no service links, the Job's uid and pull secrets.
pub fn base_spec(target: &JobTarget) -> PodSpec {
    PodSpec {
        restart_policy: Some("Never".into()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(pod_security(target)),
        image_pull_secrets: target.image_pull_secrets.clone(),
        ..Default::default()
    }
}

pub fn pod_security(target: &JobTarget) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(target.run_as_user),
        run_as_group: Some(target.run_as_group),
        fs_group: Some(target.run_as_group),
        seccomp_profile: Some(restricted::runtime_default()),
        ..Default::default()
    }
}

/// The labels every pod of the Job carries.
pub fn job_labels(target: &JobTarget) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_JOB_UID.into(), target.job_uid.clone()),
        (LABEL_JOB_NAME.into(), label_value(&target.job_name)),
        ("app.kubernetes.io/managed-by".into(), "baton".into()),
    ])
}

/// The pod of one step attempt. `node` pins it to the node of the Job's earlier
/// pods (set when the Job has a workspace and a pod of it was scheduled).
pub fn step_pod(
    target: &JobTarget,
    attempt: &Attempt<'_>,
    node: Option<&str>,
) -> Result<Pod, BackendError> {
    let step = attempt.step;
    let template = shape::template(target.pod_template.as_ref(), step.pod_template.as_deref());
    let mut labels = job_labels(target);
    labels.insert(LABEL_STEP.into(), step.name.clone());
    labels.insert(LABEL_RETRY.into(), attempt.retry.to_string());
    if let Some(runner) = &target.runner_label {
        labels.insert(LABEL_RUNNER.into(), runner.clone());
    }
    let labels = shape::metadata(template.labels.as_ref(), labels);
    let annotations = BTreeMap::from([
        (ANNOTATION_NONCE.into(), attempt.nonce.to_owned()),
        (ANNOTATION_LOG_OFFSET.into(), attempt.log_offset.to_string()),
    ]);
    let annotations = shape::metadata(template.annotations.as_ref(), annotations);

    let mut volumes = vec![Volume {
        name: "baton".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "baton".into(),
        mount_path: BATON_DIR.into(),
        ..Default::default()
    }];
    if let Some((volume, mount)) = workspace_volume(target) {
        volumes.push(volume);
        mounts.push(mount);
    }

    let (user_volumes, user_mounts) = shape::volumes(step);
    let init = init_container(target, &mounts);
    volumes.extend(user_volumes);
    mounts.extend(user_mounts);
    let wrapped = command(attempt)?;
    let container = Container {
        ports: shape::service_ports(step),
        readiness_probe: shape::service_probe(step),
        name: CONTAINER.into(),
        image: Some(step.image.clone()),
        image_pull_policy: Some(step.image_pull_policy.unwrap_or_default().as_str().into()),
        // Unwrapped (the image's own entrypoint): outputs come back as the
        // termination message, which the kubelet reads from this path.
        termination_message_path: wrapped.is_none().then(|| OUTPUT_FILE.into()),
        command: wrapped,
        env: Some(env(target, attempt)),
        working_dir: working_dir(target, step),
        resources: step.resources.as_deref().cloned(),
        volume_mounts: Some(mounts),
        security_context: Some(restricted::container()),
        ..Default::default()
    };

    let mut spec = PodSpec {
        init_containers: Some(vec![init]),
        containers: vec![container],
        volumes: Some(volumes),
        ..base_spec(target)
    };
    shape::place(&mut spec, &template, node);
    shape::add_hosts(&mut spec, attempt.hosts);
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(
                &target.job_name,
                &target.job_uid,
                &step.name,
                attempt.retry,
            )),
            namespace: Some(target.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(target)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// Copies the static entrypoint from the tools image into the pod's scratch
/// volume, so the step's image needs no shell, no `base64`, not even a libc.
fn init_container(target: &JobTarget, mounts: &[VolumeMount]) -> Container {
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(target.tools_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![
            ENTRYPOINT_IN_IMAGE.into(),
            "install".into(),
            ENTRYPOINT.into(),
        ]),
        volume_mounts: Some(mounts[..1].to_vec()),
        security_context: Some(restricted::container()),
        ..Default::default()
    }
}

/// `baton-entrypoint run NONCE -- <argv>`: the entrypoint runs the step's
/// command, then frames `$BATON_OUTPUT` into the log (see [`outputs`]). A script
/// runs as `sh -e -c SCRIPT STEP`, its `$` escaped so Kubernetes leaves it
/// alone; a command's words keep Kubernetes' `$(NAME)` expansion. `None`: the
/// step sets neither, and the image's own entrypoint runs unwrapped.
fn command(attempt: &Attempt<'_>) -> Result<Option<Vec<String>>, BackendError> {
    let step = attempt.step;
    let mut argv = vec![
        ENTRYPOINT.to_owned(),
        "run".to_owned(),
        attempt.nonce.to_owned(),
        "--".to_owned(),
    ];
    if let Some(script) = &step.script {
        argv.extend([
            "sh".to_owned(),
            "-e".to_owned(),
            "-c".to_owned(),
            escape_dollars(script),
            step.name.clone(),
        ]);
        return Ok(Some(argv));
    }
    let Some(command) = &step.command else {
        return match &step.args {
            Some(_) => Err(BackendError::InvalidStep {
                step: step.name.clone(),
                message: "args need a command".into(),
            }),
            None => Ok(None),
        };
    };
    if command.is_empty() {
        return Err(BackendError::InvalidStep {
            step: step.name.clone(),
            message: "an empty command".into(),
        });
    }
    argv.extend(command.iter().chain(step.args.iter().flatten()).cloned());
    Ok(Some(argv))
}

/// Injected variables, then the step's own `env` (passed as is: Kubernetes
/// resolves `secretKeyRef` and `$(NAME)`), then `BATON_OUTPUT` and
/// `BATON_WORKSPACE`, which the step cannot override. A name given twice keeps
/// its last definition only.
fn env(target: &JobTarget, attempt: &Attempt<'_>) -> Vec<EnvVar> {
    let plain = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    };
    let mut all: Vec<EnvVar> = attempt.injected.iter().map(|(k, v)| plain(k, v)).collect();
    all.extend(attempt.step.env.iter().flatten().cloned());
    all.push(plain("BATON_OUTPUT", OUTPUT_FILE));
    if target.workspace.is_some() {
        all.push(plain("BATON_WORKSPACE", WORKSPACE_DIR));
    }
    let mut out: Vec<EnvVar> = Vec::with_capacity(all.len());
    for (i, var) in all.iter().enumerate() {
        if !all[i + 1..].iter().any(|later| later.name == var.name) {
            out.push(var.clone());
        }
    }
    out
}

/// The step's `workingDir`; with a workspace, `/workspace` by default and relative
/// paths inside it. Without one, the image's own directory by default.
fn working_dir(target: &JobTarget, step: &Step) -> Option<String> {
    match (&step.working_dir, target.workspace.is_some()) {
        (Some(dir), true) if !dir.starts_with('/') => Some(format!("{WORKSPACE_DIR}/{dir}")),
        (Some(dir), _) => Some(dir.clone()),
        (None, true) => Some(WORKSPACE_DIR.into()),
        (None, false) => None,
    }
}

#[cfg(test)]
#[path = "pod_tests.rs"]
mod tests;
