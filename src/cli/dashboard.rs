//! `kubectl baton dashboard [--port N] [--address 127.0.0.1] [--open]`: serve the
//! web UI ([`crate::dashboard`]) with the user's kubeconfig credentials. It binds
//! loopback only, unless `--behind-auth-proxy` says an authenticating proxy stands
//! in front of it (then `--public-host` names what browsers call it).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use warp::http::HeaderName;

use super::job_logs::{LogClient, ServerArgs};
use super::plugin::KubeArgs;
use crate::dashboard::access::Access;
use crate::dashboard::guard::Guard;
use crate::dashboard::live::Live;
use crate::dashboard::proxy_user::{self, ProxyUsers};
use crate::dashboard::{Dash, serve};

/// `dashboard` flags.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Port to listen on (0: any free port; the URL is printed).
    #[arg(long, default_value = "8765")]
    pub port: u16,
    /// Address to listen on: loopback unless --behind-auth-proxy.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// Open the dashboard in the browser (xdg-open).
    #[arg(long)]
    pub open: bool,
    /// Show Runners and Jobs of every namespace (the user must be allowed to list them).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// An authenticating proxy stands in front: allow a non-loopback --address.
    #[arg(long)]
    pub behind_auth_proxy: bool,
    /// With --behind-auth-proxy: a Host the proxy forwards (repeat for more).
    #[arg(long, value_name = "HOST[:PORT]", requires = "behind_auth_proxy")]
    pub public_host: Vec<String>,
    /// With --behind-auth-proxy: act as the user the proxy names in this header
    /// (e.g. X-Forwarded-User); a request without it is refused (401).
    #[arg(long, value_name = "HEADER", requires = "behind_auth_proxy")]
    pub proxy_user_header: Option<String>,
    /// With --proxy-user-header: the header of that user's comma-separated groups
    /// (e.g. X-Forwarded-Groups).
    #[arg(long, value_name = "HEADER", requires = "proxy_user_header")]
    pub proxy_groups_header: Option<String>,
    /// Where the steps' logs come from (optional: without it, no logs).
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Refuse an address nobody but this machine's user should reach, unless a proxy
/// authenticates whoever can.
pub fn check_address(
    addr: IpAddr,
    behind_auth_proxy: bool,
    public_hosts: &[String],
) -> anyhow::Result<()> {
    if addr.is_loopback() {
        return Ok(());
    }
    if !behind_auth_proxy {
        bail!(
            "refusing to listen on {addr}: the dashboard acts with your credentials for anyone \
             who reaches it. Use a loopback address, or --behind-auth-proxy when an \
             authenticating proxy stands in front of it"
        );
    }
    if public_hosts.is_empty() {
        bail!("--behind-auth-proxy needs --public-host: the Host names the proxy forwards");
    }
    Ok(())
}

/// The proxied users' headers (validated names), and impersonating clients over
/// `config`; None when the dashboard acts as itself.
fn proxy_users(args: &DashboardArgs, config: &kube::Config) -> anyhow::Result<Option<ProxyUsers>> {
    let header = |flag: &str, h: &str| {
        HeaderName::from_bytes(h.as_bytes())
            .with_context(|| format!("{flag} {h:?} is not a header name"))
    };
    let Some(user) = &args.proxy_user_header else {
        return Ok(None);
    };
    let groups = args.proxy_groups_header.as_deref();
    Ok(Some(ProxyUsers {
        user_header: header("--proxy-user-header", user)?,
        groups_header: groups
            .map(|g| header("--proxy-groups-header", g))
            .transpose()?,
        client_as: proxy_user::impersonating(config.clone()),
    }))
}

/// A fresh CSRF token for this process.
fn token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("random CSRF token: {e}"))?;
    Ok(hex::encode(bytes))
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<i32> {
    check_address(args.address, args.behind_auth_proxy, &args.public_host)?;
    // Checked before anything else: a refused --server, or one without a token.
    let logs = match args.server.server {
        Some(_) => Some(Arc::new(LogClient::new(&args.server)?)),
        None => None,
    };
    let (config, ns) = args.kube.config().await?;
    let proxy = proxy_users(&args, &config)?.map(Arc::new);
    let client = kube::Client::try_from(config)?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.address, args.port))
        .await
        .with_context(|| format!("listen on {}:{}", args.address, args.port))?;
    let addr = listener.local_addr().context("the listener's address")?;
    let namespace = (!args.all_namespaces).then_some(ns.as_str());
    let dash = Arc::new(Dash {
        live: Live::start(&client, namespace),
        access: Access::new(client.clone()),
        guard: Arc::new(Guard::new(addr, &args.public_host, token()?)),
        logs,
        proxy,
        scope: namespace.map_or("all namespaces".to_owned(), |n| format!("namespace {n}")),
        client,
    });
    let url = format!("http://{addr}/");
    eprintln!("dashboard listening on {url} (Ctrl-C stops it)");
    if args.open {
        open(&url);
    }
    tokio::select! {
        () = serve(dash, listener) => {}
        r = tokio::signal::ctrl_c() => r.context("wait for Ctrl-C")?,
    }
    Ok(0)
}

/// Ask the desktop to open `url`; say so when it cannot.
fn open(url: &str) {
    let opened = std::process::Command::new("xdg-open")
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = opened {
        eprintln!("could not open a browser ({e}); open {url} yourself");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn loopback_is_always_allowed_anything_else_only_behind_a_proxy_with_its_hosts() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let hosts = vec!["baton.example.com".to_owned()];
        assert!(check_address(ip("127.0.0.1"), false, &[]).is_ok());
        assert!(check_address(ip("::1"), false, &[]).is_ok());
        let e = check_address(ip("0.0.0.0"), false, &[]).unwrap_err();
        assert!(e.to_string().contains("--behind-auth-proxy"), "{e}");
        assert!(check_address(ip("192.168.1.5"), false, &hosts).is_err());
        assert!(check_address(ip("0.0.0.0"), true, &[]).is_err(), "no host");
        assert!(check_address(ip("0.0.0.0"), true, &hosts).is_ok());
    }

    #[test]
    fn proxied_users_only_behind_a_proxy_and_groups_only_with_a_user_header() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let all = ["baton", "dashboard"].iter().chain(args);
            crate::cli::Cli::try_parse_from(all).map(|_| ())
        };
        let alone = parse(&["--proxy-user-header", "X-Forwarded-User"]).unwrap_err();
        assert!(alone.to_string().contains("--behind-auth-proxy"), "{alone}");
        let groups = [
            "--behind-auth-proxy",
            "--proxy-groups-header",
            "X-Forwarded-Groups",
        ];
        let e = parse(&groups).unwrap_err();
        assert!(e.to_string().contains("--proxy-user-header"), "{e}");
        let both = [
            "--behind-auth-proxy",
            "--proxy-user-header",
            "X-Forwarded-User",
            "--proxy-groups-header",
            "X-Forwarded-Groups",
        ];
        assert!(parse(&both).is_ok());
    }

    #[test]
    fn tokens_are_fresh_and_long() {
        let (a, b) = (token().unwrap(), token().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
