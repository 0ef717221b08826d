//! Following a local step's log file while its supervisor writes it.

use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::{LOG_CHUNK, LogProgress};
use crate::backend::{BackendError, LogChunk};

/// State of a log tail: read the file up to what the supervisor has written, wait
/// for more, end when the log is closed and fully read.
pub(super) struct Tail {
    pub(super) step: String,
    pub(super) file: tokio::fs::File,
    /// Where the file starts in the step's log.
    pub(super) base: u64,
    /// Position in the file.
    pub(super) offset: u64,
    pub(super) progress: watch::Receiver<LogProgress>,
}

impl Tail {
    pub(super) async fn next(mut self) -> Option<(Result<LogChunk, BackendError>, Self)> {
        loop {
            let progress = *self.progress.borrow_and_update();
            if self.offset < progress.len {
                let want = (progress.len - self.offset).min(LOG_CHUNK) as usize;
                let mut bytes = vec![0u8; want];
                return match self.file.read(&mut bytes).await {
                    Ok(0) => None,
                    Ok(n) => {
                        bytes.truncate(n);
                        let chunk = LogChunk {
                            step: self.step.clone(),
                            offset: self.base + self.offset,
                            bytes,
                        };
                        self.offset += n as u64;
                        Some((Ok(chunk), self))
                    }
                    Err(source) => {
                        let err = BackendError::Io {
                            step: self.step.clone(),
                            doing: "read the log file",
                            source,
                        };
                        // End after reporting: a later read would fail the same way.
                        self.offset = u64::MAX;
                        Some((Err(err), self))
                    }
                };
            }
            if progress.closed || self.offset == u64::MAX {
                return None;
            }
            if self.progress.changed().await.is_err() && self.offset >= self.progress.borrow().len {
                return None;
            }
        }
    }
}
