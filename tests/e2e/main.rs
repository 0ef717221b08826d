//! End-to-end tests against a real Kubernetes cluster (`make e2e` brings it up).
//!
//! Each test runs in its own temporary namespace (Pod Security `restricted`
//! enforced), waits on conditions with a bound, and dumps the namespace's objects
//! and pod logs when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/fixtures.rs"]
mod fixtures;
mod support;

mod admission;
mod attacks;
mod chart;
mod chart_dashboard;
mod chart_tls;
mod content;
mod content_bench;
mod crds;
mod dashboard;
mod dashboard_bench;
mod failover;
mod helm;
mod here;
mod jobs;
mod kstatus;
mod namespaces;
mod on_demand;
mod on_demand_bench;
mod on_demand_shapes;
mod pods;
mod procs;
mod registry;
mod runners;
mod step_pods;
mod store;
mod tls;
