//! Job reconciler: the queue, assignment to runners, cancellation and TTL cleanup.
//!
//! Pipeline: read the Job, the Jobs queued in its namespace and the Runners (watch
//! caches) and the hub's sessions → decide ([`plan_queue`], pure: FIFO by
//! creationTimestamp, each Job to a usable matching runner with free capacity) →
//! write the status (an assignment with optimistic concurrency: the status is
//! replaced at the resourceVersion that was read, so of two controllers racing for
//! one Job exactly one write lands) → tell the runner over its control channel.
//!
//! A Job with no `runnerSelector` first gets a runner pod of its own
//! ([`on_demand::prepare`]) and is then assigned to that runner only; the pod going
//! away mid-Job counts as a lost runner at once (the same hand-over, next epoch).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use tracing::{info, instrument, warn};

use super::{Context, Error, on_demand};
use crate::crd::conditions;
use crate::crd::job::{JobPhase, JobStatus};
use crate::crd::runner::{AdoptionDecision, AdoptionState};
use crate::crd::{Job, Runner};
use crate::server::hub::{Control, Hub, RunnerKey};
use crate::server::{FIELD_MANAGER, events};

/// A waiting Job looks again this long after its last reconcile, as a safety net
/// only: what can let it go is an event that kicks it — a Runner reconciled
/// (connected, disconnected, adopted, enabled, relabelled, resized), a Job of
/// its namespace finished or cancelled, or another Job's assignment by a plan
/// that assigns it too.
pub const QUEUE_RESYNC: Duration = Duration::from_secs(30);
/// How often an Assigned Job not yet Running is re-sent to its runner.
pub const ASSIGN_RESEND: Duration = Duration::from_secs(10);

mod queue;
mod status;
pub use queue::*;
pub use status::*;

/// Assignments this process made that the watch cache may not show yet, so the
/// capacity they take is not given out twice.
#[derive(Debug, Default)]
pub struct Recent(HashMap<(String, String), (String, i64)>);

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

fn runner_views(ctx: &Context, ns: &str, recent: &mut Recent) -> Vec<RunnerView> {
    let jobs = ctx.jobs.state();
    let mut active: HashMap<String, usize> = HashMap::new();
    for j in jobs.iter().filter(|j| j.namespace().as_deref() == Some(ns)) {
        let Some(s) = j.status.as_ref() else { continue };
        if matches!(s.phase, Some(JobPhase::Assigned | JobPhase::Running))
            && let Some(r) = &s.runner
        {
            *active.entry(r.clone()).or_default() += 1;
        }
    }
    // Assignments not in the cache yet count too; those it shows are forgotten.
    recent.0.retain(|(rns, name), (runner, epoch)| {
        let seen = jobs
            .iter()
            .find(|j| j.namespace().as_deref() == Some(rns) && &j.name_any() == name)
            .and_then(|j| j.status.as_ref())
            .is_some_and(|s| s.epoch.unwrap_or(0) >= *epoch);
        if !seen && rns == ns {
            *active.entry(runner.clone()).or_default() += 1;
        }
        !seen
    });
    ctx.runners
        .state()
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(ns))
        .map(|r| {
            let max = usize::try_from(r.spec.max_concurrent_jobs.unwrap_or(1).max(1)).unwrap_or(1);
            let used = active.get(&r.name_any()).copied().unwrap_or(0);
            RunnerView {
                name: r.name_any(),
                labels: r.spec.labels.clone(),
                usable: is_usable(r, &ctx.hub, ns),
                free: max.saturating_sub(used),
                on_demand_for: r.spec.labels.get(on_demand::JOB_LABEL).cloned(),
            }
        })
        .collect()
}

fn queue(ctx: &Context, ns: &str) -> Vec<Queued> {
    let mut q: Vec<Arc<Job>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.namespace().as_deref() == Some(ns))
        .filter(|j| j.metadata.deletion_timestamp.is_none() && j.spec.cancel != Some(true))
        .filter(|j| j.status.as_ref().and_then(|s| s.phase).unwrap_or_default() == JobPhase::Queued)
        .collect();
    q.sort_by(|a, b| {
        let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
        ta.cmp(&tb).then_with(|| a.name_any().cmp(&b.name_any()))
    });
    q.iter()
        .map(|j| Queued {
            name: j.name_any(),
            selector: j.spec.runner_selector.clone(),
            invalid: invalid_spec(j),
            on_demand: None,
        })
        .collect()
}

/// Replace the status at the resourceVersion `job` was read at. `Ok(false)`: it
/// changed meanwhile (someone else wrote first).
async fn write_status(ctx: &Context, job: &Job, status: JobStatus) -> Result<bool, Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let name = job.name_any();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let mut next = job.clone();
    next.status = Some(status);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.replace_status(&name, &pp, &next).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(source) => Err(Error::Kube {
            doing: "write the status of Job",
            name,
            source,
        }),
    }
}

#[instrument(skip_all, fields(kind = "Job", namespace = job.namespace().unwrap_or_default(), name = job.name_any()))]
pub async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let name = job.name_any();
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let status = job.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let now = Timestamp::now();
    let cancel = job.spec.cancel == Some(true);

    if phase.is_finished() {
        let settled = settled_status(&job, now);
        if job.status.as_ref() != Some(&settled) {
            // A conflict means a newer version is on its way here anyway.
            write_status(&ctx, &job, settled).await?;
        }
        // Its runner has room again: the queue may move.
        ctx.kick.kick_namespace(&ns);
        ctx.disconnected_for(&ns, &name, true);
        if job.spec.runner_selector.is_none() {
            on_demand::clean_up(&ctx, &job).await?;
        }
        let Some(due) = ttl_due(&job) else {
            return Ok(Action::await_change());
        };
        if due > now {
            let wait = (due.as_second() - now.as_second()).max(1);
            return Ok(Action::requeue(Duration::from_secs(
                u64::try_from(wait).unwrap_or(1),
            )));
        }
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    doing: "delete finished Job",
                    name,
                    source,
                });
            }
        }
        info!("ttlSecondsAfterFinished passed: Job deleted");
        if let Some(uid) = job.uid() {
            ctx.logs.remove_job(&ns, &name, &uid).await;
        }
        return Ok(Action::await_change());
    }

    match phase {
        JobPhase::Queued if cancel => {
            if write_status(&ctx, &job, cancelled_status(&job, now)).await? {
                info!("cancelled while Queued: it never starts");
                events::publish(
                    &ctx.client,
                    &job,
                    false,
                    "Cancelled",
                    "cancelled while Queued: it never started".into(),
                )
                .await;
                ctx.kick.kick_namespace(&ns);
            }
            Ok(Action::await_change())
        }
        JobPhase::Queued => {
            // An on-demand Job's runner pod comes first (outside the queue lock).
            let slot = if job.spec.runner_selector.is_none() && invalid_spec(&job).is_none() {
                Some(on_demand::prepare(&ctx, &job).await?)
            } else {
                None
            };
            // One assignment at a time per process, so capacity is counted once.
            let mut recent = ctx.recent.lock().await;
            let runners = runner_views(&ctx, &ns, &mut recent);
            let mut q = queue(&ctx, &ns);
            if !q.iter().any(|j| j.name == name) {
                // Not in the cache yet (just created): plan it last.
                q.push(Queued {
                    name: name.clone(),
                    selector: job.spec.runner_selector.clone(),
                    invalid: invalid_spec(&job),
                    on_demand: None,
                });
            }
            if let Some(me) = q.iter_mut().find(|j| j.name == name) {
                me.on_demand = slot;
            }
            let mut plan = plan_queue(&q, &runners);
            let decision = plan.remove(&name);
            match decision {
                Some(Decision::Assign { runner }) => {
                    let next = assigned_status(&job, &runner, now);
                    let epoch = next.epoch.unwrap_or(1);
                    if !write_status(&ctx, &job, next).await? {
                        // Someone else wrote first: look again with fresh data.
                        return Ok(Action::requeue(Duration::from_millis(200)));
                    }
                    recent
                        .0
                        .insert((ns.clone(), name.clone()), (runner.clone(), epoch));
                    drop(recent);
                    // The same plan lets others go too: they need not wait for a resync.
                    for (other, d) in &plan {
                        if matches!(d, Decision::Assign { .. }) {
                            ctx.kick.kick_job(&ns, other);
                        }
                    }
                    let told = ctx.hub.send(
                        &RunnerKey::new(&ns, &runner),
                        Control::Assign {
                            namespace: ns.clone(),
                            name: name.clone(),
                            epoch,
                        },
                    );
                    info!(runner = %runner, epoch, told, "Job assigned");
                    events::publish(
                        &ctx.client,
                        &job,
                        false,
                        "Assigned",
                        format!("assigned to runner {runner} at epoch {epoch}"),
                    )
                    .await;
                    Ok(Action::requeue(ASSIGN_RESEND))
                }
                Some(Decision::Wait { reason, message }) => {
                    drop(recent);
                    let next = queued_status(&job, reason, &message, now);
                    if job.status.as_ref() != Some(&next) {
                        let before = job
                            .status
                            .as_ref()
                            .and_then(|s| conditions::find(&s.conditions, "Scheduled"))
                            .map(|c| c.reason.clone());
                        if write_status(&ctx, &job, next).await?
                            && before.as_deref() != Some(reason)
                        {
                            info!(reason, "Job waits: {message}");
                            events::publish(&ctx.client, &job, true, reason, message).await;
                        }
                    }
                    if reason == "InvalidSpec" {
                        // Only an edit can change that (and the spec is immutable).
                        Ok(Action::await_change())
                    } else {
                        Ok(Action::requeue(QUEUE_RESYNC))
                    }
                }
                None => Ok(Action::requeue(QUEUE_RESYNC)),
            }
        }
        JobPhase::Assigned | JobPhase::Running => {
            let Some(runner) = status.runner.clone() else {
                warn!("active Job without a runner");
                return Ok(Action::await_change());
            };
            let key = RunnerKey::new(&ns, &runner);
            if cancel {
                let told = ctx.hub.send(
                    &key,
                    Control::Cancel {
                        namespace: ns.clone(),
                        name: name.clone(),
                    },
                );
                info!(runner = %runner, told, "cancel sent to the runner");
                return Ok(Action::requeue(ASSIGN_RESEND));
            }
            // A runner gone longer than the grace period is lost: the Job goes back
            // to the queue, and the next hand-over moves the epoch on, which fences
            // the old runner off should it come back.
            let connected = ctx.hub.view(&key).is_some_and(|v| v.connected);
            let lost_for = ctx.disconnected_for(&ns, &name, connected);
            let recheck = ASSIGN_RESEND.min(ctx.runner_lost_after);
            // An on-demand runner whose pod is gone or going is lost at once.
            let pod_lost = job.spec.runner_selector.is_none() && {
                ctx.runner_pods.wait_until_ready().await.ok();
                on_demand::pod_named(&ctx, &ns, &runner).is_none_or(|p| on_demand::is_gone(&p))
            };
            let lost_for = if pod_lost {
                Some(lost_for.unwrap_or_default().max(ctx.runner_lost_after))
            } else {
                lost_for
            };
            if let Some(gone) = lost_for {
                if gone < ctx.runner_lost_after {
                    return Ok(Action::requeue(
                        (ctx.runner_lost_after - gone).max(Duration::from_millis(200)),
                    ));
                }
                let next = requeued_status(&job, &runner, now);
                if write_status(&ctx, &job, next).await? {
                    ctx.disconnected_for(&ns, &name, true);
                    warn!(runner = %runner, after = ?gone, "runner lost: Job back in the queue");
                    events::publish(
                        &ctx.client,
                        &job,
                        true,
                        "RunnerLost",
                        format!(
                            "runner {runner} gone for {}s: handing the Job over",
                            gone.as_secs()
                        ),
                    )
                    .await;
                }
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            if phase == JobPhase::Assigned {
                // The runner may have missed it (reconnecting): say it again; a
                // runner already on it ignores the repeat.
                ctx.hub.send(
                    &key,
                    Control::Assign {
                        namespace: ns.clone(),
                        name: name.clone(),
                        epoch: status.epoch.unwrap_or(0),
                    },
                );
                return Ok(Action::requeue(recheck));
            }
            // Watch the runner's connection.
            Ok(Action::requeue(recheck))
        }
        _ => Ok(Action::await_change()),
    }
}

/// Triggers reconciles of other Jobs (queued ones, when capacity frees up).
#[derive(Clone)]
pub struct Kick {
    tx: tokio::sync::mpsc::UnboundedSender<kube::runtime::reflector::ObjectRef<Job>>,
    jobs: kube::runtime::reflector::Store<Job>,
}

impl Kick {
    pub fn new(
        jobs: kube::runtime::reflector::Store<Job>,
    ) -> (
        Self,
        tokio::sync::mpsc::UnboundedReceiver<kube::runtime::reflector::ObjectRef<Job>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Self { tx, jobs }, rx)
    }

    /// Reconcile one Job again.
    pub fn kick_job(&self, ns: &str, name: &str) {
        let _ = self
            .tx
            .send(kube::runtime::reflector::ObjectRef::new(name).within(ns));
    }

    /// Reconcile every Queued Job of `ns` again.
    pub fn kick_namespace(&self, ns: &str) {
        for j in self.jobs.state() {
            if j.namespace().as_deref() == Some(ns)
                && j.status.as_ref().and_then(|s| s.phase).unwrap_or_default() == JobPhase::Queued
            {
                let _ = self
                    .tx
                    .send(kube::runtime::reflector::ObjectRef::from_obj(&*j));
            }
        }
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
