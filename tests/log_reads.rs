//! Users reading logs through the real server on 127.0.0.1:0, without a cluster: a
//! fake API server (warp, also on 127.0.0.1:0) answers the TokenReview and the
//! SubjectAccessReview, the Job is put in the watch cache by hand. Offsets, hostile
//! ones included; followers that end with their client, outlive the request timeout
//! and end at shutdown. Waits are bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod support_server;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::crd::job::{JobPhase, JobStatus};
use baton::crd::{Job, JobSpec, Step};
use baton::server;
use baton::server::listen::Limits;
use baton::server::logs::{LogKey, LogStore, READ_CHUNK};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use warp::Filter;

/// What the fake API server saw of TokenReviews: each one's `spec`.
type Seen = Arc<Mutex<Vec<serde_json::Value>>>;

/// A fake API server: a TokenReview of token `good` is authenticated for audience
/// `baton`, of `apiserver` for the API server's audience only, anything else not
/// at all; every SubjectAccessReview is allowed.
async fn fake_api() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let log = seen.clone();
    let reviews = warp::path!("apis" / "authentication.k8s.io" / "v1" / "tokenreviews")
        .and(warp::post())
        .and(warp::body::json())
        .map(move |review: serde_json::Value| {
            let spec = review["spec"].clone();
            log.lock().unwrap().push(spec.clone());
            let status = match spec["token"].as_str() {
                Some("good") => serde_json::json!({
                    "authenticated": true,
                    "user": { "username": "system:serviceaccount:ns:reader" },
                    "audiences": ["baton"],
                }),
                Some("apiserver") => serde_json::json!({
                    "authenticated": true,
                    "user": { "username": "system:serviceaccount:ns:reader" },
                    "audiences": ["https://kubernetes.default.svc"],
                }),
                _ => serde_json::json!({ "authenticated": false, "error": "invalid bearer token" }),
            };
            warp::reply::json(&serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": spec,
                "status": status,
            }))
        });
    let access = warp::path!("apis" / "authorization.k8s.io" / "v1" / "subjectaccessreviews")
        .and(warp::post())
        .and(warp::body::json())
        .map(|review: serde_json::Value| {
            warp::reply::json(&serde_json::json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": review["spec"],
                "status": { "allowed": true },
            }))
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(reviews.or(access)).incoming(listener).run());
    (addr, seen)
}

fn job(phase: JobPhase) -> Job {
    let mut j = Job::new(
        "j",
        JobSpec {
            steps: vec![Step {
                name: "s".into(),
                image: "busybox".into(),
                script: Some("true".into()),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    j.metadata.namespace = Some("ns".into());
    j.metadata.uid = Some("uid-1".into());
    j.status = Some(JobStatus {
        phase: Some(phase),
        ..Default::default()
    });
    j
}

fn key() -> LogKey {
    LogKey {
        namespace: "ns".into(),
        name: "j".into(),
        uid: "uid-1".into(),
        step: "s".into(),
    }
}

struct Server {
    _dir: Dir,
    addr: SocketAddr,
    logs: Arc<LogStore>,
    jobs: Writer<Job>,
    seen: Seen,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The server with Job `ns/j` (step `s`) Running and its log holding `log`.
async fn start(tag: &str, limits: Limits, log: &[u8]) -> Server {
    let (api, seen) = fake_api().await;
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{api}").parse().unwrap()))
            .unwrap();
    let dir = std::env::temp_dir().join(format!("baton-log-reads-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let logs = Arc::new(LogStore::new(dir.clone(), 64 << 20));
    logs.append(&key(), 0, log).await.unwrap();
    let (store, mut jobs) = reflector::store();
    jobs.apply_watcher_event(&Event::InitDone);
    jobs.apply_watcher_event(&Event::Apply(job(JobPhase::Running)));
    let state = support_server::state(client, logs.clone(), store, limits);
    let (listener, addr) = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(server::serve(listener, state, None, shutdown));
    Server {
        _dir: Dir(dir),
        addr,
        logs,
        jobs,
        seen,
        stop,
        task,
    }
}

/// The log store's directory, removed when dropped.
struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn read(s: &Server, query: &str, token: &str) -> (u16, Vec<u8>) {
    let res = reqwest::Client::new()
        .get(format!("http://{}/v1/jobs/ns/j/logs?{query}", s.addr))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.bytes().await.unwrap().to_vec())
}

fn reason(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// Wait (bounded) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "not within 5s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reads_start_at_an_offset_and_bad_offsets_are_clean_4xx() {
    let log: Vec<u8> = (0..READ_CHUNK * 3 + 7)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let s = start("offsets", Limits::default(), &log).await;
    let size = log.len();
    for (offset, want) in [(0, &log[..]), (3, &log[3..]), (size, &b""[..])] {
        let (code, body) = read(&s, &format!("step=s&offset={offset}"), "good").await;
        assert_eq!((code, body.len()), (200, want.len()), "offset {offset}");
        assert!(body == want, "offset {offset}: other bytes");
    }
    let (code, body) = read(&s, "step=s", "good").await;
    assert_eq!((code, body.len()), (200, size), "no offset: all of it");
    let cases = [
        (format!("{}", size + 1), 416, "OffsetBeyondLog"),
        ("18446744073709551615".to_owned(), 416, "OffsetBeyondLog"),
        ("18446744073709551616".to_owned(), 400, "InvalidQuery"),
        ("99999999999999999999999999".to_owned(), 400, "InvalidQuery"),
        ("-1".to_owned(), 400, "InvalidQuery"),
        ("1e3".to_owned(), 400, "InvalidQuery"),
        ("".to_owned(), 400, "InvalidQuery"),
        ("0x10".to_owned(), 400, "InvalidQuery"),
    ];
    for (offset, status, why) in cases {
        for follow in ["false", "true"] {
            let q = format!("step=s&follow={follow}&offset={offset}");
            let (code, body) = read(&s, &q, "good").await;
            assert_eq!((code, reason(&body).as_str()), (status, why), "{q}");
        }
    }
    assert_eq!(s.logs.open_readers(), 0);
    assert_eq!(s.logs.followers(), 0);
    let seen = s.seen.lock().unwrap();
    assert!(seen.iter().all(|spec| spec["token"] == "good"), "{seen:?}");
}

#[tokio::test]
async fn only_tokens_minted_for_baton_are_taken() {
    let s = start("audience", Limits::default(), b"secret\n").await;
    for (token, status, why) in [
        ("apiserver", 401, "WrongAudience"),
        ("forged", 401, "Unauthenticated"),
    ] {
        let (code, body) = read(&s, "step=s", token).await;
        assert_eq!((code, reason(&body).as_str()), (status, why), "{token}");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("--audience baton"), "{text}");
    }
    assert_eq!(
        read(&s, "step=s", "good").await,
        (200, b"secret\n".to_vec())
    );
    // Every review asked for Baton's audience.
    let seen = s.seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for spec in seen.iter() {
        assert_eq!(spec["audiences"], serde_json::json!(["baton"]), "{spec}");
    }
}

#[tokio::test]
async fn a_follower_ends_when_its_client_goes_away() {
    let s = start("gone", Limits::default(), b"first\n").await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(
        b"GET /v1/jobs/ns/j/logs?step=s&follow=true HTTP/1.1\r\nHost: t\r\n\
          Authorization: Bearer good\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("first") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the stored log within 5s")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(s.logs.followers(), 1);
    // The step is still running and nothing is appended: only the client's going ends it.
    drop(tcp);
    let t0 = Instant::now();
    until("the follower ends with its client", || {
        s.logs.followers() == 0 && s.logs.open_readers() == 0
    })
    .await;
    eprintln!("follower ended {:?} after its client went", t0.elapsed());
}

#[tokio::test]
async fn a_follower_outlives_the_request_timeout_and_ends_with_its_step() {
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let mut s = start("follow", limits, b"one\n").await;
    let res = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/jobs/ns/j/logs?step=s&follow=true&offset=1",
            s.addr
        ))
        .bearer_auth("good")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let reading = tokio::spawn(async move { res.bytes().await.map(|b| b.to_vec()) });
    // Quiet for several request timeouts, then an append, then the Job ends.
    tokio::time::sleep(limits.request_timeout * 5).await;
    s.logs.append(&key(), 4, b"two\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.jobs
        .apply_watcher_event(&Event::Apply(job(JobPhase::Succeeded)));
    let body = tokio::time::timeout(Duration::from_secs(5), reading)
        .await
        .expect("the stream ends once the Job ended")
        .unwrap()
        .expect("a whole body");
    assert_eq!(body, b"ne\ntwo\n");
    until("no follower left", || s.logs.followers() == 0).await;
}

#[tokio::test]
async fn shutdown_ends_open_followers() {
    let s = start("shutdown", Limits::default(), b"x\n").await;
    let res = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/jobs/ns/j/logs?step=s&follow=true",
            s.addr
        ))
        .bearer_auth("good")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    until("the follower is open", || s.logs.followers() == 1).await;
    s.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("serve returned within 5s with a follower open")
        .unwrap();
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"x\n");
    assert_eq!(s.logs.followers(), 0);
}
