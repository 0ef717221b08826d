//! The pages' markup, as pure functions of the view model: the page shell, the
//! runners table and the Jobs table. Every value is escaped here; fragments carry
//! no newlines, so they travel as one server-sent event each.

use std::fmt::Write;

use super::rows::{JobFilter, JobRow, NONE, RunnerRow};

/// Text safe inside an element or a quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("&#10;"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// A path segment safe in a URL (names are DNS labels; anything else is encoded).
pub fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// What the page shell needs besides its body.
pub struct Shell<'a> {
    pub title: &'a str,
    /// The CSRF token the page's script sends with every change it asks for.
    pub token: &'a str,
    /// Where the page's live updates come from (server-sent events).
    pub live: &'a str,
    /// The kube context and namespace the dashboard acts in.
    pub scope: &'a str,
}

/// A whole page around `body` (already markup).
pub fn page(shell: &Shell<'_>, body: &str) -> String {
    format!(
        r##"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="color-scheme" content="light dark"><meta name="baton-token" content="{token}"><title>{title} · Baton</title><link rel="stylesheet" href="/static/app.css"><script src="/static/app.js" defer></script></head><body><a class="skip" href="#main">Skip to content</a><header><nav aria-label="Main"><a class="brand" href="/">Baton</a><a href="/#runners-h">Runners</a><a href="/#jobs-h">Jobs</a></nav><span class="scope">{scope}</span><span id="conn" class="conn" role="status" aria-live="polite"></span></header><main id="main" data-live="{live}">{body}</main><div id="toast" role="status" aria-live="polite"></div></body></html>"##,
        token = escape(shell.token),
        title = escape(shell.title),
        scope = escape(shell.scope),
        live = escape(shell.live),
    )
}

/// The front page: runners, then the Jobs filter and table.
pub fn index_body(runners: &str, filter: &JobFilter, jobs: &str) -> String {
    let value = |o: &Option<String>| escape(o.as_deref().unwrap_or(""));
    let phases = [
        "Queued",
        "Assigned",
        "Running",
        "Succeeded",
        "Failed",
        "Cancelled",
    ];
    let mut options = String::from(r#"<option value="">any</option>"#);
    for p in phases {
        let selected = filter
            .phase
            .as_deref()
            .is_some_and(|f| f.eq_ignore_ascii_case(p));
        let sel = if selected { " selected" } else { "" };
        let _ = write!(options, r#"<option{sel}>{p}</option>"#);
    }
    format!(
        r#"<section aria-labelledby="runners-h"><h1 id="runners-h">Runners</h1><div id="runners" class="live">{runners}</div></section><section aria-labelledby="jobs-h"><h1 id="jobs-h">Jobs</h1><form class="filter" method="get" action="/"><label>Namespace <input name="namespace" value="{ns}" size="12"></label><label>Phase <select name="phase">{options}</select></label><label>Labels <input name="label" value="{label}" placeholder="app=web,!tmp" size="18"></label><button type="submit">Filter</button></form><div id="jobs" class="live">{jobs}</div></section>"#,
        ns = value(&filter.namespace),
        label = value(&filter.label),
    )
}

/// The runners table; buttons only when `can_patch` / `can_delete` say the user may.
pub fn runners_table(
    rows: &[RunnerRow],
    can_patch: &dyn Fn(&str) -> bool,
    can_delete: &dyn Fn(&str) -> bool,
) -> String {
    if rows.is_empty() {
        return r#"<p class="empty">No runners.</p>"#.to_owned();
    }
    let mut out = String::from(
        r#"<table class="runners"><caption class="sr-only">Runners</caption><thead><tr><th scope="col">Name</th><th scope="col">Namespace</th><th scope="col">Adoption</th><th scope="col">State</th><th scope="col">Labels</th><th scope="col">Active Jobs</th><th scope="col">Version</th><th scope="col">Last seen</th><th scope="col">Actions</th></tr></thead><tbody>"#,
    );
    for r in rows {
        let _ = write!(
            out,
            r#"<tr data-runner="{name}"><th scope="row">{name}</th><td>{ns}</td><td><span class="badge adoption-{adoption_c}">{adoption}</span></td><td><span class="badge state-{state_c}">{state}</span></td><td>{labels}</td><td>{active}</td><td>{version}</td><td>{seen}</td><td class="actions">{buttons}</td></tr>"#,
            name = escape(&r.name),
            ns = escape(&r.namespace),
            adoption = escape(&r.adoption),
            adoption_c = escape(&r.adoption.to_ascii_lowercase()),
            state = escape(&r.state),
            state_c = escape(&r.state.to_ascii_lowercase()),
            labels = escape(&r.labels),
            active = escape(&r.active_jobs),
            version = escape(&r.version),
            seen = escape(&r.last_seen),
            buttons = runner_buttons(r, can_patch(&r.namespace), can_delete(&r.namespace)),
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn runner_buttons(r: &RunnerRow, can_patch: bool, can_delete: bool) -> String {
    use super::rows::RunnerAction;
    let mut out = String::new();
    for a in &r.actions {
        let allowed = match a {
            RunnerAction::Forget => can_delete,
            _ => can_patch,
        };
        if !allowed {
            continue;
        }
        let verb = a.as_str();
        let confirm = match a {
            RunnerAction::Forget => " data-confirm=\"Forget this runner (delete its Runner)?\"",
            RunnerAction::Reject => " data-confirm=\"Reject this runner?\"",
            _ => "",
        };
        let _ = write!(
            out,
            r#"<button type="button" class="act act-{verb}" data-action="/api/runners/{ns}/{name}/{verb}"{confirm} aria-label="{label} runner {ename}">{label}</button>"#,
            ns = segment(&r.namespace),
            name = segment(&r.name),
            ename = escape(&r.name),
            label = capitalize(verb),
        );
    }
    if out.is_empty() {
        out.push_str(NONE);
    }
    out
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// The Jobs table (rows already filtered), each name a link to its page.
pub fn jobs_table(rows: &[JobRow]) -> String {
    if rows.is_empty() {
        return r#"<p class="empty">No Jobs.</p>"#.to_owned();
    }
    let mut out = String::from(
        r#"<table class="jobs"><caption class="sr-only">Jobs</caption><thead><tr><th scope="col">Name</th><th scope="col">Namespace</th><th scope="col">Phase</th><th scope="col">Waiting because</th><th scope="col">Queue</th><th scope="col">Runner</th><th scope="col">Epoch</th><th scope="col">Age</th><th scope="col">Duration</th></tr></thead><tbody>"#,
    );
    for j in rows {
        let _ = write!(
            out,
            r#"<tr data-job="{name}"><th scope="row"><a href="/jobs/{ns_s}/{name_s}">{name}</a></th><td>{ns}</td><td><span class="badge phase-{phase_c}">{phase}</span></td><td>{waiting}</td><td>{queue}</td><td>{runner}</td><td>{epoch}</td><td>{age}</td><td>{duration}</td></tr>"#,
            name = escape(&j.name),
            ns = escape(&j.namespace),
            ns_s = segment(&j.namespace),
            name_s = segment(&j.name),
            phase = escape(&j.phase),
            phase_c = escape(&j.phase.to_ascii_lowercase()),
            waiting = escape(&j.waiting),
            queue = escape(&j.queue_position),
            runner = escape(&j.runner),
            epoch = escape(&j.epoch),
            age = escape(&j.age),
            duration = escape(&j.duration),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// A list that could not be read (the watch's error), in place of its table.
pub fn unavailable(what: &str, why: &str) -> String {
    format!(
        r#"<p class="error" role="alert">Cannot list {}: {}</p>"#,
        escape(what),
        escape(why)
    )
}

#[cfg(test)]
#[path = "html_tests.rs"]
mod tests;
