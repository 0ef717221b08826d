//! A mocked API server for reconcile I/O tests (a tower-test service behind a
//! real kube Client), and a controller Context over it. For what a reconcile
//! sends and how it reacts to answers such as 409; never a stand-in for e2e.

use std::sync::Arc;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;

use super::{Caches, Config, Context, context};
use crate::server::health::Readiness;
use crate::server::hub::Hub;

pub type ApiHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A Context whose client talks to the returned mock handle.
pub fn mocked_context(name: &str) -> (Arc<Context>, ApiHandle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let config = Config {
        listen: ([127, 0, 0, 1], 0).into(),
        api: Default::default(),
        data_dir: Some(
            std::env::temp_dir().join(format!("baton-fixture-{name}-{}", std::process::id())),
        ),
        log_cap: 1024,
        store: None,
        upload_retention: std::time::Duration::from_secs(3600),
        runner_lost_after: std::time::Duration::from_secs(60),
        pending_runner_ttl: std::time::Duration::from_secs(3600),
        keep_step_pods: false,
        on_demand: Default::default(),
        leader_election: None,
        tls: None,
        kube_api_qps: None,
    };
    let caches = Caches::new();
    let logs = super::stores(
        config.data_dir.clone().unwrap_or_default().join("logs"),
        config.log_cap,
        None,
    )
    .expect("a private temporary directory");
    let (ctx, _state, _kicks) = context(
        &client,
        &config,
        &caches,
        Arc::new(Hub::default()),
        Readiness::default(),
        Arc::new(crate::domain::challenge::Challenges::new().expect("OS randomness")),
        logs,
    );
    (ctx, handle)
}

/// A `metav1.Status` failure answer with `code`.
pub fn status_response(code: u16, reason: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code,
    });
    Response::builder()
        .status(code)
        .body(Body::from(body.to_string().into_bytes()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// A 200 answer carrying `obj` as JSON.
pub fn json_response(obj: &impl serde::Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(obj).unwrap_or_default();
    Response::builder()
        .status(200)
        .body(Body::from(bytes))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}
