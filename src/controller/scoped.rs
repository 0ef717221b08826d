//! Watches over the controller's [`Scope`]: the whole cluster, one namespace, or
//! several — and, for several, one cache all the same.
//!
//! Why one cache: the reconcilers, the runner API and kube-runtime's `Controller`
//! all read a `Store<K>`, so several namespaces stay invisible to them. One watch
//! per namespace (a Role grants no cluster-wide list), merged here before the
//! store's `Writer`. The Writer cannot take the merged events as they come: a
//! relist (`Init`, `InitApply`…, `InitDone`) replaces its whole content, so one
//! namespace's relist would drop every other namespace's objects. [`Relists`]
//! rewrites the per-namespace relists: the first time, it waits until every
//! namespace has listed once and hands the Writer one relist of them all (so the
//! store is ready only when every namespace is); after that, a namespace's relist
//! becomes `Apply` of each listed object and `Delete` of each of its cached
//! objects the list no longer holds (a deletion missed while disconnected: it is
//! handled like one seen live).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use futures::stream::{self, BoxStream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::domain::scope::Scope;

type Event<K> = watcher::Event<K>;

/// A kind the controller watches in its namespaces.
pub trait Watched:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}
impl<K> Watched for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// One `Api` per watch of the scope: all namespaces, or one per namespace.
pub fn apis<K: Watched>(client: &Client, scope: &Scope) -> Vec<Api<K>> {
    scope
        .watched()
        .into_iter()
        .map(|ns| match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        })
        .collect()
}

/// The watch events of `K` in `scope`, for the Writer behind `store`: one
/// watcher as is, several merged through [`Relists`].
pub fn watch<K: Watched>(
    client: &Client,
    scope: &Scope,
    config: watcher::Config,
    store: Store<K>,
) -> BoxStream<'static, watcher::Result<Event<K>>> {
    let mut apis = apis::<K>(client, scope);
    if apis.len() == 1
        && let Some(api) = apis.pop()
    {
        return watcher(api, config).default_backoff().modify(slim).boxed();
    }
    let each = apis.into_iter().map(|api| {
        let ns = api.namespace().unwrap_or_default().to_owned();
        watcher(api, config.clone())
            .default_backoff()
            .modify(slim)
            .map(move |ev| (ns.clone(), ev))
            .boxed()
    });
    let mut relists = Relists::new(each.len());
    stream::select_all(each)
        .flat_map(move |(ns, ev)| {
            let out: Vec<_> = match ev {
                Ok(ev) => relists.on(&ns, ev, &store).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            stream::iter(out)
        })
        .boxed()
}

/// The annotation `kubectl apply` keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reconciler reads before the cache keeps it: `managedFields` (a
/// tree of small allocations per field manager) and `kubectl apply`'s copy of the
/// object. Every cached object holds them, so they grew the controller by a
/// share of each retained Job. Safe for the status writes made from the cache:
/// a write without `managedFields` keeps the stored ones (the API server takes
/// them from the live object), and a status write changes no metadata.
pub fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Rewrites per-namespace watch events into events for one Writer (module doc).
pub struct Relists<K> {
    namespaces: usize,
    /// A namespace's relist in progress: its objects so far.
    listing: HashMap<String, Vec<K>>,
    /// Until every namespace listed once: each listed namespace's objects by name.
    first: Option<BTreeMap<String, BTreeMap<String, K>>>,
}

impl<K: Watched> Relists<K> {
    pub fn new(namespaces: usize) -> Self {
        Self {
            namespaces,
            listing: HashMap::new(),
            first: Some(BTreeMap::new()),
        }
    }

    /// The events for the Writer when namespace `ns`'s watch sends `ev`;
    /// `store` is that Writer's cache (what a relist may have lost).
    pub fn on(&mut self, ns: &str, ev: Event<K>, store: &Store<K>) -> Vec<Event<K>> {
        match ev {
            Event::Init => {
                self.listing.insert(ns.to_owned(), Vec::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                self.listing.entry(ns.to_owned()).or_default().push(obj);
                Vec::new()
            }
            Event::InitDone => {
                let listed = self.listing.remove(ns).unwrap_or_default();
                self.listed(ns, listed, store)
            }
            Event::Apply(obj) if self.first.is_some() => {
                self.hold_change(ns, false, obj);
                Vec::new()
            }
            Event::Delete(obj) if self.first.is_some() => {
                self.hold_change(ns, true, obj);
                Vec::new()
            }
            live => vec![live],
        }
    }

    /// A namespace finished a list.
    fn listed(&mut self, ns: &str, listed: Vec<K>, store: &Store<K>) -> Vec<Event<K>> {
        let Some(first) = self.first.as_mut() else {
            return relisted(ns, listed, store);
        };
        let by_name = listed.into_iter().map(|o| (o.name_any(), o)).collect();
        first.insert(ns.to_owned(), by_name);
        if first.len() < self.namespaces {
            return Vec::new();
        }
        let all = self.first.take().unwrap_or_default();
        let objects = all.into_values().flat_map(BTreeMap::into_values);
        std::iter::once(Event::Init)
            .chain(objects.map(Event::InitApply))
            .chain(std::iter::once(Event::InitDone))
            .collect()
    }

    /// A change before every namespace listed: kept with its namespace's list.
    fn hold_change(&mut self, ns: &str, delete: bool, obj: K) {
        let Some(held) = self.first.as_mut().and_then(|f| f.get_mut(ns)) else {
            return;
        };
        if delete {
            held.remove(&obj.name_any());
        } else {
            held.insert(obj.name_any(), obj);
        }
    }
}

/// Namespace `ns` listed again: each listed object applied, and each cached
/// object of `ns` the list no longer holds deleted.
fn relisted<K: Watched>(ns: &str, listed: Vec<K>, store: &Store<K>) -> Vec<Event<K>> {
    let names: std::collections::HashSet<String> =
        listed.iter().map(ResourceExt::name_any).collect();
    let gone = store
        .state()
        .into_iter()
        .filter(|o| o.namespace().as_deref() == Some(ns) && !names.contains(&o.name_any()))
        .map(|o| Event::Delete(o.as_ref().clone()));
    listed.into_iter().map(Event::Apply).chain(gone).collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector::{self, store::Writer};

    use super::*;

    #[test]
    fn slim_drops_managed_fields_and_the_applied_copy_only() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let mut c = cm("ns", "a");
        c.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            ..Default::default()
        }]);
        c.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_owned(), "{...}".to_owned()),
                ("baton.dev/keep".to_owned(), "yes".to_owned()),
            ]
            .into(),
        );
        c.metadata.labels = Some([("app".to_owned(), "x".to_owned())].into());
        slim(&mut c);
        assert_eq!(c.metadata.managed_fields, None);
        assert_eq!(
            c.metadata.annotations,
            Some([("baton.dev/keep".to_owned(), "yes".to_owned())].into())
        );
        assert_eq!(
            c.metadata.labels,
            Some([("app".to_owned(), "x".to_owned())].into())
        );

        let mut only_applied = cm("ns", "b");
        only_applied.metadata.annotations =
            Some([(LAST_APPLIED.to_owned(), "{}".to_owned())].into());
        slim(&mut only_applied);
        assert_eq!(only_applied.metadata.annotations, None);
    }

    fn cm(ns: &str, name: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.namespace = Some(ns.to_owned());
        c.metadata.name = Some(name.to_owned());
        c
    }

    /// Feed `events` of namespace `ns` through `relists` into `writer`; what came out.
    fn feed(
        relists: &mut Relists<ConfigMap>,
        writer: &mut Writer<ConfigMap>,
        ns: &str,
        events: Vec<Event<ConfigMap>>,
    ) -> Vec<String> {
        let store = writer.as_reader();
        let mut out = Vec::new();
        for ev in events {
            for e in relists.on(ns, ev, &store) {
                writer.apply_watcher_event(&e);
                out.push(describe(&e));
            }
        }
        out
    }

    fn describe(e: &Event<ConfigMap>) -> String {
        let id = |o: &ConfigMap| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
        match e {
            Event::Init => "Init".into(),
            Event::InitApply(o) => format!("InitApply {}", id(o)),
            Event::InitDone => "InitDone".into(),
            Event::Apply(o) => format!("Apply {}", id(o)),
            Event::Delete(o) => format!("Delete {}", id(o)),
        }
    }

    fn list(ns: &str, names: &[&str]) -> Vec<Event<ConfigMap>> {
        std::iter::once(Event::Init)
            .chain(names.iter().map(|n| Event::InitApply(cm(ns, n))))
            .chain(std::iter::once(Event::InitDone))
            .collect()
    }

    fn cached(store: &Store<ConfigMap>) -> Vec<String> {
        let mut names: Vec<String> = store
            .state()
            .iter()
            .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
            .collect();
        names.sort();
        names
    }

    /// Two namespaces listed once, with changes to `a` while `b` still lists.
    fn synced() -> (Relists<ConfigMap>, Writer<ConfigMap>, Store<ConfigMap>) {
        let (store, mut writer) = reflector::store();
        let mut relists = Relists::new(2);
        assert!(feed(&mut relists, &mut writer, "a", list("a", &["x", "old"])).is_empty());
        let changes = vec![Event::Apply(cm("a", "y")), Event::Delete(cm("a", "old"))];
        assert!(feed(&mut relists, &mut writer, "a", changes).is_empty());
        let out = feed(&mut relists, &mut writer, "b", list("b", &["z"]));
        assert_eq!(
            out,
            [
                "Init",
                "InitApply a/x",
                "InitApply a/y",
                "InitApply b/z",
                "InitDone"
            ]
        );
        (relists, writer, store)
    }

    #[test]
    fn the_store_fills_once_when_every_namespace_listed() {
        let (_, _, store) = synced();
        assert_eq!(cached(&store), ["a/x", "a/y", "b/z"]);
        let ready = futures::executor::block_on(store.wait_until_ready());
        assert!(ready.is_ok());
    }

    #[test]
    fn a_relist_keeps_other_namespaces_and_deletes_what_it_lost() {
        let (mut relists, mut writer, store) = synced();
        let out = feed(&mut relists, &mut writer, "b", list("b", &["w"]));
        assert_eq!(out, ["Apply b/w", "Delete b/z"]);
        assert_eq!(cached(&store), ["a/x", "a/y", "b/w"]);
    }

    #[test]
    fn changes_after_the_first_lists_pass_as_they_are() {
        let (mut relists, mut writer, store) = synced();
        let changes = vec![Event::Delete(cm("a", "x")), Event::Apply(cm("b", "v"))];
        let out = feed(&mut relists, &mut writer, "a", changes);
        assert_eq!(out, ["Delete a/x", "Apply b/v"]);
        assert_eq!(cached(&store), ["a/y", "b/v", "b/z"]);
    }
}
