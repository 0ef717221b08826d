//! The chart's admission policies on the real API server: "a Job never exceeds its
//! author". The ValidatingAdmissionPolicies and bindings (`helm template
//! --show-only templates/admission.yaml`, `watchNamespace` = the test's namespace,
//! so they bind to it alone) are applied as they are; then Jobs are created as an
//! impersonated user who may create Jobs and nothing more unless the test grants
//! it. Each refusal is checked by its message, and the same Job passes once the
//! user holds the right; creates are dry runs (admission runs, nothing is stored)
//! but for the cancel case. The policies are removed at the end whatever happened
//! (the chart tests' `cleanup`).
//! Also the chart's NetworkPolicy, rendered both ways and admitted by the server.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use baton::crd::Job;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use serde_json::{Value, json};

use crate::helm::{RELEASE, chart_dir, cleanup, helm, server_dry_run};
use crate::support::{FIELD_MANAGER, STEP_IMAGE, TestNs, in_namespace};

/// The Job author, impersonated; RBAC bindings are per namespace, so one name serves
/// every test namespace.
const ALICE: &str = "baton-e2e-alice";
/// Distinct Secrets a Job may reference: the schema's maximum, so the worst case
/// fits the API server's CEL budget (one authorization check per Secret, two for
/// the ServiceAccount).
const MAX_SECRETS: usize = 20;

#[tokio::test]
async fn a_job_never_exceeds_its_author() {
    in_namespace("admission", |ns| async move {
        let result = author_checks(&ns).await;
        // The policies are cluster-scoped: the namespace's deletion leaves them.
        cleanup(&ns).await;
        result
    })
    .await;
}

async fn author_checks(ns: &TestNs) -> anyhow::Result<()> {
    let n = ns.name.as_str();
    setup_rbac(ns).await?;
    apply_policies(ns).await?;
    let alice = impersonating(ALICE).await?;

    // Not active until the API server's policy informers caught up: wait (bounded)
    // until both policies refuse what they must.
    let needs = |s: &str| format!("may not get Secret {s} in namespace {n}");
    let refusal_text = refusal(
        &alice,
        n,
        &job("db", &["db-creds"], None),
        &needs("db-creds"),
    )
    .await?;
    ensure!(
        refusal_text.contains(ALICE),
        "the refusal names the user: {refusal_text}"
    );
    let token_job = job("rt", &["rt-token"], None);
    let holds = "Secret rt-token holds a runner token";
    refusal(&alice, n, &token_job, holds).await?;

    // A Secret the author may read passes; a runner token Secret never does, not
    // even for a cluster admin.
    allowed(&alice, n, &job("team", &["team-creds"], None)).await?;
    allowed(&alice, n, &job("plain", &[], None)).await?;
    refused(&ns.client, n, &token_job, holds).await?;

    // A Secret mounted as a volume is read all the same.
    let mounts = |name: &str, secret: &str| {
        let mut j = job(name, &[], None);
        j.spec.steps[0].volumes = Some(vec![baton::crd::job::StepVolume {
            name: "creds".into(),
            mount_path: "/creds".into(),
            secret: Some(baton::crd::pod_template::ObjectVolume {
                name: secret.into(),
                optional: None,
            }),
            ..Default::default()
        }]);
        j
    };
    refused(
        &alice,
        n,
        &mounts("mount-db", "db-creds"),
        &needs("db-creds"),
    )
    .await?;
    refused(&ns.client, n, &mounts("mount-rt", "rt-token"), holds).await?;
    allowed(&alice, n, &mounts("mount-team", "team-creds")).await?;

    let twice = many_secret_checks(&alice, n).await?;
    let twice: Vec<&str> = twice.iter().map(String::as_str).collect();
    service_account_checks(ns, &alice, &twice).await?;
    image_checks(&alice, n).await?;
    cancel_passes(ns, &alice).await
}

/// Many distinct Secrets: every one is checked (the last one too), repeats cost
/// nothing, and one more than the cap is refused with its own message. Returns
/// the largest list that passes (every Secret twice).
async fn many_secret_checks(alice: &Client, n: &str) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = (0..MAX_SECRETS).map(|i| format!("s{i}")).collect();
    let many: Vec<&str> = names.iter().map(String::as_str).collect();
    let twice: Vec<&str> = many.iter().chain(&many).copied().collect();
    allowed(alice, n, &job("many", &twice, None)).await?;
    let mut last_unreadable = many[..MAX_SECRETS - 1].to_vec();
    last_unreadable.push("db-creds");
    let needs = format!("may not get Secret db-creds in namespace {n}");
    refused(alice, n, &job("last-db", &last_unreadable, None), &needs).await?;
    let mut too_many = twice.clone();
    too_many.push("team-creds");
    let cap = format!("more than {MAX_SECRETS} distinct Secrets");
    refused(alice, n, &job("too-many", &too_many, None), &cap).await?;
    Ok(twice.into_iter().map(str::to_owned).collect())
}

/// spec.onDemand.serviceAccountName: refused until the author may act as it
/// (here: impersonate, the second of the two checks, so the worst case — every
/// Secret checked and both ServiceAccount checks — is what must fit the budget).
async fn service_account_checks(
    ns: &TestNs,
    alice: &Client,
    secrets: &[&str],
) -> anyhow::Result<()> {
    let n = ns.name.as_str();
    let deployer = json!({ "serviceAccountName": "deployer" });
    let with_sa = job("as-deployer", secrets, Some(deployer.clone()));
    let act_as = "may not act as ServiceAccount deployer";
    refused(alice, n, &with_sa, act_as).await?;
    let default_account = json!({ "serviceAccountName": "baton-runner" });
    allowed(alice, n, &job("as-default", &[], Some(default_account))).await?;
    grant(
        ns,
        "act-as-deployer",
        json!([{ "apiGroups": [""], "resources": ["serviceaccounts"],
                 "resourceNames": ["deployer"], "verbs": ["impersonate"] }]),
    )
    .await?;
    eventually_allowed(alice, n, &with_sa).await
}

/// spec.onDemand.image: only the chart's image repository (the default list).
async fn image_checks(alice: &Client, n: &str) -> anyhow::Result<()> {
    for (name, image, ok) in [
        ("own-image", "localhost/baton/baton:dev", true),
        ("own-digest", "localhost/baton/baton@sha256:0123", true),
        ("lookalike", "localhost/baton/baton-evil:dev", false),
        ("foreign", "evil.example.com/miner:1", false),
    ] {
        let j = job(name, &[], Some(json!({ "image": image })));
        if ok {
            allowed(alice, n, &j).await?;
        } else {
            let want = format!("spec.onDemand.image {image} is not an allowed runner image");
            refused(alice, n, &j, &want).await?;
        }
    }
    Ok(())
}

/// An update that changes nothing the policies read is not checked: the author may
/// cancel a Job that reads a Secret they cannot (here one an admin created).
async fn cancel_passes(ns: &TestNs, alice: &Client) -> anyhow::Result<()> {
    let n = ns.name.as_str();
    let jobs: Api<Job> = Api::namespaced(ns.client.clone(), n);
    jobs.create(
        &PostParams::default(),
        &job("by-admin", &["db-creds"], None),
    )
    .await
    .context("an admin creates a Job reading db-creds")?;
    let as_alice: Api<Job> = Api::namespaced(alice.clone(), n);
    as_alice
        .patch(
            "by-admin",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "cancel": true } })),
        )
        .await
        .context("the author cancels it")?;
    Ok(())
}

/// A Job with one step whose env reads each of `secrets` (key `k`).
fn job(name: &str, secrets: &[&str], on_demand: Option<Value>) -> Job {
    let env: Vec<Value> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| json!({ "name": format!("V{i}"), "valueFrom": { "secretKeyRef": { "name": s, "key": "k" } } }))
        .collect();
    let mut spec = json!({
        "steps": [{ "name": "s", "image": STEP_IMAGE, "script": "true", "env": env }],
    });
    match on_demand {
        Some(od) => spec["onDemand"] = od,
        None => spec["runnerSelector"] = json!({ "matchLabels": { "pool": "none" } }),
    }
    serde_json::from_value(json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("a Job")
}

/// Create `job` with `dryRun=All`: admission runs, nothing is stored. The refusal's
/// text on error.
async fn dry_create(client: &Client, ns: &str, job: &Job) -> Result<(), String> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pp = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    jobs.create(&pp, job)
        .await
        .map(drop)
        .map_err(|e| format!("{e}"))
}

/// `job` is refused, with `want` in the message.
async fn refused(client: &Client, ns: &str, job: &Job, want: &str) -> anyhow::Result<()> {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    match dry_create(client, ns, job).await {
        Err(e) if e.contains(want) => Ok(()),
        other => Err(anyhow!(
            "Job {name} must be refused with {want:?}: {other:?}"
        )),
    }
}

async fn allowed(client: &Client, ns: &str, job: &Job) -> anyhow::Result<()> {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    dry_create(client, ns, job)
        .await
        .map_err(|e| anyhow!("Job {name} must be admitted: {e}"))
}

/// Wait (bounded) until `job` is refused with `want` in the message (the policy
/// became active); the message.
async fn refusal(client: &Client, ns: &str, job: &Job, want: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = dry_create(client, ns, job).await;
        match &last {
            Err(e) if e.contains(want) => return Ok(e.clone()),
            _ if Instant::now() > deadline => {
                return Err(anyhow!("not refused with {want:?} within 60s: {last:?}"));
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Wait (bounded) until `job` is admitted (a new RoleBinding took effect).
async fn eventually_allowed(client: &Client, ns: &str, job: &Job) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match dry_create(client, ns, job).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(anyhow!("still refused 30s after the grant: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// A client for the e2e cluster that acts as `user` (impersonation).
async fn impersonating(user: &str) -> anyhow::Result<Client> {
    let mut config = Config::infer().await?;
    config.auth_info.impersonate = Some(user.to_owned());
    Ok(Client::try_from(config)?)
}

/// The author may create, read and update Jobs, and get some Secrets (by name: the
/// team's, s0…, and the runner token's, which the policy refuses all the same).
/// The Secrets that must exist: the runner token one (the policy's param).
async fn setup_rbac(ns: &TestNs) -> anyhow::Result<()> {
    let n = ns.name.as_str();
    grant(
        ns,
        "job-author",
        json!([{ "apiGroups": ["baton.dev"], "resources": ["jobs"],
                 "verbs": ["create", "get", "update", "patch"] }]),
    )
    .await?;
    let mut readable: Vec<String> = (0..MAX_SECRETS).map(|i| format!("s{i}")).collect();
    readable.extend(["team-creds".to_owned(), "rt-token".to_owned()]);
    grant(
        ns,
        "read-some-secrets",
        json!([{ "apiGroups": [""], "resources": ["secrets"],
                 "resourceNames": readable, "verbs": ["get"] }]),
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), n);
    let token: Secret = serde_json::from_value(json!({
        "metadata": { "name": "rt-token", "labels": { "baton.dev/runner-token": "rt" } },
        "stringData": { "token": "brt_not_a_real_token" },
    }))?;
    secrets.create(&PostParams::default(), &token).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), n);
    let deployer: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "deployer" } }))?;
    accounts.create(&PostParams::default(), &deployer).await?;
    Ok(())
}

/// A Role `name` with `rules`, bound to the author.
async fn grant(ns: &TestNs, name: &str, rules: Value) -> anyhow::Result<()> {
    let n = ns.name.as_str();
    let role: Role =
        serde_json::from_value(json!({ "metadata": { "name": name }, "rules": rules }))?;
    Api::<Role>::namespaced(ns.client.clone(), n)
        .create(&PostParams::default(), &role)
        .await
        .with_context(|| format!("create Role {name}"))?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ALICE }],
    }))?;
    Api::<RoleBinding>::namespaced(ns.client.clone(), n)
        .create(&PostParams::default(), &binding)
        .await
        .with_context(|| format!("create RoleBinding {name}"))?;
    Ok(())
}

/// The chart's two policies and bindings, bound to the test's namespace only.
async fn apply_policies(ns: &TestNs) -> anyhow::Result<()> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path is not UTF-8")?;
    let n = ns.name.as_str();
    let rendered = helm(&[
        "template",
        RELEASE,
        chart,
        "--namespace",
        n,
        "--set",
        &format!("watchNamespace={n}"),
        "--set",
        &format!("admission.maxSecretsPerJob={MAX_SECRETS}"),
        "--show-only",
        "templates/admission.yaml",
    ])
    .await?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&rendered)?;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut kinds = Vec::new();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let name = doc["metadata"]["name"]
            .as_str()
            .context("no name")?
            .to_owned();
        match doc["kind"].as_str() {
            Some("ValidatingAdmissionPolicy") => {
                let policies: Api<ValidatingAdmissionPolicy> = Api::all(ns.client.clone());
                policies.patch(&name, &pp, &Patch::Apply(&doc)).await?;
            }
            Some("ValidatingAdmissionPolicyBinding") => {
                let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(ns.client.clone());
                bindings.patch(&name, &pp, &Patch::Apply(&doc)).await?;
            }
            other => return Err(anyhow!("unexpected {other:?} in admission.yaml")),
        }
        kinds.push(name);
    }
    ensure!(kinds.len() == 4, "two policies and two bindings: {kinds:?}");
    Ok(())
}

/// The NetworkPolicy the chart renders: runner pods of the served namespace (or of
/// any namespace) on the controller's port, plus configured ranges and scrapers;
/// admitted by the API server either way.
#[tokio::test]
async fn chart_network_policy_admits_runners_only() {
    in_namespace("netpol", |ns| async move {
        let chart = chart_dir();
        let chart = chart.to_str().context("chart path is not UTF-8")?;
        let n = ns.name.as_str();
        let render = |extra: Vec<String>| async move {
            let mut args: Vec<String> = ["template", RELEASE, chart, "--namespace", n]
                .map(str::to_owned)
                .to_vec();
            args.extend(["--show-only".into(), "templates/networkpolicy.yaml".into()]);
            args.extend(extra.into_iter().flat_map(|v| ["--set".to_owned(), v]));
            helm(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
        };
        let scoped = render(vec![
            format!("watchNamespace={n}"),
            "networkPolicy.runnerAPI.allowedCIDRs={10.20.0.0/16}".into(),
            "networkPolicy.metrics.from[0].namespaceSelector.matchLabels.team=monitoring".into(),
        ])
        .await?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&scoped)?;
        let spec = &docs.iter().find(|d| !d.is_null()).context("no document")?["spec"];
        let api_from = &spec["ingress"][0]["from"];
        let served = json!({ "matchLabels": { "kubernetes.io/metadata.name": n } });
        ensure!(
            api_from[0]["namespaceSelector"] == served
                && api_from[0]["podSelector"]["matchExpressions"][0]["key"]
                    == "baton.dev/on-demand-attempt"
                && api_from[1]["namespaceSelector"] == served
                && api_from[1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                    == "runner"
                && api_from[2]["ipBlock"]["cidr"] == "10.20.0.0/16"
                && spec["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"]["team"]
                    == "monitoring"
                && spec["policyTypes"] == json!(["Ingress"]),
            "runner pods of {n}, the CIDR, the scrapers:\n{scoped}"
        );
        server_dry_run(&ns.client, n, &scoped).await?;
        let wide = render(vec![]).await?;
        ensure!(
            wide.contains("namespaceSelector:\n        {}") && !wide.contains("ipBlock"),
            "all namespaces, nothing else, by default:\n{wide}"
        );
        server_dry_run(&ns.client, n, &wide).await?;
        let off = render(vec!["networkPolicy.enabled=false".into()]).await;
        ensure!(off.is_err(), "disabled: no NetworkPolicy rendered: {off:?}");
        Ok(())
    })
    .await;
}
