//! `kubectl baton job logs` (and `job run -f`): the client of the controller's log
//! route. The user's Kubernetes token goes to `--server`, so a plain `http://`
//! server is refused unless it is this machine (loopback) or `--insecure` says the
//! network is trusted; `--ca-file` trusts a private CA for `https://`. What a
//! step printed is stripped of terminal control sequences when stdout is a
//! terminal ([`super::terminal`]); `--raw` keeps the bytes.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;

use super::terminal::{Sanitizer, sanitize};
use crate::domain::ca::read_ca_file;

/// Where the logs come from, who asks, and how they are printed.
#[derive(Debug, clap::Args, Clone, Default)]
pub struct ServerArgs {
    /// The controller's server, e.g. https://baton.example.com (http:// only to
    /// this machine, e.g. http://127.0.0.1:8080 through a port-forward, or with
    /// --insecure).
    #[arg(long, value_name = "URL", env = "BATON_SERVER")]
    pub server: Option<String>,
    /// A Kubernetes bearer token whose user may `get` the Job, minted for Baton:
    /// `kubectl create token SA --audience baton`.
    #[arg(long, env = "BATON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read that token from this file at each request instead (a projected
    /// ServiceAccount token, which the kubelet rotates).
    #[arg(
        long,
        value_name = "FILE",
        env = "BATON_TOKEN_FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
    /// Also trust the CA certificate(s) in this PEM file for an https:// --server.
    #[arg(long, value_name = "PEM", env = "BATON_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Send the token over plain http:// to a host other than this machine (only on
    /// a network you trust: anyone on the path can read and reuse it).
    #[arg(long)]
    pub insecure: bool,
    /// Print logs as stored, terminal control sequences included (by default they
    /// are stripped when stdout is a terminal).
    #[arg(long)]
    pub raw: bool,
}

/// Why a `--server` URL is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServerUrlError {
    #[error("--server {url:?} is not a URL: {reason}")]
    Parse { url: String, reason: String },
    #[error("--server {0:?}: only http:// and https:// URLs")]
    Scheme(String),
    #[error(
        "--server {0}: plain http:// would send your token unencrypted to another machine; \
         use https:// (--ca-file for a private CA), a port-forward to 127.0.0.1, or \
         --insecure on a network you trust"
    )]
    Plaintext(String),
}

/// The server's base URL, if the token may be sent there: `https://`, or `http://`
/// to a loopback host (127.0.0.0/8, ::1, localhost), or any `http://` with `insecure`.
pub fn check_server(url: &str, insecure: bool) -> Result<String, ServerUrlError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| ServerUrlError::Parse {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    match parsed.scheme() {
        "https" => {}
        "http" if insecure || loopback(&parsed) => {}
        "http" => return Err(ServerUrlError::Plaintext(url.to_owned())),
        _ => return Err(ServerUrlError::Scheme(url.to_owned())),
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Whether the URL's host is this machine. The URL parser has already normalized
/// the host (`127.1` is 127.0.0.1, `LOCALHOST` is localhost, IPv6 in brackets).
fn loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => host == "localhost",
    }
}

/// The bearer token: given once, or read from a file at each request.
#[derive(Debug, Clone)]
enum Token {
    Fixed(String),
    File(PathBuf),
}

impl Token {
    /// The token now (a file is re-read: the kubelet rotates projected tokens).
    fn current(&self) -> anyhow::Result<String> {
        match self {
            Token::Fixed(t) => Ok(t.clone()),
            Token::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("read --token-file {}", path.display()))?;
                Ok(text.trim().to_owned())
            }
        }
    }
}

/// The log route's client: a checked server, an HTTP client, the token.
pub struct LogClient {
    base: String,
    http: reqwest::Client,
    token: Token,
    /// Strip control sequences from what is printed.
    sanitize: bool,
}

impl LogClient {
    pub fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        let server = args.server.as_deref().ok_or_else(|| {
            anyhow!("logs, artifacts and uploads go through the controller's server: pass --server URL or set BATON_SERVER")
        })?;
        let base = check_server(server, args.insecure)?;
        let token = match (&args.token, &args.token_file) {
            (Some(t), _) => Token::Fixed(t.clone()),
            (None, Some(path)) => Token::File(path.clone()),
            (None, None) => bail!(
                "the controller's server needs a Kubernetes bearer token: pass --token or set BATON_TOKEN (minted for Baton: `kubectl create token SA --audience baton`), or --token-file"
            ),
        };
        // A file that cannot be read now is refused now, not at the first request.
        token.current()?;
        Ok(Self {
            base,
            http: http_client(args.ca_file.as_deref())?,
            token,
            sanitize: !args.raw && std::io::stdout().is_terminal(),
        })
    }

    /// GET `path?query` on the server with the token; a refusal is an error
    /// naming `what` with the server's words (stripped, always: they reach the
    /// terminal too).
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .bearer_auth(self.token.current()?)
            .send()
            .await
            .with_context(|| format!("reach the server at {}", self.base))?;
        let status = res.status();
        if !status.is_success() {
            let body = sanitize(&res.text().await.unwrap_or_default());
            bail!("the server refused {what}: {status} {body}");
        }
        Ok(res)
    }

    /// A request to `path` on the server, carrying the token.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let token = self.token.current()?;
        Ok(self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token))
    }

    /// The server's base URL, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A line of our own (a step's header), stripped like the logs.
    pub fn header(&self, text: &str) -> String {
        if self.sanitize {
            sanitize(text)
        } else {
            text.to_owned()
        }
    }

    /// Print one step's log to stdout (following it with `follow`).
    pub async fn print_step(
        &self,
        ns: &str,
        name: &str,
        step: &str,
        follow: bool,
    ) -> anyhow::Result<()> {
        let follow = if follow { "true" } else { "false" };
        let res = self
            .get(
                &format!("/v1/jobs/{ns}/{name}/logs"),
                &[("step", step), ("follow", follow)],
                &format!("the logs of step {step}"),
            )
            .await?;
        let mut body = res.bytes_stream();
        let mut filter = self.sanitize.then(Sanitizer::default);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("read the log stream")?;
            match filter.as_mut() {
                Some(f) => write_out(&f.feed(&chunk))?,
                None => write_out(&chunk)?,
            }
        }
        if let Some(f) = filter.as_mut() {
            write_out(&f.finish())?;
        }
        Ok(())
    }
}

fn write_out(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).context("write to stdout")?;
    out.flush().context("write to stdout")
}

/// An HTTP client trusting the usual roots and, with `ca_file`, its certificates.
fn http_client(ca_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
    if let Some(path) = ca_file {
        for der in read_ca_file(path).context("--ca-file (BATON_CA_FILE)")? {
            let ca = reqwest::Certificate::from_der(&der)
                .with_context(|| format!("--ca-file {}: a bad certificate", path.display()))?;
            builder = builder.add_root_certificate(ca);
        }
    }
    builder.build().context("build the HTTP client")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_token_file_is_read_at_each_request_and_must_exist_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let args = |file: &Path| ServerArgs {
            server: Some("https://baton.example.com".into()),
            token_file: Some(file.to_owned()),
            ..Default::default()
        };
        let missing = LogClient::new(&args(&path)).err().unwrap();
        assert!(
            format!("{missing:#}").contains("--token-file"),
            "{missing:#}"
        );
        std::fs::write(&path, "first\n").unwrap();
        let client = LogClient::new(&args(&path)).unwrap();
        assert_eq!(client.token.current().unwrap(), "first");
        // The kubelet rotates the projected token: the next request sends the new one.
        std::fs::write(&path, "second").unwrap();
        assert_eq!(client.token.current().unwrap(), "second");
    }

    #[test]
    fn the_token_goes_over_plain_http_only_to_this_machine() {
        let ok = |u: &str| Ok(u.trim_end_matches('/').to_owned());
        let plain = |u: &str| Err(ServerUrlError::Plaintext(u.to_owned()));
        let cases: Vec<(&str, bool, Result<String, ServerUrlError>)> = vec![
            (
                "https://baton.example.com",
                false,
                ok("https://baton.example.com"),
            ),
            ("https://10.0.0.1:8443/", false, ok("https://10.0.0.1:8443")),
            ("http://127.0.0.1:8080", false, ok("http://127.0.0.1:8080")),
            (
                "http://127.10.20.30:8080/",
                false,
                ok("http://127.10.20.30:8080"),
            ),
            ("http://127.1:8080", false, ok("http://127.1:8080")),
            ("http://localhost:8080", false, ok("http://localhost:8080")),
            ("http://LOCALHOST:8080", false, ok("http://LOCALHOST:8080")),
            ("http://[::1]:8080", false, ok("http://[::1]:8080")),
            (
                "http://[::ffff:127.0.0.1]:8080",
                false,
                ok("http://[::ffff:127.0.0.1]:8080"),
            ),
            (
                "http://baton.baton-system:8080",
                false,
                plain("http://baton.baton-system:8080"),
            ),
            ("http://10.0.0.1:8080", false, plain("http://10.0.0.1:8080")),
            ("http://0.0.0.0:8080", false, plain("http://0.0.0.0:8080")),
            (
                "http://localhost.evil.example",
                false,
                plain("http://localhost.evil.example"),
            ),
            (
                "http://127.0.0.1.nip.io",
                false,
                plain("http://127.0.0.1.nip.io"),
            ),
            (
                "http://localhost@evil.example",
                false,
                plain("http://localhost@evil.example"),
            ),
            ("http://[::2]:8080", false, plain("http://[::2]:8080")),
            (
                "http://baton.baton-system:8080",
                true,
                ok("http://baton.baton-system:8080"),
            ),
            (
                "ftp://127.0.0.1",
                false,
                Err(ServerUrlError::Scheme("ftp://127.0.0.1".into())),
            ),
            (
                "file:///etc/passwd",
                true,
                Err(ServerUrlError::Scheme("file:///etc/passwd".into())),
            ),
        ];
        for (url, insecure, want) in cases {
            assert_eq!(
                check_server(url, insecure),
                want,
                "{url} insecure={insecure}"
            );
        }
        assert!(matches!(
            check_server("127.0.0.1:8080", false),
            Err(ServerUrlError::Parse { .. }) | Err(ServerUrlError::Scheme(_))
        ));
        assert!(matches!(
            check_server("not a url", false),
            Err(ServerUrlError::Parse { .. })
        ));
        let message = check_server("http://10.0.0.1", false)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("unencrypted") && message.contains("--insecure"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_ca_file_is_named() {
        let err = http_client(Some(Path::new("/nonexistent/ca.crt"))).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("--ca-file") && text.contains("/nonexistent/ca.crt"),
            "{text}"
        );
    }
}
