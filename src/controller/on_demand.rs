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
//! The builders and [`pod_wait`] are pure (in `spec.rs`); [`prepare`] does the I/O.

use crate::crd::reasons::reason;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use tracing::info;

use super::{Context, Error};
use crate::crd::{Job, RunnerToken};
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

mod spec;
pub use spec::*;

/// A Job's on-demand runner as the queue sees it: assign to `runner` once usable,
/// else wait with `reason`/`message`.
#[derive(Clone, Debug, PartialEq, Eq)]
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
/// which runner to assign it to, or why it waits.
pub async fn prepare(ctx: &Context, job: &Job) -> Result<Slot, Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let wait = |reason: &'static str, message: String| Slot {
        runner: None,
        job_uid: uid.clone(),
        reason,
        message,
    };
    let Some(server_url) = ctx.on_demand.server_url.clone() else {
        return Ok(wait(
            reason::ON_DEMAND_UNAVAILABLE,
            "this Job has no runnerSelector, so it needs an on-demand runner pod, but the \
             controller runs without --runner-server-url (the runner API address runner pods \
             reach); set it, or give the Job a runnerSelector"
                .into(),
        ));
    };
    ctx.runner_pods.wait_until_ready().await.ok();
    let tokens: Vec<_> = ctx
        .tokens
        .state()
        .into_iter()
        .filter(|t| t.namespace().as_deref() == Some(ns.as_str()) && of_job(&t.metadata, &uid))
        .collect();
    let latest = tokens
        .iter()
        .filter_map(|t| attempt_of(&t.metadata))
        .max()
        .unwrap_or(0);
    let handed = job.status.as_ref().and_then(|s| s.runner.as_deref());
    let attempt = attempt_for(&name, latest, handed);
    let runner = runner_name(&name, attempt);

    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let token = desired_token(job, attempt).ok_or(Error::NoNamespace)?;
    let token_api: Api<RunnerToken> = Api::namespaced(ctx.client.clone(), &ns);
    let have = tokens
        .iter()
        .any(|t| t.name_any() == runner && t.spec == token.spec);
    if !have {
        token_api
            .patch(&runner, &pp, &Patch::Apply(&token))
            .await
            .map_err(kube_err("apply the on-demand RunnerToken", &runner))?;
    }

    // Earlier attempts' runners are lost: revoke their tokens, remove their pods.
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for old in tokens
        .iter()
        .filter(|t| attempt_of(&t.metadata).is_some_and(|a| a < attempt))
    {
        match token_api
            .delete(&old.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => info!(token = %old.name_any(), "revoked a lost on-demand runner's token"),
            Err(e) if not_found(&e) => {}
            Err(e) => {
                return Err(kube_err(
                    "delete an old on-demand RunnerToken",
                    &old.name_any(),
                )(e));
            }
        }
    }
    for old in pods_of(ctx, &ns, &uid)
        .iter()
        .filter(|p| attempt_of(&p.metadata).is_some_and(|a| a < attempt))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        match pod_api
            .delete(&old.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => info!(pod = %old.name_any(), "removed a lost runner pod"),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(kube_err("delete an old runner pod", &old.name_any())(e)),
        }
    }

    match pod_named(ctx, &ns, &runner) {
        Some(pod) if is_gone(&pod) => {
            // Ended (or going) before it took the Job: replace it once it is gone.
            if pod.metadata.deletion_timestamp.is_none() {
                match pod_api.delete(&runner, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(kube_err("delete an ended runner pod", &runner)(e)),
                }
            }
            Ok(wait(
                reason::RUNNER_STARTING,
                format!("runner pod {runner} ended before it took the Job; replacing it"),
            ))
        }
        Some(pod) => {
            let (reason, message) = pod_wait(&pod);
            Ok(Slot {
                runner: Some(runner),
                job_uid: uid.clone(),
                reason,
                message,
            })
        }
        None => {
            let secret = super::token::secret_name(&runner);
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            let ready = secrets
                .get_opt(&secret)
                .await
                .map_err(kube_err("read the on-demand token Secret", &secret))?
                .is_some();
            if !ready {
                return Ok(wait(
                    reason::RUNNER_STARTING,
                    format!("waiting for the Secret {secret} of RunnerToken {runner}"),
                ));
            }
            let uses_ours = job
                .spec
                .on_demand
                .as_ref()
                .and_then(|o| o.service_account_name.as_ref())
                .is_none();
            if uses_ours {
                let (sa, role, binding) = desired_rbac(&ns);
                Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ns)
                    .patch(RUNNER_ACCOUNT, &pp, &Patch::Apply(&sa))
                    .await
                    .map_err(kube_err("apply the runner ServiceAccount", RUNNER_ACCOUNT))?;
                Api::<Role>::namespaced(ctx.client.clone(), &ns)
                    .patch(RUNNER_ACCOUNT, &pp, &Patch::Apply(&role))
                    .await
                    .map_err(kube_err("apply the runner Role", RUNNER_ACCOUNT))?;
                Api::<RoleBinding>::namespaced(ctx.client.clone(), &ns)
                    .patch(RUNNER_ACCOUNT, &pp, &Patch::Apply(&binding))
                    .await
                    .map_err(kube_err("apply the runner RoleBinding", RUNNER_ACCOUNT))?;
            }
            let ca_pem = ctx.on_demand.ca.as_ref().map(RunnerCa::pem);
            let pod = desired_pod(
                job,
                attempt,
                &secret,
                &server_url,
                ca_pem.as_deref(),
                &ctx.on_demand,
            )
            .ok_or(Error::NoNamespace)?;
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match pod_api.create(&pp, &pod).await {
                Ok(_) => info!(pod = %runner, attempt, "created an on-demand runner pod"),
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(kube_err("create the runner pod", &runner)(e)),
            }
            Ok(Slot {
                runner: Some(runner.clone()),
                job_uid: uid.clone(),
                reason: reason::RUNNER_STARTING,
                message: format!("runner pod {runner} created; waiting for it to start"),
            })
        }
    }
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
