//! What a step pod's object says about the step: a pure reading of its status,
//! shared by `wait_step`, `tail_step` and `discover`.

use crate::crd::reasons::reason;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, Pod,
};

use super::pod::{CONTAINER, INIT_CONTAINER};

/// Where a step attempt is, as its pod tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodView {
    /// Not started yet. `trouble` is set while it waits for a reason that will not
    /// fix itself (an image that cannot be pulled, a missing Secret).
    Pending { trouble: Option<Trouble> },
    /// The container runs.
    Running,
    /// The container ended on its own, or because Baton stopped it; `reason`
    /// from its terminated state when it says more than the code
    /// ([`terminated_reason`]).
    Exited {
        exit_code: i32,
        reason: Option<&'static str>,
    },
    /// The pod was lost to infrastructure or to someone else: evicted, preempted,
    /// deleted, its node gone. The step did not fail on its own.
    Lost {
        reason: &'static str,
        message: String,
    },
}

/// Why a pending container cannot start, with the step reason it fails with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trouble {
    pub reason: &'static str,
    pub message: String,
}

/// Read `pod`. `stopping`: Baton itself deleted it (stop), so its deletion and a
/// signal exit are the expected end, not a loss.
pub fn view(pod: &Pod, stopping: bool) -> PodView {
    let status = pod.status.as_ref();
    let state = container_state(pod);
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let disruption = disruption(pod);
    let pod_reason = status.and_then(|s| s.reason.as_deref());
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");

    if let Some(terminated) = state.and_then(|s| s.terminated.as_ref()) {
        let code = terminated.exit_code;
        let exited = PodView::Exited {
            exit_code: code,
            reason: terminated_reason(terminated, !super::pod::is_unwrapped(pod)),
        };
        if stopping {
            return exited;
        }
        if pod_reason == Some("Evicted") {
            return lost(reason::EVICTED, evicted_message(pod));
        }
        // Killed (non-zero) while someone else deleted or disrupted the pod: lost.
        if code != 0 && (deleting || disruption.is_some()) {
            return match disruption {
                Some(reason) => lost(
                    reason::POD_LOST,
                    format!("the step pod was disrupted ({reason}) while it ran"),
                ),
                None => lost(
                    reason::POD_LOST,
                    "the step pod was deleted while it ran".into(),
                ),
            };
        }
        return exited;
    }
    if let Some(code) = init_failure(pod) {
        // The entrypoint could not be put in place: the step cannot run.
        return PodView::Exited {
            exit_code: code,
            reason: Some(reason::CONTAINER_CANNOT_RUN),
        };
    }
    if phase == "Failed" || phase == "Succeeded" {
        return match pod_reason {
            Some("Evicted") => lost(reason::EVICTED, evicted_message(pod)),
            Some(other) => lost(
                reason::POD_LOST,
                format!(
                    "the step pod failed ({other}) before its container ended: {}",
                    status_message(pod)
                ),
            ),
            None => lost(
                reason::POD_LOST,
                "the step pod failed before its container ended".into(),
            ),
        };
    }
    if state.and_then(|s| s.running.as_ref()).is_some() {
        return PodView::Running;
    }
    let waiting = |s: Option<&ContainerState>| s.and_then(|s| s.waiting.as_ref()).and_then(trouble);
    PodView::Pending {
        trouble: waiting(state).or_else(|| waiting(init_state(pod))),
    }
}

/// The exit code of an init container that ended in failure.
fn init_failure(pod: &Pod) -> Option<i32> {
    let terminated = init_state(pod)?.terminated.as_ref()?;
    (terminated.exit_code != 0).then_some(terminated.exit_code)
}

/// A terminated container's reason as a step reason, when it says more than the
/// exit code: killed for memory (`OOMKilled`), or a container the runtime could
/// not run (`ContainerCannotRun`: no such command, not executable). `Error` and
/// `Completed` merely restate the code; the executor names those.
///
/// `wrapped`: `baton-entrypoint` ran the step, and marks its termination message
/// when the container's memory cgroup killed a process, which the runtime's own
/// `OOMKilled` may miss (its OOM event races the exit).
pub fn terminated_reason(
    terminated: &ContainerStateTerminated,
    wrapped: bool,
) -> Option<&'static str> {
    let code = terminated.exit_code;
    let marked =
        || wrapped && code != 0 && terminated.message.as_deref().map(str::trim) == Some(OOM_MARKER);
    match terminated.reason.as_deref() {
        Some("OOMKilled") => Some(reason::OOM_KILLED),
        Some("ContainerCannotRun" | "StartError") if code != 0 => {
            Some(reason::CONTAINER_CANNOT_RUN)
        }
        _ if marked() => Some(reason::OOM_KILLED),
        _ => None,
    }
}

/// What `baton-entrypoint` writes as the termination message of a step whose
/// container had a process killed for memory (`OOM_MARKER` in its crate).
const OOM_MARKER: &str = "OOMKilled";

fn lost(reason: &'static str, message: String) -> PodView {
    PodView::Lost { reason, message }
}

fn status_message(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

fn evicted_message(pod: &Pod) -> String {
    format!("the step pod was evicted: {}", status_message(pod))
}

/// The reason of a true `DisruptionTarget` condition (eviction, preemption,
/// taint manager, pod GC of a lost node, kubelet termination).
fn disruption(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        .map(|c| {
            c.reason
                .clone()
                .unwrap_or_else(|| "DisruptionTarget".into())
        })
}

/// Waiting reasons that will not fix themselves soon.
fn trouble(waiting: &ContainerStateWaiting) -> Option<Trouble> {
    let reason = waiting.reason.as_deref()?;
    let message = waiting.message.clone().unwrap_or_default();
    let step_reason = match reason {
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
            reason::IMAGE_PULL_FAILED
        }
        "CreateContainerConfigError" if message.contains("secret") => "SecretNotFound",
        "CreateContainerConfigError" => "InvalidEnv",
        "CreateContainerError" | "RunContainerError" => "StartFailed",
        _ => return None,
    };
    Some(Trouble {
        reason: step_reason,
        message: format!("{reason}: {message}"),
    })
}

fn container_state(pod: &Pod) -> Option<&ContainerState> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()
}

fn init_state(pod: &Pod) -> Option<&ContainerState> {
    pod.status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == INIT_CONTAINER)?
        .state
        .as_ref()
}

/// The exit code of the step container, once it ended.
pub fn exit_code(pod: &Pod) -> Option<i32> {
    container_state(pod)?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

/// Whether the step container ended (its log is complete).
pub fn container_ended(pod: &Pod) -> bool {
    exit_code(pod).is_some()
}

/// Whether the step container started (its log exists).
pub fn container_started(pod: &Pod) -> bool {
    container_state(pod).is_some_and(|s| s.running.is_some() || s.terminated.is_some())
}

/// The pod's IP once its `Ready` condition is true.
pub fn ready_ip(pod: &Pod) -> Option<&str> {
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready {
        status.pod_ip.as_deref()
    } else {
        None
    }
}

/// The node the pod was scheduled to.
pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn with_container(phase: &str, state: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "metadata": { "name": "p" },
            "status": {
                "phase": phase,
                "containerStatuses": [{
                    "name": "step", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0, "state": state
                }]
            }
        })
    }

    #[test]
    fn pending_running_exited() {
        assert_eq!(
            view(&pod(serde_json::json!({"metadata": {"name": "p"}})), false),
            PodView::Pending { trouble: None }
        );
        let creating = with_container(
            "Pending",
            serde_json::json!({"waiting": {"reason": "ContainerCreating"}}),
        );
        assert_eq!(
            view(&pod(creating), false),
            PodView::Pending { trouble: None }
        );
        let running = with_container("Running", serde_json::json!({"running": {}}));
        assert_eq!(view(&pod(running), false), PodView::Running);
        let done = with_container("Failed", serde_json::json!({"terminated": {"exitCode": 3}}));
        assert_eq!(
            view(&pod(done), false),
            PodView::Exited {
                exit_code: 3,
                reason: None
            }
        );
    }

    #[test]
    fn the_init_container_is_read_too() {
        let pull = serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
            "initContainerStatuses": [{"name": "baton-init", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull", "message": "tools image gone"}}}],
            "containerStatuses": [{"name": "step", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}}}]}});
        match view(&pod(pull), false) {
            PodView::Pending { trouble: Some(t) } => {
                assert_eq!(t.reason, "ImagePullFailed");
                assert!(t.message.contains("tools image gone"));
            }
            other => panic!("{other:?}"),
        }
        let failed = serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Failed",
            "initContainerStatuses": [{"name": "baton-init", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1}}}]}});
        assert_eq!(
            view(&pod(failed), false),
            PodView::Exited {
                exit_code: 1,
                reason: Some("ContainerCannotRun")
            }
        );
    }

    #[test]
    fn image_and_config_trouble() {
        for (reason, message, want) in [
            ("ErrImagePull", "not found", "ImagePullFailed"),
            ("ImagePullBackOff", "back-off", "ImagePullFailed"),
            (
                "CreateContainerConfigError",
                "secret \"creds\" not found",
                "SecretNotFound",
            ),
            (
                "CreateContainerConfigError",
                "couldn't find key x",
                "InvalidEnv",
            ),
        ] {
            let p = with_container(
                "Pending",
                serde_json::json!({"waiting": {"reason": reason, "message": message}}),
            );
            match view(&pod(p), false) {
                PodView::Pending { trouble: Some(t) } => {
                    assert_eq!(t.reason, want);
                    assert!(t.message.contains(message));
                }
                other => panic!("{reason}: {other:?}"),
            }
        }
    }

    #[test]
    fn deleted_by_someone_else_is_lost_unless_baton_stopped_it() {
        let mut p = with_container(
            "Failed",
            serde_json::json!({"terminated": {"exitCode": 143}}),
        );
        p["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z".into();
        let p = pod(p);
        assert!(matches!(
            view(&p, false),
            PodView::Lost {
                reason: "PodLost",
                ..
            }
        ));
        assert_eq!(
            view(&p, true),
            PodView::Exited {
                exit_code: 143,
                reason: None
            }
        );

        // It finished cleanly within its grace period: that is a result.
        let mut ok = with_container(
            "Succeeded",
            serde_json::json!({"terminated": {"exitCode": 0}}),
        );
        ok["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z".into();
        assert_eq!(
            view(&pod(ok), false),
            PodView::Exited {
                exit_code: 0,
                reason: None
            }
        );

        // Still running while being deleted: wait for how it ends.
        let mut going = with_container("Running", serde_json::json!({"running": {}}));
        going["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z".into();
        assert_eq!(view(&pod(going), false), PodView::Running);
    }

    #[test]
    fn evicted_and_disrupted_pods_are_lost() {
        let mut p = with_container(
            "Failed",
            serde_json::json!({"terminated": {"exitCode": 137}}),
        );
        p["status"]["reason"] = "Evicted".into();
        p["status"]["message"] = "The node was low on resource: memory.".into();
        match view(&pod(p), false) {
            PodView::Lost { reason, message } => {
                assert_eq!(reason, "Evicted");
                assert!(message.contains("low on resource"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let mut p = with_container(
            "Failed",
            serde_json::json!({"terminated": {"exitCode": 137}}),
        );
        p["status"]["conditions"] = serde_json::json!([{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]);
        assert!(matches!(
            view(&pod(p), false),
            PodView::Lost {
                reason: "PodLost",
                ..
            }
        ));

        // Rejected by the node before the container ran.
        let p = pod(
            serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Failed", "reason": "NodeAffinity", "message": "node changed"}}),
        );
        assert!(matches!(
            view(&p, false),
            PodView::Lost {
                reason: "PodLost",
                ..
            }
        ));
    }

    #[test]
    fn an_oom_kill_is_the_step_failing_on_its_own() {
        let p = with_container(
            "Failed",
            serde_json::json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
        );
        assert_eq!(
            view(&pod(p), false),
            PodView::Exited {
                exit_code: 137,
                reason: Some("OOMKilled")
            }
        );
    }

    /// The mark the backend believes is the one the entrypoint writes.
    #[test]
    fn the_oom_mark_is_the_entrypoints() {
        assert_eq!(OOM_MARKER, baton_entrypoint::OOM_MARKER);
    }

    /// An unwrapped step's termination message is its outputs, never a marker.
    #[test]
    fn only_the_entrypoint_marks_an_oom_kill() {
        let mut p = with_container(
            "Failed",
            serde_json::json!({"terminated": {"exitCode": 137, "reason": "Error", "message": "OOMKilled"}}),
        );
        p["spec"] = serde_json::json!({"containers": [{"name": CONTAINER,
            "terminationMessagePath": super::super::pod::OUTPUT_FILE}]});
        assert_eq!(
            view(&pod(p), false),
            PodView::Exited {
                exit_code: 137,
                reason: None
            }
        );
    }

    /// Terminated states as the kubelet writes them → the step's reason (None:
    /// the executor names it from the exit code, `Completed` or `Error`).
    #[test]
    fn terminated_reasons() {
        let cases = [
            (
                serde_json::json!({"exitCode": 0, "reason": "Completed"}),
                None,
            ),
            (serde_json::json!({"exitCode": 1, "reason": "Error"}), None),
            (serde_json::json!({"exitCode": 2}), None),
            (
                serde_json::json!({"exitCode": 137, "reason": "OOMKilled"}),
                Some("OOMKilled"),
            ),
            (
                serde_json::json!({"exitCode": 128, "reason": "ContainerCannotRun",
                    "message": "exec: \"nope\": executable file not found in $PATH"}),
                Some("ContainerCannotRun"),
            ),
            (
                serde_json::json!({"exitCode": 128, "reason": "StartError"}),
                Some("ContainerCannotRun"),
            ),
            // The runtime's OOM event lost the race; baton-entrypoint saw the kill.
            (
                serde_json::json!({"exitCode": 137, "reason": "Error", "message": "OOMKilled\n"}),
                Some("OOMKilled"),
            ),
            // A step that succeeded despite a killed child did not fail for memory.
            (
                serde_json::json!({"exitCode": 0, "reason": "Completed", "message": "OOMKilled"}),
                None,
            ),
            (
                serde_json::json!({"exitCode": 137, "reason": "Error", "message": "killed"}),
                None,
            ),
        ];
        for (terminated, want) in cases {
            let p = with_container("Failed", serde_json::json!({ "terminated": terminated }));
            let exit_code = p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
                .as_i64()
                .and_then(|c| i32::try_from(c).ok())
                .unwrap();
            assert_eq!(
                view(&pod(p), false),
                PodView::Exited {
                    exit_code,
                    reason: want
                },
                "{terminated}"
            );
        }
    }
}
