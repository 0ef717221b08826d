//! `spec.runnerName` and `baton runner --direct-only`: a direct-only runner takes
//! only Jobs that name it, and says so; a Job naming a runner goes there whatever
//! its selector, or waits saying why.

#[allow(clippy::wildcard_imports)]
use super::*;

fn echo() -> serde_json::Value {
    serde_json::json!([{ "name": "hi", "image": "busybox", "script": "echo hi" }])
}

/// A Job with `selector` that names runner `runner`.
fn named(name: &str, selector: &str, runner: &str) -> anyhow::Result<Job> {
    let mut j = job(name, selector, echo())?;
    j.spec.runner_name = Some(runner.into());
    Ok(j)
}

#[tokio::test]
async fn a_direct_only_runner_takes_only_jobs_that_name_it() {
    in_namespace("job-direct", |ns| async move {
        let s = setup_runner(&ns, "local", &[], &["--direct-only"]).await?;
        let runners: Api<baton::crd::Runner> = Api::namespaced(ns.client.clone(), &ns.name);
        let says_direct = |r: Option<&baton::crd::Runner>| {
            r.and_then(|r| r.status.as_ref()?.direct_only) == Some(true)
        };
        wait_for(&runners, "r1", says_direct, 30)
            .await
            .context("status.directOnly")?;
        let table = baton_ok(&["runner", "list", "-n", &ns.name]).await?;
        let columns: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        ensure!(
            columns[0].get(5) == Some(&"DIRECT-ONLY") && columns[1].get(5) == Some(&"true"),
            "runner list:\n{table}"
        );

        // Its labels match, but it takes no Job by its labels.
        apply(&ns, &job("by-labels", "pool=e2e", echo())?).await?;
        wait_for(
            &jobs(&ns),
            "by-labels",
            scheduled_reason("NoMatchingRunner"),
            30,
        )
        .await?;
        // A Job naming it runs there, its selector unused.
        apply(&ns, &named("named", "pool=nowhere", "r1")?).await?;
        let done = wait_for(&jobs(&ns), "named", phase_is(JobPhase::Succeeded), 60).await?;
        ensure!(done.status.and_then(|s| s.runner).as_deref() == Some("r1"));
        // Naming a runner that is not there: it waits and says why.
        apply(&ns, &named("ghost", "pool=e2e", "r9")?).await?;
        wait_for(
            &jobs(&ns),
            "ghost",
            scheduled_reason("NamedRunnerUnavailable"),
            30,
        )
        .await?;
        let still = jobs(&ns).get("by-labels").await?;
        ensure!(still.status.and_then(|s| s.phase) == Some(JobPhase::Queued));
        drop(s);
        Ok(())
    })
    .await;
}
