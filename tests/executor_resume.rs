//! A run that resumes a Job (a runner restarted, or took the Job over) with what the
//! server recorded of it: timeouts count from the recorded start times, so they
//! bound real time however often the Job changes hands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/executor.rs"]
mod support;

use std::time::Duration;

use baton::backend::{Backend, LocalBackend, StepRequest, Workflow};
use baton::crd::job::{JobPhase, StepPhase, StepStatus};
use baton::executor::Recorded;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use support::*;
use tokio::time::Instant;

fn ago(secs: i64) -> Time {
    Time(
        Timestamp::now()
            .checked_sub(SignedDuration::from_secs(secs))
            .unwrap(),
    )
}

fn running_since(step: &str, start: &Time) -> StepStatus {
    StepStatus {
        name: step.into(),
        phase: StepPhase::Running,
        start_time: Some(start.clone()),
        ..Default::default()
    }
}

/// Start `spec`'s first step on the backend as an earlier run did.
async fn started_earlier(backend: &LocalBackend, spec: &baton::crd::JobSpec) {
    let workflow = Workflow::new("job");
    backend.setup_workflow(&workflow).await.unwrap();
    let request = StepRequest::new(spec.steps[0].clone(), Vec::new());
    backend.start_step(&workflow, &request).await.unwrap();
}

#[tokio::test]
async fn a_resumed_step_started_longer_ago_than_its_timeout_times_out_at_once() {
    let root = Root::new("resume-step-timeout");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec = spec("steps:\n  - {name: slow, image: i, timeout: 10s, script: 'sleep 30'}\n");
    started_earlier(&backend, &spec).await;
    let start = ago(3600);
    let rec = Recorder::resuming(Recorded {
        start_time: Some(start.clone()),
        steps: vec![running_since("slow", &start)],
    });
    let began = Instant::now();
    let report = run_with(&backend, &spec, options(), &rec).await;
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "timed out after {:?}: a fresh 10s instead of at once",
        began.elapsed()
    );
    assert_eq!(
        phase_and_reason(&report, "slow"),
        (StepPhase::Failed, Some("DeadlineExceeded".into()))
    );
    assert_eq!(
        step(&report, "slow").start_time,
        Some(start),
        "the recorded start stands"
    );
}

#[tokio::test]
async fn a_resumed_step_gets_only_the_rest_of_its_timeout() {
    let root = Root::new("resume-step-rest");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec = spec("steps:\n  - {name: slow, image: i, timeout: 8s, script: 'sleep 30'}\n");
    started_earlier(&backend, &spec).await;
    let rec = Recorder::resuming(Recorded {
        start_time: Some(ago(5)),
        steps: vec![running_since("slow", &ago(5))],
    });
    let began = Instant::now();
    let report = run_with(&backend, &spec, options(), &rec).await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "timed out after {took:?}; 3s of its 8s were left"
    );
    assert_eq!(
        phase_and_reason(&report, "slow"),
        (StepPhase::Failed, Some("DeadlineExceeded".into()))
    );
}

#[tokio::test]
async fn a_resumed_job_past_its_timeout_starts_nothing_and_fails_at_once() {
    let root = Root::new("resume-job-timeout");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec =
        spec("timeout: 10s\nsteps:\n  - {name: first, image: i, script: 'echo ran; sleep 30'}\n");
    let rec = Recorder::resuming(Recorded {
        start_time: Some(ago(3600)),
        steps: Vec::new(),
    });
    let began = Instant::now();
    let report = run_with(&backend, &spec, options(), &rec).await;
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "the Job timed out after {:?}: a fresh 10s instead of at once",
        began.elapsed()
    );
    assert_eq!(report.phase, JobPhase::Failed);
    assert_eq!(report.reason.as_deref(), Some("Timeout"));
    assert_eq!(
        phase_and_reason(&report, "first"),
        (StepPhase::Skipped, Some("JobTimeout".into()))
    );
    assert_eq!(rec.log("first"), "", "never started");
}
