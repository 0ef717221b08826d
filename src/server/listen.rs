//! The runner API's one accept loop, for plain HTTP and HTTPS alike, with the limits
//! that keep a client from holding the server: a cap on open connections, a TLS
//! handshake timeout, a header-read timeout (hyper's, which also ends idle
//! keep-alive connections) and a request timeout ([`super::deadline`]).
//!
//! Over the cap, a new connection is closed at once: no queue, since a queued
//! connection holds a socket and a task just as a served one does, and a client
//! retries sooner on a closed connection than on one that hangs. Runners hold one
//! connection each (their control channel), so the cap must exceed the number of
//! runners.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};
use warp::{Filter, Reply};

use super::deadline::{Deadline, Timed};

/// Limits of the runner API's listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most; one more is closed at once (default 1024).
    pub max_connections: usize,
    /// A client must send a request's headers within this, and an idle keep-alive
    /// connection is closed after it (default 10 s).
    pub header_read_timeout: Duration,
    /// A TLS client must finish its handshake within this (default 10 s).
    pub handshake_timeout: Duration,
    /// A request must be read and answered within this (else 503), and each chunk
    /// of a plain answer taken by the client within this from the last; streams
    /// (control channel, followed log) are exempt while open (default 30 s).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Serve `filter` until `shutdown` resolves (over TLS with `tls`), then stop
/// accepting and wait for open connections to finish (idle ones close at once).
pub async fn serve<F, R>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    filter: F,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    R: Reply,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut full = Full::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            full.refused(remote, limits.max_connections);
            drop(tcp);
            continue;
        };
        full.accepted();
        let conn = Conn {
            remote,
            limits,
            watcher: graceful.watcher(),
        };
        let (tls, filter) = (tls.clone(), filter.clone());
        tokio::spawn(async move {
            conn.run(tcp, tls, filter).await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Says once per episode that the cap is reached (a flood must not flood the log).
#[derive(Default)]
struct Full(bool);

impl Full {
    fn refused(&mut self, remote: SocketAddr, max: usize) {
        if !std::mem::replace(&mut self.0, true) {
            warn!(%remote, max, "connection cap reached: new connections are closed until one ends (--max-connections)");
        } else {
            debug!(%remote, "connection refused: at the cap");
        }
    }

    fn accepted(&mut self) {
        self.0 = false;
    }
}

/// One accepted connection.
struct Conn {
    remote: SocketAddr,
    limits: Limits,
    watcher: Watcher,
}

impl Conn {
    async fn run<F, R>(self, tcp: TcpStream, tls: Option<TlsAcceptor>, filter: F)
    where
        F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
        R: Reply,
    {
        let Some(acceptor) = tls else {
            return self.http(tcp, filter).await;
        };
        let remote = self.remote;
        match tokio::time::timeout(self.limits.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => self.http(stream, filter).await,
            // Probes and plain-HTTP clients land here: not worth more than debug.
            Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake failed"),
            Err(_) => debug!(%remote, "TLS handshake timed out"),
        }
    }

    /// HTTP/1.1 on `io` until the client or the deadline ends it.
    async fn http<I, F, R>(self, io: I, filter: F)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
        R: Reply,
    {
        let Conn {
            remote,
            limits,
            watcher,
        } = self;
        // Before the first request the header-read timeout rules; this is a backstop.
        let deadline = Deadline::new(Instant::now() + limits.request_timeout);
        let service = Timed::new(
            TowerToHyperService::new(warp::service(filter)),
            deadline.clone(),
            limits.request_timeout,
        )
        .from_client(remote);
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::select! {
            ended = watcher.watch(conn) => if let Err(e) = ended {
                debug!(%remote, error = %e, "connection ended with an error");
            },
            () = deadline.passed() => debug!(%remote, "connection closed: request timeout"),
        }
    }
}

/// As warp does: connection-level errors are the client's; others (EMFILE) get a pause.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    warn!(error = %e, "accept a runner API connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
