//! Workspace helper pods: a pod of the tools image that mounts the Job's
//! workspace claim on the Job's node and holds, while the runner execs a
//! `baton workspace` verb in it (unpack the content, snapshot the tree before a
//! collecting step, pack what the step changed). Archives go over the exec
//! stream's stdin and stdout: the pod needs no credential, no Service, no
//! network path to the runner, and user code never runs in it.
//!
//! One pod per operation, deleted after it. One left behind (the runner died)
//! carries the Job's labels and owner: it goes with the Job, and ends by itself
//! after [`HOLD_SECONDS`].

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, AttachParams};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::JobTarget;
use super::pod::{self, WORKSPACE_DIR};
use super::shape;
use super::watch::{PodEvent, watch_pod};
use crate::domain::restricted;

/// Marks a workspace helper pod (its value: what it is for). Step discovery
/// skips pods that carry it.
pub const LABEL_HELPER: &str = "baton.dev/workspace-helper";
/// The helper's one container.
const CONTAINER: &str = "workspace";
/// Where the tools image keeps `baton`.
const BATON_IN_IMAGE: &str = "/usr/local/bin/baton";
/// How long a helper pod holds if nobody deletes it.
pub const HOLD_SECONDS: i64 = 3600;
/// Buffered per exec stream (stdin, stdout): the largest websocket frame sent.
const STREAM_BUF: usize = 256 * 1024;
/// Of a failed verb's stderr, this much is kept for its message.
const STDERR_KEPT: usize = 16 * 1024;

/// Whether `pod` is a workspace helper (not a step pod).
pub fn is_helper(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_HELPER))
}

/// The helper pod for `purpose` (`seed`, `snapshot`, `changes`), named with
/// `nonce` so a second one never meets a leftover. `node` pins it to the Job's
/// node, as every step pod of a Job with a workspace is.
pub fn helper_pod(target: &JobTarget, purpose: &str, nonce: &str, node: Option<&str>) -> Pod {
    let template = shape::template(target.pod_template.as_ref(), None);
    let readable = pod::dns_label_prefix(&target.job_name, 63 - purpose.len() - nonce.len() - 2);
    let mut labels = pod::job_labels(target);
    labels.insert(LABEL_HELPER.into(), purpose.into());
    let (volumes, mounts) = pod::workspace_volume(target).unzip();
    let container = Container {
        name: CONTAINER.into(),
        image: Some(target.tools_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![
            BATON_IN_IMAGE.into(),
            "workspace".into(),
            "hold".into(),
            "--for".into(),
            HOLD_SECONDS.to_string(),
        ]),
        volume_mounts: mounts.map(|m| vec![m]),
        security_context: Some(restricted::container()),
        ..Default::default()
    };
    let mut spec = PodSpec {
        active_deadline_seconds: Some(HOLD_SECONDS + 60),
        termination_grace_period_seconds: Some(5),
        containers: vec![container],
        volumes: volumes.map(|v| vec![v]),
        ..pod::base_spec(target)
    };
    shape::place(&mut spec, &template, node);
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{readable}-{purpose}-{nonce}")),
            namespace: Some(target.namespace.clone()),
            labels: Some(shape::metadata(template.labels.as_ref(), labels)),
            annotations: template.annotations.clone(),
            owner_references: Some(vec![pod::owner_reference(target)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The command line of a verb, as the helper runs it.
pub fn verb(args: &[&str]) -> Vec<String> {
    [BATON_IN_IMAGE, "workspace"]
        .iter()
        .chain(args)
        .map(|s| (*s).to_owned())
        .collect()
}

/// The workspace directory, as verbs name it.
pub const DIR: &str = WORKSPACE_DIR;

/// Until the helper's container runs; why not, if it will not (gone, ended,
/// an image that cannot be pulled) or `bound` passed.
pub async fn running(pods: &Api<Pod>, name: &str, bound: Duration) -> Result<(), String> {
    let mut events = watch_pod(pods, name);
    let mut last = String::from("not scheduled");
    let wait = async {
        while let Some(event) = events.next().await {
            let pod = match event {
                Ok(PodEvent::Present(pod)) => pod,
                Ok(PodEvent::Gone(_)) => return Err("it was deleted".to_owned()),
                Err(e) => {
                    tracing::warn!(error = %e, pod = name, "watch the workspace helper pod");
                    continue;
                }
            };
            match why_not_running(&pod) {
                Wait::Running => return Ok(()),
                Wait::Never(why) => return Err(why),
                Wait::Yet(why) => last = why,
            }
        }
        Err("its watch ended".to_owned())
    };
    match tokio::time::timeout(bound, wait).await {
        Ok(result) => result,
        Err(_) => Err(format!("not running after {}s: {last}", bound.as_secs())),
    }
}

enum Wait {
    Running,
    Yet(String),
    Never(String),
}

fn why_not_running(pod: &Pod) -> Wait {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed") {
        return Wait::Never(format!("it ended ({phase}) before it was used"));
    }
    let container = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first());
    let state = container.and_then(|c| c.state.as_ref());
    if state.is_some_and(|s| s.running.is_some()) {
        return Wait::Running;
    }
    match state.and_then(|s| s.waiting.as_ref()) {
        Some(w) => {
            let reason = w.reason.clone().unwrap_or_default();
            let why = format!("{reason}: {}", w.message.clone().unwrap_or_default());
            if matches!(
                reason.as_str(),
                "ErrImagePull"
                    | "ImagePullBackOff"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
            ) {
                Wait::Never(why)
            } else {
                Wait::Yet(why)
            }
        }
        None => Wait::Yet(format!("{phase}, not running yet")),
    }
}

/// Exec `command` in the helper: `input` to its stdin (closed at its end), its
/// stdout into `output`. A verb that fails is an error with its stderr.
pub async fn exec(
    pods: &Api<Pod>,
    name: &str,
    command: Vec<String>,
    input: Option<impl AsyncRead + Unpin>,
    output: &mut (impl AsyncWrite + Unpin),
) -> Result<(), String> {
    let params = AttachParams::default()
        .container(CONTAINER)
        .stdin(input.is_some())
        .stdout(true)
        .stderr(true)
        // kube-rs buffers 1 KiB per stream by default: a 100 MB archive would
        // cross as 100,000 websocket frames.
        .max_stdin_buf_size(STREAM_BUF)
        .max_stdout_buf_size(STREAM_BUF);
    let mut process = pods
        .exec(name, command, &params)
        .await
        .map_err(|e| format!("exec in pod {name}: {e}"))?;
    let status = process.take_status();
    let (stdout, stderr) = (process.stdout(), process.stderr());
    let (Some(status), Some(mut stdout), Some(stderr)) = (status, stdout, stderr) else {
        return Err("the exec stream lacks stdout, stderr or its status".into());
    };
    let stdin = process.stdin();
    let feed = async move {
        if let (Some(mut stdin), Some(mut input)) = (stdin, input) {
            tokio::io::copy(&mut input, &mut stdin).await?;
            stdin.shutdown().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let drain = async {
        let copied = tokio::io::copy(&mut stdout, output).await;
        output.flush().await.and(copied)
    };
    let (fed, drained, errors) = tokio::join!(feed, drain, kept(stderr));
    let status = status.await;
    let _ = process.join().await;
    let failed = status
        .as_ref()
        .is_some_and(|s| s.status.as_deref() != Some("Success"));
    if failed || status.is_none() {
        let said = errors.trim();
        let why = match (said.is_empty(), status) {
            (false, _) => said.to_owned(),
            (true, Some(s)) => s.message.unwrap_or_else(|| "failed".into()),
            (true, None) => "the exec stream ended without a status".into(),
        };
        return Err(why);
    }
    fed.map_err(|e| format!("send to the helper: {e}"))?;
    drained.map_err(|e| format!("read from the helper: {e}"))?;
    Ok(())
}

/// All of `stderr` read (so the stream never stalls), its start kept.
async fn kept(mut stderr: impl AsyncRead + Unpin) -> String {
    let (mut text, mut buf) = (Vec::new(), vec![0u8; 8192]);
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = STDERR_KEPT.saturating_sub(text.len());
        text.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus, PodStatus,
    };

    use super::*;
    use crate::crd::Step;
    use crate::crd::artifacts::Collect;
    use crate::crd::content::Content;
    use crate::crd::job::{JobSpec, Workspace};

    fn target() -> JobTarget {
        let mut t = JobTarget::new("ns", "build", "0b5c6c5e-1111-2222-3333-444455556666");
        t.workspace = Some(Workspace::default());
        t
    }

    #[test]
    fn a_helper_mounts_the_workspace_on_the_jobs_node_as_the_steps_user() {
        let mut target = target();
        target.run_as_user = 4242;
        let pod = helper_pod(&target, "changes", "a1b2c3d4", Some("node-7"));
        assert_eq!(pod.metadata.name.as_deref(), Some("build-changes-a1b2c3d4"));
        assert!(is_helper(&pod));
        assert!(
            pod::is_ours(&pod, &target),
            "owned by the Job: it goes with it"
        );
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[pod::LABEL_JOB_UID], target.job_uid);
        assert!(
            !labels.contains_key(pod::LABEL_STEP),
            "never taken for a step pod"
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.security_context.unwrap().run_as_user, Some(4242));
        assert_eq!(spec.automount_service_account_token, Some(false));
        let c = &spec.containers[0];
        assert_eq!(c.command.as_ref().unwrap()[..3], verb(&["hold"])[..]);
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, DIR);
        let claim = spec.volumes.unwrap()[0]
            .persistent_volume_claim
            .clone()
            .unwrap();
        assert_eq!(claim.claim_name, "build-workspace");
        let pin = spec.affinity.unwrap().node_affinity.unwrap();
        let terms = pin
            .required_during_scheduling_ignored_during_execution
            .unwrap();
        let fields = terms.node_selector_terms[0].match_fields.clone().unwrap();
        assert_eq!(
            fields[0].values.as_deref(),
            Some(&["node-7".to_owned()][..])
        );
        assert_eq!(c.security_context, Some(restricted::container()));
    }

    #[test]
    fn a_long_job_name_still_makes_a_dns_label() {
        let mut target = target();
        target.job_name = format!("{}.x", "a".repeat(80));
        let name = helper_pod(&target, "snapshot", "00ff00ff", None)
            .metadata
            .name
            .unwrap();
        assert!(name.len() <= 63, "{name}");
        assert!(
            name.ends_with("-snapshot-00ff00ff") && !name.contains('.'),
            "{name}"
        );
    }

    fn with_state(phase: &str, state: ContainerState) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    state: Some(state),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn waiting(reason: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: Some("why".into()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn waiting_for_a_helper_ends_on_what_will_not_fix_itself() {
        let running = ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        };
        assert!(matches!(
            why_not_running(&with_state("Running", running)),
            Wait::Running
        ));
        assert!(matches!(
            why_not_running(&with_state("Pending", waiting("ContainerCreating"))),
            Wait::Yet(_)
        ));
        assert!(matches!(why_not_running(&Pod::default()), Wait::Yet(_)));
        for never in ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"] {
            let Wait::Never(why) = why_not_running(&with_state("Pending", waiting(never))) else {
                panic!("{never}: waits on");
            };
            assert!(why.starts_with(never), "{why}");
        }
        let ended = with_state("Failed", ContainerState::default());
        assert!(matches!(why_not_running(&ended), Wait::Never(_)));
    }

    #[test]
    fn content_or_a_collecting_step_brings_a_workspace() {
        let plain = JobSpec {
            steps: vec![Step::default()],
            ..Default::default()
        };
        let t = JobTarget::new("ns", "j", "u");
        assert_eq!(t.clone().with_spec(&plain).workspace, None);
        let content = JobSpec {
            content: Some(Content {
                digest: format!("sha256:{}", "0".repeat(64)),
                size: 1,
            }),
            ..plain.clone()
        };
        assert_eq!(
            t.clone().with_spec(&content).workspace,
            Some(Workspace::default())
        );
        let collecting = JobSpec {
            steps: vec![Step {
                collect: Some(Collect::Changes),
                ..Default::default()
            }],
            ..plain.clone()
        };
        assert_eq!(
            t.clone().with_spec(&collecting).workspace,
            Some(Workspace::default())
        );
        let sized = JobSpec {
            workspace: Some(Workspace {
                size: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                    "5Gi".into(),
                )),
                ..Default::default()
            }),
            ..content
        };
        assert_eq!(t.with_spec(&sized).workspace, sized.workspace);
    }
}
