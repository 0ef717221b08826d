//! Property tests of the job routes' parsers of outside input: log offsets and
//! queries, and status report bodies all the way through the Job status
//! transition. Any input is answered (accepted or refused), never a panic.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::{Query, append_query, parse_json, read_query};
use crate::crd::Job;
use crate::crd::job::{JobPhase, JobSpec, JobStatus, Step};
use crate::crd::job_status::{self, Transition};
use crate::protocol::jobs::StatusReport;

fn query() -> impl Strategy<Value = Query> {
    let key = prop_oneof![
        Just("step".to_owned()),
        Just("offset".to_owned()),
        Just("runner".to_owned()),
        Just("epoch".to_owned()),
        Just("follow".to_owned()),
        "\\PC{0,12}",
    ];
    let value = prop_oneof![
        "-?[0-9]{0,25}",
        Just(u64::MAX.to_string()),
        Just("true".to_owned()),
        "\\PC{0,40}",
    ];
    proptest::collection::hash_map(key, value, 0..6)
}

/// A report body: valid fields with hostile values, or near-JSON.
fn report_body() -> impl Strategy<Value = String> {
    let phase = prop_oneof![
        Just(serde_json::json!("Succeeded")),
        Just(serde_json::json!("Running")),
        Just(serde_json::json!("Queued")),
        Just(serde_json::json!("Nope")),
        Just(serde_json::Value::Null),
    ];
    let step = (
        "\\PC{0,20}",
        prop_oneof![Just("Running"), Just("Succeeded"), Just("Failed"), Just("x")],
        any::<Option<i32>>(),
    )
        .prop_map(|(name, phase, exit)| serde_json::json!({"name": name, "phase": phase, "exitCode": exit}));
    let outputs = proptest::collection::btree_map("\\PC{0,20}", "\\PC{0,40}", 0..4);
    (
        any::<i64>(),
        phase,
        proptest::option::of(step),
        outputs,
        "\\PC{0,40}",
    )
        .prop_map(|(epoch, phase, step, outputs, text)| {
            serde_json::json!({
                "runner": "r1", "epoch": epoch, "phase": phase, "step": step,
                "outputs": outputs, "reason": text, "message": text,
            })
            .to_string()
        })
}

fn running_job() -> Job {
    let mut job = Job::new(
        "j",
        JobSpec {
            steps: vec![Step {
                name: "s".into(),
                image: "busybox".into(),
                script: Some("true".into()),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    job.metadata.namespace = Some("ns".into());
    job.status = Some(JobStatus {
        phase: Some(JobPhase::Running),
        runner: Some("r1".into()),
        epoch: Some(1),
        ..Default::default()
    });
    job
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn log_queries_never_panic(q in query()) {
        let _ = append_query(&q);
        let _ = read_query(&q);
    }

    /// An append's offset is taken exactly when it is a whole number that fits.
    #[test]
    fn append_offsets_are_taken_only_when_they_parse(offset in prop_oneof!["-?[0-9]{1,25}", "\\PC{0,12}"]) {
        let q: Query = [("step", "s"), ("runner", "r1"), ("epoch", "1"), ("offset", offset.as_str())]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        match (append_query(&q), offset.parse::<u64>()) {
            (Ok(a), Ok(n)) => prop_assert_eq!(a.offset, n),
            (Err(e), Err(_)) => prop_assert_eq!(e.status.as_u16(), 400),
            (got, want) => prop_assert!(false, "{offset:?}: {got:?} vs {want:?}"),
        }
    }

    #[test]
    fn report_bodies_never_panic_through_the_transition(
        body in prop_oneof![report_body(), "\\PC{0,200}"],
    ) {
        let job = running_job();
        if let Ok(report) = parse_json::<StatusReport>(Some("application/json"), body.as_bytes(), "report") {
            let _ = job_status::next(&job, Transition::Report(report.as_report()), k8s_openapi::jiff::Timestamp::now());
        }
    }
}
