//! The controller's clients of the API server: the usual one (kubeconfig or
//! in-cluster), with a bound on its requests in flight, twice: one for its
//! work, one for its leader-election Lease.
//!
//! Without the bound, a burst of requests opens a connection each: after a
//! restart, the runners' claims of a thousand resumed Jobs each read the Job
//! (`server::job_api`), so the controller opened hundreds of connections to
//! the API server and kept them idle afterwards, 14 MiB of its 77 (issue 14,
//! `make bench`'s restarted-controller figure; the runners' own bound,
//! `runner::client`, is what removed that restart's peak). With it, the burst
//! queues and reuses a few connections. The bound counts a request until its
//! response head arrives, so a watch holds no slot while it streams.
//!
//! `--kube-api-qps` adds what kube-controller-manager and Tekton have and kube-rs
//! has not: a client-side rate, requests started per one-second window. Off by
//! default. It protects a shared API server, and makes `make bench`'s "matched
//! QPS" hold Baton as it holds its peers.

use std::num::NonZeroU32;
use std::time::Duration;

use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::limit::{ConcurrencyLimitLayer, RateLimitLayer};

use super::StartError;

/// Requests to the API server in flight at once, at most. Ample for the
/// controller's steady work (a one-step Job costs about seven requests over its
/// life), and what a 2-core API server serves at once anyway.
pub const IN_FLIGHT: usize = 32;

/// The controller's clients from the environment's configuration, each bounded
/// by [`IN_FLIGHT`]: the first for its work, held to `qps` requests started per
/// second when given; the second for its Lease, never held, so that a backlog
/// of work cannot delay a renewal past the lease's deadline (kube-controller-
/// manager gives leader election a client of its own for the same reason).
pub async fn connect(qps: Option<NonZeroU32>) -> Result<(Client, Client), StartError> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig);
    let config = config.map_err(StartError::Client)?;
    let builder = |c| ClientBuilder::try_from(c).map_err(StartError::Client);
    let (work, lease) = (builder(config.clone())?, builder(config)?);
    Ok(clients(work, lease, IN_FLIGHT, qps))
}

/// The work client and the Lease's, each with at most `in_flight` requests
/// under way at once; the work client, given `qps`, with at most `qps` started
/// in any one-second window.
fn clients<S, B>(
    work: ClientBuilder<S>,
    lease: ClientBuilder<S>,
    in_flight: usize,
    qps: Option<NonZeroU32>,
) -> (Client, Client)
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    let in_flight = ConcurrencyLimitLayer::new(in_flight);
    let lease = lease.with_layer(&in_flight).build();
    let work = match qps {
        Some(qps) => {
            let rate = RateLimitLayer::new(qps.get().into(), Duration::from_secs(1));
            work.with_layer(&rate).with_layer(&in_flight).build()
        }
        None => work.with_layer(&in_flight).build(),
    };
    (work, lease)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use http::{Request, Response};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;
    use kube::client::Body;

    use super::*;

    /// Requests past the bound wait for a slot; each answer lets one more in.
    #[tokio::test]
    async fn requests_past_the_bound_wait_until_one_is_answered() {
        let (svc, mut api) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (lease_svc, _) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let lease = ClientBuilder::new(lease_svc, "default");
        let (client, _) = clients(ClientBuilder::new(svc, "default"), lease, 3, None);
        let maps: Api<ConfigMap> = Api::namespaced(client, "default");
        let gets: Vec<_> = (0..5)
            .map(|i| {
                let maps = maps.clone();
                tokio::spawn(async move { maps.get(&format!("m{i}")).await })
            })
            .collect();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(api.next_request().await.unwrap());
        }
        let more = tokio::time::timeout(Duration::from_millis(300), api.next_request()).await;
        assert!(
            more.is_err(),
            "a fourth request got through with three in flight"
        );
        let (first, send) = held.remove(0);
        send.send_response(answer(&first));
        let (fourth, send4) = api.next_request().await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), api.next_request())
                .await
                .is_err(),
            "one answer let one request in, not two"
        );
        send4.send_response(answer(&fourth));
        for (req, send) in held {
            send.send_response(answer(&req));
        }
        let (last, send5) = api.next_request().await.unwrap();
        send5.send_response(answer(&last));
        for get in gets {
            assert!(get.await.unwrap().is_ok());
        }
    }

    /// With a rate, requests past it in one second wait for the next second,
    /// even with room in flight; the Lease's client is not held by the work's
    /// backlog.
    #[tokio::test(start_paused = true)]
    async fn requests_past_the_rate_wait_for_the_next_second() {
        let (svc, mut api) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (lease_svc, mut lease_api) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (client, lease) = clients(
            ClientBuilder::new(svc, "default"),
            ClientBuilder::new(lease_svc, "default"),
            32,
            NonZeroU32::new(2),
        );
        let maps: Api<ConfigMap> = Api::namespaced(client, "default");
        let start = tokio::time::Instant::now();
        let gets: Vec<_> = (0..3)
            .map(|i| {
                let maps = maps.clone();
                tokio::spawn(async move { maps.get(&format!("m{i}")).await })
            })
            .collect();
        for _ in 0..2 {
            let (req, send) = api.next_request().await.unwrap();
            send.send_response(answer(&req));
        }
        let third = tokio::time::timeout(Duration::from_millis(900), api.next_request()).await;
        assert!(third.is_err(), "a third request started within the second");
        let renew = tokio::spawn(async move {
            let leases: Api<ConfigMap> = Api::namespaced(lease, "default");
            leases.get("lease").await
        });
        let (req, send) = lease_api.next_request().await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(1), "the Lease waited");
        send.send_response(answer(&req));
        assert!(renew.await.unwrap().is_ok());
        let (req, send) = api.next_request().await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        send.send_response(answer(&req));
        for get in gets {
            assert!(get.await.unwrap().is_ok());
        }
    }

    fn answer(req: &Request<Body>) -> Response<Body> {
        let name = req.uri().path().rsplit('/').next().unwrap();
        let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}});
        Response::new(Body::from(serde_json::to_vec(&body).unwrap()))
    }
}
