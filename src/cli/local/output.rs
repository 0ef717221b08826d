//! `baton run --output DIR`: the archives of what the Job's steps changed
//! (`collect`, `artifacts`), extracted into DIR in the order the steps ended,
//! so DIR over a copy of the workspace as it was becomes the workspace as the
//! steps left it.

use std::path::Path;

use crate::backend::LocalBackend;
use crate::cli::artifacts::{extract_step, in_order};
use crate::executor::StepReport;

/// Extract every step's archive into `dest`; one line per step says what it did.
pub fn extract_all(
    backend: &LocalBackend,
    steps: &[StepReport],
    dest: &Path,
) -> anyhow::Result<()> {
    let statuses: Vec<_> = steps.iter().map(|s| s.status.clone()).collect();
    for (step, artifacts) in in_order(&statuses) {
        let path = backend.archive_path(&artifacts.digest);
        let file = std::fs::File::open(&path).map_err(|e| {
            anyhow::anyhow!(
                "open the archive of step {} ({}): {e}",
                step.name,
                path.display()
            )
        })?;
        extract_step(&step.name, file, dest)?;
    }
    Ok(())
}
