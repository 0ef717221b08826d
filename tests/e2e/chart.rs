//! The Helm chart on the real cluster: `helm lint`, `helm template` accepted by the
//! API server (server-side dry run), `helm install` with the defaults (two replicas,
//! leader election) and a static runner into the test's namespace (Pod Security
//! `restricted`): one leader, the only endpoint of the Service; a RunnerToken minted
//! by the installed controller; a Job run on the static runner through it; `helm
//! upgrade` with changed values while that Job runs (a rolling update hands the
//! leadership over; the Job completes, run once, its whole log kept on the default
//! emptyDir because the runner re-sends it); an on-demand Job (a runner pod reaching
//! the leader through the Service); and `helm uninstall` leaving nothing of the chart
//! behind but the CRDs and what the chart README says it keeps (the static runner's
//! Runner, the controller's Lease).
//!
//! Helm comes from `$HELM`, else `$BATON_CACHE/helm-<HELM_VERSION>/bin/helm` as
//! `hack/cluster/build.sh` builds it (`make cluster-up`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use baton::crd::conditions;
use baton::crd::job::JobPhase;
use baton::crd::runner::AdoptionState;
use baton::crd::{Job, Runner, RunnerToken};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, LogParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::runtime::wait::Condition;
use kube::{Client, Resource, ResourceExt};

use crate::support::{FIELD_MANAGER, STEP_IMAGE, TestNs, in_namespace, wait_for};

pub(crate) const RELEASE: &str = "baton";
/// Objects of the chart are named after the release ("baton" contains the chart name).
pub(crate) const FULLNAME: &str = "baton";
/// Every pod of the release: controller replicas and static runners.
const INSTANCE_SELECTOR: &str = "app.kubernetes.io/instance=baton";
const CONTROLLER_SELECTOR: &str =
    "app.kubernetes.io/instance=baton,app.kubernetes.io/component=controller";
/// The label the leader puts on its pod (value: the Lease's name, the full name).
const LEADER_LABEL: &str = "baton.dev/leader";
/// The test's runners reconnect after 5 s without a ping (the chart's default is 10 s).
const PING: &str = "controller.pingInterval=1s";
/// The static runner of the values below, and its Deployment and RunnerToken.
pub(crate) const STATIC: &str = "static1";
pub(crate) const STATIC_OBJECTS: &str = "baton-static-static1";

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

fn is_ready(pod: &Pod) -> bool {
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
async fn service_selects_only(ns: &TestNs, leader: &str) -> anyhow::Result<()> {
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

/// Wait (bounded) until each namespaced object of `objects` is gone.
async fn all_gone(ns: &TestNs, objects: &[(ApiResource, &str)], secs: u64) -> anyhow::Result<()> {
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

/// The values every install and upgrade of the test passes: the test's namespace
/// only, fast pings, and one static runner (its `maxConcurrentJobs` given).
pub(crate) fn base_values(n: &str, max_concurrent: u32) -> Vec<String> {
    [
        format!("watchNamespace={n}"),
        PING.to_owned(),
        format!("runners[0].name={STATIC}"),
        "runners[0].labels.pool=static".to_owned(),
        format!("runners[0].maxConcurrentJobs={max_concurrent}"),
    ]
    .into_iter()
    .flat_map(|v| ["--set".to_owned(), v])
    .collect()
}

pub(crate) async fn helm_with(args: &[&str], values: &[String]) -> anyhow::Result<String> {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(values.iter().map(String::as_str));
    helm(&all).await
}

async fn chart_lifecycle(ns: &TestNs) -> anyhow::Result<()> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path is not UTF-8")?;
    let n = ns.name.as_str();
    let watch = format!("watchNamespace={n}");

    // Lint, in the default and in the widest configuration.
    let lint = helm(&["lint", "--strict", chart]).await?;
    ensure!(lint.contains("0 chart(s) failed"), "helm lint:\n{lint}");
    let widest = [
        "--set",
        "rbac.onDemandRunners=true",
        "--set",
        "logStorage.persistence.enabled=true",
        "--set",
        "service.type=LoadBalancer",
        "--set",
        "service.loadBalancerSourceRanges={10.0.0.0/8}",
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.tls[0].secretName=baton-ingress-tls",
        "--set",
        "ingress.tls[0].hosts[0]=baton.example.com",
        "--set",
        "tls.enabled=true",
        "--set",
        "tls.secretName=baton-tls",
        "--set",
        "runners[0].name=builder",
        "--set",
        "runners[0].labels.pool=build",
        "--set",
        "runners[1].name=local",
        "--set",
        "runners[1].backend=local",
    ];
    let mut args = vec!["lint", "--strict", chart, "--set", &watch];
    args.extend(widest);
    helm(&args).await?;

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
        count == 10,
        "{count} objects in the namespaced template, want 10 (no PVC: emptyDir by default; \
         the leader-election Role and binding, a PodDisruptionBudget):\n{scoped}"
    );
    let mut args = vec!["template", RELEASE, chart, "--namespace", n];
    args.extend(widest);
    let wide = helm(&args).await?;
    let count = server_dry_run(&ns.client, n, &wide).await?;
    ensure!(
        wide.contains("scheme: HTTPS")
            && wide.contains("--runner-server-url=https://")
            && wide.contains("--ca-file=")
            && wide.contains("--runner-ca-file=/etc/baton/tls/ca.crt"),
        "tls.enabled: HTTPS probes, an https:// on-demand URL, static and on-demand runners \
         trusting the CA:\n{wide}"
    );
    eprintln!("the widest template: {count} objects admitted");
    // Without leader election: one replica, Recreate, the Service selects no leader
    // label; and two replicas without it are refused.
    let single = helm(&[
        "template",
        RELEASE,
        chart,
        "--namespace",
        n,
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "replicaCount=1",
    ])
    .await?;
    server_dry_run(&ns.client, n, &single).await?;
    ensure!(
        !single.contains(&format!("{LEADER_LABEL}: "))
            && !single.contains("--leader-elect")
            && !single.contains("PodDisruptionBudget")
            && single.contains("type: Recreate"),
        "leaderElection.enabled=false:\n{single}"
    );
    let refused = helm(&[
        "template",
        RELEASE,
        chart,
        "--set",
        "leaderElection.enabled=false",
    ])
    .await;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("needs leaderElection.enabled")),
        "two replicas without leader election must fail: {refused:?}"
    );
    // values.schema.json: a misspelt value fails instead of being ignored.
    let typo = helm(&[
        "template",
        RELEASE,
        chart,
        "--set",
        "leaderElection.enable=false",
    ])
    .await;
    ensure!(
        typo.as_ref()
            .is_err_and(|e| format!("{e:#}").contains("'enable' not allowed")),
        "an unknown value must fail: {typo:?}"
    );
    eprintln!(
        "template + server-side dry runs: {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // Install with the defaults (two replicas, leader election) and a static runner,
    // watching only this namespace; every pod passes Pod Security `restricted`.
    let t0 = Instant::now();
    helm_with(
        &[
            "install",
            RELEASE,
            chart,
            "--namespace",
            n,
            "--wait",
            "--timeout",
            "180s",
        ],
        &base_values(n, 2),
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), n);
    wait_for(&deployments, FULLNAME, deployment_rolled_out(), 60).await?;
    wait_for(&deployments, STATIC_OBJECTS, deployment_rolled_out(), 60).await?;
    let (leader, log) = leader_pod(ns).await?;
    eprintln!(
        "install until both replicas and the static runner are Ready, one leader: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let replicas = deployments
        .get(FULLNAME)
        .await?
        .spec
        .and_then(|s| s.replicas);
    ensure!(replicas == Some(2), "two replicas by default: {replicas:?}");
    service_selects_only(ns, &leader.name_any()).await?;
    ensure!(env_of(&leader, "BATON_LOG_FORMAT").as_deref() == Some("json"));
    let first = log.lines().next().unwrap_or_default();
    ensure!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "JSON logs by default; first line: {first}"
    );
    let (_, took) = controller_mints(ns, "minted-after-install").await?;
    eprintln!(
        "RunnerToken Ready via the installed controller: {:.1}s",
        took.as_secs_f64()
    );
    let runners: Api<Runner> = Api::namespaced(ns.client.clone(), n);
    let runner = runners.get(STATIC).await?;
    let adoption = runner.status.as_ref().and_then(|s| s.adoption);
    ensure!(
        adoption == Some(AdoptionState::Preadopted) && runner.spec.max_concurrent_jobs == Some(2),
        "the static runner registered with its RunnerToken: {:?} {:?}",
        runner.spec,
        runner.status
    );

    // A Job on the static runner (step pods in this namespace), still running when
    // the upgrade below replaces both controller replicas.
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), n);
    let runner_pods = ListParams::default().labels(&format!("baton.dev/static-runner={STATIC}"));
    let runner_pod_names = || async {
        anyhow::Ok(
            pods.list(&runner_pods)
                .await?
                .into_iter()
                .map(|p| p.name_any())
                .collect::<Vec<_>>(),
        )
    };
    let runner_pod = runner_pod_names().await?;
    let jobs: Api<Job> = Api::namespaced(ns.client.clone(), n);
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": "through-upgrade" },
        "spec": {
            "runnerSelector": { "matchLabels": { "pool": "static" } },
            "steps": [{
                "name": "count",
                "image": STEP_IMAGE,
                "script": "for i in $(seq 1 60); do echo line $i; sleep 0.5; done",
            }],
        }
    }))?;
    jobs.create(&PostParams::default(), &job).await?;
    wait_for(&jobs, "through-upgrade", job_phase(JobPhase::Running), 60).await?;

    // Upgrade with changed values: both replicas roll (one at a time), the leadership
    // passes to a new pod, which works; the runner's maxConcurrentJobs changes
    // without restarting its pod.
    let t0 = Instant::now();
    helm_with(
        &[
            "upgrade",
            RELEASE,
            chart,
            "--namespace",
            n,
            "--set",
            "controller.logFormat=text",
            "--set",
            "resources.limits.memory=256Mi",
            "--wait",
            "--timeout",
            "180s",
        ],
        &base_values(n, 3),
    )
    .await?;
    wait_for(&deployments, FULLNAME, deployment_rolled_out(), 60).await?;
    let (new_leader, log) = leader_pod(ns).await?;
    eprintln!(
        "upgrade until both new replicas are Ready, one leader: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    ensure!(
        new_leader.name_any() != leader.name_any(),
        "a new pod leads after the rolling update"
    );
    service_selects_only(ns, &new_leader.name_any()).await?;
    ensure!(
        env_of(&new_leader, "BATON_LOG_FORMAT").is_none(),
        "text logs after the upgrade"
    );
    ensure!(
        memory_limit(&new_leader).as_deref() == Some("256Mi"),
        "new memory limit"
    );
    ensure!(!log.starts_with('{'), "text logs after the upgrade:\n{log}");
    controller_mints(ns, "minted-after-upgrade").await?;
    let runner = runners.get(STATIC).await?;
    ensure!(
        runner.spec.max_concurrent_jobs == Some(3),
        "the upgrade set maxConcurrentJobs: {:?}",
        runner.spec
    );
    ensure!(
        runner_pod_names().await? == runner_pod,
        "the static runner's pod was not restarted by a controller-only change"
    );
    let t1 = Instant::now();
    let done = wait_for(
        &jobs,
        "through-upgrade",
        job_phase(JobPhase::Succeeded),
        120,
    )
    .await?;
    let uid = done.uid().unwrap_or_default();
    let st = done.status.context("status")?;
    ensure!(
        st.epoch == Some(1) && st.runner.as_deref() == Some(STATIC),
        "the Job ran once, on {STATIC}: {st:?}"
    );
    let step_pods = pods
        .list(&ListParams::default().labels(&format!("baton.dev/job-uid={uid}")))
        .await?;
    ensure!(
        step_pods.items.len() == 1,
        "one step pod, never a second run: {:?}",
        step_pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    eprintln!(
        "Job running through the upgrade Succeeded {:.1}s after the new leader was Ready",
        t1.elapsed().as_secs_f64()
    );
    // The log store is the default emptyDir: the new leader started empty, and the
    // runner re-sent the running step's log, so it serves the whole of it, each line
    // once (through the Service, so from the leader).
    let services: Api<Service> = Api::namespaced(ns.client.clone(), n);
    let ip = services
        .get(FULLNAME)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the Service has no ClusterIP")?;
    let server = format!("http://{ip}:8080");
    let reader = crate::jobs::sa_token(ns, "log-reader", true).await?;
    let (code, log) =
        crate::jobs::read_log(&server, n, "through-upgrade", "count", Some(&reader)).await?;
    let expected: String = (1..=60).map(|i| format!("line {i}\n")).collect();
    ensure!(
        code == 200 && log == expected,
        "log after the upgrade ({code}):\n{log}"
    );

    // On-demand: a Job without a runnerSelector gets a runner pod, which reaches the
    // leader through the release's Service (the chart passes --runner-server-url)
    // and runs the step as a step pod.
    let t0 = Instant::now();
    let on_demand: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": "on-demand" },
        "spec": { "steps": [{
            "name": "hello",
            "image": STEP_IMAGE,
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

    // Uninstall: nothing of the chart stays, namespaced or cluster-scoped, but the
    // CRDs, the static runner's Runner (helm.sh/resource-policy: keep) and the
    // Lease the controller wrote.
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
    let static_sa = format!("{FULLNAME}-static-runner");
    let leader_role = format!("{FULLNAME}-leader-election");
    let token_secret = format!("{STATIC_OBJECTS}-token");
    all_gone(
        ns,
        &[
            (ApiResource::erase::<Deployment>(&()), FULLNAME),
            (ApiResource::erase::<Deployment>(&()), STATIC_OBJECTS),
            (ApiResource::erase::<Service>(&()), FULLNAME),
            (ApiResource::erase::<PodDisruptionBudget>(&()), FULLNAME),
            (ApiResource::erase::<ServiceAccount>(&()), FULLNAME),
            (ApiResource::erase::<ServiceAccount>(&()), &static_sa),
            (ApiResource::erase::<Role>(&()), FULLNAME),
            (ApiResource::erase::<RoleBinding>(&()), FULLNAME),
            (ApiResource::erase::<Role>(&()), &leader_role),
            (ApiResource::erase::<RoleBinding>(&()), &leader_role),
            (ApiResource::erase::<Role>(&()), &static_sa),
            (ApiResource::erase::<RoleBinding>(&()), &static_sa),
            (ApiResource::erase::<RunnerToken>(&()), STATIC_OBJECTS),
            // Owned by the RunnerToken: garbage collection removes it.
            (ApiResource::erase::<Secret>(&()), &token_secret),
        ],
        60,
    )
    .await?;
    let cluster_name = format!("{n}-{FULLNAME}");
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
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pods
        .list(&ListParams::default().labels(INSTANCE_SELECTOR))
        .await?
        .items
        .is_empty()
    {
        ensure!(
            Instant::now() < deadline,
            "controller or static runner pods still there 60s after uninstall"
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
    // What the chart README says stays.
    ensure!(
        runners.get_opt(STATIC).await?.is_some(),
        "the static runner's Runner is kept (helm.sh/resource-policy: keep)"
    );
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), n);
    ensure!(
        leases.get_opt(FULLNAME).await?.is_some(),
        "the controller's Lease stays (written by the controller, not by Helm)"
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
