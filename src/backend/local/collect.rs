//! What local steps changed: the workspace is snapshotted before a step that
//! collects starts, compared once it ended, and the changes are packed into
//! `<root>/artifacts/<hex>.tar.zst`, named by their digest (the same changes
//! are stored once).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::archive::{self, Extracted, Limits, Packed, Selection, Snapshot};
use crate::backend::BackendError;
use crate::crd::Step;

/// The snapshots taken before collecting steps started, by (workflow, step).
#[derive(Debug, Default)]
pub struct Collector {
    before: Mutex<HashMap<(String, String), Snapshot>>,
}

impl Collector {
    /// Snapshot `workspace` before `step` starts.
    pub async fn before(
        &self,
        key: (String, String),
        workspace: PathBuf,
    ) -> Result<(), BackendError> {
        let step = key.1.clone();
        let snapshot = blocking(&step, "snapshot the workspace", move || {
            archive::snapshot(&workspace)
        })
        .await?;
        self.before
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, snapshot);
        Ok(())
    }

    /// Pack what `step` changed in `workspace` into `store`.
    pub async fn collect(
        &self,
        key: (String, String),
        step: &Step,
        workspace: PathBuf,
        store: PathBuf,
    ) -> Result<Option<Packed>, BackendError> {
        let name = step.name.clone();
        let before = self
            .before
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        let Some(before) = before else {
            return Err(BackendError::Failed {
                step: name,
                doing: "collect its changes",
                message: "the workspace was not snapshotted before it started (the runner restarted while it ran)".into(),
            });
        };
        let selection = match &step.artifacts {
            Some(globs) => {
                Some(
                    Selection::new(globs).map_err(|message| BackendError::InvalidStep {
                        step: name.clone(),
                        message,
                    })?,
                )
            }
            None => None,
        };
        blocking(&name, "pack its changes", move || {
            let after = archive::snapshot(&workspace)?;
            let mut changes = archive::diff(&before, &after);
            if let Some(selection) = selection {
                changes = selection.filter(&changes);
            }
            if changes.is_empty() {
                return Ok(None);
            }
            store_archive(&workspace, &changes, &store).map(Some)
        })
        .await
        .inspect(|packed| {
            let skipped = packed.as_ref().map(|p| p.skipped.as_slice()).unwrap_or_default();
            if !skipped.is_empty() {
                tracing::warn!(step = %step.name, ?skipped, "symlinks leading out of the workspace are not collected");
            }
        })
    }
}

/// Unpack the content archive at `archive` into `workspace`, safely (the
/// extraction refuses what a change archive may not hold).
pub async fn seed(archive: PathBuf, workspace: PathBuf) -> Result<Extracted, BackendError> {
    let unpack = move || {
        let file = std::fs::File::open(&archive)
            .map_err(|e| format!("open {}: {e}", archive.display()))?;
        archive::extract(io::BufReader::new(file), &workspace, &Limits::default())
            .map_err(|e| e.to_string())
    };
    let unpacked = tokio::task::spawn_blocking(unpack)
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    unpacked.map_err(|message| BackendError::Content {
        reason: crate::crd::reasons::reason::CONTENT_REFUSED,
        message,
    })
}

/// Pack into a temporary file, then move it to its content address.
fn store_archive(workspace: &Path, changes: &archive::Changes, store: &Path) -> io::Result<Packed> {
    std::fs::create_dir_all(store)?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
    let temp = store.join(format!(".packing-{}", hex::encode(nonce)));
    let result = (|| {
        let mut file = io::BufWriter::new(std::fs::File::create(&temp)?);
        let packed = archive::pack(workspace, changes, &mut file)?;
        file.flush()?;
        file.get_ref().sync_all()?;
        std::fs::rename(&temp, crate::backend::archive_in(store, &packed.digest))?;
        Ok(packed)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

async fn blocking<T: Send + 'static>(
    step: &str,
    doing: &'static str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, BackendError> {
    let io_error = |source| BackendError::Io {
        step: step.to_owned(),
        doing,
        source,
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| io_error(io::Error::other(e)))?
        .map_err(io_error)
}
