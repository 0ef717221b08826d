//! How steps end, on step pods: a step over its memory limit is reported
//! `OOMKilled` (step reason and the Job's message), and a step allowed to fail
//! fails without failing its Job; a step pod's `artifacts` come back through a
//! workspace helper pod.

#[allow(clippy::wildcard_imports)]
use super::*;

#[tokio::test]
async fn an_oom_killed_step_says_so_and_an_allowed_failure_lets_its_job_succeed() {
    in_namespace("job-step-ends", |ns| async move {
        let _s = setup_with(&ns, "kubernetes").await?;
        let image = crate::support::STEP_IMAGE;
        apply(&ns, &job("oom", "pool=e2e", serde_json::json!([
            {
                "name": "hog",
                "image": image,
                "resources": { "limits": { "memory": "16Mi" } },
                // dd fills a 64 MiB buffer: far over the limit.
                "script": "echo start; dd if=/dev/zero of=/dev/null bs=64M count=1; echo survived",
            },
        ]))?)
        .await?;
        apply(&ns, &job("allowed", "pool=e2e", serde_json::json!([
            { "name": "lint", "image": image, "allowFailure": true, "script": "echo warnings; exit 3" },
            { "name": "build", "image": image, "dependsOn": ["lint"], "script": "echo built" },
            { "name": "on-fail", "image": image, "dependsOn": ["lint"], "when": "onFailure", "script": "echo never" },
        ]))?)
        .await?;

        let j = wait_for(&jobs(&ns), "oom", phase_is(JobPhase::Failed), 120).await?;
        let st = j.status.context("status")?;
        let hog = st.steps.iter().find(|s| s.name == "hog").context("hog")?;
        ensure!(
            hog.phase == StepPhase::Failed && hog.reason.as_deref() == Some("OOMKilled"),
            "{hog:?}"
        );
        ensure!(hog.exit_code.is_some_and(|c| c != 0), "{hog:?}");
        // baton-entrypoint saw the kill in the container's memory cgroup and said
        // so in the termination message: the reason holds even when the
        // runtime's OOM event loses its race with the exit and it says `Error`.
        let pods = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(ns.client.clone(), &ns.name);
        let pod = pods.get(hog.pod_name.as_deref().context("hog's pod")?).await?;
        let terminated = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.into_iter().find(|c| c.name == "step"))
            .and_then(|c| c.state)
            .and_then(|s| s.terminated)
            .context("hog's container ended")?;
        ensure!(
            terminated.message.as_deref() == Some("OOMKilled"),
            "{terminated:?}"
        );
        let failed = conditions::find(&st.conditions, "Failed").context("Failed condition")?;
        ensure!(
            failed.reason == "StepFailed" && failed.message.contains("hog (OOMKilled) failed"),
            "{failed:?}"
        );

        let j = wait_for(&jobs(&ns), "allowed", phase_is(JobPhase::Succeeded), 120).await?;
        let st = j.status.context("status")?;
        let step = |n: &str| st.steps.iter().find(|s| s.name == n).cloned();
        let lint = step("lint").context("lint")?;
        ensure!(
            lint.phase == StepPhase::Failed
                && lint.exit_code == Some(3)
                && lint.reason.as_deref() == Some("Error")
                && lint.is_allowed_failure(),
            "{lint:?}"
        );
        let build = step("build").context("build")?;
        ensure!(
            build.phase == StepPhase::Succeeded && build.reason.as_deref() == Some("Completed"),
            "{build:?}"
        );
        ensure!(
            step("on-fail").map(|s| s.phase) == Some(StepPhase::Skipped),
            "{:?}",
            st.steps
        );
        let complete = conditions::find(&st.conditions, "Complete").context("Complete")?;
        ensure!(
            complete.status == "True" && complete.message == "lint failed (allowed)",
            "{complete:?}"
        );
        Ok(())
    })
    .await;
}

/// A step pod's `artifacts` globs bring back only what they select, through a
/// workspace helper pod (the Job has no `spec.workspace`: collecting gives it
/// one), and `job artifacts` extracts exactly that.
#[tokio::test]
async fn a_step_pods_artifacts_bring_back_only_what_their_globs_select() {
    in_namespace("job-collect-pod", |ns| async move {
        let s = setup_with(&ns, "kubernetes").await?;
        let image = crate::support::STEP_IMAGE;
        apply(&ns, &job("collect", "pool=e2e", serde_json::json!([
            {
                "name": "build",
                "image": image,
                "artifacts": ["dist/**"],
                "script": "mkdir -p dist tmp && echo app > dist/app.txt && echo x > tmp/scratch",
            },
        ]))?)
        .await?;
        let j = wait_for(&jobs(&ns), "collect", phase_is(JobPhase::Succeeded), 120).await?;
        let st = j.status.context("status")?;
        let build = st
            .steps
            .iter()
            .find(|s| s.name == "build")
            .context("build")?;
        let packed = build.artifacts.clone().context("build's archive")?;
        ensure!(packed.modified == 0 && packed.deleted == 0, "{packed:?}");

        let reader = sa_token_may(&ns, "reader", &["get"]).await?;
        let out = crate::procs::TempDir::new(&format!("{}-out", ns.name));
        let got = tokio::process::Command::new(crate::procs::BATON)
            .args([
                "job",
                "artifacts",
                "collect",
                "-o",
                &out.0.to_string_lossy(),
                "-n",
                &ns.name,
            ])
            .env("BATON_SERVER", &s.ctl.url)
            .env("BATON_TOKEN", &reader)
            .output()
            .await?;
        ensure!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        ensure!(std::fs::read_to_string(out.join("dist/app.txt"))? == "app\n");
        ensure!(
            !out.join("tmp").exists(),
            "tmp/ is not selected, yet came back"
        );
        Ok(())
    })
    .await;
}
