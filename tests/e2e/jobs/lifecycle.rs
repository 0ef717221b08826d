//! The Job's life where the runner cannot finish it: a cancel whose runner is gone.

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
