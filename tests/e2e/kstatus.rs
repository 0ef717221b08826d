//! What GitOps tools read: live Runner, RunnerToken and Job objects piped to the
//! real kstatus library (`hack/kstatus`, built by `make kstatus`, path in
//! `$BATON_KSTATUS`), which is what Flux uses to decide health.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use baton::crd::conditions;
use baton::crd::job::JobPhase;
use baton::crd::runner::AdoptionState;
use baton::crd::{Job, Runner, RunnerToken};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::Condition;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::procs::{Agent, Controller, TempDir, baton_ok};
use crate::support::{TestNs, in_namespace, wait_for};

/// The kstatus tool, or a failure saying how to get it.
fn tool() -> anyhow::Result<String> {
    let path = std::env::var("BATON_KSTATUS").map_err(|_| {
        anyhow!("BATON_KSTATUS is not set: run `make kstatus` and export the path it prints")
    })?;
    ensure!(
        std::path::Path::new(&path).is_file(),
        "BATON_KSTATUS={path} does not exist: run `make kstatus`"
    );
    Ok(path)
}

/// kstatus' verdict on one object: `(status, message)`.
async fn kstatus<K: Serialize>(tool: &str, obj: &K) -> anyhow::Result<(String, String)> {
    let json = serde_json::to_vec(obj)?;
    let mut child = tokio::process::Command::new(tool)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("run {tool}"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(&json).await?;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .context("kstatus tool timed out")??;
    if !out.status.success() {
        bail!(
            "kstatus tool failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let field = |k: &str| v.get(k).and_then(|s| s.as_str()).unwrap_or("").to_owned();
    Ok((field("status"), field("message")))
}

/// Read `name` live and check kstatus says `want`.
async fn expect<K>(tool: &str, api: &Api<K>, name: &str, want: &str) -> anyhow::Result<()>
where
    K: Clone + std::fmt::Debug + Serialize + serde::de::DeserializeOwned,
{
    let obj = api.get(name).await?;
    let (got, message) = kstatus(tool, &obj).await?;
    ensure!(
        got == want,
        "kstatus says {got} ({message}) of {name}, want {want}; status: {}",
        serde_json::to_string(&serde_json::to_value(&obj)?.get("status"))?
    );
    eprintln!("kstatus: {name}: {got} ({message})");
    Ok(())
}

/// Wait (bounded) for an Event with `reason` on the object `kind`/`name`.
async fn event_seen(ns: &TestNs, kind: &str, name: &str, reason: &str) -> anyhow::Result<()> {
    let api: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    for _ in 0..50 {
        let list = api.list(&ListParams::default()).await?;
        if list.items.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
        }) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("no Event {reason} on {kind} {name}")
}

fn job_phase(phase: JobPhase) -> impl Condition<Job> {
    move |j: Option<&Job>| j.and_then(|j| j.status.as_ref()?.phase) == Some(phase)
}

fn job(name: &str, pool: &str, script: &str) -> anyhow::Result<Job> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": name },
        "spec": {
            "runnerSelector": { "matchLabels": { "pool": pool } },
            "steps": [{ "name": "main", "image": "busybox", "script": script }],
        }
    }))?)
}

#[tokio::test]
async fn gitops_tools_read_every_kind_right() {
    in_namespace("kstatus", |ns: TestNs| async move {
        let tool = tool()?;
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        // Its runners register without a token: an operator opted the namespace in.
        ns.allow_pending_runners().await?;
        let pp = PostParams::default();
        let runners: Api<Runner> = Api::namespaced(ns.client.clone(), &ns.name);
        let tokens: Api<RunnerToken> = Api::namespaced(ns.client.clone(), &ns.name);
        let jobs: Api<Job> = Api::namespaced(ns.client.clone(), &ns.name);

        // A RunnerToken applied as a GitOps repo would: Current once minted.
        let rt: RunnerToken = serde_json::from_value(serde_json::json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "RunnerToken",
            "metadata": { "name": "fleet" }, "spec": { "labels": { "pool": "other" } }
        }))?;
        tokens.create(&pp, &rt).await?;
        let minted = |t: Option<&RunnerToken>| {
            t.and_then(|t| t.status.as_ref())
                .is_some_and(|s| conditions::is_true(&s.conditions, "Ready"))
        };
        wait_for(&tokens, "fleet", minted, 30).await?;
        expect(&tool, &tokens, "fleet", "Current").await?;

        // Runners declared before any process exists: one Adopted (declarative
        // adoption; its process registers without a token below), one Rejected.
        for (name, decision) in [("builder", "Adopted"), ("banned", "Rejected")] {
            let r: Runner = serde_json::from_value(serde_json::json!({
                "apiVersion": "baton.dev/v1alpha1", "kind": "Runner",
                "metadata": { "name": name },
                "spec": { "adoption": decision, "labels": { "pool": "ks" }, "maxConcurrentJobs": 3 }
            }))?;
            runners.create(&pp, &r).await?;
        }
        let adoption_is = |a: AdoptionState| {
            move |r: Option<&Runner>| {
                r.and_then(|r| r.status.as_ref())
                    .is_some_and(|s| s.adoption == Some(a))
            }
        };
        wait_for(&runners, "banned", adoption_is(AdoptionState::Rejected), 30).await?;
        expect(&tool, &runners, "banned", "Failed").await?;
        // Adopted but no process yet: not connected, Ready=False.
        wait_for(&runners, "builder", adoption_is(AdoptionState::Adopted), 30).await?;
        expect(&tool, &runners, "builder", "InProgress").await?;

        // A Runner declared in Git connects with a token bound to its name (a
        // tokenless process cannot claim a Runner it did not create).
        let token = baton_ok(&[
            "token", "create", "builder", "-n", &ns.name, "--runner", "builder",
        ])
        .await?;
        let dir = TempDir::new(&ns.name);
        let builder = Agent::start(
            &ctl.url,
            &ns.name,
            "builder",
            &dir.join("b"),
            Some(token.trim()),
            "",
        )
        .await?;
        builder.wait_ready(200, 30).await?;
        let connected = |r: Option<&Runner>| {
            r.and_then(|r| r.status.as_ref())
                .is_some_and(|s| conditions::is_true(&s.conditions, "Connected"))
        };
        wait_for(&runners, "builder", connected, 20).await?;
        expect(&tool, &runners, "builder", "Current").await?;

        // A runner nobody decided on: Pending.
        let _pending =
            Agent::start(&ctl.url, &ns.name, "newcomer", &dir.join("n"), None, "").await?;
        wait_for(
            &runners,
            "newcomer",
            adoption_is(AdoptionState::Pending),
            30,
        )
        .await?;
        expect(&tool, &runners, "newcomer", "InProgress").await?;

        // Jobs: one runs a while, then succeeds; one fails; one waits for a runner
        // that does not exist; one is cancelled while it waits.
        jobs.create(&pp, &job("slow-ok", "ks", "sleep 4")?).await?;
        jobs.create(&pp, &job("fails", "ks", "exit 3")?).await?;
        jobs.create(&pp, &job("waits", "nowhere", "true")?).await?;
        jobs.create(&pp, &job("dropped", "nowhere", "true")?)
            .await?;

        wait_for(&jobs, "slow-ok", job_phase(JobPhase::Running), 30).await?;
        expect(&tool, &jobs, "slow-ok", "InProgress").await?;
        wait_for(&jobs, "fails", job_phase(JobPhase::Failed), 30).await?;
        expect(&tool, &jobs, "fails", "Failed").await?;
        wait_for(&jobs, "slow-ok", job_phase(JobPhase::Succeeded), 30).await?;
        expect(&tool, &jobs, "slow-ok", "Current").await?;

        let waiting = |j: Option<&Job>| {
            j.and_then(|j| j.status.as_ref())
                .is_some_and(|s| conditions::is_true(&s.conditions, "Reconciling"))
        };
        wait_for(&jobs, "waits", waiting, 20).await?;
        expect(&tool, &jobs, "waits", "InProgress").await?;

        wait_for(&jobs, "dropped", waiting, 20).await?;
        jobs.patch(
            "dropped",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "cancel": true } })),
        )
        .await?;
        wait_for(&jobs, "dropped", job_phase(JobPhase::Cancelled), 20).await?;
        expect(&tool, &jobs, "dropped", "Failed").await?;

        // Each transition left an Event on its object.
        for (kind, name, reason) in [
            ("RunnerToken", "fleet", "Minted"),
            ("Runner", "banned", "Rejected"),
            ("Runner", "builder", "Adopted"),
            ("Runner", "newcomer", "Pending"),
            ("Job", "fails", "Failed"),
            ("Job", "dropped", "Cancelled"),
        ] {
            event_seen(&ns, kind, name, reason).await?;
        }
        Ok(())
    })
    .await;
}
