//! `baton runner`: the agent. Registers (retrying with capped exponential backoff
//! and jitter), waits while Pending, collects a token on adoption, holds the control
//! channel (reconnecting when pings stop), obeys `enable`/`disable`, and on `delete`
//! wipes its state directory and exits 0. Serves `/livez` and `/readyz`.

pub mod client;
pub mod jobs;
pub mod state;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use tracing::{debug, info, warn};

use crate::domain::backoff;
use crate::protocol::{ControlEvent, DecodeError, RegisterRequest};
use crate::server::health::{self, Readiness};
use client::{Client, ClientError, Registration};
use state::StateDir;

/// Where the runner runs steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    Kubernetes,
    Local,
}

/// `baton runner` settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: String,
    pub name: String,
    pub state_dir: PathBuf,
    /// `--work-dir`: where the local backend runs steps, apart from `state_dir`.
    pub work_dir: PathBuf,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub backend: BackendKind,
    /// `--tools-image`: where step pods get `baton-entrypoint` from.
    pub tools_image: String,
    pub health_addr: SocketAddr,
    /// `BATON_RUNNER_TOKEN`: used when the state directory holds no token, or
    /// when the server refuses the one it holds.
    pub env_token: Option<String>,
    /// No event for this long on the control channel: reconnect (default 30 s).
    pub ping_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// `--once`: exit 0 after the first Job ends, or when none is assigned within
    /// this long.
    pub once: Option<Duration>,
    /// `--ca-file`: extra CA certificate(s) trusted for an https:// server.
    pub ca_file: Option<PathBuf>,
    /// `--direct-only`: take only Jobs that name this runner (`spec.runnerName`).
    pub direct_only: bool,
    /// Local backend: every Job's `/workspace` (`job run --here`), else one per Job.
    pub workspace: Option<PathBuf>,
    /// `--ca-pem` / `BATON_CA_PEM`: extra CA certificate(s) as PEM text (how the
    /// controller hands its `--runner-ca-file` to on-demand runner pods).
    pub ca_pem: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Health(#[from] crate::server::ServerError),
    #[error("connect to the cluster for the kubernetes backend (kubeconfig or in-cluster): {0}")]
    Kube(#[source] kube::Error),
}

/// Where the token in use came from: a refused file token is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    StateDir,
    Env,
}

/// The token to present first: the state directory's, else `BATON_RUNNER_TOKEN`.
fn first_token(stored: Option<String>, env: Option<&str>) -> Option<(String, Source)> {
    match stored {
        Some(t) => Some((t, Source::StateDir)),
        None => env.map(|t| (t.to_owned(), Source::Env)),
    }
}

/// The token to present after `refused` (from `source`) was refused (401):
/// `BATON_RUNNER_TOKEN` when the state directory's was refused and the variable
/// holds another; otherwise none, which registers without one, as Pending.
fn after_refusal(source: Source, refused: &str, env: Option<&str>) -> Option<(String, Source)> {
    match (source, env) {
        (Source::StateDir, Some(env)) if env != refused => Some((env.to_owned(), Source::Env)),
        _ => None,
    }
}

impl Source {
    /// Where the token came from, for logs (never the token itself).
    fn describe(self) -> &'static str {
        match self {
            Self::StateDir => "the state directory",
            Self::Env => "BATON_RUNNER_TOKEN",
        }
    }
}

/// How a held control channel ended.
enum Ended {
    /// Told to `delete`: state wiped, exit 0.
    Deleted,
    /// Reconnect (server closed it, connection broke, pings stopped); whether the
    /// channel was open at all.
    Reconnect(String, bool),
}

const READY: &str = "runner";

/// Parse `k=v,k2=v2`.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("label {kv:?} is not key=value"))
        })
        .collect()
}

/// Run the agent until it is told `delete` (returns 0) or `shutdown` resolves (0).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<i32, RunnerError> {
    let dir = StateDir::open(&config.state_dir)?;
    let runner_id = dir.runner_id()?;
    let identity = dir.identity()?;
    let public_key = identity.public_key();
    let readiness = Readiness::default();
    readiness.require(READY, "starting: not registered yet");
    let (listener, health_addr) = crate::server::bind(config.health_addr).await?;
    info!(addr = %health_addr, name = %config.name, runner_id = %runner_id, key = %crate::domain::identity::fingerprint(&public_key).unwrap_or_default(), backend = ?config.backend, "runner health listening");
    let health = warp::serve(health::routes(readiness.clone()))
        .incoming(listener)
        .run();
    let health = tokio::spawn(health);

    let client = Client::with_cas(
        &config.server,
        config.ca_file.as_deref(),
        config.ca_pem.as_deref(),
    )?;
    let kube = match config.backend {
        BackendKind::Kubernetes => Some(
            kube::Client::try_default()
                .await
                .map_err(RunnerError::Kube)?,
        ),
        BackendKind::Local => None,
    };
    let jobs = jobs::JobRunner::new(
        client.clone(),
        config.name.clone(),
        config.backend,
        config.work_dir.clone(),
        kube,
    )
    .with_tools_image(config.tools_image.clone())
    .with_direct(config.direct_only, config.workspace.clone());
    let once = config.once.map(|wait| jobs.clone().once(wait));
    let once = async move {
        match once {
            Some(f) => f.await,
            None => futures::future::pending().await,
        }
    };
    let agent = Agent {
        client,
        jobs,
        dir,
        readiness,
        req: RegisterRequest {
            name: config.name.clone(),
            runner_id,
            namespace: config.namespace.clone(),
            labels: config.labels.clone(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            public_key,
            ..Default::default()
        },
        identity,
        config,
        state: String::new(),
    };
    let code = tokio::select! {
        r = agent.run() => r?,
        () = shutdown => { info!("shutting down"); 0 }
        () = once => 0,
    };
    health.abort();
    Ok(code)
}

struct Agent {
    client: Client,
    jobs: jobs::JobRunner,
    dir: StateDir,
    readiness: Readiness,
    req: RegisterRequest,
    identity: crate::domain::identity::Identity,
    config: Config,
    /// Last state logged, so each change is one log line and repeats are quiet.
    state: String,
}

impl Agent {
    fn enter(&mut self, state: &str, ready: bool, detail: &str) {
        if ready {
            self.readiness.ok(READY);
        } else {
            self.readiness.fail(READY, format!("{state}: {detail}"));
        }
        if self.state != state {
            info!(state, "{detail}");
            self.state = state.to_owned();
        } else {
            debug!(state, "{detail}");
        }
    }

    fn pause(&self, attempt: u32) -> Duration {
        backoff::delay(
            attempt,
            self.config.backoff_base,
            self.config.backoff_max,
            backoff::jitter(),
        )
    }

    async fn run(mut self) -> Result<i32, RunnerError> {
        let mut token = first_token(self.dir.token()?, self.config.env_token.as_deref());
        if let Some((_, source)) = &token {
            info!(from = source.describe(), "registering with a token");
        }
        let mut attempt: u32 = 0;
        loop {
            let presented = token.as_ref().map(|(t, _)| t.as_str());
            match self
                .client
                .register(&self.req, presented, &self.identity)
                .await
            {
                Ok(Registration::Registered(r)) if r.token.is_some() => {
                    if let Some(t) = r.token {
                        self.dir.save_token(&t)?;
                        info!(namespace = %r.namespace, "adopted: token received and stored in the state directory");
                        token = Some((t, Source::StateDir));
                    }
                    attempt = 0;
                }
                Ok(Registration::Registered(r)) => {
                    attempt = 0;
                    let Some((t, source)) = token.clone() else {
                        continue;
                    };
                    self.enter(
                        "Registered",
                        false,
                        &format!(
                            "registered as {} in {} with the token from {}",
                            r.state,
                            r.namespace,
                            source.describe()
                        ),
                    );
                    match self.hold(&r.namespace, &t).await? {
                        Ended::Deleted => return Ok(0),
                        Ended::Reconnect(why, was_open) => {
                            self.enter(
                                "Idle",
                                false,
                                &format!("control channel ended ({why}); reconnecting"),
                            );
                            // A channel that never opened counts as a failed attempt.
                            attempt = if was_open {
                                0
                            } else {
                                attempt.saturating_add(1)
                            };
                        }
                    }
                    tokio::time::sleep(self.pause(attempt)).await;
                }
                Ok(Registration::Pending(r)) => {
                    attempt = 0;
                    self.enter("Pending", false, &r.message);
                    let poll = Duration::from_secs(r.poll_seconds.unwrap_or(5).clamp(1, 300));
                    tokio::time::sleep(poll).await;
                }
                Err(ClientError::Refused {
                    status: 401,
                    reason,
                    message,
                    ..
                }) if token.is_some() => {
                    let Some((refused, source)) = token.take() else {
                        continue;
                    };
                    if source == Source::StateDir {
                        self.dir.remove_token()?;
                    }
                    token = after_refusal(source, &refused, self.config.env_token.as_deref());
                    let from = source.describe();
                    match &token {
                        Some((_, next)) => warn!(
                            reason,
                            from,
                            "token refused ({message}); trying the one from {}",
                            next.describe()
                        ),
                        None => warn!(
                            reason,
                            from, "token refused ({message}); registering without one, as Pending"
                        ),
                    }
                }
                Err(e @ ClientError::Refused { status: 403, .. }) => {
                    self.enter("Rejected", false, &e.to_string());
                    tokio::time::sleep(self.pause(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
                Err(e) => {
                    self.enter("Idle", false, &format!("cannot register: {e}"));
                    tokio::time::sleep(self.pause(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Jobs assigned while we were away (or before a restart). In a task: a slow
    /// server must not stall the ping watch of the control loop.
    fn resume_assigned(&self, namespace: &str, token: &str) {
        let (client, jobs) = (self.client.clone(), self.jobs.clone());
        let (name, ns, token) = (
            self.req.name.clone(),
            namespace.to_owned(),
            token.to_owned(),
        );
        tokio::spawn(async move {
            match client.assignments(&name, &ns, &token).await {
                Ok(list) => jobs.resume(&ns, list, &token),
                Err(e) => warn!("list assigned jobs: {e}"),
            }
        });
    }

    /// Hold the control channel until it ends.
    async fn hold(&mut self, namespace: &str, token: &str) -> Result<Ended, RunnerError> {
        let stream = match self
            .client
            .control(
                &self.req.name,
                namespace,
                token,
                &self.identity,
                self.config.direct_only,
            )
            .await
        {
            Ok(s) => s,
            Err(e) => return Ok(Ended::Reconnect(e.to_string(), false)),
        };
        let mut open = false;
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::time::timeout(self.config.ping_timeout, stream.next()).await;
            let ev = match next {
                Err(_) => {
                    return Ok(Ended::Reconnect(
                        format!("no ping for {:?}", self.config.ping_timeout),
                        open,
                    ));
                }
                Ok(None) => {
                    return Ok(Ended::Reconnect(
                        "the server closed the stream".into(),
                        open,
                    ));
                }
                Ok(Some(Err(e))) => return Ok(Ended::Reconnect(e.to_string(), open)),
                Ok(Some(Ok(ev))) => ev,
            };
            let ev = match ControlEvent::decode(&ev.event, &ev.data) {
                Ok(ev) => ev,
                Err(e @ DecodeError::Unknown(_)) => {
                    debug!("{e}: ignored");
                    continue;
                }
                Err(e) => {
                    warn!(data = %ev.data, "{e}");
                    continue;
                }
            };
            match ev {
                ControlEvent::Hello { disabled, .. } => {
                    open = true;
                    let state = if disabled { "Disabled" } else { "Connected" };
                    self.enter(state, true, "control channel open");
                    // A new controller (restart, failover) may lack running Jobs' logs.
                    self.jobs.reconnected();
                    self.resume_assigned(namespace, token);
                }
                ControlEvent::Ping => debug!("ping"),
                ControlEvent::Disable => {
                    self.enter("Disabled", true, "disabled: taking no new jobs")
                }
                ControlEvent::Enable => self.enter("Connected", true, "enabled: taking jobs"),
                ControlEvent::Delete => {
                    info!(dir = %self.dir.path().display(), "decommissioned: wiping the state directory and exiting");
                    self.dir.wipe()?;
                    return Ok(Ended::Deleted);
                }
                ControlEvent::Close { reason } => {
                    return Ok(Ended::Reconnect(
                        format!("server closed it: {reason}"),
                        open,
                    ));
                }
                ControlEvent::Assign {
                    namespace,
                    name,
                    epoch,
                } => {
                    info!(%namespace, job = %name, epoch, "job assigned");
                    self.jobs.start(&namespace, &name, epoch, false, token);
                }
                ControlEvent::Cancel { namespace, name } => {
                    let found = self.jobs.cancel(&namespace, &name);
                    info!(%namespace, job = %name, found, "job cancel requested");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn which_token_is_presented() {
        let tok = |t: &str, s| Some((t.to_owned(), s));
        assert_eq!(
            first_token(Some("dir".into()), Some("env")),
            tok("dir", Source::StateDir)
        );
        assert_eq!(first_token(None, Some("env")), tok("env", Source::Env));
        assert_eq!(first_token(None, None), None);
        // After a 401: (who was refused, the token, BATON_RUNNER_TOKEN) -> next.
        let cases = [
            (
                Source::StateDir,
                "dir",
                Some("env"),
                tok("env", Source::Env),
            ),
            (Source::StateDir, "dir", None, None),
            // The same token again would be refused again.
            (Source::StateDir, "same", Some("same"), None),
            (Source::Env, "env", Some("env"), None),
        ];
        for (source, refused, env, want) in cases {
            assert_eq!(
                after_refusal(source, refused, env),
                want,
                "{source:?} {refused} {env:?}"
            );
        }
    }

    /// A register endpoint that refuses the token `old`, accepts `new`, and keeps
    /// anyone else Pending; it records what each attempt presented.
    async fn register_server(presented: Arc<Mutex<Vec<String>>>) -> String {
        use warp::Filter;
        use warp::http::StatusCode;
        let register = warp::post()
            .and(warp::path!("v1" / "register"))
            .and(warp::header::optional::<String>("authorization"))
            .map(move |auth: Option<String>| {
                let token = auth.map_or("-".to_owned(), |a| a.replace("Bearer ", ""));
                let (status, body) = match token.as_str() {
                    "old" => (
                        StatusCode::UNAUTHORIZED,
                        serde_json::json!({"error": "InvalidToken", "message": "unknown token"}),
                    ),
                    "new" => (
                        StatusCode::OK,
                        serde_json::json!({"state": "Preadopted", "namespace": "ns", "name": "r1"}),
                    ),
                    _ => (
                        StatusCode::ACCEPTED,
                        serde_json::json!({"state": "Pending", "namespace": "ns", "name": "r1", "pollSeconds": 1}),
                    ),
                };
                presented.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(token);
                warp::reply::with_status(warp::reply::json(&body), status)
            });
        let challenge = warp::get().and(warp::path!("v1" / "challenge")).map(|| {
            warp::reply::json(&serde_json::json!({"challenge": "c", "expiresInSeconds": 60}))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // No control channel: the runner reconnects (registering again) at once.
        tokio::spawn(warp::serve(challenge.or(register)).incoming(listener).run());
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_refused_stored_token_gives_way_to_the_environment_token() {
        let presented = Arc::new(Mutex::new(Vec::new()));
        let server = register_server(presented.clone()).await;
        let state_dir = std::env::temp_dir().join(format!("baton-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state_dir);
        StateDir::open(&state_dir)
            .and_then(|d| d.save_token("old"))
            .expect("state dir");
        let config = Config {
            server,
            name: "r1".into(),
            state_dir: state_dir.clone(),
            work_dir: state_dir.with_extension("work"),
            namespace: None,
            labels: BTreeMap::new(),
            backend: BackendKind::Local,
            tools_image: crate::backend::DEFAULT_TOOLS_IMAGE.into(),
            health_addr: "127.0.0.1:0".parse().expect("addr"),
            env_token: Some("new".into()),
            ping_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            once: None,
            direct_only: false,
            workspace: None,
            ca_file: None,
            ca_pem: None,
        };
        let seen = |n: usize| {
            let presented = presented.clone();
            async move {
                while presented.lock().map_or(0, |p| p.len()) < n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let ran = tokio::time::timeout(Duration::from_secs(20), run(config, seen(3))).await;
        assert!(matches!(ran, Ok(Ok(0))), "{ran:?}");
        let presented = presented.lock().map(|p| p.clone()).unwrap_or_default();
        assert_eq!(presented[..3], ["old", "new", "new"], "{presented:?}");
        let dir = StateDir::open(&state_dir).expect("state dir");
        assert_eq!(
            dir.token().expect("read"),
            None,
            "the refused token is gone"
        );
        let _ = std::fs::remove_dir_all(&state_dir);
    }

    #[test]
    fn labels_parse() {
        let l = parse_labels("pool=a, os=linux").unwrap_or_default();
        assert_eq!(l.get("pool").map(String::as_str), Some("a"));
        assert_eq!(l.len(), 2);
        assert_eq!(parse_labels("").map(|l| l.len()), Ok(0));
        assert!(parse_labels("novalue").is_err());
        assert!(parse_labels("=v").is_err());
    }
}
