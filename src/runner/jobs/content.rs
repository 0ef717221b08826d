//! A Job's content (`spec.content`) comes from the server before its first
//! step: fetched into the Job's directory under its digest (so a restarted
//! runner does not fetch it again), checked against the digest and size the
//! spec names, and only then handed to the executor to unpack.

use std::path::PathBuf;

use tracing::{info, warn};

use super::{ClientError, JobRunner, Sink, is_permanent, retry_pause};
use crate::archive::received;
use crate::crd::job::Content;
use crate::crd::reasons::reason;
use crate::protocol::jobs::ClaimResponse;

/// Why a Job's content is not here: the Job's `reason` and a message.
pub(super) type Missing = (&'static str, String);

/// Tries before a server that keeps failing (not refusing) fails the Job.
const TRIES: u64 = 8;

impl JobRunner {
    /// The archive to seed the Job's workspace from, if it has content.
    pub(super) async fn content(
        &self,
        claim: &ClaimResponse,
        sink: &Sink,
    ) -> Result<Option<PathBuf>, Missing> {
        let Some(content) = claim.spec.content.as_ref() else {
            return Ok(None);
        };
        let dir = self.job_dir(&claim.namespace, &claim.name).join("content");
        let hex = content.digest.trim_start_matches("sha256:");
        let path = dir.join(format!("{hex}.tar.zst"));
        if path.is_file() {
            return Ok(Some(path));
        }
        let unavailable = |why: String| (reason::CONTENT_UNAVAILABLE, why);
        std::fs::create_dir_all(&dir)
            .map_err(|e| unavailable(format!("create {}: {e}", dir.display())))?;
        for attempt in 0..TRIES {
            match self.fetch(claim, sink, content, &dir).await {
                Ok(temp) => {
                    temp.persist(&path)
                        .map_err(|e| unavailable(format!("keep {}: {e}", path.display())))?;
                    info!(job = %claim.name, digest = %content.digest, size = content.size, "content fetched");
                    return Ok(Some(path));
                }
                Err(Fetch::Refused(e)) => return Err(unavailable(e.to_string())),
                Err(Fetch::Bad(why)) => return Err((reason::CONTENT_REFUSED, why)),
                Err(Fetch::Again(e)) => {
                    warn!(job = %claim.name, attempt, "fetching the content failed, retrying: {e}");
                    tokio::time::sleep(retry_pause(attempt)).await;
                }
            }
        }
        Err(unavailable(format!(
            "the server did not serve it in {TRIES} tries"
        )))
    }

    async fn fetch(
        &self,
        claim: &ClaimResponse,
        sink: &Sink,
        content: &Content,
        dir: &std::path::Path,
    ) -> Result<tempfile::TempPath, Fetch> {
        let res = self
            .client
            .fetch_content(
                (&claim.namespace, &claim.name),
                (&self.runner, claim.epoch),
                &sink.token,
            )
            .await
            .map_err(|e| {
                if is_permanent(&e) || e.status() == Some(403) {
                    Fetch::Refused(e)
                } else {
                    Fetch::Again(e.to_string())
                }
            })?;
        let mut temp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| Fetch::Again(e.to_string()))?;
        let size = u64::try_from(content.size).unwrap_or(0);
        match received::receive(
            res.bytes_stream(),
            temp.as_file_mut(),
            &content.digest,
            size,
        )
        .await
        {
            Ok(()) => Ok(temp.into_temp_path()),
            Err(e @ (received::Unexpected::Body(_) | received::Unexpected::Write(_))) => {
                Err(Fetch::Again(e.to_string()))
            }
            Err(e) => Err(Fetch::Bad(format!(
                "the content served is not spec.content: {e}"
            ))),
        }
    }
}

enum Fetch {
    /// The server said no, and will again.
    Refused(ClientError),
    /// What came is not what the spec names.
    Bad(String),
    /// Worth another try.
    Again(String),
}
