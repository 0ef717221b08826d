//! Executor overhead on a wide DAG of trivial steps, local backend.
//!
//! 200 steps running `true`: 1 root → 198 in parallel → 1 join depending on all
//! 198 (the CRD admits up to 200 steps and 200 `dependsOn` entries). Reports the
//! executor's wall time, and the
//! wall time of spawning the same 200 processes directly with the same ordering
//! (no log files, no pipes, no executor), so "overhead per step" is
//! (executor − direct) / 200. Run: `cargo bench --bench executor` (`make bench-local`).

use std::time::{Duration, Instant};

use baton::backend::{LocalBackend, Workflow};
use baton::crd::{JobSpec, Step};
use baton::executor::{CancellationToken, Discard, Executor, ExecutorOptions};
use futures::future::join_all;

const WIDE: usize = 198;
const ITERATIONS: usize = 5;

fn step(name: String, depends_on: Vec<String>) -> Step {
    Step {
        name,
        image: "busybox:1.36".into(),
        command: Some(vec!["true".into()]),
        depends_on: (!depends_on.is_empty()).then_some(depends_on),
        ..Default::default()
    }
}

fn wide_job() -> JobSpec {
    let wide: Vec<String> = (0..WIDE).map(|i| format!("wide-{i:03}")).collect();
    let mut steps = vec![step("root".into(), vec![])];
    steps.extend(wide.iter().map(|w| step(w.clone(), vec!["root".into()])));
    steps.push(step("join".into(), wide));
    JobSpec {
        steps,
        ..Default::default()
    }
}

async fn spawn_true(n: usize) {
    let runs = (0..n).map(|_| async {
        match tokio::process::Command::new("true").status().await {
            Ok(status) if status.success() => {}
            other => eprintln!("direct spawn of `true` failed: {other:?}"),
        }
    });
    join_all(runs).await;
}

/// The same processes in the same waves, spawned directly.
async fn direct() -> Duration {
    let started = Instant::now();
    for wave in [1, WIDE, 1] {
        spawn_true(wave).await;
    }
    started.elapsed()
}

async fn executor(
    spec: &JobSpec,
    root: &std::path::Path,
    iteration: usize,
) -> Result<Duration, String> {
    let backend = LocalBackend::new(root);
    let executor = Executor::new(&backend, ExecutorOptions::default());
    let workflow = Workflow::new(format!("bench-{iteration}"));
    let started = Instant::now();
    let report = executor
        .run(
            &workflow,
            spec,
            &Discard,
            &Discard,
            &CancellationToken::new(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    if report.phase != baton::crd::job::JobPhase::Succeeded {
        return Err(format!(
            "job ended {:?}: {:?}",
            report.phase, report.message
        ));
    }
    Ok(elapsed)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    let spec = wide_job();
    let steps = spec.steps.len();
    let root = std::env::temp_dir().join(format!("baton-bench-{}", std::process::id()));
    let mut with_executor = Vec::new();
    let mut without = Vec::new();
    // One warm-up round each, not counted.
    for iteration in 0..=ITERATIONS {
        let e = match executor(&spec, &root, iteration).await {
            Ok(e) => e,
            Err(error) => {
                eprintln!("benchmark run failed: {error}");
                std::process::exit(1);
            }
        };
        let d = direct().await;
        if iteration > 0 {
            with_executor.push(e);
            without.push(d);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    let (e, d) = (median(with_executor.clone()), median(without));
    let per_step = |t: Duration| t / steps as u32;
    println!("executor benchmark: {steps} steps (`true`), 1 -> {WIDE} -> 1, local backend");
    println!(
        "  median of {ITERATIONS} runs (min {}, max {})",
        ms(*with_executor.iter().min().unwrap_or(&e)),
        ms(*with_executor.iter().max().unwrap_or(&e))
    );
    println!(
        "  executor total:           {}  ({} per step)",
        ms(e),
        ms(per_step(e))
    );
    println!(
        "  direct spawn, same waves: {}  ({} per step)",
        ms(d),
        ms(per_step(d))
    );
    println!(
        "  executor overhead:        {} per step  ((executor - direct) / {steps})",
        ms(per_step(e.saturating_sub(d)))
    );
}
