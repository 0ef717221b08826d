//! The pure middle of an on-demand Job's runner pod: from what was read (the
//! Job's runner tokens and pods, whether the current token's Secret exists),
//! which objects to apply, revoke, delete or create, and the [`Slot`] the queue
//! sees.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::{
    OnDemandConfig, Slot, attempt_for, desired_pod, desired_runner, desired_token, is_gone,
    is_jobs_runner, pod_wait, runner_name,
};
use crate::controller::token::secret_name;
use crate::crd::reasons::reason;
use crate::crd::{Job, Runner, RunnerToken, RunnerTokenSpec};

/// A runner token of the Job, as read.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenSeen {
    pub name: String,
    pub attempt: Option<u32>,
    pub spec: RunnerTokenSpec,
}

/// What [`plan_runner_pod`] needs to know.
#[derive(Clone, Debug, Default)]
pub struct PodObserved {
    /// The Job's runner tokens.
    pub tokens: Vec<TokenSeen>,
    /// The Job's runner pods (every attempt).
    pub pods: Vec<Pod>,
    /// The current attempt's token Secret exists (its token was minted).
    pub secret_ready: bool,
    /// The CA runner pods trust (`--runner-ca-file`), as PEM.
    pub ca_pem: Option<String>,
    /// The Runner of the current attempt's name, if one exists (ours or not).
    pub runner: Option<Runner>,
}

/// What to do about the Job's runner pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodPlan {
    /// The current attempt's RunnerToken (server-side apply), when it differs.
    pub apply_token: Option<RunnerToken>,
    /// Earlier attempts' tokens: their runners are lost.
    pub revoke_tokens: Vec<String>,
    /// Earlier attempts' pods, and the current one if it ended before it took the Job.
    pub delete_pods: Vec<String>,
    /// Apply the namespace's `baton-runner` ServiceAccount, Role and RoleBinding.
    pub apply_rbac: bool,
    /// The current attempt's Runner, created before its pod.
    pub create_runner: Option<Runner>,
    /// A Pending Runner squatting the current attempt's name: removed first.
    pub delete_runner: Option<String>,
    pub create_pod: Option<Pod>,
    pub slot: Slot,
}

/// The attempt a Job is on, from its tokens and who it was handed to.
pub fn current_attempt(job: &Job, tokens: &[TokenSeen]) -> u32 {
    let latest = tokens.iter().filter_map(|t| t.attempt).max().unwrap_or(0);
    let handed = job.status.as_ref().and_then(|s| s.runner.as_deref());
    attempt_for(&job.name_any(), latest, handed)
}

/// The plan for `job`'s runner pod (`server_url`: the runner API as pods reach it).
pub fn plan_runner_pod(
    job: &Job,
    seen: &PodObserved,
    config: &OnDemandConfig,
    server_url: &str,
) -> PodPlan {
    let uid = job.uid().unwrap_or_default();
    let attempt = current_attempt(job, &seen.tokens);
    let runner = runner_name(&job.name_any(), attempt);
    let wait = |why: &'static str, message: String, runner: Option<String>| Slot {
        runner,
        job_uid: uid.clone(),
        reason: why,
        message,
    };
    let older = |a: Option<u32>| a.is_some_and(|a| a < attempt);
    let mut plan = PodPlan {
        apply_token: desired_token(job, attempt).filter(|t| {
            !seen
                .tokens
                .iter()
                .any(|s| s.name == runner && s.spec == t.spec)
        }),
        revoke_tokens: seen
            .tokens
            .iter()
            .filter(|t| older(t.attempt))
            .map(|t| t.name.clone())
            .collect(),
        delete_pods: seen
            .pods
            .iter()
            .filter(|p| older(super::attempt_of(&p.metadata)))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(ResourceExt::name_any)
            .collect(),
        ..PodPlan::default()
    };
    let current = seen.pods.iter().find(|p| p.name_any() == runner);
    plan.slot = match current {
        Some(pod) if is_gone(pod) => {
            // Ended (or going) before it took the Job: replace it once it is gone.
            if pod.metadata.deletion_timestamp.is_none() {
                plan.delete_pods.push(runner.clone());
            }
            let message = format!("runner pod {runner} ended before it took the Job; replacing it");
            wait(reason::RUNNER_STARTING, message, None)
        }
        Some(pod) => {
            let (why, message) = pod_wait(pod);
            wait(why, message, Some(runner))
        }
        None if !seen.secret_ready => {
            let secret = secret_name(&runner);
            let message = format!("waiting for the Secret {secret} of RunnerToken {runner}");
            wait(reason::RUNNER_STARTING, message, None)
        }
        None => match claim_name(job, seen, attempt, &uid) {
            NameClaim::Ours(create) => {
                plan.create_runner = create.map(|r| *r);
                pod_plan(job, seen, config, server_url, attempt, &mut plan)
            }
            NameClaim::Squatted => {
                plan.delete_runner = Some(runner.clone());
                let message = format!(
                    "a Pending Runner {runner} that is not this Job's held the name; removing it"
                );
                wait(reason::RUNNER_STARTING, message, None)
            }
            NameClaim::Taken => {
                let message = format!(
                    "Runner {runner} exists and an operator decided on it (spec.adoption): \
                     delete it to let this Job's runner take the name"
                );
                wait(reason::RUNNER_NAME_TAKEN, message, None)
            }
        },
    };
    plan
}

/// Who holds the current attempt's runner name.
enum NameClaim {
    /// Nobody (create our Runner) or our Runner already.
    Ours(Option<Box<Runner>>),
    /// A Runner nobody decided on (a tokenless registration): ours to remove.
    Squatted,
    /// A Runner an operator adopted or rejected: left alone.
    Taken,
}

fn claim_name(job: &Job, seen: &PodObserved, attempt: u32, uid: &str) -> NameClaim {
    match &seen.runner {
        None => NameClaim::Ours(desired_runner(job, attempt).map(Box::new)),
        Some(r) if is_jobs_runner(r, uid) => NameClaim::Ours(None),
        Some(r) if r.spec.adoption.is_none() => NameClaim::Squatted,
        Some(_) => NameClaim::Taken,
    }
}

/// The token's Secret exists and the name is ours: the pod (and its account).
fn pod_plan(
    job: &Job,
    seen: &PodObserved,
    config: &OnDemandConfig,
    server_url: &str,
    attempt: u32,
    plan: &mut PodPlan,
) -> Slot {
    let runner = runner_name(&job.name_any(), attempt);
    plan.apply_rbac = job
        .spec
        .on_demand
        .as_ref()
        .and_then(|o| o.service_account_name.as_ref())
        .is_none();
    let secret = secret_name(&runner);
    plan.create_pod = desired_pod(
        job,
        attempt,
        &secret,
        server_url,
        seen.ca_pem.as_deref(),
        config,
    );
    Slot {
        message: format!("runner pod {runner} created; waiting for it to start"),
        runner: Some(runner),
        job_uid: job.uid().unwrap_or_default(),
        reason: reason::RUNNER_STARTING,
    }
}

/// A Job without a runner API address for its pods: it waits, saying why.
pub fn unavailable(job: &Job) -> Slot {
    Slot {
        runner: None,
        job_uid: job.uid().unwrap_or_default(),
        reason: reason::ON_DEMAND_UNAVAILABLE,
        message: "this Job has no runnerSelector, so it needs an on-demand runner pod, but the \
                  controller runs without --runner-server-url (the runner API address runner pods \
                  reach); set it, or give the Job a runnerSelector"
            .into(),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
