//! Runner reconciler: status from the spec and the hub's in-memory session, a token
//! issued when a Pending runner is adopted, and `enable`/`disable`/`close` sent to a
//! connected runner when the spec asks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, instrument};

use super::{Context, Error};
use crate::crd::conditions::{self, Desired, Health};
use crate::crd::job::JobPhase;
use crate::crd::runner::{AdoptionDecision, AdoptionState, DECOMMISSION_ANNOTATION};
use crate::crd::{Runner, RunnerStatus, RunnerToken, RunnerTokenSpec};
use crate::domain::adoption::{self, ISSUED_FOR_LABEL};
use crate::domain::identity;
use crate::domain::token;
use crate::server::FIELD_MANAGER;
use crate::server::hub::{RunnerKey, SessionView};

/// What to do about the token an adoption issues.
#[derive(Clone, Debug, PartialEq)]
pub enum IssuedToken {
    /// Nothing to do.
    Keep,
    /// Create it.
    Create(Box<RunnerToken>),
    /// It expired before the runner collected it: delete (a fresh one follows).
    Replace,
}

/// Everything the reconciler will write or send, computed without I/O.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: RunnerStatus,
    pub issued: IssuedToken,
    /// Close the runner's control channel with this reason.
    pub close: Option<&'static str>,
    pub decommission: Decommission,
}

/// `baton.dev/decommission: "true"` on a Runner: the runner is told `delete`
/// (it wipes its state directory and exits), then its token and Runner go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decommission {
    /// Not asked for.
    No,
    /// Connected: tell it now.
    Now,
    /// Not connected: it is told when it next connects (the annotation keeps
    /// the request, whatever restarts in between).
    WhenConnected,
}

/// How a runner stands for GitOps tools (kstatus, Argo CD). `Ready` means what the
/// runner's own `/readyz` means: adopted and connected (`spec.disabled` is a state
/// the spec asks for, so a disabled runner is Ready, with reason `Disabled`).
/// Pending: `Reconciling` (an operator's decision is awaited); Rejected: `Stalled`
/// (refused until the spec changes); adopted but not connected: `Ready=False` alone,
/// which kstatus reads as InProgress (it cannot be Current with `Ready=False`).
pub fn runner_health(
    adoption: AdoptionState,
    has_token: Option<bool>,
    connected: bool,
    disabled: bool,
) -> Health {
    match adoption {
        AdoptionState::Pending => Health::reconciling(
            "Pending",
            "waiting for an operator to set spec.adoption to Adopted or Rejected",
        ),
        AdoptionState::Rejected => Health::stalled(
            "Rejected",
            "rejected by spec.adoption: its requests are refused and it gets no jobs",
        ),
        AdoptionState::Adopted if has_token == Some(false) => Health::reconciling(
            "TokenIssued",
            "adopted; the runner collects its token on its next poll",
        ),
        _ if !connected => Health::not_ready(
            "NotConnected",
            "adopted, but the runner is not connected to this controller",
        ),
        _ if disabled => Health::current(
            "Disabled",
            "adopted and connected; spec.disabled: it takes no new jobs",
        ),
        _ => Health::current("Ready", "adopted, connected and enabled"),
    }
}

/// The `Adopted` condition for an adoption state.
fn adopted_condition(adoption: AdoptionState, has_token: Option<bool>) -> Desired {
    match adoption {
        AdoptionState::Preadopted => Desired::new(
            "Adopted",
            true,
            "Preadopted",
            "registered with a valid RunnerToken",
        ),
        AdoptionState::Adopted if has_token == Some(false) => Desired::new(
            "Adopted",
            true,
            "TokenIssued",
            "adopted; the runner collects its token on its next poll",
        ),
        AdoptionState::Adopted => {
            Desired::new("Adopted", true, "Adopted", "adopted by spec.adoption")
        }
        AdoptionState::Rejected => Desired::new(
            "Adopted",
            false,
            "Rejected",
            "rejected by spec.adoption: its requests are refused",
        ),
        AdoptionState::Pending => Desired::new(
            "Adopted",
            false,
            "Pending",
            "waiting for an operator to set spec.adoption to Adopted or Rejected",
        ),
    }
}

/// The `Connected` condition: open, Idle (its channel ended; it retries), or
/// never connected to this controller.
fn connected_condition(session: Option<&SessionView>) -> Desired {
    if session.is_some_and(|s| s.connected) {
        Desired::new(
            "Connected",
            true,
            "ControlChannelOpen",
            "control channel open",
        )
    } else if session.is_some_and(|s| s.idle) {
        Desired::new(
            "Connected",
            false,
            "Idle",
            "its control channel ended; the runner keeps reconnecting",
        )
    } else {
        Desired::new(
            "Connected",
            false,
            "Disconnected",
            "no control channel to this controller",
        )
    }
}

/// The pure middle: spec + previous status + the hub's session + the issued token
/// (+ the pool token the runner registered with, if it did).
pub fn plan(
    runner: &Runner,
    session: Option<&SessionView>,
    issued: Option<&RunnerToken>,
    pool: Option<&RunnerToken>,
    now: Timestamp,
) -> Plan {
    let previous = runner.status.clone().unwrap_or_default();
    let decision = runner.spec.adoption;
    let has_token = session.map(|s| s.token.is_some());
    let adoption = adoption::status_adoption(decision, has_token, previous.adoption);
    let connected = session.is_some_and(|s| s.connected);

    let adopted_cond = adopted_condition(adoption, has_token);
    let connected_cond = connected_condition(session);
    let decommission = match (decommissioned(runner), connected) {
        (false, _) => Decommission::No,
        (true, true) => Decommission::Now,
        (true, false) => Decommission::WhenConnected,
    };
    let health = match decommission {
        Decommission::WhenConnected => Health::not_ready(
            "Decommissioning",
            "baton.dev/decommission is set: the runner is told to wipe its state and exit when it next connects",
        ),
        _ => runner_health(adoption, has_token, connected, runner.spec.disabled),
    };
    let generation = runner.metadata.generation;
    let session_field =
        |f: fn(&SessionView) -> &String| session.map(f).filter(|v| !v.is_empty()).cloned();
    let status = RunnerStatus {
        adoption: Some(adoption),
        runner_id: session_field(|s| &s.runner_id).or(previous.runner_id),
        version: session_field(|s| &s.version).or(previous.version),
        key_fingerprint: match session_field(|s| &s.public_key) {
            Some(k) => identity::fingerprint(&k).ok(),
            None => previous.key_fingerprint,
        },
        public_key: session_field(|s| &s.public_key).or(previous.public_key),
        active_jobs: Some(previous.active_jobs.unwrap_or(0)),
        // What its control channel said; kept while it is away.
        direct_only: match session.filter(|s| s.connected) {
            Some(s) => s.direct_only.then_some(true),
            None => previous.direct_only,
        },
        conditions: conditions::merge(
            &previous.conditions,
            &[&[adopted_cond, connected_cond][..], &health.desired()].concat(),
            generation,
            now,
        ),
        observed_generation: generation,
    };

    // A Pending runner that was adopted, or one that registered with a pool token,
    // gets a token of its own (bound to its name).
    let pool_token = session.is_some_and(|s| s.token.is_some() && !s.own_token);
    let wants_token = (decision == Some(AdoptionDecision::Adopted) && has_token == Some(false))
        || (pool_token && decision != Some(AdoptionDecision::Rejected));
    let issued = if wants_token {
        issued_plan(runner, issued, pool, now)
    } else {
        IssuedToken::Keep
    };
    let close = (decision == Some(AdoptionDecision::Rejected) && connected)
        .then_some("rejected by an operator (spec.adoption: Rejected)");
    Plan {
        status,
        issued,
        close,
        decommission,
    }
}

/// What an adopted runner without a token of its own needs: its token created,
/// or replaced when it expired before the runner collected it.
fn issued_plan(
    runner: &Runner,
    issued: Option<&RunnerToken>,
    pool: Option<&RunnerToken>,
    now: Timestamp,
) -> IssuedToken {
    match issued {
        None => issued_token(runner, pool)
            .map_or(IssuedToken::Keep, |t| IssuedToken::Create(Box::new(t))),
        Some(t) => {
            let expires = t
                .status
                .as_ref()
                .and_then(|s| s.expires_at.as_ref())
                .map(|e| e.0);
            let minted = t.status.as_ref().is_some_and(|s| s.token_hash.is_some());
            if minted && token::is_expired(expires, now) {
                IssuedToken::Replace
            } else {
                IssuedToken::Keep
            }
        }
    }
}

/// The RunnerToken issued when runner `runner` is adopted or registers with a pool
/// token: only it may use it, it carries the Runner's labels, and it is not owned by
/// the Runner, so forgetting the Runner leaves the runner a token that still works.
/// One issued through a pool token is owned by that token: deleting the pool token
/// revokes every runner token issued through it (garbage collection).
pub fn issued_token(runner: &Runner, pool: Option<&RunnerToken>) -> Option<RunnerToken> {
    let name = runner.name_any();
    let owner = pool.and_then(|p| p.owner_ref(&()));
    Some(RunnerToken {
        metadata: ObjectMeta {
            owner_references: owner.map(|o| vec![o]),
            name: Some(adoption::issued_token_name(&name)),
            namespace: Some(runner.namespace()?),
            labels: Some(BTreeMap::from([(
                ISSUED_FOR_LABEL.to_owned(),
                name.clone(),
            )])),
            ..Default::default()
        },
        spec: RunnerTokenSpec {
            runner_name: Some(name),
            labels: runner.spec.labels.clone(),
            ttl: None,
        },
        status: None,
    })
}

/// Whether a deleted Runner asked to be decommissioned.
pub fn decommissioned(runner: &Runner) -> bool {
    runner
        .annotations()
        .get(DECOMMISSION_ANNOTATION)
        .is_some_and(|v| v == "true")
}

#[instrument(skip_all, fields(kind = "Runner", namespace = runner.namespace().unwrap_or_default(), name = runner.name_any()))]
pub async fn reconcile(runner: Arc<Runner>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = runner.namespace().ok_or(Error::NoNamespace)?;
    let name = runner.name_any();
    if runner.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = RunnerKey::new(&ns, &name);

    // Read (all in memory).
    let session = ctx.hub.view(&key);
    let issued_name = adoption::issued_token_name(&name);
    let issued = ctx.tokens.get(&ObjectRef::new(&issued_name).within(&ns));
    let pool = session
        .as_ref()
        .filter(|s| !s.own_token)
        .and_then(|s| s.token.as_deref())
        .and_then(|t| ctx.tokens.get(&ObjectRef::new(t).within(&ns)));

    // Pure middle.
    let mut plan = plan(
        &runner,
        session.as_ref(),
        issued.as_deref(),
        pool.as_deref(),
        Timestamp::now(),
    );
    plan.status.active_jobs = Some(active_jobs(&ctx, &ns, &name));

    // Apply.
    let tokens: Api<RunnerToken> = Api::namespaced(ctx.client.clone(), &ns);
    if plan.decommission == Decommission::Now {
        return decommission(&ctx, &runner, &key).await;
    }
    let connected = session.as_ref().is_some_and(|s| s.connected);
    let since_seen = ctx.hub.since_seen(&key);
    let check_in = match pending::stale(&runner, connected, since_seen, ctx.pending_ttl) {
        pending::Stale::Forget => return forget_stale(&ctx, &runner, since_seen).await,
        pending::Stale::CheckIn(after) => Some(after),
        pending::Stale::No => None,
    };
    let requeue = apply_issued(&ctx, &runner, &plan.issued, &tokens).await?;
    let requeue = match (requeue, check_in) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if ctx.hub.set_disabled(&key, runner.spec.disabled) {
        info!(disabled = runner.spec.disabled, "told the runner");
    }
    if let Some(reason) = plan.close {
        ctx.hub.close(&key, reason);
        info!("closed the control channel of a rejected runner");
    }

    // Whether this runner can take Jobs changed (connection, adoption, disabled,
    // labels, capacity): its namespace's queue looks again. (Its own Jobs
    // finishing kick the queue themselves; a new assignment frees nothing.)
    let same_but_jobs = RunnerStatus {
        active_jobs: runner.status.as_ref().and_then(|s| s.active_jobs),
        ..plan.status.clone()
    };
    if runner.status.as_ref() != Some(&same_but_jobs)
        || runner.status.as_ref().and_then(|s| s.observed_generation) != runner.metadata.generation
    {
        ctx.kick.kick_namespace(&ns);
    }

    // Status, only when it changed; a changed count alone waits its turn.
    let now = std::time::Instant::now();
    let count_only = runner.status.as_ref() == Some(&same_but_jobs);
    let requeue = match ctx.runner_writes.wait(&ns, &name, now) {
        Some(wait) if count_only && runner.status.as_ref() != Some(&plan.status) => {
            Some(requeue.map_or(wait, |r| r.min(wait)))
        }
        _ => {
            if runner.status.as_ref() != Some(&plan.status) {
                write_status(&ctx, &runner, &plan.status).await?;
                ctx.runner_writes.wrote(&ns, &name, now);
            }
            requeue
        }
    };
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Create the adopted runner's token, or delete an expired one (a fresh one
/// follows: look again in a second).
async fn apply_issued(
    ctx: &Context,
    runner: &Runner,
    issued: &IssuedToken,
    tokens: &Api<RunnerToken>,
) -> Result<Option<Duration>, Error> {
    let issued_name = adoption::issued_token_name(&runner.name_any());
    match issued {
        IssuedToken::Keep => {}
        IssuedToken::Create(t) => {
            tokens
                .patch(
                    &issued_name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(t.as_ref()),
                )
                .await
                .map_err(|source| Error::Kube {
                    doing: "apply the RunnerToken issued by adoption",
                    name: issued_name.clone(),
                    source,
                })?;
            info!(token = %issued_name, "adopted: issued a token");
            ctx.events.publish(runner,
                false,
                "TokenIssued",
                format!("adopted: issued RunnerToken {issued_name}; the runner collects it on its next poll"),
            );
        }
        IssuedToken::Replace => {
            tokens
                .delete(&issued_name, &DeleteParams::background())
                .await
                .map_err(|source| Error::Kube {
                    doing: "delete the expired RunnerToken issued by adoption",
                    name: issued_name.clone(),
                    source,
                })?;
            return Ok(Some(Duration::from_secs(1)));
        }
    }
    Ok(None)
}

/// Delete a Pending Runner nobody decided on and nobody heard from for the TTL.
async fn forget_stale(ctx: &Context, runner: &Runner, quiet: Duration) -> Result<Action, Error> {
    let (ns, name) = (runner.namespace().unwrap_or_default(), runner.name_any());
    let api: Api<Runner> = Api::namespaced(ctx.client.clone(), &ns);
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {
            info!(
                quiet_secs = quiet.as_secs(),
                "removed a Pending runner not seen for the TTL"
            );
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(source) => Err(Error::Kube {
            doing: "delete a stale Pending Runner",
            name,
            source,
        }),
    }
}

/// Write the Runner's status; an Event when its adoption state changed.
async fn write_status(ctx: &Context, runner: &Runner, status: &RunnerStatus) -> Result<(), Error> {
    let (ns, name) = (runner.namespace().unwrap_or_default(), runner.name_any());
    super::apply_status::<Runner>(ctx, &ns, &name, status, "write Runner status").await?;
    let before = runner.status.as_ref().and_then(|s| s.adoption);
    if let Some(now) = status.adoption
        && before != Some(now)
    {
        info!(adoption = ?now, "runner adoption changed");
        let why = conditions::find(&status.conditions, "Adopted")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        let warning = now == AdoptionState::Rejected;
        ctx.events
            .publish(runner, warning, &format!("{now:?}"), why);
    }
    Ok(())
}

/// Tell a connected runner `delete`, then remove its Runner (whose deletion
/// revokes its adoption token: see `runner_deleted`).
async fn decommission(ctx: &Context, runner: &Runner, key: &RunnerKey) -> Result<Action, Error> {
    let told = ctx.hub.send(key, crate::server::hub::Control::Delete);
    info!(
        told,
        "decommissioned: told the runner to wipe its state and exit"
    );
    ctx.events.publish(
        runner,
        false,
        "Decommissioned",
        "told the runner to wipe its state directory and exit".into(),
    );
    let api: Api<Runner> = Api::namespaced(ctx.client.clone(), &key.namespace);
    match api.delete(&key.name, &DeleteParams::background()).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(source) => Err(Error::Kube {
            doing: "delete the decommissioned Runner",
            name: key.name.clone(),
            source,
        }),
    }
}

/// The runner's Jobs that are Assigned or Running, from the Job cache.
fn active_jobs(ctx: &Context, ns: &str, runner: &str) -> i32 {
    let n = ctx
        .jobs
        .state()
        .iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(ns))
        .filter_map(|j| j.status.as_ref())
        .filter(|s| {
            s.runner.as_deref() == Some(runner)
                && matches!(s.phase, Some(JobPhase::Assigned | JobPhase::Running))
        })
        .count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

mod count;
mod pending;
pub use count::StatusWrites;

#[cfg(test)]
mod tests;
