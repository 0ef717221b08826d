//! On-demand runner pods: a Job with no `runnerSelector` gets a runner of its own.
//!
//! Per Job and attempt the controller applies a RunnerToken `<job>-runner[-N]`
//! (owned by the Job, `spec.runnerName` = the runner's name, labelled so the Runner
//! it registers is known to be this Job's), then — once the token's Secret exists —
//! a runner Pod of the same name running `baton runner --once` with that token.
//! The runner registers Preadopted and the queue assigns the Job to it like to any
//! runner; on-demand runners get only their own Job, and their Job only them.
//!
//! A runner pod lost mid-Job (deleted, failed, exited early) makes the Job go back
//! to the queue (the lost-runner hand-over of the Job reconciler); the next attempt
//! gets a new token and pod, the Job passes to it at the next epoch, and its
//! kubernetes backend adopts the step pods already running. Earlier attempts'
//! tokens are deleted (which revokes them) and their pods too.
//!
//! The runner pods of a namespace share one ServiceAccount `baton-runner` with a
//! Role to manage step pods; applied on each pod creation and owned by nothing, so
//! no Job's deletion takes them from another Job's runner.
//!
//! The builders and [`pod_wait`] are pure (in `spec.rs`), and so is the decision
//! ([`plan_runner_pod`], in `plan.rs`); [`prepare`] reads, plans and applies.

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use tracing::info;

use super::{Context, Error};
use crate::crd::{Job, Runner, RunnerToken};
use crate::server::FIELD_MANAGER;

/// Label (value: the Job's uid) on an on-demand runner's RunnerToken, its Runner
/// (through the token's labels) and its Pod.
pub const JOB_LABEL: &str = "baton.dev/on-demand-job";
/// Label (value: 1, 2, …) on an on-demand runner's RunnerToken and Pod.
pub const ATTEMPT_LABEL: &str = "baton.dev/on-demand-attempt";
/// ServiceAccount, Role and RoleBinding of the runner pods of a namespace.
pub const RUNNER_ACCOUNT: &str = "baton-runner";
/// Runner image when neither `spec.onDemand.image` nor `--runner-image` says.
pub const DEFAULT_IMAGE: &str = "localhost/baton/baton:dev";
/// Lifetime of an on-demand runner's token.
pub const TOKEN_TTL: &str = "24h";
/// The user the runner image runs as (`nonroot`).
const RUNNER_UID: i64 = 65532;
const HEALTH_PORT: i32 = 9090;

/// Controller settings for on-demand runner pods.
#[derive(Clone, Debug)]
pub struct OnDemandConfig {
    /// The runner API as runner pods reach it; unset: no on-demand runners.
    pub server_url: Option<String>,
    /// Runner image unless a Job's `spec.onDemand.image` says otherwise.
    pub image: String,
    /// `--runner-ca-file`: the CA runner pods trust for an https:// server URL.
    pub ca: Option<RunnerCa>,
}

impl Default for OnDemandConfig {
    fn default() -> Self {
        Self {
            server_url: None,
            image: DEFAULT_IMAGE.into(),
            ca: None,
        }
    }
}

/// Environment variable carrying the CA certificate(s) into a runner pod (the
/// runner's `--ca-pem`). A CA certificate is public: a plain value, no Secret
/// (which the pod's namespace would need a copy of).
pub const CA_PEM_ENV: &str = "BATON_CA_PEM";

/// `--runner-ca-file`: checked when the controller starts, read again for each
/// runner pod so a rotated file (a renewed Secret) is picked up; a file that turns
/// bad later is logged and the last good certificates stay in use.
#[derive(Clone, Debug)]
pub struct RunnerCa {
    path: std::path::PathBuf,
    last: std::sync::Arc<std::sync::Mutex<String>>,
}

impl RunnerCa {
    /// Read and check the file: at least one certificate, each usable as a root.
    pub fn load(path: std::path::PathBuf) -> Result<Self, crate::domain::ca::CaError> {
        let pem = Self::read(&path)?;
        Ok(Self {
            path,
            last: std::sync::Arc::new(std::sync::Mutex::new(pem)),
        })
    }

    fn read(path: &std::path::Path) -> Result<String, crate::domain::ca::CaError> {
        let ders = crate::domain::ca::read_ca_file(path)?;
        Ok(crate::domain::ca::to_pem(&ders))
    }

    /// The certificates as PEM text (only CERTIFICATE blocks), fresh from the file.
    pub fn pem(&self) -> String {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match Self::read(&self.path) {
            Ok(pem) => *last = pem,
            Err(e) => tracing::warn!(
                error = %e,
                "--runner-ca-file: keeping the CA read before for runner pods"
            ),
        }
        last.clone()
    }
}

mod plan;
mod spec;
pub use plan::{PodObserved, PodPlan, TokenSeen, plan_runner_pod};
pub use spec::*;

/// A Job's on-demand runner as the queue sees it: assign to `runner` once usable,
/// else wait with `reason`/`message`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub runner: Option<String>,
    pub job_uid: String,
    pub reason: &'static str,
    pub message: String,
}

fn kube_err(doing: &'static str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_owned();
    move |source| Error::Kube {
        doing,
        name,
        source,
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn attempt_of(meta: &ObjectMeta) -> Option<u32> {
    meta.labels.as_ref()?.get(ATTEMPT_LABEL)?.parse().ok()
}

fn of_job(meta: &ObjectMeta, uid: &str) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(JOB_LABEL))
        .is_some_and(|v| v == uid)
}

/// The runner pods of a Job in the watch cache.
pub fn pods_of(ctx: &Context, ns: &str, uid: &str) -> Vec<std::sync::Arc<Pod>> {
    ctx.runner_pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns) && of_job(&p.metadata, uid))
        .collect()
}

/// The runner pod named `name` in `ns`, from the watch cache.
pub fn pod_named(ctx: &Context, ns: &str, name: &str) -> Option<std::sync::Arc<Pod>> {
    ctx.runner_pods
        .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
}

/// Make sure a queued on-demand Job has its runner (token, pod, account) and say
/// which runner to assign it to, or why it waits: read → [`plan_runner_pod`] → apply.
pub async fn prepare(ctx: &Context, job: &Job) -> Result<Slot, Error> {
    let Some(server_url) = ctx.on_demand.server_url.clone() else {
        return Ok(plan::unavailable(job));
    };
    let seen = observe(ctx, job).await?;
    let plan = plan_runner_pod(job, &seen, &ctx.on_demand, &server_url);
    apply(ctx, job, &plan).await?;
    Ok(plan.slot)
}

/// The Job's runner tokens and pods (watch caches), and whether the current
/// attempt's token Secret exists (read: Secrets are not cached by label here).
async fn observe(ctx: &Context, job: &Job) -> Result<PodObserved, Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let uid = job.uid().unwrap_or_default();
    ctx.runner_pods.wait_until_ready().await.ok();
    let tokens: Vec<TokenSeen> = ctx
        .tokens
        .state()
        .into_iter()
        .filter(|t| t.namespace().as_deref() == Some(ns.as_str()) && of_job(&t.metadata, &uid))
        .map(|t| TokenSeen {
            name: t.name_any(),
            attempt: attempt_of(&t.metadata),
            spec: t.spec.clone(),
        })
        .collect();
    let pods: Vec<Pod> = pods_of(ctx, &ns, &uid)
        .iter()
        .map(|p| (**p).clone())
        .collect();
    let runner = runner_name(&job.name_any(), plan::current_attempt(job, &tokens));
    let secret_ready = if pods.iter().any(|p| p.name_any() == runner) {
        true
    } else {
        let secret = super::token::secret_name(&runner);
        Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&secret)
            .await
            .map_err(kube_err("read the on-demand token Secret", &secret))?
            .is_some()
    };
    let runner = ctx
        .runners
        .get(&kube::runtime::reflector::ObjectRef::new(&runner).within(&ns))
        .map(|r| (*r).clone());
    Ok(PodObserved {
        tokens,
        pods,
        secret_ready,
        ca_pem: ctx.on_demand.ca.as_ref().map(RunnerCa::pem),
        runner,
    })
}

/// Carry out a [`PodPlan`]: token first, then revocations and deletions, then
/// the Runner, the account and the pod.
async fn apply(ctx: &Context, job: &Job, plan: &PodPlan) -> Result<(), Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let token_api: Api<RunnerToken> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(token) = &plan.apply_token {
        let name = token.name_any();
        token_api
            .patch(&name, &pp, &Patch::Apply(token))
            .await
            .map_err(kube_err("apply the on-demand RunnerToken", &name))?;
    }
    for old in &plan.revoke_tokens {
        match token_api.delete(old, &DeleteParams::background()).await {
            Ok(_) => info!(token = %old, "revoked a lost on-demand runner's token"),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(kube_err("delete an old on-demand RunnerToken", old)(e)),
        }
    }
    for pod in &plan.delete_pods {
        match pod_api.delete(pod, &DeleteParams::background()).await {
            Ok(_) => info!(%pod, "removed a lost or ended runner pod"),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(kube_err("delete an old runner pod", pod)(e)),
        }
    }
    apply_runner(ctx, &ns, plan).await?;
    if plan.apply_rbac {
        apply_rbac(ctx, &ns, &pp).await?;
    }
    if let Some(pod) = &plan.create_pod {
        let name = pod.name_any();
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match pod_api.create(&pp, pod).await {
            Ok(_) => info!(pod = %name, "created an on-demand runner pod"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(kube_err("create the runner pod", &name)(e)),
        }
    }
    Ok(())
}

/// The current attempt's Runner before its pod (or a squatter's removed first).
async fn apply_runner(ctx: &Context, ns: &str, plan: &PodPlan) -> Result<(), Error> {
    let api: Api<Runner> = Api::namespaced(ctx.client.clone(), ns);
    if let Some(name) = &plan.delete_runner {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                info!(runner = %name, "removed a Pending Runner squatting an on-demand runner's name")
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(kube_err("delete a Runner squatting the name", name)(e)),
        }
    }
    if let Some(runner) = &plan.create_runner {
        let name = runner.name_any();
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.create(&pp, runner).await {
            Ok(_) => info!(runner = %name, "created the on-demand Runner"),
            // Created a moment ago; the next look sees whose it is.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(kube_err("create the on-demand Runner", &name)(e)),
        }
    }
    Ok(())
}

/// The namespace's `baton-runner` ServiceAccount, Role and RoleBinding.
async fn apply_rbac(ctx: &Context, ns: &str, pp: &PatchParams) -> Result<(), Error> {
    let (sa, role, binding) = desired_rbac(ns);
    Api::<ServiceAccount>::namespaced(ctx.client.clone(), ns)
        .patch(RUNNER_ACCOUNT, pp, &Patch::Apply(&sa))
        .await
        .map_err(kube_err("apply the runner ServiceAccount", RUNNER_ACCOUNT))?;
    Api::<Role>::namespaced(ctx.client.clone(), ns)
        .patch(RUNNER_ACCOUNT, pp, &Patch::Apply(&role))
        .await
        .map_err(kube_err("apply the runner Role", RUNNER_ACCOUNT))?;
    Api::<RoleBinding>::namespaced(ctx.client.clone(), ns)
        .patch(RUNNER_ACCOUNT, pp, &Patch::Apply(&binding))
        .await
        .map_err(kube_err("apply the runner RoleBinding", RUNNER_ACCOUNT))?;
    Ok(())
}

/// A finished Job: remove runner pods that never took it (e.g. still pending when
/// it was cancelled). The runner that ran it exits by itself.
pub async fn clean_up(ctx: &Context, job: &Job) -> Result<(), Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let uid = job.uid().unwrap_or_default();
    let handed = job.status.as_ref().and_then(|s| s.runner.clone());
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for pod in pods_of(ctx, &ns, &uid) {
        if is_gone(&pod) || handed.as_deref() == Some(pod.name_any().as_str()) {
            continue;
        }
        match pod_api
            .delete(&pod.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => info!(pod = %pod.name_any(), "removed an unused runner pod of a finished Job"),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(kube_err("delete an unused runner pod", &pod.name_any())(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "on_demand_tests.rs"]
mod tests;
