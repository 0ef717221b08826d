//! The Helm chart on the real cluster: `helm lint`, `helm template` accepted by the
//! API server (server-side dry run), `helm install` of the controller image into the
//! test's namespace (Pod Security `restricted`), a RunnerToken minted by the
//! installed controller, a Job run through it by a runner on this host, `helm
//! upgrade` with changed values while that Job runs (it completes, run once), an
//! on-demand Job (a runner pod reaching the controller through the Service), and
//! `helm uninstall` leaving nothing of the chart behind but the CRDs.
//!
//! Helm comes from `$HELM`, else `$BATON_CACHE/helm-<HELM_VERSION>/bin/helm` as
//! `hack/cluster/build.sh` builds it (`make cluster-up`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use baton::crd::conditions;
use baton::crd::job::JobPhase;
use baton::crd::{Job, RunnerToken};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, LogParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::runtime::wait::Condition;
use kube::{Client, Resource};

use crate::procs::{Agent, TempDir};
use crate::support::{FIELD_MANAGER, TestNs, in_namespace, wait_for};

const RELEASE: &str = "baton";
/// Objects of the chart are named after the release ("baton" contains the chart name).
const FULLNAME: &str = "baton";
const INSTANCE_SELECTOR: &str = "app.kubernetes.io/instance=baton";
/// The test's runner reconnects after 5 s without a ping (the chart's default is 10 s).
const PING: &str = "controller.pingInterval=1s";

pub(crate) fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/baton")
}

/// `$HELM`, else the binary `hack/cluster/build.sh` put into the cache.
fn helm_bin() -> anyhow::Result<PathBuf> {
    if let Some(h) = std::env::var_os("HELM").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    let version = match std::env::var("HELM_VERSION") {
        Ok(v) if !v.is_empty() => v,
        _ => {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hack/cluster/versions.env");
            let env = std::fs::read_to_string(&path)
                .with_context(|| format!("read {}", path.display()))?;
            // HELM_VERSION=${HELM_VERSION:-v3.19.5}
            env.lines()
                .find_map(|l| l.strip_prefix("HELM_VERSION="))
                .and_then(|v| v.split(":-").nth(1))
                .and_then(|v| v.split('}').next())
                .map(str::to_owned)
                .ok_or_else(|| {
                    anyhow!(
                        "no HELM_VERSION=${{HELM_VERSION:-v...}} in {}",
                        path.display()
                    )
                })?
        }
    };
    let cache = std::env::var_os("BATON_CACHE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/baton")))
        .context("neither BATON_CACHE nor HOME is set")?;
    let bin = cache.join(format!("helm-{version}/bin/helm"));
    ensure!(
        bin.is_file(),
        "no helm at {} (set HELM, or build it: BUILD_ONLY=helm hack/cluster/build.sh)",
        bin.display()
    );
    Ok(bin)
}

/// Run helm; its stdout, or an error with its stderr.
pub(crate) async fn helm(args: &[&str]) -> anyhow::Result<String> {
    let bin = helm_bin()?;
    let started = Instant::now();
    let out = tokio::process::Command::new(&bin)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("run {}", bin.display()))?;
    eprintln!(
        "helm {} -> {} in {:.1}s",
        args.first().copied().unwrap_or(""),
        out.status,
        started.elapsed().as_secs_f64()
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "helm {} failed ({}):\n{}\n{stdout}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// Create every document of `manifest` with `dryRun=All`: the API server validates
/// and admits each one (schema, RBAC references, Pod Security) without storing it.
async fn server_dry_run(client: &Client, ns: &str, manifest: &str) -> anyhow::Result<usize> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(manifest)?;
    let pp = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let mut n = 0;
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let obj: DynamicObject = serde_json::from_value(doc)?;
        let types = obj
            .types
            .clone()
            .context("a document without apiVersion/kind")?;
        let gvk = GroupVersionKind::try_from(&types)?;
        let (ar, caps) = discovery::pinned_kind(client, &gvk)
            .await
            .with_context(|| format!("discover {gvk:?}"))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                obj.metadata.namespace.as_deref().unwrap_or(ns),
                &ar,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        let name = obj.metadata.name.clone().unwrap_or_default();
        api.create(&pp, &obj)
            .await
            .with_context(|| format!("server-side dry run of {} {name}", types.kind))?;
        n += 1;
    }
    Ok(n)
}

/// Available, every replica updated to the current spec and ready.
pub(crate) fn deployment_rolled_out() -> impl Condition<Deployment> {
    |d: Option<&Deployment>| {
        d.is_some_and(|d| {
            let Some(s) = d.status.as_ref() else {
                return false;
            };
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            s.observed_generation >= d.metadata.generation
                && s.updated_replicas == Some(want)
                && s.ready_replicas == Some(want)
                && s.replicas == Some(want)
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Available" && c.status == "True")
        })
    }
}

pub(crate) fn job_phase(phase: JobPhase) -> impl Condition<Job> {
    move |j: Option<&Job>| j.and_then(|j| j.status.as_ref()?.phase) == Some(phase)
}

fn token_ready() -> impl Condition<RunnerToken> {
    |t: Option<&RunnerToken>| {
        t.and_then(|t| t.status.as_ref())
            .is_some_and(|s| s.secret_name.is_some() && conditions::is_true(&s.conditions, "Ready"))
    }
}

/// The installed controller works: it mints a RunnerToken's Secret. Returns the
/// token (its runners get `pool=chart`) and how long minting took.
pub(crate) async fn controller_mints(
    ns: &TestNs,
    name: &str,
) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    let tokens: Api<RunnerToken> = Api::namespaced(ns.client.clone(), &ns.name);
    let token: RunnerToken = serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "RunnerToken",
        "metadata": { "name": name },
        "spec": { "labels": { "pool": "chart" } },
    }))?;
    tokens.create(&PostParams::default(), &token).await?;
    let ready = wait_for(&tokens, name, token_ready(), 60).await?;
    let took = started.elapsed();
    let secret_name = ready
        .status
        .and_then(|s| s.secret_name)
        .context("Ready without a secretName")?;
    let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);
    let plain = secrets
        .get(&secret_name)
        .await?
        .data
        .and_then(|d| d.get("token").cloned())
        .and_then(|t| String::from_utf8(t.0).ok())
        .filter(|t| !t.is_empty())
        .with_context(|| format!("Secret {secret_name} holds no token"))?;
    Ok((plain, took))
}

/// The one controller pod, Ready, with its log.
async fn controller_pod(ns: &TestNs) -> anyhow::Result<(Pod, String)> {
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let live: Vec<Pod> = pods
        .list(&ListParams::default().labels(INSTANCE_SELECTOR))
        .await?
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    ensure!(live.len() == 1, "{} controller pods, want 1", live.len());
    let pod = live.into_iter().next().context("no pod")?;
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ensure!(ready, "controller pod is not Ready");
    let name = pod.metadata.name.clone().unwrap_or_default();
    let log = pods.logs(&name, &LogParams::default()).await?;
    Ok((pod, log))
}

fn env_of(pod: &Pod, var: &str) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .first()?
        .env
        .iter()
        .flatten()
        .find(|e| e.name == var)
        .map(|e| e.value.clone().unwrap_or_default())
}

fn memory_limit(pod: &Pod) -> Option<String> {
    let c = pod.spec.as_ref()?.containers.first()?;
    Some(
        c.resources
            .as_ref()?
            .limits
            .as_ref()?
            .get("memory")?
            .0
            .clone(),
    )
}

/// Wait (bounded) until `name` is gone.
async fn gone<K>(api: &Api<K>, name: &str, secs: u64) -> anyhow::Result<()>
where
    K: Clone + std::fmt::Debug + serde::de::DeserializeOwned + Resource,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if api.get_opt(name).await?.is_none() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{} {name} still there after {secs}s",
            std::any::type_name::<K>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Remove the release and its cluster-scoped objects whatever happened (deleting
/// the namespace removes only the namespaced ones).
pub(crate) async fn cleanup(ns: &TestNs) {
    let _ = helm(&["uninstall", RELEASE, "--namespace", &ns.name]).await;
    let cluster_name = format!("{}-{FULLNAME}", ns.name);
    let dp = DeleteParams::default();
    let _ = Api::<ClusterRoleBinding>::all(ns.client.clone())
        .delete(&cluster_name, &dp)
        .await;
    let _ = Api::<ClusterRole>::all(ns.client.clone())
        .delete(&cluster_name, &dp)
        .await;
}

#[tokio::test]
async fn chart_installs_works_upgrades_and_uninstalls_cleanly() {
    in_namespace("chart", |ns| async move {
        let result = chart_lifecycle(&ns).await;
        cleanup(&ns).await;
        result
    })
    .await;
}

async fn chart_lifecycle(ns: &TestNs) -> anyhow::Result<()> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path is not UTF-8")?;
    let n = ns.name.as_str();
    let watch = format!("watchNamespace={n}");

    // Lint, in the default and in the widest configuration.
    let lint = helm(&["lint", "--strict", chart]).await?;
    ensure!(lint.contains("0 chart(s) failed"), "helm lint:\n{lint}");
    helm(&[
        "lint",
        "--strict",
        chart,
        "--set",
        &watch,
        "--set",
        "rbac.onDemandRunners=true",
        "--set",
        "logStorage.persistence.enabled=true",
        "--set",
        "service.type=NodePort",
    ])
    .await?;

    // Template, then a server-side dry run: the real API server admits every object.
    let t0 = Instant::now();
    let scoped = helm(&[
        "template",
        RELEASE,
        chart,
        "--namespace",
        n,
        "--set",
        &watch,
    ])
    .await?;
    let count = server_dry_run(&ns.client, n, &scoped).await?;
    ensure!(
        count == 8,
        "{count} objects in the namespaced template (with the log PVC), want 8:\n{scoped}"
    );
    let wide = helm(&[
        "template",
        RELEASE,
        chart,
        "--namespace",
        n,
        "--set",
        "rbac.onDemandRunners=true",
        "--set",
        "logStorage.persistence.enabled=true",
        "--set",
        "service.type=LoadBalancer",
        "--set",
        "service.loadBalancerSourceRanges={10.0.0.0/8}",
    ])
    .await?;
    server_dry_run(&ns.client, n, &wide).await?;
    eprintln!(
        "template + server-side dry runs: {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // Install, watching only this namespace; the pod must pass Pod Security `restricted`.
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
        PING,
        "--wait",
        "--timeout",
        "120s",
    ])
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), n);
    wait_for(&deployments, FULLNAME, deployment_rolled_out(), 60).await?;
    eprintln!(
        "install until the controller is Ready: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let (pod, log) = controller_pod(ns).await?;
    ensure!(env_of(&pod, "BATON_LOG_FORMAT").as_deref() == Some("json"));
    let first = log.lines().next().unwrap_or_default();
    ensure!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "JSON logs by default; first line: {first}"
    );
    let (token, took) = controller_mints(ns, "minted-after-install").await?;
    eprintln!(
        "RunnerToken Ready via the installed controller: {:.1}s",
        took.as_secs_f64()
    );

    // A runner on this host (the node: the Service's ClusterIP routes here) runs a
    // Job through the installed controller; the Job is still running when the
    // upgrade below replaces the controller pod.
    let services: Api<Service> = Api::namespaced(ns.client.clone(), n);
    let ip = services
        .get(FULLNAME)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the Service has no ClusterIP")?;
    let server = format!("http://{ip}:8080");
    let dir = TempDir::new(n);
    let runner = Agent::start(&server, n, "r1", &dir.join("r1"), Some(&token), "").await?;
    runner.wait_ready(200, 60).await?;
    let jobs: Api<Job> = Api::namespaced(ns.client.clone(), n);
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": "through-upgrade" },
        "spec": {
            "runnerSelector": { "matchLabels": { "pool": "chart" } },
            "steps": [{
                "name": "count",
                "image": "busybox",
                "script": "for i in $(seq 1 30); do echo line $i; sleep 0.5; done",
            }],
        }
    }))?;
    jobs.create(&PostParams::default(), &job).await?;
    wait_for(&jobs, "through-upgrade", job_phase(JobPhase::Running), 60).await?;

    // Upgrade with changed values: a new pod rolls out, Ready, and works.
    let t0 = Instant::now();
    helm(&[
        "upgrade",
        RELEASE,
        chart,
        "--namespace",
        n,
        "--set",
        &watch,
        "--set",
        PING,
        "--set",
        "controller.logFormat=text",
        "--set",
        "resources.limits.memory=256Mi",
        "--wait",
        "--timeout",
        "120s",
    ])
    .await?;
    wait_for(&deployments, FULLNAME, deployment_rolled_out(), 60).await?;
    eprintln!(
        "upgrade until the controller is Ready: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let (pod, log) = controller_pod(ns).await?;
    ensure!(
        env_of(&pod, "BATON_LOG_FORMAT").is_none(),
        "text logs after the upgrade"
    );
    ensure!(
        memory_limit(&pod).as_deref() == Some("256Mi"),
        "new memory limit"
    );
    ensure!(!log.starts_with('{'), "text logs after the upgrade:\n{log}");
    controller_mints(ns, "minted-after-upgrade").await?;
    let t1 = Instant::now();
    let done = wait_for(
        &jobs,
        "through-upgrade",
        job_phase(JobPhase::Succeeded),
        120,
    )
    .await?;
    let st = done.status.context("status")?;
    ensure!(
        st.epoch == Some(1) && st.runner.as_deref() == Some("r1"),
        "the Job ran once, on r1: {st:?}"
    );
    eprintln!(
        "Job running through the upgrade Succeeded {:.1}s after the new controller was Ready",
        t1.elapsed().as_secs_f64()
    );
    // The log store is on the chart's default PVC: the new controller pod serves the
    // whole log, lines written before and after the upgrade, each once.
    let reader = crate::jobs::sa_token(ns, "log-reader", true).await?;
    let (code, log) =
        crate::jobs::read_log(&server, n, "through-upgrade", "count", Some(&reader)).await?;
    let expected: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    ensure!(
        code == 200 && log == expected,
        "log after the upgrade ({code}):\n{log}"
    );
    drop(runner);

    // On-demand: a Job without a runnerSelector gets a runner pod, which reaches the
    // installed controller through the release's Service (the chart passes
    // --runner-server-url) and runs the step as a step pod.
    let t0 = Instant::now();
    let on_demand: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": "on-demand" },
        "spec": { "steps": [{
            "name": "hello",
            "image": crate::support::STEP_IMAGE,
            "script": "echo hello from an on-demand runner",
        }] }
    }))?;
    jobs.create(&PostParams::default(), &on_demand).await?;
    let done = wait_for(&jobs, "on-demand", job_phase(JobPhase::Succeeded), 180).await?;
    let st = done.status.context("status")?;
    ensure!(
        st.runner.as_deref() == Some("on-demand-runner") && st.epoch == Some(1),
        "the on-demand Job ran once, on its own runner pod: {st:?}"
    );
    eprintln!(
        "on-demand Job through the installed controller Succeeded in {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // Uninstall: nothing of the chart stays, namespaced or cluster-scoped; CRDs do.
    let t0 = Instant::now();
    helm(&[
        "uninstall",
        RELEASE,
        "--namespace",
        n,
        "--wait",
        "--timeout",
        "120s",
    ])
    .await?;
    let cluster_name = format!("{n}-{FULLNAME}");
    gone(&deployments, FULLNAME, 60).await?;
    gone(
        &Api::<Service>::namespaced(ns.client.clone(), n),
        FULLNAME,
        60,
    )
    .await?;
    gone(
        &Api::<ServiceAccount>::namespaced(ns.client.clone(), n),
        FULLNAME,
        60,
    )
    .await?;
    gone(&Api::<Role>::namespaced(ns.client.clone(), n), FULLNAME, 60).await?;
    gone(
        &Api::<PersistentVolumeClaim>::namespaced(ns.client.clone(), n),
        &format!("{FULLNAME}-logs"),
        60,
    )
    .await?;
    gone(
        &Api::<RoleBinding>::namespaced(ns.client.clone(), n),
        FULLNAME,
        60,
    )
    .await?;
    gone(
        &Api::<ClusterRole>::all(ns.client.clone()),
        &cluster_name,
        60,
    )
    .await?;
    gone(
        &Api::<ClusterRoleBinding>::all(ns.client.clone()),
        &cluster_name,
        60,
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), n);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pods
        .list(&ListParams::default().labels(INSTANCE_SELECTOR))
        .await?
        .items
        .is_empty()
    {
        ensure!(
            Instant::now() < deadline,
            "controller pod still there 60s after uninstall"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), n);
    let left: Vec<String> = secrets
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .filter(|s| s.starts_with("sh.helm.release"))
        .collect();
    ensure!(left.is_empty(), "Helm release Secrets left: {left:?}");
    eprintln!(
        "uninstall until nothing is left: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    for crd in [
        "jobs.baton.dev",
        "runners.baton.dev",
        "runnertokens.baton.dev",
    ] {
        ensure!(
            crds.get_opt(crd).await?.is_some(),
            "CRD {crd} must survive uninstall"
        );
    }
    Ok(())
}
