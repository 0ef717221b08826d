//! A benchmark, not a test (ignored; `make bench-content` runs it): a 100 MB
//! tree of 10,000 files sent with `job run --upload` to a kubernetes-backend
//! runner, unpacked into the Job's claim by a helper pod; a step rewrites every
//! file and collects its changes, which come back through another helper; `job
//! artifacts` fetches and extracts them. Prints each phase's time and rate,
//! from the CLI's clock and the runner's own `workspace helper done` lines.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, ensure};
use baton::crd::job::JobPhase;

use crate::jobs::{jobs, phase_is, sa_token_may, setup_with};
use crate::procs::{BATON, TempDir};
use crate::support::{STEP_IMAGE, in_namespace, wait_for};

const FILES: usize = 10_000;
const FILE_BYTES: usize = 10_000;

/// Incompressible bytes (xorshift), so the archive is as large as the tree.
fn make_tree(root: &Path) -> anyhow::Result<u64> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut body = vec![0u8; FILE_BYTES];
    for i in 0..FILES {
        let dir = root.join(format!("d{:03}", i / 100));
        std::fs::create_dir_all(&dir)?;
        for b in &mut body {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state.to_le_bytes()[0];
        }
        std::fs::write(dir.join(format!("f{i:05}.bin")), &body)?;
    }
    Ok((FILES * FILE_BYTES) as u64)
}

fn manifest() -> String {
    format!(
        "apiVersion: baton.dev/v1alpha1
kind: Job
metadata:
  generateName: bench-content-
spec:
  runnerSelector:
    matchLabels:
      pool: e2e
  steps:
  - name: count
    image: {STEP_IMAGE}
    script: test \"$(find . -type f -name '*.bin' | wc -l)\" = {FILES}
  - name: rewrite
    image: {STEP_IMAGE}
    dependsOn: [count]
    collect: changes
    script: for f in $(find . -type f -name '*.bin'); do echo x >> \"$f\"; done
"
    )
}

/// `(start_s, exec_s)` of the runner's helper for `purpose`.
fn helper_times(logs: &str, purpose: &str) -> Option<(f64, f64)> {
    let line = logs.lines().find(|l| {
        l.contains("workspace helper done") && l.contains(&format!("purpose=\"{purpose}\""))
    })?;
    let field = |name: &str| -> Option<f64> {
        let rest = &line[line.find(&format!("{name}="))? + name.len() + 1..];
        rest.split_whitespace().next()?.parse().ok()
    };
    Some((field("start_s")?, field("exec_s")?))
}

fn rate(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

#[tokio::test]
#[ignore = "a benchmark: make bench-content"]
async fn bench_content_through_step_pods() {
    in_namespace("bench-content", |ns| async move {
        let s = setup_with(&ns, "kubernetes").await?;
        let dev = sa_token_may(&ns, "dev", &["get", "create"]).await?;
        let home = TempDir::new(&format!("{}-home", ns.name));
        let tree_bytes = make_tree(&home.join("repo"))?;
        std::fs::write(home.join("job.yaml"), manifest())?;

        let started = Instant::now();
        let out = tokio::process::Command::new(BATON)
            .args(["job", "run", "job.yaml", "--upload", "repo", "-n", &ns.name])
            .current_dir(&home.0)
            .env("BATON_SERVER", &s.ctl.url)
            .env("BATON_TOKEN", &dev)
            .output()
            .await?;
        let upload = started.elapsed().as_secs_f64();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(out.status.success(), "{said}");
        let name = said
            .lines()
            .find_map(|l| l.strip_prefix("job.baton.dev/")?.strip_suffix(" created"))
            .context("no Job created")?
            .to_owned();
        let done = wait_for(&jobs(&ns), &name, phase_is(JobPhase::Succeeded), 600).await?;
        let run = started.elapsed().as_secs_f64() - upload;
        let content = done.spec.content.clone().context("content")?;
        let status = done.status.clone().unwrap_or_default();
        let packed = status
            .steps
            .iter()
            .find_map(|s| s.artifacts.clone())
            .context("rewrite's archive")?;

        let fetched = Instant::now();
        let dir = home.join("out");
        let got = tokio::process::Command::new(BATON)
            .args(["job", "artifacts", &name, "-o", &dir.to_string_lossy(), "-n", &ns.name])
            .env("BATON_SERVER", &s.ctl.url)
            .env("BATON_TOKEN", &dev)
            .output()
            .await?;
        let artifacts = fetched.elapsed().as_secs_f64();
        ensure!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
        ensure!(usize::try_from(packed.modified)? == FILES, "{packed:?}");
        let packed_size = u64::try_from(packed.size)?;

        let logs = s.runner.proc.logs();
        let content_size = u64::try_from(content.size)?;
        println!(
            "content through step pods: {FILES} files, {:.1} MB tree, content {:.1} MB, changes {:.1} MB",
            tree_bytes as f64 / 1e6,
            content_size as f64 / 1e6,
            packed.size as f64 / 1e6
        );
        println!("  {:<44} {:>8} {:>10}", "phase", "seconds", "MB/s");
        let row = |what: &str, secs: f64, bytes: u64| {
            println!("  {what:<44} {secs:>8.2} {:>10.0}", rate(bytes, secs));
        };
        row("job run --upload: walk, pack, send, create", upload, content_size);
        for (purpose, bytes) in [("seed", content_size), ("snapshot", tree_bytes), ("changes", packed_size)] {
            let (start, exec) = helper_times(&logs, purpose)
                .with_context(|| format!("no `workspace helper done` line for {purpose}"))?;
            row(&format!("helper {purpose}: pod start"), start, 0);
            row(&format!("helper {purpose}: exec (stream + work)"), exec, bytes);
        }
        row("job created -> Succeeded (both steps)", run, 0);
        row("job artifacts: fetch, check, extract", artifacts, packed_size);
        Ok(())
    })
    .await;
}
