//! What a run keeps of the step logs it sent, to send again what a controller
//! that lost its log store lacks (see the parent module).

/// Bytes of one step's log kept for a resend: more than the server's default
/// per-step cap (10 MiB), which stores nothing past it anyway.
pub(crate) const STEP_LOG_KEEP: usize = 16 * 1024 * 1024;

/// Bytes of a running Job's finished steps kept for a replay to a new leader;
/// past it, a finished step's log is let go (and a warning says so).
pub(crate) const JOB_LOG_KEEP: usize = 64 * 1024 * 1024;

/// A step's log as sent: `bytes` start at offset `start`; once `full`, bytes past
/// the bound are no longer kept.
#[derive(Debug, Default)]
pub(crate) struct SentLog {
    pub(super) start: u64,
    pub(super) bytes: Vec<u8>,
    full: bool,
}

impl SentLog {
    pub(crate) fn new(start: u64) -> Self {
        Self {
            start,
            ..Self::default()
        }
    }

    /// Offset just past the kept bytes.
    pub(crate) fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Keep a chunk at `offset` (overlap with kept bytes is skipped), at most
    /// `bound` bytes in all. True when this chunk first hit the bound.
    pub(crate) fn record(&mut self, offset: u64, bytes: &[u8], bound: usize) -> bool {
        let end = self.end();
        if self.full || offset > end {
            // Past the bound, or not contiguous with what is kept: a resend from
            // the buffer can only cover up to `end` anyway.
            return false;
        }
        let skip = usize::try_from(end - offset).unwrap_or(usize::MAX);
        let new = bytes.get(skip..).unwrap_or_default();
        let room = bound.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&new[..room.min(new.len())]);
        if new.len() > room {
            self.full = true;
            return true;
        }
        false
    }
}

/// What to send after the server said it holds `stored` bytes: the kept bytes
/// from `stored` on, and their offset. None when nothing is to be resent (the
/// server holds all that is kept) or the bytes it lacks are not kept (they start
/// before the buffer).
pub(crate) fn resend_from(start: u64, kept: &[u8], stored: u64) -> Option<(u64, &[u8])> {
    let from = usize::try_from(stored.checked_sub(start)?).ok()?;
    (from < kept.len()).then(|| (stored, &kept[from..]))
}

/// The stored length a `LogGap` refusal names ("... resend from N").
pub(crate) fn gap_stored(message: &str) -> Option<u64> {
    message.rsplit_once("resend from ")?.1.trim().parse().ok()
}
