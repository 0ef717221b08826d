//! Helm and installed-chart helpers shared by the chart tests (`chart`, `chart_tls`,
//! `failover`): the helm binary, server-side dry runs, waits on the release's
//! Deployment, pods and Service, and cleanup of what a release leaves.
//!
//! Helm comes from `$HELM`, else `$BATON_CACHE/helm-<HELM_VERSION>/bin/helm` as
//! `hack/cluster/build.sh` builds it (`make cluster-up`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use baton::crd::conditions;
use baton::crd::job::JobPhase;
use baton::crd::{Job, RunnerToken};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, LogParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::runtime::wait::Condition;
use kube::{Client, Resource, ResourceExt};

use crate::support::{FIELD_MANAGER, TestNs, wait_for};

pub(crate) const RELEASE: &str = "baton";
/// Objects of the chart are named after the release ("baton" contains the chart name).
pub(crate) const FULLNAME: &str = "baton";
/// Every pod of the release: controller replicas and static runners.
pub(crate) const INSTANCE_SELECTOR: &str = "app.kubernetes.io/instance=baton";
pub(crate) const CONTROLLER_SELECTOR: &str =
    "app.kubernetes.io/instance=baton,app.kubernetes.io/component=controller";
/// The label the leader puts on its pod (value: the Lease's name, the full name).
pub(crate) const LEADER_LABEL: &str = "baton.dev/leader";
/// The test's runners reconnect after 5 s without a ping (the chart's default is 10 s).
pub(crate) const PING: &str = "controller.pingInterval=1s";
/// The static runner of the values below, and its Deployment and RunnerToken.
pub(crate) const STATIC: &str = "static1";
pub(crate) const STATIC_OBJECTS: &str = "baton-static-static1";

pub(crate) fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("charts/baton")
}

/// `$HELM`, else the binary `hack/cluster/build.sh` put into the cache.
pub(crate) fn helm_bin() -> anyhow::Result<PathBuf> {
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
pub(crate) async fn server_dry_run(
    client: &Client,
    ns: &str,
    manifest: &str,
) -> anyhow::Result<usize> {
    create_each(client, ns, manifest, true).await
}

/// Create every document of `manifest` for real (what `helm install` would,
/// without a release); the number created.
pub(crate) async fn create_manifest(
    client: &Client,
    ns: &str,
    manifest: &str,
) -> anyhow::Result<usize> {
    create_each(client, ns, manifest, false).await
}

async fn create_each(
    client: &Client,
    ns: &str,
    manifest: &str,
    dry_run: bool,
) -> anyhow::Result<usize> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(manifest)?;
    let pp = PostParams {
        dry_run,
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
            .with_context(|| format!("create (dry run: {dry_run}) {} {name}", types.kind))?;
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

pub(crate) fn token_ready() -> impl Condition<RunnerToken> {
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

pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The leader: wait (bounded) until exactly one live controller pod carries the
/// leader label, and it is Ready; with its log.
pub(crate) async fn leader_pod(ns: &TestNs) -> anyhow::Result<(Pod, String)> {
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let selector = format!("{CONTROLLER_SELECTOR},{LEADER_LABEL}={FULLNAME}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let pod = loop {
        let mut live: Vec<Pod> = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .collect();
        if live.len() == 1 {
            break live.remove(0);
        }
        ensure!(
            Instant::now() < deadline,
            "{} Ready controller pods labelled {LEADER_LABEL}={FULLNAME} after 60s, want 1",
            live.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let log = pods.logs(&pod.name_any(), &LogParams::default()).await?;
    Ok((pod, log))
}

/// The Service's endpoints are the leader's pod only (the standby answers 503).
pub(crate) async fn service_selects_only(ns: &TestNs, leader: &str) -> anyhow::Result<()> {
    let slices: Api<EndpointSlice> = Api::namespaced(ns.client.clone(), &ns.name);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={FULLNAME}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let targets: Vec<String> = slices
            .list(&lp)
            .await?
            .into_iter()
            .flat_map(|s| s.endpoints)
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .filter_map(|e| e.target_ref.and_then(|t| t.name))
            .collect();
        if targets == [leader] {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the Service's endpoints are {targets:?}, want only the leader {leader}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) fn env_of(pod: &Pod, var: &str) -> Option<String> {
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

pub(crate) fn memory_limit(pod: &Pod) -> Option<String> {
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
pub(crate) async fn gone<K>(api: &Api<K>, name: &str, secs: u64) -> anyhow::Result<()>
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

/// Wait (bounded) until each namespaced object of `objects` is gone.
pub(crate) async fn all_gone(
    ns: &TestNs,
    objects: &[(ApiResource, &str)],
    secs: u64,
) -> anyhow::Result<()> {
    for (ar, name) in objects {
        let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, ar);
        gone(&api, name, secs)
            .await
            .with_context(|| format!("{} {name} after uninstall", ar.kind))?;
    }
    Ok(())
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
    let dashboard = format!("{cluster_name}-dashboard");
    let _ = Api::<ClusterRoleBinding>::all(ns.client.clone())
        .delete(&dashboard, &dp)
        .await;
    let _ = Api::<ClusterRole>::all(ns.client.clone())
        .delete(&dashboard, &dp)
        .await;
    for suffix in ["job-author", "runner-token-refs"] {
        let name = format!("{cluster_name}-{suffix}");
        let _ = Api::<ValidatingAdmissionPolicyBinding>::all(ns.client.clone())
            .delete(&name, &dp)
            .await;
        let _ = Api::<ValidatingAdmissionPolicy>::all(ns.client.clone())
            .delete(&name, &dp)
            .await;
    }
}
