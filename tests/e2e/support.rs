//! Shared e2e plumbing: the client, CRD install, per-test namespaces, bounded waits,
//! and a dump of what was in the namespace when a test failed.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, anyhow};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

pub const STEP_IMAGE: &str = "localhost/baton/step:latest";
pub const BATON_IMAGE: &str = "localhost/baton/baton:dev";
pub const FIELD_MANAGER: &str = "baton-e2e";

pub async fn client() -> Client {
    Client::try_default()
        .await
        .expect("a kubeconfig for the e2e cluster (KUBECONFIG; `make e2e` sets it)")
}

/// Apply Baton's CRDs (server-side, idempotent) and wait until each is Established.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    for crd in baton::crd::all() {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(&name, &pp, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("apply CRD {name}"))?;
        wait_for(&api, &name, conditions::is_crd_established(), 60).await?;
    }
    Ok(())
}

/// Wait (bounded) until `cond` holds for the named object.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    cond: impl Condition<K>,
    secs: u64,
) -> anyhow::Result<K>
where
    K: Clone + std::fmt::Debug + Send + DeserializeOwned + Resource + 'static,
    K::DynamicType: Default,
{
    tokio::time::timeout(
        Duration::from_secs(secs),
        await_condition(api.clone(), name, cond),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "timed out after {secs}s waiting on {} {name}",
            K::kind(&Default::default())
        )
    })?
    .with_context(|| format!("watch {name}"))?
    .ok_or_else(|| anyhow!("{name} was deleted while waiting on it"))
}

/// Wait (bounded) until `name` no longer exists.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, secs: u64) -> anyhow::Result<()>
where
    K: Clone + std::fmt::Debug + Send + DeserializeOwned + Resource + 'static,
    K::DynamicType: Default,
{
    let gone = await_condition(api.clone(), name, |o: Option<&K>| o.is_none());
    tokio::time::timeout(Duration::from_secs(secs), gone)
        .await
        .map_err(|_| {
            anyhow!(
                "{} {name} still there after {secs}s",
                K::kind(&Default::default())
            )
        })?
        .with_context(|| format!("watch {name}"))?;
    Ok(())
}

/// A pod that ended, successfully or not.
pub fn pod_finished() -> impl Condition<Pod> {
    |pod: Option<&Pod>| {
        pod.and_then(|p| p.status.as_ref()?.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
    }
}

pub fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// A temporary namespace for one test.
pub struct TestNs {
    pub client: Client,
    pub name: String,
}

impl TestNs {
    /// Opt the namespace in to tokenless (Pending) runner registration, as an
    /// operator does: `kubectl label namespace NS baton.dev/pending-runners=allow`.
    pub async fn allow_pending_runners(&self) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let patch = serde_json::json!({
            "metadata": {"labels": {"baton.dev/pending-runners": "allow"}}
        });
        api.patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("label the namespace baton.dev/pending-runners=allow")?;
        Ok(())
    }
}

/// Run `body` in a fresh namespace enforcing Pod Security `restricted`; on failure
/// dump the namespace, always delete it, then fail the test with the error.
pub async fn in_namespace<F, Fut>(prefix: &str, body: F)
where
    F: FnOnce(TestNs) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    in_namespace_with_pss(prefix, "restricted", body).await
}

/// [`in_namespace`] with another Pod Security level (`baseline`, `privileged`).
pub async fn in_namespace_with_pss<F, Fut>(prefix: &str, pss_level: &str, body: F)
where
    F: FnOnce(TestNs) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    in_namespaces_with_pss(&[prefix], pss_level, |mut all| {
        let ns = all.remove(0);
        body(ns)
    })
    .await
}

/// [`in_namespace`] with several namespaces at once (a test of a controller that
/// serves some namespaces and not others): all are dumped on failure and deleted.
pub async fn in_namespaces<F, Fut>(prefixes: &[&str], body: F)
where
    F: FnOnce(Vec<TestNs>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    in_namespaces_with_pss(prefixes, "restricted", body).await
}

async fn in_namespaces_with_pss<F, Fut>(prefixes: &[&str], pss_level: &str, body: F)
where
    F: FnOnce(Vec<TestNs>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let client = client().await;
    install_crds(&client).await.expect("install CRDs");
    let mut names = Vec::new();
    for prefix in prefixes {
        names.push(create_namespace(&client, prefix, pss_level).await);
    }
    let all = names.iter().map(|name| TestNs {
        client: client.clone(),
        name: name.clone(),
    });
    let result = body(all.collect()).await;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for name in &names {
        if let Err(err) = &result {
            eprintln!("=== test in namespace {name} failed: {err:#}");
            dump_namespace(&client, name).await;
        }
        let _ = ns_api.delete(name, &DeleteParams::background()).await;
    }
    if let Err(err) = result {
        panic!("{err:#}");
    }
}

/// A fresh namespace `e2e-PREFIX-RANDOM` enforcing Pod Security `pss_level`, once
/// its `default` ServiceAccount exists.
async fn create_namespace(client: &Client, prefix: &str, pss_level: &str) -> String {
    let name = format!("e2e-{prefix}-{:08x}", rand_suffix());
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": pss_level,
                "pod-security.kubernetes.io/enforce-version": "latest",
                "baton.dev/e2e": "true",
            }
        }
    }))
    .expect("namespace object");
    ns_api
        .create(&PostParams::default(), &ns)
        .await
        .expect("create test namespace");
    // Pods are refused until the service-account controller made `default`.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_for(
        &accounts,
        "default",
        |sa: Option<&ServiceAccount>| sa.is_some(),
        60,
    )
    .await
    .expect("the namespace's default service account");
    name
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

async fn dump_namespace(client: &Client, ns: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = pods.list(&ListParams::default()).await {
        for pod in list {
            let pname = pod.metadata.name.clone().unwrap_or_default();
            eprintln!("--- pod {pname}: phase {:?}", pod_phase(&pod));
            if let Some(status) = &pod.status {
                eprintln!(
                    "{}",
                    serde_json::to_string_pretty(status).unwrap_or_default()
                );
            }
            if let Ok(logs) = pods.logs(&pname, &LogParams::default()).await {
                eprintln!("--- logs of {pname}:\n{logs}");
            }
        }
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = events.list(&ListParams::default()).await {
        for e in list {
            eprintln!(
                "--- event {} {}: {} {}",
                e.involved_object.kind.unwrap_or_default(),
                e.involved_object.name.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            );
        }
    }
}

/// The securityContext every e2e pod uses: what Pod Security `restricted` demands.
pub fn restricted_pod(
    name: &str,
    image: &str,
    command: &[&str],
    extra: serde_json::Value,
) -> anyhow::Result<Pod> {
    let mut pod = serde_json::json!({
        "metadata": { "name": name },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                "seccompProfile": { "type": "RuntimeDefault" }
            },
            "containers": [{
                "name": "main",
                "image": image,
                "imagePullPolicy": "Never",
                "command": command,
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": { "drop": ["ALL"] }
                }
            }]
        }
    });
    merge(&mut pod, extra);
    Ok(serde_json::from_value(pod)?)
}

/// Deep-merge `extra` into `base`: objects key by key, arrays item by item (so
/// `containers[0]` gains fields), anything else replaced.
fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    use serde_json::Value;
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (Value::Array(b), Value::Array(e)) => {
            for (i, v) in e.into_iter().enumerate() {
                match b.get_mut(i) {
                    Some(slot) => merge(slot, v),
                    None => b.push(v),
                }
            }
        }
        (b, e) => *b = e,
    }
}

/// Run a pod to completion and return (phase, logs).
pub async fn run_pod(ns: &TestNs, pod: Pod, secs: u64) -> anyhow::Result<(String, String)> {
    let api: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let name = pod.metadata.name.clone().context("pod without a name")?;
    api.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("create pod {name}"))?;
    let done = wait_for(&api, &name, pod_finished(), secs).await?;
    let logs = api
        .logs(&name, &LogParams::default())
        .await
        .with_context(|| format!("logs of {name}"))?;
    Ok((pod_phase(&done).to_owned(), logs))
}

/// Every step pod ever created for one Job, by step and uid, from a watch
/// started before the Job: a step run twice shows as a second uid, even after
/// the controller removed the finished Job's pods.
pub struct StepPodRecorder {
    seen: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StepPodRecorder {
    /// Record the step pods of Job `job` in `ns` (by its `baton.dev/job-name` label).
    pub fn start(client: &Client, ns: &str, job: &str) -> Self {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let stream = watcher(
            pods,
            watcher::Config::default().labels(&format!("baton.dev/job-name={job}")),
        )
        .touched_objects();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(next) = stream.next().await {
                let Ok(p) = next else { continue };
                let step = p
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("baton.dev/step").cloned())
                    .unwrap_or_default();
                let uid = p.metadata.uid.unwrap_or_default();
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert((step, uid));
            }
        });
        Self { seen, task }
    }

    /// How many distinct pods step `step` had.
    pub fn pods_of(&self, step: &str) -> usize {
        self.all().iter().filter(|(s, _)| s == step).count()
    }

    /// Every (step, pod uid) seen so far.
    pub fn all(&self) -> std::collections::BTreeSet<(String, String)> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for StepPodRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Wait until no pod of Job uid `uid` is left in `ns` (the controller removes a
/// finished Job's step pods).
pub async fn step_pods_removed(
    client: &Client,
    ns: &str,
    uid: &str,
    secs: u64,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("baton.dev/job-uid={uid}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = pods.list(&lp).await?.items;
        if left.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            let names: Vec<_> = left
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            return Err(anyhow!(
                "step pods still there {secs}s after the Job finished: {names:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `req` with a fresh key proof, as a runner sends it: a challenge from the server
/// at `url`, signed by `id` for `req.name`.
pub async fn signed(
    url: &str,
    id: &baton::domain::identity::Identity,
    req: baton::protocol::RegisterRequest,
) -> anyhow::Result<baton::protocol::RegisterRequest> {
    let ch: baton::protocol::ChallengeResponse = crate::procs::http()
        .get(format!("{url}/v1/challenge"))
        .send()
        .await?
        .json()
        .await?;
    Ok(baton::protocol::RegisterRequest {
        public_key: id.public_key(),
        signature: id.sign(
            baton::domain::identity::Purpose::Register,
            &ch.challenge,
            &req.name,
        ),
        challenge: ch.challenge,
        ..req
    })
}
