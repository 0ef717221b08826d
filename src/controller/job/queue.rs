//! The queue's decision, pure: FIFO by creationTimestamp, each Job to a usable
//! runner whose labels match and that has room.

use crate::crd::reasons::reason;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

use crate::controller::on_demand;

/// A runner as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Adopted or Preadopted, connected, enabled.
    pub usable: bool,
    /// `maxConcurrentJobs` minus its active Jobs.
    pub free: usize,
    /// An on-demand runner: the uid of the one Job it exists for.
    pub on_demand_for: Option<String>,
}

/// A queued Job, in queue order.
#[derive(Clone, Debug, PartialEq)]
pub struct Queued {
    pub name: String,
    pub selector: Option<LabelSelector>,
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

/// Whether `labels` satisfy `sel` (matchLabels and matchExpressions), by
/// kube's own selector; a selector that does not parse (`In` without values, an
/// unknown operator) matches nothing.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    Selector::try_from(sel.clone()).is_ok_and(|s| s.matches(labels))
}

/// The pure middle: FIFO over `queue`, each Job to the matching usable runner with
/// the most free capacity (ties by name); capacity given out is gone for later Jobs.
pub fn plan_queue(queue: &[Queued], runners: &[RunnerView]) -> BTreeMap<String, Decision> {
    let mut free: Vec<(usize, &RunnerView)> = runners.iter().map(|r| (r.free, r)).collect();
    let mut out = BTreeMap::new();
    for job in queue {
        let decision = if let Some(why) = &job.invalid {
            Decision::Wait {
                reason: reason::INVALID_SPEC,
                message: why.clone(),
            }
        } else if let Some(sel) = &job.selector {
            let matching: Vec<usize> = free
                .iter()
                .enumerate()
                .filter(|(_, (_, r))| {
                    r.usable && r.on_demand_for.is_none() && selector_matches(sel, &r.labels)
                })
                .map(|(i, _)| i)
                .collect();
            let best = matching
                .iter()
                .copied()
                .filter(|&i| free[i].0 > 0)
                .max_by(|&a, &b| {
                    free[a]
                        .0
                        .cmp(&free[b].0)
                        .then_with(|| free[b].1.name.cmp(&free[a].1.name))
                });
            match best {
                Some(i) => {
                    free[i].0 -= 1;
                    Decision::Assign {
                        runner: free[i].1.name.clone(),
                    }
                }
                None if matching.is_empty() => Decision::Wait {
                    reason: reason::NO_MATCHING_RUNNER,
                    message: "no adopted, connected and enabled runner matches runnerSelector"
                        .into(),
                },
                None => Decision::Wait {
                    reason: reason::RUNNERS_BUSY,
                    message: format!(
                        "{} matching runner(s), all at maxConcurrentJobs",
                        matching.len()
                    ),
                },
            }
        } else if let Some(slot) = &job.on_demand {
            // Only its own runner, and that runner only for it.
            let own = free.iter_mut().find(|(n, r)| {
                *n > 0
                    && r.usable
                    && Some(&r.name) == slot.runner.as_ref()
                    && r.on_demand_for.as_ref() == Some(&slot.job_uid)
            });
            match own {
                Some((n, r)) => {
                    *n -= 1;
                    Decision::Assign {
                        runner: r.name.clone(),
                    }
                }
                None => Decision::Wait {
                    reason: slot.reason,
                    message: slot.message.clone(),
                },
            }
        } else {
            Decision::Wait {
                reason: reason::RUNNER_STARTING,
                message: "waiting for its on-demand runner".into(),
            }
        };
        out.insert(job.name.clone(), decision);
    }
    out
}
