//! A benchmark, not a test (ignored; `make bench-on-demand` runs it): the same
//! one-step workload on the real node, as Baton Jobs on on-demand runner pods and
//! as batch/v1 Jobs (the cluster's own job controller), in turns. Each round
//! creates `JOBS` Jobs at once and times, on this process's clock, until every
//! one has succeeded; then it waits for the round's pods to go before the next.
//! Prints each round and the median per system.
//!
//! The step is the same for both: the step image running `echo`. A Baton Job
//! takes two pods (its runner pod, then its step pod); a batch/v1 Job one.
//!
//! Three more "systems" are floors: the pods of the first Baton round, copied and
//! created directly (`on_demand_shapes`): today's two pods per Job; the one pod
//! per Job that running the step in the runner's own pod would take; the step pod
//! alone. They tell how much of Baton's time is the node starting its pods.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use baton::crd::Job;
use baton::crd::job::JobPhase;
use k8s_openapi::api::batch::v1::Job as BatchJob;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use crate::on_demand::controller;
use crate::on_demand_shapes::{Shape, Shapes};
use crate::support::{STEP_IMAGE, TestNs, in_namespace};

/// Jobs created at once per round.
const JOBS: usize = 30;
/// The rounds in turn, 3 per system, no system always first. Baton's goes first
/// once: the floors copy its pods.
const ORDER: [System; 15] = {
    use System::*;
    const TWO: System = Floor(Shape::TwoPods);
    const ONE: System = Floor(Shape::OnePod);
    const STEP: System = Floor(Shape::StepPod);
    [
        Baton, Batch, TWO, ONE, STEP, //
        Batch, STEP, ONE, Baton, TWO, //
        TWO, ONE, STEP, Batch, Baton,
    ]
};
/// A round that takes longer than this failed.
const ROUND_LIMIT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq)]
enum System {
    Baton,
    Batch,
    /// Baton's pods without Baton: see `on_demand_shapes`.
    Floor(Shape),
}

fn baton_job(round: usize, i: usize) -> anyhow::Result<Job> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": format!("od{round}-{i:03}"), "labels": { "bench-round": round.to_string() } },
        "spec": {
            "onDemand": {},
            "steps": [{ "name": "hello", "image": STEP_IMAGE, "script": "echo hello" }]
        }
    }))?)
}

/// The batch/v1 twin: the step image, `echo`, and the security context the
/// namespace's `restricted` Pod Security level asks of every pod (Baton's step
/// pods carry the same).
fn batch_job(round: usize, i: usize) -> anyhow::Result<BatchJob> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": { "name": format!("bj{round}-{i:03}"), "labels": { "bench-round": round.to_string() } },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": { "labels": { "bench-round": round.to_string() } },
                "spec": {
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000,
                        "seccompProfile": { "type": "RuntimeDefault" }
                    },
                    "containers": [{
                        "name": "hello",
                        "image": STEP_IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", "echo hello"],
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "capabilities": { "drop": ["ALL"] }
                        }
                    }]
                }
            }
        }
    }))?)
}

/// Succeeded Jobs of the round, by the system's own status; a floor's by its
/// pods' phases (a failed pod fails the round: the shape does not run).
async fn succeeded(ns: &TestNs, system: System, round: usize) -> anyhow::Result<usize> {
    let lp = ListParams::default().labels(&format!("bench-round={round}"));
    Ok(match system {
        System::Baton => Api::<Job>::namespaced(ns.client.clone(), &ns.name)
            .list(&lp)
            .await?
            .items
            .iter()
            .filter(|j| j.status.as_ref().and_then(|s| s.phase) == Some(JobPhase::Succeeded))
            .count(),
        System::Batch => Api::<BatchJob>::namespaced(ns.client.clone(), &ns.name)
            .list(&lp)
            .await?
            .items
            .iter()
            .filter(|j| j.status.as_ref().and_then(|s| s.succeeded) == Some(1))
            .count(),
        System::Floor(shape) => {
            let pods = Api::<Pod>::namespaced(ns.client.clone(), &ns.name)
                .list(&lp)
                .await?
                .items;
            let phase = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.clone());
            if let Some(failed) = pods.iter().find(|p| phase(p).as_deref() == Some("Failed")) {
                anyhow::bail!(
                    "{system:?} round {round}: pod {} failed: {:?}",
                    failed.metadata.name.as_deref().unwrap_or(""),
                    failed.status
                );
            }
            let done = pods
                .iter()
                .filter(|p| phase(p).as_deref() == Some("Succeeded"));
            done.count() / shape.pods_per_job()
        }
    })
}

/// Create Job `i` of `round` (a floor: its pods).
async fn create(
    ns: &TestNs,
    system: System,
    shapes: Option<&Shapes>,
    round: usize,
    i: usize,
) -> anyhow::Result<()> {
    let post = PostParams::default();
    match system {
        System::Baton => {
            let api = Api::<Job>::namespaced(ns.client.clone(), &ns.name);
            api.create(&post, &baton_job(round, i)?).await.map(drop)?;
        }
        System::Batch => {
            let api = Api::<BatchJob>::namespaced(ns.client.clone(), &ns.name);
            api.create(&post, &batch_job(round, i)?).await.map(drop)?;
        }
        System::Floor(shape) => {
            let shapes = shapes.context("a floor round before any Baton round")?;
            let api = Api::<Pod>::namespaced(ns.client.clone(), &ns.name);
            for pod in shapes.pods(shape, round, i) {
                api.create(&post, &pod).await.map(drop)?;
            }
        }
    }
    Ok(())
}

/// One round: create `JOBS` at once, wait until all succeeded. Seconds taken.
async fn round(
    ns: &TestNs,
    system: System,
    shapes: Option<&Shapes>,
    round: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let creates = (0..JOBS).map(|i| create(ns, system, shapes, round, i));
    futures::future::try_join_all(creates).await?;
    loop {
        let done = succeeded(ns, system, round).await?;
        if done == JOBS {
            return Ok(started.elapsed().as_secs_f64());
        }
        ensure!(
            started.elapsed() < ROUND_LIMIT,
            "{system:?} round {round}: {done}/{JOBS} succeeded after {ROUND_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Delete the round's Jobs and wait until none of its pods is left, so the
/// next round starts on an idle node.
async fn clear(ns: &TestNs, round: usize) -> anyhow::Result<()> {
    let lp = ListParams::default().labels(&format!("bench-round={round}"));
    let bg = DeleteParams::background();
    Api::<Job>::namespaced(ns.client.clone(), &ns.name)
        .delete_collection(&bg, &lp)
        .await?;
    Api::<BatchJob>::namespaced(ns.client.clone(), &ns.name)
        .delete_collection(&bg, &lp)
        .await?;
    let pods = Api::<Pod>::namespaced(ns.client.clone(), &ns.name);
    pods.delete_collection(&bg, &lp).await?;
    let deadline = Instant::now() + ROUND_LIMIT;
    while !pods.list(&ListParams::default()).await?.items.is_empty() {
        ensure!(
            Instant::now() < deadline,
            "round {round}'s pods still there"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[tokio::test]
#[ignore = "a benchmark: make bench-on-demand"]
async fn bench_on_demand_against_batch_jobs() {
    in_namespace("od-bench", |ns| async move {
        let _ctl = controller(&ns).await?;
        let mut shapes = None;
        let mut times: Vec<(System, Vec<f64>)> = Vec::new();
        for (r, system) in ORDER.into_iter().enumerate() {
            let secs = round(&ns, system, shapes.as_ref(), r).await.context("a round")?;
            println!(
                "BENCH on-demand round {r}: {system:?} {JOBS} one-step Jobs at once, all succeeded in {secs:.1} s ({:.0} Jobs/min)",
                JOBS as f64 / secs * 60.0
            );
            match times.iter_mut().find(|(s, _)| *s == system) {
                Some((_, xs)) => xs.push(secs),
                None => times.push((system, vec![secs])),
            }
            if system == System::Baton && shapes.is_none() {
                shapes = Some(Shapes::capture(&ns).await?);
            }
            clear(&ns, r).await?;
        }
        let median_of = |want: System| {
            let xs = times.iter().find(|(s, _)| *s == want).map(|(_, xs)| xs.clone());
            median(xs.unwrap_or_default())
        };
        let batch = median_of(System::Batch);
        for (system, xs) in &times {
            let m = median(xs.clone());
            println!(
                "BENCH on-demand median of {} rounds: {system:?} {m:.1} s, {:.2}x batch/v1's throughput",
                xs.len(),
                batch / m
            );
        }
        Ok(())
    })
    .await;
}
