//! `kubectl baton job run FILE --here` on the real cluster: the Job runs on the
//! CLI's own direct-only runner (the current directory as its workspace) while a
//! static runner whose labels match stays idle; the CLI exits with the Job's
//! result; Ctrl-C cancels the Job; afterwards no Runner or RunnerToken is left.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use baton::crd::job::JobPhase;
use baton::crd::{Runner, RunnerToken};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::jobs::{jobs, phase_is, sa_token, setup};
use crate::procs::{Proc, TempDir};
use crate::support::{TestNs, in_namespace, wait_for};

/// A Job whose selector matches the static runner `r1` (`pool=e2e`).
fn manifest(name: &str, script: &str) -> String {
    format!(
        "apiVersion: baton.dev/v1alpha1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  runnerSelector:\n    matchLabels:\n      pool: e2e\n  steps:\n  - name: only\n    image: busybox\n    script: |\n      {script}\n"
    )
}

/// `baton job run FILE --here` started in `dir`, logs read with `token`.
fn here(ns: &TestNs, dir: &Path, file: &str, server: &str, token: &str) -> anyhow::Result<Proc> {
    let args = ["job", "run", file, "--here", "-n", &ns.name];
    let envs = [("BATON_SERVER", server), ("BATON_TOKEN", token)];
    Proc::spawn_in(&format!("here-{file}"), &args, &envs, dir)
}

/// Runners and RunnerTokens in the namespace other than the static `r1`/`t1`.
async fn leftovers(ns: &TestNs) -> anyhow::Result<Vec<String>> {
    let lp = ListParams::default();
    let runners: Api<Runner> = Api::namespaced(ns.client.clone(), &ns.name);
    let tokens: Api<RunnerToken> = Api::namespaced(ns.client.clone(), &ns.name);
    let mut left: Vec<String> = runners
        .list(&lp)
        .await?
        .iter()
        .map(|r| format!("runner {}", r.name_any()))
        .collect();
    left.extend(
        tokens
            .list(&lp)
            .await?
            .iter()
            .map(|t| format!("token {}", t.name_any())),
    );
    left.retain(|n| n != "runner r1" && n != "token t1");
    Ok(left)
}

/// No Runner or RunnerToken of the CLI's is left.
async fn nothing_left(ns: &TestNs) -> anyhow::Result<()> {
    let left = leftovers(ns).await?;
    ensure!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

#[tokio::test]
async fn a_here_job_runs_on_the_clis_runner_while_a_matching_static_runner_stays_idle() {
    in_namespace("here", |ns| async move {
        let s = setup(&ns).await?;
        let reader = sa_token(&ns, "reader", true).await?;
        let cwd = TempDir::new(&format!("{}-cwd", ns.name));
        std::fs::write(cwd.join("input.txt"), "from the cwd\n")?;
        std::fs::write(
            cwd.join("ok.yaml"),
            manifest("ok", "cat input.txt; echo made > made.txt"),
        )?;
        let started = Instant::now();
        let mut cli = here(&ns, &cwd.0, "ok.yaml", &s.ctl.url, &reader)?;
        let exit = cli.wait_exit(120).await?;
        eprintln!("--here run took {:?}", started.elapsed());
        ensure!(exit.code() == Some(0), "exit {exit}");
        ensure!(
            cli.logs().contains("from the cwd"),
            "the step read the current directory"
        );
        let made = std::fs::read_to_string(cwd.join("made.txt")).context("made.txt")?;
        ensure!(
            made == "made\n",
            "the step wrote into the current directory: {made:?}"
        );
        let done = jobs(&ns).get("ok").await?;
        let status = done.status.unwrap_or_default();
        ensure!(
            status.phase == Some(JobPhase::Succeeded),
            "{:?}",
            status.phase
        );
        let runner = status.runner.unwrap_or_default();
        ensure!(runner.starts_with("here-"), "ran on {runner}");
        ensure!(done.spec.runner_name.as_deref() == Some(runner.as_str()));
        ensure!(
            !s.runner.proc.logs().contains("job assigned"),
            "the static runner took a job:\n{}",
            s.runner.proc.logs()
        );
        nothing_left(&ns).await?;

        // A failing step: the CLI exits 1, and still cleans up.
        std::fs::write(cwd.join("bad.yaml"), manifest("bad", "echo broken; exit 3"))?;
        let mut cli = here(&ns, &cwd.0, "bad.yaml", &s.ctl.url, &reader)?;
        let exit = cli.wait_exit(120).await?;
        ensure!(exit.code() == Some(1), "exit {exit}");
        wait_for(&jobs(&ns), "bad", phase_is(JobPhase::Failed), 5).await?;
        nothing_left(&ns).await?;

        // A Job that already names a runner is refused before anything is created.
        let named = manifest("named", "echo hi").replace("spec:\n", "spec:\n  runnerName: r1\n");
        std::fs::write(cwd.join("named.yaml"), named)?;
        let mut cli = here(&ns, &cwd.0, "named.yaml", &s.ctl.url, &reader)?;
        let exit = cli.wait_exit(30).await?;
        ensure!(exit.code() == Some(1), "exit {exit}");
        ensure!(cli.logs().contains("names runner r1"), "{}", cli.logs());
        ensure!(
            jobs(&ns).get_opt("named").await?.is_none(),
            "no Job created"
        );
        nothing_left(&ns).await?;
        drop(s);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn ctrl_c_cancels_the_here_job_then_cleans_up() {
    in_namespace("here-int", |ns| async move {
        let s = setup(&ns).await?;
        let reader = sa_token(&ns, "reader", true).await?;
        let cwd = TempDir::new(&format!("{}-cwd", ns.name));
        std::fs::write(
            cwd.join("slow.yaml"),
            manifest("slow", "echo slow step begins; sleep 300"),
        )?;
        let mut cli = here(&ns, &cwd.0, "slow.yaml", &s.ctl.url, &reader)?;
        cli.wait_for_log("slow step begins", 90).await?;
        cli.signal(nix::sys::signal::Signal::SIGINT)?;
        let exit = cli.wait_exit(60).await?;
        ensure!(exit.code() == Some(1), "exit {exit}");
        ensure!(
            cli.logs().contains("cancelling job.baton.dev/slow"),
            "{}",
            cli.logs()
        );
        let done = jobs(&ns).get("slow").await?;
        let phase = done.status.and_then(|s| s.phase);
        ensure!(phase == Some(JobPhase::Cancelled), "{phase:?}");
        nothing_left(&ns).await?;
        drop(s);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn here_without_rbac_on_runner_tokens_names_the_permission() {
    in_namespace("here-rbac", |ns| async move {
        // May read Jobs (and their logs), nothing else.
        let token = sa_token(&ns, "dev", true).await?;
        let cwd = TempDir::new(&format!("{}-cwd", ns.name));
        let kubeconfig = crate::namespaces::sa_kubeconfig(&ns, "dev", &cwd).await?;
        std::fs::write(cwd.join("j.yaml"), manifest("j", "echo hi"))?;
        let kubeconfig = kubeconfig.to_str().context("path")?;
        let args = [
            "job",
            "run",
            "j.yaml",
            "--here",
            "--kubeconfig",
            kubeconfig,
            "-n",
            &ns.name,
        ];
        let envs = [
            ("BATON_SERVER", "http://127.0.0.1:9"),
            ("BATON_TOKEN", token.as_str()),
        ];
        let mut cli = Proc::spawn_in("here-rbac", &args, &envs, &cwd.0)?;
        let exit = cli.wait_exit(60).await?;
        ensure!(exit.code() == Some(1), "exit {exit}");
        let want = format!(
            "needs permission to create runnertokens.baton.dev in namespace {}",
            ns.name
        );
        ensure!(cli.logs().contains(&want), "{}", cli.logs());
        ensure!(
            jobs(&ns)
                .list(&ListParams::default())
                .await?
                .items
                .is_empty(),
            "no Job created"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn here_without_a_controller_fails_within_its_wait() {
    // No controller serves this namespace: the token is never minted.
    in_namespace("here-noctl", |ns| async move {
        let cwd = TempDir::new(&format!("{}-cwd", ns.name));
        std::fs::write(cwd.join("j.yaml"), manifest("j", "echo hi"))?;
        let args = [
            "job",
            "run",
            "j.yaml",
            "--here",
            "--wait-seconds",
            "5",
            "-n",
            &ns.name,
        ];
        let envs = [
            ("BATON_SERVER", "http://127.0.0.1:9"),
            ("BATON_TOKEN", "unused"),
        ];
        let started = Instant::now();
        let mut cli = Proc::spawn_in("here-noctl", &args, &envs, &cwd.0)?;
        let exit = cli.wait_exit(60).await?;
        ensure!(exit.code() == Some(1), "exit {exit}");
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "took {:?}",
            started.elapsed()
        );
        ensure!(
            cli.logs().contains("did not mint RunnerToken"),
            "{}",
            cli.logs()
        );
        let tokens: Api<RunnerToken> = Api::namespaced(ns.client.clone(), &ns.name);
        ensure!(
            tokens.list(&ListParams::default()).await?.items.is_empty(),
            "token left behind"
        );
        ensure!(
            jobs(&ns)
                .list(&ListParams::default())
                .await?
                .items
                .is_empty(),
            "no Job created"
        );
        Ok(())
    })
    .await;
}
