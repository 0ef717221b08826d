//! A namespaced install on the real cluster: the chart's RBAC rendered with
//! `watchNamespaces={a,b}` (a Role and RoleBinding in each; a ClusterRole with no
//! namespaced rule) is created, and a real `baton controller --namespace a,b` runs
//! with that ServiceAccount's token and nothing else. A Job in `a` and one in `b`
//! run to Succeeded, each on a runner of its namespace; a Job in `c` is never
//! touched; a runner registering into `c` is refused; a tokenless runner registers
//! in `a` (the Role's GET of its own Namespace); the controller logs no
//! forbidden request.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use baton::crd::Job;
use baton::crd::job::JobPhase;
use baton::crd::runner::AdoptionState;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::Value;

use crate::helm::{FULLNAME, RELEASE, chart_dir, create_manifest, helm};
use crate::jobs::{job, phase_is};
use crate::procs::{Agent, Controller, TempDir, baton_ok};
use crate::runners::{body_for, register_raw, runner_is};
use crate::support::{TestNs, in_namespaces, wait_for};

#[tokio::test]
async fn controller_with_roles_in_two_namespaces_serves_only_those() {
    in_namespaces(&["ns-a", "ns-b", "ns-c"], |all| async move {
        let result = two_of_three(&all).await;
        remove_cluster_rbac(&all[0]).await;
        result
    })
    .await;
}

async fn two_of_three(all: &[TestNs]) -> anyhow::Result<()> {
    let [a, b, c] = all else {
        bail!("three namespaces expected");
    };
    let rbac = render_rbac(&a.name, &[&a.name, &b.name]).await?;
    roles_only_where_watched(&rbac, &[&a.name, &b.name], &c.name)?;
    create_manifest(&a.client, &a.name, &rbac).await?;
    let dir = TempDir::new(&a.name);
    let kubeconfig = sa_kubeconfig(a, FULLNAME, &dir).await?;
    let kubeconfig = kubeconfig.to_str().context("kubeconfig path")?;
    let served = format!("{},{}", a.name, b.name);
    let ctl =
        Controller::start_with_env(&served, "127.0.0.1:0", &[("KUBECONFIG", kubeconfig)]).await?;

    let steps = serde_json::json!([{ "name": "hi", "image": "busybox", "script": "echo hi" }]);
    let unserved = job("outside", "pool=e2e", steps.clone())?;
    jobs(c).create(&PostParams::default(), &unserved).await?;
    let mut runners = Vec::new();
    for ns in [a, b] {
        runners.push(runner_in(ns, &ctl.url, &dir).await?);
        let j = job("inside", "pool=e2e", steps.clone())?;
        jobs(ns).create(&PostParams::default(), &j).await?;
    }
    for ns in [a, b] {
        wait_for(&jobs(ns), "inside", phase_is(JobPhase::Succeeded), 60)
            .await
            .with_context(|| format!("the Job in {}", ns.name))?;
    }
    never_touched(c, "outside").await?;
    refused_in(&ctl.url, &c.name).await?;
    pending_in(a, &ctl.url, &dir).await?;
    // The API server's refusals say "... is forbidden: User ... cannot ..."; the
    // runner API's own 403 above is logged as status=403 only.
    let logs = ctl.proc.logs().to_lowercase();
    ensure!(
        !logs.contains("forbidden"),
        "the API server refused the controller something:\n{logs}"
    );
    drop(runners);
    Ok(())
}

fn jobs(ns: &TestNs) -> Api<Job> {
    Api::namespaced(ns.client.clone(), &ns.name)
}

/// The chart's ServiceAccount and RBAC as `helm template` renders them.
async fn render_rbac(release_ns: &str, watched: &[&str]) -> anyhow::Result<String> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path is not UTF-8")?;
    let watch = format!("watchNamespaces={{{}}}", watched.join(","));
    helm(&[
        "template",
        RELEASE,
        chart,
        "--namespace",
        release_ns,
        "--set",
        &watch,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ])
    .await
}

/// A Role and RoleBinding in each watched namespace, none in `other`, and a
/// ClusterRole that lists and watches nothing.
fn roles_only_where_watched(rbac: &str, watched: &[&str], other: &str) -> anyhow::Result<()> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(rbac)?;
    let in_ns = |kind: &str, ns: &str| {
        docs.iter()
            .any(|d| d["kind"] == kind && d["metadata"]["namespace"] == ns)
    };
    for ns in watched {
        ensure!(
            in_ns("Role", ns) && in_ns("RoleBinding", ns),
            "no Role in {ns}:\n{rbac}"
        );
    }
    ensure!(!in_ns("Role", other), "a Role in {other}:\n{rbac}");
    let cluster_role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .context("no ClusterRole")?;
    let verbs = cluster_role["rules"].as_array().into_iter().flatten();
    let verbs: Vec<&Value> = verbs
        .flat_map(|r| r["verbs"].as_array().into_iter().flatten())
        .collect();
    ensure!(
        verbs.iter().all(|v| *v == "get" || *v == "create"),
        "the ClusterRole grants more than get and create: {verbs:?}"
    );
    Ok(())
}

/// A kubeconfig for the e2e cluster that authenticates as ServiceAccount `sa`
/// of `ns` (a bound token from the TokenRequest API), and as nothing else.
pub(crate) async fn sa_kubeconfig(ns: &TestNs, sa: &str, dir: &TempDir) -> anyhow::Result<PathBuf> {
    let accounts: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), &ns.name);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let issued = accounts
        .create_token_request(sa, &PostParams::default(), &request)
        .await?;
    let token = issued.status.context("token request status")?.token;
    let mut config = kube::config::Kubeconfig::read()?;
    for user in &mut config.auth_infos {
        user.auth_info = Some(serde_json::from_value(
            serde_json::json!({ "token": token }),
        )?);
    }
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_string(&config)?)?;
    Ok(path)
}

/// A preadopted runner `r1` (`pool=e2e`) in `ns`, its token minted by the
/// controller under test.
async fn runner_in(ns: &TestNs, url: &str, dir: &TempDir) -> anyhow::Result<Agent> {
    let n = ns.name.as_str();
    let args = [
        "token", "create", "t1", "-n", n, "--runner", "r1", "--labels", "pool=e2e",
    ];
    let token = baton_ok(&args).await?.trim().to_owned();
    let state = dir.join(&format!("r1-{n}"));
    let runner = Agent::start(url, n, "r1", &state, Some(&token), "").await?;
    runner.wait_ready(200, 30).await?;
    Ok(runner)
}

/// The Job in an unserved namespace gets no status, not even Queued.
async fn never_touched(ns: &TestNs, name: &str) -> anyhow::Result<()> {
    let touched = await_condition(jobs(ns), name, |j: Option<&Job>| {
        j.is_some_and(|j| j.status.is_some())
    });
    match tokio::time::timeout(Duration::from_secs(5), touched).await {
        Err(_elapsed) => Ok(()),
        Ok(seen) => bail!("the Job in unserved {} was touched: {seen:?}", ns.name),
    }
}

/// Registering a runner into an unserved namespace is refused, saying why.
async fn refused_in(url: &str, ns: &str) -> anyhow::Result<()> {
    let body = body_for(url, "r9", ns).await?;
    let (status, answer) = register_raw(url, &body, Some("application/json"), None).await?;
    ensure!(
        status == 403 && answer.contains("NamespaceNotServed") && answer.contains(ns),
        "registering into {ns}: {status} {answer}"
    );
    Ok(())
}

/// A runner without a token registers as Pending in a namespace that opted in:
/// the controller read that Namespace's label with its Role alone.
async fn pending_in(ns: &TestNs, url: &str, dir: &TempDir) -> anyhow::Result<()> {
    ns.allow_pending_runners().await?;
    let state = dir.join("p1");
    let _agent = Agent::start(url, &ns.name, "p1", &state, None, "").await?;
    let runners = Api::namespaced(ns.client.clone(), &ns.name);
    wait_for(&runners, "p1", runner_is(AdoptionState::Pending, false), 30).await?;
    Ok(())
}

/// The ClusterRole and its binding outlive the namespaces: delete them.
async fn remove_cluster_rbac(release_ns: &TestNs) {
    let name = format!("{}-{FULLNAME}", release_ns.name);
    let dp = DeleteParams::background();
    let roles: Api<ClusterRole> = Api::all(release_ns.client.clone());
    let _ = roles.delete(&name, &dp).await;
    let bindings: Api<ClusterRoleBinding> = Api::all(release_ns.client.clone());
    let _ = bindings.delete(&name, &dp).await;
}
