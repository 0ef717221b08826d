//! Waiting on one step pod through a watch (never a polling loop): until its
//! container ended, until its log exists, until it is scheduled, until it is gone.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, WatchEvent, WatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use tokio::time::Instant;

use super::AttemptState;
use super::feed::{self, Seen};
use super::state::{self, PodView, Trouble};
use crate::backend::{BackendError, StepExit};

/// What happened to the watched pod.
pub enum PodEvent {
    /// It exists, in this state.
    Present(Box<Pod>),
    /// It is gone; its last state when the watch saw it deleted.
    Gone(Option<Box<Pod>>),
}

/// The events of one pod by name, restarts of the watch included: a pod that is
/// not there when the watch (re)lists is reported gone.
pub fn watch_pod(
    api: &Api<Pod>,
    name: &str,
) -> BoxStream<'static, Result<PodEvent, watcher::Error>> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut seen = false;
    watcher(api.clone(), config)
        .default_backoff()
        .filter_map(move |event| {
            let out = match event {
                Ok(Event::Init) => {
                    seen = false;
                    None
                }
                Ok(Event::InitApply(pod) | Event::Apply(pod)) => {
                    seen = true;
                    Some(Ok(PodEvent::Present(Box::new(pod))))
                }
                Ok(Event::InitDone) if !seen => Some(Ok(PodEvent::Gone(None))),
                Ok(Event::InitDone) => None,
                Ok(Event::Delete(pod)) => Some(Ok(PodEvent::Gone(Some(Box::new(pod))))),
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(out)
        })
        .boxed()
}

/// [`watch_pod`], but first a plain watch from `resource_version` (the pod as it
/// was read): no list while it lasts. When it ends (its timeout, a resourceVersion
/// too old, any error) the listing watch takes over, so no change is missed.
pub fn watch_pod_from(
    api: &Api<Pod>,
    name: &str,
    resource_version: String,
) -> BoxStream<'static, Result<PodEvent, watcher::Error>> {
    let params = WatchParams::default().fields(&format!("metadata.name={name}"));
    let raw_api = api.clone();
    let raw = futures::stream::once(async move { raw_api.watch(&params, &resource_version).await })
        .filter_map(|opened| futures::future::ready(opened.ok()))
        .flatten()
        .take_while(|event| {
            let usable = matches!(
                event,
                Ok(WatchEvent::Added(_)
                    | WatchEvent::Modified(_)
                    | WatchEvent::Deleted(_)
                    | WatchEvent::Bookmark(_))
            );
            futures::future::ready(usable)
        })
        .filter_map(|event| {
            futures::future::ready(match event {
                Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                    Some(Ok(PodEvent::Present(Box::new(pod))))
                }
                Ok(WatchEvent::Deleted(pod)) => Some(Ok(PodEvent::Gone(Some(Box::new(pod))))),
                _ => None,
            })
        });
    raw.chain(watch_pod(api, name)).boxed()
}

fn watch_failed(step: &str, message: String) -> BackendError {
    BackendError::Failed {
        step: step.to_owned(),
        doing: "watch the step pod",
        message,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Until the attempt's container ended: its exit code, or why it never will
/// ([`BackendError::Lost`], or [`BackendError::CannotStart`] once it has waited for
/// an unfixable reason longer than `cannot_start_after`).
pub async fn wait_end(
    api: &Api<Pod>,
    attempt: &AttemptState,
    cannot_start_after: Duration,
) -> Result<StepExit, BackendError> {
    let step = attempt.step.as_str();
    let mut seen = attempt.watch(api);
    let mut trouble: Option<(Instant, Trouble)> = None;
    loop {
        let deadline = trouble
            .as_ref()
            .map(|(since, _)| *since + cannot_start_after);
        tokio::select! {
            now = feed::next(&mut seen) => {
                let pod = match now {
                    Seen::Nothing => continue,
                    Seen::Failed(message) => return Err(watch_failed(step, message)),
                    Seen::Present(pod) => pod,
                    Seen::Gone(last) => return gone(attempt, last.as_deref()),
                };
                match state::view(&pod, attempt.is_stopping()) {
                    PodView::Exited { exit_code, reason } => return Ok(StepExit { code: exit_code, reason }),
                    PodView::Lost { reason, message } => return Err(lost(step, reason, message)),
                    PodView::Pending { trouble: Some(now) } => {
                        let since = trouble.as_ref().map_or_else(Instant::now, |(since, _)| *since);
                        trouble = Some((since, now));
                    }
                    PodView::Pending { trouble: None } | PodView::Running => trouble = None,
                }
            }
            () = sleep_until(deadline) => {
                let message = trouble.map(|(_, t)| t).unwrap_or_else(|| Trouble { reason: "StartFailed", message: String::new() });
                return Err(BackendError::CannotStart {
                    step: step.to_owned(),
                    reason: message.reason,
                    message: format!("{} (pod {})", message.message, attempt.pod),
                });
            }
        }
    }
}

fn lost(step: &str, reason: &'static str, message: String) -> BackendError {
    BackendError::Lost {
        step: step.to_owned(),
        reason,
        message,
    }
}

/// The pod is gone: how it ended if its last state says, else lost (or stopped).
fn gone(attempt: &AttemptState, last: Option<&Pod>) -> Result<StepExit, BackendError> {
    let stopping = attempt.is_stopping();
    match last.map(|p| state::view(p, stopping)) {
        Some(PodView::Exited { exit_code, reason }) => Ok(StepExit {
            code: exit_code,
            reason,
        }),
        Some(PodView::Lost { reason, message }) => Err(lost(&attempt.step, reason, message)),
        _ if stopping => Ok((128 + 15).into()),
        _ => Err(lost(
            &attempt.step,
            "PodLost",
            format!(
                "the step pod {} was deleted before its container ended",
                attempt.pod
            ),
        )),
    }
}

/// Until the container started (its log exists): `true`; `false` if it never
/// will (the pod is gone or failed first, or waiting was abandoned).
pub async fn wait_log_ready(api: &Api<Pod>, attempt: &AttemptState) -> bool {
    let mut seen = attempt.watch(api);
    loop {
        let now = tokio::select! {
            now = feed::next(&mut seen) => now,
            () = attempt.abandoned.cancelled() => return false,
        };
        match now {
            Seen::Nothing => {}
            Seen::Gone(_) | Seen::Failed(_) => return false,
            Seen::Present(pod) => {
                if state::container_started(&pod) {
                    return true;
                }
                if matches!(state::view(&pod, false), PodView::Lost { .. }) {
                    return false;
                }
            }
        }
    }
}

/// Until a service's pod is Ready (its readiness probe passed): its IP. An
/// error once it ended or is gone first (the step's own end says why).
pub async fn ready_ip(api: &Api<Pod>, attempt: &AttemptState) -> Result<String, BackendError> {
    let not_up = |message: &str| BackendError::Failed {
        step: attempt.step.clone(),
        doing: "wait for the service to be up",
        message: message.to_owned(),
    };
    let mut seen = attempt.watch(api);
    loop {
        match feed::next(&mut seen).await {
            Seen::Nothing => {}
            Seen::Gone(_) => return Err(not_up("its pod is gone")),
            Seen::Failed(message) => return Err(not_up(&message)),
            Seen::Present(pod) if state::container_ended(&pod) => {
                return Err(not_up("it ended"));
            }
            Seen::Present(pod) => {
                if let Some(ip) = state::ready_ip(&pod) {
                    return Ok(ip.to_owned());
                }
            }
        }
    }
}

/// Until the attempt's container ended or its pod is gone (`true`), at most
/// `bound` (`false`). From the attempt's one watch: a log that ends costs no
/// request of its own.
pub async fn wait_finished(api: &Api<Pod>, attempt: &AttemptState, bound: Duration) -> bool {
    let mut seen = attempt.watch(api);
    let check = async {
        loop {
            match feed::next(&mut seen).await {
                Seen::Gone(_) => return true,
                Seen::Present(pod) if state::container_ended(&pod) => return true,
                Seen::Failed(_) => return false,
                Seen::Nothing | Seen::Present(_) => {}
            }
        }
    };
    tokio::time::timeout(bound, check).await.unwrap_or(false)
}

/// Until the pod is scheduled: its node; `None` if it is gone or `bound` passed.
pub async fn scheduled_node(api: &Api<Pod>, name: &str, bound: Duration) -> Option<String> {
    let mut events = watch_pod(api, name);
    let wait = async {
        while let Some(event) = events.next().await {
            match event {
                Ok(PodEvent::Gone(_)) => return None,
                Ok(PodEvent::Present(pod)) => {
                    if let Some(node) = state::node_of(&pod) {
                        return Some(node.to_owned());
                    }
                }
                Err(e) => tracing::warn!(error = %e, pod = name, "watch the step pod"),
            }
        }
        None
    };
    tokio::time::timeout(bound, wait).await.ok().flatten()
}

/// Until the pod is gone, at most `bound`: the exit code its container ended
/// with, if the watch saw it.
pub async fn until_gone(api: &Api<Pod>, name: &str, bound: Duration) -> Option<i32> {
    let mut events = watch_pod(api, name);
    let mut exit = None;
    let wait = async {
        while let Some(event) = events.next().await {
            match event {
                Ok(PodEvent::Present(pod)) => {
                    exit = state::exit_code(&pod).or(exit);
                }
                Ok(PodEvent::Gone(last)) => {
                    exit = last.as_deref().and_then(state::exit_code).or(exit);
                    return;
                }
                Err(e) => tracing::warn!(error = %e, pod = name, "watch the step pod"),
            }
        }
    };
    if tokio::time::timeout(bound, wait).await.is_err() {
        tracing::warn!(
            pod = name,
            ?bound,
            "the step pod is still there after its grace period"
        );
    }
    exit
}
