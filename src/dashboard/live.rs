//! The dashboard's view of the cluster: one watch cache (reflector) per kind,
//! Runners and Jobs, opened with the user's client in the namespace it works in
//! (or all), and a counter that moves on every change — the pages' live updates
//! wait on it. A Job page also watches its Job's Events, for as long as it is open.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Event;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::crd::{Job, Runner};

/// Watch caches of Runners and Jobs, and the latest watch error of each.
#[derive(Clone)]
pub struct Live {
    pub runners: Store<Runner>,
    pub jobs: Store<Job>,
    changes: watch::Receiver<u64>,
    errors: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl Live {
    /// Start watching (tasks on the runtime; they end with the process).
    pub fn start(client: &Client, namespace: Option<&str>) -> Live {
        let (tx, changes) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let errors = Arc::new(Mutex::new(BTreeMap::new()));
        let (runners, w) = reflector::store();
        tokio::spawn(follow(
            api(client, namespace),
            w,
            tx.clone(),
            errors.clone(),
            "Runners",
        ));
        let (jobs, w) = reflector::store();
        tokio::spawn(follow(
            api(client, namespace),
            w,
            tx,
            errors.clone(),
            "Jobs",
        ));
        Live {
            runners,
            jobs,
            changes,
            errors,
        }
    }

    /// Ticks on every change of either cache (or of a watch's health).
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        ticks(self.changes.clone())
    }

    /// Why a kind cannot be listed now (the watch's last error), if it cannot.
    pub fn error(&self, kind: &str) -> Option<String> {
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.get(kind).cloned()
    }

    /// Both caches hold a first full list (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        use futures::FutureExt;
        let listed = |f: Option<Result<(), _>>| matches!(f, Some(Ok(())));
        listed(self.runners.wait_until_ready().now_or_never())
            && listed(self.jobs.wait_until_ready().now_or_never())
    }

    /// Wait (a bounded time) until both caches hold a first full list.
    pub async fn ready(&self, within: Duration) {
        let both = async {
            let _ = self.runners.wait_until_ready().await;
            let _ = self.jobs.wait_until_ready().await;
        };
        let _ = tokio::time::timeout(within, both).await;
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Keep one cache in step with the cluster; record and clear the watch's error.
async fn follow<K>(
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    tx: Arc<watch::Sender<u64>>,
    errors: Arc<Mutex<BTreeMap<&'static str, String>>>,
    kind: &'static str,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let mut errs = errors.lock().unwrap_or_else(|e| e.into_inner());
        match ev {
            Ok(_) => {
                errs.remove(kind);
            }
            Err(e) => {
                tracing::warn!(kind, error = %e, "watch failed; retrying");
                errs.insert(kind, e.to_string());
            }
        }
        drop(errs);
        tx.send_modify(|n| *n += 1);
    }
}

/// One tick per change the receiver sees (changes in a burst may fold into one).
fn ticks(rx: watch::Receiver<u64>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

/// Job `ns/name`'s Events, watched while the stream is held: their cache, and a
/// stream that ticks on each change.
pub fn job_events(
    client: &Client,
    ns: &str,
    name: &str,
) -> (Store<Event>, impl Stream<Item = ()> + Send + 'static) {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let fields = format!("involvedObject.kind=Job,involvedObject.name={name}");
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().fields(&fields))
        .default_backoff()
        .reflect(writer)
        .map(|_| ());
    (store, stream)
}
