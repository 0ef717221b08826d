//! The three controllers and the watches that feed them, each a future that
//! runs until shutdown. What a watch event means besides a reconcile (a deleted
//! Runner forgotten, a deleted token revoked, a Job's runner recounted, a
//! deleted Job's logs removed) is a named handler here, not a closure in `run`.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::reflector::{ObjectRef, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::info;

use super::runtime::drive;
use super::scoped;
use super::{Context, job, on_demand, runner, runner_deleted, token};
use crate::crd::{Job, Runner, RunnerToken};
use crate::domain::scope::Scope;
use crate::server::hub::RunnerKey;
use crate::server::metrics::Kind;

/// Stops every controller (cloned into each).
pub trait Shutdown: Future<Output = ()> + Clone + Send + Sync + 'static {}
impl<T: Future<Output = ()> + Clone + Send + Sync + 'static> Shutdown for T {}

/// Runners: one watch feeds the cache, the reconciler, and the hub's deletions;
/// the hub's changes (connections) reconcile their Runner too.
pub fn runners(
    scope: &Scope,
    writer: Writer<Runner>,
    ctx: Arc<Context>,
    shutdown: impl Shutdown,
) -> impl Future<Output = ()> {
    let (hub, client) = (ctx.hub.clone(), ctx.client.clone());
    let config = watcher::Config::default();
    let events = scoped::watch(&ctx.client, scope, config, ctx.runners.clone())
        .reflect(writer)
        .inspect(move |ev| {
            if let Ok(watcher::Event::Delete(r)) = ev {
                runner_deleted(&hub, &client, r);
            }
        })
        .applied_objects();
    let changes = ctx.hub.take_changes().map(|rx| {
        futures::stream::unfold(rx, |mut rx| async move {
            let key: RunnerKey = rx.recv().await?;
            let r = ObjectRef::<Runner>::new(&key.name).within(&key.namespace);
            Some((r, rx))
        })
    });
    let mut controller =
        Controller::for_stream(events, ctx.runners.clone()).graceful_shutdown_on(shutdown);
    if let Some(changes) = changes {
        controller = controller.reconcile_on(changes);
    }
    drive(controller, Kind::Runner, runner::reconcile, ctx)
}

/// RunnerTokens: the cache the server checks tokens against, and their Secrets.
pub fn tokens(
    scope: &Scope,
    writer: Writer<RunnerToken>,
    ctx: Arc<Context>,
    shutdown: impl Shutdown,
) -> impl Future<Output = ()> {
    let hub = ctx.hub.clone();
    let config = watcher::Config::default();
    let events = scoped::watch(&ctx.client, scope, config, ctx.tokens.clone())
        .reflect(writer)
        .inspect(move |ev| {
            if let Ok(watcher::Event::Delete(t)) = ev {
                let ns = t.namespace().unwrap_or_default();
                info!(namespace = %ns, token = %t.name_any(), "RunnerToken deleted: its token is revoked");
                hub.close_token(&ns, &t.name_any(), "the RunnerToken was deleted");
            }
        })
        .applied_objects();
    let mut controller = Controller::for_stream(events, ctx.tokens.clone());
    // No store behind these: one trigger watch per namespace needs no merging.
    for secrets in scoped::apis::<Secret>(&ctx.client, scope) {
        let config = watcher::Config::default().labels(token::SECRET_LABEL);
        controller = controller.owns(secrets, config);
    }
    let controller = controller.graceful_shutdown_on(shutdown);
    drive(controller, Kind::RunnerToken, token::reconcile, ctx)
}

/// Jobs: the queue, assignment, cancellation, TTL; the cache the server fences
/// with. Kicks (capacity freed) and on-demand runner pods' changes reconcile
/// Jobs too.
pub fn jobs(
    scope: &Scope,
    writers: (Writer<Job>, Writer<Pod>),
    kicks: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<Job>>,
    ctx: Arc<Context>,
    shutdown: impl Shutdown,
) -> impl Future<Output = ()> {
    let (job_writer, pod_writer) = writers;
    let seen = ctx.clone();
    let config = watcher::Config::default();
    let events = scoped::watch(&ctx.client, scope, config, ctx.jobs.clone())
        .modify(job::retained::retain)
        .reflect(job_writer)
        .inspect(move |ev| {
            if let Ok(ev) = ev {
                job_event(&seen, ev);
            }
        })
        .applied_objects();
    let kicks = futures::stream::unfold(kicks, |mut rx| async move {
        let r = rx.recv().await?;
        Some((r, rx))
    });
    let controller = Controller::for_stream(events, ctx.jobs.clone())
        .with_config(controller::Config::default().concurrency(JOB_RECONCILES))
        .reconcile_on(kicks)
        .reconcile_on(runner_pod_owners(
            &ctx.client,
            scope,
            pod_writer,
            ctx.runner_pods.clone(),
        ))
        .graceful_shutdown_on(shutdown);
    drive(controller, Kind::Job, job::reconcile, ctx)
}

/// Job reconciles in flight at once. Queue decisions are serialized anyway (the
/// queue lock), their writes are not: a few in flight keep a burst moving, while
/// unbounded ones (one per Job of a burst) raced each other into status-write
/// conflicts. KWOK bench, 1,000 finished + 100 running Jobs: peak RSS 131.6 →
/// 65.7 MiB, CPU 61.5 → 12.4 s; 300 Jobs at once: 860 → 850 Jobs/min
/// (bench/results/2026-12-02-concurrency8.md).
const JOB_RECONCILES: u16 = 8;

/// A Job changed: a landed write it shows is no longer newer than the cache;
/// its runner recounts its active Jobs (`status.activeJobs`); a
/// deleted Job frees its runner's room and its stored logs go with it.
fn job_event(ctx: &Context, ev: &watcher::Event<Job>) {
    ctx.landed.seen(ev);
    if let watcher::Event::Apply(j) | watcher::Event::Delete(j) = ev
        && let (Some(ns), Some(runner)) = (
            j.namespace(),
            j.status.as_ref().and_then(|s| s.runner.as_ref()),
        )
    {
        ctx.hub.touch(&RunnerKey::new(&ns, runner));
    }
    if let watcher::Event::Delete(j) = ev
        && let (Some(ns), Some(uid)) = (j.namespace(), j.uid())
    {
        ctx.kick.kick_namespace(&ns);
        ctx.clean_up_again(&uid);
        let (logs, store) = (ctx.logs.clone(), ctx.store.clone());
        let name = j.name_any();
        tokio::spawn(async move {
            super::remove_job_data(&logs, &store, (&ns, &name, &uid)).await;
        });
    }
}

/// On-demand runner pods: a cache, and each change wakes the Job that owns it.
fn runner_pod_owners(
    client: &Client,
    scope: &Scope,
    writer: Writer<Pod>,
    cache: Store<Pod>,
) -> impl futures::Stream<Item = ObjectRef<Job>> + Send + 'static {
    let config = watcher::Config::default().labels(on_demand::JOB_LABEL);
    scoped::watch(client, scope, config, cache)
        .reflect(writer)
        .touched_objects()
        .filter_map(|pod| {
            futures::future::ready(pod.ok().and_then(|p| {
                let owner = p
                    .owner_references()
                    .iter()
                    .find(|o| o.kind == "Job" && o.api_version == "baton.dev/v1alpha1")?
                    .name
                    .clone();
                Some(ObjectRef::<Job>::new(&owner).within(&p.namespace()?))
            }))
        })
}
