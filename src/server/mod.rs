//! The HTTP side of `baton controller`: the runner API (register, SSE control
//! channel, job routes), the connected-runner hub, log storage, and the health
//! routes. Wire types are in [`crate::protocol`]; the rules it shares with the
//! controller and the runner in [`crate::domain`] and [`crate::crd::job_status`].
//!
//! The server reads the controller's watch caches ([`Store`]s) but never imports the
//! controller: the controller builds an [`ApiState`] and hands it in.

pub mod api;
pub mod deadline;
pub mod health;
pub mod hub;
pub mod input;
pub mod job_api;
pub mod jobs;
pub mod listen;
pub mod log_dir;
pub mod logs;
pub mod metrics;
pub mod rate;
pub mod register;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::Store;
use tokio::net::TcpListener;
use warp::Filter;
use warp::http::StatusCode;

use crate::crd::{Job, Runner, RunnerToken};
use health::Readiness;
use hub::Hub;
use input::ApiError;

/// Field manager of everything the controller and its server write.
pub const FIELD_MANAGER: &str = "baton-controller";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bind the runner API listener on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("read the runner API listener's address: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Tunables of the runner API.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// How often the control channel carries a `ping` (default 10 s).
    pub ping_interval: Duration,
    /// How often a Pending runner is told to poll (default 5 s).
    pub poll_interval: Duration,
    /// The namespaces served (the controller watches only them).
    pub namespaces: crate::domain::scope::Scope,
    /// Pending (tokenless) Runners allowed per namespace that opted in.
    pub max_pending_runners: usize,
    /// Connection cap and timeouts of the listener.
    pub limits: listen::Limits,
    /// Per-client rate of the routes anyone may call (challenge, register).
    pub rate: rate::RateConfig,
    /// The largest change archive a runner may upload.
    pub artifact_cap: u64,
}

/// Default cap of one change archive (compressed), as large as extraction takes.
pub const DEFAULT_ARTIFACT_CAP: u64 = 2 << 30;

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(10),
            poll_interval: Duration::from_secs(5),
            namespaces: crate::domain::scope::Scope::All,
            max_pending_runners: 20,
            limits: listen::Limits::default(),
            rate: rate::RateConfig::default(),
            artifact_cap: DEFAULT_ARTIFACT_CAP,
        }
    }
}

/// Everything a request handler reads.
#[derive(Clone)]
pub struct ApiState {
    pub client: kube::Client,
    pub runners: Store<Runner>,
    pub tokens: Store<RunnerToken>,
    pub jobs: Store<Job>,
    /// Status writes landed that `jobs` does not show yet.
    pub landed: Arc<crate::domain::job_write::Landed>,
    pub logs: Arc<logs::LogStore>,
    /// Change archives (and, on object storage, finished logs).
    pub store: crate::store::BlobStore,
    pub hub: Arc<Hub>,
    pub readiness: Readiness,
    pub config: ApiConfig,
    pub metrics: Arc<metrics::Metrics>,
    /// The process's one Event recorder.
    pub events: crate::domain::events::Events,
    /// The challenges runners sign to prove they hold their keys.
    pub challenges: Arc<crate::domain::challenge::Challenges>,
    /// Per-client limits on the routes anyone may call.
    pub rate: Arc<rate::RateLimiter>,
}

/// Health routes, `/metrics`, and the runner API, with every rejection turned into a JSON 4xx.
pub fn routes(
    state: ApiState,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone {
    use warp::Reply;
    health::routes(state.readiness.clone())
        .map(Reply::into_response)
        .or(metrics::route(
            state.metrics.clone(),
            state.jobs.clone(),
            state.runners.clone(),
            state.hub.clone(),
        ))
        .unify()
        .or(leading(state.hub.clone()).and(api::routes(state.clone())))
        .unify()
        .or(leading(state.hub.clone()).and(job_api::routes(state)))
        .unify()
        .recover(recover)
        .unify()
        .with(warp::trace::request())
}

/// A standby replica's refusal of the runner API (see [`Hub::stand_by`]).
#[derive(Debug)]
struct StandingBy;
impl warp::reject::Reject for StandingBy {}

/// Passes while this replica serves runners; rejects with [`StandingBy`] otherwise.
fn leading(hub: Arc<Hub>) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::any()
        .and_then(move || {
            let active = hub.is_active();
            async move {
                if active {
                    Ok(())
                } else {
                    Err(warp::reject::custom(StandingBy))
                }
            }
        })
        .untuple_one()
}

/// Map warp's own rejections (no route, wrong method, body limits, bad query) to a
/// JSON answer with a reason.
pub async fn recover(err: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    use warp::reject;
    if let Some(limited) = err.find::<rate::RateLimited>() {
        return Ok(limited.response());
    }
    if let Some(input::Refused(e)) = err.find::<input::Refused>() {
        return Ok(e.clone().into_response());
    }
    let e = if err.find::<StandingBy>().is_some() {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "StandingBy",
            "this controller replica stands by; the leader serves the runner API",
        )
    } else if let Some(t) = err.find::<input::BodyTooLarge>() {
        // Before the method check: sibling routes of the same path (a GET
        // beside this POST) add a MethodNotAllowed to the same rejection.
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("a {} body may be at most {} bytes", t.what, t.max),
        )
    } else if err.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", "no such route")
    } else if err.find::<reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "wrong HTTP method for this route",
        )
    } else if err.find::<reject::LengthRequired>().is_some() {
        ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "LengthRequired",
            "a Content-Length header is required",
        )
    } else if err.find::<reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("the body may be at most {} bytes", input::MAX_BODY),
        )
    } else if err.find::<reject::UnsupportedMediaType>().is_some() {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "Content-Type must be application/json",
        )
    } else if let Some(q) = err.find::<reject::InvalidQuery>() {
        ApiError::bad_request(
            "InvalidQuery",
            format!("{q}: expected ?name=NAME[&namespace=NS]"),
        )
    } else if let Some(h) = err.find::<reject::InvalidHeader>() {
        ApiError::bad_request("InvalidHeader", h.to_string())
    } else if let Some(h) = err.find::<reject::MissingHeader>() {
        ApiError::bad_request("MissingHeader", h.to_string())
    } else {
        tracing::warn!(rejection = ?err, "unhandled rejection");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            format!("{err:?}"),
        )
    };
    Ok(e.into_response())
}

/// Bind the listener ourselves, so a taken port is an error, not a panic.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(ServerError::LocalAddr)?;
    Ok((listener, local))
}

/// Serve until `shutdown` resolves; open control channels and followed logs are
/// ended first so the graceful shutdown does not wait on them. With `tls` (see [`tls::acceptor`]), the
/// listener speaks HTTPS only. Limits: [`ApiConfig::limits`].
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (hub, logs) = (state.hub.clone(), state.logs.clone());
    let shutdown = async move {
        shutdown.await;
        hub.close_all("the server is shutting down");
        logs.stop_following();
    };
    let limits = state.config.limits;
    listen::serve(listener, tls, routes(state), limits, shutdown).await;
}

#[cfg(test)]
mod tests;
