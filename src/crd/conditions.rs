//! `metav1.Condition` helpers shared by every status: computed, never accumulated.
//!
//! `lastTransitionTime` moves only when a condition's status flips, so writing the
//! same computed status twice changes nothing (and the reconciler can skip the write).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition as a reconciler computes it, before timestamps are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Merge desired conditions into the previous list: a condition keeps its old
/// `lastTransitionTime` unless its status changed; conditions not desired are dropped.
pub fn merge(
    previous: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = status_str(d.status).to_owned();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: d.type_.to_owned(),
                status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                last_transition_time,
                observed_generation: generation,
            }
        })
        .collect()
}

/// Find a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the named condition is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let first = merge(
            &[],
            &[Desired::new("Ready", false, "Pending", "waiting")],
            Some(1),
            at(100),
        );
        assert_eq!(first[0].last_transition_time, Time(at(100)));

        // Same status, new reason and message: time stays.
        let second = merge(
            &first,
            &[Desired::new("Ready", false, "StillPending", "still")],
            Some(2),
            at(200),
        );
        assert_eq!(second[0].last_transition_time, Time(at(100)));
        assert_eq!(second[0].reason, "StillPending");
        assert_eq!(second[0].observed_generation, Some(2));

        // Flip: time moves.
        let third = merge(
            &second,
            &[Desired::new("Ready", true, "Ok", "")],
            Some(2),
            at(300),
        );
        assert_eq!(third[0].last_transition_time, Time(at(300)));
        assert!(is_true(&third, "Ready"));
    }

    #[test]
    fn identical_input_gives_identical_output() {
        let desired = [
            Desired::new("A", true, "R", "m"),
            Desired::new("B", false, "R", "m"),
        ];
        let once = merge(&[], &desired, Some(3), at(10));
        let twice = merge(&once, &desired, Some(3), at(99));
        assert_eq!(once, twice);
    }
}
