//! Jobs end to end on the real cluster: a real `baton controller` and a real static
//! `baton runner` (local backend) per test; Jobs applied through the API server,
//! logs read through the controller's server with Kubernetes tokens.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use baton::crd::Job;
use baton::crd::conditions;
use baton::crd::job::{JobPhase, StepPhase};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::Condition;

use crate::procs::{Agent, Controller, TempDir, baton_ok, http};
use crate::support::{TestNs, in_namespace, wait_for};

pub(crate) fn jobs(ns: &TestNs) -> Api<Job> {
    Api::namespaced(ns.client.clone(), &ns.name)
}

pub(crate) fn phase_is(phase: JobPhase) -> impl Condition<Job> {
    move |j: Option<&Job>| j.and_then(|j| j.status.as_ref()?.phase) == Some(phase)
}

fn scheduled_reason(reason: &'static str) -> impl Condition<Job> {
    move |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref())
            .and_then(|s| conditions::find(&s.conditions, "Scheduled"))
            .is_some_and(|c| c.status == "False" && c.reason == reason)
    }
}

/// A controller and one preadopted static runner `r1` labelled `pool=e2e`.
pub(crate) struct Setup {
    pub(crate) ctl: Controller,
    pub(crate) runner: Agent,
    pub(crate) token: String,
    pub(crate) dir: TempDir,
}

pub(crate) async fn setup(ns: &TestNs) -> anyhow::Result<Setup> {
    setup_with(ns, "local").await
}

/// [`setup`] with the runner's `--backend`.
pub(crate) async fn setup_with(ns: &TestNs, backend: &str) -> anyhow::Result<Setup> {
    setup_env(ns, backend, &[]).await
}

/// [`setup_with`], the controller with extra environment.
async fn setup_env(ns: &TestNs, backend: &str, envs: &[(&str, &str)]) -> anyhow::Result<Setup> {
    setup_runner(ns, backend, envs, &[]).await
}

/// [`setup_env`], the runner with extra `baton runner` flags (`--direct-only`).
async fn setup_runner(
    ns: &TestNs,
    backend: &str,
    envs: &[(&str, &str)],
    flags: &[&str],
) -> anyhow::Result<Setup> {
    let ctl = Controller::start_with_env(&ns.name, "127.0.0.1:0", envs).await?;
    let out = baton_ok(&[
        "token", "create", "t1", "-n", &ns.name, "--runner", "r1", "--labels", "pool=e2e",
    ])
    .await?;
    let token = out.trim().to_owned();
    let dir = TempDir::new(&ns.name);
    let runner = Agent::start_with_flags(
        &ctl.url,
        &ns.name,
        "r1",
        &dir.join("r1"),
        Some(&token),
        "",
        backend,
        flags,
    )
    .await?;
    runner.wait_ready(200, 30).await?;
    Ok(Setup {
        ctl,
        runner,
        token,
        dir,
    })
}

pub(crate) fn job(name: &str, selector: &str, steps: serde_json::Value) -> anyhow::Result<Job> {
    let (k, v) = selector.split_once('=').context("selector k=v")?;
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": name },
        "spec": {
            "runnerSelector": { "matchLabels": { k: v } },
            "steps": steps,
        }
    }))?)
}

pub(crate) async fn apply(ns: &TestNs, job: &Job) -> anyhow::Result<()> {
    jobs(ns).create(&PostParams::default(), job).await?;
    Ok(())
}

/// A ServiceAccount token; with `may_get`, the account may `get` Jobs here.
pub(crate) async fn sa_token(ns: &TestNs, name: &str, may_get: bool) -> anyhow::Result<String> {
    let verbs: &[&str] = if may_get { &["get"] } else { &[] };
    sa_token_may(ns, name, verbs).await
}

/// A ServiceAccount token for Baton; the account may `verbs` Jobs here.
pub(crate) async fn sa_token_may(
    ns: &TestNs,
    name: &str,
    verbs: &[&str],
) -> anyhow::Result<String> {
    let pp = PostParams::default();
    let sas: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), &ns.name);
    sas.create(
        &pp,
        &serde_json::from_value(serde_json::json!({ "metadata": { "name": name } }))?,
    )
    .await?;
    if !verbs.is_empty() {
        let role: Role = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "rules": [{ "apiGroups": ["baton.dev"], "resources": ["jobs"], "verbs": verbs }]
        }))?;
        Api::<Role>::namespaced(ns.client.clone(), &ns.name)
            .create(&pp, &role)
            .await?;
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
            "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ns.name }]
        }))?;
        Api::<RoleBinding>::namespaced(ns.client.clone(), &ns.name)
            .create(&pp, &binding)
            .await?;
    }
    // Baton takes only tokens minted for it (`kubectl create token SA --audience baton`).
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![baton::protocol::jobs::LOG_TOKEN_AUDIENCE.to_owned()],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let tr = sas.create_token_request(name, &pp, &tr).await?;
    tr.status.map(|s| s.token).context("token request status")
}

/// GET a step's log through the server: (status, body).
/// Job `name`'s Events (reason, note) once those of every reason in `want`
/// arrived (at most 10 s).
pub(crate) async fn job_events(
    ns: &TestNs,
    name: &str,
    want: &[&str],
) -> anyhow::Result<Vec<(String, String)>> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(ns.client.clone(), &ns.name);
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen = (events.list(&Default::default()).await?.items.into_iter())
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect();
        if want.iter().all(|w| seen.iter().any(|(r, _)| r == w)) {
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("Job {name}: wanted Events {want:?}, got {seen:?}")
}

pub(crate) async fn read_log(
    url: &str,
    ns: &str,
    job: &str,
    step: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut r = http().get(format!("{url}/v1/jobs/{ns}/{job}/logs?step={step}"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let res = r.send().await?;
    Ok((res.status().as_u16(), res.text().await?))
}

#[tokio::test]
async fn one_step_job_on_a_static_runner_succeeds_with_rbac_checked_logs() {
    in_namespace("job-one", |ns| async move {
        let s = setup(&ns).await?;
        let script = "for i in $(seq 1 20); do echo line $i; done";
        let started = Instant::now();
        apply(
            &ns,
            &job(
                "one",
                "pool=e2e",
                serde_json::json!([
                    { "name": "count", "image": "busybox", "script": script }
                ]),
            )?,
        )
        .await?;
        wait_for(&jobs(&ns), "one", phase_is(JobPhase::Running), 30)
            .await
            .ok();
        let to_running = started.elapsed();
        let j = wait_for(&jobs(&ns), "one", phase_is(JobPhase::Succeeded), 60).await?;
        let to_done = started.elapsed();
        println!("TIMING apply->Running {to_running:?} apply->Succeeded {to_done:?}");
        let st = j.status.context("status")?;
        ensure!(
            st.runner.as_deref() == Some("r1") && st.epoch == Some(1),
            "{st:?}"
        );
        ensure!(
            st.steps.len() == 1 && st.steps[0].phase == StepPhase::Succeeded,
            "{st:?}"
        );
        ensure!(conditions::is_true(&st.conditions, "Scheduled"));
        ensure!(conditions::is_true(&st.conditions, "Complete"));
        ensure!(st.start_time.is_some() && st.completion_time.is_some());

        // The gauges follow the controller's watch cache, which may see the end a
        // moment after this test's watch did: read until they agree (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = http()
                .get(format!("{}/metrics", s.ctl.url))
                .send()
                .await?
                .text()
                .await?;
            let value = |series: &str| -> f64 {
                metrics
                    .lines()
                    .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
                    .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                    .unwrap_or(-1.0)
            };
            if value("baton_reconcile_total{kind=\"Job\",outcome=\"ok\"}") > 0.0
                && value("baton_jobs{phase=\"Succeeded\"}") >= 1.0
                && value("baton_job_duration_seconds_count") >= 1.0
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "metrics do not show the Succeeded Job after 10s:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let allowed = sa_token(&ns, "reader", true).await?;
        let denied = sa_token(&ns, "stranger", false).await?;
        let want: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let (code, body) = read_log(&s.ctl.url, &ns.name, "one", "count", Some(&allowed)).await?;
        ensure!(code == 200 && body == want, "allowed: {code} {body:?}");
        let (code, body) = read_log(&s.ctl.url, &ns.name, "one", "count", Some(&denied)).await?;
        ensure!(
            code == 403 && body.contains("Forbidden"),
            "denied: {code} {body}"
        );
        let (code, _) = read_log(&s.ctl.url, &ns.name, "one", "count", None).await?;
        ensure!(code == 401, "no token: {code}");
        let (code, _) = read_log(&s.ctl.url, &ns.name, "one", "count", Some("garbage")).await?;
        ensure!(code == 401, "garbage token: {code}");

        // The runner's token cannot write to a finished Job, nor claim it.
        let res = http()
            .post(format!("{}/v1/jobs/{}/one/claim", s.ctl.url, ns.name))
            .bearer_auth(&s.token)
            .json(&serde_json::json!({ "runner": "r1", "epoch": 1 }))
            .send()
            .await?;
        ensure!(
            res.status().as_u16() == 409,
            "claim of a finished job: {}",
            res.status()
        );

        // An Event per transition; a first assignment's is the runner's Started,
        // which names it (a hand-over's Assigned: on_demand.rs).
        let seen = job_events(&ns, "one", &["Started", "Succeeded"]).await?;
        ensure!(
            seen.iter()
                .any(|(r, n)| r == "Started" && n == "runner r1 at epoch 1"),
            "events {seen:?}"
        );
        ensure!(
            !seen.iter().any(|(r, _)| r == "Assigned"),
            "events {seen:?}"
        );

        // Deleting the Job deletes its stored logs.
        let logs_dir = std::env::temp_dir().join("baton-data/logs").join(&ns.name);
        ensure!(
            std::fs::read_dir(&logs_dir)?.count() == 1,
            "one Job's logs stored"
        );
        jobs(&ns).delete("one", &Default::default()).await?;
        let mut left = 1;
        for _ in 0..50 {
            left = std::fs::read_dir(&logs_dir).map(|d| d.count()).unwrap_or(0);
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(left == 0, "logs left after the Job was deleted");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn diamond_dag_with_outputs_and_a_failing_step_with_on_failure_and_always() {
    in_namespace("job-dag", |ns| async move {
        let s = setup_with(&ns, "kubernetes").await?;
        apply(&ns, &job("diamond", "pool=e2e", serde_json::json!([
            { "name": "a", "image": crate::support::STEP_IMAGE, "script": "echo a=1 >> $BATON_OUTPUT" },
            { "name": "b", "image": crate::support::STEP_IMAGE, "dependsOn": ["a"], "script": "echo b=$BATON_OUTPUT_A >> $BATON_OUTPUT" },
            { "name": "c", "image": crate::support::STEP_IMAGE, "dependsOn": ["a"], "script": "echo c=2 >> $BATON_OUTPUT" },
            { "name": "d", "image": crate::support::STEP_IMAGE, "dependsOn": ["b", "c"], "script": "echo d=done >> $BATON_OUTPUT" }
        ]))?)
        .await?;
        apply(&ns, &job("failing", "pool=e2e", serde_json::json!([
            { "name": "build", "image": crate::support::STEP_IMAGE, "script": "echo boom; exit 3" },
            { "name": "deploy", "image": crate::support::STEP_IMAGE, "dependsOn": ["build"], "script": "echo never" },
            { "name": "notify", "image": crate::support::STEP_IMAGE, "dependsOn": ["build"], "when": "onFailure", "script": "echo notified" },
            { "name": "cleanup", "image": crate::support::STEP_IMAGE, "dependsOn": ["build"], "when": "always", "script": "echo cleaned" }
        ]))?)
        .await?;
        let j = wait_for(&jobs(&ns), "diamond", phase_is(JobPhase::Succeeded), 60).await?;
        let st = j.status.context("status")?;
        let outputs: Vec<(String, String)> = st.outputs.clone().into_iter().collect();
        ensure!(
            outputs == [("a", "1"), ("b", "1"), ("c", "2"), ("d", "done")]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            "outputs {:?}",
            st.outputs
        );
        ensure!(st.steps.iter().all(|s| s.phase == StepPhase::Succeeded), "{:?}", st.steps);

        let j = wait_for(&jobs(&ns), "failing", phase_is(JobPhase::Failed), 60).await?;
        let st = j.status.context("status")?;
        let phase = |n: &str| st.steps.iter().find(|s| s.name == n).map(|s| s.phase);
        ensure!(phase("build") == Some(StepPhase::Failed), "{:?}", st.steps);
        ensure!(phase("deploy") == Some(StepPhase::Skipped), "{:?}", st.steps);
        ensure!(phase("notify") == Some(StepPhase::Succeeded), "{:?}", st.steps);
        ensure!(phase("cleanup") == Some(StepPhase::Succeeded), "{:?}", st.steps);
        ensure!(conditions::is_true(&st.conditions, "Failed"));

        // A step over its timeout fails with reason DeadlineExceeded; a workspace is shared.
        let mut timed = job("timed", "pool=e2e", serde_json::json!([
            { "name": "write", "image": crate::support::STEP_IMAGE, "script": "echo shared > /workspace/f" },
            { "name": "read", "image": crate::support::STEP_IMAGE, "dependsOn": ["write"], "script": "cat /workspace/f" },
            { "name": "slow", "image": crate::support::STEP_IMAGE, "dependsOn": ["read"], "timeout": "2s", "script": "sleep 120" }
        ]))?;
        timed.spec.workspace = Some(serde_json::from_value(serde_json::json!({ "size": "64Mi" }))?);
        apply(&ns, &timed).await?;
        let j = wait_for(&jobs(&ns), "timed", phase_is(JobPhase::Failed), 120).await?;
        let st = j.status.context("status")?;
        let step = |n: &str| st.steps.iter().find(|s| s.name == n).cloned();
        ensure!(step("read").map(|s| s.phase) == Some(StepPhase::Succeeded), "{:?}", st.steps);
        let slow = step("slow").context("slow")?;
        ensure!(
            slow.phase == StepPhase::Failed && slow.reason.as_deref() == Some("DeadlineExceeded"),
            "{slow:?}"
        );
        let reader = sa_token(&ns, "reader", true).await?;
        let (code, body) = read_log(&s.ctl.url, &ns.name, "timed", "read", Some(&reader)).await?;
        ensure!(code == 200 && body == "shared\n", "workspace: {code} {body:?}");
        Ok(())
    })
    .await;
}

/// `kubectl baton` with the server and a Kubernetes token in the environment.
async fn plugin(args: &[&str], server: &str, token: &str) -> anyhow::Result<(i32, String, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(crate::procs::BATON)
            .args(args)
            .env("BATON_SERVER", server)
            .env("BATON_TOKEN", token)
            .output(),
    )
    .await
    .context("the plugin did not finish within 90s")??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn job_run_follows_logs_to_the_end_and_exits_with_the_result() {
    in_namespace("job-follow", |ns| async move {
        let s = setup(&ns).await?;
        let reader = sa_token(&ns, "reader", true).await?;
        let dir = TempDir::new(&format!("{}-files", ns.name));
        let manifest = |name: &str, script: &str| {
            format!(
                "apiVersion: baton.dev/v1alpha1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  runnerSelector:\n    matchLabels:\n      pool: e2e\n  steps:\n  - name: first\n    image: busybox\n    script: |\n      for i in 1 2 3; do echo first $i; sleep 0.3; done\n  - name: second\n    image: busybox\n    dependsOn: [first]\n    script: |\n      {script}\n"
            )
        };
        let ok = dir.join("ok.yaml");
        std::fs::write(&ok, manifest("ok", "echo second done"))?;
        let (code, out, err) = plugin(
            &["job", "run", ok.to_str().context("path")?, "-f", "-n", &ns.name],
            &s.ctl.url,
            &reader,
        )
        .await?;
        ensure!(code == 0, "exit {code}: {err}");
        ensure!(
            out == "==> step first <==\nfirst 1\nfirst 2\nfirst 3\n==> step second <==\nsecond done\n",
            "followed output: {out:?}"
        );
        ensure!(err.contains("Succeeded"), "{err}");

        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, manifest("bad", "echo broken; exit 4"))?;
        let (code, out, err) = plugin(
            &["job", "run", bad.to_str().context("path")?, "-f", "-n", &ns.name],
            &s.ctl.url,
            &reader,
        )
        .await?;
        ensure!(code == 1, "exit {code}: {err}");
        ensure!(out.ends_with("broken\n"), "{out:?}");

        // `job logs --step` of a finished Job, and a token that may not read it.
        let (code, out, _) = plugin(
            &["job", "logs", "ok", "--step", "second", "-n", &ns.name],
            &s.ctl.url,
            &reader,
        )
        .await?;
        ensure!(code == 0 && out == "second done\n", "{code} {out:?}");
        let stranger = sa_token(&ns, "stranger", false).await?;
        let (code, _, err) =
            plugin(&["job", "logs", "ok", "-n", &ns.name], &s.ctl.url, &stranger).await?;
        ensure!(code != 0 && err.contains("403"), "{code} {err}");
        Ok(())
    })
    .await;
}

fn step_pods(ns: &TestNs) -> Api<k8s_openapi::api::core::v1::Pod> {
    Api::namespaced(ns.client.clone(), &ns.name)
}

mod direct;
mod lifecycle;
mod pod_shape;
mod private_images;
mod queue;
mod restarts;
mod secrets;
mod services;
mod shell_less;
mod step_ends;
