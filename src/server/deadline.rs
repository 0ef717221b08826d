//! The request timeout, per connection: every request sets the connection's
//! deadline, every chunk of a plain answer pushes it out, and the connection is
//! closed when it passes. So a client that sends its body slowly, a handler that
//! hangs, and a client that stops reading its answer all lose the connection after
//! one timeout without progress. Streams (the control channel, a followed log) have
//! no deadline while they are open: they are quiet by design.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use warp::http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use warp::hyper::body::{Body, Frame, Incoming, SizeHint};
use warp::hyper::service::Service;

use super::input::ApiError;

/// Time left to write the 503 of a request that timed out, before the connection goes.
pub const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// Whether a request opens a stream that stays open while there is something to
/// say: `GET /v1/control` (a runner's control channel) and a followed log,
/// `GET /v1/jobs/NS/NAME/logs?...&follow=true`. Anything else is a plain request.
pub fn streams(method: &Method, uri: &Uri) -> bool {
    if method != Method::GET {
        return false;
    }
    let path = uri.path();
    if path == "/v1/control" {
        return true;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(segments.as_slice(), ["v1", "jobs", _, _, "logs"])
        && uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "follow=true"))
}

/// One connection's deadline; `None` while a stream is open.
#[derive(Clone, Debug)]
pub struct Deadline(Arc<watch::Sender<Option<Instant>>>);

impl Deadline {
    pub fn new(at: Instant) -> Self {
        Self(Arc::new(watch::Sender::new(Some(at))))
    }

    fn set(&self, at: Option<Instant>) {
        self.0.send_replace(at);
    }

    /// Resolves once the deadline has passed (never while it is `None`).
    pub async fn passed(&self) {
        let mut rx = self.0.subscribe();
        loop {
            let at = *rx.borrow_and_update();
            // `self` holds the sender: `changed` cannot fail here.
            match at {
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at) => return,
                    _ = rx.changed() => {}
                },
                None => {
                    let _ = rx.changed().await;
                }
            }
        }
    }
}

/// The routes with the connection's deadline and a bound on producing an answer.
#[derive(Clone, Debug)]
pub struct Timed<S> {
    inner: S,
    deadline: Deadline,
    timeout: Duration,
    /// The client, handed to the routes (per-client rate limits).
    client: Option<super::rate::ClientAddr>,
}

impl<S> Timed<S> {
    pub fn new(inner: S, deadline: Deadline, timeout: Duration) -> Self {
        Self {
            inner,
            deadline,
            timeout,
            client: None,
        }
    }

    /// Tell the routes which client each request comes from.
    pub fn from_client(mut self, addr: std::net::SocketAddr) -> Self {
        self.client = Some(super::rate::ClientAddr(addr.ip()));
        self
    }
}

/// The answer to a request not read and answered within `timeout`; the connection
/// is closed after it.
fn timed_out(timeout: Duration) -> warp::reply::Response {
    let mut res = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "RequestTimeout",
        format!(
            "the request was not read and answered within {}s",
            timeout.as_secs_f32()
        ),
    )
    .into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

impl<S, B> Service<Request<Incoming>> for Timed<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: Send + 'static,
    warp::reply::Response: Into<Response<B>>,
{
    type Response = Response<Watched<B>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        if let Some(client) = self.client {
            req.extensions_mut().insert(client);
        }
        let streams = streams(req.method(), req.uri());
        let (deadline, timeout) = (self.deadline.clone(), self.timeout);
        deadline.set(Some(Instant::now() + timeout + ANSWER_GRACE));
        let answer = self.inner.call(req);
        Box::pin(async move {
            let res = match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(res)) => res,
                Ok(Err(never)) => match never {},
                Err(_) => timed_out(timeout).into(),
            };
            if streams {
                deadline.set(None);
            }
            Ok(res.map(|body| Watched {
                body,
                deadline,
                timeout,
                streams,
            }))
        })
    }
}

/// An answer's body that keeps the deadline: a plain answer's chunks push it out,
/// a stream's end sets it again (the last bytes must still be written).
#[derive(Debug)]
pub struct Watched<B> {
    body: B,
    deadline: Deadline,
    timeout: Duration,
    streams: bool,
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        // hyper asks for a chunk only when it has room to buffer it: a chunk is
        // progress in writing the answer.
        if !this.streams && matches!(frame, Poll::Ready(Some(Ok(_)))) {
            this.deadline.set(Some(Instant::now() + this.timeout));
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        if self.streams {
            self.deadline.set(Some(Instant::now() + self.timeout));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_the_control_channel_and_followed_logs_are_streams() {
        let cases = [
            ("GET", "/v1/control?runner=r1", true),
            ("GET", "/v1/control", true),
            ("GET", "/v1/jobs/ns/j/logs?step=s&follow=true", true),
            ("GET", "/v1/jobs/ns/j/logs?follow=true&step=s", true),
            ("GET", "/v1/jobs/ns/j/logs?step=s&follow=false", false),
            ("GET", "/v1/jobs/ns/j/logs?step=s", false),
            ("GET", "/v1/jobs/ns/j/logs?step=follow=true", false),
            ("GET", "/v1/jobs/ns/j/logs?step=s&xfollow=true", false),
            ("POST", "/v1/jobs/ns/j/logs?step=s&follow=true", false),
            ("POST", "/v1/control", false),
            ("GET", "/v1/jobs/ns/j/k/logs?follow=true", false),
            ("GET", "/v1/jobs?follow=true", false),
            ("GET", "/livez", false),
            ("GET", "/metrics", false),
            ("GET", "/v1/control/x", false),
        ];
        for (method, uri, want) in cases {
            let (m, u): (Method, Uri) = (method.parse().unwrap(), uri.parse().unwrap());
            assert_eq!(streams(&m, &u), want, "{method} {uri}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_passes_moves_and_waits_while_unset() {
        let start = Instant::now();
        let d = Deadline::new(start + Duration::from_secs(5));
        d.passed().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));

        // Unset, it never passes; set again (from elsewhere), it does.
        d.set(None);
        let setter = d.clone();
        let passed = tokio::spawn(async move { d.passed().await });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!passed.is_finished());
        setter.set(Some(Instant::now() + Duration::from_secs(1)));
        passed.await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(5 + 3600 + 1));

        // Pushed out while waiting: it passes at the later time.
        let d = Deadline::new(Instant::now() + Duration::from_secs(2));
        let pusher = d.clone();
        let t0 = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            pusher.set(Some(Instant::now() + Duration::from_secs(10)));
        });
        d.passed().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(11));
    }
}
