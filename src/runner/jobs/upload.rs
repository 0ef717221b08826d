//! A step's change archive goes to the server before the step's status that
//! names it: the server refuses a report naming an archive it does not hold.

use std::path::PathBuf;

use tracing::warn;

use super::{Sink, is_permanent, retry_pause};
use crate::crd::job::StepStatus;

impl Sink {
    /// Upload the archive `status` names (retrying while the server is away). An
    /// archive that cannot be stored is dropped from the status, and its message
    /// says why: the step's result stands, its changes are lost.
    pub(super) async fn upload_changes(&self, status: &StepStatus) -> Option<StepStatus> {
        let artifacts = status.artifacts.as_ref()?;
        let path = self.archive_path(&artifacts.digest)?;
        let claim = &self.claim;
        for attempt in 0u64.. {
            let sent = self
                .client
                .upload_archive(
                    (&claim.namespace, &claim.name),
                    (&self.runner, claim.epoch),
                    &artifacts.digest,
                    &path,
                    &self.token,
                )
                .await;
            let why = match sent {
                Ok(()) => return None,
                Err(e) if is_permanent(&e) || matches!(e, super::ClientError::Archive(_)) => e,
                Err(e) => {
                    warn!(job = %claim.name, step = %status.name, attempt, "archive upload failed, retrying: {e}");
                    tokio::time::sleep(retry_pause(attempt)).await;
                    continue;
                }
            };
            warn!(job = %claim.name, step = %status.name, "the step's changes are lost: {why}");
            let mut without = status.clone();
            without.artifacts = None;
            let note = format!("its changes could not be stored: {why}");
            without.message = Some(match &status.message {
                Some(m) => format!("{m}; {note}"),
                None => note,
            });
            return Some(without);
        }
        None
    }

    /// Where the backend kept the archive with `digest` (both keep them under
    /// the Job's directory).
    fn archive_path(&self, digest: &str) -> Option<PathBuf> {
        let root = self.archive_root.as_ref()?;
        Some(crate::backend::archive_path(root, digest))
    }
}
