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
//! The helm binary and the shared helpers are in `helm.rs`.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use baton::crd::job::JobPhase;
use baton::crd::runner::AdoptionState;
use baton::crd::{Job, Runner, RunnerToken};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, ListParams, PostParams};

use crate::helm::*;
use crate::support::{
    STEP_IMAGE, StepPodRecorder, TestNs, in_namespace, step_pods_removed, wait_for,
};

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
        count == 15,
        "{count} objects in the namespaced template, want 15 (no PVC: emptyDir by default; \
         the leader-election Role and binding, a PodDisruptionBudget, a NetworkPolicy, two \
         admission policies and their bindings):\n{scoped}"
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
    // The installed controller may write a queued Job's position (a merge patch
    // of jobs/status: the chart's RBAC once granted only update).
    let nowhere: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": "matches-nothing" },
        "spec": {
            "runnerSelector": { "matchLabels": { "pool": "nowhere" } },
            "steps": [{ "name": "never", "image": STEP_IMAGE, "script": "true" }],
        }
    }))?;
    jobs.create(&PostParams::default(), &nowhere).await?;
    let first = |j: Option<&Job>| j.and_then(|j| j.status.as_ref()?.queue_position) == Some(1);
    wait_for(&jobs, "matches-nothing", first, 30)
        .await
        .context("queue position 1 written by the chart's controller")?;
    jobs.delete("matches-nothing", &Default::default()).await?;

    let recorder = StepPodRecorder::start(&ns.client, n, "through-upgrade");
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
    ensure!(
        recorder.pods_of("count") == 1,
        "one step pod, never a second run: {:?}",
        recorder.all()
    );
    // The chart's controller may remove a finished Job's step pods.
    step_pods_removed(&ns.client, n, &uid, 30).await?;
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
