//! Which status reports may wait for the next one, so that one write of the Job's
//! status carries two changes (each report is one write to the API server):
//!
//! - the Job's `Running` rides on its first step's report: between the two the
//!   executor only schedules, so nobody could see the difference;
//! - a step that ends while no other step runs may be the last one: it is held
//!   and rides on the Job's final report (with the outputs). If the run goes on
//!   instead, the next report posts it first, unchanged.
//!
//! Nothing is held across waiting: a start is reported before its step's pod or
//! process exists (a restarted runner resumes from what was reported), and a held
//! end goes out with the very next report. A runner that dies while holding an
//! end loses nothing: the step's pod (or state file) is still there to be
//! discovered and reported by the next run.

use std::collections::BTreeSet;

use crate::crd::job::{JobPhase, StepPhase, StepStatus};

/// One report to post: a step's change, the Job's phase (and reason), or both.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Part {
    pub step: Option<StepStatus>,
    pub phase: Option<(JobPhase, Option<String>)>,
}

/// What is held back, and which steps run (to know when an end may be the last).
#[derive(Debug, Default)]
pub(super) struct Coalesce {
    phase: Option<(JobPhase, Option<String>)>,
    step: Option<StepStatus>,
    running: BTreeSet<String>,
}

impl Coalesce {
    /// The Job's phase changed (not to an end: the end is the final report).
    /// Held for the next step's report.
    pub fn job(&mut self, phase: JobPhase, reason: Option<&str>) -> Vec<Part> {
        let mut out: Vec<Part> = self.step.take().map(Part::of_step).into_iter().collect();
        if phase == JobPhase::Running {
            self.phase = Some((phase, reason.map(str::to_owned)));
        } else {
            out.push(Part {
                step: None,
                phase: Some((phase, reason.map(str::to_owned))),
            });
        }
        out
    }

    /// A step changed: the reports to post now, in order.
    pub fn step(&mut self, status: StepStatus) -> Vec<Part> {
        let mut out: Vec<Part> = self.step.take().map(Part::of_step).into_iter().collect();
        if status.phase == StepPhase::Running {
            self.running.insert(status.name.clone());
        } else {
            self.running.remove(&status.name);
        }
        let phase = self.phase.take();
        if status.phase.is_finished() && self.running.is_empty() && phase.is_none() {
            self.step = Some(status);
        } else {
            out.push(Part {
                step: Some(status),
                phase,
            });
        }
        out
    }

    /// The run ended: the held step end, to ride on the final report (the sink
    /// posts it first instead if that report carries a step of its own). A held
    /// `Running` is dropped: the end supersedes it.
    pub fn finish(&mut self) -> Option<StepStatus> {
        self.phase = None;
        self.step.take()
    }
}

impl Part {
    pub fn of_step(step: StepStatus) -> Self {
        Self {
            step: Some(step),
            phase: None,
        }
    }

    /// Whether this part only restates what the claim read as recorded
    /// (`steps`; `started`: the Job has a start time, so it is Running): a
    /// resumed run re-reports each step it adopts, and posting what is already
    /// written would cost the server a read to find nothing to write.
    pub fn restates(&self, steps: &[StepStatus], started: bool) -> bool {
        let phase_recorded = match &self.phase {
            None => true,
            Some((phase, reason)) => *phase == JobPhase::Running && reason.is_none() && started,
        };
        let step_recorded = match &self.step {
            None => true,
            Some(step) => steps.contains(step),
        };
        phase_recorded && step_recorded && (self.step.is_some() || self.phase.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, phase: StepPhase) -> StepStatus {
        StepStatus {
            name: name.into(),
            phase,
            ..Default::default()
        }
    }

    fn running() -> Option<(JobPhase, Option<String>)> {
        Some((JobPhase::Running, None))
    }

    #[test]
    fn only_what_the_claim_recorded_is_a_restatement() {
        let mut started = step("a", StepPhase::Running);
        started.pod_name = Some("j-a-1".into());
        let recorded = [started.clone(), step("b", StepPhase::Pending)];
        let resumed = Part {
            step: Some(started.clone()),
            phase: running(),
        };
        assert!(resumed.restates(&recorded, true));
        assert!(Part::of_step(started.clone()).restates(&recorded, false));
        // The Job has no start recorded: its Running is news.
        assert!(!resumed.restates(&recorded, false));
        // Any field that differs is news: a new attempt's pod, an end.
        let mut other_pod = started.clone();
        other_pod.pod_name = Some("j-a-2".into());
        assert!(!Part::of_step(other_pod).restates(&recorded, true));
        assert!(!Part::of_step(step("a", StepPhase::Succeeded)).restates(&recorded, true));
        assert!(!Part::of_step(step("c", StepPhase::Running)).restates(&recorded, true));
        // A phase other than Running, or with a reason, is never assumed written.
        let failing = Part {
            step: None,
            phase: Some((JobPhase::Failed, None)),
        };
        assert!(!failing.restates(&recorded, true));
        let with_reason = Part {
            step: None,
            phase: Some((JobPhase::Running, Some("Why".into()))),
        };
        assert!(!with_reason.restates(&recorded, true));
        assert!(
            !Part::default().restates(&recorded, true),
            "an empty part is no report to skip"
        );
    }

    #[test]
    fn a_one_step_job_takes_two_reports_and_the_final_one() {
        let mut c = Coalesce::default();
        assert!(c.job(JobPhase::Running, None).is_empty());
        let started = c.step(step("a", StepPhase::Running));
        assert_eq!(
            started,
            vec![Part {
                step: Some(step("a", StepPhase::Running)),
                phase: running(),
            }]
        );
        assert!(c.step(step("a", StepPhase::Succeeded)).is_empty());
        assert_eq!(c.finish(), Some(step("a", StepPhase::Succeeded)));
        assert_eq!(c.finish(), None, "handed over once");
    }

    #[test]
    fn a_held_end_goes_first_when_the_run_goes_on() {
        let mut c = Coalesce::default();
        c.job(JobPhase::Running, None);
        c.step(step("a", StepPhase::Running));
        assert!(c.step(step("a", StepPhase::Succeeded)).is_empty());
        let next = c.step(step("b", StepPhase::Running));
        assert_eq!(
            next,
            vec![
                Part::of_step(step("a", StepPhase::Succeeded)),
                Part::of_step(step("b", StepPhase::Running)),
            ]
        );
    }

    #[test]
    fn an_end_while_others_run_is_posted_at_once() {
        let mut c = Coalesce::default();
        c.step(step("a", StepPhase::Running));
        c.step(step("b", StepPhase::Running));
        assert_eq!(
            c.step(step("a", StepPhase::Failed)),
            vec![Part::of_step(step("a", StepPhase::Failed))]
        );
        assert!(c.step(step("b", StepPhase::Succeeded)).is_empty());
        assert_eq!(c.finish(), Some(step("b", StepPhase::Succeeded)));
    }

    #[test]
    fn a_skipped_first_step_carries_the_running_phase() {
        let mut c = Coalesce::default();
        c.job(JobPhase::Running, None);
        assert_eq!(
            c.step(step("a", StepPhase::Skipped)),
            vec![Part {
                step: Some(step("a", StepPhase::Skipped)),
                phase: running(),
            }]
        );
        assert!(c.step(step("b", StepPhase::Skipped)).is_empty());
    }

    #[test]
    fn a_run_that_ends_before_any_step_drops_the_held_running() {
        let mut c = Coalesce::default();
        c.job(JobPhase::Running, None);
        assert_eq!(c.finish(), None);
        assert!(c.step(step("a", StepPhase::Running))[0].phase.is_none());
    }

    #[test]
    fn another_phase_change_is_posted_after_a_held_end() {
        let mut c = Coalesce::default();
        c.step(step("a", StepPhase::Running));
        c.step(step("a", StepPhase::Succeeded));
        assert_eq!(
            c.job(JobPhase::Assigned, Some("Waiting")),
            vec![
                Part::of_step(step("a", StepPhase::Succeeded)),
                Part {
                    step: None,
                    phase: Some((JobPhase::Assigned, Some("Waiting".into()))),
                },
            ]
        );
    }
}
