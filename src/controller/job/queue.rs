//! The queue's decision, pure: queue order ([`queue_order`]: priority, then
//! age), each Job to a usable runner whose labels match and that has room.
//!
//! Fast at scale (benches/queue.rs: 10,000 Jobs × 100 runners): each distinct
//! selector is parsed and matched against the runners once, not once per Job.

use crate::crd::reasons::reason;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::core::{Selector, SelectorExt};

use crate::controller::on_demand;
use crate::crd::Job;
use crate::crd::job::JobPhase;

/// A runner as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RunnerView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Adopted or Preadopted, connected, enabled.
    pub usable: bool,
    /// `maxConcurrentJobs` minus its active Jobs.
    pub free: usize,
    /// An on-demand runner: the uid of the one Job it exists for.
    pub on_demand_for: Option<String>,
    /// Started with `--direct-only`: takes only Jobs that name it (`runnerName`).
    pub direct_only: bool,
}

/// A queued Job.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Queued {
    pub name: String,
    pub uid: String,
    /// `spec.priority` (unset: 0).
    pub priority: i32,
    pub created: Option<Timestamp>,
    /// Shared by the plan's Jobs of the same selector ([`Selectors`]).
    pub selector: Option<Arc<LabelSelector>>,
    /// `spec.runnerName`: that runner only, its selector unused.
    pub runner_name: Option<String>,
    /// Why its spec cannot run, if it cannot.
    pub invalid: Option<String>,
    /// No selector: its own on-demand runner (known only for the Job being
    /// reconciled; others wait unplanned).
    pub on_demand: Option<on_demand::Slot>,
}

/// What to do with a queued Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Assign {
        runner: String,
    },
    /// Stay Queued with `Scheduled=False` and this reason.
    Wait {
        reason: &'static str,
        message: String,
    },
}

/// The one queue order, for the decision and for `status.queuePosition`:
/// higher `spec.priority` first, then older (creationTimestamp), then by name.
pub fn queue_order(a: &Queued, b: &Queued) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| a.created.cmp(&b.created))
        .then_with(|| a.name.cmp(&b.name))
}

/// Whether `job` has a place in its namespace's queue: Queued, not cancelled,
/// not being deleted.
pub fn waits_in_queue(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default()
        == JobPhase::Queued
        && job.spec.cancel != Some(true)
        && job.metadata.deletion_timestamp.is_none()
}

/// Put `queue` in [`queue_order`].
pub fn sort_queue(queue: &mut [Queued]) {
    // The order is total (names are unique in a namespace): unstable is as
    // deterministic, and moves the Jobs less.
    queue.sort_unstable_by(queue_order);
}

/// Whether `labels` satisfy `sel` (matchLabels and matchExpressions), by
/// kube's own selector; a selector that does not parse (`In` without values, an
/// unknown operator) matches nothing.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    Selector::try_from(sel.clone()).is_ok_and(|s| s.matches(labels))
}

/// The pure middle, keyed by Job name; see [`decisions`].
pub fn plan_queue(queue: &[Queued], runners: &[RunnerView]) -> BTreeMap<String, Decision> {
    let decided = decisions(queue, runners);
    queue.iter().map(|j| j.name.clone()).zip(decided).collect()
}

/// The pure middle: in the order of `queue` (already in [`queue_order`]), each
/// Job to the matching usable runner with the most free capacity (ties by name);
/// capacity given out is gone for later Jobs. One decision per Job, in order.
pub fn decisions(queue: &[Queued], runners: &[RunnerView]) -> Vec<Decision> {
    let mut free: Vec<usize> = runners.iter().map(|r| r.free).collect();
    let mut groups = SelectorGroups::new(runners);
    queue
        .iter()
        .map(|job| {
            if let Some(why) = &job.invalid {
                Decision::Wait {
                    reason: reason::INVALID_SPEC,
                    message: why.clone(),
                }
            } else if let Some(name) = &job.runner_name {
                direct_decision(name, &mut free, runners)
            } else if let Some(sel) = &job.selector {
                let (matching, busy) = groups.matching(sel);
                take_room(matching, busy, &mut free, runners)
            } else if let Some(slot) = &job.on_demand {
                let decision = on_demand_decision(slot, runners, &free);
                if let Decision::Assign { runner } = &decision
                    && let Some(i) = runners.iter().position(|r| &r.name == runner)
                {
                    free[i] -= 1;
                }
                decision
            } else {
                Decision::Wait {
                    reason: reason::RUNNER_STARTING,
                    message: "waiting for its on-demand runner".into(),
                }
            }
        })
        .collect()
}

/// An on-demand Job: only its own runner, and that runner only for it (`free`:
/// each runner's room, indexed as `runners`).
pub fn on_demand_decision(
    slot: &on_demand::Slot,
    runners: &[RunnerView],
    free: &[usize],
) -> Decision {
    let own = runners.iter().zip(free).find(|(r, n)| {
        **n > 0
            && r.usable
            && Some(&r.name) == slot.runner.as_ref()
            && r.on_demand_for.as_ref() == Some(&slot.job_uid)
    });
    match own {
        Some((r, _)) => Decision::Assign {
            runner: r.name.clone(),
        },
        None => Decision::Wait {
            reason: slot.reason,
            message: slot.message.clone(),
        },
    }
}

/// A Job that names its runner: that one, if it is usable (on-demand runners
/// serve only their own Job) and has room.
fn direct_decision(name: &str, free: &mut [usize], runners: &[RunnerView]) -> Decision {
    let found = runners.iter().position(|r| r.name == name);
    match found {
        Some(i) if runners[i].usable && runners[i].on_demand_for.is_none() => {
            if free[i] == 0 {
                return Decision::Wait {
                    reason: reason::RUNNERS_BUSY,
                    message: format!("runner {name} (runnerName) is at maxConcurrentJobs"),
                };
            }
            free[i] -= 1;
            Decision::Assign {
                runner: name.to_owned(),
            }
        }
        _ => Decision::Wait {
            reason: reason::NAMED_RUNNER_UNAVAILABLE,
            message: format!(
                "runner {name} (runnerName) is not an adopted, connected and enabled runner"
            ),
        },
    }
}

/// Of `matching` (runner indexes, in name order), the one with the most room;
/// its room shrinks by one. `busy`: the message when all are full.
fn take_room(
    matching: &[usize],
    busy: &str,
    free: &mut [usize],
    runners: &[RunnerView],
) -> Decision {
    let mut best: Option<usize> = None;
    for &i in matching {
        // Strictly more room wins, so a tie goes to the first by name.
        if free[i] > 0 && best.is_none_or(|b| free[i] > free[b]) {
            best = Some(i);
        }
    }
    match best {
        Some(i) => {
            free[i] -= 1;
            Decision::Assign {
                runner: runners[i].name.clone(),
            }
        }
        None if matching.is_empty() => Decision::Wait {
            reason: reason::NO_MATCHING_RUNNER,
            message: "no adopted, connected and enabled runner matches runnerSelector".into(),
        },
        None => Decision::Wait {
            reason: reason::RUNNERS_BUSY,
            message: busy.to_owned(),
        },
    }
}

/// The runners each distinct selector matches, worked out on first sight:
/// thousands of Jobs usually share a handful of selectors.
struct SelectorGroups<'a> {
    runners: &'a [RunnerView],
    /// Usable shared runners (not on-demand, not direct-only), in name order.
    shared: Vec<usize>,
    by_hash: HashMap<u64, Vec<usize>>,
    /// Each selector, the runners it matches, and the message when all are full.
    groups: Vec<(&'a LabelSelector, Vec<usize>, String)>,
}

impl<'a> SelectorGroups<'a> {
    fn new(runners: &'a [RunnerView]) -> Self {
        let mut shared: Vec<usize> = (0..runners.len())
            .filter(|&i| {
                let r = &runners[i];
                r.usable && r.on_demand_for.is_none() && !r.direct_only
            })
            .collect();
        shared.sort_by(|&a, &b| runners[a].name.cmp(&runners[b].name));
        Self {
            runners,
            shared,
            by_hash: HashMap::new(),
            groups: Vec::new(),
        }
    }

    /// The usable shared runners `sel` matches, in name order, and what a Job
    /// waiting for them all is told.
    fn matching(&mut self, sel: &'a LabelSelector) -> (&[usize], &str) {
        let hash = selector_hash(sel);
        let same = self
            .by_hash
            .get(&hash)
            .and_then(|ids| ids.iter().copied().find(|&g| self.groups[g].0 == sel));
        let group = same.unwrap_or_else(|| {
            let parsed = Selector::try_from(sel.clone()).ok();
            let runners = self.runners;
            let matching: Vec<usize> = (self.shared.iter().copied())
                .filter(|&i| {
                    parsed
                        .as_ref()
                        .is_some_and(|s| s.matches(&runners[i].labels))
                })
                .collect();
            let busy = format!(
                "{} matching runner(s), all at maxConcurrentJobs",
                matching.len()
            );
            self.groups.push((sel, matching, busy));
            let g = self.groups.len() - 1;
            self.by_hash.entry(hash).or_default().push(g);
            g
        });
        let (_, matching, busy) = &self.groups[group];
        (matching, busy)
    }
}

/// One copy of each distinct selector for a plan's [`Queued`] Jobs. A plan
/// remembered per namespace held a copy per queued Job (640 bytes for a
/// one-label `matchLabels` map): 5 MiB at 8,500 queued Jobs, twice while the
/// next plan was made, where a handful of selectors usually serve them all.
#[derive(Debug, Default)]
pub struct Selectors(HashMap<u64, Vec<Arc<LabelSelector>>>);

impl Selectors {
    /// The shared copy equal to `sel`.
    pub fn share(&mut self, sel: &LabelSelector) -> Arc<LabelSelector> {
        let same = self.0.entry(selector_hash(sel)).or_default();
        if let Some(known) = same.iter().find(|k| k.as_ref() == sel) {
            return known.clone();
        }
        let new = Arc::new(sel.clone());
        same.push(new.clone());
        new
    }
}

/// A hash of a selector's content (k8s-openapi's types do not implement `Hash`).
fn selector_hash(sel: &LabelSelector) -> u64 {
    let mut h = DefaultHasher::new();
    sel.match_labels.hash(&mut h);
    for e in sel.match_expressions.iter().flatten() {
        (&e.key, &e.operator, &e.values).hash(&mut h);
    }
    h.finish()
}

/// What a queued Job shows now, as far as the queue is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shown {
    pub position: Option<i32>,
    /// Its `Scheduled=False` condition: (reason, message).
    pub waiting: Option<(String, String)>,
}

/// The queue's upkeep after a plan: the positions to write and the Jobs to
/// reconcile now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upkeep {
    /// (Job, its 1-based position), in queue order, only where what it shows
    /// is off ([`worth_writing`]).
    pub positions: Vec<(String, i32)>,
    /// Jobs the plan assigns, Jobs whose wait reason changed, and on-demand
    /// Jobs whose own runner has room.
    pub kick: Vec<String>,
}

/// The pure upkeep of one namespace's queue: `queue` in queue order, `decided`
/// its [`decisions`], `shown` what each Job shows (same order).
///
/// A Job the plan assigns is leaving the queue: it gets no position (its
/// reconcile assigns it; a position written first would be one more request per
/// Job, and a stale one), and the Jobs behind it move up at once.
pub fn upkeep(
    queue: &[Queued],
    decided: &[Decision],
    shown: &[Shown],
    runners: &[RunnerView],
) -> Upkeep {
    let mut out = Upkeep::default();
    let mut ahead: usize = 0;
    for ((job, decision), shown) in queue.iter().zip(decided).zip(shown) {
        if needs_reconcile(job, decision, shown, runners) {
            out.kick.push(job.name.clone());
        }
        if leaves_queue(job, decision) {
            continue;
        }
        ahead += 1;
        let position = i32::try_from(ahead).unwrap_or(i32::MAX);
        if worth_writing(shown.position, position) {
            out.positions.push((job.name.clone(), position));
        }
    }
    out
}

/// Positions up to this are kept exact: the Jobs about to run.
pub const EXACT_HEAD: i32 = 10;

/// Whether a Job showing `shown` needs `position` written. Exact at the head;
/// further back only once the shown place is off by more than a quarter, so a
/// Job deep in a draining queue is rewritten a few times on its way forward,
/// not once per pass (a queue of thousands moving by one each second).
pub fn worth_writing(shown: Option<i32>, position: i32) -> bool {
    match shown {
        None => true,
        Some(shown) if position <= EXACT_HEAD => shown != position,
        Some(shown) => {
            i64::from(shown).abs_diff(i64::from(position)) * 4 > position.unsigned_abs().into()
        }
    }
}

/// An on-demand Job, planned without its pod: only its own runner says it can go.
fn on_demand(job: &Queued) -> bool {
    job.selector.is_none() && job.runner_name.is_none() && job.invalid.is_none()
}

/// The plan hands this Job to a runner it can use now.
fn leaves_queue(job: &Queued, decision: &Decision) -> bool {
    matches!(decision, Decision::Assign { .. }) && !on_demand(job)
}

fn needs_reconcile(
    job: &Queued,
    decision: &Decision,
    shown: &Shown,
    runners: &[RunnerView],
) -> bool {
    match decision {
        _ if on_demand(job) => runners
            .iter()
            .any(|r| r.usable && r.free > 0 && r.on_demand_for.as_deref() == Some(&job.uid)),
        Decision::Assign { .. } => true,
        Decision::Wait { reason, message } => {
            shown.waiting.as_ref() != Some(&((*reason).to_owned(), message.clone()))
        }
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
