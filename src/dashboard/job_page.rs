//! A Job's page, as pure functions: the Job and its Events in, the view model and
//! its markup out — the step graph ([`super::dag`]), each step's phase, exit code,
//! end reason and artifacts, the outputs, the Events, and the cancel button.

use std::fmt::Write;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::dag::{self, Node};
use super::html::{escape, segment};
use super::rows::{self, NONE};
use crate::crd::Job;
use crate::crd::job::{JobPhase, StepStatus};

/// One step, as its row shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepView {
    pub name: String,
    pub phase: String,
    pub exit_code: String,
    /// The end reason, and its message when there is one.
    pub reason: String,
    pub duration: String,
    pub artifacts: String,
}

/// One Event about the Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub age: String,
    pub count: String,
}

/// What the page shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView {
    pub namespace: String,
    pub name: String,
    pub row: rows::JobRow,
    pub nodes: Vec<Node>,
    pub steps: Vec<StepView>,
    pub outputs: Vec<(String, String)>,
    pub events: Vec<EventRow>,
    /// Ended (Succeeded, Failed, Cancelled): nothing left to cancel.
    pub finished: bool,
    pub cancel_requested: bool,
}

pub fn job_view(job: &Job, events: &[Event], now: Timestamp) -> JobView {
    let status = job.status.clone().unwrap_or_default();
    let step_status = |name: &str| status.steps.iter().find(|s| s.name == name);
    let phase_of = |name: &str| step_phase(step_status(name));
    let nodes = job
        .spec
        .steps
        .iter()
        .map(|s| Node {
            name: s.name.clone(),
            depends_on: s.depends_on.clone().unwrap_or_default(),
            phase: phase_of(&s.name),
        })
        .collect();
    let steps = job
        .spec
        .steps
        .iter()
        .map(|s| step_view(&s.name, step_status(&s.name), now))
        .collect();
    let finished = matches!(
        status.phase,
        Some(JobPhase::Succeeded | JobPhase::Failed | JobPhase::Cancelled)
    );
    JobView {
        namespace: job.namespace().unwrap_or_default(),
        name: job.name_any(),
        row: rows::job_row(job, now),
        nodes,
        steps,
        outputs: status.outputs.into_iter().collect(),
        events: event_rows(events, now),
        finished,
        cancel_requested: job.spec.cancel == Some(true),
    }
}

/// A step's phase; `Failed (allowed)` for a failure its `allowFailure` permits.
fn step_phase(s: Option<&StepStatus>) -> String {
    match s {
        None => "Pending".to_owned(),
        Some(s) => format!("{:?}", s.phase),
    }
}

fn step_view(name: &str, s: Option<&StepStatus>, now: Timestamp) -> StepView {
    let or_none = |v: Option<String>| v.unwrap_or_else(|| NONE.to_owned());
    let allowed = s.is_some_and(|s| s.failure_allowed == Some(true));
    let phase = step_phase(s) + if allowed { " (allowed)" } else { "" };
    StepView {
        name: name.to_owned(),
        phase,
        exit_code: or_none(s.and_then(|s| s.exit_code).map(|c| c.to_string())),
        reason: or_none(s.and_then(|s| {
            let reason = s.reason.clone()?;
            Some(match s.message.as_deref().filter(|m| !m.is_empty()) {
                Some(m) => format!("{reason}: {m}"),
                None => reason,
            })
        })),
        duration: or_none(s.and_then(|s| {
            let start = s.start_time.as_ref()?.0.as_second();
            let end = s.completion_time.as_ref().map(|t| t.0.as_second());
            Some(crate::cli::job_list::age(
                end.unwrap_or(now.as_second()) - start,
            ))
        })),
        artifacts: or_none(s.and_then(|s| s.artifacts.as_ref()).map(|a| {
            format!(
                "{} ({} bytes; +{} ~{} -{})",
                a.digest, a.size, a.added, a.modified, a.deleted
            )
        })),
    }
}

/// Events newest first.
fn event_rows(events: &[Event], now: Timestamp) -> Vec<EventRow> {
    let mut sorted: Vec<(Option<Timestamp>, &Event)> =
        events.iter().map(|e| (event_time(e), e)).collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.0));
    sorted
        .into_iter()
        .map(|(t, e)| EventRow {
            type_: e.type_.clone().unwrap_or_else(|| "Normal".into()),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            age: t
                .map(|t| rows::ago(&Time(t), now))
                .unwrap_or_else(|| NONE.into()),
            count: e
                .series
                .as_ref()
                .and_then(|s| s.count)
                .or(e.count)
                .unwrap_or(1)
                .to_string(),
        })
        .collect()
}

/// When it last happened: the series' last observation, else the last or only time.
fn event_time(e: &Event) -> Option<Timestamp> {
    let series = e
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref());
    series
        .map(|t| t.0)
        .or(e.last_timestamp.as_ref().map(|t| t.0))
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.first_timestamp.as_ref().map(|t| t.0))
}

/// The page body; the cancel button only when `can_cancel` and there is
/// something to cancel.
pub fn job_body(v: &JobView, can_cancel: bool) -> String {
    let mut out = String::new();
    header(&mut out, v, can_cancel);
    let _ = write!(
        out,
        r#"<section aria-labelledby="graph-h"><h2 id="graph-h">Graph</h2><div class="dag-wrap">{}</div></section>"#,
        dag::svg(&v.nodes)
    );
    steps_table(&mut out, &v.steps);
    outputs(&mut out, &v.outputs);
    events_table(&mut out, &v.events);
    out
}

fn header(out: &mut String, v: &JobView, can_cancel: bool) {
    let r = &v.row;
    let _ = write!(
        out,
        r#"<h1>Job {name} <span class="badge phase-{pc}" id="job-phase">{phase}</span></h1><dl class="facts"><dt>Namespace</dt><dd>{ns}</dd><dt>Runner</dt><dd>{runner}</dd><dt>Epoch</dt><dd>{epoch}</dd><dt>Queue position</dt><dd>{queue}</dd><dt>Age</dt><dd>{age}</dd><dt>Duration</dt><dd>{duration}</dd></dl>"#,
        name = escape(&v.name),
        pc = escape(&r.phase.to_ascii_lowercase()),
        phase = escape(&r.phase),
        ns = escape(&v.namespace),
        runner = escape(&r.runner),
        epoch = escape(&r.epoch),
        queue = escape(&r.queue_position),
        age = escape(&r.age),
        duration = escape(&r.duration),
    );
    if !r.waiting.is_empty() {
        let _ = write!(
            out,
            r#"<p class="waiting" role="note">{}</p>"#,
            escape(&r.waiting)
        );
    }
    if v.cancel_requested && !v.finished {
        out.push_str(r#"<p class="waiting">Cancel requested.</p>"#);
    } else if can_cancel && !v.finished {
        let _ = write!(
            out,
            r#"<p><button type="button" class="act act-cancel" data-action="/api/jobs/{ns}/{name}/cancel" data-confirm="Cancel this Job?">Cancel Job</button></p>"#,
            ns = segment(&v.namespace),
            name = segment(&v.name),
        );
    }
}

fn steps_table(out: &mut String, steps: &[StepView]) {
    out.push_str(r#"<section aria-labelledby="steps-h"><h2 id="steps-h">Steps</h2><table class="steps"><thead><tr><th scope="col">Step</th><th scope="col">Phase</th><th scope="col">Exit code</th><th scope="col">End reason</th><th scope="col">Duration</th><th scope="col">Artifacts</th></tr></thead><tbody>"#);
    for s in steps {
        let phase_class = s.phase.split(' ').next().unwrap_or("").to_ascii_lowercase();
        let _ = write!(
            out,
            r#"<tr id="step-{name}" data-step="{name}"><th scope="row">{name}</th><td><span class="badge phase-{pc}">{phase}</span></td><td>{exit}</td><td>{reason}</td><td>{duration}</td><td class="mono">{artifacts}</td></tr>"#,
            name = escape(&s.name),
            pc = escape(&phase_class),
            phase = escape(&s.phase),
            exit = escape(&s.exit_code),
            reason = escape(&s.reason),
            duration = escape(&s.duration),
            artifacts = escape(&s.artifacts),
        );
    }
    out.push_str("</tbody></table></section>");
}

fn outputs(out: &mut String, outputs: &[(String, String)]) {
    out.push_str(r#"<section aria-labelledby="outputs-h"><h2 id="outputs-h">Outputs</h2>"#);
    if outputs.is_empty() {
        out.push_str(r#"<p class="empty">None.</p>"#);
    } else {
        out.push_str(r#"<dl class="outputs">"#);
        for (k, v) in outputs {
            let _ = write!(
                out,
                r#"<dt>{}</dt><dd class="mono">{}</dd>"#,
                escape(k),
                escape(v)
            );
        }
        out.push_str("</dl>");
    }
    out.push_str("</section>");
}

fn events_table(out: &mut String, events: &[EventRow]) {
    out.push_str(r#"<section aria-labelledby="events-h"><h2 id="events-h">Events</h2>"#);
    if events.is_empty() {
        out.push_str(r#"<p class="empty">None.</p></section>"#);
        return;
    }
    out.push_str(r#"<table class="events"><thead><tr><th scope="col">Type</th><th scope="col">Reason</th><th scope="col">Message</th><th scope="col">Count</th><th scope="col">Last seen</th></tr></thead><tbody>"#);
    for e in events {
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            escape(&e.type_),
            escape(&e.reason),
            escape(&e.message),
            escape(&e.count),
            escape(&e.age),
        );
    }
    out.push_str("</tbody></table></section>");
}

/// One log viewer per step, outside the live part of the page (a viewer keeps its
/// lines while the rest is redrawn); without a log server, how to get one.
pub fn logs_section(ns: &str, name: &str, steps: &[String], enabled: bool) -> String {
    let mut out =
        String::from(r#"<section aria-labelledby="logs-h" id="logs"><h2 id="logs-h">Logs</h2>"#);
    if !enabled {
        out.push_str(r#"<p class="empty">Start the dashboard with <code>--server</code> and <code>--token</code> (a token minted for audience <code>baton</code>) to follow the steps' logs here.</p></section>"#);
        return out;
    }
    for step in steps {
        let _ = write!(
            out,
            r#"<details class="log" data-step="{step}" data-log-src="/live/logs/{ns}/{name}/{step_s}"><summary>Step {step} <span class="log-count" aria-live="off"></span></summary><div class="log-tools"><label>Search <input type="search" class="log-search" aria-label="Search the log of step {step}"></label><button type="button" class="log-all">Show all lines</button><span class="log-state" role="status"></span></div><pre class="log-lines" tabindex="0" aria-label="Log of step {step}"></pre></details>"#,
            step = escape(step),
            ns = segment(ns),
            name = segment(name),
            step_s = segment(step),
        );
    }
    out.push_str("</section>");
    out
}

#[cfg(test)]
#[path = "job_page_tests.rs"]
mod tests;
