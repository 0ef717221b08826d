//! On-demand runner pods on the real cluster: a Job with no `runnerSelector` gets
//! its own `baton runner --once` pod (image `localhost/baton/baton:dev`, which must
//! hold this build: `make images` or `hack/images/build.sh baton`). The controller
//! runs on the host, listening on the node's own address so pods reach it.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use baton::crd::Job;
use baton::crd::conditions;
use baton::crd::job::JobPhase;
use k8s_openapi::api::core::v1::{LocalObjectReference, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::Condition;

use crate::jobs::{job_events, read_log, sa_token};
use crate::procs::Controller;
use crate::registry::{pull_secret, registry};
use crate::support::{
    STEP_IMAGE, StepPodRecorder, TestNs, in_namespace, pod_finished, pod_phase, step_pods_removed,
    wait_for,
};

/// The node's address: the only one runner pods can reach the host on.
const NODE_ADDR: &str = "192.0.2.2";

fn jobs(ns: &TestNs) -> Api<Job> {
    Api::namespaced(ns.client.clone(), &ns.name)
}

fn pods(ns: &TestNs) -> Api<Pod> {
    Api::namespaced(ns.client.clone(), &ns.name)
}

fn phase_is(phase: JobPhase) -> impl Condition<Job> {
    move |j: Option<&Job>| j.and_then(|j| j.status.as_ref()?.phase) == Some(phase)
}

fn scheduled_reason(reason: &'static str) -> impl Condition<Job> {
    move |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref())
            .and_then(|s| conditions::find(&s.conditions, "Scheduled"))
            .is_some_and(|c| c.status == "False" && c.reason == reason)
    }
}

fn scheduled_message(j: &Job) -> String {
    j.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, "Scheduled"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// A controller on the node's address (a port the OS picks), telling runner pods
/// to reach it there.
pub async fn controller(ns: &TestNs) -> anyhow::Result<Controller> {
    let port = std::net::TcpListener::bind((NODE_ADDR, 0))?
        .local_addr()?
        .port();
    let url = format!("http://{NODE_ADDR}:{port}");
    Controller::start_with_env(
        &ns.name,
        &format!("{NODE_ADDR}:{port}"),
        &[("BATON_RUNNER_SERVER_URL", url.as_str())],
    )
    .await
}

fn job(name: &str, on_demand: serde_json::Value, steps: serde_json::Value) -> anyhow::Result<Job> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": name },
        "spec": { "onDemand": on_demand, "steps": steps }
    }))?)
}

async fn apply(ns: &TestNs, job: &Job) -> anyhow::Result<String> {
    let j = jobs(ns).create(&PostParams::default(), job).await?;
    j.metadata.uid.context("uid")
}

async fn step_pods(ns: &TestNs, uid: &str, step: &str) -> anyhow::Result<Vec<Pod>> {
    Ok(pods(ns)
        .list(
            &ListParams::default()
                .labels(&format!("baton.dev/job-uid={uid},baton.dev/step={step}")),
        )
        .await?
        .items)
}

#[tokio::test]
async fn one_step_job_on_an_on_demand_runner_pod() {
    in_namespace("od-one", |ns| async move {
        let ctl = controller(&ns).await?;
        let recorder = StepPodRecorder::start(&ns.client, &ns.name, "one");
        let started = Instant::now();
        let uid = apply(
            &ns,
            &job(
                "one",
                serde_json::json!({}),
                serde_json::json!([
                    { "name": "hello", "image": STEP_IMAGE, "script": "echo hello from an on-demand runner" }
                ]),
            )?,
        )
        .await?;
        let mut to_pod_running = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let found = step_pods(&ns, &uid, "hello").await?;
            if found.iter().any(|p| matches!(pod_phase(p), "Running" | "Succeeded")) {
                to_pod_running = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let j = wait_for(&jobs(&ns), "one", phase_is(JobPhase::Succeeded), 120).await?;
        let to_done = started.elapsed();
        println!(
            "TIMING on-demand runner pod: apply->step pod Running {to_pod_running:?} apply->Succeeded {to_done:?}"
        );
        let st = j.status.context("status")?;
        ensure!(st.runner.as_deref() == Some("one-runner"), "{st:?}");
        ensure!(st.epoch == Some(1), "{st:?}");
        ensure!(recorder.pods_of("hello") == 1, "exactly one step pod: {:?}", recorder.all());
        step_pods_removed(&ns.client, &ns.name, &uid, 30).await?;
        let reader = sa_token(&ns, "reader", true).await?;
        let (code, body) = read_log(&ctl.url, &ns.name, "one", "hello", Some(&reader)).await?;
        ensure!(
            code == 200 && body == "hello from an on-demand runner\n",
            "{code} {body:?}"
        );
        let runner = wait_for(&pods(&ns), "one-runner", pod_finished(), 60).await?;
        ensure!(pod_phase(&runner) == "Succeeded", "runner pod: {:?}", runner.status);
        Ok(())
    })
    .await;
}

/// The runner pod's own Role (`baton-runner`) lets it read the Secret a step
/// uses, so the step runs and its value is masked in the stored log.
#[tokio::test]
async fn an_on_demand_runner_reads_a_steps_secret_to_mask_it() {
    in_namespace("od-secret", |ns| async move {
        let ctl = controller(&ns).await?;
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "api" },
                "stringData": { "token": "od-s3cr3t-value" },
            }))?;
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(ns.client.clone(), &ns.name)
            .create(&PostParams::default(), &secret)
            .await?;
        let env = serde_json::json!([{
            "name": "TOKEN",
            "valueFrom": { "secretKeyRef": { "name": "api", "key": "token" } }
        }]);
        apply(
            &ns,
            &job(
                "masked",
                serde_json::json!({}),
                serde_json::json!([
                    { "name": "show", "image": STEP_IMAGE, "env": env, "script": "echo \"value: $TOKEN\"" }
                ]),
            )?,
        )
        .await?;
        wait_for(&jobs(&ns), "masked", phase_is(JobPhase::Succeeded), 120).await?;
        let reader = sa_token(&ns, "reader", true).await?;
        let (code, body) = read_log(&ctl.url, &ns.name, "masked", "show", Some(&reader)).await?;
        ensure!(code == 200 && body == "value: ***\n", "{code} {body:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn deleting_the_runner_pod_mid_step_hands_the_job_to_a_new_pod() {
    in_namespace("od-lost", |ns| async move {
        let ctl = controller(&ns).await?;
        let script = "for i in $(seq 1 60); do echo line $i; sleep 0.25; done";
        let recorder = StepPodRecorder::start(&ns.client, &ns.name, "count");
        let uid = apply(
            &ns,
            &job(
                "count",
                serde_json::json!({}),
                serde_json::json!([
                    { "name": "count", "image": STEP_IMAGE, "script": script },
                    { "name": "after", "image": STEP_IMAGE, "dependsOn": ["count"], "script": "echo after" }
                ]),
            )?,
        )
        .await?;
        let reader = sa_token(&ns, "reader", true).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, body) = read_log(&ctl.url, &ns.name, "count", "count", Some(&reader)).await?;
            if code == 200 && body.contains("line 5\n") {
                break;
            }
            ensure!(Instant::now() < deadline, "no log lines arrived: {code} {body:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        pods(&ns).delete("count-runner", &DeleteParams::default()).await?;
        let lost_at = Instant::now();
        wait_for(&pods(&ns), "count-runner-2", |p: Option<&Pod>| p.is_some(), 60).await?;
        let j = wait_for(&jobs(&ns), "count", phase_is(JobPhase::Succeeded), 180).await?;
        println!("TIMING on-demand hand-over: runner pod deleted->Job Succeeded {:?}", lost_at.elapsed());
        let st = j.status.context("status")?;
        ensure!(st.epoch == Some(2), "handed over once: {st:?}");
        ensure!(st.runner.as_deref() == Some("count-runner-2"), "{st:?}");
        let seen = job_events(&ns, "count", &["RunnerLost", "Assigned", "Succeeded"]).await?;
        let handed = "assigned to runner count-runner-2 at epoch 2";
        ensure!(seen.iter().any(|(r, n)| r == "Assigned" && n == handed), "events {seen:?}");
        let (code, body) = read_log(&ctl.url, &ns.name, "count", "count", Some(&reader)).await?;
        let want: String = (1..=60).map(|i| format!("line {i}\n")).collect();
        ensure!(code == 200 && body == want, "log after the hand-over: {body:?}");
        ensure!(recorder.pods_of("count") == 1, "exactly one pod for the step: {:?}", recorder.all());
        ensure!(recorder.pods_of("after") == 1, "exactly one pod for after: {:?}", recorder.all());
        step_pods_removed(&ns.client, &ns.name, &uid, 30).await?;
        let runner = wait_for(&pods(&ns), "count-runner-2", pod_finished(), 60).await?;
        ensure!(pod_phase(&runner) == "Succeeded", "runner pod: {:?}", runner.status);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn an_on_demand_job_pulls_private_step_images_with_its_pull_secret() {
    in_namespace("od-private", |ns| async move {
        let reg = registry()?;
        let _ctl = controller(&ns).await?;
        pull_secret(&ns, "registry-login", &reg, &reg.password).await?;
        let mut private = job(
            "private",
            serde_json::json!({}),
            serde_json::json!([
                { "name": "pull", "image": reg.image, "imagePullPolicy": "Always", "script": "echo pulled" }
            ]),
        )?;
        private.spec.image_pull_secrets = Some(vec![LocalObjectReference {
            name: "registry-login".into(),
        }]);
        apply(&ns, &private).await?;
        wait_for(&jobs(&ns), "private", phase_is(JobPhase::Succeeded), 120).await?;
        // The runner pod carries the Job's pull secrets too (its image may be private).
        let runner = pods(&ns).get("private-runner").await?;
        let secrets = runner.spec.and_then(|s| s.image_pull_secrets).unwrap_or_default();
        ensure!(
            secrets.iter().any(|s| s.name == "registry-login"),
            "runner pod: {secrets:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_says_image_pull_failed() {
    in_namespace("od-pull", |ns| async move {
        let _ctl = controller(&ns).await?;
        apply(
            &ns,
            &job(
                "nopull",
                serde_json::json!({ "image": "localhost/baton/does-not-exist:1" }),
                serde_json::json!([{ "name": "a", "image": STEP_IMAGE, "script": "true" }]),
            )?,
        )
        .await?;
        let j = wait_for(
            &jobs(&ns),
            "nopull",
            scheduled_reason("ImagePullFailed"),
            90,
        )
        .await?;
        let msg = scheduled_message(&j);
        ensure!(msg.contains("nopull-runner"), "{msg}");
        ensure!(j.status.and_then(|s| s.phase) == Some(JobPhase::Queued));
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn an_unschedulable_runner_pod_says_runner_pod_pending_with_the_scheduler_message() {
    in_namespace("od-pending", |ns| async move {
        let _ctl = controller(&ns).await?;
        apply(
            &ns,
            &job(
                "nowhere",
                serde_json::json!({ "nodeSelector": { "baton.dev/no-such-node": "true" } }),
                serde_json::json!([{ "name": "a", "image": STEP_IMAGE, "script": "true" }]),
            )?,
        )
        .await?;
        let j = wait_for(
            &jobs(&ns),
            "nowhere",
            scheduled_reason("RunnerPodPending"),
            90,
        )
        .await?;
        let msg = scheduled_message(&j);
        ensure!(
            msg.contains("nodes are available"),
            "the scheduler's message: {msg}"
        );
        // Cancelled while Queued: its pending runner pod goes.
        jobs(&ns)
            .patch(
                "nowhere",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({ "spec": { "cancel": true } })),
            )
            .await?;
        wait_for(&jobs(&ns), "nowhere", phase_is(JobPhase::Cancelled), 30).await?;
        wait_for(
            &pods(&ns),
            "nowhere-runner",
            |p: Option<&Pod>| p.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
            30,
        )
        .await
        .or_else(|e| {
            if e.to_string().contains("deleted") {
                Ok(Pod::default())
            } else {
                Err(e)
            }
        })?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn without_a_runner_server_url_on_demand_jobs_say_so() {
    in_namespace("od-off", |ns| async move {
        let _ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        apply(
            &ns,
            &job(
                "off",
                serde_json::json!({}),
                serde_json::json!([{ "name": "a", "image": STEP_IMAGE, "script": "true" }]),
            )?,
        )
        .await?;
        let j = wait_for(
            &jobs(&ns),
            "off",
            scheduled_reason("OnDemandUnavailable"),
            30,
        )
        .await?;
        ensure!(scheduled_message(&j).contains("--runner-server-url"));
        ensure!(
            pods(&ns)
                .list(&ListParams::default())
                .await?
                .items
                .is_empty(),
            "no pod"
        );
        Ok(())
    })
    .await;
}
