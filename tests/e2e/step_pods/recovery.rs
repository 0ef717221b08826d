//! Step pods after something went wrong: a new executor resuming a running pod, pods
//! lost to someone else (re-run only while `spec.retries` allows), steps failing on
//! their own (never re-run), Secrets and images that cannot be had.

#[allow(clippy::wildcard_imports)]
use super::*;

#[tokio::test]
async fn a_new_executor_resumes_a_running_step_pod_without_duplicating_its_log() {
    in_namespace("sp-resume", |ns| async move {
        let spec = format!(
            r#"
steps:
  - name: count
    image: {STEP_IMAGE}
    script: |
      for i in $(seq 1 30); do echo line-$i; sleep 0.2; done
      echo n=30 >> "$BATON_OUTPUT"
"#
        );
        let job = create_job(&ns, "resume", &spec).await?;
        // First executor: dropped mid-step, like a runner that died.
        let first = Arc::new(Sink::default());
        let task = {
            let (client, job, first) = (ns.client.clone(), job.clone(), first.clone());
            tokio::spawn(async move {
                let target = JobTarget::for_job(&job).expect("target");
                let backend = KubernetesBackend::new(client, target);
                let workflow = Workflow::new(job.uid().unwrap_or_default());
                let cancel = CancellationToken::new();
                Executor::new(&backend, executor_options())
                    .run(&workflow, &job.spec, &*first, &*first, &cancel)
                    .await
            })
        };
        first.wait_log("count", "line-5\n").await?;
        task.abort();
        let _ = task.await;
        let held = first.logs.lock().unwrap().clone();
        let held_len = held.get("count").map_or(0, Vec::len);
        eprintln!("first executor dropped holding {held_len} bytes");

        // Second executor, new backend: adopts the running pod, tails from the offset.
        let second = Sink::holding(held);
        let report = run_job(&ns, &job, &second, &CancellationToken::new()).await?;
        ensure!(report.phase == JobPhase::Succeeded, "{report:#?}");
        let expected: String = (1..=30).map(|i| format!("line-{i}\n")).collect();
        ensure!(
            second.log("count") == expected,
            "log was {:?}",
            second.log("count")
        );
        ensure!(
            report.outputs.get("n").map(String::as_str) == Some("30"),
            "{:?}",
            report.outputs
        );
        one_pod(&ns.client, &job, &report, "count", "Succeeded").await?;
        Ok(())
    })
    .await;
}

/// Delete the step's first pod once it runs (its log shows `marker`).
async fn delete_when_running(
    ns: &TestNs,
    job: &Job,
    sink: &Sink,
    step: &str,
    marker: &str,
) -> anyhow::Result<()> {
    sink.wait_log(step, marker).await?;
    let pods = pods_of(&ns.client, job, step).await?;
    let pod = pods.first().context("the running pod")?;
    let api: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    api.delete(&pod.name_any(), &DeleteParams::default())
        .await
        .context("delete the step pod")?;
    eprintln!("deleted {} from under the executor", pod.name_any());
    Ok(())
}

#[tokio::test]
async fn a_lost_pod_is_rerun_as_a_new_attempt_when_retries_allow() {
    in_namespace("sp-retry", |ns| async move {
        let spec = format!(
            r#"
retries: 1
steps:
  - name: work
    image: {STEP_IMAGE}
    script: |
      echo attempt
      sleep 4
      echo done
"#
        );
        let job = create_job(&ns, "retry", &spec).await?;
        let sink = Sink::default();
        let cancel = CancellationToken::new();
        let (report, deleted) = tokio::join!(
            run_job(&ns, &job, &sink, &cancel),
            delete_when_running(&ns, &job, &sink, "work", "attempt\n")
        );
        deleted?;
        let report = report?;
        ensure!(report.phase == JobPhase::Succeeded, "{report:#?}");
        ensure!(status(&report, "work").retries == Some(1));
        let pod = one_pod(&ns.client, &job, &report, "work", "Succeeded").await?;
        ensure!(
            pod.labels().get(LABEL_RETRY).map(String::as_str) == Some("1"),
            "the second attempt's pod"
        );
        let log = sink.log("work");
        ensure!(
            log.starts_with("attempt\n[baton] step work: ")
                && log.contains("(PodLost); re-running the step: retry 1 of 1\n"),
            "{log:?}"
        );
        ensure!(log.ends_with("retry 1 of 1\nattempt\ndone\n"), "{log:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_lost_pod_fails_the_step_without_retries() {
    in_namespace("sp-lost", |ns| async move {
        let spec = format!(
            r#"
steps:
  - name: work
    image: {STEP_IMAGE}
    script: |
      echo attempt
      sleep 60
"#
        );
        let job = create_job(&ns, "lost", &spec).await?;
        let sink = Sink::default();
        let cancel = CancellationToken::new();
        let (report, deleted) = tokio::join!(
            run_job(&ns, &job, &sink, &cancel),
            delete_when_running(&ns, &job, &sink, "work", "attempt\n")
        );
        deleted?;
        let report = report?;
        ensure!(report.phase == JobPhase::Failed, "{report:#?}");
        ensure!(
            phase_reason(&report, "work") == (StepPhase::Failed, Some("PodLost".into())),
            "{:?}",
            status(&report, "work")
        );
        ensure!(status(&report, "work").retries.is_none());
        ensure!(sink.log("work") == "attempt\n");
        let pods = pods_of(&ns.client, &job, "work").await?;
        ensure!(
            pods.iter()
                .all(|p| p.labels().get(LABEL_RETRY).map(String::as_str) == Some("0")),
            "no second attempt"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_step_failing_on_its_own_is_not_rerun() {
    in_namespace("sp-noretry", |ns| async move {
        let spec = format!(
            r#"
retries: 1
steps:
  - name: work
    image: {STEP_IMAGE}
    script: |
      echo failing
      exit 7
"#
        );
        let job = create_job(&ns, "noretry", &spec).await?;
        let sink = Sink::default();
        let report = run_job(&ns, &job, &sink, &CancellationToken::new()).await?;
        ensure!(phase_reason(&report, "work") == (StepPhase::Failed, Some("Error".into())));
        ensure!(status(&report, "work").exit_code == Some(7));
        ensure!(status(&report, "work").retries.is_none());
        let pod = one_pod(&ns.client, &job, &report, "work", "Failed").await?;
        ensure!(pod.labels().get(LABEL_RETRY).map(String::as_str) == Some("0"));
        ensure!(sink.log("work") == "failing\n");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn secret_env_and_steps_that_cannot_start() {
    in_namespace("sp-secret", |ns| async move {
        let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "creds" },
            "stringData": { "token": "s3cr3t" }
        }))?;
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .context("create the Secret")?;
        let spec = format!(
            r#"
steps:
  - name: use
    image: {STEP_IMAGE}
    script: |
      [ "$TOKEN" = s3cr3t ] && echo arrived=yes >> "$BATON_OUTPUT"
      echo "token=$TOKEN"
    env:
      - name: TOKEN
        valueFrom:
          secretKeyRef: {{ name: creds, key: token }}
  - name: missing
    image: {STEP_IMAGE}
    script: echo never
    env:
      - name: TOKEN
        valueFrom:
          secretKeyRef: {{ name: absent, key: token }}
  - name: badimage
    image: localhost/baton/does-not-exist:latest
    script: echo never
"#
        );
        let job = create_job(&ns, "secret", &spec).await?;
        let sink = Sink::default();
        let report = run_job(&ns, &job, &sink, &CancellationToken::new()).await?;
        ensure!(
            phase_reason(&report, "use") == (StepPhase::Succeeded, Some("Completed".into())),
            "{:?}",
            status(&report, "use")
        );
        // The value reached the step (checked inside it), and its log shows it
        // masked (docs/security.md#secrets-in-logs).
        ensure!(sink.log("use") == "token=***\n", "{:?}", sink.log("use"));
        ensure!(
            status(&report, "use").phase == StepPhase::Succeeded
                && report.outputs.get("arrived").map(String::as_str) == Some("yes"),
            "{report:#?}"
        );
        ensure!(
            phase_reason(&report, "missing") == (StepPhase::Failed, Some("SecretNotFound".into())),
            "{:?}",
            status(&report, "missing")
        );
        ensure!(
            phase_reason(&report, "badimage")
                == (StepPhase::Failed, Some("ImagePullFailed".into())),
            "{:?}",
            status(&report, "badimage")
        );
        for step in ["use", "missing", "badimage"] {
            ensure!(
                pods_of(&ns.client, &job, step).await?.len() == 1,
                "{step}: one pod"
            );
        }
        // The pods of the Job go with it.
        let backend = backend(&ns, &job, quick());
        backend
            .destroy_workflow(&Workflow::new(job.uid().unwrap_or_default()))
            .await?;
        Ok(())
    })
    .await;
}
