//! The queue's upkeep, on the leader: one task that, a moment after anything
//! that may move a namespace's queue (a Job created, assigned, finished or
//! deleted; a runner changed), plans that queue once, writes
//! `status.queuePosition` only where what a Job shows is off (exact for the
//! first ten, within a quarter further back: `queue::worth_writing`), a bounded
//! batch a pass, front first, and reconciles only the Jobs whose decision
//! changed. A Job waiting for a runner has no timer of its own, so an idle
//! queue costs nothing however long it is.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use tracing::{debug, warn};

use super::observe::{plan_namespace, queued_jobs};
use super::queue::{Decision, Queued, RunnerView, Shown, upkeep, waits_in_queue};
use crate::controller::Context;
use crate::crd::Job;
use crate::crd::conditions;
use crate::crd::reasons::condition;
use crate::server::FIELD_MANAGER;

/// Touches closer together than this make one pass.
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// A pass over every namespace with Queued Jobs this often, as a safety net
/// only (one plan per namespace, not one per Job).
pub const SAFETY_PASS: Duration = Duration::from_secs(60);
/// Position writes in flight at once.
const WRITES_AT_ONCE: usize = 8;
/// Position writes per pass at most, front of the queue first; the rest wait
/// for the next pass (one is due at once). Bounds what a deep queue that drains
/// fast costs the API server: before this cap, each pass rewrote every place.
const WRITES_PER_PASS: usize = 64;

/// One namespace's queue, planned.
#[derive(Debug)]
pub struct NsPlan {
    /// A hash of what the plan depends on.
    pub key: u64,
    /// The Queued Jobs in queue order.
    pub queue: Vec<Queued>,
    /// One per Job of `queue`.
    pub decisions: Vec<Decision>,
    pub runners: Vec<RunnerView>,
    /// Job name → its index in `queue`.
    pub index: HashMap<String, usize>,
}

impl NsPlan {
    pub fn new(
        key: u64,
        queue: Vec<Queued>,
        decisions: Vec<Decision>,
        runners: Vec<RunnerView>,
    ) -> Self {
        let index = queue
            .iter()
            .enumerate()
            .map(|(i, j)| (j.name.clone(), i))
            .collect();
        Self {
            key,
            queue,
            decisions,
            runners,
            index,
        }
    }
}

/// The namespaces whose queue may have moved, and each one's last plan.
#[derive(Debug, Default)]
pub struct Board {
    touched: Mutex<BTreeSet<String>>,
    wake: tokio::sync::Notify,
    plans: Mutex<HashMap<String, Arc<NsPlan>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Board {
    /// `ns`'s queue may have moved: a pass soon.
    pub fn touch(&self, ns: &str) {
        lock(&self.touched).insert(ns.to_owned());
        self.wake.notify_one();
    }

    fn take_touched(&self) -> BTreeSet<String> {
        std::mem::take(&mut *lock(&self.touched))
    }

    /// `ns`'s last plan, if it was made from inputs hashing to `key`.
    pub fn remembered(&self, ns: &str, key: u64) -> Option<Arc<NsPlan>> {
        lock(&self.plans).get(ns).filter(|p| p.key == key).cloned()
    }

    pub fn remember(&self, ns: &str, plan: Arc<NsPlan>) {
        lock(&self.plans).insert(ns.to_owned(), plan);
    }
}

/// The upkeep task: runs until `shutdown` (the leader's controllers' lifetime).
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    if ctx.jobs.wait_until_ready().await.is_err() {
        return;
    }
    let board = ctx.kick.board();
    let passes = async {
        loop {
            tokio::select! {
                () = board.wake.notified() => {}
                () = tokio::time::sleep(SAFETY_PASS) => touch_all_queues(&ctx),
            }
            tokio::time::sleep(DEBOUNCE).await;
            for ns in board.take_touched() {
                pass(&ctx, &ns).await;
            }
        }
    };
    tokio::select! {
        () = passes => {}
        () = shutdown => {}
    }
}

fn touch_all_queues(ctx: &Context) {
    let queues: BTreeSet<String> = ctx
        .jobs
        .state()
        .iter()
        .filter(|j| waits_in_queue(j))
        .filter_map(|j| j.namespace())
        .collect();
    for ns in queues {
        ctx.kick.board().touch(&ns);
    }
}

/// One namespace: plan (or reuse the plan), then write and reconcile only
/// what the plan changed.
async fn pass(ctx: &Context, ns: &str) {
    let plan = {
        let mut recent = ctx.recent.lock().await;
        plan_namespace(ctx, ns, &mut recent)
    };
    let jobs: HashMap<String, Arc<Job>> = queued_jobs(ctx, ns)
        .into_iter()
        .map(|j| (j.name_any(), j))
        .collect();
    let shown: Vec<Shown> = (plan.queue.iter())
        .map(|q| jobs.get(&q.name).map(|j| shown(j)).unwrap_or_default())
        .collect();
    let mut todo = upkeep(&plan.queue, &plan.decisions, &shown, &plan.runners);
    if todo.positions.len() > WRITES_PER_PASS {
        todo.positions.truncate(WRITES_PER_PASS);
        ctx.kick.board().touch(ns);
    }
    debug!(
        namespace = ns,
        queued = plan.queue.len(),
        positions = todo.positions.len(),
        kicks = todo.kick.len(),
        "queue upkeep"
    );
    for name in &todo.kick {
        ctx.kick.kick_job(ns, name);
    }
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    futures::stream::iter(todo.positions)
        .filter_map(|(name, position)| {
            let rv = jobs.get(&name).and_then(|j| j.resource_version());
            futures::future::ready(rv.map(|rv| (name, position, rv)))
        })
        .map(|(name, position, rv)| write_position(&api, name, position, rv))
        .buffer_unordered(WRITES_AT_ONCE)
        .collect::<()>()
        .await;
}

/// What a Queued Job shows the queue: its position and why it waits.
fn shown(job: &Job) -> Shown {
    let status = job.status.as_ref();
    Shown {
        position: status.and_then(|s| s.queue_position),
        waiting: status
            .and_then(|s| conditions::find(&s.conditions, condition::SCHEDULED))
            .filter(|c| c.status == "False")
            .map(|c| (c.reason.clone(), c.message.clone())),
    }
}

/// A merge patch of the position at the resourceVersion read: a Job that moved
/// on meanwhile (assigned, say) is left alone, and its change brings another pass.
async fn write_position(api: &Api<Job>, name: String, position: i32, rv: String) {
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": rv },
        "status": { "queuePosition": position },
    });
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.patch_status(&name, &pp, &Patch::Merge(&patch)).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
            debug!(job = name, "queue position not written: the Job changed");
        }
        Err(e) => warn!(job = name, "write the queue position: {e}"),
    }
}
