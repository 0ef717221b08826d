//! `metav1.Condition` helpers shared by every status: computed, never accumulated.
//!
//! `lastTransitionTime` moves only when a condition's status flips, so writing the
//! same computed status twice changes nothing (and the reconciler can skip the write).
//!
//! Every kind also carries the conditions kstatus reads (`sigs.k8s.io/cli-utils`
//! `pkg/kstatus/status`, which Flux uses; see `docs/gitops.md`), from one [`Health`]:
//! with `status.observedGeneration` equal to `metadata.generation`, kstatus says
//! `InProgress` when `Reconciling` is True, `Failed` when `Stalled` is True, else
//! `Current` when `Ready` is True and `InProgress` when `Ready` is False.
//! `Reconciling` and `Stalled` follow kstatus' "abnormal-true" convention: present
//! only while True.

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

/// `Ready`: the object is what its spec asks for (every kind has it).
pub const READY: &str = "Ready";
/// `Reconciling` (kstatus): the controller, or the world it waits for, is still
/// working towards the spec.
pub const RECONCILING: &str = "Reconciling";
/// `Stalled` (kstatus): the spec cannot be reached (any more) without a change.
pub const STALLED: &str = "Stalled";

/// How an object stands, in the terms GitOps tools read. Reason: one CamelCase
/// word; message: a sentence for humans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Done: `Ready=True` (kstatus `Current`).
    Current { reason: String, message: String },
    /// Not ready, waiting on something outside the controller, with nothing to
    /// reconcile: `Ready=False` alone (kstatus reads that as `InProgress` too).
    NotReady { reason: String, message: String },
    /// Work under way: `Reconciling=True`, `Ready=False` (kstatus `InProgress`).
    Reconciling { reason: String, message: String },
    /// Cannot get there: `Stalled=True`, `Ready=False` (kstatus `Failed`).
    Stalled { reason: String, message: String },
}

impl Health {
    pub fn current(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Current {
            reason: reason.into(),
            message: message.into(),
        }
    }
    pub fn not_ready(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::NotReady {
            reason: reason.into(),
            message: message.into(),
        }
    }
    pub fn reconciling(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Reconciling {
            reason: reason.into(),
            message: message.into(),
        }
    }
    pub fn stalled(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Stalled {
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// `Ready`, and `Reconciling` or `Stalled` when True (absent otherwise).
    pub fn desired(&self) -> Vec<Desired> {
        match self {
            Self::Current { reason, message } => vec![Desired::new(READY, true, reason, message)],
            Self::NotReady { reason, message } => {
                vec![Desired::new(READY, false, reason, message)]
            }
            Self::Reconciling { reason, message } => vec![
                Desired::new(READY, false, reason, message),
                Desired::new(RECONCILING, true, reason, message),
            ],
            Self::Stalled { reason, message } => vec![
                Desired::new(READY, false, reason, message),
                Desired::new(STALLED, true, reason, message),
            ],
        }
    }
}

/// Replace the `Ready`/`Reconciling`/`Stalled` conditions of `conditions` by
/// `health`'s, keeping every other condition as it is (and where it is). Their
/// `lastTransitionTime` comes from `previous` (the status as it was read), as in
/// [`merge`]: a builder that re-merged its own conditions may have dropped them.
pub fn set_health(
    conditions: &[Condition],
    previous: &[Condition],
    health: &Health,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let owned = |c: &Condition| [READY, RECONCILING, STALLED].contains(&c.type_.as_str());
    let mut out: Vec<Condition> = conditions.iter().filter(|c| !owned(c)).cloned().collect();
    out.extend(merge(previous, &health.desired(), generation, now));
    out
}

/// What kstatus (`sigs.k8s.io/cli-utils` v0.37 `status.Compute`) says of a custom
/// resource of ours: its rules for a kind it has no special case for, restated so
/// unit tests can check statuses without Go. `tests/e2e/kstatus.rs` checks live
/// objects with the library itself.
pub fn kstatus(
    conditions: &[Condition],
    generation: Option<i64>,
    observed_generation: Option<i64>,
) -> &'static str {
    if let (Some(g), Some(o)) = (generation, observed_generation)
        && g != o
    {
        return "InProgress";
    }
    if is_true(conditions, RECONCILING) {
        return "InProgress";
    }
    if is_true(conditions, STALLED) {
        return "Failed";
    }
    match find(conditions, READY).map(|c| c.status.as_str()) {
        Some("True") | None => "Current",
        _ => "InProgress",
    }
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
    fn health_sets_only_its_conditions_abnormal_true() {
        let scheduled = merge(
            &[],
            &[Desired::new("Scheduled", true, "Assigned", "to r1")],
            Some(1),
            at(1),
        );
        let running = set_health(
            &scheduled,
            &scheduled,
            &Health::reconciling("Running", "1/2 steps"),
            Some(1),
            at(2),
        );
        let types: Vec<(&str, &str)> = running
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                ("Scheduled", "True"),
                ("Ready", "False"),
                ("Reconciling", "True")
            ]
        );
        // Scheduled kept untouched, including its time.
        assert_eq!(running[0], scheduled[0]);

        let failed = set_health(
            &running,
            &running,
            &Health::stalled("StepFailed", "b failed"),
            Some(1),
            at(3),
        );
        assert!(find(&failed, RECONCILING).is_none(), "absent when not True");
        assert!(is_true(&failed, STALLED));
        let ready = find(&failed, READY).expect("Ready is always set");
        // Ready stayed False: its time did not move; its reason did.
        assert_eq!(
            (ready.last_transition_time.clone(), ready.reason.as_str()),
            (Time(at(2)), "StepFailed")
        );

        let done = set_health(
            &failed,
            &failed,
            &Health::current("Succeeded", ""),
            Some(1),
            at(4),
        );
        assert_eq!(done.len(), 2);
        assert!(is_true(&done, READY));
        // Recomputing changes nothing.
        let again = Health::current("Succeeded", "");
        assert_eq!(set_health(&done, &done, &again, Some(1), at(9)), done);
        // A builder that dropped Ready still keeps its time from the status as read.
        let dropped: Vec<Condition> = done.iter().filter(|c| c.type_ != READY).cloned().collect();
        assert_eq!(set_health(&dropped, &done, &again, Some(1), at(9)), done);
        let waiting = set_health(
            &done,
            &done,
            &Health::not_ready("NotConnected", ""),
            Some(1),
            at(5),
        );
        assert_eq!(waiting.len(), 2);
        assert!(!is_true(&waiting, READY));

        let read = |c: &[Condition]| kstatus(c, Some(1), Some(1));
        assert_eq!(
            [&running, &failed, &done, &waiting].map(|c| read(c)),
            ["InProgress", "Failed", "Current", "InProgress"]
        );
        assert_eq!(kstatus(&done, Some(2), Some(1)), "InProgress");
        assert_eq!(kstatus(&[], Some(1), None), "Current", "no status yet");
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
