//! Service steps in a run: where each is reached once up, what its dependents
//! are told, and how a service's end is read. The scheduler decides when
//! dependents start ([`crate::executor::dag::Scheduler::service_up`]) and when
//! services are done; this is the run's bookkeeping around it.

use std::future::Future;

use tokio::sync::mpsc;

use super::{Executor, How, Plan, State, StopCause};
use crate::backend::{Backend, BackendError, StepExit, Workflow, env_token};
use crate::crd::job::StepPhase;
use crate::crd::reasons::reason;

/// Services announce they are up on this: (step, address).
pub(super) type UpSender = mpsc::UnboundedSender<(usize, String)>;

/// What a step task is controlled by: `stop` ends it (the run's stop, or the
/// service's own once its dependents ended); `up` is where a service says it is up.
pub(super) struct Control {
    pub stop: tokio_util::sync::CancellationToken,
    pub up: Option<UpSender>,
}

impl State {
    /// Service `i` is up at `address`: its dependents may start and reach it.
    pub(super) fn service_up(&mut self, i: usize, address: String) {
        self.statuses[i].message = Some(format!("up: reached at {address}"));
        self.addresses[i] = Some(address);
        self.sched.service_up(i);
    }

    /// Service `i` is re-run (its pod was lost): down until it is up again.
    pub(super) fn service_restarted(&mut self, i: usize) {
        self.addresses[i] = None;
        self.sched.service_down(i);
    }

    /// The services upstream of `i` that are up, as (step name, address).
    pub(super) fn service_hosts(&self, i: usize) -> Vec<(String, String)> {
        let dag = self.sched.dag();
        dag.order()
            .iter()
            .filter(|u| dag.upstream(i).contains(u))
            .filter_map(|&u| {
                let address = self.addresses[u].as_ref()?;
                Some((dag.name(u).to_owned(), address.clone()))
            })
            .collect()
    }

    /// `BATON_SERVICE_<NAME>` = the address of each service upstream of `i`.
    pub(super) fn service_env(&self, i: usize) -> Vec<(String, String)> {
        self.service_hosts(i)
            .into_iter()
            .map(|(name, address)| (format!("BATON_SERVICE_{}", env_token(&name)), address))
            .collect()
    }
}

/// How a service's end reads, when it is not read as any step's: stopped by
/// the run because the steps it served ended (a success), or ended on its own
/// while some of them had not (a failure, whatever its code).
pub(super) fn service_end(
    state: &State,
    i: usize,
    how: How,
    cause: Option<StopCause>,
    exit_code: i32,
) -> Option<(StepPhase, &'static str, String)> {
    if !state.sched.is_service(i) {
        return None;
    }
    match (how, cause) {
        (How::Stopped, None) => Some((
            StepPhase::Succeeded,
            reason::SERVICE_STOPPED,
            "stopped: the steps it served have ended".to_owned(),
        )),
        (How::Exited, _) if state.sched.others_active() => Some((
            StepPhase::Failed,
            reason::SERVICE_EXITED,
            format!(
                "the service ended (exit code {exit_code}) before the steps it serves did; \
                 a service must keep running until they end"
            ),
        )),
        _ => None,
    }
}

impl<B: Backend> Executor<'_, B> {
    /// `watch` (a step's end), with a service's readiness awaited beside it: once
    /// the service is up, its address goes to the run on `up`.
    pub(super) async fn announce_up<W>(
        &self,
        workflow: &Workflow,
        i: usize,
        name: &str,
        plan: &Plan<'_>,
        up: Option<UpSender>,
        watch: W,
    ) -> (Result<StepExit, BackendError>, How)
    where
        W: Future<Output = (Result<StepExit, BackendError>, How)>,
    {
        let Some(up) = up else {
            return watch.await;
        };
        let ports = plan.spec.steps[i].service_ports();
        let mut watch = std::pin::pin!(watch);
        tokio::select! {
            end = &mut watch => end,
            ready = self.backend.service_ready(workflow, name, &ports) => {
                match ready {
                    // The run may be over already: then nobody listens.
                    Ok(address) => drop(up.send((i, address))),
                    Err(error) => tracing::warn!(%error, "service readiness"),
                }
                watch.await
            }
        }
    }
}
