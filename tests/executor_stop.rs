//! The executor stopping steps over the local backend: step and Job timeouts,
//! SIGTERM then SIGKILL after the grace period, cancellation — and no process of
//! a stopped step left behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/executor.rs"]
mod support;

use std::time::Duration;

use baton::backend::{LocalBackend, Workflow};
use baton::crd::job::{JobPhase, StepPhase};
use baton::executor::{CancellationToken, Executor, ExecutorOptions};
use support::*;

#[tokio::test]
async fn step_timeout_kills_the_whole_process_group() {
    let root = Root::new("timeout");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec = spec(
        r#"
steps:
  - name: hang
    image: busybox:1.36
    timeout: 300ms
    script: |
      sleep 1000 &
      echo waiting
      sleep 1000
  - name: after
    image: busybox:1.36
    dependsOn: [hang]
    when: onFailure
    script: echo after-timeout
"#,
    );
    let rec = Recorder::new();
    let started = std::time::Instant::now();
    let report = run_with(&backend, &spec, options(), &rec).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        phase_and_reason(&report, "hang"),
        (StepPhase::Failed, Some("DeadlineExceeded".into()))
    );
    assert_eq!(
        step(&report, "hang").exit_code,
        Some(143),
        "ended by SIGTERM"
    );
    assert_eq!(rec.log("hang"), "waiting\n");
    assert_eq!(rec.log("after"), "after-timeout\n");
    let pgid = backend
        .process_group(&Workflow::new("job"), "hang")
        .unwrap();
    assert_group_gone(pgid).await;
}

#[tokio::test]
async fn sigterm_ignored_means_sigkill_after_the_grace_period() {
    let root = Root::new("grace");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec = spec(
        r#"
steps:
  - name: stubborn
    image: busybox:1.36
    timeout: 200ms
    script: |
      trap '' TERM
      sleep 1000 &
      sleep 1000
"#,
    );
    let rec = Recorder::new();
    let grace = Duration::from_millis(400);
    let started = std::time::Instant::now();
    let report = run_with(
        &backend,
        &spec,
        ExecutorOptions { grace, ..options() },
        &rec,
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "SIGKILL came before the grace period"
    );
    assert_eq!(
        step(&report, "stubborn").exit_code,
        Some(137),
        "ended by SIGKILL"
    );
    assert_eq!(
        step(&report, "stubborn").reason.as_deref(),
        Some("DeadlineExceeded")
    );
    assert_group_gone(
        backend
            .process_group(&Workflow::new("job"), "stubborn")
            .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn job_timeout_fails_running_steps_and_skips_the_rest() {
    let root = Root::new("jobtimeout");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec = spec(
        r#"
timeout: 300ms
steps:
  - name: slow
    image: busybox:1.36
    command: [sleep, "1000"]
  - name: next
    image: busybox:1.36
    dependsOn: [slow]
    when: always
    command: ["true"]
"#,
    );
    let rec = Recorder::new();
    let report = run_with(&backend, &spec, options(), &rec).await;
    assert_eq!(report.phase, JobPhase::Failed);
    assert_eq!(report.reason.as_deref(), Some("Timeout"));
    assert_eq!(
        phase_and_reason(&report, "slow"),
        (StepPhase::Failed, Some("DeadlineExceeded".into()))
    );
    assert_eq!(
        phase_and_reason(&report, "next"),
        (StepPhase::Skipped, Some("JobTimeout".into()))
    );
    assert_group_gone(
        backend
            .process_group(&Workflow::new("job"), "slow")
            .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn cancel_stops_running_steps_and_cancels_pending_ones() {
    let root = Root::new("cancel");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec = spec(
        r#"
steps:
  - name: long
    image: busybox:1.36
    script: |
      sleep 1000 & sleep 1000
  - name: later
    image: busybox:1.36
    dependsOn: [long]
    when: always
    command: ["true"]
"#,
    );
    let rec = Recorder::new();
    let cancel = CancellationToken::new();
    let executor = Executor::new(&backend, options());
    let workflow = Workflow::new("job");
    let run = executor.run(&workflow, &spec, &rec, &rec, &cancel);
    let cancel_when_running = async {
        rec.wait_running("long").await;
        let pgid = backend.process_group(&workflow, "long").unwrap();
        assert!(group_alive(pgid), "the check sees a live group");
        cancel.cancel();
    };
    let (report, ()) =
        tokio::time::timeout(BOUND, async { tokio::join!(run, cancel_when_running) })
            .await
            .expect("cancelled job ended in time");
    let report = report.unwrap();
    assert_eq!(report.phase, JobPhase::Cancelled);
    assert_eq!(
        phase_and_reason(&report, "long"),
        (StepPhase::Cancelled, Some("Cancelled".into()))
    );
    assert_eq!(
        phase_and_reason(&report, "later"),
        (StepPhase::Cancelled, Some("Cancelled".into()))
    );
    assert_group_gone(backend.process_group(&workflow, "long").unwrap()).await;
}
