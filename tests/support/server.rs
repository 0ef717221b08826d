//! The runner API's state for integration tests that serve it without a cluster:
//! empty caches (or the ones given), and a kube client pointing where the test says.
#![allow(dead_code, clippy::unwrap_used)] // shared by several test crates

use std::sync::Arc;

use baton::crd::Job;
use baton::server::hub::Hub;
use baton::server::listen::Limits;
use baton::server::{ApiConfig, ApiState, health::Readiness, logs::LogStore};
use kube::runtime::reflector::{self, Store};

/// A kube client for a server that is not there (any request to it fails).
pub fn unreachable_client() -> kube::Client {
    kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap()
}

/// The state with `client`, `logs`, the Job cache `jobs` and listener `limits`.
pub fn state(
    client: kube::Client,
    logs: Arc<LogStore>,
    jobs: Store<Job>,
    limits: Limits,
) -> ApiState {
    ApiState {
        events: baton::domain::events::Events::new(client.clone()),
        client,
        runners: reflector::store().0,
        tokens: reflector::store().0,
        jobs: jobs.clone(),
        landed: Arc::new(baton::domain::job_write::Landed::new(jobs.clone())),
        logs,
        store: baton::store::BlobStore::in_memory(),
        hub: Arc::new(Hub::default()),
        readiness: Readiness::default(),
        config: ApiConfig {
            limits,
            ..Default::default()
        },
        metrics: Default::default(),
        challenges: Arc::new(baton::domain::challenge::Challenges::new().unwrap()),
        rate: Default::default(),
    }
}
