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

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::crd::job::{Job, JobSpec, Step};

/// Cuts a finished Job's spec down to what is read after the end (module doc);
/// any other Job is left whole.
pub fn retain(job: &mut Job) {
    let finished = job.status.as_ref().and_then(|s| s.phase);
    if !finished.unwrap_or_default().is_finished() {
        return;
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
            assert_eq!((kept.metadata, kept.status), (whole.metadata, whole.status));
        }
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
