//! Leader failover of the chart's two controller replicas, on the real cluster:
//! the leader hangs (SIGSTOP: no renewal, no Lease release, no goodbye) while a
//! Job runs; the standby takes the Lease, labels its pod so the Service routes
//! runners to it, the runner reconnects, and the Job finishes — run once (one
//! step pod, epoch 1, same runner) with its whole log on the new leader, though
//! the default log store is an emptyDir that died with the old leader.
//!
//! Prints the figures: Lease takeover, runner reconnection, Job completion.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use baton::crd::Job;
use baton::crd::job::JobPhase;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use crate::helm::{
    CONTROLLER_SELECTOR, FULLNAME as LEASE, LEADER_LABEL, RELEASE, chart_dir, cleanup,
    controller_mints, deployment_rolled_out, helm, is_ready, job_phase,
};
use crate::procs::{Agent, TempDir};
use crate::support::{STEP_IMAGE, TestNs, in_namespace, wait_for};

#[tokio::test]
async fn the_standby_takes_over_a_killed_leader_mid_job_and_nothing_runs_twice() {
    in_namespace("failover", |ns| async move {
        let result = failover(&ns).await;
        cleanup(&ns).await;
        result
    })
    .await;
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

/// Live controller pods of the release, by name, with whether each is Ready and
/// its leader label.
async fn controller_pods(ns: &TestNs) -> anyhow::Result<Vec<(String, bool, Option<String>)>> {
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    Ok(pods
        .list(&ListParams::default().labels(CONTROLLER_SELECTOR))
        .await?
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let ready = is_ready(&p);
            let label = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LEADER_LABEL).cloned());
            (p.metadata.name.unwrap_or_default(), ready, label)
        })
        .collect())
}

/// Wait (30 s) until there are two Ready controller pods, only `leader`'s carries
/// the leader label, and `also` holds.
async fn two_pods_only_leader_labelled(
    ns: &TestNs,
    leader: &str,
    also: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = controller_pods(ns).await?;
        let labelled: Vec<&str> = pods
            .iter()
            .filter(|(_, _, l)| l.as_deref() == Some(LEASE))
            .map(|(n, _, _)| n.as_str())
            .collect();
        if pods.len() == 2
            && pods.iter().all(|(_, ready, _)| *ready)
            && labelled == [leader]
            && also()
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "want 2 Ready pods, only the leader {leader} labelled: {pods:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn failover(ns: &TestNs) -> anyhow::Result<()> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path is not UTF-8")?;
    let n = ns.name.as_str();
    let watch = format!("watchNamespace={n}");

    // The chart's defaults: two replicas, leader election, logs on an emptyDir.
    let t0 = Instant::now();
    helm(&[
        "install",
        RELEASE,
        chart,
        "--namespace",
        n,
        "--set",
        &watch,
        "--set",
        "controller.pingInterval=1s",
        "--wait",
        "--timeout",
        "120s",
    ])
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), n);
    let d = wait_for(&deployments, RELEASE, deployment_rolled_out(), 60).await?;
    ensure!(
        d.spec.as_ref().and_then(|s| s.replicas) == Some(2),
        "the chart's default is two replicas"
    );
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), n);
    let lease = wait_for(
        &leases,
        LEASE,
        |l: Option<&Lease>| l.and_then(holder).is_some_and(|h| !h.is_empty()),
        60,
    )
    .await?;
    let leader = holder(&lease).context("no holder")?;
    eprintln!(
        "install until two replicas Ready and a leader ({leader}): {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    // Exactly the leader carries the label the Service selects.
    two_pods_only_leader_labelled(ns, &leader, || true).await?;

    let (token, _) = controller_mints(ns, "failover-token").await?;
    let services: Api<Service> = Api::namespaced(ns.client.clone(), n);
    let ip = services
        .get(RELEASE)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the Service has no ClusterIP")?;
    let server = format!("http://{ip}:8080");
    let dir = TempDir::new(n);
    // Steps run as step pods: "run once" is counted in pods.
    let runner = Agent::start_with_backend(
        &server,
        n,
        "r1",
        &dir.join("r1"),
        Some(&token),
        "",
        "kubernetes",
    )
    .await?;
    runner.wait_ready(200, 60).await?;

    // Every step pod ever created for the Job, by uid (the controller removes them
    // when the Job ends): a step run twice would show as a second uid.
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), n);
    let recorder = crate::support::StepPodRecorder::start(&ns.client, n, "through-failover");
    let jobs: Api<Job> = Api::namespaced(ns.client.clone(), n);
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": "through-failover" },
        "spec": {
            "runnerSelector": { "matchLabels": { "pool": "chart" } },
            "steps": [
                { "name": "first", "image": STEP_IMAGE, "script": "echo first step done" },
                {
                    "name": "count",
                    "image": STEP_IMAGE,
                    "dependsOn": ["first"],
                    "script": "for i in $(seq 1 40); do echo line $i; sleep 0.5; done",
                },
            ],
        }
    }))?;
    jobs.create(&PostParams::default(), &job).await?;
    // Kill the leader while `count` runs (and `first` has finished: its log must be
    // replayed to the new leader, no new chunk will ever carry it).
    wait_for(
        &jobs,
        "through-failover",
        |j: Option<&Job>| {
            j.and_then(|j| j.status.as_ref()).is_some_and(|s| {
                s.steps
                    .iter()
                    .any(|st| st.name == "count" && st.phase == baton::crd::job::StepPhase::Running)
            })
        },
        90,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The leader hangs (SIGSTOP to its process on this node): it neither renews
    // nor releases the Lease, and its connections go silent. (A pod deletion would
    // deliver SIGTERM and a clean hand-over, measured at the end; a SIGKILLed
    // container is restarted by the kubelet under the same pod name and takes its
    // own Lease back at once.)
    let pid = controller_pid(&leader)?;
    let killed_at = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)
        .with_context(|| format!("SIGSTOP pid {pid}"))?;
    eprintln!("froze the leader {leader} (pid {pid}, SIGSTOP) mid-job");

    let lease = wait_for(
        &leases,
        LEASE,
        |l: Option<&Lease>| {
            l.and_then(holder)
                .is_some_and(|h| !h.is_empty() && h != leader)
        },
        60,
    )
    .await?;
    let took_over = killed_at.elapsed();
    let new_leader = holder(&lease).context("no holder")?;
    ensure!(
        lease.spec.as_ref().and_then(|s| s.lease_transitions) >= Some(1),
        "a takeover counts a transition: {lease:?}"
    );
    eprintln!(
        "FAILOVER: {new_leader} took the Lease {:.1}s after the leader hung",
        took_over.as_secs_f64()
    );
    // The runner finds the new leader through the Service.
    runner
        .wait_ready(503, 30)
        .await
        .context("the runner never noticed its controller was gone")?;
    runner.wait_ready(200, 90).await?;
    let reconnected = killed_at.elapsed();
    eprintln!(
        "FAILOVER: runner connected to the new leader {:.1}s after the hang",
        reconnected.as_secs_f64()
    );

    let done = wait_for(
        &jobs,
        "through-failover",
        job_phase(JobPhase::Succeeded),
        120,
    )
    .await?;
    eprintln!(
        "FAILOVER: Job Succeeded {:.1}s after the hang",
        killed_at.elapsed().as_secs_f64()
    );
    let st = done.status.context("status")?;
    ensure!(
        st.epoch == Some(1) && st.runner.as_deref() == Some("r1"),
        "the Job was not handed to another runner: {st:?}"
    );
    // Run once: one step pod per step, ever.
    let steps: Vec<String> = recorder.all().into_iter().map(|(step, _)| step).collect();
    ensure!(
        steps == ["count", "first"],
        "one step pod per step, none run twice: {steps:?}"
    );

    // The whole log of both steps, from the new leader's (fresh) emptyDir.
    let reader = crate::jobs::sa_token(ns, "log-reader", true).await?;
    let (code, log) =
        crate::jobs::read_log(&server, n, "through-failover", "count", Some(&reader)).await?;
    let expected: String = (1..=40).map(|i| format!("line {i}\n")).collect();
    ensure!(
        code == 200 && log == expected,
        "count's log after the failover ({code}):\n{log}"
    );
    let (code, log) =
        crate::jobs::read_log(&server, n, "through-failover", "first", Some(&reader)).await?;
    ensure!(
        code == 200 && log == "first step done\n",
        "first's log (finished before the failover) after it ({code}):\n{log}"
    );

    // The old leader wakes up (unless its liveness probe had it restarted first):
    // it finds the Lease taken, steps down by exiting, and its container comes
    // back as a standby: two Ready replicas, only the new leader labelled.
    match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT) {
        Ok(()) => eprintln!("woke the old leader (SIGCONT)"),
        Err(e) => eprintln!(
            "the old leader's process is gone already ({e}): restarted by its liveness probe"
        ),
    }
    wait_for(&deployments, RELEASE, deployment_rolled_out(), 90).await?;
    two_pods_only_leader_labelled(ns, &new_leader, || {
        controller_pid(&leader).is_ok_and(|p| p != pid)
    })
    .await
    .with_context(|| format!("and {leader}'s process restarted"))?;

    // A clean hand-over: deleting the leader's pod (SIGTERM) releases the Lease,
    // and the standby takes it within a retry period, not a lease duration.
    let deleted_at = Instant::now();
    pods.delete(&new_leader, &DeleteParams::default()).await?;
    let lease = wait_for(
        &leases,
        LEASE,
        |l: Option<&Lease>| {
            l.and_then(holder)
                .is_some_and(|h| !h.is_empty() && h != new_leader)
        },
        60,
    )
    .await?;
    let handed_over = deleted_at.elapsed();
    eprintln!(
        "HANDOVER: {} took the Lease {:.1}s after the leader's pod was deleted",
        holder(&lease).unwrap_or_default(),
        handed_over.as_secs_f64()
    );
    ensure!(
        handed_over < Duration::from_secs(10),
        "a released Lease is taken without waiting out its duration (took {handed_over:?})"
    );
    drop(runner);
    Ok(())
}

/// The pid, on this node, of the controller process running in pod `pod` (its
/// environment holds POD_NAME=<pod>; pod names are unique).
fn controller_pid(pod: &str) -> anyhow::Result<nix::unistd::Pid> {
    let want = format!("POD_NAME={pod}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let (Ok(environ), Ok(cmdline)) = (
            std::fs::read(entry.path().join("environ")),
            std::fs::read(entry.path().join("cmdline")),
        ) else {
            continue;
        };
        let is_pod = environ.split(|b| *b == 0).any(|v| v == want.as_bytes());
        let is_controller = cmdline
            .split(|b| *b == 0)
            .nth(1)
            .is_some_and(|arg| arg == b"controller");
        if is_pod && is_controller {
            found.push(pid);
        }
    }
    ensure!(
        found.len() == 1,
        "want one controller process of pod {pod} on this node, found {found:?}"
    );
    Ok(nix::unistd::Pid::from_raw(found[0]))
}
