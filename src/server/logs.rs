//! The log store: each step's log of each Job in a file under the data directory,
//! so logs outlive step pods and runner restarts.
//!
//! Appends carry the byte offset they start at. Bytes before the stored length are
//! ignored (a resumed runner re-sending a tail duplicates nothing), a chunk starting
//! past it is refused (a gap). Each step's file is capped: past the cap the data is
//! dropped, one marker line says so, and the logical length (what the runner has
//! sent) is kept in a sidecar file so offsets keep working.
//!
//! With a blob store on object storage ([`LogStore::with_archive`]) a finished
//! Job's logs are also copied there ([`LogStore::archive_job`]), and a log this
//! machine does not hold is read from there: a new leader, or any replica, serves
//! finished logs without a shared volume.
//!
//! Reads stream the file in chunks ([`LogReader`]), never the whole log in memory;
//! the store counts open readers and followers, so a test (or a curious operator)
//! can see that none outlives its client.

use std::collections::HashMap;
use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use crate::store::{BlobStore, JobKey, StoreError};

/// Default cap of one step's stored log.
pub const DEFAULT_CAP: u64 = 10 * 1024 * 1024;

/// A read hands out the file at most this many bytes at a time.
pub const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log chunk at offset {offset} leaves a gap: {stored} bytes stored")]
    Gap { offset: u64, stored: u64 },
    #[error("read the log from offset {offset}: only {size} bytes are stored")]
    Beyond { offset: u64, size: u64 },
    /// A part of the key that must not become a path (the CRD validates names;
    /// this holds even if something else hands one in).
    #[error(
        "{part} {value:?} cannot name a log file: lowercase letters, digits, '-', '.', '_' only"
    )]
    BadKey { part: &'static str, value: String },
    #[error("the log archive: {0}")]
    Archive(#[from] StoreError),
    #[error("{doing} {path}: {source}")]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Which log: a Job (by namespace, name and uid, so a re-created Job starts
/// afresh) and a step.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub step: String,
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The logical length after the append (what the runner resumes from).
    pub length: u64,
    /// Bytes newly accepted (0 for a chunk that was all duplicate).
    pub accepted: u64,
}

/// The marker written once when a step's log reaches the cap.
pub fn truncation_marker(cap: u64) -> String {
    format!(
        "\n[baton] log truncated: this step's log exceeded {cap} bytes; later output was dropped\n"
    )
}

/// Per-step files under one directory; appends to one step are serialized.
pub struct LogStore {
    root: PathBuf,
    cap: u64,
    locks: Mutex<HashMap<LogKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped on every accepted append (followers re-read).
    changes: watch::Sender<u64>,
    /// Open [`LogReader`]s.
    readers: Arc<AtomicUsize>,
    /// Open followed reads (see [`LogStore::follower`]).
    followers: Arc<AtomicUsize>,
    /// Cancelled when the server shuts down: followed reads end.
    stopping: CancellationToken,
    /// Object storage finished logs are copied to, and read from when this
    /// machine holds none.
    archive: Option<BlobStore>,
    /// uids of Jobs whose logs this process archived.
    archived: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("root", &self.root)
            .field("cap", &self.cap)
            .finish()
    }
}

fn io<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        doing,
        path: path.to_owned(),
        source,
    }
}

impl LogStore {
    pub fn new(root: impl Into<PathBuf>, cap: u64) -> Self {
        Self {
            root: root.into(),
            cap,
            locks: Mutex::default(),
            changes: watch::Sender::new(0),
            readers: Arc::default(),
            followers: Arc::default(),
            stopping: CancellationToken::new(),
            archive: None,
            archived: Mutex::default(),
        }
    }

    /// Copy finished logs to `store`, and read from it what this machine lacks.
    #[must_use]
    pub fn with_archive(mut self, store: BlobStore) -> Self {
        self.archive = Some(store);
        self
    }

    fn archived(
        &self,
        key: &LogKey,
    ) -> Result<Option<(&BlobStore, object_store::path::Path)>, LogError> {
        let Some(store) = &self.archive else {
            return Ok(None);
        };
        let job = JobKey::new(&key.namespace, &key.name, &key.uid).map_err(StoreError::from)?;
        Ok(Some((store, job.log(&key.step).map_err(StoreError::from)?)))
    }

    /// Copy the named steps' logs of a finished Job to the archive (none without
    /// one), once per process; a step with no log here is skipped. Returns how
    /// many were copied.
    pub async fn archive_job(&self, job: &JobKey, steps: &[String]) -> Result<usize, LogError> {
        let Some(store) = &self.archive else {
            return Ok(0);
        };
        let first = (self.archived.lock())
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(job.uid().to_owned());
        if !first {
            return Ok(0);
        }
        let copied = self.copy_to(store, job, steps).await;
        if copied.is_err() {
            (self.archived.lock())
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(job.uid());
        }
        copied
    }

    async fn copy_to(
        &self,
        store: &BlobStore,
        job: &JobKey,
        steps: &[String],
    ) -> Result<usize, LogError> {
        let mut copied = 0;
        for step in steps {
            let key = LogKey {
                namespace: job.namespace().to_owned(),
                name: job.name().to_owned(),
                uid: job.uid().to_owned(),
                step: step.clone(),
            };
            let dp = self.data_path(&key)?;
            let file = match tokio::fs::File::open(&dp).await {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io("open log", &dp)(e)),
            };
            let body = ReaderStream::with_capacity(file, READ_CHUNK);
            let stored = job.log(step).map_err(StoreError::from)?;
            store.put(&stored, body, u64::MAX).await?;
            copied += 1;
        }
        Ok(copied)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, key: &LogKey) -> Result<PathBuf, LogError> {
        self.job_dir(&key.namespace, &key.name, &key.uid)
    }

    fn job_dir(&self, namespace: &str, name: &str, uid: &str) -> Result<PathBuf, LogError> {
        path_part("namespace", namespace)?;
        path_part("job name", name)?;
        path_part("job uid", uid)?;
        Ok(self.root.join(namespace).join(format!("{name}-{uid}")))
    }

    fn data_path(&self, key: &LogKey) -> Result<PathBuf, LogError> {
        path_part("step", &key.step)?;
        Ok(self.dir(key)?.join(format!("{}.log", key.step)))
    }

    fn length_path(&self, key: &LogKey) -> Result<PathBuf, LogError> {
        path_part("step", &key.step)?;
        Ok(self.dir(key)?.join(format!("{}.length", key.step)))
    }

    fn lock(&self, key: &LogKey) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// An append to `key` is done: its lock goes unless another append holds or
    /// waits for it, so the map holds only the logs being appended to (it grew
    /// by one entry per step ever logged).
    fn unlock(&self, key: &LogKey) {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if locks.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(key);
        }
    }

    /// Logs with an append in progress (a figure for tests).
    pub fn appending(&self) -> usize {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// The logical length of a step's log: bytes the runner sent, stored or dropped.
    pub async fn length(&self, key: &LogKey) -> Result<u64, LogError> {
        let lp = self.length_path(key)?;
        match tokio::fs::read_to_string(&lp).await {
            Ok(s) => return Ok(s.trim().parse().unwrap_or(self.cap)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io("read log length", &lp)(e)),
        }
        let dp = self.data_path(key)?;
        match tokio::fs::metadata(&dp).await {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io("stat log", &dp)(e)),
        }
    }

    /// Append `bytes` that start at `offset` of the step's log.
    pub async fn append(
        &self,
        key: &LogKey,
        offset: u64,
        bytes: &[u8],
    ) -> Result<Appended, LogError> {
        let held = self.lock(key).lock_owned().await;
        let appended = self.append_held(key, offset, bytes).await;
        drop(held);
        self.unlock(key);
        if appended.as_ref().is_ok_and(|a| a.accepted > 0) {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        appended
    }

    /// [`Self::append`], its step's lock held.
    async fn append_held(
        &self,
        key: &LogKey,
        offset: u64,
        bytes: &[u8],
    ) -> Result<Appended, LogError> {
        let stored = self.length(key).await?;
        if offset > stored {
            return Err(LogError::Gap { offset, stored });
        }
        let end = offset + bytes.len() as u64;
        if end <= stored {
            return Ok(Appended {
                length: stored,
                accepted: 0,
            });
        }
        let skip = usize::try_from(stored - offset).unwrap_or(usize::MAX);
        let new = &bytes[skip.min(bytes.len())..];
        let dir = self.dir(key)?;
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .await
            .map_err(io("create log directory", &dir))?;
        let dp = self.data_path(key)?;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&dp)
            .await
            .map_err(io("open log", &dp))?;
        let room = self.cap.saturating_sub(stored);
        let keep = usize::try_from(room).unwrap_or(usize::MAX).min(new.len());
        file.write_all(&new[..keep])
            .await
            .map_err(io("append to log", &dp))?;
        if keep < new.len() {
            if stored <= self.cap {
                // First time over the cap: say so, once.
                file.write_all(truncation_marker(self.cap).as_bytes())
                    .await
                    .map_err(io("append to log", &dp))?;
            }
            let lp = self.length_path(key)?;
            tokio::fs::write(&lp, end.to_string())
                .await
                .map_err(io("write log length", &lp))?;
        }
        file.flush().await.map_err(io("flush log", &dp))?;
        Ok(Appended {
            length: end,
            accepted: new.len() as u64,
        })
    }

    /// The stored bytes of a step's log from byte `from` on, read from the file
    /// chunk by chunk as the stream is polled; empty when nothing is stored. `from`
    /// past the stored bytes is [`LogError::Beyond`].
    pub async fn read(&self, key: &LogKey, from: u64) -> Result<LogReader, LogError> {
        let dp = self.data_path(key)?;
        let mut file = match tokio::fs::File::open(&dp).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound && self.archive.is_some() => {
                return self.read_archived(key, from).await;
            }
            Err(e) if e.kind() == ErrorKind::NotFound && from == 0 => {
                return Ok(LogReader::new(None, &self.readers));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(LogError::Beyond {
                    offset: from,
                    size: 0,
                });
            }
            Err(e) => return Err(io("open log", &dp)(e)),
        };
        let size = file.metadata().await.map_err(io("stat log", &dp))?.len();
        if from > size {
            return Err(LogError::Beyond { offset: from, size });
        }
        file.seek(SeekFrom::Start(from))
            .await
            .map_err(io("seek log", &dp))?;
        let chunks = ReaderStream::with_capacity(file, READ_CHUNK).boxed();
        Ok(LogReader::new(Some(chunks), &self.readers))
    }

    /// A log this machine does not hold, from the archive (empty when neither has it).
    async fn read_archived(&self, key: &LogKey, from: u64) -> Result<LogReader, LogError> {
        let Some((store, stored)) = self.archived(key)? else {
            return Ok(LogReader::new(None, &self.readers));
        };
        match store.get(&stored, from).await {
            Ok(Some(blob)) => Ok(LogReader::new(Some(blob.bytes), &self.readers)),
            Ok(None) if from == 0 => Ok(LogReader::new(None, &self.readers)),
            Ok(None) => Err(LogError::Beyond {
                offset: from,
                size: 0,
            }),
            Err(StoreError::Beyond { offset, size }) => Err(LogError::Beyond { offset, size }),
            Err(e) => Err(e.into()),
        }
    }

    /// Changes of any log: `changed()` resolves after the next accepted append.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Held by a followed read while it is open (see [`LogStore::followers`]).
    pub fn follower(&self) -> Open {
        Open::new(&self.followers)
    }

    /// Open [`LogReader`]s (each holds a file).
    pub fn open_readers(&self) -> usize {
        self.readers.load(Ordering::SeqCst)
    }

    /// Open followed reads.
    pub fn followers(&self) -> usize {
        self.followers.load(Ordering::SeqCst)
    }

    /// End every followed read (the server is shutting down).
    pub fn stop_following(&self) {
        self.stopping.cancel();
    }

    /// Resolves once [`LogStore::stop_following`] was called.
    pub fn following_stopped(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stopping.cancelled()
    }

    /// Remove the logs of every Job whose uid `live` does not know (Jobs deleted
    /// while this process was not watching), in namespace `only` or in all.
    /// Returns how many were removed.
    pub async fn sweep(
        &self,
        live: &std::collections::HashSet<String>,
        only: Option<&str>,
    ) -> usize {
        let mut removed = 0;
        let Ok(mut namespaces) = tokio::fs::read_dir(&self.root).await else {
            return 0;
        };
        while let Ok(Some(ns)) = namespaces.next_entry().await {
            if only.is_some_and(|o| ns.file_name().to_str() != Some(o)) {
                continue;
            }
            let Ok(mut jobs) = tokio::fs::read_dir(ns.path()).await else {
                continue;
            };
            while let Ok(Some(job)) = jobs.next_entry().await {
                let name = job.file_name().to_string_lossy().into_owned();
                // `<name>-<uid>`, the uid a 36-character UUID.
                let uid = name.get(name.len().saturating_sub(36)..).unwrap_or("");
                if !live.contains(uid) && tokio::fs::remove_dir_all(job.path()).await.is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Remove every log of a Job (it was deleted).
    pub async fn remove_job(&self, namespace: &str, name: &str, uid: &str) {
        (self.archived.lock())
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(uid);
        if let Ok(dir) = self.job_dir(namespace, name, uid) {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
    }
}

/// One part of a log's path: a Kubernetes name (DNS subdomain or label, a uid),
/// never empty, `.`/`..`, a separator or anything a shell or a path would read
/// (the rule of the blob store's keys).
fn path_part(part: &'static str, value: &str) -> Result<(), LogError> {
    crate::store::keys::name_part(part, value).map_err(|_| LogError::BadKey {
        part,
        value: value.chars().take(64).collect(),
    })
}

/// One of a count of open things; the count goes down when it is dropped.
#[derive(Debug)]
pub struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A step's stored log as a stream of chunks of at most [`READ_CHUNK`] bytes.
pub struct LogReader {
    chunks: Option<BoxStream<'static, std::io::Result<Bytes>>>,
    _open: Open,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("empty", &self.chunks.is_none())
            .finish()
    }
}

impl LogReader {
    fn new(
        chunks: Option<BoxStream<'static, std::io::Result<Bytes>>>,
        count: &Arc<AtomicUsize>,
    ) -> Self {
        Self {
            chunks,
            _open: Open::new(count),
        }
    }
}

impl futures::Stream for LogReader {
    type Item = std::io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.get_mut().chunks {
            Some(chunks) => chunks.as_mut().poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
