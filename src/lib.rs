//! Baton: a Kubernetes operator that runs CI/CD jobs on runners.
//!
//! Layers, each using only those above it:
//! `crd` (types, no I/O) → `backend` (where steps run) → `executor` (DAG, `when`,
//! timeouts, outputs) → `server` / `controller` → `runner` → `cli`.

pub mod backend;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod domain;
pub mod executor;
pub mod protocol;
pub mod runner;
pub mod server;
