//! `baton run --output DIR`: the archives of what the Job's steps changed
//! (`collect`, `artifacts`), extracted into DIR in the order the steps ended,
//! so DIR over a copy of the workspace as it was becomes the workspace as the
//! steps left it.

use std::path::Path;

use crate::archive::{self, Limits};
use crate::backend::LocalBackend;
use crate::crd::artifacts::StepArtifacts;
use crate::executor::StepReport;

/// Extract every step's archive into `dest`; one line per step says what it did.
pub fn extract_all(
    backend: &LocalBackend,
    steps: &[StepReport],
    dest: &Path,
) -> anyhow::Result<()> {
    let mut ended: Vec<(&StepReport, &StepArtifacts)> = steps
        .iter()
        .filter_map(|s| Some((s, s.status.artifacts.as_ref()?)))
        .collect();
    ended.sort_by_key(|(s, _)| s.status.completion_time.as_ref().map(|t| t.0));
    for (step, artifacts) in ended {
        let path = backend.archive_path(&artifacts.digest);
        let file = std::fs::File::open(&path).map_err(|e| {
            anyhow::anyhow!(
                "open the archive of step {} ({}): {e}",
                step.status.name,
                path.display()
            )
        })?;
        let done = archive::extract(std::io::BufReader::new(file), dest, &Limits::default())
            .map_err(|e| {
                anyhow::anyhow!("extract the changes of step {}: {e}", step.status.name)
            })?;
        println!(
            "step {}: {} path{} written, {} deleted in {}",
            step.status.name,
            done.written,
            if done.written == 1 { "" } else { "s" },
            done.deleted,
            dest.display()
        );
    }
    Ok(())
}
