//! Capped exponential backoff with jitter: a pure delay function (also used by the
//! runner agent) and the per-object attempt counter reconcilers use on errors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Delay before retry number `attempt` (0-based): `base * 2^attempt`, capped at
/// `max`, then scaled into `[1/2, 1]` of itself by `jitter` (a number in `[0, 1)`),
/// so many clients failing together spread out.
pub fn delay(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(31));
    let raw = base.saturating_mul(factor).min(max);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    raw.mul_f64(0.5 + jitter / 2.0)
}

/// A number in `[0, 1)` from the OS; 0.5 if the OS has none to give.
pub fn jitter() -> f64 {
    getrandom::u64()
        .map(|n| (n >> 11) as f64 / (1u64 << 53) as f64)
        .unwrap_or(0.5)
}

/// A retry schedule: capped exponential with jitter, the one every retry loop
/// of Baton uses (named per caller, so each says how patient it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub base: Duration,
    pub max: Duration,
}

impl Schedule {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The pause before retry number `attempt` (0-based).
    pub fn pause(&self, attempt: u32) -> Duration {
        delay(attempt, self.base, self.max, jitter())
    }
}

/// Attempts per object (keyed by `K`, e.g. an object reference): grows on each
/// error, forgotten on success.
pub struct PerObject<K> {
    attempts: Mutex<HashMap<K, u32>>,
    base: Duration,
    max: Duration,
}

impl<K: Eq + std::hash::Hash + Clone> PerObject<K> {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            attempts: Mutex::default(),
            base,
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, u32>> {
        self.attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The delay before the next try of `key`, counting this failure.
    pub fn failed(&self, key: &K) -> Duration {
        let mut attempts = self.lock();
        let n = attempts.entry(key.clone()).or_insert(0);
        let d = delay(*n, self.base, self.max, jitter());
        *n = n.saturating_add(1);
        d
    }

    pub fn succeeded(&self, key: &K) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        let full = |n| delay(n, base, max, 1.0);
        assert_eq!(full(0), Duration::from_millis(100));
        assert_eq!(full(1), Duration::from_millis(200));
        assert_eq!(full(3), Duration::from_millis(800));
        assert_eq!(full(10), max);
        assert_eq!(full(u32::MAX), max);
        assert_eq!(delay(1, base, max, 0.0), Duration::from_millis(100));
        assert_eq!(delay(1, base, max, f64::NAN), Duration::from_millis(100));
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    #[test]
    fn per_object_resets_on_success() {
        let b = PerObject::new(Duration::from_millis(100), Duration::from_secs(60));
        let first = b.failed(&"a");
        let _ = b.failed(&"a");
        let third = b.failed(&"a");
        assert!(third > first, "{third:?} > {first:?}");
        assert!(
            b.failed(&"b") <= Duration::from_millis(100),
            "independent per object"
        );
        b.succeeded(&"a");
        assert!(b.failed(&"a") <= Duration::from_millis(100));
    }
}
