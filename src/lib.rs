//! Baton: a Kubernetes operator that runs CI/CD jobs on runners.
//!
//! Layers, each using only those above it:
//! `crd` (types and the pure Job status transitions, no I/O) → `protocol` (the
//! runner ⇄ server wire types) → `domain` (adoption, tokens, Events, CA, backoff,
//! the Job status writer) → `store` (blobs: finished logs, change archives, on
//! object storage or a directory) → `backend` (where steps run) → `executor` (DAG,
//! `when`, timeouts, outputs) → `server` (HTTP) / `controller` → `runner` → `cli`.

pub mod archive;
pub mod backend;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod dashboard;
pub mod domain;
pub mod executor;
pub mod protocol;
pub mod runner;
pub mod server;
pub mod store;
