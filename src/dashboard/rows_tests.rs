#![allow(clippy::unwrap_used)]
use super::*;
use crate::crd::RunnerSpec;
use crate::crd::job::{JobSpec, JobStatus};
use crate::crd::runner::RunnerStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn cond(type_: &str, status: &str, why: &str, message: &str, t: i64) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: why.into(),
        message: message.into(),
        last_transition_time: Time(at(t)),
        observed_generation: None,
    }
}

fn runner(adoption: AdoptionState, disabled: bool, connected: Option<&str>) -> Runner {
    let mut r = Runner::new(
        "r1",
        RunnerSpec {
            disabled,
            labels: [("pool".to_owned(), "linux".to_owned())].into(),
            ..Default::default()
        },
    );
    r.metadata.namespace = Some("ci".into());
    r.status = Some(RunnerStatus {
        adoption: Some(adoption),
        version: Some("0.1.0".into()),
        active_jobs: Some(2),
        conditions: connected
            .map(|s| cond("Connected", s, "X", "", 0))
            .into_iter()
            .collect(),
        ..Default::default()
    });
    r
}

#[test]
fn a_connected_adopted_runner_shows_its_state_and_offers_reject_disable_forget() {
    let row = runner_row(&runner(AdoptionState::Adopted, false, Some("True")), at(90));
    assert_eq!(
        row,
        RunnerRow {
            namespace: "ci".into(),
            name: "r1".into(),
            adoption: "Adopted".into(),
            state: "Connected".into(),
            labels: "pool=linux".into(),
            active_jobs: "2".into(),
            version: "0.1.0".into(),
            last_seen: "now".into(),
            actions: vec![
                RunnerAction::Reject,
                RunnerAction::Disable,
                RunnerAction::Forget
            ],
        }
    );
}

#[test]
fn runner_states_and_actions_follow_adoption_and_the_disabled_flag() {
    let cases = [
        // adoption, disabled, Connected, state, last seen, actions
        (
            AdoptionState::Pending,
            false,
            None,
            "Disconnected",
            NONE,
            vec!["adopt", "reject", "disable", "forget"],
        ),
        (
            AdoptionState::Rejected,
            false,
            Some("False"),
            "Disconnected",
            "5m0s",
            vec!["adopt", "disable", "forget"],
        ),
        (
            AdoptionState::Preadopted,
            true,
            Some("True"),
            "Disabled",
            "now",
            vec!["reject", "enable", "forget"],
        ),
    ];
    for (adoption, disabled, connected, state, seen, actions) in cases {
        let row = runner_row(&runner(adoption, disabled, connected), at(300));
        assert_eq!(row.state, state, "{adoption:?}");
        assert_eq!(row.last_seen, seen, "{adoption:?}");
        let got: Vec<&str> = row.actions.iter().map(|a| a.as_str()).collect();
        assert_eq!(got, actions, "{adoption:?}");
    }
}

#[test]
fn runner_actions_round_trip_through_their_route_names() {
    for a in ["adopt", "reject", "disable", "enable", "forget"] {
        assert_eq!(RunnerAction::parse(a).map(|a| a.as_str()), Some(a));
    }
    assert_eq!(RunnerAction::parse("delete"), None);
    assert_eq!(RunnerAction::parse(""), None);
}

fn job(name: &str, ns: &str, phase: Option<JobPhase>, labels: &[(&str, &str)]) -> Job {
    let mut j = Job::new(name, JobSpec::default());
    j.metadata.namespace = Some(ns.into());
    j.metadata.creation_timestamp = Some(Time(at(0)));
    j.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    j.status = Some(JobStatus {
        phase,
        ..Default::default()
    });
    j
}

#[test]
fn a_queued_job_says_why_it_waits_in_words() {
    let mut j = job("a", "ci", Some(JobPhase::Queued), &[]);
    let status = j.status.as_mut().unwrap();
    status.queue_position = Some(3);
    status.conditions = vec![cond("Scheduled", "False", reason::RUNNERS_BUSY, "", 0)];
    let row = job_row(&j, at(130));
    assert_eq!(row.phase, "Queued");
    assert_eq!(
        row.waiting,
        "Every matching runner is busy; it waits its turn."
    );
    assert_eq!(row.queue_position, "3");
    assert_eq!(
        (row.runner.as_str(), row.epoch.as_str()),
        (NONE, NONE),
        "{row:?}"
    );
    assert_eq!(row.age, "2m10s");
    assert_eq!(row.duration, NONE);

    // The scheduler's message comes along; an unknown reason is shown as it is.
    let status = j.status.as_mut().unwrap();
    status.conditions = vec![cond(
        "Scheduled",
        "False",
        reason::RUNNER_POD_PENDING,
        "0/1 nodes are available",
        0,
    )];
    assert_eq!(
        waiting(&j),
        "Its on-demand runner pod is not scheduled yet. (0/1 nodes are available)"
    );
    j.status.as_mut().unwrap().conditions = vec![cond("Scheduled", "False", "Odd", "why", 0)];
    assert_eq!(waiting(&j), "Odd: why");
}

#[test]
fn a_running_job_shows_runner_epoch_and_a_growing_duration() {
    let mut j = job("b", "ci", Some(JobPhase::Running), &[]);
    let status = j.status.as_mut().unwrap();
    status.runner = Some("r1".into());
    status.epoch = Some(2);
    status.start_time = Some(Time(at(10)));
    status.conditions = vec![cond("Scheduled", "True", reason::ASSIGNED, "", 0)];
    let row = job_row(&j, at(70));
    assert_eq!(
        (
            row.runner.as_str(),
            row.epoch.as_str(),
            row.duration.as_str()
        ),
        ("r1", "2", "60s")
    );
    assert_eq!(row.waiting, "", "a scheduled Job does not wait");
    j.status.as_mut().unwrap().completion_time = Some(Time(at(40)));
    assert_eq!(job_row(&j, at(500)).duration, "30s");
    // No status yet: Queued, as the controller will write it.
    j.status = None;
    assert_eq!(job_row(&j, at(500)).phase, "Queued");
}

#[test]
fn the_jobs_filter_takes_namespace_phase_and_label_selectors() {
    let jobs = [
        job("a", "ci", Some(JobPhase::Running), &[("app", "web")]),
        job("b", "ci", Some(JobPhase::Failed), &[("app", "db")]),
        job("c", "dev", Some(JobPhase::Running), &[]),
    ];
    let names = |f: JobFilter| -> Vec<String> {
        jobs.iter()
            .filter(|j| f.matches(j))
            .map(|j| j.name_any())
            .collect()
    };
    let f = |ns: &str, phase: &str, label: &str| JobFilter {
        namespace: Some(ns.into()),
        phase: Some(phase.into()),
        label: Some(label.into()),
    };
    assert_eq!(names(JobFilter::default()), ["a", "b", "c"]);
    assert_eq!(
        names(f("", "", "")),
        ["a", "b", "c"],
        "empty fields filter nothing"
    );
    assert_eq!(names(f("ci", "", "")), ["a", "b"]);
    assert_eq!(names(f("", "running", "")), ["a", "c"]);
    assert_eq!(names(f("", "", "app=web")), ["a"]);
    assert_eq!(names(f("", "", "app==db")), ["b"]);
    assert_eq!(names(f("", "", "app!=web")), ["b", "c"]);
    assert_eq!(names(f("", "", "app")), ["a", "b"]);
    assert_eq!(names(f("", "", "!app")), ["c"]);
    assert_eq!(names(f("ci", "Failed", "app=db")), ["b"]);
    assert!(names(f("", "", "bad key=x")).is_empty(), "unparsable: none");
}

#[test]
fn labels_read_as_pairs() {
    assert_eq!(labels_text(&BTreeMap::new()), NONE);
    let l = [("b", "2"), ("a", "1")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    assert_eq!(labels_text(&l), "a=1, b=2");
}
