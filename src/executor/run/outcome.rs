//! How a run ends: each step's outcome from how its process ended, then the
//! Job's phase and the report.

use crate::crd::reasons::reason;
use std::time::Duration;

use super::{Executor, How, Plan, Start, State, StepEnd, StopCause, services};
use crate::archive::Packed;
use crate::backend::{Backend, BackendError, StepExit};
use crate::crd::artifacts::StepArtifacts;
use crate::crd::duration;
use crate::crd::job::{JobPhase, StepPhase, StepStatus};
use crate::executor::{JobReport, StatusSink, StepReport, outputs};

impl<B: Backend> Executor<'_, B> {
    /// Steps never started end Skipped (the Job timed out) or Cancelled; then the
    /// Job's phase is reported and the report built.
    pub(super) async fn conclude<S: StatusSink>(
        &self,
        mut state: State,
        plan: &Plan<'_>,
        cause: Option<StopCause>,
        status: &S,
        job_started: Start,
    ) -> JobReport {
        for i in state.sched.pending() {
            let (phase, reason, message) = match cause {
                Some(StopCause::JobTimeout) => (
                    StepPhase::Skipped,
                    "JobTimeout",
                    "the Job's timeout passed before it could start",
                ),
                _ => (
                    StepPhase::Cancelled,
                    reason::CANCELLED,
                    "the Job was cancelled before it started",
                ),
            };
            state.mark_ended(i, phase, Some(reason), Some(message.to_owned()));
            status.step_changed(&state.statuses[i]).await;
        }

        let ended = Ended::of(&state.statuses);
        let (phase, reason, message) = match cause {
            Some(StopCause::Cancelled) => (
                JobPhase::Cancelled,
                Some(reason::CANCELLED),
                Some("the Job was cancelled".to_owned()),
            ),
            Some(StopCause::JobTimeout) => (
                JobPhase::Failed,
                Some(reason::TIMEOUT),
                Some(format!(
                    "the Job exceeded its timeout of {}",
                    plan.job_timeout.map(duration::format).unwrap_or_default()
                )),
            ),
            None if ended.failed.is_empty() && ended.allowed.is_empty() => {
                (JobPhase::Succeeded, None, None)
            }
            None if ended.failed.is_empty() => (
                JobPhase::Succeeded,
                Some(reason::SUCCEEDED),
                Some(ended.message()),
            ),
            None => (
                JobPhase::Failed,
                Some(reason::STEP_FAILED),
                Some(ended.message()),
            ),
        };
        status.job_changed(phase, reason).await;

        let merged = outputs::merge(
            state
                .sched
                .dag()
                .order()
                .iter()
                .map(|&i| state.outputs[i].as_slice()),
        );
        let steps = state
            .statuses
            .into_iter()
            .zip(state.durations)
            .zip(state.outputs)
            .map(|((status, duration), outputs)| StepReport {
                status,
                duration,
                outputs,
            })
            .collect();
        JobReport {
            phase,
            reason: reason.map(str::to_owned),
            message,
            steps,
            outputs: merged,
            duration: job_started.elapsed(),
        }
    }

    /// Turn how a step ended into its phase, reason, exit code and outputs.
    pub(super) fn record(
        &self,
        state: &mut State,
        plan: &Plan<'_>,
        i: usize,
        end: StepEnd,
        cause: Option<StopCause>,
    ) {
        let (exit, how, raw_outputs, changes) = match end {
            StepEnd::StartFailed(error) => {
                state.mark_ended(
                    i,
                    StepPhase::Failed,
                    Some(error.reason()),
                    Some(error.to_string()),
                );
                return;
            }
            StepEnd::Ended {
                exit,
                how,
                outputs,
                changes,
                ..
            } => (exit, how, outputs, changes),
        };
        let exit = match exit {
            Ok(exit) => exit,
            Err(error) => {
                state.mark_ended(
                    i,
                    StepPhase::Failed,
                    Some(error.reason()),
                    Some(error.to_string()),
                );
                return;
            }
        };
        let exit_code = exit.code;
        state.statuses[i].exit_code = Some(exit_code);

        // Outputs count whatever the exit code: an onFailure step may want them.
        let mut output_failure: Option<(&str, String)> = None;
        match raw_outputs {
            Some(Ok(raw)) => {
                let left = self
                    .options
                    .outputs_limit
                    .saturating_sub(state.outputs_used);
                if raw.len() > left {
                    output_failure = Some((
                        "OutputsTooLarge",
                        format!(
                            "$BATON_OUTPUT holds more than the {left} bytes left of the Job's {} byte limit; its outputs are ignored",
                            self.options.outputs_limit
                        ),
                    ));
                } else {
                    state.outputs_used += raw.len();
                    let parsed = outputs::parse(&raw);
                    state.outputs[i] = parsed.values;
                    if !parsed.problems.is_empty() {
                        let lines: Vec<String> =
                            parsed.problems.iter().map(ToString::to_string).collect();
                        output_failure = Some((
                            "InvalidOutput",
                            format!("$BATON_OUTPUT: {}", lines.join("; ")),
                        ));
                    }
                }
            }
            Some(Err(error)) => output_failure = Some(("InvalidOutput", error.to_string())),
            None => {}
        }
        if let Some((_, message)) = &output_failure {
            tracing::warn!(step = %plan.spec.steps[i].name, %message, "step outputs");
        }
        if let Some(failure) = record_changes(state, i, changes) {
            tracing::warn!(step = %plan.spec.steps[i].name, message = %failure.1, "step changes");
            output_failure = output_failure.or(Some(failure));
        }

        if let Some((phase, reason, message)) =
            services::service_end(state, i, how, cause, exit_code)
        {
            state.mark_ended(i, phase, Some(reason), Some(message));
            return;
        }
        let timeout_text = |t: Option<Duration>| t.map(duration::format).unwrap_or_default();
        let (phase, reason, message) = match (how, cause) {
            (How::TimedOut, _) => (
                StepPhase::Failed,
                Some(reason::DEADLINE_EXCEEDED),
                Some(format!(
                    "exceeded its timeout of {}",
                    timeout_text(plan.step_timeouts[i])
                )),
            ),
            (How::Stopped, Some(StopCause::JobTimeout)) => (
                StepPhase::Failed,
                Some(reason::DEADLINE_EXCEEDED),
                Some(format!(
                    "the Job exceeded its timeout of {}",
                    timeout_text(plan.job_timeout)
                )),
            ),
            (How::Stopped, _) => (
                StepPhase::Cancelled,
                Some(reason::CANCELLED),
                Some("the Job was cancelled".to_owned()),
            ),
            (How::Exited, _) if exit_code != 0 => {
                let (reason, mut message) = failed_exit(exit);
                if let Some((_, problem)) = &output_failure {
                    message = format!("{message}; {problem}");
                }
                (StepPhase::Failed, Some(reason), Some(message))
            }
            (How::Exited, _) => match output_failure {
                Some((reason, problem)) => (StepPhase::Failed, Some(reason), Some(problem)),
                None => (StepPhase::Succeeded, Some(reason::COMPLETED), None),
            },
        };
        state.mark_ended(i, phase, reason, message);
    }
}

/// Put the archive of what step `i` changed in its status; a failure to make
/// it, as (reason, message): the step asked for its changes and lost them.
fn record_changes(
    state: &mut State,
    i: usize,
    changes: Option<Box<Result<Option<Packed>, BackendError>>>,
) -> Option<(&'static str, String)> {
    match *changes? {
        Ok(packed) => {
            let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
            state.statuses[i].artifacts = packed.map(|p| StepArtifacts {
                digest: p.digest,
                size: i64::try_from(p.size).unwrap_or(i64::MAX),
                added: count(p.added),
                modified: count(p.modified),
                deleted: count(p.deleted),
            });
            None
        }
        Err(error) => Some((reason::COLLECT_FAILED, error.to_string())),
    }
}

/// The reason and message of a step that exited non-zero on its own.
fn failed_exit(exit: StepExit) -> (&'static str, String) {
    let code = exit.code;
    match exit.reason {
        Some(reason::OOM_KILLED) => (
            reason::OOM_KILLED,
            format!("killed for going over its memory limit (exit code {code})"),
        ),
        Some(reason::CONTAINER_CANNOT_RUN) => (
            reason::CONTAINER_CANNOT_RUN,
            format!("its command could not be run (exit code {code})"),
        ),
        Some(other) => (other, format!("exited with code {code}")),
        None => (reason::ERROR, format!("exited with code {code}")),
    }
}

/// The steps that ended Failed, as the Job's message names them.
#[derive(Debug, Default, PartialEq)]
struct Ended {
    /// `name (reason)` of each failure that fails the Job.
    failed: Vec<String>,
    /// Names of the failures `allowFailure` let pass.
    allowed: Vec<String>,
}

impl Ended {
    fn of(statuses: &[StepStatus]) -> Self {
        let mut ended = Self::default();
        for s in statuses.iter().filter(|s| s.phase == StepPhase::Failed) {
            if s.is_allowed_failure() {
                ended.allowed.push(s.name.clone());
            } else {
                ended.failed.push(match &s.reason {
                    Some(reason) => format!("{} ({reason})", s.name),
                    None => s.name.clone(),
                });
            }
        }
        ended
    }

    /// `build (OOMKilled) failed; lint failed (allowed)`.
    fn message(&self) -> String {
        let mut parts = Vec::new();
        if !self.failed.is_empty() {
            parts.push(format!("{} failed", self.failed.join(", ")));
        }
        if !self.allowed.is_empty() {
            parts.push(format!("{} failed (allowed)", self.allowed.join(", ")));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, phase: StepPhase, reason: Option<&str>, allowed: bool) -> StepStatus {
        StepStatus {
            name: name.to_owned(),
            phase,
            reason: reason.map(str::to_owned),
            failure_allowed: allowed.then_some(true),
            ..Default::default()
        }
    }

    #[test]
    fn a_failed_exit_is_named_by_what_the_backend_knows() {
        let exit = |code, reason| StepExit { code, reason };
        let cases = [
            (exit(1, None), "Error", "exited with code 1"),
            (
                exit(137, Some("OOMKilled")),
                "OOMKilled",
                "killed for going over its memory limit (exit code 137)",
            ),
            (
                exit(128, Some("ContainerCannotRun")),
                "ContainerCannotRun",
                "its command could not be run (exit code 128)",
            ),
        ];
        for (exit, reason, message) in cases {
            assert_eq!(failed_exit(exit), (reason, message.to_owned()), "{exit:?}");
        }
    }

    #[test]
    fn the_job_message_names_failures_and_allowed_ones() {
        use StepPhase::{Failed, Skipped, Succeeded};
        let cases = [
            (vec![step("a", Succeeded, None, false)], ""),
            (
                vec![
                    step("lint", Failed, Some("Error"), true),
                    step("build", Succeeded, None, false),
                ],
                "lint failed (allowed)",
            ),
            (
                vec![
                    step("lint", Failed, Some("Error"), true),
                    step("build", Failed, Some("OOMKilled"), false),
                    step("test", Failed, None, false),
                    step("deploy", Skipped, Some("DependencyFailed"), false),
                ],
                "build (OOMKilled), test failed; lint failed (allowed)",
            ),
        ];
        for (statuses, want) in cases {
            assert_eq!(Ended::of(&statuses).message(), want, "{statuses:?}");
        }
    }
}
