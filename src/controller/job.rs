//! Job reconciler: the queue, assignment to runners, the hand-over of a lost
//! runner's Jobs, cancellation, clean-up and TTL.
//!
//! Pipeline: [`observe`] (the watch caches, the hub, the queue plan of the Job's
//! namespace: by `spec.priority`, then FIFO by creationTimestamp, each Job to a
//! usable matching runner with room; remembered until its inputs change) → [`decide`] (pure: the [`JobPlan`]) → [`apply`] (the status first,
//! replaced at the resourceVersion read, so of two controllers racing for one
//! Job exactly one write lands; then what follows from it). Every status is
//! computed by [`crate::crd::job_status`], as the runner API's are.
//!
//! The queue's upkeep ([`board`], on the leader) writes `status.queuePosition`
//! in batches and reconciles the Queued Jobs a change of the queue concerns.
//!
//! A Job with no `runnerSelector` first gets a runner pod of its own
//! ([`on_demand::prepare`]) and is then assigned to that runner only; the pod going
//! away mid-Job counts as a lost runner at once (the same hand-over, next epoch).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use tracing::instrument;

use super::{Context, Error, on_demand};
use crate::crd::job::JobPhase;
use crate::crd::{Job, RunnerToken};
use crate::executor::dag::Dag;

mod apply;
pub mod board;
mod decide;
mod observe;
mod queue;
pub mod retained;
pub mod step_pods;
pub use apply::apply;
pub use decide::*;
pub use observe::observe;
pub use queue::*;

/// Assignments this process made that the watch cache may not show yet, so the
/// capacity they take is not given out twice.
#[derive(Debug, Default)]
pub struct Recent(HashMap<(String, String), (String, i64)>);

/// Room on a runner taken, under the queue lock, for an assignment whose status
/// write is still to come: the lock is released before the write (other Jobs'
/// decisions need not wait out this one's round trip), and the room is given
/// back if the write does not land.
#[derive(Debug)]
pub struct Reservation<'a> {
    recent: &'a tokio::sync::Mutex<Recent>,
    key: (String, String),
}

impl<'a> Reservation<'a> {
    /// Take the room `plan` assigns, if it assigns (`held`: the locked `recent`).
    pub fn take(
        recent: &'a tokio::sync::Mutex<Recent>,
        held: &mut Recent,
        job: &Job,
        plan: &JobPlan,
    ) -> Option<Self> {
        let (runner, epoch) = plan.assigned.clone()?;
        let key = (job.namespace().unwrap_or_default(), job.name_any());
        held.0.insert(key.clone(), (runner, epoch));
        Some(Self { recent, key })
    }

    /// The write did not land: the room is free again.
    pub async fn give_back(self) {
        self.recent.lock().await.0.remove(&self.key);
    }
}

/// Why a spec cannot run, if it cannot: a DAG cycle, or a step whose env or
/// volume reads a Secret holding a runner token (`runner_secrets`, the namespace's). The chart's
/// admission policy refuses such a Job at create; this holds where it is not
/// installed (docs/security.md).
pub fn invalid_spec(job: &Job, runner_secrets: &BTreeSet<String>) -> Option<String> {
    let mut problems: Vec<String> = Dag::from_steps(&job.spec.steps)
        .err()
        .map(|errors| errors.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    problems.extend(crate::archive::glob_problems(&job.spec.steps));
    for step in &job.spec.steps {
        for (how, secret) in step.secrets_read() {
            if runner_secrets.contains(secret) {
                problems.push(format!(
                    "step {} reads Secret {secret} ({how}), which holds a runner token: no step \
                     may read a runner credential",
                    step.name
                ));
            }
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// The Secrets of `ns` that hold runner tokens, from the RunnerToken cache.
pub fn runner_secrets(tokens: &Store<RunnerToken>, ns: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for t in tokens.state() {
        if t.namespace().as_deref() == Some(ns) {
            names.insert(super::token::secret_name(&t.name_any()));
            names.extend(t.status.as_ref().and_then(|s| s.secret_name.clone()));
        }
    }
    names
}

#[instrument(skip_all, fields(kind = "Job", namespace = job.namespace().unwrap_or_default(), name = job.name_any()))]
pub async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    job.namespace().ok_or(Error::NoNamespace)?;
    // A Job reconciled again (a kick, the queue's upkeep) before the watch shows
    // this process's own last write of it: deciding on it would only meet a
    // conflict. The watch event that brings the write reconciles it.
    if ctx.landed.wrote_since(&job) {
        return Ok(Action::await_change());
    }
    let phase = job
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default();
    let in_queue = waits_in_queue(&job);
    // A Job new to the queue or leaving it moves the others: the queue's upkeep
    // looks. (Not for a Queued Job that already has a place: its position write
    // or wait reason, the upkeep's own doing, must not start another pass.)
    let placed = job.status.as_ref().and_then(|s| s.queue_position).is_some();
    if !(phase == JobPhase::Queued && placed) {
        ctx.kick.board().touch(&job.namespace().unwrap_or_default());
    }
    // An on-demand Job's runner pod comes first (outside the queue lock).
    let ns = job.namespace().unwrap_or_default();
    let valid = || invalid_spec(&job, &runner_secrets(&ctx.tokens, &ns)).is_none();
    let slot = if in_queue && job.spec.spawns_runner() && valid() {
        Some(on_demand::prepare(&ctx, &job).await?)
    } else {
        None
    };
    // One queue decision at a time per process, so capacity is counted once;
    // the lock is held for the decision, not for its write (a Reservation).
    let mut recent = if in_queue {
        Some(ctx.recent.lock().await)
    } else {
        None
    };
    let seen = observe(&ctx, &job, slot, recent.as_deref_mut()).await;
    let plan = decide(&job, &seen, Timestamp::now());
    let reserved = recent
        .as_deref_mut()
        .and_then(|held| Reservation::take(&ctx.recent, held, &job, &plan));
    drop(recent);
    apply(&ctx, &job, plan, reserved).await
}

/// The leader's background work on Jobs: the queue's upkeep and the removal of
/// finished Jobs' step pods, until `shutdown`.
pub async fn upkeep(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Clone) {
    futures::future::join(
        board::run(ctx.clone(), shutdown.clone()),
        step_pods::run(ctx, shutdown),
    )
    .await;
}

/// Triggers reconciles of other Jobs, and the queue's upkeep ([`board`]).
#[derive(Clone)]
pub struct Kick {
    tx: tokio::sync::mpsc::UnboundedSender<kube::runtime::reflector::ObjectRef<Job>>,
    board: Arc<board::Board>,
}

impl Kick {
    pub fn new() -> (
        Self,
        tokio::sync::mpsc::UnboundedReceiver<kube::runtime::reflector::ObjectRef<Job>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let board = Arc::default();
        (Self { tx, board }, rx)
    }

    /// The queue's upkeep and plans.
    pub fn board(&self) -> &board::Board {
        &self.board
    }

    /// Reconcile one Job again.
    pub fn kick_job(&self, ns: &str, name: &str) {
        let _ = self
            .tx
            .send(kube::runtime::reflector::ObjectRef::new(name).within(ns));
    }

    /// `ns`'s queue may move (capacity freed, a runner changed): the upkeep
    /// plans it once and reconciles only the Jobs whose decision changed.
    pub fn kick_namespace(&self, ns: &str) {
        self.board.touch(ns);
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
