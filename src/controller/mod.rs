//! `baton controller`: the RunnerToken and Runner reconcilers, their watch caches
//! (shared with the runner API), and the runner API server, under one shutdown.

mod api_client;
#[cfg(test)]
mod fixtures;
pub mod job;
pub mod leader;
pub mod on_demand;
pub mod runner;
mod runtime;
pub mod scoped;
mod sweep;
pub mod token;
mod watches;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use futures::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::crd::{Job, Runner, RunnerToken};
use crate::domain::challenge::Challenges;
use crate::domain::scope::Scope;
use crate::domain::{adoption, backoff, job_write};
use crate::server::health::Readiness;
use crate::server::hub::{Hub, RunnerKey};
use crate::server::metrics::Metrics;
use crate::server::{self, ApiConfig, ApiState};
use crate::store::BlobStore;

/// What a reconcile was doing when it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{doing} {name}")]
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
    #[error(transparent)]
    LogDir(#[from] server::log_dir::LogDirError),
    #[error("the blob store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Leader(String),
    #[error("draw the runner API's challenge key from the OS random source: {0}")]
    Random(getrandom::Error),
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
    /// Status writes landed that `jobs` does not show yet.
    pub landed: Arc<job_write::Landed>,
    /// On-demand runner pods (labelled [`on_demand::JOB_LABEL`]).
    pub runner_pods: Store<Pod>,
    pub on_demand: on_demand::OnDemandConfig,
    pub logs: Arc<server::logs::LogStore>,
    /// Change archives, and finished logs on object storage.
    pub store: BlobStore,
    /// Held while a Job is assigned, with the assignments the cache may not show yet.
    pub recent: tokio::sync::Mutex<job::Recent>,
    pub kick: job::Kick,
    /// An active Job's runner disconnected this long is lost (its Job handed over).
    pub runner_lost_after: Duration,
    /// A Pending Runner not heard from this long is deleted.
    pub pending_ttl: Duration,
    /// Since when each active Job's runner has been seen disconnected.
    pub disconnected:
        std::sync::Mutex<std::collections::HashMap<(String, String), std::time::Instant>>,
    /// `--keep-step-pods`.
    pub keep_step_pods: bool,
    /// When each Runner's status was last written (`status.activeJobs` waits).
    pub runner_writes: runner::StatusWrites,
    /// Finished Jobs' step pods, removed in batches.
    pub step_pods: job::step_pods::StepPodCleanup,
    /// uids of finished Jobs whose step pods this process removed.
    pub cleaned: std::sync::Mutex<std::collections::HashSet<String>>,
    pub backoff: backoff::PerObject<runtime::ObjectKey>,
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
    /// Where step logs are stored (default: [`server::log_dir::default_data_dir`]).
    pub data_dir: Option<std::path::PathBuf>,
    /// Cap on one step's stored log, in bytes.
    pub log_cap: u64,
    /// The blob store's URL (`s3://bucket/prefix`, ...); `None`: `store/` beside
    /// the logs in the data directory.
    pub store: Option<String>,
    /// An upload no Job names is removed once this old.
    pub upload_retention: Duration,
    /// An active Job's runner disconnected this long is lost.
    pub runner_lost_after: Duration,
    /// A Pending Runner not heard from this long is deleted.
    pub pending_runner_ttl: Duration,
    /// Leave finished Jobs' step pods and workspace claims in place.
    pub keep_step_pods: bool,
    pub on_demand: on_demand::OnDemandConfig,
    /// Campaign for a Lease and lead only while holding it; `None`: lead at once.
    pub leader_election: Option<leader::LeaderConfig>,
    /// Serve the runner API over HTTPS with these files (re-read when they change).
    pub tls: Option<server::tls::TlsFiles>,
    /// Requests to the API server started per second, at most (not the Lease's).
    pub kube_api_qps: Option<std::num::NonZeroU32>,
}

/// The watch caches: read by the reconcilers and the runner API, written by the
/// watches (`watches.rs`).
struct Caches {
    runners: (Store<Runner>, Writer<Runner>),
    tokens: (Store<RunnerToken>, Writer<RunnerToken>),
    jobs: (Store<Job>, Writer<Job>),
    runner_pods: (Store<Pod>, Writer<Pod>),
}

impl Caches {
    fn new() -> Self {
        Self {
            runners: reflector::store(),
            tokens: reflector::store(),
            jobs: reflector::store(),
            runner_pods: reflector::store(),
        }
    }
}

/// A cancellation that fires on `shutdown` or when this replica loses its
/// leadership, and the future every part of the controller stops on.
fn stop_on(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (tokio_util::sync::CancellationToken, impl watches::Shutdown) {
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => on_signal.cancel(),
            () = on_signal.cancelled() => {}
        }
    });
    let stopped = stop.clone().cancelled_owned().shared();
    (stop, stopped)
}

/// The log store in `logs_dir` (made private by [`server::log_dir::prepare`]) and
/// the blob store: `url`, or a `store` directory beside the logs. Finished logs
/// are copied to a store that is not on this machine.
fn stores(
    logs_dir: std::path::PathBuf,
    cap: u64,
    url: Option<&str>,
) -> Result<(Arc<server::logs::LogStore>, BlobStore), crate::store::StoreError> {
    let store = match url {
        Some(url) => BlobStore::open(url)?,
        None => BlobStore::local(&logs_dir.with_file_name("store"))?,
    };
    let mut logs = server::logs::LogStore::new(logs_dir, cap);
    if !store.is_local() {
        logs = logs.with_archive(store.clone());
    }
    info!(dir = %logs.root().display(), cap, store = store.location(), "step logs and archives stored here");
    Ok((Arc::new(logs), store))
}

/// The reconcilers' shared context and the runner API's state, over the same
/// caches, hub, log store, metrics and Event recorder.
fn context(
    client: &Client,
    config: &Config,
    caches: &Caches,
    hub: Arc<Hub>,
    readiness: Readiness,
    challenges: Arc<Challenges>,
    (logs, store): (Arc<server::logs::LogStore>, BlobStore),
) -> (Arc<Context>, ApiState, KickReceiver) {
    let metrics = Arc::new(Metrics::new());
    let events = crate::domain::events::Events::new(client.clone());
    let landed = Arc::new(job_write::Landed::new(caches.jobs.0.clone()));
    let state = ApiState {
        client: client.clone(),
        runners: caches.runners.0.clone(),
        tokens: caches.tokens.0.clone(),
        jobs: caches.jobs.0.clone(),
        landed: landed.clone(),
        logs: logs.clone(),
        store: store.clone(),
        hub: hub.clone(),
        readiness,
        config: config.api.clone(),
        metrics: metrics.clone(),
        events: events.clone(),
        challenges,
        rate: Arc::new(server::rate::RateLimiter::new(config.api.rate)),
    };
    let (kick, kicks) = job::Kick::new();
    let ctx = Arc::new(Context {
        client: client.clone(),
        hub,
        tokens: caches.tokens.0.clone(),
        runners: caches.runners.0.clone(),
        jobs: caches.jobs.0.clone(),
        landed,
        runner_pods: caches.runner_pods.0.clone(),
        on_demand: config.on_demand.clone(),
        logs,
        store,
        recent: tokio::sync::Mutex::default(),
        kick,
        runner_lost_after: config.runner_lost_after,
        pending_ttl: config.pending_runner_ttl,
        keep_step_pods: config.keep_step_pods,
        disconnected: std::sync::Mutex::default(),
        cleaned: std::sync::Mutex::default(),
        step_pods: job::step_pods::StepPodCleanup::default(),
        runner_writes: runner::StatusWrites::default(),
        backoff: backoff::PerObject::new(Duration::from_millis(500), Duration::from_secs(300)),
        events,
        metrics,
    });
    (ctx, state, kicks)
}

type KickReceiver = tokio::sync::mpsc::UnboundedReceiver<ObjectRef<Job>>;

/// A deleted Job's logs and blobs go with it.
pub(crate) async fn remove_job_data(
    logs: &server::logs::LogStore,
    store: &BlobStore,
    (ns, name, uid): (&str, &str, &str),
) {
    logs.remove_job(ns, name, uid).await;
    let Ok(job) = crate::store::JobKey::new(ns, name, uid) else {
        return;
    };
    match store.remove_prefix(&job.prefix()).await {
        Ok(0) => {}
        Ok(n) => info!(
            namespace = ns,
            job = name,
            blobs = n,
            "the deleted Job's blobs removed"
        ),
        Err(e) => warn!(
            namespace = ns,
            job = name,
            "remove the deleted Job's blobs: {e}"
        ),
    }
}

/// Remove the logs of Jobs deleted while no controller watched, once the Job
/// cache has synced.
fn sweep_logs(ctx: &Context, scope: Scope) {
    let (jobs, logs, store) = (ctx.jobs.clone(), ctx.logs.clone(), ctx.store.clone());
    tokio::spawn(async move {
        if jobs.wait_until_ready().await.is_ok() {
            let live = jobs.state().iter().filter_map(|j| j.uid()).collect();
            let mut removed = 0;
            for ns in scope.watched() {
                removed += logs.sweep(&live, ns).await;
                removed += sweep::blobs(&store, &live, ns).await;
            }
            info!(
                removed,
                "removed the logs of Jobs deleted while no controller watched"
            );
        }
    });
}

fn elector(client: &Client, config: &Config) -> Result<Option<leader::Elector>, StartError> {
    match config.leader_election.clone() {
        Some(le) => {
            le.validate().map_err(StartError::Leader)?;
            Ok(Some(leader::Elector::new(client.clone(), le)))
        }
        None => Ok(None),
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
    let logs_dir = server::log_dir::prepare(config.data_dir.as_deref())?;
    let (client, lease_client) = api_client::connect(config.kube_api_qps).await?;
    let scope = config.api.namespaces.clone();
    let elector = elector(&lease_client, &config)?;
    let readiness = Readiness::default();
    readiness.require("crds", "not checked yet");
    let hub = Arc::new(Hub::default());
    if elector.is_some() {
        hub.stand_by();
    }
    let caches = Caches::new();
    let challenges = Arc::new(Challenges::new().map_err(StartError::Random)?);
    let (logs, store) = stores(logs_dir, config.log_cap, config.store.as_deref())?;
    let (ctx, state, kicks) = context(
        &client,
        &config,
        &caches,
        hub.clone(),
        readiness.clone(),
        challenges,
        (logs, store),
    );
    let (listener, addr) = server::bind(config.listen).await?;
    info!(%addr, namespaces = %scope, tls = tls.is_some(), "runner API listening");
    let (stop, shutdown) = stop_on(shutdown);

    let Caches {
        runners,
        tokens,
        jobs,
        runner_pods,
    } = caches;
    let controllers = futures::future::join4(
        watches::runners(&scope, runners.1, ctx.clone(), shutdown.clone()),
        watches::tokens(&scope, tokens.1, ctx.clone(), shutdown.clone()),
        watches::jobs(
            &scope,
            (jobs.1, runner_pods.1),
            kicks,
            ctx.clone(),
            shutdown.clone(),
        ),
        job::upkeep(ctx.clone(), shutdown.clone()),
    );
    sweep_logs(&ctx, scope.clone());
    sweep::spawn_upload_sweeps(ctx.jobs.clone(), ctx.store.clone(), config.upload_retention);
    let serve = server::serve(listener, state, tls, shutdown.clone());
    let crds_ready = wait_for_crds(client.clone(), readiness.clone());
    let caches = (runners.0, tokens.0, jobs.0);
    let led = lead(
        elector,
        &hub,
        readiness,
        caches,
        controllers,
        stop,
        shutdown.clone(),
    );
    let (led, (), ()) = tokio::join!(led, serve, crds_ready_until(crds_ready, shutdown));
    info!("controller stopped");
    led
}

/// Lead: with leader election, only once the Lease is held (a standby serves
/// health and /metrics, and answers runners 503). The watches start only then;
/// runners are refused (503) until the caches they are checked against synced.
async fn lead(
    mut elector: Option<leader::Elector>,
    hub: &Hub,
    readiness: Readiness,
    caches: (Store<Runner>, Store<RunnerToken>, Store<Job>),
    controllers: impl Future,
    stop: tokio_util::sync::CancellationToken,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    if let Some(e) = elector.as_mut() {
        tokio::select! {
            () = e.acquire() => {}
            () = shutdown => return Ok(()),
        }
    }
    readiness.require("watch/runners", "not synced yet");
    readiness.require("watch/runnertokens", "not synced yet");
    readiness.require("watch/jobs", "not synced yet");
    hub.activate();
    let (runners, tokens, jobs) = caches;
    let ready = track_watches(readiness, runners, tokens, jobs);
    let hold = async {
        match elector.as_mut() {
            Some(e) => e.hold().await,
            None => futures::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        _ = async { tokio::join!(controllers, ready) } => Ok(()),
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
