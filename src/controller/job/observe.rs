//! What the Job reconciler reads before it decides: the queue's verdict on a
//! Queued Job (the watch caches and the hub, planned by [`decisions`]) or the
//! state of an active Job's runner. Reads only; [`super::apply`] writes.

use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use kube::ResourceExt;

use super::board::NsPlan;
use super::decide::{Observed, RunnerSeen};
use super::queue::{
    Decision, Queued, RunnerView, Selectors, decisions, on_demand_decision, plan_queue, sort_queue,
    waits_in_queue,
};
use super::{Recent, invalid_spec, runner_secrets};
use crate::controller::{Context, on_demand};
use crate::crd::job::JobPhase;
use crate::crd::runner::{AdoptionDecision, AdoptionState};
use crate::crd::{Job, Runner};
use crate::server::hub::{Hub, RunnerKey};

/// Everything [`super::decide`] needs. `slot`: a Queued on-demand Job's runner
/// pod as [`on_demand::prepare`] left it; `recent`: held for a Queued Job, so
/// capacity is counted once per process.
pub async fn observe(
    ctx: &Context,
    job: &Job,
    slot: Option<on_demand::Slot>,
    recent: Option<&mut Recent>,
) -> Observed {
    let mut seen = Observed {
        queue: None,
        also_assigned: Vec::new(),
        runner: None,
        runner_lost_after: ctx.runner_lost_after,
        keep_step_pods: ctx.keep_step_pods,
    };
    let ns = job.namespace().unwrap_or_default();
    let phase = job
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default();
    match phase {
        JobPhase::Queued => {
            if let Some(recent) = recent {
                let (mine, others) = queue_verdict(ctx, job, &ns, slot, recent);
                seen.queue = mine;
                seen.also_assigned = others;
            }
        }
        JobPhase::Assigned | JobPhase::Running => seen.runner = runner_seen(ctx, job, &ns).await,
        _ => {}
    }
    seen
}

/// This Job's decision in the plan of its namespace's whole queue, and the
/// other Jobs the plan assigns.
fn queue_verdict(
    ctx: &Context,
    job: &Job,
    ns: &str,
    slot: Option<on_demand::Slot>,
    recent: &mut Recent,
) -> (Option<Decision>, Vec<String>) {
    let name = job.name_any();
    let plan = plan_namespace(ctx, ns, recent);
    let others = (plan.queue.iter().zip(&plan.decisions))
        .filter(|(j, d)| j.name != name && matches!(d, Decision::Assign { .. }))
        .map(|(j, _)| j.name.clone())
        .collect();
    let free: Vec<usize> = plan.runners.iter().map(|r| r.free).collect();
    let mine = match (slot, plan.index.get(&name)) {
        // On-demand runners serve one Job each: no other Job's decision bears on it.
        (Some(slot), _) => on_demand_decision(&slot, &plan.runners, &free),
        (None, Some(&i)) => plan.decisions[i].clone(),
        (None, None) => {
            // Not in the cache yet (just created): planned in its place, once.
            let mut q = plan.queue.clone();
            let secrets = runner_secrets(&ctx.tokens, ns);
            q.push(queued(job, &secrets, &mut Selectors::default()));
            sort_queue(&mut q);
            match plan_queue(&q, &plan.runners).remove(&name) {
                Some(decision) => decision,
                None => return (None, others),
            }
        }
    };
    (Some(mine), others)
}

/// The plan of `ns`'s queue: the one remembered if nothing it depends on
/// changed (a position written, a step reported), else made afresh. So a Job
/// reconciled for no queue reason costs a pass over the cache, not a plan.
pub fn plan_namespace(ctx: &Context, ns: &str, recent: &mut Recent) -> Arc<NsPlan> {
    let runners = runner_views(ctx, ns, recent);
    let secrets = runner_secrets(&ctx.tokens, ns);
    let jobs = queued_jobs(ctx, ns);
    let key = plan_key(&jobs, &runners, &secrets);
    let board = ctx.kick.board();
    if let Some(plan) = board.remembered(ns, key) {
        return plan;
    }
    let mut selectors = Selectors::default();
    let mut queue: Vec<Queued> = jobs
        .iter()
        .map(|j| queued(j, &secrets, &mut selectors))
        .collect();
    sort_queue(&mut queue);
    let decisions = decisions(&queue, &runners);
    let plan = Arc::new(NsPlan::new(key, queue, decisions, runners));
    board.remember(ns, plan.clone());
    plan
}

async fn runner_seen(ctx: &Context, job: &Job, ns: &str) -> Option<RunnerSeen> {
    let runner = job.status.as_ref()?.runner.clone()?;
    // An on-demand runner whose pod is gone or going is lost at once.
    if job.spec.spawns_runner() {
        ctx.runner_pods.wait_until_ready().await.ok();
        let pod = on_demand::pod_named(ctx, ns, &runner);
        if pod.is_none_or(|p| on_demand::is_gone(&p)) {
            return Some(RunnerSeen::PodGone);
        }
    }
    let connected = ctx
        .hub
        .view(&RunnerKey::new(ns, &runner))
        .is_some_and(|v| v.connected);
    Some(match ctx.disconnected_for(ns, &job.name_any(), connected) {
        None => RunnerSeen::Connected,
        Some(away) => RunnerSeen::Away(away),
    })
}

fn is_usable(runner: &Runner, hub: &Hub, ns: &str) -> bool {
    let adopted = matches!(
        runner.status.as_ref().and_then(|s| s.adoption),
        Some(AdoptionState::Adopted | AdoptionState::Preadopted)
    );
    let rejected = runner.spec.adoption == Some(AdoptionDecision::Rejected);
    let connected = hub
        .view(&RunnerKey::new(ns, runner.name_any()))
        .is_some_and(|v| v.connected);
    adopted && !rejected && connected && !runner.spec.disabled
}

/// Active Jobs per runner of `ns`: the cache's, plus assignments this process
/// made that the cache does not show yet (those it shows are forgotten).
fn active_per_runner(ctx: &Context, ns: &str, recent: &mut Recent) -> HashMap<String, usize> {
    let jobs = ctx.jobs.state();
    let mut active: HashMap<String, usize> = HashMap::new();
    for j in jobs.iter().filter(|j| in_namespace(&j.metadata, ns)) {
        let Some(s) = j.status.as_ref() else { continue };
        if matches!(s.phase, Some(JobPhase::Assigned | JobPhase::Running))
            && let Some(r) = &s.runner
        {
            *active.entry(r.clone()).or_default() += 1;
        }
    }
    if recent.0.is_empty() {
        return active;
    }
    // Each cached Job's epoch, looked up once per reservation: a burst holds
    // thousands of both, and a scan per reservation made each reconcile
    // quadratic in them.
    let epochs: HashMap<(&str, &str), i64> = jobs
        .iter()
        .filter_map(|j| {
            let key = (
                j.metadata.namespace.as_deref()?,
                j.metadata.name.as_deref()?,
            );
            Some((key, j.status.as_ref()?.epoch.unwrap_or(0)))
        })
        .collect();
    recent.0.retain(|(rns, name), (runner, epoch)| {
        let seen = epochs
            .get(&(rns.as_str(), name.as_str()))
            .is_some_and(|e| e >= epoch);
        if !seen && rns == ns {
            *active.entry(runner.clone()).or_default() += 1;
        }
        !seen
    });
    active
}

/// Whether an object is in `ns`, without copying its namespace (a hot path:
/// once per cached Job per reconcile).
fn in_namespace(meta: &kube::api::ObjectMeta, ns: &str) -> bool {
    meta.namespace.as_deref() == Some(ns)
}

fn runner_views(ctx: &Context, ns: &str, recent: &mut Recent) -> Vec<RunnerView> {
    let active = active_per_runner(ctx, ns, recent);
    ctx.runners
        .state()
        .iter()
        .filter(|r| in_namespace(&r.metadata, ns))
        .map(|r| {
            let max = usize::try_from(r.spec.max_concurrent_jobs.unwrap_or(1).max(1)).unwrap_or(1);
            let used = active.get(&r.name_any()).copied().unwrap_or(0);
            RunnerView {
                name: r.name_any(),
                labels: r.spec.labels.clone(),
                usable: is_usable(r, &ctx.hub, ns),
                free: max.saturating_sub(used),
                on_demand_for: r.spec.labels.get(on_demand::JOB_LABEL).cloned(),
                direct_only: (ctx.hub.view(&RunnerKey::new(ns, r.name_any())))
                    .is_some_and(|v| v.direct_only),
            }
        })
        .collect()
}

fn queued(j: &Job, runner_secrets: &BTreeSet<String>, selectors: &mut Selectors) -> Queued {
    Queued {
        name: j.name_any(),
        uid: j.uid().unwrap_or_default(),
        priority: j.spec.priority.unwrap_or(0),
        created: j.metadata.creation_timestamp.as_ref().map(|t| t.0),
        selector: j.spec.runner_selector.as_ref().map(|s| selectors.share(s)),
        runner_name: j.spec.runner_name.clone(),
        invalid: invalid_spec(j, runner_secrets),
        on_demand: None,
    }
}

/// The namespace's Queued Jobs (not cancelled, not being deleted), unordered.
pub fn queued_jobs(ctx: &Context, ns: &str) -> Vec<Arc<Job>> {
    ctx.jobs
        .state()
        .into_iter()
        .filter(|j| in_namespace(&j.metadata, ns) && waits_in_queue(j))
        .collect()
}

/// What a plan depends on, hashed: each queued Job's identity and spec
/// generation (not its status: a position or a condition changes no decision),
/// the runners as the queue sees them, and the Secrets a spec may not read.
fn plan_key(jobs: &[Arc<Job>], runners: &[RunnerView], secrets: &BTreeSet<String>) -> u64 {
    let mut h = DefaultHasher::new();
    // The cache's order is arbitrary: the Jobs are summed, not hashed in turn.
    let jobs_sum = jobs.iter().fold(0u64, |sum, j| {
        let mut jh = DefaultHasher::new();
        (&j.metadata.name, &j.metadata.uid, j.metadata.generation).hash(&mut jh);
        sum.wrapping_add(jh.finish())
    });
    (jobs.len(), jobs_sum, runners, secrets).hash(&mut h);
    h.finish()
}
