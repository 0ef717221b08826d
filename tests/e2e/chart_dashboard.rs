//! The chart's optional dashboard (`dashboard.enabled`) on the real cluster: `helm
//! install --wait` with one controller and the dashboard in the test's namespace
//! (Pod Security `restricted`); the dashboard's pod Ready through its probes
//! (`/readyz` under its public Host name); its Service answering, from this node,
//! the Jobs page under that Host and 421 under any other; its ServiceAccount only
//! reading (the API server refuses its Cancel); then the release removed.

use anyhow::{Context, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;

use crate::chart::helm_with;
use crate::helm::{RELEASE, chart_dir, cleanup, deployment_rolled_out};
use crate::jobs::{apply, job};
use crate::procs::http;
use crate::support::{TestNs, in_namespace, wait_for};

const DASHBOARD: &str = "baton-dashboard";
const PUBLIC: &str = "baton.example.test";

#[tokio::test]
async fn chart_runs_the_dashboard_behind_its_public_host_name() {
    in_namespace("chart-dash", |ns| async move {
        let result = chart_dashboard(&ns).await;
        cleanup(&ns).await;
        result
    })
    .await;
}

async fn chart_dashboard(ns: &TestNs) -> anyhow::Result<()> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path is not UTF-8")?;
    let n = ns.name.as_str();
    // A Job no runner takes: it waits, and the dashboard lists it.
    apply(
        ns,
        &job(
            "waiting",
            "pool=nobody",
            serde_json::json!([
                { "name": "a", "image": "busybox", "script": "true" }
            ]),
        )?,
    )
    .await?;
    let values: Vec<String> = [
        format!("watchNamespace={n}"),
        "replicaCount=1".to_owned(),
        "dashboard.enabled=true".to_owned(),
        format!("dashboard.publicHosts={{{PUBLIC}}}"),
    ]
    .into_iter()
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
    let token = html
        .split(r#"name="baton-token" content=""#)
        .nth(1)
        .and_then(|t| t.split('"').next())
        .context("the page's token")?;
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
