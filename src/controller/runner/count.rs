//! `status.activeJobs` follows its runner's Jobs, but not one write per Job start
//! and end: a Runner's status is written for a changed count at most once every
//! [`EVERY`] (other changes are written at once). Under a stream of Jobs this was
//! two status writes per Job; now it is at most one every [`EVERY`] per runner,
//! and the count is never more than that behind.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time between two status writes of one Runner for its count alone.
pub const EVERY: Duration = Duration::from_secs(2);

/// When each Runner's status was last written by this process.
#[derive(Debug, Default)]
pub struct StatusWrites(Mutex<HashMap<(String, String), Instant>>);

impl StatusWrites {
    /// How long a write of a changed count alone must wait; `None`: write now.
    pub fn wait(&self, ns: &str, name: &str, now: Instant) -> Option<Duration> {
        let last = *self.lock().get(&(ns.to_owned(), name.to_owned()))?;
        EVERY
            .checked_sub(now.saturating_duration_since(last))
            .filter(|d| !d.is_zero())
    }

    /// The Runner's status was written at `now`.
    pub fn wrote(&self, ns: &str, name: &str, now: Instant) {
        let mut map = self.lock();
        // Runners come and go: entries past the window decide nothing any more.
        map.retain(|_, at| now.saturating_duration_since(*at) < EVERY);
        map.insert((ns.to_owned(), name.to_owned()), now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_waits_out_the_window_after_a_write() {
        let w = StatusWrites::default();
        let t0 = Instant::now();
        assert_eq!(w.wait("ns", "r1", t0), None, "never written: now");
        w.wrote("ns", "r1", t0);
        assert_eq!(w.wait("ns", "r1", t0), Some(EVERY));
        let half = EVERY / 2;
        assert_eq!(w.wait("ns", "r1", t0 + half), Some(EVERY - half));
        assert_eq!(w.wait("ns", "r1", t0 + EVERY), None);
        assert_eq!(w.wait("ns", "r2", t0), None, "per runner");
        assert_eq!(w.wait("other", "r1", t0), None, "per namespace");
    }

    #[test]
    fn old_entries_are_dropped() {
        let w = StatusWrites::default();
        let t0 = Instant::now();
        w.wrote("ns", "r1", t0);
        w.wrote("ns", "r2", t0 + EVERY * 3);
        assert_eq!(w.lock().len(), 1);
    }
}
