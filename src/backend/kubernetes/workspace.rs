//! The Job's content into its workspace claim, and a step's changes out of it,
//! through workspace helper pods ([`helper`]). The snapshot taken before a
//! collecting step is kept by the runner, in memory, as the local backend keeps
//! its own: a runner that restarts while the step runs cannot tell what it
//! changed, and says so.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kube::ResourceExt;
use kube::api::{DeleteParams, PostParams};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::attempt::{lock, new_nonce};
use super::helper;
use super::{KubernetesBackend, is_status, kube_err};
use crate::archive::{self, Extracted, Limits, Packed};
use crate::backend::BackendError;
use crate::crd::Step;
use crate::crd::reasons::reason;

/// How long a helper pod may take to run (its node may first provision the
/// claim).
const HELPER_START: std::time::Duration = std::time::Duration::from_secs(120);

/// Why a helper did not do its work.
enum HelperError {
    /// The pod: not created, not running.
    Pod(String),
    /// The verb ran and refused (its stderr).
    Verb(String),
}

impl HelperError {
    fn message(self) -> String {
        match self {
            Self::Pod(m) | Self::Verb(m) => m,
        }
    }
}

impl KubernetesBackend {
    /// Unpack the content archive at `archive` into the workspace claim.
    pub(super) async fn seed(&self, archive: &Path) -> Result<Extracted, BackendError> {
        let content = |reason, message| BackendError::Content { reason, message };
        let file = tokio::fs::File::open(archive).await.map_err(|e| {
            content(
                reason::CONTENT_UNAVAILABLE,
                format!("open {}: {e}", archive.display()),
            )
        })?;
        let mut said = Vec::new();
        let command = helper::verb(&["seed", helper::DIR]);
        match self.in_helper("seed", command, Some(file), &mut said).await {
            Ok(()) => serde_json::from_slice(&said)
                .map_err(|e| content(reason::CONTENT_REFUSED, format!("the helper's answer: {e}"))),
            Err(HelperError::Verb(m)) => Err(content(reason::CONTENT_REFUSED, m)),
            Err(HelperError::Pod(m)) => Err(content(reason::CONTENT_UNAVAILABLE, m)),
        }
    }

    /// Snapshot the workspace before `step` starts (it collects).
    pub(super) async fn snapshot_before(&self, step: &str) -> Result<(), BackendError> {
        let mut tree = Vec::new();
        let command = helper::verb(&["snapshot", helper::DIR]);
        self.in_helper("snapshot", command, None::<&[u8]>, &mut tree)
            .await
            .map_err(|e| failed(step, "snapshot the workspace", e.message()))?;
        lock(&self.before).insert(step.to_owned(), tree);
        Ok(())
    }

    /// Pack what `step` changed into the archive store, named by its digest.
    pub(super) async fn collect(&self, step: &Step) -> Result<Option<Packed>, BackendError> {
        let name = step.name.as_str();
        let doing = "collect its changes";
        let Some(before) = lock(&self.before).remove(name) else {
            return Err(failed(name, doing, "the workspace was not snapshotted before it started (the runner restarted while it ran)".into()));
        };
        let Some(root) = self.archive_root.clone() else {
            return Err(failed(name, doing, "this runner keeps no archives".into()));
        };
        let store = crate::backend::archive_store(&root);
        let io_err = |e: io::Error| failed(name, doing, e.to_string());
        let temp = store.join(format!(".receiving-{}", new_nonce(name)?));
        tokio::fs::create_dir_all(&store).await.map_err(io_err)?;
        let mut file = tokio::fs::File::create(&temp).await.map_err(io_err)?;
        let mut args = vec!["changes", helper::DIR];
        for glob in step.artifacts.iter().flatten() {
            args.extend(["--artifact", glob.as_str()]);
        }
        let received = self
            .in_helper("changes", helper::verb(&args), Some(&before[..]), &mut file)
            .await;
        let synced = file.sync_all().await;
        let result = match (received, synced) {
            (Err(e), _) => Err(failed(name, doing, e.message())),
            (Ok(()), Err(e)) => Err(io_err(e)),
            (Ok(()), Ok(())) => {
                let (temp, root) = (temp.clone(), root.clone());
                tokio::task::spawn_blocking(move || keep(&temp, &root))
                    .await
                    .map_err(|e| io_err(io::Error::other(e)))
                    .and_then(|kept| kept.map_err(io_err))
            }
        };
        let _ = tokio::fs::remove_file(&temp).await;
        result
    }

    /// Run `command` in a new helper pod on the Job's node, then delete it.
    async fn in_helper(
        &self,
        purpose: &'static str,
        command: Vec<String>,
        input: Option<impl AsyncRead + Unpin>,
        output: &mut (impl AsyncWrite + Unpin),
    ) -> Result<(), HelperError> {
        let nonce = new_nonce(purpose).map_err(|e| HelperError::Pod(e.to_string()))?;
        let nonce = &nonce[..8];
        let create = |node: Option<String>| async move {
            let pod = helper::helper_pod(&self.target, purpose, nonce, node.as_deref());
            self.pods
                .create(&PostParams::default(), &pod)
                .await
                .map_err(kube_err("", "create a workspace helper pod"))
        };
        let created = self
            .pinned(purpose, create)
            .await
            .map_err(|e| HelperError::Pod(e.to_string()))?;
        let pod = created.name_any();
        let created_at = Instant::now();
        let result = match helper::running(&self.pods, &pod, HELPER_START).await {
            Ok(()) => {
                let running_at = Instant::now();
                let done = helper::exec(&self.pods, &pod, command, input, output).await;
                // What a helper costs: its start, and the verb with its stream.
                let start = running_at - created_at;
                let exec = running_at.elapsed();
                tracing::info!(pod = %pod, purpose, start_s = start.as_secs_f64(), exec_s = exec.as_secs_f64(), ok = done.is_ok(), "workspace helper done");
                done.map_err(HelperError::Verb)
            }
            Err(why) => Err(HelperError::Pod(format!(
                "workspace helper pod {pod}: {why}"
            ))),
        };
        let _ = output.flush().await;
        match self
            .pods
            .delete(&pod, &DeleteParams::background().grace_period(0))
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, kube::core::Status::is_not_found) => {}
            Err(e) => tracing::warn!(pod = %pod, error = %e, "delete the workspace helper pod"),
        }
        result
    }
}

fn failed(step: &str, doing: &'static str, message: String) -> BackendError {
    BackendError::Failed {
        step: step.to_owned(),
        doing,
        message,
    }
}

/// Name the received archive by its digest under `root`'s store; its counts
/// from its manifest (the runner checks what the helper sent, as the server
/// will). Empty: the step changed nothing its globs select.
fn keep(temp: &Path, root: &Path) -> io::Result<Option<Packed>> {
    let size = std::fs::metadata(temp)?.len();
    if size == 0 {
        return Ok(None);
    }
    let mut hasher = Sha256::new();
    io::copy(&mut std::fs::File::open(temp)?, &mut hasher)?;
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let file = io::BufReader::new(std::fs::File::open(temp)?);
    let manifest = archive::manifest(file, &Limits::default()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the helper's archive: {e}"),
        )
    })?;
    let path: PathBuf = crate::backend::archive_path(root, &digest);
    std::fs::rename(temp, &path)?;
    Ok(Some(Packed {
        digest,
        size,
        added: manifest.added.len(),
        modified: manifest.modified.len(),
        deleted: manifest.deleted.len(),
        skipped: Vec::new(),
    }))
}
