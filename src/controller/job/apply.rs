//! Carry out a [`JobPlan`]: the status write first (at the resourceVersion read),
//! and only once it lands what follows from it. No decisions here.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use tracing::{info, warn};

use super::Reservation;
use super::decide::{AFTER_CONFLICT, CleanUp, JobPlan, Requeue, Tell};
use crate::backend::kubernetes::{JobTarget, workspace_claim_name};
use crate::controller::{Context, Error, on_demand};
use crate::crd::Job;
use crate::domain::job_write::{self, Written};
use crate::server::hub::{Control, RunnerKey};

fn kube_err(doing: &'static str, name: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube {
        doing,
        name,
        source,
    }
}

/// Do what `plan` says, in order.
pub async fn apply(
    ctx: &Context,
    job: &Job,
    plan: JobPlan,
    reserved: Option<Reservation<'_>>,
) -> Result<Action, Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let name = job.name_any();
    if let Some(status) = plan.status {
        let written = job_write::replace_status(&ctx.client, &ctx.landed, job, status).await;
        let stop = match written {
            Ok(Written::Landed) => None,
            // A decision on stale data: look again once the newer Job arrives.
            Ok(Written::Conflict) => Some(Ok(Action::requeue(AFTER_CONFLICT))),
            Ok(Written::Gone) => Some(Ok(Action::await_change())),
            Err(e) => Some(Err(kube_err("write the status of Job", name.clone())(e))),
        };
        if let Some(stop) = stop {
            if let Some(room) = reserved {
                room.give_back().await;
            }
            return stop;
        }
    }
    if plan.forget_away {
        ctx.disconnected_for(&ns, &name, true);
    }
    if plan.kick_namespace {
        ctx.kick.kick_namespace(&ns);
    }
    for other in &plan.kick_jobs {
        ctx.kick.kick_job(&ns, other);
    }
    if let Some(tell) = &plan.tell {
        tell_runner(ctx, &ns, &name, tell);
    }
    if let Some(note) = plan.note {
        info!(reason = note.reason, "{}", note.message);
        ctx.events
            .publish(job, note.warning, note.reason, note.message);
    }
    if let Some(clean) = plan.clean_up {
        clean_up(ctx, job, clean).await?;
    }
    if plan.delete {
        delete(ctx, job).await?;
    }
    Ok(match plan.requeue {
        Requeue::OnChange => Action::await_change(),
        Requeue::After(d) => Action::requeue(d),
    })
}

fn tell_runner(ctx: &Context, ns: &str, name: &str, tell: &Tell) {
    let (runner, control) = match tell {
        Tell::Assign { runner, epoch } => (
            runner,
            Control::Assign {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                epoch: *epoch,
            },
        ),
        Tell::Cancel { runner } => (
            runner,
            Control::Cancel {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            },
        ),
    };
    let told = ctx.hub.send(&RunnerKey::new(ns, runner), control);
    tracing::debug!(runner = %runner, told, ?tell, "control message");
}

async fn clean_up(ctx: &Context, job: &Job, clean: CleanUp) -> Result<(), Error> {
    archive_logs(ctx, job).await;
    if clean.unused_runner_pods {
        on_demand::clean_up(ctx, job).await?;
    }
    if clean.step_pods {
        remove_step_pods(ctx, job).await?;
    }
    Ok(())
}

/// Copy a finished Job's logs to object storage (nothing without it), once per
/// process: a new leader, or any replica, then serves them. A failure is retried
/// on the Job's next reconcile.
async fn archive_logs(ctx: &Context, job: &Job) {
    let (Some(ns), Some(uid)) = (job.namespace(), job.uid()) else {
        return;
    };
    let Ok(key) = crate::store::JobKey::new(&ns, &job.name_any(), &uid) else {
        return;
    };
    let steps: Vec<String> = job.spec.steps.iter().map(|s| s.name.clone()).collect();
    match ctx.logs.archive_job(&key, &steps).await {
        Ok(0) => {}
        Ok(n) => info!(
            steps = n,
            "the finished Job's logs copied to the blob store"
        ),
        Err(e) => warn!("copy the finished Job's logs to the blob store: {e}"),
    }
}

/// A finished Job's step pods go with the next batch ([`super::step_pods`]),
/// its workspace claim now; once per process (its logs and status stay). A
/// controller not allowed to is told once, in its log.
async fn remove_step_pods(ctx: &Context, job: &Job) -> Result<(), Error> {
    let (Some(ns), Some(uid)) = (job.namespace(), job.uid()) else {
        return Ok(());
    };
    if !ctx.clean_up_once(&uid) {
        return Ok(());
    }
    ctx.step_pods.remove(&ns, &uid);
    // A claim exists only for a Job with a workspace (its own, or the default
    // one content and collecting steps bring): no call for the others.
    let has_claim = JobTarget::for_job(job).is_some_and(|t| t.workspace.is_some());
    if !has_claim {
        return Ok(());
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let claim = workspace_claim_name(&job.name_any(), &uid);
    match claims.delete(&claim, &DeleteParams::background()).await {
        Ok(_) => info!("the finished Job's workspace claim removed"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(kube::Error::Api(s)) if s.code == 403 => {
            warn!(
                "not allowed to remove finished Jobs' workspace claims: {}",
                s.message
            );
        }
        Err(e) => {
            ctx.clean_up_again(&uid);
            return Err(kube_err(
                "remove the workspace claim of Job",
                job.name_any(),
            )(e));
        }
    }
    Ok(())
}

/// `ttlSecondsAfterFinished` passed: delete the Job and its stored logs.
async fn delete(ctx: &Context, job: &Job) -> Result<(), Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let name = job.name_any();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => info!("ttlSecondsAfterFinished passed: Job deleted"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(kube_err("delete finished Job", name)(e)),
    }
    if let Some(uid) = job.uid() {
        crate::controller::remove_job_data(&ctx.logs, &ctx.store, (&ns, &name, &uid)).await;
        ctx.clean_up_again(&uid);
    }
    Ok(())
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
