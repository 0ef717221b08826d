//! HTTPS on the runner API without a cluster: certificates made here with rcgen, the
//! real `server::serve` (routes included) on 127.0.0.1:0 with an empty cache, and the
//! built binary for the start-up errors. Waits are bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod support_server;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use baton::runner::client::Client;
use baton::server::listen::Limits;
use baton::server::tls::{self, TlsFiles};
use baton::server::{self, ApiState, logs};
use kube::runtime::reflector;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A test CA that signs server certificates for 127.0.0.1.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A server certificate and its key, as PEM, with the certificate's DER to compare.
struct Leaf {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self) -> Leaf {
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// A directory of its own, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("baton-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    fn files(&self, leaf: &Leaf) -> TlsFiles {
        TlsFiles {
            cert: self.write("tls.crt", &leaf.cert),
            key: self.write("tls.key", &leaf.key),
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server's state with empty caches and a kube client pointing at a closed port.
fn state(dir: &Path, limits: Limits) -> ApiState {
    let logs = Arc::new(logs::LogStore::new(dir.join("logs"), logs::DEFAULT_CAP));
    let client = support_server::unreachable_client();
    support_server::state(client, logs, reflector::store().0, limits)
}

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start(dir: &Dir, files: &TlsFiles, every: Duration) -> Running {
    start_with(dir, files, every, Limits::default()).await
}

async fn start_with(dir: &Dir, files: &TlsFiles, every: Duration, limits: Limits) -> Running {
    let acceptor = tls::acceptor(files, every).unwrap();
    let (listener, addr) = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(server::serve(
        listener,
        state(&dir.0, limits),
        Some(acceptor),
        shutdown,
    ));
    Running { addr, stop, task }
}

/// A fresh client (so a fresh connection), trusting `ca` when given.
fn http(ca: Option<&str>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .tls_info(true);
    if let Some(pem) = ca {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

/// The certificate a new connection is served.
async fn served_cert(addr: SocketAddr, ca: &str) -> Vec<u8> {
    let res = http(Some(ca))
        .get(format!("https://{addr}/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("the peer certificate")
        .to_vec()
}

#[tokio::test]
async fn livez_answers_over_https_to_a_client_trusting_the_ca() {
    let dir = Dir::new("ok");
    let ca = Ca::new();
    let leaf = ca.leaf();
    let s = start(&dir, &dir.files(&leaf), tls::RELOAD_EVERY).await;
    let res = http(Some(&ca.pem))
        .get(format!("https://{}/livez", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.version(),
        reqwest::Version::HTTP_11,
        "ALPN says http/1.1"
    );
    let info = res.extensions().get::<reqwest::tls::TlsInfo>().cloned();
    assert_eq!(
        info.and_then(|i| i.peer_certificate().map(<[u8]>::to_vec)),
        Some(leaf.der)
    );
}

#[tokio::test]
async fn a_client_not_trusting_the_ca_gets_a_certificate_error() {
    let dir = Dir::new("untrusted");
    let ca = Ca::new();
    let s = start(&dir, &dir.files(&ca.leaf()), tls::RELOAD_EVERY).await;
    let err = http(None)
        .get(format!("https://{}/livez", s.addr))
        .send()
        .await
        .expect_err("an unknown issuer must be refused");
    let chain = format!("{err:?}");
    assert!(
        chain.contains("InvalidCertificate(UnknownIssuer)"),
        "{chain}"
    );
    // Trusting another CA (same subject name, other key) does not help either.
    let other = Ca::new();
    let err = http(Some(&other.pem))
        .get(format!("https://{}/livez", s.addr))
        .send()
        .await
        .expect_err("another CA must be refused");
    assert!(
        format!("{err:?}").contains("InvalidCertificate(BadSignature)"),
        "{err:?}"
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails_and_https_still_works() {
    let dir = Dir::new("plain");
    let ca = Ca::new();
    let s = start(&dir, &dir.files(&ca.leaf()), tls::RELOAD_EVERY).await;
    let res = http(None)
        .get(format!("http://{}/livez", s.addr))
        .send()
        .await;
    assert!(res.is_err(), "plain HTTP was answered: {res:?}");
    let res = http(Some(&ca.pem))
        .get(format!("https://{}/livez", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = Dir::new("handshake");
    let ca = Ca::new();
    let limits = Limits {
        handshake_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let s = start_with(&dir, &dir.files(&ca.leaf()), tls::RELOAD_EVERY, limits).await;
    // Nothing at all, and the first bytes of a ClientHello record.
    for first in [&b""[..], b"\x16\x03\x01\x02\x00\x01"] {
        let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let t0 = Instant::now();
        tcp.write_all(first).await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut sink))
            .await
            .expect("closed within 5s");
        let took = t0.elapsed();
        assert!(
            took >= limits.handshake_timeout && took < Duration::from_secs(2),
            "{first:?}: closed after {took:?}"
        );
    }
    // A real client still gets through.
    assert!(!served_cert(s.addr, &ca.pem).await.is_empty());
}

#[tokio::test]
async fn a_rewritten_certificate_reaches_new_connections_and_a_bad_one_is_ignored() {
    let dir = Dir::new("rotate");
    let ca = Ca::new();
    let first = ca.leaf();
    let files = dir.files(&first);
    let every = Duration::from_millis(100);
    let s = start(&dir, &files, every).await;
    assert_eq!(served_cert(s.addr, &ca.pem).await, first.der);

    let second = ca.leaf();
    assert_ne!(first.der, second.der);
    dir.files(&second);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let served = served_cert(s.addr, &ca.pem).await;
        if served == second.der {
            break;
        }
        assert_eq!(served, first.der, "neither the old nor the new certificate");
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 5s"
        );
        tokio::time::sleep(every).await;
    }

    // Garbage, then a certificate whose key is not in the key file: both kept out.
    let third = ca.leaf();
    for (cert, key) in [
        ("not a certificate", second.key.as_str()),
        (third.cert.as_str(), second.key.as_str()),
    ] {
        dir.write("tls.crt", cert);
        dir.write("tls.key", key);
        tokio::time::sleep(every * 3).await;
        for _ in 0..3 {
            assert_eq!(served_cert(s.addr, &ca.pem).await, second.der);
        }
    }
}

#[tokio::test]
async fn the_files_are_not_read_again_before_the_interval() {
    let dir = Dir::new("interval");
    let ca = Ca::new();
    let first = ca.leaf();
    let s = start(&dir, &dir.files(&first), Duration::from_secs(3600)).await;
    assert_eq!(served_cert(s.addr, &ca.pem).await, first.der);
    dir.files(&ca.leaf());
    assert_eq!(served_cert(s.addr, &ca.pem).await, first.der);
}

#[tokio::test]
async fn shutdown_closes_the_listener_and_serve_returns() {
    let dir = Dir::new("shutdown");
    let ca = Ca::new();
    let s = start(&dir, &dir.files(&ca.leaf()), tls::RELOAD_EVERY).await;
    // A kept-alive idle connection must not hold the shutdown.
    let kept = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let res = kept
        .get(format!("https://{}/livez", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    s.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("serve returned within 5s")
        .unwrap();
    let res = http(Some(&ca.pem))
        .get(format!("https://{}/livez", s.addr))
        .send()
        .await;
    assert!(res.is_err(), "answered after shutdown: {res:?}");
    drop(kept);
}

#[tokio::test]
async fn the_runner_client_reaches_the_server_with_its_ca_file_only() {
    let dir = Dir::new("agent");
    let ca = Ca::new();
    let s = start(&dir, &dir.files(&ca.leaf()), tls::RELOAD_EVERY).await;
    let url = format!("https://{}", s.addr);
    let ca_file = dir.write("ca.crt", &ca.pem);

    // Through TLS the server answers (and refuses an unknown token).
    let key = baton::domain::identity::Identity::generate().unwrap();
    let with_ca = Client::with_ca(&url, Some(&ca_file)).unwrap();
    let err = with_ca
        .control("r1", "ns", "bogus", &key, false)
        .await
        .err()
        .unwrap();
    assert_eq!(err.status(), Some(401), "{err}");

    let without = Client::new(&url).unwrap();
    let err = without
        .control("r1", "ns", "bogus", &key, false)
        .await
        .err()
        .unwrap();
    assert_eq!(err.status(), None, "{err}");
    // The message itself names the cause, as the agent logs it.
    assert!(
        err.to_string()
            .contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
}

#[test]
fn the_runner_client_names_a_bad_ca_file() {
    let dir = Dir::new("badca");
    let missing = dir.0.join("missing.crt");
    let cases = [
        (missing.clone(), "read the CA file"),
        (
            dir.write("empty.crt", "nothing here\n"),
            "holds no PEM certificate",
        ),
        (
            dir.write(
                "bad.crt",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
            "holds a bad certificate",
        ),
    ];
    for (path, want) in cases {
        let err = Client::with_ca("https://127.0.0.1:1", Some(&path))
            .err()
            .expect("a bad CA file is refused")
            .to_string();
        assert!(
            err.contains(want) && err.contains(&*path.to_string_lossy()),
            "{path:?}: {err}"
        );
    }
}

/// `baton ARGS` with no cluster to reach, killed after 30 s: (exit code, stderr).
fn baton(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("BATON_TLS_CERT_FILE")
        .env_remove("BATON_TLS_KEY_FILE")
        .env_remove("BATON_CA_FILE")
        .env_remove("BATON_CA_PEM")
        .env_remove("BATON_RUNNER_CA_FILE")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => {
            let out = out.unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("baton {args:?} still running after 30s");
        }
    }
}

#[test]
fn the_controller_refuses_half_a_tls_pair_and_names_bad_files() {
    let dir = Dir::new("startup");
    let ca = Ca::new();
    let leaf = ca.leaf();
    let other = ca.leaf();
    let cert = dir.write("tls.crt", &leaf.cert);
    let key = dir.write("tls.key", &leaf.key);
    let other_key = dir.write("other.key", &other.key);
    let junk = dir.write("junk.pem", "junk\n");
    let (cert, key, other_key, junk) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        other_key.to_str().unwrap(),
        junk.to_str().unwrap(),
    );
    let listen = ["controller", "--listen", "127.0.0.1:0"];
    fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [&["controller", "--listen", "127.0.0.1:0"][..], extra].concat()
    }

    let (code, err) = baton(&with(&["--tls-cert-file", cert]), &[]);
    assert!(code != 0 && err.contains("go together"), "{code} {err}");
    let (code, err) = baton(&listen, &[("BATON_TLS_KEY_FILE", key)]);
    assert!(code != 0 && err.contains("go together"), "{code} {err}");

    for (c, k, want) in [
        (
            junk,
            key,
            format!("TLS certificate file {junk} holds no PEM certificate"),
        ),
        (
            cert,
            junk,
            format!("TLS key file {junk} holds no usable PEM private key"),
        ),
        (
            "/nonexistent/tls.crt",
            key,
            "read the TLS certificate file /nonexistent/tls.crt".into(),
        ),
        (
            cert,
            other_key,
            format!("private key in {other_key} does not match the certificate in {cert}"),
        ),
    ] {
        let (code, err) = baton(&with(&["--tls-cert-file", c, "--tls-key-file", k]), &[]);
        assert!(code != 0 && err.contains(&want), "{c} {k}: {code} {err}");
    }
}

#[test]
fn the_runner_agent_names_a_bad_ca_file() {
    let dir = Dir::new("agentca");
    let junk = dir.write("junk.pem", "junk\n");
    let state = dir.0.join("state");
    let (code, err) = baton(
        &[
            "runner",
            "--server",
            "https://127.0.0.1:1",
            "--name",
            "r1",
            "--state-dir",
            state.to_str().unwrap(),
            "--backend",
            "local",
            "--health-addr",
            "127.0.0.1:0",
        ],
        &[("BATON_CA_FILE", junk.to_str().unwrap())],
    );
    let want = format!("the CA file {} holds no PEM certificate", junk.display());
    assert!(code != 0 && err.contains(&want), "{code} {err}");
}

#[test]
fn the_controller_names_a_bad_runner_ca_file_before_reaching_a_cluster() {
    let dir = Dir::new("runnerca");
    let junk = dir.write("junk.pem", "junk\n");
    let junk = junk.to_str().unwrap();
    for (file, want) in [
        (junk, format!("the CA file {junk} holds no PEM certificate")),
        (
            "/nonexistent/ca.crt",
            "read the CA file /nonexistent/ca.crt".to_owned(),
        ),
    ] {
        let (code, err) = baton(
            &[
                "controller",
                "--listen",
                "127.0.0.1:0",
                "--runner-ca-file",
                file,
            ],
            &[],
        );
        assert!(
            code != 0 && err.contains("--runner-ca-file") && err.contains(&want),
            "{file}: {code} {err}"
        );
    }
    // The same through the environment.
    let (code, err) = baton(
        &["controller", "--listen", "127.0.0.1:0"],
        &[("BATON_RUNNER_CA_FILE", junk)],
    );
    assert!(
        code != 0 && err.contains("holds no PEM certificate"),
        "{code} {err}"
    );
}
