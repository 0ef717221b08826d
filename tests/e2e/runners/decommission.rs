//! A runner away from its controller: Idle in its Runner's status, and a
//! decommission that waits for it to come back.

#[allow(clippy::wildcard_imports)]
use super::*;

#[tokio::test]
async fn an_idle_runner_shows_in_status_and_is_decommissioned_when_it_returns() {
    in_namespace("decom-later", |ns| async move {
        let ctl = Controller::start(&ns.name, "127.0.0.1:0").await?;
        // Its runners register without a token: an operator opted the namespace in.
        ns.allow_pending_runners().await?;
        let dir = TempDir::new(&ns.name);
        let state = dir.join("r1");
        let mut agent = Agent::start(&ctl.url, &ns.name, "r1", &state, None, "").await?;
        let api = runners(&ns);
        wait_for(&api, "r1", runner_is(AdoptionState::Pending, false), 30).await?;
        baton_ok(&["runner", "adopt", "r1", "-n", &ns.name]).await?;
        wait_for(&api, "r1", runner_is(AdoptionState::Adopted, true), 30).await?;

        // Away: its channel ended, so the Runner says Idle (not just Disconnected).
        agent.proc.kill().await;
        wait_for(&api, "r1", runner_reason("Connected", "Idle"), 30).await?;

        // Decommissioned while away: nothing can be told yet, the request waits.
        baton_ok(&["runner", "decommission", "r1", "-n", &ns.name]).await?;
        wait_for(&api, "r1", runner_reason("Ready", "Decommissioning"), 30).await?;
        ensure!(
            state.exists(),
            "nothing happened to the state directory yet"
        );

        // Back with its state directory: told at once, it wipes it and exits 0.
        let mut back = Agent::start(&ctl.url, &ns.name, "r1", &state, None, "").await?;
        let status = back.proc.wait_exit(30).await?;
        ensure!(status.code() == Some(0), "runner exited {status:?}");
        ensure!(!state.exists(), "state directory still there");
        wait_gone(&api, "r1", 30)
            .await
            .context("the decommissioned Runner was not deleted")?;
        wait_gone(&tokens(&ns), "r1-adopted", 30)
            .await
            .context("the adoption token of a decommissioned runner was not deleted")?;
        Ok(())
    })
    .await;
}
