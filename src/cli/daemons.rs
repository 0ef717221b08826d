//! `baton controller` and `baton runner` (the agent): flags, then the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::backend::local::dirs as local_dirs;
use crate::controller;
use crate::crd::duration;
use crate::domain::scope::Scope;
use crate::runner::{self, BackendKind};
use crate::server::ApiConfig;
use crate::server::input::is_dns_label;

fn parse_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
}

/// `baton controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Where the runner API and /healthz, /livez, /readyz listen. Loopback by
    /// default: in a pod (or for runners on other machines) pass e.g.
    /// --listen 0.0.0.0:8080, as the chart does.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        env = "BATON_LISTEN"
    )]
    pub listen: SocketAddr,
    /// Open connections the runner API serves at most; over it, a new connection
    /// is closed at once. Each connected runner holds one (its control channel).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..=1_048_576),
        env = "BATON_MAX_CONNECTIONS"
    )]
    pub max_connections: u32,
    /// Watch and serve only these namespaces: repeat the flag or separate names
    /// by commas (default: all namespaces).
    #[arg(
        long,
        short = 'n',
        value_name = "NS[,NS...]",
        value_delimiter = ',',
        env = "BATON_NAMESPACE"
    )]
    pub namespace: Vec<String>,
    /// How often the control channel carries a ping.
    #[arg(long, value_parser = parse_duration, default_value = "10s", env = "BATON_PING_INTERVAL")]
    pub ping_interval: Duration,
    /// How often a Pending runner polls.
    #[arg(long, value_parser = parse_duration, default_value = "5s", env = "BATON_POLL_INTERVAL")]
    pub poll_interval: Duration,
    /// Pending (tokenless) Runners allowed per namespace that opted in with the
    /// label baton.dev/pending-runners=allow; past it registrations get 429.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 20,
        env = "BATON_MAX_PENDING_RUNNERS"
    )]
    pub max_pending_runners: usize,
    /// Requests per second one client address may make to the routes anyone may
    /// call (/v1/challenge, /v1/register), with bursts of four times that; past it
    /// 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..), env = "BATON_REGISTER_RATE")]
    pub register_rate: u32,
    /// Requests to the API server this controller starts per second, at most
    /// (counted in one-second windows), like kube-controller-manager's
    /// --kube-api-qps; leader election's Lease requests are not held. Unset: no
    /// client-side limit.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), env = "BATON_KUBE_API_QPS")]
    pub kube_api_qps: Option<u32>,
    /// Where step logs are stored, under DIR/logs (mode 0700). Default:
    /// $TMPDIR/baton-data, which must then be this user's own directory (it is
    /// created 0700, and group or other permissions on it are removed).
    #[arg(long, value_name = "DIR", env = "BATON_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cap on one step's stored log, in bytes; past it a marker line says so.
    #[arg(long, value_name = "BYTES", default_value_t = crate::server::logs::DEFAULT_CAP, env = "BATON_LOG_CAP")]
    pub log_cap: u64,
    /// Where change archives (and finished Jobs' logs) are kept: s3://BUCKET[/PREFIX]
    /// (also S3-compatible servers: AWS_ENDPOINT_URL, AWS_ALLOW_HTTP), gs://, az://
    /// or file:///DIR; credentials from the provider's usual environment variables.
    /// Default: DIR/store beside the logs. On object storage, finished logs
    /// survive this replica's disk and any leader serves them.
    #[arg(long, value_name = "URL", env = "BATON_STORE")]
    pub store: Option<String>,
    /// Cap on one archive sent to the server (a step's changes, or content
    /// uploaded with `job run --upload`), in bytes (compressed).
    #[arg(long, value_name = "BYTES", default_value_t = crate::server::DEFAULT_ARTIFACT_CAP, env = "BATON_ARTIFACT_CAP")]
    pub artifact_cap: u64,
    /// An upload (`job run --upload`) that no Job names is removed once it is
    /// this old.
    #[arg(long, value_parser = parse_duration, default_value = "1h", env = "BATON_UPLOAD_RETENTION")]
    pub upload_retention: Duration,
    /// An active Job's runner disconnected this long is lost: its Job is handed
    /// to another runner (at a new epoch).
    #[arg(long, value_parser = parse_duration, default_value = "60s", env = "BATON_RUNNER_LOST_AFTER")]
    pub runner_lost_after: Duration,
    /// A Pending Runner (no token, not adopted or rejected) not heard from this
    /// long is deleted.
    #[arg(long, value_parser = parse_duration, default_value = "1h", env = "BATON_PENDING_RUNNER_TTL")]
    pub pending_runner_ttl: Duration,
    /// Keep finished Jobs' step pods and workspace claims (for debugging); by
    /// default they are removed when the Job finishes (logs and status stay).
    #[arg(long, env = "BATON_KEEP_STEP_PODS")]
    pub keep_step_pods: bool,
    /// The runner API's URL as on-demand runner pods reach it (e.g.
    /// http://baton.baton-system:8080). Unset: Jobs without runnerSelector wait with
    /// reason OnDemandUnavailable.
    #[arg(long, value_name = "URL", env = "BATON_RUNNER_SERVER_URL")]
    pub runner_server_url: Option<String>,
    /// Image of on-demand runner pods (a Job's spec.onDemand.image wins).
    #[arg(long, value_name = "IMAGE", default_value = controller::on_demand::DEFAULT_IMAGE, env = "BATON_RUNNER_IMAGE")]
    pub runner_image: String,
    /// A PEM file with the CA certificate(s) on-demand runner pods trust for an
    /// https:// --runner-server-url (a private CA). Checked at start; read again for
    /// each new pod (a rotated file is picked up); its certificates (nothing else
    /// of the file) go into the pod as BATON_CA_PEM.
    #[arg(long, value_name = "PEM", env = "BATON_RUNNER_CA_FILE")]
    pub runner_ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub leader: LeaderArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Leader election flags of `baton controller`.
#[derive(Debug, Args)]
pub struct LeaderArgs {
    /// Campaign for a coordination Lease and reconcile and serve runners only
    /// while holding it (run two replicas with this). The leader labels its pod
    /// baton.dev/leader=LEASE, for a Service to select.
    #[arg(long, env = "BATON_LEADER_ELECT")]
    pub leader_elect: bool,
    /// The Lease's name.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "baton-controller",
        env = "BATON_LEADER_ELECT_LEASE"
    )]
    pub leader_elect_lease: String,
    /// The Lease's namespace (default: $POD_NAMESPACE, else the pod's own namespace).
    #[arg(long, value_name = "NS", env = "POD_NAMESPACE")]
    pub leader_elect_namespace: Option<String>,
    /// This replica's identity, and the pod it labels (default: $POD_NAME, else the host name).
    #[arg(long, value_name = "NAME", env = "POD_NAME")]
    pub leader_elect_identity: Option<String>,
    /// A leader silent this long is replaced.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    pub leader_elect_lease_duration: Duration,
    /// A leader that could not renew for this long steps down (exits).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub leader_elect_renew_deadline: Duration,
    /// How often standbys retry and the leader renews.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub leader_elect_retry_period: Duration,
}

/// The service account's namespace file of a pod.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl LeaderArgs {
    fn config(self) -> anyhow::Result<Option<controller::leader::LeaderConfig>> {
        if !self.leader_elect {
            return Ok(None);
        }
        let namespace = match self.leader_elect_namespace.filter(|n| !n.trim().is_empty()) {
            Some(ns) => ns,
            None => std::fs::read_to_string(POD_NAMESPACE_FILE)
                .map(|s| s.trim().to_owned())
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--leader-elect needs the Lease's namespace: --leader-elect-namespace or $POD_NAMESPACE (not running in a pod: no {POD_NAMESPACE_FILE})"
                    )
                })?,
        };
        // In a pod the identity is the pod's name, and that pod gets the leader label.
        let pod = self.leader_elect_identity.filter(|n| !n.trim().is_empty());
        let identity = match &pod {
            Some(p) => p.clone(),
            None => hostname(),
        };
        Ok(Some(controller::leader::LeaderConfig {
            lease: self.leader_elect_lease,
            namespace,
            identity,
            pod,
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        }))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("baton-{}", std::process::id()))
}

/// `baton runner --server URL --name NAME --state-dir DIR`: the agent.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The controller's runner API, e.g. http://baton.baton-system:8080.
    #[arg(long, value_name = "URL", env = "BATON_SERVER")]
    pub server: String,
    /// This runner's name (its Runner's name; a DNS label).
    #[arg(long, env = "BATON_RUNNER_NAME")]
    pub name: String,
    /// Holds the runner id and the token.
    #[arg(long, value_name = "DIR", env = "BATON_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Where the local backend runs steps (workspaces, logs, outputs): made 0700,
    /// and refused inside --state-dir or around it (steps must not find the token).
    /// Default: beside the state directory, its name + "-work" (/srv/r1-work).
    #[arg(long, value_name = "DIR", env = "BATON_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Where its Runner lives (a token's own namespace wins).
    #[arg(long, short = 'n', env = "BATON_NAMESPACE")]
    pub namespace: Option<String>,
    /// Labels for its Runner: k=v,k2=v2.
    #[arg(long, value_parser = runner::parse_labels, default_value = "")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[arg(long, value_enum, default_value = "kubernetes")]
    pub backend: BackendKind,
    /// Kubernetes backend: the Baton image step pods copy `baton-entrypoint` from
    /// (an init container), so step images need no shell. Use this release's image.
    #[arg(long, value_name = "IMAGE", env = "BATON_TOOLS_IMAGE",
          default_value = crate::backend::DEFAULT_TOOLS_IMAGE)]
    pub tools_image: String,
    /// Where /livez and /readyz listen.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9090")]
    pub health_addr: SocketAddr,
    /// Reconnect when the control channel is quiet this long.
    #[arg(long, value_parser = parse_duration, default_value = "30s", env = "BATON_RUNNER_PING_TIMEOUT")]
    pub ping_timeout: Duration,
    /// First retry delay; doubles per failure, with jitter.
    #[arg(long, value_parser = parse_duration, default_value = "500ms", env = "BATON_RUNNER_BACKOFF_BASE")]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[arg(long, value_parser = parse_duration, default_value = "30s", env = "BATON_RUNNER_BACKOFF_MAX")]
    pub backoff_max: Duration,
    /// Run one Job, then exit 0 (an on-demand runner pod); exit 0 as well when no
    /// Job is assigned within --once-wait.
    #[arg(long)]
    pub once: bool,
    /// Take only Jobs that name this runner (spec.runnerName), never one by
    /// its labels; the Runner's status says so (directOnly).
    #[arg(long, env = "BATON_RUNNER_DIRECT_ONLY")]
    pub direct_only: bool,
    /// With --once: how long to wait for a Job.
    #[arg(long, value_parser = parse_duration, default_value = "10m", requires = "once")]
    pub once_wait: Duration,
    /// Also trust the CA certificate(s) in this PEM file for an https:// --server.
    #[arg(long, value_name = "PEM", env = "BATON_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Also trust the CA certificate(s) in this PEM text (not a path) for an
    /// https:// --server; on-demand runner pods get the controller's
    /// --runner-ca-file this way. With --ca-file, both are trusted.
    #[arg(
        long,
        value_name = "PEM_TEXT",
        env = "BATON_CA_PEM",
        hide_env_values = true
    )]
    pub ca_pem: Option<String>,
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}

/// `--namespace` as a [`Scope`], each name a DNS label.
fn served_namespaces(flags: &[String]) -> anyhow::Result<Scope> {
    let scope = Scope::from_flags(flags);
    if let Scope::Only(names) = &scope
        && let Some(bad) = names.iter().find(|n| !is_dns_label(n))
    {
        anyhow::bail!("--namespace {bad:?} is not a namespace name (a DNS label)");
    }
    Ok(scope)
}

pub async fn controller(args: ControllerArgs) -> anyhow::Result<i32> {
    let leader_election = args.leader.config()?;
    let config = controller::Config {
        listen: args.listen,
        api: ApiConfig {
            ping_interval: args.ping_interval,
            poll_interval: args.poll_interval,
            namespaces: served_namespaces(&args.namespace)?,
            max_pending_runners: args.max_pending_runners,
            limits: crate::server::listen::Limits {
                max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
                ..Default::default()
            },
            rate: crate::server::rate::RateConfig {
                per_second: f64::from(args.register_rate),
                burst: f64::from(args.register_rate) * 4.0,
            },
            artifact_cap: args.artifact_cap,
        },
        data_dir: args.data_dir,
        log_cap: args.log_cap,
        store: args.store.filter(|u| !u.trim().is_empty()),
        upload_retention: args.upload_retention,
        runner_lost_after: args.runner_lost_after,
        pending_runner_ttl: args.pending_runner_ttl,
        keep_step_pods: args.keep_step_pods,
        on_demand: controller::on_demand::OnDemandConfig {
            server_url: args.runner_server_url.filter(|u| !u.trim().is_empty()),
            image: args.runner_image,
            ca: args
                .runner_ca_file
                .filter(|p| !p.as_os_str().is_empty())
                .map(controller::on_demand::RunnerCa::load)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--runner-ca-file (BATON_RUNNER_CA_FILE): {e}"))?,
        },
        leader_election,
        tls: args.tls.files()?,
        kube_api_qps: args.kube_api_qps.and_then(std::num::NonZeroU32::new),
    };
    controller::run(config, shutdown_signal()).await?;
    Ok(0)
}

pub async fn agent(args: AgentArgs) -> anyhow::Result<i32> {
    if !crate::server::input::is_dns_label(&args.name) {
        anyhow::bail!(
            "--name {:?} must be a DNS label: 1 to 63 of a-z, 0-9 and '-'",
            args.name
        );
    }
    let work_dir = match args.work_dir.filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => local_dirs::default_work_dir(&args.state_dir).map_err(anyhow::Error::msg)?,
    };
    if args.backend == BackendKind::Local {
        local_dirs::private_dir(&work_dir).map_err(|e| anyhow::anyhow!("--work-dir: {e}"))?;
        local_dirs::apart(&work_dir, &args.state_dir).map_err(anyhow::Error::msg)?;
        local_dirs::shield_process().map_err(anyhow::Error::msg)?;
    }
    let env_token = std::env::var("BATON_RUNNER_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let config = runner::Config {
        server: args.server,
        name: args.name,
        state_dir: args.state_dir,
        work_dir,
        namespace: args.namespace,
        labels: args.labels,
        backend: args.backend,
        tools_image: args.tools_image,
        health_addr: args.health_addr,
        env_token,
        ping_timeout: args.ping_timeout,
        backoff_base: args.backoff_base,
        backoff_max: args.backoff_max,
        once: args.once.then_some(args.once_wait),
        direct_only: args.direct_only,
        workspace: None,
        ca_file: args.ca_file.filter(|p| !p.as_os_str().is_empty()),
        ca_pem: args.ca_pem.filter(|p| !p.trim().is_empty()),
    };
    Ok(runner::run(config, shutdown_signal()).await?)
}

/// `baton controller`'s HTTPS: both files or neither.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Serve the runner API and health routes over HTTPS only, with this PEM
    /// certificate (chain); re-read when the file changes. Needs --tls-key-file.
    #[arg(long, value_name = "PEM", env = "BATON_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of --tls-cert-file.
    #[arg(long, value_name = "PEM", env = "BATON_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
}

impl TlsArgs {
    /// Checked here rather than by clap: an empty variable (a chart's unset value)
    /// counts as unset, and half a pair, by flag or by environment, gets one answer.
    pub fn files(self) -> anyhow::Result<Option<crate::server::tls::TlsFiles>> {
        let set = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        match (set(self.tls_cert_file), set(self.tls_key_file)) {
            (Some(cert), Some(key)) => Ok(Some(crate::server::tls::TlsFiles { cert, key })),
            (None, None) => Ok(None),
            _ => anyhow::bail!(
                "--tls-cert-file (BATON_TLS_CERT_FILE) and --tls-key-file (BATON_TLS_KEY_FILE) \
                 go together: set both to serve HTTPS, or neither"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn namespaces(args: &[&str]) -> anyhow::Result<Scope> {
        let cli = Cli::try_parse_from([&["baton", "controller"], args].concat())?;
        let Command::Controller(args) = cli.command else {
            anyhow::bail!("not the controller command");
        };
        served_namespaces(&args.namespace)
    }

    #[test]
    fn namespace_flag_repeats_or_takes_commas() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "*"),
            (&["--namespace", "a"], "a"),
            (&["-n", "a", "-n", "b"], "a,b"),
            (&["--namespace", "b,a"], "a,b"),
            (&["--namespace=a,b", "-n", "c"], "a,b,c"),
        ];
        for (args, want) in cases {
            let got = namespaces(args).map(|s| s.to_string());
            assert_eq!(got.ok().as_deref(), Some(*want), "{args:?}");
        }
    }

    fn kube_api_qps(args: &[&str]) -> anyhow::Result<Option<u32>> {
        let cli = Cli::try_parse_from([&["baton", "controller"], args].concat())?;
        let Command::Controller(args) = cli.command else {
            anyhow::bail!("not the controller command");
        };
        Ok(args.kube_api_qps)
    }

    #[test]
    fn kube_api_qps_is_unset_by_default_and_refuses_what_is_no_rate() {
        assert_eq!(kube_api_qps(&[]).ok(), Some(None));
        assert_eq!(kube_api_qps(&["--kube-api-qps", "50"]).ok(), Some(Some(50)));
        for bad in ["0", "-1", "2.5", "fast", "", "4294967296"] {
            let got = kube_api_qps(&[&format!("--kube-api-qps={bad}")]);
            assert!(
                got.as_ref()
                    .is_err_and(|e| e.to_string().contains("--kube-api-qps")),
                "{bad:?}: {got:?}"
            );
        }
    }

    #[test]
    fn a_namespace_that_is_no_dns_label_is_refused() {
        for bad in ["A", "a_b", "a,-b"] {
            let err = namespaces(&["--namespace", bad]).map(|s| s.to_string());
            assert!(
                err.as_ref()
                    .is_err_and(|e| e.to_string().contains("not a namespace name")),
                "{bad}: {err:?}"
            );
        }
    }
}
