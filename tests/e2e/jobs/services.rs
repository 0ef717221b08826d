//! Service steps on step pods: the realistic `examples/ci.yaml` (a web service,
//! tests against it, an allowed lint failure) on the cluster and with `baton
//! run`; a dependent reaching its service by step name; a service that ends
//! early failing its Job with `ServiceExited`.

#[allow(clippy::wildcard_imports)]
use super::*;

fn example_ci() -> anyhow::Result<Job> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ci.yaml");
    let mut job: Job = serde_saphyr::from_str(&std::fs::read_to_string(path)?)?;
    job.metadata.generate_name = None;
    job.metadata.name = Some("ci".into());
    job.spec.runner_selector = Some(serde_json::from_value(
        serde_json::json!({ "matchLabels": { "pool": "e2e" } }),
    )?);
    Ok(job)
}

#[tokio::test]
async fn services_serve_their_dependents_by_name_and_an_early_end_fails_the_job() {
    in_namespace("job-services", |ns| async move {
        let _s = setup_with(&ns, "kubernetes").await?;
        let image = crate::support::STEP_IMAGE;
        apply(&ns, &example_ci()?).await?;
        apply(&ns, &job("by-name", "pool=e2e", serde_json::json!([
            { "name": "cache", "image": image, "service": true, "ports": [{ "port": 8080 }],
              "script": "mkdir -p /tmp/www && echo cached > /tmp/www/k && exec httpd -f -p 8080 -h /tmp/www" },
            { "name": "use", "image": image, "dependsOn": ["cache"],
              "script": "echo by_name=$(wget -q -O - http://cache:8080/k) >> $BATON_OUTPUT" },
        ]))?)
        .await?;
        apply(&ns, &job("early", "pool=e2e", serde_json::json!([
            { "name": "db", "image": image, "service": true, "script": "echo giving up; exit 3" },
            { "name": "slow", "image": image, "dependsOn": ["db"], "script": "sleep 5" },
        ]))?)
        .await?;

        let j = wait_for(&jobs(&ns), "ci", phase_is(JobPhase::Succeeded), 180).await?;
        let st = j.status.context("status")?;
        let step = |n: &str| st.steps.iter().find(|s| s.name == n).cloned();
        let web = step("web").context("web")?;
        ensure!(
            web.phase == StepPhase::Succeeded && web.reason.as_deref() == Some("ServiceStopped"),
            "{web:?}"
        );
        ensure!(st.outputs.get("version").map(String::as_str) == Some("1.4.2"), "{:?}", st.outputs);
        ensure!(step("lint").is_some_and(|l| l.is_allowed_failure()), "{:?}", st.steps);

        let j = wait_for(&jobs(&ns), "by-name", phase_is(JobPhase::Succeeded), 120).await?;
        let st = j.status.context("status")?;
        ensure!(st.outputs.get("by_name").map(String::as_str) == Some("cached"), "{:?}", st.outputs);

        let j = wait_for(&jobs(&ns), "early", phase_is(JobPhase::Failed), 120).await?;
        let st = j.status.context("status")?;
        let db = st.steps.iter().find(|s| s.name == "db").context("db")?;
        ensure!(db.reason.as_deref() == Some("ServiceExited"), "{db:?}");
        let failed = conditions::find(&st.conditions, "Failed").context("Failed")?;
        ensure!(failed.message.contains("db (ServiceExited)"), "{failed:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn the_ci_example_runs_locally_too() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ci.yaml");
    let (code, out, err) = crate::procs::baton(&["run", path])
        .await
        .expect("baton run");
    assert_eq!(code, 0, "baton run examples/ci.yaml: {out}\n{err}");
    assert!(out.contains("tests passed against version 1.4.2"), "{out}");
    assert!(out.contains("tested version 1.4.2"), "{out}");
}
