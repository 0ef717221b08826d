//! A runner on the local backend that dies and restarts with its state directory:
//! finished steps keep their recorded result, a step that was running died with
//! the runner (its whole process group) and counts as lost (`RunnerLost`), re-run
//! while `spec.retries` allows, its log continued after a line saying why.
//!
//! The first runner runs on a runtime of its own, shut down mid-run: its tasks (the
//! executor, each step's supervisor reading the log pipe) vanish without running
//! any clean-up, as in a crash. The backend value is leaked for the same reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/executor.rs"]
mod support;

use std::time::Duration;

use baton::backend::{LocalBackend, Workflow};
use baton::crd::JobSpec;
use baton::crd::job::{JobPhase, StepPhase};
use baton::executor::{CancellationToken, Executor, JobReport};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use support::*;

const SPEC: &str = r#"
steps:
  - name: done
    image: busybox:1.36
    script: |
      echo run >> "$BATON_WORKSPACE/done-runs"
      echo version=42 >> "$BATON_OUTPUT"
      echo built
  - name: long
    image: busybox:1.36
    dependsOn: [done]
    script: |
      echo run >> "$BATON_WORKSPACE/long-runs"
      n=$(wc -l < "$BATON_WORKSPACE/long-runs")
      echo "attempt $n got $BATON_OUTPUT_VERSION"
      if [ "$n" -eq 1 ]; then exec sleep 30; fi
"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Run `spec` until `long`'s first attempt ran and said so, then "crash". Returns
/// what the first runner's server would hold, and the orphaned step's group.
fn first_runner(root: &Root, spec: &JobSpec) -> (Recorder, i32) {
    let rt = runtime();
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[])).resumable();
    let rec = Recorder::new();
    rt.block_on(async {
        let (cancel, workflow) = (CancellationToken::new(), Workflow::new("job"));
        let executor = Executor::new(&backend, options());
        let run = executor.run(&workflow, spec, &rec, &rec, &cancel);
        let started = async {
            while !rec.log("long").contains("attempt 1") {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(BOUND, async {
            tokio::select! {
                _ = run => panic!("long should still be running"),
                () = started => {}
            }
        })
        .await
        .expect("long started in time");
    });
    let pgid = backend
        .process_group(&Workflow::new("job"), "long")
        .expect("long runs");
    rt.shutdown_timeout(Duration::from_secs(5));
    std::mem::forget(backend);
    (rec, pgid)
}

/// A new runner process over the same state: a new backend and executor.
fn second_runner(root: &Root, spec: &JobSpec, first: &Recorder) -> (JobReport, Recorder) {
    let rt = runtime();
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[])).resumable();
    let rec = Recorder::taking_over(first, Some(Time(Timestamp::now())));
    let report = rt.block_on(async {
        let (cancel, workflow) = (CancellationToken::new(), Workflow::new("job"));
        let executor = Executor::new(&backend, options());
        let run = executor.run(&workflow, spec, &rec, &rec, &cancel);
        tokio::time::timeout(BOUND, run)
            .await
            .expect("job ended")
            .expect("job ran")
    });
    (report, rec)
}

fn lines(root: &Root, file: &str) -> usize {
    let ws = root.0.join("job").join("workspace").join(file);
    std::fs::read_to_string(ws)
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn a_restarted_runner_keeps_finished_steps_and_reruns_the_lost_one_once() {
    let root = Root::new("restart-retry");
    let spec = spec(&format!("retries: 1\n{SPEC}"));
    let (first, pgid) = first_runner(&root, &spec);
    let (report, second) = second_runner(&root, &spec, &first);
    assert_eq!(lines(&root, "done-runs"), 1, "the finished step ran once");
    assert_eq!(lines(&root, "long-runs"), 2, "the lost step ran again once");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(assert_group_gone(pgid));

    assert_eq!(report.phase, JobPhase::Succeeded, "{report:#?}");
    assert_eq!(
        phase_and_reason(&report, "done"),
        (StepPhase::Succeeded, Some("Completed".into()))
    );
    assert_eq!(
        second.log("done"),
        "built\n",
        "a finished step's log stays as it was"
    );
    assert_eq!(step(&report, "long").retries, Some(1));
    assert_eq!(
        second.log("long"),
        "attempt 1 got 42\n\
         [baton] step long: the runner running it stopped while it ran; its processes were killed (RunnerLost); re-running the step: retry 1 of 1\n\
         attempt 2 got 42\n",
        "the retry continues the log after a line saying why, never over it"
    );
    assert!(
        !second
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|(s, _)| s == "done"),
        "the finished step is neither re-run nor re-reported"
    );
}

#[test]
fn without_retries_the_step_lost_with_its_runner_fails_as_runner_lost() {
    let root = Root::new("restart-no-retry");
    let spec = spec(SPEC);
    let (first, pgid) = first_runner(&root, &spec);
    let (report, second) = second_runner(&root, &spec, &first);
    assert_eq!(lines(&root, "done-runs"), 1, "the finished step ran once");
    assert_eq!(
        lines(&root, "long-runs"),
        1,
        "the lost step never ran again"
    );
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(assert_group_gone(pgid));

    assert_eq!(report.phase, JobPhase::Failed);
    assert_eq!(
        phase_and_reason(&report, "done"),
        (StepPhase::Succeeded, Some("Completed".into()))
    );
    assert_eq!(
        phase_and_reason(&report, "long"),
        (StepPhase::Failed, Some("RunnerLost".into()))
    );
    assert_eq!(second.log("long"), "attempt 1 got 42\n", "never run again");
}
