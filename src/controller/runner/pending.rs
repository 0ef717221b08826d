//! Pending Runners nobody decided on and nobody hears from any more are removed:
//! a tokenless registration must not leave objects behind for ever.

use std::time::Duration;

use crate::crd::Runner;
use crate::crd::runner::AdoptionState;

/// What to do with a Runner about its being a stale Pending one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    /// Not Pending (decided, preadopted), or connected: nothing.
    No,
    /// Pending and quiet: look again after this long.
    CheckIn(Duration),
    /// Pending and not seen for the whole TTL: delete it.
    Forget,
}

/// `since_seen`: since this process last heard from the runner (or started).
pub fn stale(runner: &Runner, connected: bool, since_seen: Duration, ttl: Duration) -> Stale {
    let undecided = runner.spec.adoption.is_none();
    let pending = runner
        .status
        .as_ref()
        .and_then(|s| s.adoption)
        .is_none_or(|a| a == AdoptionState::Pending);
    if !undecided || !pending || connected {
        return Stale::No;
    }
    match ttl.checked_sub(since_seen) {
        Some(left) if !left.is_zero() => Stale::CheckIn(left),
        _ => Stale::Forget,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::RunnerSpec;
    use crate::crd::runner::{AdoptionDecision, RunnerStatus};

    fn runner(decision: Option<AdoptionDecision>, state: Option<AdoptionState>) -> Runner {
        let mut r = Runner::new(
            "r1",
            RunnerSpec {
                adoption: decision,
                ..Default::default()
            },
        );
        r.status = Some(RunnerStatus {
            adoption: state,
            ..Default::default()
        });
        r
    }

    #[test]
    fn only_quiet_undecided_pending_runners_are_forgotten() {
        let hour = Duration::from_secs(3600);
        let min = Duration::from_secs(60);
        let pending = runner(None, Some(AdoptionState::Pending));
        let cases = [
            (&pending, false, min, Stale::CheckIn(hour - min)),
            (&pending, false, hour, Stale::Forget),
            (&pending, false, hour * 2, Stale::Forget),
            (&pending, true, hour * 2, Stale::No),
            (&runner(None, None), false, hour, Stale::Forget),
            (
                &runner(None, Some(AdoptionState::Preadopted)),
                false,
                hour,
                Stale::No,
            ),
            (
                &runner(
                    Some(AdoptionDecision::Adopted),
                    Some(AdoptionState::Pending),
                ),
                false,
                hour,
                Stale::No,
            ),
            (
                &runner(Some(AdoptionDecision::Rejected), None),
                false,
                hour,
                Stale::No,
            ),
        ];
        for (r, connected, seen, want) in cases {
            assert_eq!(
                stale(r, connected, seen, hour),
                want,
                "{:?} {connected} {seen:?}",
                r.status
            );
        }
    }
}
