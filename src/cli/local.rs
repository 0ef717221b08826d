//! `baton run FILE`: local mode. Runs the Jobs of a manifest file one after
//! another as local processes (images ignored), streams their output, prints a
//! summary. Exit code: 0 every Job succeeded, 1 one failed or was cancelled,
//! 2 the file is unreadable or invalid (nothing runs then).

mod console;
mod manifest;
mod output;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use super::content;
use crate::backend::{Backend, LocalBackend, Workflow};
use crate::crd::JobSpec;
use crate::crd::duration;
use crate::crd::job::JobPhase;
use crate::executor::{CancellationToken, Executor, ExecutorOptions};
use console::Console;

/// Exit codes of `baton run`.
pub const EXIT_SUCCEEDED: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_INVALID: i32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and NO_COLOR is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Arguments of `baton run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A Job manifest; several Jobs in one file (`---`) run one after another.
    pub file: PathBuf,
    /// Time between SIGTERM and SIGKILL when a step is stopped (timeout, Ctrl-C).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Directory for workspaces and step logs; kept afterwards. Default: a new
    /// temporary directory, removed afterwards unless --keep.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep the temporary directory (workspaces, logs, output files).
    #[arg(long)]
    pub keep: bool,
    /// When to colour the output.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: ColorChoice,
    /// Extract what steps with `collect` or `artifacts` changed into DIR (with
    /// several Jobs in the file, into DIR/<job>).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// The directory each Job's workspace starts as a copy of: what its
    /// `spec.inputs` map (all of it by default), less `.git/` and what
    /// `.gitignore` files ignore.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub from: PathBuf,
    /// Start every Job with an empty workspace instead (nothing is copied).
    #[arg(long, conflicts_with = "from")]
    pub empty_workspace: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
}

/// Run `baton run`; returns the exit code.
pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let file = args.file.display().to_string();
    let text = match std::fs::read_to_string(&args.file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("baton run: cannot read {file}: {e}");
            return Ok(EXIT_INVALID);
        }
    };
    let loaded = match manifest::load(&args.file, &text) {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprintln!(
                "baton run: {file} is not a valid Job manifest ({} problem{}):",
                problems.len(),
                plural(problems.len())
            );
            for problem in problems {
                eprintln!("  {problem}");
            }
            return Ok(EXIT_INVALID);
        }
    };
    let color = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    for note in &loaded.notes {
        println!("{note}");
    }
    println!(
        "note: images are ignored in local mode, and with them imagePullPolicy and imagePullSecrets: each step runs as a process on this machine, in a per-Job workspace directory"
    );

    let (root, remove_root) = match &args.work_dir {
        Some(dir) => (dir.clone(), false),
        None => (temp_root(), !args.keep),
    };
    let backend = LocalBackend::new(&root);
    let options = ExecutorOptions {
        grace: args.grace,
        ..Default::default()
    };
    let executor = Executor::new(&backend, options);
    let cancel = CancellationToken::new();
    let ctrl_c = tokio::spawn(cancel_on_ctrl_c(cancel.clone(), args.grace));

    let mut worst = EXIT_SUCCEEDED;
    let mut ids = HashSet::new();
    for (index, job) in loaded.jobs.iter().enumerate() {
        if cancel.is_cancelled() {
            println!("Job {}: not run (cancelled)", job.name);
            worst = EXIT_FAILED;
            continue;
        }
        let mut id = job.name.clone();
        if !ids.insert(id.clone()) {
            id = format!("{}-{}", job.name, index + 1);
            ids.insert(id.clone());
        }
        let workflow = Workflow::new(id);
        let console = Console::new(&job.spec, color);
        let steps = job.spec.steps.len();
        println!("=== Job {} ({steps} step{})", job.name, plural(steps));
        let content = match seed(&args, &job.spec).await {
            Ok(content) => content,
            Err(error) => {
                eprintln!("baton run: Job {}: {error:#}", job.name);
                worst = EXIT_FAILED;
                continue;
            }
        };
        let seeded = content.as_ref().map(content::Packing::path);
        match executor
            .run_seeded(&workflow, &job.spec, seeded, &console, &console, &cancel)
            .await
        {
            Ok(report) => {
                console.summary(&job.name, &report);
                if report.phase != JobPhase::Succeeded {
                    worst = EXIT_FAILED;
                }
                if let Some(dir) = &args.output {
                    let dest = if loaded.jobs.len() > 1 {
                        dir.join(workflow.id.as_str())
                    } else {
                        dir.clone()
                    };
                    if let Err(error) = output::extract_all(&backend, &report.steps, &dest) {
                        eprintln!("baton run: Job {}: {error:#}", job.name);
                        worst = EXIT_FAILED;
                    }
                }
            }
            Err(error) => {
                eprintln!(
                    "baton run: Job {}: {}",
                    job.name,
                    anyhow::Error::from(error)
                        .chain()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(": ")
                );
                worst = EXIT_FAILED;
            }
        }
        if remove_root && let Err(error) = backend.destroy_workflow(&workflow).await {
            tracing::warn!(%error, "remove the Job's workspace");
        }
    }
    ctrl_c.abort();
    if remove_root {
        if let Err(error) = std::fs::remove_dir_all(&root)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, dir = %root.display(), "remove the work directory");
        }
    } else {
        println!("\nworkspaces and step logs kept in {}", root.display());
    }
    Ok(worst)
}

/// The Job's workspace content, packed from `--from` (none with --empty-workspace).
async fn seed(args: &RunArgs, spec: &JobSpec) -> anyhow::Result<Option<content::Packing>> {
    if args.empty_workspace {
        return Ok(None);
    }
    if !args.from.is_dir() {
        anyhow::bail!(
            "--from {}: not a directory (--empty-workspace starts from nothing)",
            args.from.display()
        );
    }
    let inputs = spec.inputs.clone().unwrap_or_default();
    let packing = content::pack_off_runtime(args.from.clone(), inputs).await?;
    println!(
        "workspace: {} from {}",
        packing.summary(),
        args.from.display()
    );
    Ok(Some(packing))
}

/// First Ctrl-C: cancel the run (steps get SIGTERM, then SIGKILL after the grace
/// period); the summary still prints.
async fn cancel_on_ctrl_c(cancel: CancellationToken, grace: Duration) {
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!(
            "\nbaton run: interrupted; stopping the steps (SIGTERM, SIGKILL after {})",
            duration::format(grace)
        );
        cancel.cancel();
    }
}

fn temp_root() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("baton-run-{}-{nanos:09}", std::process::id()))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
