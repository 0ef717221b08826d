//! One watch per step attempt (unless the runner's shared watch sees its pod,
//! [`super::pod_hub`]), shared: waiting for its log, for its service to
//! be up and for its end all read the latest state of its pod from one watch
//! (one watch request per attempt, not one per waiter; it starts at the
//! resourceVersion of the pod as created or found, so it lists nothing, unless
//! it has to start again).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::watch::{PodEvent, watch_pod, watch_pod_from};

/// Consecutive watch errors (after the watcher's own backoff) before giving up.
const MAX_WATCH_ERRORS: u32 = 10;

/// What the attempt's watch saw last.
#[derive(Clone, Debug)]
pub enum Seen {
    /// Nothing yet (the watch is listing).
    Nothing,
    Present(Arc<Pod>),
    /// Gone; its last state if the watch saw it deleted. Final.
    Gone(Option<Arc<Pod>>),
    /// The watch kept failing, or ended. Final.
    Failed(String),
}

/// The watch's task (stopped with the attempt; none for a reader of the
/// runner's shared watch) and its latest state.
#[derive(Debug)]
pub struct PodFeed {
    task: Option<JoinHandle<()>>,
    latest: watch::Receiver<Seen>,
}

impl Drop for PodFeed {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl PodFeed {
    /// Start watching pod `name`; from `origin` (the pod as last read) when known.
    pub fn start(api: &Api<Pod>, name: &str, origin: Option<Arc<Pod>>) -> Self {
        let from = origin
            .as_ref()
            .and_then(|p| p.metadata.resource_version.clone());
        let (initial, mut events) = match (origin, from) {
            (Some(pod), Some(rv)) => (Seen::Present(pod), watch_pod_from(api, name, rv)),
            _ => (Seen::Nothing, watch_pod(api, name)),
        };
        let (tx, latest) = watch::channel(initial);
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            let mut errors = 0;
            let last = loop {
                let seen = match events.next().await {
                    None => Seen::Failed("the watch ended".into()),
                    Some(Ok(PodEvent::Present(pod))) => Seen::Present(Arc::from(pod)),
                    Some(Ok(PodEvent::Gone(last))) => Seen::Gone(last.map(Arc::from)),
                    Some(Err(e)) => {
                        errors += 1;
                        tracing::warn!(error = %e, pod = %name, "watch the step pod");
                        if errors < MAX_WATCH_ERRORS {
                            continue;
                        }
                        Seen::Failed(e.to_string())
                    }
                };
                if matches!(seen, Seen::Gone(_) | Seen::Failed(_)) {
                    break seen;
                }
                errors = 0;
                tx.send_replace(seen);
            };
            tx.send_replace(last);
        });
        Self {
            task: Some(task),
            latest,
        }
    }

    /// A feed from a reader of the runner's shared watch ([`super::pod_hub`]).
    pub fn shared(latest: watch::Receiver<Seen>) -> Self {
        Self { task: None, latest }
    }

    /// The pod as last seen (present, or as it was deleted).
    pub fn last_pod(&self) -> Option<Arc<Pod>> {
        match &*self.latest.borrow() {
            Seen::Present(pod) | Seen::Gone(Some(pod)) => Some(pod.clone()),
            _ => None,
        }
    }

    /// A reader of the latest state, which it has not seen yet.
    pub fn subscribe(&self) -> watch::Receiver<Seen> {
        let mut reader = self.latest.clone();
        reader.mark_changed();
        reader
    }
}

/// The next state `reader` has not seen; `Failed` once the feed is gone.
pub async fn next(reader: &mut watch::Receiver<Seen>) -> Seen {
    match reader.changed().await {
        Ok(()) => reader.borrow_and_update().clone(),
        Err(_) => {
            // The task ended: its last state, which is final, stays readable.
            let last = reader.borrow_and_update().clone();
            match last {
                Seen::Gone(_) | Seen::Failed(_) => last,
                _ => Seen::Failed("the watch of the step pod stopped".into()),
            }
        }
    }
}
