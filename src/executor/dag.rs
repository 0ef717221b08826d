//! The DAG of a Job's steps and the `when` rules, as pure functions: which steps
//! may start, which are skipped and why. The async executor only drives this.
//!
//! `when`, precisely. A step is decided once every step it `dependsOn` (its direct
//! dependencies) has finished — Succeeded, Failed, Skipped or Cancelled; by then
//! everything upstream of it (its transitive dependencies) has finished too.
//! "Upstream failed" means some transitive dependency ended Failed (a timeout is a
//! failure). Then:
//! - `onSuccess` (default) runs if every direct dependency Succeeded and nothing
//!   upstream failed. Otherwise it is Skipped: `DependencyFailed` when something
//!   upstream failed (even if an `onFailure`/`always` step in between succeeded),
//!   `DependencyCancelled` when a dependency was cancelled, else
//!   `DependencySkipped` (a Skipped dependency is not a success: the step it guards
//!   did not run, so neither does this one — as GitHub Actions does with `needs`).
//! - `onFailure` runs if something upstream failed, else is Skipped `NotOnFailure`.
//!   Only upstream counts: a failure in an unrelated branch does not trigger it, and
//!   an `onFailure` step without `dependsOn` never runs.
//! - `always` runs once its dependencies finished, whatever happened to them.
//!
//! A failure in one branch never stops an independent branch. Cancelling the Job
//! (not a `when` matter) marks every step not yet started Cancelled, `always` too.

use crate::crd::reasons::reason;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::crd::job::StepPhase;
use crate::crd::{Step, When};

/// Why a Job's steps do not form a DAG.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("step name {0:?} is used more than once")]
    DuplicateStep(String),
    #[error("step {step:?} depends on {dependency:?}, which is not a step of this Job")]
    UnknownDependency { step: String, dependency: String },
    #[error("step {0:?} depends on itself")]
    SelfDependency(String),
    /// Each step depends on the next; the last is the first again.
    #[error("dependency cycle: {} (each step depends on the next)", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// Steps as indices, with their dependencies, in a topological order.
#[derive(Clone, Debug)]
pub struct Dag {
    names: Vec<String>,
    deps: Vec<Vec<usize>>,
    order: Vec<usize>,
    upstream: Vec<BTreeSet<usize>>,
}

impl Dag {
    /// The DAG of a Job's steps.
    pub fn from_steps(steps: &[Step]) -> Result<Self, Vec<DagError>> {
        Self::build(steps.iter().map(|s| {
            (
                s.name.as_str(),
                s.depends_on.iter().flatten().map(String::as_str),
            )
        }))
    }

    /// A DAG from (name, dependencies) pairs, or every problem found.
    pub fn build<'a, D>(
        nodes: impl IntoIterator<Item = (&'a str, D)>,
    ) -> Result<Self, Vec<DagError>>
    where
        D: IntoIterator<Item = &'a str>,
    {
        let nodes: Vec<(&str, Vec<&str>)> = nodes
            .into_iter()
            .map(|(n, d)| (n, d.into_iter().collect()))
            .collect();
        let mut errors = Vec::new();
        let mut index = HashMap::new();
        for (i, (name, _)) in nodes.iter().enumerate() {
            if index.insert(*name, i).is_some()
                && !errors.contains(&DagError::DuplicateStep(name.to_string()))
            {
                errors.push(DagError::DuplicateStep(name.to_string()));
            }
        }
        let mut deps = vec![Vec::new(); nodes.len()];
        for (i, (name, dependencies)) in nodes.iter().enumerate() {
            for dep in dependencies {
                match index.get(dep) {
                    None => errors.push(DagError::UnknownDependency {
                        step: name.to_string(),
                        dependency: dep.to_string(),
                    }),
                    _ if dep == name => errors.push(DagError::SelfDependency(name.to_string())),
                    Some(&j) if !deps[i].contains(&j) => deps[i].push(j),
                    Some(_) => {}
                }
            }
        }
        let names: Vec<String> = nodes.iter().map(|(n, _)| n.to_string()).collect();
        let order = topological_order(&deps);
        if order.len() < names.len() {
            errors.extend(
                cycles(&deps, &order)
                    .into_iter()
                    .map(|c| DagError::Cycle(c.iter().map(|&i| names[i].clone()).collect())),
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut upstream = vec![BTreeSet::new(); names.len()];
        for &i in &order {
            let mut all = BTreeSet::new();
            for &d in &deps[i] {
                all.insert(d);
                all.extend(upstream[d].iter().copied());
            }
            upstream[i] = all;
        }
        Ok(Self {
            names,
            deps,
            order,
            upstream,
        })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, step: usize) -> &str {
        &self.names[step]
    }

    /// Direct dependencies of `step`.
    pub fn deps(&self, step: usize) -> &[usize] {
        &self.deps[step]
    }

    /// Every step `step` depends on, directly or not.
    pub fn upstream(&self, step: usize) -> &BTreeSet<usize> {
        &self.upstream[step]
    }

    /// A topological order; among steps free to go in either order, spec order.
    /// This is "DAG order" for outputs: a later step's value for a key wins.
    pub fn order(&self) -> &[usize] {
        &self.order
    }
}

/// Kahn's algorithm, always taking the lowest ready index; leaves out nodes on or
/// behind a cycle.
fn topological_order(deps: &[Vec<usize>]) -> Vec<usize> {
    let mut missing: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); deps.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..deps.len()).filter(|&i| missing[i] == 0).collect();
    let mut order = Vec::with_capacity(deps.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &dependents[i] {
            missing[j] -= 1;
            if missing[j] == 0 {
                ready.insert(j);
            }
        }
    }
    order
}

/// One cycle through each knot of nodes Kahn's algorithm could not order, as
/// a -> b -> ... -> a (each depending on the next), starting at its lowest index.
fn cycles(deps: &[Vec<usize>], ordered: &[usize]) -> Vec<Vec<usize>> {
    let mut left = vec![true; deps.len()];
    for &i in ordered {
        left[i] = false;
    }
    let mut found: Vec<Vec<usize>> = Vec::new();
    for start in 0..deps.len() {
        if !left[start] {
            continue;
        }
        // Every node left has a dependency left, so walking them must come round.
        let mut path = vec![start];
        let mut at = start;
        let cycle = loop {
            let Some(&next) = deps[at].iter().find(|&&d| left[d]) else {
                break None;
            };
            if let Some(pos) = path.iter().position(|&p| p == next) {
                break Some(path[pos..].to_vec());
            }
            path.push(next);
            at = next;
        };
        let Some(mut cycle) = cycle else { continue };
        let lowest = cycle
            .iter()
            .enumerate()
            .min_by_key(|(_, i)| **i)
            .map_or(0, |(p, _)| p);
        cycle.rotate_left(lowest);
        cycle.push(cycle[0]);
        if !found.contains(&cycle) {
            found.push(cycle);
        }
    }
    found
}

/// Why a step did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    DependencyFailed,
    DependencySkipped,
    DependencyCancelled,
    NotOnFailure,
}

impl SkipReason {
    /// The step's status `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DependencyFailed => reason::DEPENDENCY_FAILED,
            Self::DependencySkipped => "DependencySkipped",
            Self::DependencyCancelled => "DependencyCancelled",
            Self::NotOnFailure => "NotOnFailure",
        }
    }

    /// A sentence for the step's status `message`.
    pub fn message(self) -> &'static str {
        match self {
            Self::DependencyFailed => "a step it depends on (directly or not) failed",
            Self::DependencySkipped => "a step it depends on was skipped",
            Self::DependencyCancelled => "a step it depends on was cancelled",
            Self::NotOnFailure => "runs on failure, and nothing it depends on failed",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with a pending step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A dependency has not finished yet.
    Wait,
    Run,
    Skip(SkipReason),
}

/// The `when` rule (see the module doc): `deps` are the phases of the direct
/// dependencies, `upstream_failed` whether any transitive dependency failed.
pub fn decide(when: When, deps: &[StepPhase], upstream_failed: bool) -> Decision {
    if !deps.iter().all(|p| p.is_finished()) {
        return Decision::Wait;
    }
    match when {
        When::Always => Decision::Run,
        When::OnFailure if upstream_failed => Decision::Run,
        When::OnFailure => Decision::Skip(SkipReason::NotOnFailure),
        When::OnSuccess if upstream_failed => Decision::Skip(SkipReason::DependencyFailed),
        When::OnSuccess if deps.iter().all(|p| *p == StepPhase::Succeeded) => Decision::Run,
        When::OnSuccess if deps.contains(&StepPhase::Cancelled) => {
            Decision::Skip(SkipReason::DependencyCancelled)
        }
        When::OnSuccess => Decision::Skip(SkipReason::DependencySkipped),
    }
}

/// What [`Scheduler::advance`] decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Advance {
    /// Steps to start now (marked Running), in DAG order.
    pub start: Vec<usize>,
    /// Steps skipped now (marked Skipped), in DAG order.
    pub skipped: Vec<(usize, SkipReason)>,
}

/// Step phases over a DAG: the executor's state machine, without any I/O.
#[derive(Clone, Debug)]
pub struct Scheduler {
    dag: Dag,
    when: Vec<When>,
    /// Steps whose failure counts as a success (`allowFailure`).
    allowed: Vec<bool>,
    /// Service steps, and which of them are up (their dependents may start).
    services: Vec<bool>,
    up: Vec<bool>,
    phases: Vec<StepPhase>,
}

impl Scheduler {
    /// Every step Pending; `when[i]` is step `i`'s rule.
    pub fn new(dag: Dag, when: Vec<When>) -> Self {
        let phases = vec![StepPhase::Pending; dag.len()];
        let allowed = vec![false; dag.len()];
        let services = vec![false; dag.len()];
        let up = vec![false; dag.len()];
        Self {
            dag,
            when,
            allowed,
            services,
            up,
            phases,
        }
    }

    /// `services[i]`: step `i` is a service. Its dependents start once it is up
    /// ([`Self::service_up`]), not once it finished.
    #[must_use]
    pub fn services(mut self, services: Vec<bool>) -> Self {
        self.services = services;
        self
    }

    pub fn is_service(&self, step: usize) -> bool {
        self.services.get(step).copied().unwrap_or(false)
    }

    /// The service `step` accepts connections: its dependents may start.
    pub fn service_up(&mut self, step: usize) {
        self.up[step] = true;
    }

    /// Service `step` is re-run: its dependents wait for it again.
    pub fn service_down(&mut self, step: usize) {
        self.up[step] = false;
    }

    /// Whether service `step` is up and still running.
    pub fn is_up(&self, step: usize) -> bool {
        self.up[step] && self.phases[step] == StepPhase::Running
    }

    /// Services still running once no other step is pending or running: the
    /// steps they serve are over, so they are to be stopped.
    pub fn services_done(&self) -> Vec<usize> {
        if self.others_active() {
            return Vec::new();
        }
        (0..self.phases.len())
            .filter(|&i| self.is_service(i) && self.phases[i] == StepPhase::Running)
            .collect()
    }

    /// Whether a step other than a service is pending or running (a service that
    /// ends now ends too early).
    pub fn others_active(&self) -> bool {
        (0..self.phases.len()).any(|i| {
            !self.is_service(i) && matches!(self.phases[i], StepPhase::Pending | StepPhase::Running)
        })
    }

    /// A dependency's phase as its dependents see it: a service that is up counts
    /// as succeeded.
    fn gate(&self, dep: usize) -> StepPhase {
        if self.is_up(dep) {
            StepPhase::Succeeded
        } else {
            self.phases[dep]
        }
    }

    /// `allowed[i]`: step `i` has `allowFailure`, so its failure counts as a
    /// success for the `when` rules of the steps after it.
    #[must_use]
    pub fn allow_failures(mut self, allowed: Vec<bool>) -> Self {
        self.allowed = allowed;
        self
    }

    pub fn dag(&self) -> &Dag {
        &self.dag
    }

    pub fn phase(&self, step: usize) -> StepPhase {
        self.phases[step]
    }

    /// Decide every pending step whose dependencies finished: start it or skip it.
    /// One pass in DAG order settles chains of skips.
    pub fn advance(&mut self) -> Advance {
        let mut out = Advance::default();
        for &i in self.dag.order() {
            if self.phases[i] != StepPhase::Pending {
                continue;
            }
            let deps: Vec<StepPhase> = self.dag.deps(i).iter().map(|&d| self.gate(d)).collect();
            let upstream_failed = self
                .dag
                .upstream(i)
                .iter()
                .any(|&u| self.phases[u] == StepPhase::Failed);
            match decide(
                self.when.get(i).copied().unwrap_or_default(),
                &deps,
                upstream_failed,
            ) {
                Decision::Wait => {}
                Decision::Run => {
                    self.phases[i] = StepPhase::Running;
                    out.start.push(i);
                }
                Decision::Skip(reason) => {
                    self.phases[i] = StepPhase::Skipped;
                    out.skipped.push((i, reason));
                }
            }
        }
        out
    }

    /// A step found already running (resumed): never started again.
    pub fn adopt(&mut self, step: usize) {
        self.phases[step] = StepPhase::Running;
    }

    /// Whether step `step` has `allowFailure`.
    pub fn allows_failure(&self, step: usize) -> bool {
        self.allowed.get(step).copied().unwrap_or(false)
    }

    /// Record how a running step ended. An allowed failure counts as a success.
    pub fn finish(&mut self, step: usize, phase: StepPhase) {
        self.phases[step] = match phase {
            StepPhase::Failed if self.allows_failure(step) => StepPhase::Succeeded,
            other => other,
        };
    }

    /// Steps not started yet.
    pub fn pending(&self) -> Vec<usize> {
        (0..self.phases.len())
            .filter(|&i| self.phases[i] == StepPhase::Pending)
            .collect()
    }

    /// Whether any step is running.
    pub fn any_running(&self) -> bool {
        self.phases.contains(&StepPhase::Running)
    }
}

#[cfg(test)]
#[path = "dag_tests.rs"]
mod tests;
