//! `kubectl baton job list`: the namespace's Jobs, and for a Queued one its
//! place in the queue and why it waits (the `Scheduled` condition's reason).

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::crd::Job;
use crate::crd::conditions;
use crate::crd::reasons::condition;

/// What kubectl prints for a field that is not set.
const NONE: &str = "<none>";

/// One row per Job, in the order given (the API's: by name), columns padded
/// as `kubectl get` pads them.
pub fn list_table(jobs: &[Job], now: Timestamp) -> String {
    let header = [
        "NAME", "PHASE", "PRIORITY", "POSITION", "RUNNER", "REASON", "AGE",
    ];
    let mut rows: Vec<[String; 7]> = vec![header.map(str::to_owned)];
    rows.extend(jobs.iter().map(|j| row(j, now)));
    super::table::aligned(&rows, "   ")
}

fn row(job: &Job, now: Timestamp) -> [String; 7] {
    let status = job.status.clone().unwrap_or_default();
    let or_none = |v: Option<String>| v.unwrap_or_else(|| NONE.to_owned());
    [
        job.name_any(),
        or_none(status.phase.map(|p| format!("{p:?}"))),
        job.spec.priority.unwrap_or(0).to_string(),
        or_none(status.queue_position.map(|p| p.to_string())),
        or_none(status.runner.clone()),
        or_none(
            conditions::find(&status.conditions, condition::SCHEDULED).map(|c| c.reason.clone()),
        ),
        or_none(
            job.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| age(now.as_second() - t.0.as_second())),
        ),
    ]
}

/// An age as kubectl shows it, to its largest unit or two.
pub fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if d < 2 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crd::job::{JobPhase, JobSpec, JobStatus};
    use crate::crd::reasons::reason;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn job(name: &str, phase: JobPhase, position: Option<i32>, why: &str) -> Job {
        let mut j = Job::new(
            name,
            JobSpec {
                priority: Some(5),
                ..Default::default()
            },
        );
        let t = Timestamp::from_second(1_800_000_000).unwrap();
        j.metadata.creation_timestamp = Some(Time(t));
        j.status = Some(JobStatus {
            phase: Some(phase),
            queue_position: position,
            conditions: vec![Condition {
                type_: condition::SCHEDULED.into(),
                status: "False".into(),
                reason: why.into(),
                message: String::new(),
                last_transition_time: Time(t),
                observed_generation: None,
            }],
            ..Default::default()
        });
        j
    }

    #[test]
    fn queued_jobs_show_their_position_and_why_they_wait() {
        let now = Timestamp::from_second(1_800_000_300).unwrap();
        let jobs = [
            job("a", JobPhase::Queued, Some(2), reason::RUNNERS_BUSY),
            job("b", JobPhase::Running, None, reason::ASSIGNED),
        ];
        let t = list_table(&jobs, now);
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            [
                "NAME", "PHASE", "PRIORITY", "POSITION", "RUNNER", "REASON", "AGE"
            ]
        );
        assert_eq!(
            lines[1],
            ["a", "Queued", "5", "2", "<none>", "RunnersBusy", "5m0s"]
        );
        assert_eq!(
            lines[2],
            ["b", "Running", "5", "<none>", "<none>", "Assigned", "5m0s"]
        );
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (3_000, "50m"),
            (4 * 3600 + 120, "4h2m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 7200, "3d2h"),
            (20 * 86_400, "20d"),
            (-3, "0s"),
        ];
        for (s, want) in cases {
            assert_eq!(age(s), want, "{s}s");
        }
    }
}
