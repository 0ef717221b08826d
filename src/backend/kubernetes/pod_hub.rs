//! One watch per namespace over the step pods this runner created, shared by
//! every attempt it waits on, instead of one watch request per step pod.
//!
//! Step pods carry the runner's name ([`LABEL_RUNNER`]); the watch selects
//! that label, so it sees this runner's pods only. A pod created by another
//! runner (a Job handed over) or by a Baton without the label gets its own
//! watch as before ([`super::feed::PodFeed`]). The watch lists once, then
//! follows; what it missed while down comes from the watcher's relist, in
//! which a pod not listed any more is reported gone ([`board`]). A waiter on a
//! pod the watch never shows is answered with a read after a few seconds.
//! A namespace's watch nobody waited on for [`LINGER`] is stopped the next
//! time the hub is used; so is one whose task ended, and it starts again.

mod board;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::attempt::lock;
use super::feed::Seen;
use super::pod::{self, LABEL_RUNNER};
use board::Board;

/// A namespace's watch with no waiters stays up this long, for the next Job.
const LINGER: Duration = Duration::from_secs(300);

/// The runner's shared watches of its step pods, by namespace.
pub struct PodHub {
    client: kube::Client,
    /// The value of [`LABEL_RUNNER`] on this runner's step pods.
    label: String,
    namespaces: Mutex<HashMap<String, Arc<Namespace>>>,
}

impl PodHub {
    /// The hub of runner `runner`.
    pub fn new(client: kube::Client, runner: &str) -> Self {
        Self {
            client,
            label: pod::label_value(runner),
            namespaces: Mutex::default(),
        }
    }

    /// The value of [`LABEL_RUNNER`] on this runner's step pods.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// A reader of the latest state of `origin` (a pod as read or created), if
    /// it carries this runner's label; `None` for a pod the hub does not see.
    pub fn subscribe(&self, origin: &Arc<Pod>) -> Option<watch::Receiver<Seen>> {
        let labels = origin.metadata.labels.as_ref()?;
        if labels.get(LABEL_RUNNER) != Some(&self.label) {
            return None;
        }
        let (ns, name) = (
            origin.metadata.namespace.as_ref()?,
            origin.metadata.name.as_ref()?,
        );
        let namespace = self.namespace(ns);
        let mut board = lock(&namespace.board);
        Some(board.subscribe(name, Some(origin.clone()), Instant::now()))
    }

    /// Namespace `ns`'s watch, started if need be (again, if its task ended);
    /// watches idle for [`LINGER`] are stopped meanwhile.
    fn namespace(&self, ns: &str) -> Arc<Namespace> {
        let mut all = lock(&self.namespaces);
        let now = Instant::now();
        let stale =
            |w: &Namespace| (w.idle_since(now)).is_some_and(|s| now.duration_since(s) >= LINGER);
        all.retain(|n, w| !w.task.is_finished() && (n == ns || !stale(w)));
        all.entry(ns.to_owned())
            .or_insert_with(|| {
                Arc::new(Namespace::start(
                    Api::namespaced(self.client.clone(), ns),
                    &self.label,
                ))
            })
            .clone()
    }
}

impl std::fmt::Debug for PodHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let namespaces: Vec<String> = lock(&self.namespaces).keys().cloned().collect();
        (f.debug_struct("PodHub").field("label", &self.label))
            .field("namespaces", &namespaces)
            .finish_non_exhaustive()
    }
}

/// One namespace's watch: its task (stopped with it) and its board.
struct Namespace {
    board: Arc<Mutex<Board>>,
    task: JoinHandle<()>,
    /// Since when no one waits on its pods.
    idle: Mutex<Option<Instant>>,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Namespace {
    fn start(api: Api<Pod>, label: &str) -> Self {
        let board = Arc::new(Mutex::new(Board::default()));
        let task = tokio::spawn(follow(
            api,
            format!("{LABEL_RUNNER}={label}"),
            board.clone(),
        ));
        Self {
            board,
            task,
            idle: Mutex::new(None),
        }
    }

    /// Since when nobody waits on its pods (`None` while someone does).
    fn idle_since(&self, now: Instant) -> Option<Instant> {
        let idle = lock(&self.board).idle();
        let mut since = lock(&self.idle);
        *since = if idle {
            Some(since.unwrap_or(now))
        } else {
            None
        };
        *since
    }
}

/// The watch's loop: events onto the board, and a read of each pod waited on
/// that the watch has not shown in time.
async fn follow(api: Api<Pod>, selector: String, board: Arc<Mutex<Board>>) {
    let config = watcher::Config::default().labels(&selector);
    let mut events = watcher(api.clone(), config).default_backoff().boxed();
    let mut tick = tokio::time::interval(board::CONFIRM_AFTER / 5);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => lock(&board).apply(event, Instant::now()),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, selector, "watch the runner's step pods");
                    lock(&board).failed(&e.to_string());
                }
                None => {
                    lock(&board).end("the watch of the runner's step pods ended");
                    return;
                }
            },
            _ = tick.tick() => {
                let due = lock(&board).to_confirm(Instant::now());
                for name in due {
                    match api.get_opt(&name).await {
                        Ok(read) => lock(&board).confirmed(&name, read),
                        Err(e) => tracing::warn!(error = %e, pod = name, "read a step pod the watch has not shown"),
                    }
                }
            }
        }
    }
}
