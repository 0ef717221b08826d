//! `spec.retries`: a step whose pod was lost to infrastructure (evicted, deleted by
//! someone else, its node gone; or a local process gone with the runner that ran
//! it: [`BackendError::Lost`]) runs again as a new
//! attempt, while the Job's retries allow. A step that failed on its own (a
//! non-zero exit, a timeout, a start failure) never does. The new attempt's log
//! continues the step's log after one line saying why; its timeout starts anew, and
//! so does the step's `startTime` (the current attempt's), which a resumed run
//! measures that timeout from.

use super::{Executor, How, Plan, State, StepEnd, StopCause};
use crate::backend::{Backend, LogChunk, StepRequest};
use crate::executor::LogSink;

impl<B: Backend> Executor<'_, B> {
    /// A step whose pod was lost to infrastructure, with retries left and the run
    /// not stopping, is re-run: the request of its next attempt, after a line in its
    /// log saying why. Anything else (a step failing on its own above all) is not.
    pub(super) async fn rerun<L: LogSink>(
        &self,
        state: &mut State,
        plan: &Plan<'_>,
        i: usize,
        end: &StepEnd,
        cause: Option<StopCause>,
        logs: &L,
    ) -> Option<StepRequest> {
        let StepEnd::Ended {
            exit: Err(error),
            how: How::Exited,
            log,
            ..
        } = end
        else {
            return None;
        };
        let allowed = u32::try_from(plan.spec.retries.unwrap_or(0)).unwrap_or(0);
        let next = state.retries[i] + 1;
        if !error.is_lost() || cause.is_some() || next > allowed {
            return None;
        }
        let step = &plan.spec.steps[i];
        tracing::warn!(step = %step.name, %error, retry = next, allowed, "step lost; re-running it");
        let newline = if matches!(log.last, Some(b) if b != b'\n') {
            "\n"
        } else {
            ""
        };
        let line = format!(
            "{newline}[baton] {} ({}); re-running the step: retry {next} of {allowed}\n",
            error,
            error.reason()
        );
        let log_offset = log.offset + line.len() as u64;
        logs.append(LogChunk {
            step: step.name.clone(),
            offset: log.offset,
            bytes: line.into_bytes(),
        })
        .await;
        state.set_retry(i, next);
        state.mark_running(i);
        Some(StepRequest {
            step: step.clone(),
            env: state.injected_env(i),
            retry: next,
            log_offset,
            hosts: state.service_hosts(i),
        })
    }
}
