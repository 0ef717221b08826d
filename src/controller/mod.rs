//! `baton controller`: the RunnerToken and Runner reconcilers, their watch caches
//! (shared with the runner API), and the runner API server, under one shutdown.

pub mod job;
pub mod leader;
pub mod on_demand;
pub mod runner;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::crd::{Job, Runner, RunnerToken};
use crate::domain::{adoption, backoff};
use crate::server::health::Readiness;
use crate::server::hub::{Hub, RunnerKey};
use crate::server::metrics::{Kind, Metrics};
use crate::server::{self, ApiConfig, ApiState};

/// What a reconcile was doing when it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{doing} {name}: {source}")]
    Kube {
        doing: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Mint(#[from] crate::domain::token::MintError),
    #[error("object has no namespace")]
    NoNamespace,
}

impl Error {
    /// A stable short category, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Mint(_) => "mint",
            Error::NoNamespace => "invalid",
        }
    }
}

/// Why `baton controller` could not run.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("connect to the cluster (kubeconfig or in-cluster config): {0}")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error("{0}")]
    Leader(String),
    /// The process must end so a restart can stand by again (its caches and hub
    /// belong to a leadership that is over).
    #[error(transparent)]
    LostLeadership(#[from] leader::LostLeadership),
}

/// Everything a reconciler shares.
pub struct Context {
    pub client: Client,
    pub hub: Arc<Hub>,
    pub tokens: Store<RunnerToken>,
    pub runners: Store<Runner>,
    pub jobs: Store<Job>,
    /// On-demand runner pods (labelled [`on_demand::JOB_LABEL`]).
    pub runner_pods: Store<Pod>,
    pub on_demand: on_demand::OnDemandConfig,
    pub logs: Arc<server::logs::LogStore>,
    /// Held while a Job is assigned, with the assignments the cache may not show yet.
    pub recent: tokio::sync::Mutex<job::Recent>,
    pub kick: job::Kick,
    /// An active Job's runner disconnected this long is lost (its Job handed over).
    pub runner_lost_after: Duration,
    /// Since when each active Job's runner has been seen disconnected.
    pub disconnected:
        std::sync::Mutex<std::collections::HashMap<(String, String), std::time::Instant>>,
    /// `--keep-step-pods`.
    pub keep_step_pods: bool,
    /// uids of finished Jobs whose step pods this process removed.
    pub cleaned: std::sync::Mutex<std::collections::HashSet<String>>,
    pub backoff: backoff::PerObject,
    /// The process's one Event recorder (shared with the runner API).
    pub events: crate::domain::events::Events,
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// How long Job `ns/name`'s runner has been seen disconnected (`None` while
    /// connected; a connection resets it).
    pub fn disconnected_for(&self, ns: &str, name: &str, connected: bool) -> Option<Duration> {
        let mut map = self
            .disconnected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (ns.to_owned(), name.to_owned());
        if connected {
            map.remove(&key);
            return None;
        }
        Some(
            map.entry(key)
                .or_insert_with(std::time::Instant::now)
                .elapsed(),
        )
    }
}

impl Context {
    /// Whether a finished Job's step pods are still to be removed by this
    /// process (true once per uid).
    pub fn clean_up_once(&self, uid: &str) -> bool {
        self.cleaned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(uid.to_owned())
    }

    /// Forget a uid: its clean-up failed (try again), or its Job is gone.
    pub fn clean_up_again(&self, uid: &str) {
        self.cleaned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uid);
    }
}

/// Write a Baton object's status by server-side apply (field manager
/// [`server::FIELD_MANAGER`]); callers skip it when the computed status is unchanged.
async fn apply_status<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
    status: &impl serde::Serialize,
    doing: &'static str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &kube::api::PatchParams::apply(server::FIELD_MANAGER).force(),
        &kube::api::Patch::Apply(&patch),
    )
    .await
    .map(drop)
    .map_err(|source| Error::Kube {
        doing,
        name: name.to_owned(),
        source,
    })
}

/// `baton controller` settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the runner API and the health routes listen.
    pub listen: SocketAddr,
    pub api: ApiConfig,
    /// Where step logs are stored (default: a directory under the system temp dir).
    pub data_dir: Option<std::path::PathBuf>,
    /// Cap on one step's stored log, in bytes.
    pub log_cap: u64,
    /// An active Job's runner disconnected this long is lost.
    pub runner_lost_after: Duration,
    /// Leave finished Jobs' step pods and workspace claims in place.
    pub keep_step_pods: bool,
    pub on_demand: on_demand::OnDemandConfig,
    /// Campaign for a Lease and lead only while holding it; `None`: lead at once.
    pub leader_election: Option<leader::LeaderConfig>,
    /// Serve the runner API over HTTPS with these files (re-read when they change).
    pub tls: Option<server::tls::TlsFiles>,
}

/// A reconcile of `kind`, counted and timed: the one place each reconciler is measured.
async fn measured(
    kind: Kind,
    metrics: Arc<Metrics>,
    reconcile: impl Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let res = reconcile.await;
    metrics.reconciled(kind, res.is_ok(), started.elapsed());
    res
}

fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    );
    let delay = ctx.backoff.failed(&key);
    warn!(object = %key, category = err.category(), retry_in = ?delay, "reconcile failed: {err}");
    Action::requeue(delay)
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

/// Run until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    // Bad TLS files fail the start before anything else, naming the file.
    let tls = (config.tls.as_ref())
        .map(|files| server::tls::acceptor(files, server::tls::RELOAD_EVERY))
        .transpose()
        .map_err(server::ServerError::from)?;
    let client = Client::try_default().await.map_err(StartError::Client)?;
    let ns = config.api.namespace.clone();
    let mut elector = match config.leader_election.clone() {
        Some(le) => {
            le.validate().map_err(StartError::Leader)?;
            Some(leader::Elector::new(client.clone(), le))
        }
        None => None,
    };
    let readiness = Readiness::default();
    readiness.require("crds", "not checked yet");
    let hub = Arc::new(Hub::default());
    if elector.is_some() {
        hub.stand_by();
    }
    let (runners, runner_writer) = reflector::store::<Runner>();
    let (tokens, token_writer) = reflector::store::<RunnerToken>();
    let (jobs, job_writer) = reflector::store::<Job>();
    let (runner_pods, pod_writer) = reflector::store::<Pod>();
    let data_dir = config
        .data_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("baton-data"));
    let logs = Arc::new(server::logs::LogStore::new(
        data_dir.join("logs"),
        config.log_cap,
    ));
    info!(dir = %logs.root().display(), cap = config.log_cap, "step logs stored here");

    let (listener, addr) = server::bind(config.listen).await?;
    info!(%addr, namespace = ns.as_deref().unwrap_or("*"), tls = tls.is_some(), "runner API listening");

    // Stops the server and the controllers: on the shutdown signal, or when this
    // replica loses its leadership.
    let stop = tokio_util::sync::CancellationToken::new();
    let shutdown = {
        let on_signal = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => on_signal.cancel(),
                () = on_signal.cancelled() => {}
            }
        });
        stop.clone().cancelled_owned().shared()
    };
    let metrics = Arc::new(Metrics::new());
    let events = crate::domain::events::Events::new(client.clone());
    let state = ApiState {
        client: client.clone(),
        runners: runners.clone(),
        tokens: tokens.clone(),
        jobs: jobs.clone(),
        logs: logs.clone(),
        hub: hub.clone(),
        readiness: readiness.clone(),
        config: config.api.clone(),
        metrics: metrics.clone(),
        events: events.clone(),
    };
    let (kick, kicks) = job::Kick::new(jobs.clone());
    let ctx = Arc::new(Context {
        client: client.clone(),
        hub: hub.clone(),
        tokens: tokens.clone(),
        runners: runners.clone(),
        jobs: jobs.clone(),
        runner_pods: runner_pods.clone(),
        on_demand: config.on_demand.clone(),
        logs: logs.clone(),
        recent: tokio::sync::Mutex::default(),
        kick,
        runner_lost_after: config.runner_lost_after,
        keep_step_pods: config.keep_step_pods,
        disconnected: std::sync::Mutex::default(),
        cleaned: std::sync::Mutex::default(),
        backoff: backoff::PerObject::new(Duration::from_millis(500), Duration::from_secs(300)),
        events,
        metrics,
    });

    // Runners: one watch feeds the cache, the reconciler, and the hub's deletions.
    let forget_hub = hub.clone();
    let forget_client = client.clone();
    let runner_events = watcher(
        api::<Runner>(&client, ns.as_deref()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(runner_writer)
    .inspect(move |ev| {
        if let Ok(watcher::Event::Delete(r)) = ev {
            runner_deleted(&forget_hub, &forget_client, r);
        }
    })
    .applied_objects();
    let changes = hub.take_changes().map(|rx| {
        futures::stream::unfold(rx, |mut rx| async move {
            let key: RunnerKey = rx.recv().await?;
            Some((
                ObjectRef::<Runner>::new(&key.name).within(&key.namespace),
                rx,
            ))
        })
    });
    let mut runner_controller = Controller::for_stream(runner_events, runners.clone())
        .graceful_shutdown_on(shutdown.clone());
    if let Some(changes) = changes {
        runner_controller = runner_controller.reconcile_on(changes);
    }
    let runner_controller = runner_controller
        .run(
            |obj, ctx| {
                measured(
                    Kind::Runner,
                    ctx.metrics.clone(),
                    runner::reconcile(obj, ctx),
                )
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|res| {
            if let Ok((obj, _)) = res {
                ctx.backoff.succeeded(&format!(
                    "Runner/{}/{}",
                    obj.namespace.as_deref().unwrap_or(""),
                    obj.name
                ));
            }
            futures::future::ready(())
        });

    // RunnerTokens: the cache the server checks tokens against, and their Secrets.
    let revoke_hub = hub.clone();
    let token_events = watcher(api::<RunnerToken>(&client, ns.as_deref()), watcher::Config::default())
        .default_backoff()
        .reflect(token_writer)
        .inspect(move |ev| {
            if let Ok(watcher::Event::Delete(t)) = ev {
                let ns = t.namespace().unwrap_or_default();
                info!(namespace = %ns, token = %t.name_any(), "RunnerToken deleted: its token is revoked");
                revoke_hub.close_token(&ns, &t.name_any(), "the RunnerToken was deleted");
            }
        })
        .applied_objects();
    let token_controller = Controller::for_stream(token_events, tokens.clone())
        .owns(
            api::<Secret>(&client, ns.as_deref()),
            watcher::Config::default().labels(token::SECRET_LABEL),
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |obj, ctx| {
                measured(
                    Kind::RunnerToken,
                    ctx.metrics.clone(),
                    token::reconcile(obj, ctx),
                )
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|res| {
            if let Ok((obj, _)) = res {
                ctx.backoff.succeeded(&format!(
                    "RunnerToken/{}/{}",
                    obj.namespace.as_deref().unwrap_or(""),
                    obj.name
                ));
            }
            futures::future::ready(())
        });

    // Jobs: the queue, assignment, cancellation, TTL; the cache the server fences with.
    // A deleted Job's logs go with it (and a sweep at start catches deletions missed
    // while no controller watched); a deleted active Job frees its runner's room.
    let deleted_logs = logs.clone();
    let deleted_kick = ctx.kick.clone();
    let runner_hub = hub.clone();
    let job_events = watcher(
        api::<Job>(&client, ns.as_deref()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(job_writer)
    .inspect(move |ev| {
        // A Job's runner counts its active Jobs (status.activeJobs).
        if let Ok(watcher::Event::Apply(j) | watcher::Event::Delete(j)) = ev
            && let (Some(ns), Some(runner)) = (
                j.namespace(),
                j.status.as_ref().and_then(|s| s.runner.as_ref()),
            )
        {
            runner_hub.touch(&RunnerKey::new(&ns, runner));
        }
        if let Ok(watcher::Event::Delete(j)) = ev
            && let (Some(ns), Some(uid)) = (j.namespace(), j.uid())
        {
            deleted_kick.kick_namespace(&ns);
            let logs = deleted_logs.clone();
            let name = j.name_any();
            tokio::spawn(async move { logs.remove_job(&ns, &name, &uid).await });
        }
    })
    .applied_objects();
    let kicks = futures::stream::unfold(kicks, |mut rx| async move {
        let r = rx.recv().await?;
        Some((r, rx))
    });
    // On-demand runner pods: a cache, and each change wakes their Job (owner).
    let pod_events = watcher(
        api::<Pod>(&client, ns.as_deref()),
        watcher::Config::default().labels(on_demand::JOB_LABEL),
    )
    .default_backoff()
    .reflect(pod_writer)
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
    });
    let job_controller = Controller::for_stream(job_events, jobs.clone())
        .reconcile_on(kicks)
        .reconcile_on(pod_events)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |obj, ctx| measured(Kind::Job, ctx.metrics.clone(), job::reconcile(obj, ctx)),
            error_policy,
            ctx.clone(),
        )
        .for_each(|res| {
            if let Ok((obj, _)) = res {
                ctx.backoff.succeeded(&format!(
                    "Job/{}/{}",
                    obj.namespace.as_deref().unwrap_or(""),
                    obj.name
                ));
            }
            futures::future::ready(())
        });

    let sweep_jobs = jobs.clone();
    let sweep_logs = logs.clone();
    let sweep_ns = ns.clone();
    tokio::spawn(async move {
        if sweep_jobs.wait_until_ready().await.is_ok() {
            let live = sweep_jobs.state().iter().filter_map(|j| j.uid()).collect();
            let removed = sweep_logs.sweep(&live, sweep_ns.as_deref()).await;
            info!(
                removed,
                "removed the logs of Jobs deleted while no controller watched"
            );
        }
    });
    let serve = server::serve(listener, state, tls, shutdown.clone());
    let crds_ready = wait_for_crds(client.clone(), readiness.clone());
    // Lead: with leader election, only once the Lease is held (a standby serves
    // health and /metrics, and answers runners 503). The watches start only then.
    let lead = async {
        if let Some(e) = elector.as_mut() {
            tokio::select! {
                () = e.acquire() => {}
                () = shutdown.clone() => return Ok(()),
            }
        }
        // Runners are refused (503) until the caches they are checked against synced.
        readiness.require("watch/runners", "not synced yet");
        readiness.require("watch/runnertokens", "not synced yet");
        readiness.require("watch/jobs", "not synced yet");
        hub.activate();
        let ready = track_watches(readiness.clone(), runners, tokens, jobs);
        let hold = async {
            match elector.as_mut() {
                Some(e) => e.hold().await,
                None => futures::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            _ = async { tokio::join!(runner_controller, token_controller, job_controller, ready) } => Ok(()),
            lost = hold => {
                warn!("{lost}; stopping so a restart stands by again");
                stop.cancel();
                Err(StartError::LostLeadership(lost))
            }
        };
        if let (Ok(()), Some(e)) = (&outcome, elector.as_mut()) {
            e.release().await;
        }
        outcome
    };
    let (led, (), ()) = tokio::join!(lead, serve, crds_ready_until(crds_ready, shutdown.clone()));
    info!("controller stopped");
    led
}

/// Run the CRD check until it passes or the controller stops.
async fn crds_ready_until(check: impl Future<Output = ()>, stop: impl Future<Output = ()>) {
    tokio::select! {
        () = check => {}
        () = stop => {}
    }
}

/// A Runner was deleted: forget it; with the decommission annotation, a connected
/// runner is told `delete` and its adoption token is revoked.
fn runner_deleted(hub: &Hub, client: &Client, r: &Runner) {
    let ns = r.namespace().unwrap_or_default();
    let key = RunnerKey::new(&ns, r.name_any());
    let decommission = runner::decommissioned(r);
    let told = hub.forget(&key, decommission);
    info!(runner = %key, decommission, told, "Runner deleted: forgotten");
    if decommission {
        let tokens: Api<RunnerToken> = Api::namespaced(client.clone(), &ns);
        let name = adoption::issued_token_name(&key.name);
        tokio::spawn(async move {
            if let Err(e) = tokens.delete(&name, &DeleteParams::background()).await
                && !matches!(&e, kube::Error::Api(s) if s.code == 404)
            {
                warn!(token = %name, "delete the token of a decommissioned runner: {e}");
            }
        });
    }
}

/// `/readyz`, first half: the CRDs exist (checked every 5 s until they do).
async fn wait_for_crds(client: Client, readiness: Readiness) {
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    loop {
        let mut missing = Vec::new();
        for name in [
            "runners.baton.dev",
            "runnertokens.baton.dev",
            "jobs.baton.dev",
        ] {
            match crds.get_opt(name).await {
                Ok(Some(_)) => {}
                Ok(None) => missing.push(format!("CRD {name} is not installed")),
                Err(e) => missing.push(format!("look up CRD {name}: {e}")),
            }
        }
        if missing.is_empty() {
            readiness.ok("crds");
            break;
        }
        readiness.fail("crds", missing.join("; "));
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// `/readyz`, second half (a leader's): each watch has listed once.
async fn track_watches(
    readiness: Readiness,
    runners: Store<Runner>,
    tokens: Store<RunnerToken>,
    jobs: Store<Job>,
) {
    tokio::join!(
        async {
            if runners.wait_until_ready().await.is_ok() {
                readiness.ok("watch/runners");
            }
        },
        async {
            if tokens.wait_until_ready().await.is_ok() {
                readiness.ok("watch/runnertokens");
            }
        },
        async {
            if jobs.wait_until_ready().await.is_ok() {
                readiness.ok("watch/jobs");
            }
        }
    );
    info!("ready: watches synced");
}
