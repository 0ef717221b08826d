//! The controller's client of the API server: the usual one (kubeconfig or
//! in-cluster), with a bound on its requests in flight.
//!
//! Without the bound, a burst of requests opens a connection each: after a
//! restart, the runners' claims of a thousand resumed Jobs each read the Job
//! (`server::job_api`), so the controller opened hundreds of connections to
//! the API server and kept them idle afterwards, 14 MiB of its 77 (issue 14,
//! `make bench`'s restarted-controller figure; the runners' own bound,
//! `runner::client`, is what removed that restart's peak). With it, the burst
//! queues and reuses a few connections. The bound counts a request until its
//! response head arrives, so a watch holds no slot while it streams.

use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::limit::ConcurrencyLimitLayer;

/// Requests to the API server in flight at once, at most. Ample for the
/// controller's steady work (a one-step Job costs about seven requests over its
/// life), and what a 2-core API server serves at once anyway.
pub const IN_FLIGHT: usize = 32;

/// The client from the environment's configuration, bounded by [`IN_FLIGHT`].
pub async fn connect() -> Result<Client, kube::Error> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    Ok(bounded(ClientBuilder::try_from(config)?, IN_FLIGHT))
}

/// `builder`'s client, with at most `in_flight` requests under way at once.
fn bounded<S, B>(builder: ClientBuilder<S>, in_flight: usize) -> Client
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    builder
        .with_layer(&ConcurrencyLimitLayer::new(in_flight))
        .build()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use http::{Request, Response};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;
    use kube::client::Body;

    use super::*;

    /// Requests past the bound wait for a slot; each answer lets one more in.
    #[tokio::test]
    async fn requests_past_the_bound_wait_until_one_is_answered() {
        let (svc, mut api) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = bounded(ClientBuilder::new(svc, "default"), 3);
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
        let answer = |name: &str| {
            let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default"}});
            Response::new(Body::from(serde_json::to_vec(&body).unwrap()))
        };
        let (first, send) = held.remove(0);
        send.send_response(answer(first.uri().path().rsplit('/').next().unwrap()));
        let (fourth, send4) = api.next_request().await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), api.next_request())
                .await
                .is_err(),
            "one answer let one request in, not two"
        );
        send4.send_response(answer(fourth.uri().path().rsplit('/').next().unwrap()));
        for (req, send) in held {
            send.send_response(answer(req.uri().path().rsplit('/').next().unwrap()));
        }
        let (last, send5) = api.next_request().await.unwrap();
        send5.send_response(answer(last.uri().path().rsplit('/').next().unwrap()));
        for get in gets {
            assert!(get.await.unwrap().is_ok());
        }
    }
}
