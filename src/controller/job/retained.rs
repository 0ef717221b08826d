//! What the controller's Job cache keeps of a finished Job. The cache holds
//! every Job until it is deleted and most of them are finished, so their whole
//! specs (steps' scripts, env, pod templates, selectors) were what grew the
//! controller with each retained Job (issue 14; `cargo bench --bench
//! cache_footprint` prints the figures).
//!
//! After the end the controller and the runner API read of a Job's spec only:
//! `cancel` (settling the status), the TTL, the step names (log routes, the log
//! archive), what decides whether it has a workspace claim to remove
//! (`workspace`, `content`, steps' `collect` and `artifacts`), `content` (the
//! upload sweep keeps what a Job names), and whether it spawned its own runner
//! (`runnerSelector` or `runnerName` set). The rest goes. Status writes made from
//! this form are safe: a write to the status subresource ignores the spec. A
//! claim, the one reader of a whole spec, reads a Job the cache shows finished
//! from the API server (and is refused: a finished Job is not claimed).
//!
//! Of its status, the conditions go too (a third of what a finished Job costs:
//! five conditions of four strings each), but only once the status is settled
//! ([`job_status::settle`] would write nothing): the controller's reconcile of a
//! finished Job writes nothing else, and a runner's writes are refused once a
//! Job ends, so nothing is ever written from a status without its conditions
//! ([`conditions_cut`]). A later change (a `spec.cancel` after the end moves the
//! generation) arrives whole through the watch, unsettled, and is kept whole
//! until its settling write comes back. The dashboard reads conditions of
//! queued Jobs only; `kubectl` and kstatus read the API server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;

use crate::crd::job::{Job, JobSpec, Step};
use crate::crd::job_status::{self, Transition};

/// Cuts a finished Job's spec down to what is read after the end, and a settled
/// one's conditions (module doc); any other Job is left whole.
pub fn retain(job: &mut Job) {
    if !finished(job) {
        return;
    }
    if settled(job)
        && let Some(status) = job.status.as_mut()
    {
        status.conditions = Vec::new();
        status.conditions_cut = true;
    }
    let spec = std::mem::take(&mut job.spec);
    job.spec = JobSpec {
        // Whether one is set is what is read (`spawns_runner`), not its labels.
        runner_selector: spec.runner_selector.map(|_| LabelSelector::default()),
        runner_name: spec.runner_name,
        steps: spec.steps.into_iter().map(step).collect(),
        workspace: spec.workspace,
        content: spec.content,
        ttl_seconds_after_finished: spec.ttl_seconds_after_finished,
        cancel: spec.cancel,
        ..JobSpec::default()
    };
}

/// Whether `job` is the cache's copy of a finished Job whose conditions were
/// cut: nothing may be written from it. (A whole Job without conditions, one
/// never settled, is not: settling it is what gives it them.)
pub fn conditions_cut(job: &Job) -> bool {
    job.status.as_ref().is_some_and(|s| s.conditions_cut)
}

fn finished(job: &Job) -> bool {
    let phase = job.status.as_ref().and_then(|s| s.phase);
    phase.unwrap_or_default().is_finished()
}

/// Settling the status would write nothing (the time only stamps a change).
fn settled(job: &Job) -> bool {
    let settled = job_status::next(job, Transition::Settle, Timestamp::now());
    job.status.as_ref() == Some(&settled)
}

fn step(s: Step) -> Step {
    Step {
        name: s.name,
        collect: s.collect,
        artifacts: s.artifacts,
        ..Step::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::backend::kubernetes::JobTarget;
    use crate::crd::job::{JobPhase, JobStatus};

    /// A Job with every spec field a finished Job no longer needs set.
    fn job(phase: JobPhase) -> Job {
        let mut j: Job = serde_json::from_value(serde_json::json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "Job",
            "metadata": {"name": "j", "namespace": "ns", "uid": "u"},
            "spec": {
                "runnerSelector": {"matchLabels": {"pool": "linux"}},
                "imagePullSecrets": [{"name": "pull"}],
                "podTemplate": {"labels": {"team": "a"}, "annotations": {"x": "y"}},
                "timeout": "1h", "retries": 2, "priority": 5,
                "ttlSecondsAfterFinished": 60, "cancel": false,
                "content": {"digest": format!("sha256:{}", "a".repeat(64)), "size": 3},
                "steps": [
                    {"name": "build", "image": "rust:1", "script": "cargo build",
                     "env": [{"name": "A", "value": "b"}], "artifacts": ["target/*.tar"]},
                    {"name": "test", "image": "rust:1", "command": ["cargo", "test"],
                     "dependsOn": ["build"]}
                ]
            }
        }))
        .unwrap();
        j.status = Some(JobStatus {
            phase: Some(phase),
            ..Default::default()
        });
        j
    }

    fn retained(whole: &Job) -> Job {
        let mut kept = whole.clone();
        retain(&mut kept);
        kept
    }

    #[test]
    fn a_finished_job_keeps_what_is_read_after_the_end_and_nothing_else() {
        for phase in [JobPhase::Succeeded, JobPhase::Failed, JobPhase::Cancelled] {
            let whole = job(phase);
            let kept = retained(&whole);
            let s = &kept.spec;
            assert_eq!(s.runner_selector, Some(LabelSelector::default()));
            assert_eq!(s.spawns_runner(), whole.spec.spawns_runner());
            assert_eq!(s.ttl_seconds_after_finished, Some(60));
            assert_eq!(s.cancel, Some(false));
            assert_eq!(s.content, whole.spec.content);
            let names: Vec<_> = s.steps.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["build", "test"]);
            assert_eq!(s.steps[0].artifacts, whole.spec.steps[0].artifacts);
            assert_eq!(
                JobTarget::for_job(&kept).map(|t| t.workspace.is_some()),
                JobTarget::for_job(&whole).map(|t| t.workspace.is_some()),
                "the workspace claim is found as before"
            );
            // What goes: the selector's labels, the steps' bodies, the rest.
            assert_eq!(s.steps[0].script, None);
            assert_eq!(s.steps[0].env, None);
            assert_eq!(s.steps[1].depends_on, None);
            assert_eq!(s.steps[1].image, "");
            assert_eq!(
                (s.pod_template.clone(), s.image_pull_secrets.clone()),
                (None, None)
            );
            assert_eq!(
                (s.timeout.clone(), s.retries, s.priority),
                (None, None, None)
            );
            // Never settled (no conditions yet): its status is kept whole.
            assert_eq!((kept.metadata, kept.status), (whole.metadata, whole.status));
        }
    }

    /// `job(phase)` as the writer that ended it left it: settled.
    fn settled(phase: JobPhase) -> Job {
        let mut j = job(phase);
        j.metadata.generation = Some(1);
        j.status = Some(job_status::next(&j, Transition::Settle, Timestamp::now()));
        j
    }

    #[test]
    fn a_settled_finished_job_loses_its_conditions_and_nothing_else_of_its_status() {
        for phase in [JobPhase::Succeeded, JobPhase::Failed, JobPhase::Cancelled] {
            let whole = settled(phase);
            assert!(!whole.status.as_ref().unwrap().conditions.is_empty());
            assert!(!conditions_cut(&whole), "a whole Job is not cut");
            let kept = retained(&whole);
            assert!(conditions_cut(&kept), "{phase:?}");
            let mut expected = whole.status.clone().unwrap();
            expected.conditions.clear();
            expected.conditions_cut = true;
            assert_eq!(kept.status, Some(expected), "{phase:?}");
            assert_eq!(kept.metadata, whole.metadata);
        }
    }

    #[test]
    fn an_unsettled_finished_job_keeps_its_conditions_until_its_settling_write() {
        // A `spec.cancel` after the end moved the generation: the reconcile
        // still has observedGeneration to write, from the whole status.
        let mut moved = settled(JobPhase::Succeeded);
        moved.metadata.generation = Some(2);
        let kept = retained(&moved);
        assert_eq!(kept.status, moved.status);
        assert!(!conditions_cut(&kept));
    }

    #[test]
    fn a_job_without_conditions_is_not_taken_for_a_cut_one() {
        for phase in [JobPhase::Queued, JobPhase::Running, JobPhase::Succeeded] {
            let j = retained(&job(phase));
            assert!(j.status.as_ref().unwrap().conditions.is_empty());
            assert!(!conditions_cut(&j), "{phase:?}: never settled, not cut");
        }
    }

    #[test]
    fn the_cut_mark_never_leaves_the_process() {
        let kept = retained(&settled(JobPhase::Failed));
        let wire = serde_json::to_value(&kept).unwrap();
        assert!(!wire.to_string().contains("conditionsCut"), "{wire}");
        let back: Job = serde_json::from_value(wire).unwrap();
        assert!(!conditions_cut(&back));
    }

    #[test]
    fn a_job_not_yet_finished_is_kept_whole() {
        for phase in [JobPhase::Queued, JobPhase::Assigned, JobPhase::Running] {
            let whole = job(phase);
            assert_eq!(retained(&whole), whole);
        }
        let mut new = job(JobPhase::Queued);
        new.status = None;
        assert_eq!(
            retained(&new),
            new,
            "a Job with no status yet is new, not finished"
        );
    }

    #[test]
    fn a_job_that_spawned_its_runner_still_says_so() {
        let mut j = job(JobPhase::Succeeded);
        j.spec.runner_selector = None;
        assert!(j.spec.spawns_runner());
        retain(&mut j);
        assert!(j.spec.spawns_runner());
    }
}
