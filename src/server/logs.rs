//! The log store: each step's log of each Job in a file under the data directory,
//! so logs outlive step pods and runner restarts.
//!
//! Appends carry the byte offset they start at. Bytes before the stored length are
//! ignored (a resumed runner re-sending a tail duplicates nothing), a chunk starting
//! past it is refused (a gap). Each step's file is capped: past the cap the data is
//! dropped, one marker line says so, and the logical length (what the runner has
//! sent) is kept in a sidecar file so offsets keep working.

use std::collections::HashMap;
use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Notify;

/// Default cap of one step's stored log.
pub const DEFAULT_CAP: u64 = 10 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log chunk at offset {offset} leaves a gap: {stored} bytes stored")]
    Gap { offset: u64, stored: u64 },
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
    /// Woken on every accepted append (followers re-read).
    notify: Notify,
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
            notify: Notify::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, key: &LogKey) -> PathBuf {
        self.root
            .join(&key.namespace)
            .join(format!("{}-{}", key.name, key.uid))
    }

    fn data_path(&self, key: &LogKey) -> PathBuf {
        self.dir(key).join(format!("{}.log", key.step))
    }

    fn length_path(&self, key: &LogKey) -> PathBuf {
        self.dir(key).join(format!("{}.length", key.step))
    }

    fn lock(&self, key: &LogKey) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// The logical length of a step's log: bytes the runner sent, stored or dropped.
    pub async fn length(&self, key: &LogKey) -> Result<u64, LogError> {
        let lp = self.length_path(key);
        match tokio::fs::read_to_string(&lp).await {
            Ok(s) => return Ok(s.trim().parse().unwrap_or(self.cap)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io("read log length", &lp)(e)),
        }
        let dp = self.data_path(key);
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
        let lock = self.lock(key);
        let _held = lock.lock().await;
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
        let dir = self.dir(key);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io("create log directory", &dir))?;
        let dp = self.data_path(key);
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
            let lp = self.length_path(key);
            tokio::fs::write(&lp, end.to_string())
                .await
                .map_err(io("write log length", &lp))?;
        }
        file.flush().await.map_err(io("flush log", &dp))?;
        drop(_held);
        self.notify.notify_waiters();
        Ok(Appended {
            length: end,
            accepted: new.len() as u64,
        })
    }

    /// Stored bytes of a step's log from `from` (file position) on; empty when none.
    pub async fn read_from(&self, key: &LogKey, from: u64) -> Result<Vec<u8>, LogError> {
        let dp = self.data_path(key);
        let mut file = match tokio::fs::File::open(&dp).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("open log", &dp)(e)),
        };
        file.seek(SeekFrom::Start(from))
            .await
            .map_err(io("seek log", &dp))?;
        let mut out = Vec::new();
        file.read_to_end(&mut out)
            .await
            .map_err(io("read log", &dp))?;
        Ok(out)
    }

    /// Resolves at the next accepted append (of any log).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
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
        let dir = self.root.join(namespace).join(format!("{name}-{uid}"));
        let _ = tokio::fs::remove_dir_all(dir).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(step: &str) -> LogKey {
        LogKey {
            namespace: "ns".into(),
            name: "j".into(),
            uid: "u1".into(),
            step: step.into(),
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("baton-logs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn appends_are_idempotent_and_gaps_refused() {
        let store = LogStore::new(tmp("idem"), 1024);
        let k = key("a");
        assert_eq!(store.length(&k).await.unwrap(), 0);
        let a = store.append(&k, 0, b"1\n2\n").await.unwrap();
        assert_eq!(
            a,
            Appended {
                length: 4,
                accepted: 4
            }
        );
        // A resent tail overlapping what is stored: only the new part lands.
        let a = store.append(&k, 2, b"2\n3\n").await.unwrap();
        assert_eq!(
            a,
            Appended {
                length: 6,
                accepted: 2
            }
        );
        // All duplicate.
        let a = store.append(&k, 0, b"1\n").await.unwrap();
        assert_eq!(a.accepted, 0);
        // A gap.
        assert!(matches!(
            store.append(&k, 10, b"x").await,
            Err(LogError::Gap {
                offset: 10,
                stored: 6
            })
        ));
        assert_eq!(store.read_from(&k, 0).await.unwrap(), b"1\n2\n3\n");
        assert_eq!(store.read_from(&key("none"), 0).await.unwrap(), b"");
        store.remove_job("ns", "j", "u1").await;
        assert_eq!(store.length(&k).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn sweep_keeps_live_jobs_only() {
        let store = LogStore::new(tmp("sweep"), 1024);
        let uid = |c: char| std::iter::repeat_n(c, 36).collect::<String>();
        let key = |name: &str, uid: &str| LogKey {
            namespace: "ns".into(),
            name: name.into(),
            uid: uid.into(),
            step: "s".into(),
        };
        store
            .append(&key("live", &uid('a')), 0, b"x")
            .await
            .unwrap();
        store
            .append(&key("gone", &uid('b')), 0, b"x")
            .await
            .unwrap();
        let live = [uid('a')].into_iter().collect();
        assert_eq!(
            store.sweep(&live, Some("other")).await,
            0,
            "another namespace"
        );
        assert_eq!(store.sweep(&live, Some("ns")).await, 1);
        assert_eq!(store.length(&key("live", &uid('a'))).await.unwrap(), 1);
        assert_eq!(store.length(&key("gone", &uid('b'))).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_cap_truncates_once_with_a_marker_and_offsets_go_on() {
        let store = LogStore::new(tmp("cap"), 8);
        let k = key("a");
        store.append(&k, 0, b"12345").await.unwrap();
        let a = store.append(&k, 5, b"6789abc").await.unwrap();
        assert_eq!(a.length, 12);
        let a = store.append(&k, 12, b"more").await.unwrap();
        assert_eq!(a.length, 16);
        assert_eq!(store.length(&k).await.unwrap(), 16);
        let text = String::from_utf8(store.read_from(&k, 0).await.unwrap()).unwrap();
        assert_eq!(text, format!("12345678{}", truncation_marker(8)));
        // A resend below the logical length is still a no-op.
        assert_eq!(store.append(&k, 0, b"1").await.unwrap().accepted, 0);
    }
}
