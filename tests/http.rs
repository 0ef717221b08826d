//! The runner API's listener against hostile clients, without a cluster: the real
//! `server::serve` on 127.0.0.1:0 (plain HTTP) with short limits, and raw TCP
//! clients that send half a header, hold connections, upload slowly or stop
//! reading. Waits are bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/server.rs"]
mod support_server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use baton::server::listen::Limits;
use baton::server::{self, ApiState, logs};
use kube::runtime::reflector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The server's state with empty caches and a kube client pointing at a closed port.
fn state(tag: &str, limits: Limits) -> ApiState {
    let dir = std::env::temp_dir().join(format!("baton-http-{tag}-{}", std::process::id()));
    let logs = Arc::new(logs::LogStore::new(dir.join("logs"), logs::DEFAULT_CAP));
    let client = support_server::unreachable_client();
    support_server::state(client, logs, reflector::store().0, limits)
}

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start(state: ApiState) -> Running {
    let (listener, addr) = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn(server::serve(listener, state, None, shutdown));
    Running { addr, stop, task }
}

fn limits(header: Duration, request: Duration, max: usize) -> Limits {
    Limits {
        max_connections: max,
        header_read_timeout: header,
        handshake_timeout: header,
        request_timeout: request,
    }
}

/// Read until the server closes the connection (EOF or reset), at most `bound`:
/// what was read and when the connection ended.
async fn read_to_close(tcp: &mut TcpStream, bound: Duration) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let end = tokio::time::timeout(bound, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection in time");
    (got, end)
}

/// `GET path` on a fresh connection: the status line.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let (got, _) = read_to_close(&mut tcp, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_dropped_after_the_header_timeout() {
    let header = Duration::from_millis(500);
    let s = start(state("slow", limits(header, Duration::from_secs(30), 16))).await;
    // Half a header, then nothing.
    let mut half = TcpStream::connect(s.addr).await.unwrap();
    let t0 = Instant::now();
    half.write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    // A trickle: a byte every 100 ms never completes the header either.
    let mut trickle = TcpStream::connect(s.addr).await.unwrap();
    let (mut reader, mut writer) = trickle.split();
    let dripping = async {
        for b in b"GET /livez HTTP/1.1\r\nHost: t\r\nX-Slow: ".iter().cycle() {
            if writer.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut sink = Vec::new();
    tokio::select! {
        () = dripping => {}
        _ = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut sink)) => {}
    }
    let trickle_took = t0.elapsed();
    let (_, end) = read_to_close(&mut half, Duration::from_secs(5)).await;
    let half_took = end - t0;
    for (what, took) in [("half a header", half_took), ("a trickle", trickle_took)] {
        eprintln!("{what}: dropped after {took:?} (header-read timeout {header:?})");
        assert!(
            took >= header && took < header * 4,
            "{what}: dropped after {took:?}"
        );
    }
    // A whole request is still served at once.
    assert_eq!(get(s.addr, "/livez").await, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_header_timeout() {
    let header = Duration::from_millis(500);
    let s = start(state("idle", limits(header, Duration::from_secs(30), 16))).await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let t0 = Instant::now();
    // A kept-alive request, then silence.
    tcp.write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (got, end) = read_to_close(&mut tcp, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK"));
    let took = end - t0;
    assert!(took >= header && took < header * 4, "closed after {took:?}");
}

#[tokio::test]
async fn a_connection_over_the_cap_is_closed_at_once() {
    let s = start(state(
        "cap",
        limits(Duration::from_secs(10), Duration::from_secs(30), 2),
    ))
    .await;
    let mut first = TcpStream::connect(s.addr).await.unwrap();
    let _second = TcpStream::connect(s.addr).await.unwrap();
    let mut third = TcpStream::connect(s.addr).await.unwrap();
    let t0 = Instant::now();
    let (got, end) = read_to_close(&mut third, Duration::from_secs(2)).await;
    assert!(got.is_empty(), "{got:?}");
    assert!(end - t0 < Duration::from_secs(1), "after {:?}", end - t0);
    // The two within the cap are served.
    first
        .write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_to_close(&mut first, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK"));
    // Its slot is free again: a new connection is served (once the server saw it end).
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(s.addr, "/livez").await != "HTTP/1.1 200 OK" {
        assert!(Instant::now() < deadline, "the freed slot was not reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_503_after_the_request_timeout() {
    let request = Duration::from_millis(800);
    let s = start(state("body", limits(Duration::from_secs(10), request, 16))).await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let t0 = Instant::now();
    // Registration reads its body from anyone (it needs no token).
    tcp.write_all(
        b"POST /v1/register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"name\":",
    )
    .await
    .unwrap();
    let (got, end) = read_to_close(&mut tcp, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 503") && text.contains("RequestTimeout"),
        "{text}"
    );
    let took = end - t0;
    assert!(
        took >= request && took < request + Duration::from_secs(3),
        "{took:?}"
    );
}

/// A job route does not wait for the body of a request without a runner's token:
/// it is refused at once.
#[tokio::test]
async fn a_job_route_refuses_a_stranger_before_its_body_arrives() {
    let request = Duration::from_millis(800);
    let s = start(state(
        "stranger",
        limits(Duration::from_secs(10), request, 16),
    ))
    .await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let t0 = Instant::now();
    tcp.write_all(
        b"POST /v1/jobs/ns/j/claim HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 2000000\r\n\r\n{\"runner\":",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("HTTP/1.1 401") && text.contains("TokenMissing"),
        "{text}"
    );
    assert!(t0.elapsed() < request, "{:?}", t0.elapsed());
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_the_connection() {
    let request = Duration::from_millis(800);
    let s = start(state("stall", limits(Duration::from_secs(10), request, 16))).await;
    // A small receive window, and many answers asked for: the server's writes stall.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(s.addr).await.unwrap();
    let asks = 20_000;
    let one = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
    let all: Vec<u8> = one.iter().copied().cycle().take(one.len() * asks).collect();
    let (mut reader, mut writer) = tcp.split();
    // The server stops reading requests once its answers cannot be written.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer.write_all(&all)).await;
    tokio::time::sleep(request * 3).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 65536];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection stayed open");
    let answered = got.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count();
    assert!(
        answered < asks,
        "all {asks} answered: the writes never stalled"
    );
}

#[tokio::test]
async fn shutdown_returns_with_a_kept_alive_connection_open() {
    let s = start(state(
        "shutdown",
        limits(Duration::from_secs(10), Duration::from_secs(30), 16),
    ))
    .await;
    let mut kept = TcpStream::connect(s.addr).await.unwrap();
    kept.write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    s.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("serve returned within 5s")
        .unwrap();
    assert!(TcpStream::connect(s.addr).await.is_err(), "still accepting");
}
