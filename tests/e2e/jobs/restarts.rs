//! Jobs on step pods through a real controller and runner, and what survives a
//! restart: the runner killed mid-step, the controller killed mid-step, a lost runner
//! replaced — each with exactly one pod per step and every log line exactly once.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::support::{StepPodRecorder, step_pods_removed};

#[tokio::test]
async fn one_step_job_on_a_static_runner_with_step_pods() {
    in_namespace("job-pod", |ns| async move {
        let s = setup_with(&ns, "kubernetes").await?;
        let started = Instant::now();
        apply(&ns, &job("one", "pool=e2e", serde_json::json!([
            { "name": "hello", "image": crate::support::STEP_IMAGE, "script": "echo hello from a pod; echo k=v >> $BATON_OUTPUT" }
        ]))?)
        .await?;
        // Step pod Running (or already done: a fast step may skip past Running).
        let uid = wait_for(&jobs(&ns), "one", |j: Option<&Job>| j.is_some_and(|j| j.metadata.uid.is_some()), 10)
            .await?
            .metadata
            .uid
            .context("uid")?;
        let selector = format!("baton.dev/job-uid={uid}");
        let mut to_pod_running = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let pods = step_pods(&ns).list(&kube::api::ListParams::default().labels(&selector)).await?;
            if pods.items.iter().any(|p| {
                matches!(crate::support::pod_phase(p), "Running" | "Succeeded")
            }) {
                to_pod_running = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let j = wait_for(&jobs(&ns), "one", phase_is(JobPhase::Succeeded), 120).await?;
        let to_done = started.elapsed();
        println!("TIMING kubernetes backend: apply->step pod Running {to_pod_running:?} apply->Succeeded {to_done:?}");
        let st = j.status.context("status")?;
        ensure!(st.outputs.get("k").map(String::as_str) == Some("v"), "{:?}", st.outputs);
        ensure!(st.steps[0].pod_name.is_some(), "{:?}", st.steps);
        let reader = sa_token(&ns, "reader", true).await?;
        let (code, body) = read_log(&s.ctl.url, &ns.name, "one", "hello", Some(&reader)).await?;
        ensure!(code == 200 && body == "hello from a pod\n", "{code} {body:?}");
        // Finished: its step pod is removed (the log and status stay).
        step_pods_removed(&ns.client, &ns.name, &uid, 30).await?;
        let (code, again) = read_log(&s.ctl.url, &ns.name, "one", "hello", Some(&reader)).await?;
        ensure!(code == 200 && again == body, "log after the clean-up: {code} {again:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn killing_the_runner_mid_step_resumes_without_rerun_or_lost_lines() {
    in_namespace("job-restart", |ns| async move {
        let mut s = setup_with(&ns, "kubernetes").await?;
        let script = "for i in $(seq 1 40); do echo line $i; sleep 0.25; done";
        let recorder = StepPodRecorder::start(&ns.client, &ns.name, "count");
        apply(&ns, &job("count", "pool=e2e", serde_json::json!([
            { "name": "count", "image": crate::support::STEP_IMAGE, "script": script },
            { "name": "after", "image": crate::support::STEP_IMAGE, "dependsOn": ["count"], "script": "echo after" }
        ]))?)
        .await?;
        let reader = sa_token(&ns, "reader", true).await?;
        // Wait until some lines reached the server, then crash the runner.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, body) = read_log(&s.ctl.url, &ns.name, "count", "count", Some(&reader)).await?;
            if code == 200 && body.contains("line 5\n") {
                break;
            }
            ensure!(Instant::now() < deadline, "no log lines arrived: {code} {body:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        s.runner.proc.kill().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let runner = Agent::start_with_backend(
            &s.ctl.url,
            &ns.name,
            "r1",
            &s.dir.join("r1"),
            Some(&s.token),
            "",
            "kubernetes",
        )
        .await?;
        runner.wait_ready(200, 30).await?;
        runner.proc.wait_for_log("resuming an assigned job", 30).await?;
        let j = wait_for(&jobs(&ns), "count", phase_is(JobPhase::Succeeded), 180).await?;
        let st = j.status.context("status")?;
        ensure!(st.epoch == Some(1), "same runner, same epoch: {st:?}");
        let (code, body) = read_log(&s.ctl.url, &ns.name, "count", "count", Some(&reader)).await?;
        let want: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        ensure!(code == 200 && body == want, "log after the restart: {body:?}");
        let uid = j.metadata.uid.context("uid")?;
        ensure!(recorder.pods_of("count") == 1, "exactly one pod for the step, got {:?}", recorder.all());
        step_pods_removed(&ns.client, &ns.name, &uid, 30).await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn killing_the_controller_mid_step_loses_no_line_and_runs_nothing_twice() {
    in_namespace("job-ctl-restart", |ns| async move {
        let mut s = setup_with(&ns, "kubernetes").await?;
        let script = "for i in $(seq 1 40); do echo line $i; sleep 0.25; done";
        let recorder = StepPodRecorder::start(&ns.client, &ns.name, "count");
        apply(
            &ns,
            &job(
                "count",
                "pool=e2e",
                serde_json::json!([
                    { "name": "count", "image": crate::support::STEP_IMAGE, "script": script }
                ]),
            )?,
        )
        .await?;
        let reader = sa_token(&ns, "reader", true).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, body) =
                read_log(&s.ctl.url, &ns.name, "count", "count", Some(&reader)).await?;
            if code == 200 && body.contains("line 5\n") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "no log lines arrived: {code} {body:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        s.ctl.proc.kill().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ctl2 = Controller::start(&ns.name, &s.ctl.addr).await?;
        let j = wait_for(&jobs(&ns), "count", phase_is(JobPhase::Succeeded), 180).await?;
        let st = j.status.context("status")?;
        ensure!(
            st.epoch == Some(1) && st.runner.as_deref() == Some("r1"),
            "{st:?}"
        );
        let (code, body) = read_log(&ctl2.url, &ns.name, "count", "count", Some(&reader)).await?;
        let want: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        ensure!(
            code == 200 && body == want,
            "log after the restart: {body:?}"
        );
        let uid = j.metadata.uid.context("uid")?;
        ensure!(
            recorder.pods_of("count") == 1,
            "exactly one pod, got {:?}",
            recorder.all()
        );
        step_pods_removed(&ns.client, &ns.name, &uid, 30).await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_lost_runner_is_replaced_and_the_new_one_adopts_the_step_pod() {
    in_namespace("job-lost", |ns| async move {
        let ctl = Controller::start_with_env(
            &ns.name,
            "127.0.0.1:0",
            &[("BATON_RUNNER_LOST_AFTER", "3s")],
        )
        .await?;
        let dir = TempDir::new(&ns.name);
        let mut agents = Vec::new();
        for r in ["r1", "r2"] {
            let out = baton_ok(&[
                "token", "create", r, "-n", &ns.name, "--runner", r, "--labels", "pool=e2e",
            ])
            .await?;
            let a = Agent::start_with_backend(
                &ctl.url,
                &ns.name,
                r,
                &dir.join(r),
                Some(out.trim()),
                "",
                "kubernetes",
            )
            .await?;
            a.wait_ready(200, 30).await?;
            agents.push(a);
        }
        let script = "for i in $(seq 1 40); do echo line $i; sleep 0.25; done";
        let recorder = StepPodRecorder::start(&ns.client, &ns.name, "count");
        apply(
            &ns,
            &job(
                "count",
                "pool=e2e",
                serde_json::json!([
                    { "name": "count", "image": crate::support::STEP_IMAGE, "script": script }
                ]),
            )?,
        )
        .await?;
        let j = wait_for(&jobs(&ns), "count", phase_is(JobPhase::Running), 60).await?;
        let first = j.status.and_then(|s| s.runner).context("runner")?;
        let reader = sa_token(&ns, "reader", true).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, body) =
                read_log(&ctl.url, &ns.name, "count", "count", Some(&reader)).await?;
            if code == 200 && body.contains("line 5\n") {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "no log lines arrived: {code} {body:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The runner holding the Job dies for good.
        let idx = if first == "r1" { 0 } else { 1 };
        agents[idx].proc.kill().await;
        let j = wait_for(&jobs(&ns), "count", phase_is(JobPhase::Succeeded), 180).await?;
        let st = j.status.context("status")?;
        ensure!(
            st.epoch == Some(2) && st.runner.as_deref() != Some(first.as_str()),
            "handed over at epoch 2: {st:?}"
        );
        let (code, body) = read_log(&ctl.url, &ns.name, "count", "count", Some(&reader)).await?;
        let want: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        ensure!(
            code == 200 && body == want,
            "log after the hand-over: {body:?}"
        );
        let uid = j.metadata.uid.context("uid")?;
        ensure!(
            recorder.pods_of("count") == 1,
            "the step pod was adopted, not re-run: {:?}",
            recorder.all()
        );
        step_pods_removed(&ns.client, &ns.name, &uid, 30).await?;
        Ok(())
    })
    .await;
}

/// `ttlSecondsAfterFinished`: the finished Job is deleted by the controller, and its
/// step pods go with it (owner references, garbage collection).
#[tokio::test]
async fn a_finished_job_is_deleted_after_its_ttl_with_its_step_pods() {
    in_namespace("job-ttl", |ns| async move {
        let s = setup_with(&ns, "kubernetes").await?;
        let mut j = job(
            "short-lived",
            "pool=e2e",
            serde_json::json!([{ "name": "hello", "image": crate::support::STEP_IMAGE, "script": "echo hi" }]),
        )?;
        j.spec.ttl_seconds_after_finished = Some(2);
        apply(&ns, &j).await?;
        let done = wait_for(&jobs(&ns), "short-lived", phase_is(JobPhase::Succeeded), 60).await?;
        let uid = done.metadata.uid.clone().context("uid")?;
        let finished = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(60),
            kube::runtime::wait::await_condition(
                jobs(&ns),
                "short-lived",
                kube::runtime::wait::conditions::is_deleted(&uid),
            ),
        )
        .await
        .context("the Job still exists 60s after it finished")??;
        let after = finished.elapsed();
        ensure!(after >= Duration::from_secs(1), "deleted {after:?} after finishing, before its TTL");
        let selector = format!("baton.dev/job-uid={uid}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !step_pods(&ns)
            .list(&kube::api::ListParams::default().labels(&selector))
            .await?
            .items
            .is_empty()
        {
            ensure!(Instant::now() < deadline, "step pods still there 60s after the Job was deleted");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        drop(s);
        Ok(())
    })
    .await;
}
