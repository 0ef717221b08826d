#![allow(clippy::unwrap_used)]
use super::*;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

/// build → test (Running), build → lint (Failed, allowed); build Succeeded with artifacts.
fn job(phase: &str, cancel: bool) -> Job {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "Job",
        "metadata": { "name": "ci", "namespace": "team", "creationTimestamp": "2027-01-15T08:00:00Z" },
        "spec": {
            "cancel": cancel,
            "steps": [
                { "name": "build", "image": "i", "script": "true" },
                { "name": "test", "image": "i", "script": "true", "dependsOn": ["build"] },
                { "name": "lint", "image": "i", "script": "true", "dependsOn": ["build"] },
                { "name": "ship", "image": "i", "script": "true", "dependsOn": ["test", "lint"] }
            ]
        },
        "status": {
            "phase": phase,
            "runner": "r1",
            "epoch": 3,
            "outputs": { "version": "1.2.3" },
            "steps": [
                { "name": "build", "phase": "Succeeded", "exitCode": 0, "reason": "Completed",
                  "startTime": "2027-01-15T08:00:00Z", "completionTime": "2027-01-15T08:00:30Z",
                  "artifacts": { "digest": "sha256:abc", "size": 1024, "added": 2, "modified": 1, "deleted": 0 } },
                { "name": "test", "phase": "Running", "startTime": "2027-01-15T08:00:30Z" },
                { "name": "lint", "phase": "Failed", "exitCode": 2, "reason": "Error",
                  "message": "exited 2", "failureAllowed": true }
            ]
        }
    }))
    .unwrap()
}

fn event(reason: &str, message: &str, secs: i64, count: Option<i32>) -> Event {
    Event {
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Normal".into()),
        last_timestamp: Some(Time(at(secs))),
        count,
        ..Default::default()
    }
}

#[test]
fn each_step_shows_phase_exit_code_end_reason_and_artifacts() {
    let v = job_view(&job("Running", false), &[], at(0));
    let got: Vec<(&str, &str, &str, &str)> = v
        .steps
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.phase.as_str(),
                s.exit_code.as_str(),
                s.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("build", "Succeeded", "0", "Completed"),
            ("test", "Running", NONE, NONE),
            ("lint", "Failed (allowed)", "2", "Error: exited 2"),
            ("ship", "Pending", NONE, NONE),
        ]
    );
    assert_eq!(v.steps[0].artifacts, "sha256:abc (1024 bytes; +2 ~1 -0)");
    assert_eq!(v.steps[0].duration, "30s");
    assert_eq!(v.outputs, [("version".to_owned(), "1.2.3".to_owned())]);
    let phases: Vec<&str> = v.nodes.iter().map(|n| n.phase.as_str()).collect();
    assert_eq!(phases, ["Succeeded", "Running", "Failed", "Pending"]);
    assert_eq!(v.nodes[3].depends_on, ["test", "lint"]);
}

#[test]
fn the_cancel_button_shows_only_while_there_is_something_to_cancel_and_the_user_may() {
    let body = |phase: &str, cancel: bool, may: bool| {
        job_body(&job_view(&job(phase, cancel), &[], at(0)), may)
    };
    let button = r#"data-action="/api/jobs/team/ci/cancel""#;
    assert!(body("Running", false, true).contains(button));
    assert!(body("Queued", false, true).contains(button));
    assert!(
        !body("Running", false, false).contains(button),
        "not allowed"
    );
    assert!(!body("Succeeded", false, true).contains(button), "ended");
    let requested = body("Running", true, true);
    assert!(!requested.contains(button) && requested.contains("Cancel requested."));
}

#[test]
fn the_body_draws_the_graph_and_lists_steps_outputs_and_events() {
    let events = [
        event("Queued", "waits", 0, None),
        event("Started", "on r1", 20, Some(2)),
    ];
    let b = job_body(&job_view(&job("Running", false), &events, at(60)), true);
    assert!(
        b.contains(r#"data-step="test" data-phase="Running""#),
        "{b}"
    );
    assert!(b.contains(r#"<tr id="step-lint" data-step="lint">"#), "{b}");
    assert!(b.contains(r#"<dt>version</dt><dd class="mono">1.2.3</dd>"#));
    assert!(!b.contains('\n'));
    // Events newest first, with their counts and ages.
    let started = b.find("<td>Started</td>").unwrap();
    let queued = b.find("<td>Queued</td>").unwrap();
    assert!(started < queued, "newest first");
    assert!(b.contains("<td>on r1</td><td>2</td><td>40s</td>"), "{b}");
    assert!(b.contains("<td>waits</td><td>1</td><td>60s</td>"), "{b}");
}

#[test]
fn a_job_without_status_or_events_still_renders() {
    let mut j = job("Running", false);
    j.status = None;
    let v = job_view(&j, &[], at(0));
    assert!(v.steps.iter().all(|s| s.phase == "Pending"));
    assert!(!v.finished);
    let b = job_body(&v, false);
    assert!(b.contains("<h2 id=\"events-h\">Events</h2><p class=\"empty\">None.</p>"));
}

#[test]
fn each_step_gets_a_log_viewer_when_logs_can_be_read() {
    let steps = ["build".to_owned(), "a b".to_owned()];
    let on = logs_section("team", "ci", &steps, true);
    assert!(
        on.contains(r#"data-log-src="/live/logs/team/ci/build""#),
        "{on}"
    );
    assert!(
        on.contains(r#"data-log-src="/live/logs/team/ci/a+b""#),
        "{on}"
    );
    assert_eq!(on.matches("<details").count(), 2);
    let off = logs_section("team", "ci", &steps, false);
    assert!(
        !off.contains("<details") && off.contains("--server"),
        "{off}"
    );
}
