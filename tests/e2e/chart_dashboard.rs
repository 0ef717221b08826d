//! The chart's optional dashboard (`dashboard.enabled`) on the real cluster: `helm
//! install --wait` with one controller and the dashboard in the test's namespace
//! (Pod Security `restricted`); the dashboard's pod Ready through its probes
//! (`/readyz` under its public Host name); its Service answering, from this node,
//! the Jobs page under that Host and 421 under any other; its ServiceAccount only
//! reading (the API server refuses its Cancel); then the release removed.
//!
//! And with `dashboard.proxyUserHeader` (acting as each proxied user): two users
//! named in the proxy's header — one bound to read and patch Jobs in the test's
//! namespace only, one with nothing — see, and may do, exactly what their RBAC
//! allows; a request without the header is 401. Their steps' logs come through
//! the dashboard's relay (its own projected token to the controller's log route)
//! for alice only.

use anyhow::{Context, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::chart::helm_with;
use crate::helm::{RELEASE, chart_dir, cleanup, deployment_rolled_out};
use crate::jobs::{apply, job};
use crate::procs::{http, wait_status};
use crate::support::{STEP_IMAGE, TestNs, in_namespace, wait_for};
use baton::crd::Job;
use baton::crd::job::JobPhase;

const DASHBOARD: &str = "baton-dashboard";
const PUBLIC: &str = "baton.example.test";
/// Bound to read and patch Jobs in the test's namespace.
const ALICE: &str = "alice@example.test";
/// Bound to nothing.
const BOB: &str = "bob@example.test";

#[tokio::test]
async fn chart_runs_the_dashboard_behind_its_public_host_name() {
    in_namespace("chart-dash", |ns| async move {
        let result = chart_dashboard(&ns).await;
        cleanup(&ns).await;
        result
    })
    .await;
}

/// A Job no runner takes: it waits, and the dashboard lists it.
async fn apply_waiting_job(ns: &TestNs) -> anyhow::Result<()> {
    let steps = json!([{ "name": "a", "image": "busybox", "script": "true" }]);
    apply(ns, &job("waiting", "pool=nobody", steps)?).await
}

/// `helm install --wait` with one controller and the dashboard, plus `extra`
/// values; the dashboard's Service URL (its ClusterIP, reached from this node).
async fn install(ns: &TestNs, extra: &[String]) -> anyhow::Result<(String, String)> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path is not UTF-8")?;
    let n = ns.name.as_str();
    let values: Vec<String> = [
        format!("watchNamespace={n}"),
        "replicaCount=1".to_owned(),
        "dashboard.enabled=true".to_owned(),
        format!("dashboard.publicHosts={{{PUBLIC}}}"),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .flat_map(|v| ["--set".to_owned(), v])
    .collect();
    let install = [
        "install",
        RELEASE,
        chart,
        "--namespace",
        n,
        "--wait",
        "--timeout",
        "180s",
    ];
    helm_with(&install, &values).await?;
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), n);
    wait_for(&deployments, DASHBOARD, deployment_rolled_out(), 60).await?;
    let ip = Api::<Service>::namespaced(ns.client.clone(), n)
        .get(DASHBOARD)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the dashboard's Service has no ClusterIP")?;
    let url = format!("http://{ip}:8765");
    // The pod is Ready a moment before the Service routes to it; any answer (421:
    // the IP is no public Host) says it does. Under the full suite's load a
    // ClusterIP once answered 404 for 30 s (kube-proxy behind): a minute and a half,
    // each try on a new connection (wait_status).
    wait_status(&format!("{url}/livez"), 421, 90).await?;
    Ok((ip, url))
}

/// The page's CSRF token (its `baton-token` meta tag).
fn page_token(html: &str) -> anyhow::Result<String> {
    html.split(r#"name="baton-token" content=""#)
        .nth(1)
        .and_then(|t| t.split('"').next())
        .map(str::to_owned)
        .context("the page's token")
}

async fn chart_dashboard(ns: &TestNs) -> anyhow::Result<()> {
    let n = ns.name.as_str();
    apply_waiting_job(ns).await?;
    let (ip, url) = install(ns, &[]).await?;
    let page = http()
        .get(format!("{url}/"))
        .header("host", PUBLIC)
        .send()
        .await?;
    ensure!(
        page.status() == 200,
        "GET / under {PUBLIC}: {}",
        page.status()
    );
    let html = page.text().await?;
    ensure!(
        html.contains(r#"data-job="waiting""#) && html.contains("all namespaces"),
        "the page lists the waiting Job of every namespace:\n{html}"
    );
    for host in ["attacker.example", &format!("{ip}:8765"), ""] {
        let res = http()
            .get(format!("{url}/"))
            .header("host", host)
            .send()
            .await?;
        ensure!(res.status() == 421, "Host {host:?}: {}", res.status());
    }

    // Read-only: the page's own Cancel, with its token, is refused by the API server.
    let token = page_token(&html)?;
    let cancel = http()
        .post(format!("{url}/api/jobs/{n}/waiting/cancel"))
        .header("host", PUBLIC)
        .header("x-baton-token", token)
        .send()
        .await?;
    ensure!(
        cancel.status() == 403,
        "cancel as the dashboard: {}",
        cancel.status()
    );
    let job = crate::jobs::jobs(ns).get("waiting").await?;
    ensure!(job.spec.cancel != Some(true), "the Job was not cancelled");
    Ok(())
}

#[tokio::test]
async fn chart_dashboard_acts_as_each_proxied_user() {
    in_namespace("chart-dash-users", |ns| async move {
        let result = proxied_users(&ns).await;
        cleanup(&ns).await;
        result
    })
    .await;
}

/// Alice may read and patch Jobs in the test's namespace (a Role, bound to her name).
async fn grant_alice(ns: &TestNs) -> anyhow::Result<()> {
    let n = ns.name.as_str();
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "job-reader" },
        "rules": [{ "apiGroups": ["baton.dev"], "resources": ["jobs"],
                    "verbs": ["get", "list", "watch", "patch"] }],
    }))?;
    Api::<Role>::namespaced(ns.client.clone(), n)
        .create(&PostParams::default(), &role)
        .await
        .context("create Role job-reader")?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "job-reader" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "job-reader" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ALICE }],
    }))?;
    Api::<RoleBinding>::namespaced(ns.client.clone(), n)
        .create(&PostParams::default(), &binding)
        .await
        .context("create RoleBinding job-reader")?;
    Ok(())
}

async fn proxied_users(ns: &TestNs) -> anyhow::Result<()> {
    let n = ns.name.as_str();
    apply_waiting_job(ns).await?;
    grant_alice(ns).await?;
    let mode = [
        "dashboard.proxyUserHeader=X-Forwarded-User".to_owned(),
        "dashboard.proxyGroupsHeader=X-Forwarded-Groups".to_owned(),
        "dashboard.networkPolicy.proxySelector.podSelector.matchLabels.app=auth-proxy".to_owned(),
    ];
    let (_, url) = install(ns, &mode).await?;
    policy_admits_only_the_proxy(ns).await?;
    let get = |path: &str, user: Option<&str>| {
        let req = http().get(format!("{url}{path}")).header("host", PUBLIC);
        match user {
            Some(u) => req
                .header("x-forwarded-user", u)
                .header("x-forwarded-groups", "devs"),
            None => req,
        }
    };

    let anonymous = get("/", None).send().await?;
    ensure!(
        anonymous.status() == 401,
        "no user header: {}",
        anonymous.status()
    );
    let alice = get("/", Some(ALICE)).send().await?.text().await?;
    ensure!(
        alice.contains(r#"data-job="waiting""#),
        "alice sees her namespace's Job:\n{alice}"
    );
    let bob = get("/", Some(BOB)).send().await?.text().await?;
    ensure!(!bob.contains("data-job="), "bob sees no Job row:\n{bob}");
    let page = get(&format!("/jobs/{n}/waiting"), Some(ALICE))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        page.contains("Cancel Job"),
        "alice gets a Cancel button:\n{page}"
    );
    let page = get(&format!("/jobs/{n}/waiting"), Some(BOB))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        !page.contains("Cancel Job"),
        "bob gets no Cancel button:\n{page}"
    );

    // Bob's Cancel (with a page token of his own) is the API server's 403; alice's works.
    let cancel = |user: &str, token: String| {
        http()
            .post(format!("{url}/api/jobs/{n}/waiting/cancel"))
            .header("host", PUBLIC)
            .header("x-forwarded-user", user)
            .header("x-baton-token", token)
            .send()
    };
    let refused = cancel(BOB, page_token(&bob)?).await?;
    let status = refused.status();
    ensure!(
        status == 403,
        "bob's cancel: {status} {}",
        refused.text().await?
    );
    let job = crate::jobs::jobs(ns).get("waiting").await?;
    ensure!(job.spec.cancel != Some(true), "bob did not cancel the Job");
    let done = cancel(ALICE, page_token(&alice)?).await?;
    let status = done.status();
    ensure!(
        status == 200,
        "alice's cancel: {status} {}",
        done.text().await?
    );
    let cancelled = |j: Option<&Job>| j.is_some_and(|j| j.spec.cancel == Some(true));
    wait_for(&crate::jobs::jobs(ns), "waiting", cancelled, 30).await?;
    logs_for_alice_only(ns, &url).await
}

/// A Job that runs (on an on-demand runner): its step's log, relayed to alice as
/// server-sent events to its end; bob, who may not get the Job, gets 403.
async fn logs_for_alice_only(ns: &TestNs, url: &str) -> anyhow::Result<()> {
    let n = ns.name.as_str();
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "Job",
        "metadata": { "name": "hello" },
        "spec": { "steps": [{
            "name": "say", "image": STEP_IMAGE, "script": "echo hello through the relay",
        }] }
    }))?;
    apply(ns, &job).await?;
    let done = crate::jobs::phase_is(JobPhase::Succeeded);
    wait_for(&crate::jobs::jobs(ns), "hello", done, 180).await?;
    let log = |user: &str| {
        http()
            .get(format!("{url}/live/logs/{n}/hello/say"))
            .header("host", PUBLIC)
            .header("x-forwarded-user", user)
            .send()
    };
    let alice = log(ALICE).await?;
    ensure!(alice.status() == 200, "alice's log: {}", alice.status());
    let events = alice.text().await?;
    ensure!(
        events.contains("hello through the relay") && events.contains("event:end"),
        "alice reads the step's log to its end:\n{events}"
    );
    let bob = log(BOB).await?;
    let status = bob.status();
    ensure!(status == 403, "bob's log: {status} {}", bob.text().await?);
    Ok(())
}

/// The chart's NetworkPolicy admits only the proxy's pods to the dashboard (this
/// cluster's bridge network plugin does not enforce it: this test reaches the
/// Service from the node).
async fn policy_admits_only_the_proxy(ns: &TestNs) -> anyhow::Result<()> {
    let policy = Api::<NetworkPolicy>::namespaced(ns.client.clone(), &ns.name)
        .get(DASHBOARD)
        .await
        .context("the dashboard's NetworkPolicy")?;
    let spec = policy.spec.context("a NetworkPolicy without spec")?;
    let selects = serde_json::to_value(&spec.pod_selector)?;
    ensure!(
        selects["matchLabels"]["app.kubernetes.io/component"] == "dashboard",
        "{selects}"
    );
    let from = serde_json::to_value(&spec.ingress)?;
    ensure!(
        from == json!([{
            "ports": [{ "port": "http", "protocol": "TCP" }],
            "from": [{ "podSelector": { "matchLabels": { "app": "auth-proxy" } } }]
        }]),
        "ingress only from the proxy: {from}"
    );
    Ok(())
}
