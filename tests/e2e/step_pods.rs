//! The Kubernetes step backend on the real cluster: the executor drives
//! `KubernetesBackend` for a real `Job` object (no controller, no runner), and the
//! tests look at the real step pods — exactly one per step attempt (by label),
//! complete logs, the right phases — through the DAG, outputs beyond 4 KiB, a
//! workspace, timeouts, cancellation, resuming with a new executor, lost pods and
//! retries, Secrets, and images that cannot be pulled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use baton::backend::kubernetes::{KubernetesOptions, LABEL_JOB_UID, LABEL_RETRY, LABEL_STEP};
use baton::backend::{Backend, JobTarget, KubernetesBackend, LogChunk, Workflow};
use baton::crd::Job;
use baton::crd::job::{JobPhase, StepPhase, StepStatus};
use baton::executor::{
    CancellationToken, Executor, ExecutorOptions, JobReport, LogSink, StatusSink,
};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::support::{STEP_IMAGE, TestNs, in_namespace, pod_phase, wait_for};

const BOUND: Duration = Duration::from_secs(180);

/// Records statuses and logs; may start out holding logs a previous run received.
#[derive(Default)]
struct Sink {
    logs: Mutex<BTreeMap<String, Vec<u8>>>,
    steps: watch::Sender<BTreeMap<String, StepStatus>>,
}

impl Sink {
    fn holding(logs: BTreeMap<String, Vec<u8>>) -> Self {
        Self {
            logs: Mutex::new(logs),
            ..Default::default()
        }
    }

    fn log(&self, step: &str) -> String {
        let logs = self.logs.lock().unwrap();
        String::from_utf8_lossy(logs.get(step).map_or(&[][..], Vec::as_slice)).into_owned()
    }

    /// Until `step`'s log contains `text`.
    async fn wait_log(&self, step: &str, text: &str) -> anyhow::Result<()> {
        let mut rx = self.steps.subscribe();
        tokio::time::timeout(BOUND, async {
            while !self.log(step).contains(text) {
                // Every appended chunk bumps the channel (see `append`).
                let _ = rx.changed().await;
            }
        })
        .await
        .with_context(|| format!("{step}'s log never showed {text:?}: {:?}", self.log(step)))
    }
}

impl StatusSink for Sink {
    async fn step_changed(&self, status: &StepStatus) {
        self.steps.send_modify(|s| {
            s.insert(status.name.clone(), status.clone());
        });
    }
    async fn job_changed(&self, _: JobPhase, _: Option<&str>) {}
}

impl LogSink for Sink {
    async fn append(&self, chunk: LogChunk) {
        {
            let mut logs = self.logs.lock().unwrap();
            let log = logs.entry(chunk.step.clone()).or_default();
            assert_eq!(
                chunk.offset,
                log.len() as u64,
                "chunks of {} are contiguous",
                chunk.step
            );
            log.extend_from_slice(&chunk.bytes);
        }
        self.steps.send_modify(|_| {});
    }
    fn resume_offset(&self, step: &str) -> u64 {
        self.logs
            .lock()
            .unwrap()
            .get(step)
            .map_or(0, |l| l.len() as u64)
    }
}

/// Create the Job object (owner of the step pods) from the YAML of its spec.
async fn create_job(ns: &TestNs, name: &str, spec: &str) -> anyhow::Result<Job> {
    let spec = serde_saphyr::from_str(spec).context("parse the test Job spec")?;
    let job = Job::new(name, spec);
    let api: Api<Job> = Api::namespaced(ns.client.clone(), &ns.name);
    api.create(&PostParams::default(), &job)
        .await
        .context("create the Job")
}

fn backend(ns: &TestNs, job: &Job, options: KubernetesOptions) -> KubernetesBackend {
    let target = JobTarget::for_job(job).expect("a created Job has namespace and uid");
    KubernetesBackend::with_options(ns.client.clone(), target, options)
}

fn quick() -> KubernetesOptions {
    KubernetesOptions {
        cannot_start_after: Duration::from_secs(5),
        ..Default::default()
    }
}

fn executor_options() -> ExecutorOptions {
    ExecutorOptions {
        grace: Duration::from_secs(2),
        ..Default::default()
    }
}

/// Run the Job to its end with a fresh backend; the report and the sink.
async fn run_job(
    ns: &TestNs,
    job: &Job,
    sink: &Sink,
    cancel: &CancellationToken,
) -> anyhow::Result<JobReport> {
    let backend = backend(ns, job, quick());
    let workflow = Workflow::new(job.uid().unwrap_or_default());
    let started = Instant::now();
    let report = tokio::time::timeout(
        BOUND,
        Executor::new(&backend, executor_options()).run(&workflow, &job.spec, sink, sink, cancel),
    )
    .await
    .context("the Job did not finish in time")??;
    eprintln!(
        "job {} ended {:?} in {:?}",
        job.name_any(),
        report.phase,
        started.elapsed()
    );
    Ok(report)
}

fn status<'a>(report: &'a JobReport, step: &str) -> &'a StepStatus {
    &report
        .steps
        .iter()
        .find(|s| s.status.name == step)
        .expect("step in the report")
        .status
}

/// The pods of one step of the Job (every attempt), by label.
async fn pods_of(client: &Client, job: &Job, step: &str) -> anyhow::Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &job.namespace().unwrap_or_default());
    let selector = format!(
        "{LABEL_JOB_UID}={},{LABEL_STEP}={step}",
        job.uid().unwrap_or_default()
    );
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

/// Exactly one pod for the step (per attempt `retry`), in `phase`, named as its status says.
async fn one_pod(
    client: &Client,
    job: &Job,
    report: &JobReport,
    step: &str,
    phase: &str,
) -> anyhow::Result<Pod> {
    let pods = pods_of(client, job, step).await?;
    ensure!(
        pods.len() == 1,
        "{step}: {} pods: {:?}",
        pods.len(),
        pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    let pod = pods.into_iter().next().context("one pod")?;
    // The kubelet may report the container's end a moment before the pod's phase.
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let pod = wait_for(
        &api,
        &pod.name_any(),
        |p: Option<&Pod>| p.is_some_and(|p| pod_phase(p) == phase),
        30,
    )
    .await
    .with_context(|| format!("{step}: pod phase never became {phase}"))?;
    ensure!(
        status(report, step).pod_name.as_deref() == Some(pod.name_any().as_str()),
        "{step}: status names pod {:?}, the pod is {}",
        status(report, step).pod_name,
        pod.name_any()
    );
    Ok(pod)
}

fn phase_reason(report: &JobReport, step: &str) -> (StepPhase, Option<String>) {
    let s = status(report, step);
    (s.phase, s.reason.clone())
}

#[tokio::test]
async fn diamond_dag_passes_outputs_beyond_4kib_between_step_pods() {
    in_namespace("sp-diamond", |ns| async move {
        let spec = format!(
            r#"
steps:
  - name: a
    image: {STEP_IMAGE}
    script: |
      echo "from a: $(( 1 + 1 )) $(echo sub) pid-is-a-number-$(echo $$ | tr -d 0-9)"
      echo version=1.2.3 >> "$BATON_OUTPUT"
      {{ echo "big<<EOF"; head -c 102400 /dev/zero | tr '\0' x; echo; echo EOF; }} >> "$BATON_OUTPUT"
  - name: b
    image: {STEP_IMAGE}
    dependsOn: [a]
    script: |
      echo "b sees $BATON_OUTPUT_VERSION"
      echo b=ok >> "$BATON_OUTPUT"
  - name: c
    image: {STEP_IMAGE}
    dependsOn: [a]
    command: [sh, -c, 'echo "c sees $BATON_OUTPUT_VERSION and $(GREETING)"; echo c=ok >> "$BATON_OUTPUT"']
    env:
      - name: GREETING
        value: "hello $(BATON_OUTPUT_VERSION)"
  - name: d
    image: {STEP_IMAGE}
    dependsOn: [b, c]
    script: echo "d sees $BATON_OUTPUT_B $BATON_OUTPUT_C ${{#BATON_OUTPUT_BIG}}"
"#
        );
        let job = create_job(&ns, "diamond", &spec).await?;
        let sink = Sink::default();
        let report = run_job(&ns, &job, &sink, &CancellationToken::new()).await?;
        ensure!(report.phase == JobPhase::Succeeded, "{report:#?}");
        for step in ["a", "b", "c", "d"] {
            ensure!(phase_reason(&report, step) == (StepPhase::Succeeded, Some("Completed".into())), "{step}: {:?}", status(&report, step));
            one_pod(&ns.client, &job, &report, step, "Succeeded").await?;
        }
        ensure!(sink.log("a") == "from a: 2 sub pid-is-a-number-\n", "a: {:?}", sink.log("a"));
        ensure!(sink.log("b") == "b sees 1.2.3\n", "b: {:?}", sink.log("b"));
        ensure!(sink.log("c") == "c sees 1.2.3 and hello 1.2.3\n", "c: {:?}", sink.log("c"));
        ensure!(sink.log("d") == "d sees ok ok 102400\n", "d: {:?}", sink.log("d"));
        let big = report.outputs.get("big").context("output big")?;
        ensure!(big.len() == 102_400 && big.bytes().all(|b| b == b'x'), "big is {} bytes", big.len());
        ensure!(report.outputs.get("version").map(String::as_str) == Some("1.2.3"));
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_failing_step_runs_its_on_failure_and_always_steps() {
    in_namespace("sp-fail", |ns| async move {
        let spec = format!(
            r#"
steps:
  - name: build
    image: {STEP_IMAGE}
    script: |
      echo building
      exit 3
  - name: deploy
    image: {STEP_IMAGE}
    dependsOn: [build]
    script: echo deploying
  - name: notify
    image: {STEP_IMAGE}
    dependsOn: [build]
    when: onFailure
    script: echo notified
  - name: cleanup
    image: {STEP_IMAGE}
    dependsOn: [deploy]
    when: always
    script: echo cleaned
"#
        );
        let job = create_job(&ns, "failing", &spec).await?;
        let sink = Sink::default();
        let report = run_job(&ns, &job, &sink, &CancellationToken::new()).await?;
        ensure!(report.phase == JobPhase::Failed, "{report:#?}");
        ensure!(phase_reason(&report, "build") == (StepPhase::Failed, Some("Error".into())));
        ensure!(status(&report, "build").exit_code == Some(3));
        ensure!(status(&report, "deploy").phase == StepPhase::Skipped);
        ensure!(status(&report, "notify").phase == StepPhase::Succeeded);
        ensure!(status(&report, "cleanup").phase == StepPhase::Succeeded);
        one_pod(&ns.client, &job, &report, "build", "Failed").await?;
        one_pod(&ns.client, &job, &report, "notify", "Succeeded").await?;
        one_pod(&ns.client, &job, &report, "cleanup", "Succeeded").await?;
        ensure!(
            pods_of(&ns.client, &job, "deploy").await?.is_empty(),
            "a skipped step has no pod"
        );
        ensure!(sink.log("build") == "building\n");
        ensure!(sink.log("notify") == "notified\n");
        ensure!(sink.log("cleanup") == "cleaned\n");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_workspace_is_shared_by_step_pods_on_one_node() {
    in_namespace("sp-workspace", |ns| async move {
        let spec = format!(
            r#"
workspace:
  size: 64Mi
steps:
  - name: write
    image: {STEP_IMAGE}
    script: |
      pwd
      echo hello > /workspace/file
  - name: read
    image: {STEP_IMAGE}
    dependsOn: [write]
    script: cat file
"#
        );
        let job = create_job(&ns, "ws", &spec).await?;
        let sink = Sink::default();
        let report = run_job(&ns, &job, &sink, &CancellationToken::new()).await?;
        ensure!(
            report.phase == JobPhase::Succeeded,
            "{report:#?}\nwrite: {}\nread: {}",
            sink.log("write"),
            sink.log("read")
        );
        ensure!(
            sink.log("write") == "/workspace\n",
            "write: {:?}",
            sink.log("write")
        );
        ensure!(
            sink.log("read") == "hello\n",
            "read: {:?}",
            sink.log("read")
        );
        let write = one_pod(&ns.client, &job, &report, "write", "Succeeded").await?;
        let read = one_pod(&ns.client, &job, &report, "read", "Succeeded").await?;
        let node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
        ensure!(
            node(&write).is_some() && node(&write) == node(&read),
            "nodes {:?} {:?}",
            node(&write),
            node(&read)
        );
        let pinned = read
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref());
        ensure!(
            pinned.is_some(),
            "the second pod is pinned to the first one's node"
        );
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
        let claim = claims
            .get("ws-workspace")
            .await
            .context("the workspace claim")?;
        ensure!(
            claim
                .owner_references()
                .iter()
                .any(|o| o.kind == "Job" && o.name == "ws")
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_step_timeout_fails_the_step_and_removes_its_pod() {
    in_namespace("sp-timeout", |ns| async move {
        let spec = format!(
            r#"
steps:
  - name: slow
    image: {STEP_IMAGE}
    timeout: 3s
    script: |
      echo start
      sleep 600
"#
        );
        let job = create_job(&ns, "timeout", &spec).await?;
        let sink = Sink::default();
        let report = run_job(&ns, &job, &sink, &CancellationToken::new()).await?;
        ensure!(report.phase == JobPhase::Failed, "{report:#?}");
        ensure!(
            phase_reason(&report, "slow") == (StepPhase::Failed, Some("DeadlineExceeded".into())),
            "{:?}",
            status(&report, "slow")
        );
        ensure!(sink.log("slow") == "start\n", "{:?}", sink.log("slow"));
        ensure!(
            pods_of(&ns.client, &job, "slow").await?.is_empty(),
            "the pod is gone"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn cancelling_mid_step_deletes_the_pod() {
    in_namespace("sp-cancel", |ns| async move {
        let spec = format!(
            r#"
steps:
  - name: slow
    image: {STEP_IMAGE}
    script: |
      echo start
      sleep 600
  - name: after
    image: {STEP_IMAGE}
    dependsOn: [slow]
    script: echo never
"#
        );
        let job = create_job(&ns, "cancel", &spec).await?;
        let sink = Sink::default();
        let cancel = CancellationToken::new();
        let cancelling = async {
            sink.wait_log("slow", "start\n").await?;
            cancel.cancel();
            anyhow::Ok(())
        };
        let (report, cancelled) = tokio::join!(run_job(&ns, &job, &sink, &cancel), cancelling);
        cancelled?;
        let report = report?;
        ensure!(report.phase == JobPhase::Cancelled, "{report:#?}");
        ensure!(status(&report, "slow").phase == StepPhase::Cancelled);
        ensure!(status(&report, "after").phase == StepPhase::Cancelled);
        ensure!(sink.log("slow") == "start\n");
        ensure!(
            pods_of(&ns.client, &job, "slow").await?.is_empty(),
            "the pod is gone"
        );
        ensure!(
            pods_of(&ns.client, &job, "after").await?.is_empty(),
            "never started"
        );
        Ok(())
    })
    .await;
}

mod recovery;
