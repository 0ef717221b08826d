//! The lists' view model, as pure functions: a Runner or a Job in, one row of
//! strings out, and the Jobs filter. No I/O; the HTML is [`super::html`]'s.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::core::{Expression, Selector, SelectorExt};

use crate::cli::job_list::age;
use crate::crd::conditions;
use crate::crd::job::JobPhase;
use crate::crd::reasons::{condition, reason};
use crate::crd::runner::AdoptionState;
use crate::crd::{Job, Runner};

/// What a cell shows for a value that is not set.
pub const NONE: &str = "—";

/// A button a runner row may carry (when the user may patch Runners).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerAction {
    Adopt,
    Reject,
    Disable,
    Enable,
    Forget,
}

impl RunnerAction {
    /// Its name in the route (`/api/runners/NS/NAME/adopt`) and on the button.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerAction::Adopt => "adopt",
            RunnerAction::Reject => "reject",
            RunnerAction::Disable => "disable",
            RunnerAction::Enable => "enable",
            RunnerAction::Forget => "forget",
        }
    }

    pub fn parse(s: &str) -> Option<RunnerAction> {
        [
            RunnerAction::Adopt,
            RunnerAction::Reject,
            RunnerAction::Disable,
            RunnerAction::Enable,
            RunnerAction::Forget,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// One runner, as the runners table shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerRow {
    pub namespace: String,
    pub name: String,
    pub adoption: String,
    /// `Connected`, `Disconnected` or `Disabled`.
    pub state: String,
    pub labels: String,
    pub active_jobs: String,
    pub version: String,
    /// "connected" while connected, else when the Connected condition last flipped.
    pub last_seen: String,
    /// The buttons that make sense for its state (shown only to users allowed).
    pub actions: Vec<RunnerAction>,
}

pub fn runner_row(r: &Runner, now: Timestamp) -> RunnerRow {
    let status = r.status.clone().unwrap_or_default();
    let adoption = status.adoption.unwrap_or_default();
    let connected = conditions::find(&status.conditions, "Connected");
    let is_connected = connected.is_some_and(|c| c.status == "True");
    let state = match (r.spec.disabled, is_connected) {
        (true, _) => "Disabled",
        (false, true) => "Connected",
        (false, false) => "Disconnected",
    };
    let last_seen = match connected {
        _ if is_connected => "now".to_owned(),
        Some(c) => ago(&c.last_transition_time, now),
        None => NONE.to_owned(),
    };
    RunnerRow {
        namespace: r.namespace().unwrap_or_default(),
        name: r.name_any(),
        adoption: format!("{adoption:?}"),
        state: state.to_owned(),
        labels: labels_text(&r.spec.labels),
        active_jobs: status.active_jobs.unwrap_or(0).to_string(),
        version: status.version.unwrap_or_else(|| NONE.to_owned()),
        last_seen,
        actions: runner_actions(adoption, r.spec.disabled),
    }
}

/// Adopt unless adopted, reject unless rejected, disable or enable, forget.
fn runner_actions(adoption: AdoptionState, disabled: bool) -> Vec<RunnerAction> {
    let mut actions = Vec::new();
    if !matches!(adoption, AdoptionState::Adopted | AdoptionState::Preadopted) {
        actions.push(RunnerAction::Adopt);
    }
    if adoption != AdoptionState::Rejected {
        actions.push(RunnerAction::Reject);
    }
    actions.push(if disabled {
        RunnerAction::Enable
    } else {
        RunnerAction::Disable
    });
    actions.push(RunnerAction::Forget);
    actions
}

/// One Job, as the Jobs table shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRow {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    /// Why a Job is not scheduled yet, in words (empty once it is).
    pub waiting: String,
    pub queue_position: String,
    pub runner: String,
    pub epoch: String,
    pub age: String,
    pub duration: String,
}

pub fn job_row(job: &Job, now: Timestamp) -> JobRow {
    let status = job.status.clone().unwrap_or_default();
    let or_none = |v: Option<String>| v.unwrap_or_else(|| NONE.to_owned());
    JobRow {
        namespace: job.namespace().unwrap_or_default(),
        name: job.name_any(),
        phase: phase_text(job),
        waiting: waiting(job),
        queue_position: or_none(status.queue_position.map(|p| p.to_string())),
        runner: or_none(status.runner.clone()),
        epoch: or_none(status.epoch.map(|e| e.to_string())),
        age: or_none(
            job.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| ago(t, now)),
        ),
        duration: or_none(duration(
            status.start_time.as_ref(),
            status.completion_time.as_ref(),
            now,
        )),
    }
}

/// The phase, `Queued` when the controller has not written one yet.
pub fn phase_text(job: &Job) -> String {
    let phase = job.status.as_ref().and_then(|s| s.phase);
    format!("{:?}", phase.unwrap_or(JobPhase::Queued))
}

/// `Scheduled=False`'s reason in words, with the condition's message when it adds one.
pub fn waiting(job: &Job) -> String {
    let Some(c) = job
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, condition::SCHEDULED))
        .filter(|c| c.status == "False")
    else {
        return String::new();
    };
    let words = reason_words(&c.reason);
    match (words, c.message.is_empty()) {
        (Some(w), true) => w.to_owned(),
        (Some(w), false) => format!("{w} ({})", c.message),
        (None, true) => c.reason.clone(),
        (None, false) => format!("{}: {}", c.reason, c.message),
    }
}

/// A sentence for each reason a Queued Job waits.
pub fn reason_words(why: &str) -> Option<&'static str> {
    Some(match why {
        reason::QUEUED => "Waiting for the controller to queue it.",
        reason::INVALID_SPEC => "Its steps cannot run (invalid spec); only a new Job helps.",
        reason::NO_MATCHING_RUNNER => "No adopted, enabled runner matches its runnerSelector.",
        reason::RUNNERS_BUSY => "Every matching runner is busy; it waits its turn.",
        reason::NAMED_RUNNER_UNAVAILABLE => {
            "The runner it names is not adopted, connected and enabled."
        }
        reason::RUNNER_LOST => "Its runner vanished; it waits to be handed over.",
        reason::ON_DEMAND_UNAVAILABLE => "This controller spawns no on-demand runner pods.",
        reason::RUNNER_POD_PENDING => "Its on-demand runner pod is not scheduled yet.",
        reason::IMAGE_PULL_FAILED => "The runner image could not be pulled.",
        reason::RUNNER_STARTING => "Its on-demand runner pod is starting.",
        reason::NOT_ASSIGNED_BY_NAME => "A direct-only runner takes only Jobs that name it.",
        reason::RUNNER_NAME_TAKEN => "Its on-demand runner's name is held by another Runner.",
        reason::CANCELLING => "Cancelling.",
        _ => return None,
    })
}

/// How long ago `t` was, as kubectl prints ages.
pub fn ago(t: &Time, now: Timestamp) -> String {
    age(now.as_second() - t.0.as_second())
}

/// From start to completion, or to now while it runs.
fn duration(start: Option<&Time>, end: Option<&Time>, now: Timestamp) -> Option<String> {
    let start = start?.0.as_second();
    let end = end.map(|t| t.0.as_second()).unwrap_or(now.as_second());
    Some(age(end - start))
}

/// `k=v, k2=v2`, or the empty-value mark.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return NONE.to_owned();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(", ")
}

/// The Jobs list's filter (the page's query string).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct JobFilter {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub phase: Option<String>,
    /// `k=v,k2!=v,k3,!k4`: as `kubectl get -l` takes it (equality and existence).
    #[serde(default)]
    pub label: Option<String>,
}

impl JobFilter {
    /// Whether the Job passes; an unparsable label selector lets nothing through.
    pub fn matches(&self, job: &Job) -> bool {
        if set(&self.namespace).is_some_and(|ns| job.namespace().as_deref() != Some(ns.trim())) {
            return false;
        }
        if set(&self.phase).is_some_and(|p| !phase_text(job).eq_ignore_ascii_case(p.trim())) {
            return false;
        }
        match set(&self.label).map(parse_selector) {
            None => true,
            Some(Some(sel)) => sel.matches(job.labels()),
            Some(None) => false,
        }
    }
}

/// A filter field that says something (not unset, not blank).
fn set(o: &Option<String>) -> Option<&str> {
    o.as_deref().filter(|s| !s.trim().is_empty())
}

/// A label selector's equality-based form, or None when it is not one.
pub fn parse_selector(text: &str) -> Option<Selector> {
    let mut exprs = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let expr = if let Some((k, v)) = part.split_once("!=") {
            Expression::NotEqual(key(k)?, v.trim().to_owned())
        } else if let Some((k, v)) = part.split_once('=') {
            let v = v.strip_prefix('=').unwrap_or(v);
            Expression::Equal(key(k)?, v.trim().to_owned())
        } else if let Some(k) = part.strip_prefix('!') {
            Expression::DoesNotExist(key(k)?)
        } else {
            Expression::Exists(key(part)?)
        };
        exprs.push(expr);
    }
    Some(exprs.into_iter().collect())
}

/// A label key: non-empty, no spaces.
fn key(k: &str) -> Option<String> {
    let k = k.trim();
    (!k.is_empty() && !k.contains(char::is_whitespace)).then(|| k.to_owned())
}

#[cfg(test)]
#[path = "rows_tests.rs"]
mod tests;
