//! Waiting and cancelling: a Job no runner matches, a cancel while Queued and
//! while Running, and a cancel whose runner is gone.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::support::{StepPodRecorder, step_pods_removed};

/// A Running Job is cancelled after its runner was killed (its step pod still
/// runs). Nobody can stop the step but the controller: once the runner counts
/// as lost the Job ends Cancelled, and its step pod is deleted.
#[tokio::test]
async fn cancelling_a_job_whose_runner_is_gone_ends_it_and_removes_its_step_pods() {
    in_namespace("job-cancel-lost", |ns| async move {
        let lost_after = Duration::from_secs(3);
        let mut s = setup_env(&ns, "kubernetes", &[("BATON_RUNNER_LOST_AFTER", "3s")]).await?;
        let recorder = StepPodRecorder::start(&ns.client, &ns.name, "orphan");
        apply(
            &ns,
            &job(
                "orphan",
                "pool=e2e",
                serde_json::json!([
                    { "name": "sleep", "image": crate::support::STEP_IMAGE, "script": "sleep 300" }
                ]),
            )?,
        )
        .await?;
        let running = |j: Option<&Job>| {
            j.and_then(|j| j.status.as_ref())
                .is_some_and(|s| s.steps.iter().any(|st| st.phase == StepPhase::Running))
        };
        let j = wait_for(&jobs(&ns), "orphan", running, 120).await?;
        let uid = j.metadata.uid.clone().context("uid")?;
        // The step's pod runs (a step is reported Running before its pod exists).
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(ns.client.clone(), &ns.name);
        let of_job = kube::api::ListParams::default().labels(&format!("baton.dev/job-uid={uid}"));
        let deadline = Instant::now() + Duration::from_secs(120);
        while !pods
            .list(&of_job)
            .await?
            .items
            .iter()
            .any(|p| crate::support::pod_phase(p) == "Running")
        {
            ensure!(Instant::now() < deadline, "the step pod never ran");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        s.runner.proc.kill().await;
        let cancelled_at = Instant::now();
        jobs(&ns)
            .patch(
                "orphan",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": { "cancel": true } })),
            )
            .await?;
        let bound = lost_after + Duration::from_secs(10);
        let j = wait_for(
            &jobs(&ns),
            "orphan",
            phase_is(JobPhase::Cancelled),
            bound.as_secs(),
        )
        .await
        .context("still not Cancelled --runner-lost-after + 10 s after the cancel")?;
        println!(
            "TIMING cancel with a lost runner: cancel->Cancelled {:?}",
            cancelled_at.elapsed()
        );
        let st = j.status.context("status")?;
        let step = st
            .steps
            .iter()
            .find(|s| s.name == "sleep")
            .context("step")?;
        ensure!(step.phase == StepPhase::Cancelled, "{:?}", st.steps);
        ensure!(recorder.pods_of("sleep") == 1, "{:?}", recorder.all());
        step_pods_removed(&ns.client, &ns.name, &uid, 30).await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn unmatched_selector_waits_and_cancel_works_queued_and_running() {
    in_namespace("job-cancel", |ns| async move {
        let s = setup_with(&ns, "kubernetes").await?;
        apply(
            &ns,
            &job(
                "nomatch",
                "pool=nowhere",
                serde_json::json!([
                    { "name": "x", "image": crate::support::STEP_IMAGE, "script": "echo should-not-run" }
                ]),
            )?,
        )
        .await?;
        wait_for(
            &jobs(&ns),
            "nomatch",
            scheduled_reason("NoMatchingRunner"),
            30,
        )
        .await?;
        let j = jobs(&ns).get("nomatch").await?;
        ensure!(j.status.and_then(|s| s.phase) == Some(JobPhase::Queued));

        // Cancel it while Queued: it ends Cancelled, never assigned.
        baton_ok(&["job", "cancel", "nomatch", "-n", &ns.name]).await?;
        let j = wait_for(&jobs(&ns), "nomatch", phase_is(JobPhase::Cancelled), 30).await?;
        let st = j.status.context("status")?;
        ensure!(
            st.runner.is_none() && st.epoch.is_none(),
            "never assigned: {st:?}"
        );
        ensure!(st.steps.iter().all(|s| s.phase == StepPhase::Cancelled));

        // Cancel a running one.
        apply(&ns, &job("long", "pool=e2e", serde_json::json!([
            { "name": "sleep", "image": crate::support::STEP_IMAGE, "script": "echo started; sleep 300" },
            { "name": "after", "image": crate::support::STEP_IMAGE, "dependsOn": ["sleep"], "script": "echo never" }
        ]))?)
        .await?;
        wait_for(
            &jobs(&ns),
            "long",
            |j: Option<&Job>| {
                j.and_then(|j| j.status.as_ref()).is_some_and(|s| {
                    s.steps
                        .iter()
                        .any(|st| st.name == "sleep" && st.phase == StepPhase::Running)
                })
            },
            60,
        )
        .await?;
        // The Runner counts it among its active Jobs, and no more once it ends.
        let runners: Api<baton::crd::Runner> = Api::namespaced(ns.client.clone(), &ns.name);
        let active = |n: i32| {
            move |r: Option<&baton::crd::Runner>| {
                r.and_then(|r| r.status.as_ref()?.active_jobs) == Some(n)
            }
        };
        wait_for(&runners, "r1", active(1), 30)
            .await
            .context("Runner r1 status.activeJobs 1 while `long` runs")?;
        let started = Instant::now();
        jobs(&ns)
            .patch(
                "long",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": { "cancel": true } })),
            )
            .await?;
        let j = wait_for(&jobs(&ns), "long", phase_is(JobPhase::Cancelled), 60).await?;
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "cancel took {:?}",
            started.elapsed()
        );
        wait_for(&runners, "r1", active(0), 30)
            .await
            .context("Runner r1 status.activeJobs back to 0")?;
        let st = j.status.context("status")?;
        let phase = |n: &str| st.steps.iter().find(|s| s.name == n).map(|s| s.phase);
        ensure!(
            phase("sleep") == Some(StepPhase::Cancelled),
            "{:?}",
            st.steps
        );
        ensure!(
            phase("after") == Some(StepPhase::Cancelled),
            "{:?}",
            st.steps
        );
        // The running step's pod is deleted; the later step never got one.
        let uid = j.metadata.uid.clone().context("uid")?;
        let selector = format!("baton.dev/job-uid={uid}");
        let mut left = usize::MAX;
        for _ in 0..100 {
            left = step_pods(&ns)
                .list(&kube::api::ListParams::default().labels(&selector))
                .await?
                .items
                .len();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(left == 0, "{left} step pod(s) left after the cancel");

        // A report at a stale epoch is refused (the Job is held at epoch 1).
        apply(
            &ns,
            &job(
                "held",
                "pool=e2e",
                serde_json::json!([
                    { "name": "sleep", "image": crate::support::STEP_IMAGE, "script": "sleep 300" }
                ]),
            )?,
        )
        .await?;
        wait_for(&jobs(&ns), "held", phase_is(JobPhase::Running), 60).await?;
        for (path, body) in [
            (
                "status",
                serde_json::json!({ "runner": "r1", "epoch": 0, "phase": "Succeeded" }),
            ),
            ("claim", serde_json::json!({ "runner": "r1", "epoch": 7 })),
        ] {
            let res = http()
                .post(format!("{}/v1/jobs/{}/held/{path}", s.ctl.url, ns.name))
                .bearer_auth(&s.token)
                .json(&body)
                .send()
                .await?;
            let code = res.status().as_u16();
            let text = res.text().await?;
            ensure!(
                code == 409 && text.contains("StaleEpoch"),
                "{path}: {code} {text}"
            );
        }
        let res = http()
            .post(format!(
                "{}/v1/jobs/{}/held/logs?step=sleep&offset=0&runner=r1&epoch=0",
                s.ctl.url, ns.name
            ))
            .bearer_auth(&s.token)
            .body("forged\n")
            .send()
            .await?;
        ensure!(
            res.status().as_u16() == 409,
            "stale log append: {}",
            res.status()
        );
        let j = jobs(&ns).get("held").await?;
        ensure!(
            j.status.and_then(|s| s.phase) == Some(JobPhase::Running),
            "unchanged"
        );
        baton_ok(&["job", "cancel", "held", "-n", &ns.name]).await?;
        wait_for(&jobs(&ns), "held", phase_is(JobPhase::Cancelled), 60).await?;
        Ok(())
    })
    .await;
}
