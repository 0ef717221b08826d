//! Resuming a Job: steps the backend already knows are watched again, never
//! started twice; steps recorded as finished keep their result; a step recorded
//! running that the backend no longer has is lost with its runner (`RunnerLost`,
//! re-run while `spec.retries` allows, its log continued after a line saying
//! why). Every clock continues from what was recorded (the Job's `startTime`, a
//! step attempt's `startTime`), so timeouts bound real time however often the Job
//! changes hands or its runner restarts.

use crate::crd::reasons::reason;
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use super::{Attempt, Executor, Plan, State, now};
use crate::backend::{Backend, BackendError, DiscoveredStep, StepState, Workflow};
use crate::crd::job::{StepPhase, StepStatus};
use crate::executor::outputs;
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

/// Which attempt a recorded status describes.
fn attempt_of(status: &StepStatus) -> u32 {
    u32::try_from(status.retries.unwrap_or(0)).unwrap_or(0)
}

/// The recorded start of the attempt `retry`, if that attempt is the one the
/// record describes.
fn recorded_start(recorded: Option<&StepStatus>, retry: u32) -> Option<&Time> {
    let status = recorded?;
    (attempt_of(status) == retry)
        .then_some(status.start_time.as_ref())
        .flatten()
}

/// What a resumed run does with one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resume {
    /// Not started yet: the scheduler starts it when its turn comes.
    Fresh,
    /// Recorded as finished: that result stands, it never runs again.
    Finished,
    /// The backend has it (running or ended): watch it again.
    Adopt,
    /// Recorded as running, but the backend has no such attempt: it went with the
    /// runner that ran it. Lost, so re-run while `spec.retries` allows.
    Lost,
}

/// Decide from what the server recorded of a step and what the backend found of
/// it. An attempt older than the recorded one is stale (a later one ran
/// elsewhere) and counts as not found.
fn decide(recorded: Option<&StepStatus>, found: Option<&DiscoveredStep>) -> Resume {
    let recorded_attempt = recorded.map_or(0, attempt_of);
    let found = found.filter(|f| f.retry >= recorded_attempt);
    match (recorded.map(|s| s.phase), found) {
        (Some(phase), _) if phase.is_finished() => Resume::Finished,
        (_, Some(_)) => Resume::Adopt,
        (Some(StepPhase::Running), None) => Resume::Lost,
        _ => Resume::Fresh,
    }
}

impl<B: Backend> Executor<'_, B> {
    /// Bring what was recorded and what the backend found into the run: finished
    /// steps keep their result, steps the backend has are marked Running again
    /// (with their recorded start) and reported, steps gone with their runner are
    /// lost. Returns the attempts to watch (or to count as lost).
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
        let mut found: BTreeMap<String, DiscoveredStep> = discovered
            .into_iter()
            .map(|f| (f.name.clone(), f))
            .collect();
        let mut resumed = Vec::new();
        for (i, step) in plan.spec.steps.iter().enumerate() {
            let rec = recorded.steps.iter().find(|s| s.name == step.name);
            let f = found.remove(&step.name);
            match (decide(rec, f.as_ref()), rec, f) {
                (Resume::Finished, Some(rec), f) => {
                    self.keep_finished(state, workflow, i, rec, f).await;
                }
                (Resume::Adopt, rec, Some(f)) => {
                    tracing::info!(workflow = %workflow.id, step = %f.name, state = ?f.state, "resuming a step found running or ended");
                    state.sched.adopt(i);
                    state.mark_resumed(i, recorded_start(rec, f.retry));
                    state.set_retry(i, f.retry);
                    self.name_attempt(state, workflow, i);
                    status.step_changed(&state.statuses[i]).await;
                    let attempt = Attempt {
                        request: None,
                        log_from: logs.resume_offset(&f.name),
                        deadline: state.deadline(plan, i),
                        lost: None,
                    };
                    resumed.push((i, attempt));
                }
                (Resume::Lost, Some(rec), _) => {
                    tracing::warn!(workflow = %workflow.id, step = %step.name, "a step recorded running is gone with its runner: lost");
                    state.sched.adopt(i);
                    state.mark_resumed(i, rec.start_time.as_ref());
                    state.set_retry(i, attempt_of(rec));
                    self.name_attempt(state, workflow, i);
                    let lost = BackendError::Lost {
                        step: step.name.clone(),
                        reason: reason::RUNNER_LOST,
                        message: "the runner running it stopped while it ran, and nothing of it is left to resume".into(),
                    };
                    let attempt = Attempt {
                        request: None,
                        log_from: logs.resume_offset(&step.name),
                        deadline: None,
                        lost: Some(lost),
                    };
                    resumed.push((i, attempt));
                }
                _ => {}
            }
        }
        for name in found.keys() {
            tracing::warn!(workflow = %workflow.id, step = %name, "discovered a step the Job does not have; left alone");
        }
        resumed
    }

    /// A step recorded as finished: its result stands and it is not reported again.
    /// Its outputs still reach the steps after it, if the backend still has them.
    async fn keep_finished(
        &self,
        state: &mut State,
        workflow: &Workflow,
        i: usize,
        recorded: &StepStatus,
        found: Option<DiscoveredStep>,
    ) {
        tracing::info!(workflow = %workflow.id, step = %recorded.name, phase = ?recorded.phase, "step finished before: its recorded result stands");
        state.sched.finish(i, recorded.phase);
        state.statuses[i] = recorded.clone();
        state.retries[i] = attempt_of(recorded);
        if !matches!(found.map(|f| f.state), Some(StepState::Exited { .. })) {
            return;
        }
        let limit = self.options.outputs_limit;
        let left = limit.saturating_sub(state.outputs_used);
        match self
            .backend
            .read_outputs(workflow, &recorded.name, limit.saturating_add(1))
            .await
        {
            Ok(raw) if raw.len() <= left => {
                state.outputs_used += raw.len();
                state.outputs[i] = outputs::parse(&raw).values;
            }
            // Its recorded status says what was wrong with them.
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(step = %recorded.name, %error, "read a finished step's outputs");
            }
        }
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
        let step = StepStatus {
            name: "a".into(),
            retries: Some(1),
            start_time: ago(5),
            ..Default::default()
        };
        assert!(recorded_start(Some(&step), 1).is_some());
        assert!(recorded_start(Some(&step), 0).is_none());
        assert!(recorded_start(None, 0).is_none());
    }

    #[test]
    fn what_a_resumed_run_does_with_each_step() {
        use Resume::*;
        use StepPhase::*;
        let rec = |phase, retries| StepStatus {
            name: "s".into(),
            phase,
            retries,
            ..Default::default()
        };
        let found = |retry| DiscoveredStep {
            name: "s".into(),
            state: StepState::Running,
            retry,
        };
        let cases = [
            (None, None, Fresh),
            (Some(rec(Pending, None)), None, Fresh),
            (None, Some(found(0)), Adopt),
            (Some(rec(Running, None)), Some(found(0)), Adopt),
            (Some(rec(Running, Some(1))), Some(found(2)), Adopt),
            (Some(rec(Running, None)), None, Lost),
            // A later attempt was recorded: the one found is stale.
            (Some(rec(Running, Some(1))), Some(found(0)), Lost),
            (Some(rec(Succeeded, None)), None, Finished),
            (Some(rec(Failed, None)), Some(found(0)), Finished),
            (Some(rec(Skipped, None)), None, Finished),
        ];
        for (recorded, found, want) in cases {
            assert_eq!(
                decide(recorded.as_ref(), found.as_ref()),
                want,
                "{recorded:?} / {found:?}"
            );
        }
    }
}
