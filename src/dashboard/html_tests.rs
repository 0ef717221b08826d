use super::*;
use crate::dashboard::rows::RunnerAction;

fn runner(name: &str, actions: Vec<RunnerAction>) -> RunnerRow {
    RunnerRow {
        namespace: "ci".into(),
        name: name.into(),
        adoption: "Pending".into(),
        state: "Connected".into(),
        labels: "pool=linux".into(),
        active_jobs: "0".into(),
        version: "0.1.0".into(),
        last_seen: "now".into(),
        actions,
    }
}

#[test]
fn escape_covers_markup_and_attribute_quotes() {
    assert_eq!(
        escape(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    assert_eq!(escape("two\r\nlines"), "two&#10;lines");
    assert_eq!(segment("a b/c"), "a+b%2Fc");
}

#[test]
fn runner_buttons_appear_only_for_users_allowed_to_change_runners() {
    let rows = [runner(
        "r1",
        vec![RunnerAction::Adopt, RunnerAction::Forget],
    )];
    let yes = |_: &str| true;
    let no = |_: &str| false;
    let all = runners_table(&rows, &yes, &yes);
    assert!(
        all.contains(r#"data-action="/api/runners/ci/r1/adopt""#),
        "{all}"
    );
    assert!(
        all.contains(r#"data-action="/api/runners/ci/r1/forget""#),
        "{all}"
    );
    let none = runners_table(&rows, &no, &no);
    assert!(!none.contains("<button"), "{none}");
    assert!(!none.contains("data-action"), "{none}");
    // May patch but not delete: Adopt without Forget.
    let patch_only = runners_table(&rows, &yes, &no);
    assert!(patch_only.contains("/adopt") && !patch_only.contains("/forget"));
    // Permissions are per namespace.
    let only_ci = |ns: &str| ns == "ci";
    assert!(runners_table(&rows, &only_ci, &no).contains("/adopt"));
}

#[test]
fn hostile_names_are_escaped_in_text_and_encoded_in_routes() {
    let rows = [runner(
        "<img src=x onerror=alert(1)>",
        vec![RunnerAction::Adopt],
    )];
    let yes = |_: &str| true;
    let t = runners_table(&rows, &yes, &yes);
    assert!(!t.contains("<img"), "{t}");
    assert!(t.contains("/api/runners/ci/%3Cimg+src%3Dx+onerror%3Dalert%281%29%3E/adopt"));
}

#[test]
fn fragments_are_single_lines_and_empty_lists_say_so() {
    let yes = |_: &str| true;
    assert!(runners_table(&[], &yes, &yes).contains("No runners."));
    assert!(jobs_table(&[]).contains("No Jobs."));
    let job = JobRow {
        namespace: "ci".into(),
        name: "build".into(),
        phase: "Running".into(),
        waiting: "line one\nline two".into(),
        queue_position: NONE.into(),
        runner: "r1".into(),
        epoch: "1".into(),
        age: "5s".into(),
        duration: "3s".into(),
    };
    let t = jobs_table(&[job]);
    assert!(!t.contains('\n'), "{t}");
    assert!(t.contains(r#"<a href="/jobs/ci/build">build</a>"#), "{t}");
    assert!(t.contains(r#"class="badge phase-running""#), "{t}");
}

#[test]
fn the_page_carries_its_token_live_source_and_filter_values_escaped() {
    let shell = Shell {
        title: "Jobs",
        token: "abc123",
        live: "/live?phase=Running",
        scope: "ctx / ns",
    };
    let filter = JobFilter {
        namespace: Some("\"><script>".into()),
        phase: Some("running".into()),
        label: None,
    };
    let p = page(&shell, &index_body("R", &filter, "J"));
    assert!(p.starts_with("<!doctype html><html lang=\"en\">"));
    assert!(p.contains(r#"<meta name="baton-token" content="abc123">"#));
    assert!(p.contains(r#"data-live="/live?phase=Running""#));
    assert!(p.contains("<option selected>Running</option>"), "{p}");
    assert!(!p.contains("<script>"), "{p}");
    assert!(!p.contains("http://") && !p.contains("https://"), "no CDN");
}
