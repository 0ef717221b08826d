//! Resuming a Job: steps the backend already knows are watched again, never
//! started twice, and every clock continues from what was recorded (the Job's
//! `startTime`, a step attempt's `startTime`), so timeouts bound real time however
//! often the Job changes hands or its runner restarts.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use super::{Attempt, Executor, Plan, State, now};
use crate::backend::{Backend, DiscoveredStep, Workflow};
use crate::crd::job::StepStatus;
use crate::executor::{LogSink, StatusSink};

/// When something started, on this process's clock: `at`, minus how long it had
/// already run before this process took it over. (Not an `Instant` in the past:
/// one before the machine booted cannot be represented.)
#[derive(Clone, Copy, Debug)]
pub(super) struct Start {
    at: Instant,
    before: Duration,
}

impl Start {
    pub(super) fn now() -> Self {
        Self {
            at: Instant::now(),
            before: Duration::ZERO,
        }
    }

    /// Started at the recorded wall-clock `time` (now if unknown). A time in the
    /// future (clocks of two machines disagree) counts as now.
    pub(super) fn recorded(time: Option<&Time>) -> Self {
        let before = time
            .map(|t| Timestamp::now().duration_since(t.0))
            .and_then(|ago| Duration::try_from(ago).ok())
            .unwrap_or_default();
        Self {
            at: Instant::now(),
            before,
        }
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.before + self.at.elapsed()
    }

    /// When `timeout` after the start is, on this process's clock (maybe past).
    pub(super) fn deadline(&self, timeout: Duration) -> Instant {
        self.at + timeout.saturating_sub(self.before)
    }
}

/// The recorded start of the attempt `retry` of `step`, if that attempt is the one
/// the record describes.
fn recorded_start<'r>(recorded: &'r [StepStatus], step: &str, retry: u32) -> Option<&'r Time> {
    let status = recorded.iter().find(|s| s.name == step)?;
    let attempt = u32::try_from(status.retries.unwrap_or(0)).unwrap_or(0);
    (attempt == retry)
        .then_some(status.start_time.as_ref())
        .flatten()
}

impl<B: Backend> Executor<'_, B> {
    /// Adopt the steps the backend found: each is marked Running again (with its
    /// recorded start) and reported; returns the attempts to watch and tail.
    pub(super) async fn resume<S: StatusSink, L: LogSink>(
        &self,
        state: &mut State,
        plan: &Plan<'_>,
        workflow: &Workflow,
        discovered: Vec<DiscoveredStep>,
        status: &S,
        logs: &L,
    ) -> Vec<(usize, Attempt)> {
        let recorded = status.recorded();
        let mut resumed = Vec::new();
        for found in discovered {
            let Some(i) = plan.spec.steps.iter().position(|s| s.name == found.name) else {
                tracing::warn!(workflow = %workflow.id, step = %found.name, "discovered a step the Job does not have; left alone");
                continue;
            };
            tracing::info!(workflow = %workflow.id, step = %found.name, state = ?found.state, "resuming a step found running or ended");
            state.sched.adopt(i);
            state.mark_resumed(i, recorded_start(&recorded.steps, &found.name, found.retry));
            state.set_retry(i, found.retry);
            self.name_attempt(state, workflow, i);
            status.step_changed(&state.statuses[i]).await;
            let attempt = Attempt {
                request: None,
                log_from: logs.resume_offset(&found.name),
                deadline: state.deadline(plan, i),
            };
            resumed.push((i, attempt));
        }
        resumed
    }
}

impl State {
    /// A step found started by an earlier run: its clock runs from `start`.
    pub(super) fn mark_resumed(&mut self, step: usize, start: Option<&Time>) {
        self.mark_running(step);
        self.started[step] = Some(Start::recorded(start));
        self.statuses[step].start_time = Some(start.cloned().unwrap_or_else(now));
    }

    /// When the step's current attempt is over its `timeout`.
    pub(super) fn deadline(&self, plan: &Plan<'_>, step: usize) -> Option<Instant> {
        let timeout = plan.step_timeouts[step]?;
        Some(
            self.started[step]
                .unwrap_or_else(Start::now)
                .deadline(timeout),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    fn ago(secs: i64) -> Option<Time> {
        Timestamp::now()
            .checked_sub(SignedDuration::from_secs(secs))
            .ok()
            .map(Time)
    }

    #[test]
    fn a_recorded_start_counts_what_already_elapsed() {
        let start = Start::recorded(ago(3600).as_ref());
        assert!(start.elapsed() >= Duration::from_secs(3600));
        assert!(start.deadline(Duration::from_secs(60)) <= Instant::now());
        let rest = Start::recorded(ago(20).as_ref()).deadline(Duration::from_secs(60));
        let left = rest - Instant::now();
        assert!(left > Duration::from_secs(30) && left <= Duration::from_secs(40));
        // No record, or one from a clock ahead of ours: it starts now.
        for time in [None, ago(-600)] {
            assert!(Start::recorded(time.as_ref()).elapsed() < Duration::from_secs(5));
        }
    }

    #[test]
    fn only_the_recorded_attempt_has_a_recorded_start() {
        let steps = vec![StepStatus {
            name: "a".into(),
            retries: Some(1),
            start_time: ago(5),
            ..Default::default()
        }];
        assert!(recorded_start(&steps, "a", 1).is_some());
        assert!(recorded_start(&steps, "a", 0).is_none());
        assert!(recorded_start(&steps, "b", 0).is_none());
    }
}
