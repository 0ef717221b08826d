//! `baton workspace` (hidden): what the kubernetes backend's workspace helper
//! pods run. A helper pod mounts a Job's workspace claim and holds; the runner
//! execs these verbs in it and streams archives over stdin and stdout, so no
//! credential and no network path from the pod to anyone is needed.
//!
//! Each verb is the local backend's own code on the pod's `/workspace`: the
//! same snapshot, diff, packer and safe extractor.

use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::archive::{self, Limits, Selection, Snapshot};

#[derive(Debug, clap::Subcommand)]
pub enum WorkspaceVerb {
    /// Keep the helper pod running until SIGTERM, at most `--for` seconds.
    Hold {
        #[arg(long = "for", value_name = "SECONDS", default_value_t = 3600)]
        seconds: u64,
    },
    /// Unpack the content archive on stdin into DIR; print what was written (JSON).
    Seed { dir: PathBuf },
    /// Print DIR's snapshot (JSON).
    Snapshot { dir: PathBuf },
    /// Read a snapshot of DIR on stdin (taken before a step ran); write the
    /// archive of what changed since to stdout, nothing when nothing changed.
    Changes {
        dir: PathBuf,
        /// Keep only changes these globs select (the step's `artifacts`).
        #[arg(long = "artifact", value_name = "GLOB")]
        artifacts: Vec<String>,
    },
}

/// Run one verb; returns the process exit code.
pub async fn run(verb: WorkspaceVerb) -> anyhow::Result<i32> {
    match verb {
        WorkspaceVerb::Hold { seconds } => hold(Duration::from_secs(seconds)).await?,
        WorkspaceVerb::Seed { dir } => {
            let extracted = archive::extract(io::stdin().lock(), &dir, &Limits::default())
                .context("unpack the content")?;
            println!("{}", serde_json::to_string(&extracted)?);
        }
        WorkspaceVerb::Snapshot { dir } => {
            let tree =
                archive::snapshot(&dir).with_context(|| format!("snapshot {}", dir.display()))?;
            serde_json::to_writer(BufWriter::new(io::stdout().lock()), &tree)?;
        }
        WorkspaceVerb::Changes { dir, artifacts } => changes(&dir, &artifacts)?,
    }
    Ok(0)
}

/// PID 1 in its container: SIGTERM has no default action there, so it is
/// waited for explicitly (a deleted helper pod ends at once).
async fn hold(at_most: Duration) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        () = tokio::time::sleep(at_most) => {}
    }
    Ok(())
}

fn changes(dir: &Path, artifacts: &[String]) -> anyhow::Result<()> {
    let mut json = Vec::new();
    io::stdin().lock().read_to_end(&mut json)?;
    let before: Snapshot =
        serde_json::from_slice(&json).context("read the snapshot taken before the step")?;
    let after = archive::snapshot(dir).with_context(|| format!("snapshot {}", dir.display()))?;
    let mut changes = archive::diff(&before, &after);
    if !artifacts.is_empty() {
        changes = Selection::new(artifacts)
            .map_err(anyhow::Error::msg)?
            .filter(&changes);
    }
    if changes.is_empty() {
        return Ok(());
    }
    let mut out = BufWriter::new(io::stdout().lock());
    let packed = archive::pack(dir, &changes, &mut out).context("pack the changes")?;
    out.flush()?;
    for link in &packed.skipped {
        eprintln!("{link}: a symlink leading out of the workspace; not collected");
    }
    Ok(())
}
