//! `spec.retries` in the executor, over a scripted backend whose steps can be
//! "lost" (as a step pod evicted or deleted by someone else is): a lost step runs
//! again as a new attempt while retries remain; a step failing on its own never.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/executor.rs"]
mod support;

use std::sync::Mutex;
use std::time::Duration;

use baton::backend::{
    Backend, BackendError, DiscoveredStep, LogChunk, LogStream, StepExit, StepRequest, Workflow,
};
use baton::crd::job::StepPhase;
use baton::executor::{CancellationToken, Executor};
use futures::StreamExt;
use support::{Recorder, options, phase_and_reason, spec, step};

/// Steps named `flaky` are lost on their first attempt; `lost` on every one;
/// `fails` exits 1; anything else exits 0. Each attempt logs one line.
#[derive(Default)]
struct Scripted {
    /// (step, retry, log_offset) of every start.
    starts: Mutex<Vec<(String, u32, u64)>>,
    /// How often the executor asked what exists.
    discovers: Mutex<u32>,
}

impl Scripted {
    fn current(&self, step: &str) -> (u32, u64) {
        self.starts
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(s, _, _)| s == step)
            .map(|(_, r, o)| (*r, *o))
            .expect("started")
    }

    fn attempts(&self, step: &str) -> Vec<u32> {
        let starts = self.starts.lock().unwrap();
        starts
            .iter()
            .filter(|(s, _, _)| s == step)
            .map(|(_, r, _)| *r)
            .collect()
    }
}

impl Backend for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn step_ref(&self, _: &Workflow, step: &str, retry: u32) -> Option<String> {
        Some(format!("{step}-{retry}"))
    }
    async fn setup_workflow(&self, _: &Workflow) -> Result<(), BackendError> {
        Ok(())
    }
    async fn discover(&self, _: &Workflow) -> Result<Vec<DiscoveredStep>, BackendError> {
        *self.discovers.lock().unwrap() += 1;
        Ok(Vec::new())
    }
    async fn start_step(&self, _: &Workflow, request: &StepRequest) -> Result<(), BackendError> {
        self.starts.lock().unwrap().push((
            request.step.name.clone(),
            request.retry,
            request.log_offset,
        ));
        Ok(())
    }
    async fn seed_workspace(
        &self,
        _: &Workflow,
        _: &std::path::Path,
    ) -> Result<baton::archive::Extracted, BackendError> {
        unreachable!("these Jobs have no content")
    }
    async fn tail_step(
        &self,
        _: &Workflow,
        step: &str,
        from: u64,
    ) -> Result<LogStream, BackendError> {
        let (retry, offset) = self.current(step);
        assert_eq!(
            from, offset,
            "a new attempt is tailed from where its log starts"
        );
        // The first attempt's line has no newline: the retry notice must add one.
        let text = if retry == 0 {
            format!("attempt {retry}")
        } else {
            format!("attempt {retry}\n")
        };
        let chunk = LogChunk {
            step: step.to_owned(),
            offset,
            bytes: text.into_bytes(),
        };
        Ok(futures::stream::iter([Ok(chunk)]).boxed())
    }
    async fn wait_step(&self, _: &Workflow, step: &str) -> Result<StepExit, BackendError> {
        let (retry, _) = self.current(step);
        let lost = || BackendError::Lost {
            step: step.to_owned(),
            reason: "PodLost",
            message: "the step pod was deleted before its container ended".into(),
        };
        match step {
            "flaky" if retry == 0 => Err(lost()),
            "lost" => Err(lost()),
            "fails" => Ok(1.into()),
            "oom" => Ok(StepExit {
                code: 137,
                reason: Some("OOMKilled"),
            }),
            _ => Ok(0.into()),
        }
    }
    async fn read_outputs(&self, _: &Workflow, _: &str, _: usize) -> Result<Vec<u8>, BackendError> {
        Ok(Vec::new())
    }
    // These Jobs collect nothing.
    async fn collect_changes(
        &self,
        _: &Workflow,
        _: &baton::crd::Step,
    ) -> Result<Option<baton::archive::Packed>, BackendError> {
        Ok(None)
    }
    // These Jobs have no services.
    async fn service_ready(
        &self,
        _: &Workflow,
        _: &str,
        _: &[u16],
    ) -> Result<String, BackendError> {
        Ok("127.0.0.1".into())
    }
    async fn stop_step(&self, _: &Workflow, _: &str, _: Duration) -> Result<(), BackendError> {
        Ok(())
    }
    async fn destroy_step(&self, _: &Workflow, _: &str) -> Result<(), BackendError> {
        Ok(())
    }
    async fn destroy_workflow(&self, _: &Workflow) -> Result<(), BackendError> {
        Ok(())
    }
}

async fn run(backend: &Scripted, yaml: &str) -> (baton::executor::JobReport, Recorder) {
    run_as(backend, yaml, Recorder::new()).await
}

async fn run_as(
    backend: &Scripted,
    yaml: &str,
    rec: Recorder,
) -> (baton::executor::JobReport, Recorder) {
    let report = Executor::new(backend, options())
        .run(
            &Workflow::new("job"),
            &spec(yaml),
            &rec,
            &rec,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    (report, rec)
}

#[tokio::test]
async fn a_sink_that_records_starts_skips_discovery_only_when_nothing_was_recorded() {
    let yaml = "steps:\n  - {name: a, image: i, script: x}\n";
    let mut fresh = Recorder::new();
    fresh.records_starts = true;
    let backend = Scripted::default();
    let (report, _) = run_as(&backend, yaml, fresh).await;
    assert_eq!(report.phase, baton::crd::job::JobPhase::Succeeded);
    assert_eq!(
        *backend.discovers.lock().unwrap(),
        0,
        "nothing recorded: nothing to find"
    );

    // Recorded Running (a runner restarted mid-step): the backend is asked.
    let mut resumed = Recorder::resuming(baton::executor::Recorded {
        start_time: None,
        steps: vec![baton::crd::job::StepStatus {
            name: "a".into(),
            phase: StepPhase::Running,
            ..Default::default()
        }],
    });
    resumed.records_starts = true;
    let backend = Scripted::default();
    run_as(&backend, yaml, resumed).await;
    assert_eq!(*backend.discovers.lock().unwrap(), 1);

    // A sink that does not record starts: always asked.
    let backend = Scripted::default();
    run(&backend, yaml).await;
    assert_eq!(*backend.discovers.lock().unwrap(), 1);
}

#[tokio::test]
async fn a_lost_step_runs_again_while_retries_remain() {
    let backend = Scripted::default();
    let (report, rec) = run(
        &backend,
        "retries: 1\nsteps:\n  - {name: flaky, image: i, script: x}\n  - {name: next, image: i, script: x, dependsOn: [flaky]}\n",
    )
    .await;
    assert_eq!(
        phase_and_reason(&report, "flaky"),
        (StepPhase::Succeeded, Some("Completed".into()))
    );
    assert_eq!(step(&report, "flaky").retries, Some(1));
    assert_eq!(step(&report, "flaky").pod_name.as_deref(), Some("flaky-1"));
    assert_eq!(step(&report, "next").retries, None);
    assert_eq!(step(&report, "next").pod_name.as_deref(), Some("next-0"));
    assert_eq!(backend.attempts("flaky"), [0, 1]);
    let log = rec.log("flaky");
    assert_eq!(
        log,
        "attempt 0\n[baton] step flaky: the step pod was deleted before its container ended (PodLost); re-running the step: retry 1 of 1\nattempt 1\n"
    );
    let (_, offset) = backend.current("flaky");
    assert_eq!(offset as usize, log.len() - "attempt 1\n".len());
}

#[tokio::test]
async fn without_retries_a_lost_step_fails_with_the_loss_as_reason() {
    let backend = Scripted::default();
    let (report, _) = run(&backend, "steps:\n  - {name: flaky, image: i, script: x}\n").await;
    assert_eq!(
        phase_and_reason(&report, "flaky"),
        (StepPhase::Failed, Some("PodLost".into()))
    );
    assert_eq!(step(&report, "flaky").retries, None);
    assert_eq!(backend.attempts("flaky"), [0]);
}

#[tokio::test]
async fn retries_run_out() {
    let backend = Scripted::default();
    let (report, _) = run(
        &backend,
        "retries: 2\nsteps:\n  - {name: lost, image: i, script: x}\n",
    )
    .await;
    assert_eq!(
        phase_and_reason(&report, "lost"),
        (StepPhase::Failed, Some("PodLost".into()))
    );
    assert_eq!(step(&report, "lost").retries, Some(2));
    assert_eq!(backend.attempts("lost"), [0, 1, 2]);
}

#[tokio::test]
async fn a_step_failing_on_its_own_is_never_run_again() {
    let backend = Scripted::default();
    let (report, _) = run(
        &backend,
        "retries: 3\nsteps:\n  - {name: fails, image: i, script: x}\n",
    )
    .await;
    assert_eq!(
        phase_and_reason(&report, "fails"),
        (StepPhase::Failed, Some("Error".into()))
    );
    assert_eq!(step(&report, "fails").exit_code, Some(1));
    assert_eq!(backend.attempts("fails"), [0]);
}

#[tokio::test]
async fn a_backend_reason_names_the_failure_and_an_allowed_one_lets_the_job_succeed() {
    let backend = Scripted::default();
    let (report, _) = run(
        &backend,
        "retries: 3\nsteps:\n  - {name: oom, image: i, script: x, allowFailure: true}\n  - {name: next, image: i, script: x, dependsOn: [oom]}\n",
    )
    .await;
    let oom = step(&report, "oom");
    assert_eq!(
        (oom.phase, oom.reason.as_deref(), oom.exit_code),
        (StepPhase::Failed, Some("OOMKilled"), Some(137))
    );
    assert!(oom.is_allowed_failure(), "{oom:?}");
    assert_eq!(backend.attempts("oom"), [0], "an OOM kill is not a loss");
    assert_eq!(
        phase_and_reason(&report, "next"),
        (StepPhase::Succeeded, Some("Completed".into()))
    );
    assert_eq!(report.phase, baton::crd::job::JobPhase::Succeeded);
    assert_eq!(report.message.as_deref(), Some("oom failed (allowed)"));
}
