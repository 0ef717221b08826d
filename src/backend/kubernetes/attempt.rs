//! What the backend knows of one step attempt (one pod): read back from the pod's
//! labels and annotations, so a restarted runner knows it as well as the one that
//! created it, plus what it learns while watching it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use k8s_openapi::api::core::v1::{EnvVar, Pod};
use kube::api::Api;
use tokio::sync::OnceCell;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::feed::{PodFeed, Seen};
use super::outputs::Frame;
use super::pod;
use super::pod_hub::PodHub;
use crate::backend::BackendError;
use crate::backend::mask::Patterns;

#[derive(Debug)]
pub(crate) struct AttemptState {
    pub(super) step: String,
    pub(super) pod: String,
    pub(super) retry: u32,
    pub(super) nonce: String,
    pub(super) log_offset: u64,
    /// It runs its image's own entrypoint, unwrapped: its outputs are the
    /// termination message, not a frame in its log.
    pub(super) unwrapped: bool,
    /// Baton deletes the pod (stop): its end is expected, not a loss.
    pub(super) stopping: AtomicBool,
    /// How it ended when stopped, once known.
    pub(super) stopped_exit: Mutex<Option<i32>>,
    /// The outputs frame, once a tail read the complete log.
    pub(super) frame: Mutex<Option<Frame>>,
    /// Cancelled when waiting gave up on the pod (it cannot start): tails end.
    pub(super) abandoned: CancellationToken,
    /// The values of the pod's `secretKeyRef`s, read once its container started:
    /// what its log and outputs are masked of.
    pub(super) secrets: OnceCell<Patterns>,
    /// The step container's `env` (a pod's spec never changes): where its
    /// `secretKeyRef`s are found without reading the pod again.
    pub(super) env: Vec<EnvVar>,
    /// The one watch of its pod, started by the first waiter.
    feed: OnceLock<PodFeed>,
    /// The runner's shared watch, which sees its pod if the runner created it.
    hub: Option<Arc<PodHub>>,
    /// The pod as this attempt was found or created: the watch starts from it
    /// (its resourceVersion) instead of listing it again.
    origin: Mutex<Option<Arc<Pod>>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is one read or one assignment: never half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AttemptState {
    pub(super) fn from_pod(pod: &Pod) -> Option<Self> {
        let labels = pod.metadata.labels.as_ref()?;
        let annotations = pod.metadata.annotations.as_ref()?;
        Some(Self {
            step: labels.get(pod::LABEL_STEP)?.clone(),
            pod: pod.metadata.name.clone()?,
            retry: labels.get(pod::LABEL_RETRY)?.parse().ok()?,
            nonce: annotations.get(pod::ANNOTATION_NONCE)?.clone(),
            log_offset: annotations
                .get(pod::ANNOTATION_LOG_OFFSET)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            unwrapped: pod::is_unwrapped(pod),
            stopping: AtomicBool::new(false),
            stopped_exit: Mutex::new(None),
            frame: Mutex::new(None),
            abandoned: CancellationToken::new(),
            secrets: OnceCell::new(),
            env: pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .filter(|c| c.name == pod::CONTAINER)
                .flat_map(|c| c.env.iter().flatten())
                .cloned()
                .collect(),
            feed: OnceLock::new(),
            hub: None,
            origin: Mutex::new(Some(Arc::new(pod.clone()))),
        })
    }

    pub(super) fn with_hub(mut self, hub: Option<Arc<PodHub>>) -> Self {
        self.hub = hub;
        self
    }

    /// A reader of its pod's latest state, from the runner's shared watch if
    /// it sees the pod, else from the attempt's own watch.
    pub(super) fn watch(&self, api: &Api<Pod>) -> watch::Receiver<Seen> {
        self.feed
            .get_or_init(|| {
                let origin = lock(&self.origin).take();
                let shared = (self.hub.as_ref())
                    .zip(origin.as_ref())
                    .and_then(|(hub, pod)| hub.subscribe(pod));
                match shared {
                    Some(reader) => PodFeed::shared(reader),
                    None => PodFeed::start(api, &self.pod, origin),
                }
            })
            .subscribe()
    }

    /// Its pod as the attempt's watch saw it last (`None` before the watch starts
    /// or once it failed).
    pub(super) fn last_seen(&self) -> Option<Arc<Pod>> {
        self.feed.get()?.last_pod()
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// 128 bits of randomness, hex: the outputs frame nonce of one attempt.
pub(super) fn new_nonce(step: &str) -> Result<String, BackendError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| BackendError::Failed {
        step: step.to_owned(),
        doing: "draw the outputs nonce",
        message: e.to_string(),
    })?;
    Ok(hex::encode(bytes))
}
