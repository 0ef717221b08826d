//! The queue explains itself: with the one runner busy, Queued Jobs carry
//! `status.queuePosition` in queue order (priority, then age), a later Job of
//! higher priority runs first, and positions move up as Jobs leave the queue.

use std::collections::BTreeMap;

#[allow(clippy::wildcard_imports)]
use super::*;

/// A Job on `pool=e2e` whose one step waits for the file `gate` to exist.
fn gated(name: &str, priority: i32, gate: &std::path::Path) -> anyhow::Result<Job> {
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.2; done; echo through",
        gate.display()
    );
    let mut j = job(
        name,
        "pool=e2e",
        serde_json::json!([{ "name": "wait", "image": "busybox", "script": script }]),
    )?;
    j.spec.priority = Some(priority);
    Ok(j)
}

/// Every Job's `status.queuePosition` (absent ones left out).
async fn positions(ns: &TestNs) -> anyhow::Result<BTreeMap<String, i32>> {
    let list = jobs(ns).list(&Default::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|j| Some((j.metadata.name?, j.status?.queue_position?)))
        .collect())
}

/// Wait until the positions are exactly `want`.
async fn positions_become(ns: &TestNs, want: &[(&str, i32)], secs: u64) -> anyhow::Result<()> {
    let want: BTreeMap<String, i32> = want.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = positions(ns).await?;
        if now == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "queue positions {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn queue_positions_follow_priority_then_age_and_move_up() {
    in_namespace("job-queue", |ns| async move {
        let s = setup(&ns).await?;
        let gate = |name: &str| s.dir.join(&format!("gate-{name}"));
        // r1 takes one Job at a time (maxConcurrentJobs unset: 1).
        apply(&ns, &gated("blocker", 0, &gate("blocker"))?).await?;
        wait_for(&jobs(&ns), "blocker", phase_is(JobPhase::Running), 60).await?;

        // Created in this order; `mid-z` a second before `mid-a` (creationTimestamp
        // has one-second resolution), so FIFO and name order disagree.
        apply(&ns, &gated("low", -5, &gate("low"))?).await?;
        apply(&ns, &gated("mid-z", 0, &gate("mid-z"))?).await?;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        apply(&ns, &gated("mid-a", 0, &gate("mid-a"))?).await?;
        apply(&ns, &gated("high", 10, &gate("high"))?).await?;
        positions_become(
            &ns,
            &[("high", 1), ("mid-z", 2), ("mid-a", 3), ("low", 4)],
            30,
        )
        .await?;

        // `job list` shows the position and why each waits.
        let table = baton_ok(&["job", "list", "-n", &ns.name]).await?;
        let row = |name: &str| -> Vec<String> {
            (table.lines())
                .find(|l| l.split_whitespace().next() == Some(name))
                .map(|l| l.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let mid_a = row("mid-a");
        ensure!(
            mid_a.len() == 7
                && mid_a[..6] == ["mid-a", "Queued", "0", "3", "<none>", "RunnersBusy"],
            "job list:\n{table}"
        );
        ensure!(
            row("blocker").get(1).map(String::as_str) == Some("Running"),
            "{table}"
        );

        // The runner frees up: the later, higher-priority Job goes first.
        std::fs::write(gate("blocker"), "")?;
        wait_for(&jobs(&ns), "high", phase_is(JobPhase::Running), 60).await?;
        positions_become(&ns, &[("mid-z", 1), ("mid-a", 2), ("low", 3)], 30).await?;
        for waiting in ["mid-z", "mid-a", "low"] {
            let j = jobs(&ns).get(waiting).await?;
            ensure!(
                j.status.and_then(|s| s.phase) == Some(JobPhase::Queued),
                "{waiting} left the queue before high finished"
            );
        }

        // Then FIFO within priority 0: mid-z (older) before mid-a.
        std::fs::write(gate("high"), "")?;
        wait_for(&jobs(&ns), "high", phase_is(JobPhase::Succeeded), 60).await?;
        wait_for(&jobs(&ns), "mid-z", phase_is(JobPhase::Running), 60).await?;
        positions_become(&ns, &[("mid-a", 1), ("low", 2)], 30).await?;
        let high = jobs(&ns).get("high").await?;
        ensure!(
            high.status.and_then(|s| s.queue_position).is_none(),
            "a Job out of the queue has no position"
        );
        for name in ["mid-z", "mid-a", "low"] {
            std::fs::write(gate(name), "")?;
        }
        wait_for(&jobs(&ns), "low", phase_is(JobPhase::Succeeded), 90).await?;
        positions_become(&ns, &[], 30).await?;
        Ok(())
    })
    .await;
}
