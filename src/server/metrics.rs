//! `GET /metrics`: a few families in OpenMetrics text, every label from a small fixed
//! set (never a Job, pod or Runner name).
//!
//! Counters and histograms are moved where things happen (one reconcile wrapper per
//! kind, the status write that starts or ends a Job, a log append); the gauges are
//! computed from the watch caches and the hub at scrape time, so they are always true.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use warp::Filter;

use super::hub::{Hub, RunnerKey};
use crate::crd::job::{JobPhase, JobStatus};
use crate::crd::runner::AdoptionState;
use crate::crd::{Job, Runner};

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The kinds a reconcile is counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Job,
    Runner,
    RunnerToken,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Job => "Job",
            Kind::Runner => "Runner",
            Kind::RunnerToken => "RunnerToken",
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

const PHASES: [JobPhase; 6] = [
    JobPhase::Queued,
    JobPhase::Assigned,
    JobPhase::Running,
    JobPhase::Succeeded,
    JobPhase::Failed,
    JobPhase::Cancelled,
];

const ADOPTIONS: [AdoptionState; 4] = [
    AdoptionState::Pending,
    AdoptionState::Preadopted,
    AdoptionState::Adopted,
    AdoptionState::Rejected,
];

fn phase_str(p: JobPhase) -> &'static str {
    match p {
        JobPhase::Queued => "Queued",
        JobPhase::Assigned => "Assigned",
        JobPhase::Running => "Running",
        JobPhase::Succeeded => "Succeeded",
        JobPhase::Failed => "Failed",
        JobPhase::Cancelled => "Cancelled",
    }
}

fn adoption_str(a: AdoptionState) -> &'static str {
    match a {
        AdoptionState::Pending => "Pending",
        AdoptionState::Preadopted => "Preadopted",
        AdoptionState::Adopted => "Adopted",
        AdoptionState::Rejected => "Rejected",
    }
}

fn reconcile_buckets() -> Histogram {
    // 5 ms .. ~10 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// The registry and its families; shared through an `Arc`.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    reconcile_duration: Histograms,
    jobs: Family<Labels, Gauge>,
    queue_depth: Gauge,
    runners: Family<Labels, Gauge>,
    job_start_latency: Histogram,
    job_duration: Histogram,
    log_bytes: Counter,
    leader: Gauge,
    heap: Family<Labels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("baton");
        let reconciles = Family::<Labels, Counter>::default();
        registry.register(
            "reconcile",
            "Reconciles by kind (Job, Runner, RunnerToken) and outcome (ok, error)",
            reconciles.clone(),
        );
        let reconcile_duration: Histograms =
            Family::new_with_constructor(reconcile_buckets as fn() -> Histogram);
        registry.register(
            "reconcile_duration_seconds",
            "How long one reconcile took, by kind",
            reconcile_duration.clone(),
        );
        let jobs = Family::<Labels, Gauge>::default();
        registry.register("jobs", "Jobs in the watch cache, by phase", jobs.clone());
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Queued Jobs (not cancelled, not being deleted)",
            queue_depth.clone(),
        );
        let runners = Family::<Labels, Gauge>::default();
        registry.register(
            "runners",
            "Runners in the watch cache, by adoption state and whether connected",
            runners.clone(),
        );
        // 0.5 s .. ~17 min.
        let job_start_latency = Histogram::new(exponential_buckets(0.5, 2.0, 12));
        registry.register(
            "job_start_latency_seconds",
            "From a Job's creation to its start (observed once, when the start is written)",
            job_start_latency.clone(),
        );
        // 1 s .. ~4.5 h.
        let job_duration = Histogram::new(exponential_buckets(1.0, 2.0, 15));
        registry.register(
            "job_duration_seconds",
            "From a started Job's start to its end (observed once, when the end is written)",
            job_duration.clone(),
        );
        let log_bytes = Counter::default();
        registry.register(
            "log_bytes_appended",
            "New step-log bytes runners sent to this process (stored, or dropped over the per-step cap)",
            log_bytes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads (reconciles, serves runners, fills the gauges above); 0 while it stands by. Always 1 without leader election",
            leader.clone(),
        );
        let heap = Family::<Labels, Gauge>::default();
        registry.register_with_unit(
            "allocator",
            "The process's heap as its allocator (jemalloc) counts it: allocated (live objects), active (their pages), resident (pages in memory, the allocator's own included), retained (address space kept, not in memory), metadata (the allocator's own). Read at scrape time",
            prometheus_client::registry::Unit::Bytes,
            heap.clone(),
        );
        // Every series from the start, at zero: a family with none is not listed.
        for kind in [Kind::Job, Kind::Runner, Kind::RunnerToken] {
            for outcome in ["ok", "error"] {
                reconciles
                    .get_or_create(&vec![("kind", kind.as_str()), ("outcome", outcome)])
                    .inc_by(0);
            }
            drop(reconcile_duration.get_or_create(&vec![("kind", kind.as_str())]));
        }
        Self {
            registry,
            reconciles,
            reconcile_duration,
            jobs,
            queue_depth,
            runners,
            job_start_latency,
            job_duration,
            log_bytes,
            leader,
            heap,
        }
    }

    /// One reconcile of `kind` ended.
    pub fn reconciled(&self, kind: Kind, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&vec![("kind", kind.as_str()), ("outcome", outcome)])
            .inc();
        self.reconcile_duration
            .get_or_create(&vec![("kind", kind.as_str())])
            .observe(took.as_secs_f64());
    }

    /// A Job's status went from `before` to `after` (a write that succeeded at the
    /// resourceVersion `before` was read at, so each transition is seen once).
    pub fn job_status_written(
        &self,
        created: Option<&Time>,
        before: &JobStatus,
        after: &JobStatus,
    ) {
        if before.start_time.is_none()
            && let (Some(c), Some(s)) = (created, after.start_time.as_ref())
        {
            self.job_start_latency.observe(seconds_between(c, s));
        }
        let finished = |s: &JobStatus| s.phase.unwrap_or_default().is_finished();
        if !finished(before)
            && finished(after)
            && let (Some(s), Some(e)) = (after.start_time.as_ref(), after.completion_time.as_ref())
        {
            self.job_duration.observe(seconds_between(s, e));
        }
    }

    /// `n` new step-log bytes arrived.
    pub fn log_appended(&self, n: u64) {
        self.log_bytes.inc_by(n);
    }

    /// Set the gauges from the caches, then encode everything.
    pub fn render(&self, jobs: &Store<Job>, runners: &Store<Runner>, hub: &Hub) -> String {
        let mut by_phase = [0i64; PHASES.len()];
        let mut queued = 0;
        for j in jobs.state() {
            let phase = j.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
            if let Some(i) = PHASES.iter().position(|p| *p == phase) {
                by_phase[i] += 1;
            }
            if phase == JobPhase::Queued
                && j.metadata.deletion_timestamp.is_none()
                && j.spec.cancel != Some(true)
            {
                queued += 1;
            }
        }
        for (p, n) in PHASES.iter().zip(by_phase) {
            self.jobs
                .get_or_create(&vec![("phase", phase_str(*p))])
                .set(n);
        }
        self.queue_depth.set(queued);

        let mut by_runner = [[0i64; 2]; ADOPTIONS.len()];
        for r in runners.state() {
            let adoption = r
                .status
                .as_ref()
                .and_then(|s| s.adoption)
                .unwrap_or_default();
            let key = RunnerKey::new(r.namespace().unwrap_or_default(), r.name_any());
            let connected = hub.view(&key).is_some_and(|v| v.connected);
            if let Some(i) = ADOPTIONS.iter().position(|a| *a == adoption) {
                by_runner[i][usize::from(connected)] += 1;
            }
        }
        for (a, counts) in ADOPTIONS.iter().zip(by_runner) {
            for (connected, n) in ["false", "true"].into_iter().zip(counts) {
                self.runners
                    .get_or_create(&vec![
                        ("adoption", adoption_str(*a)),
                        ("connected", connected),
                    ])
                    .set(n);
            }
        }

        self.leader.set(i64::from(hub.is_active()));
        self.heap_stats();

        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!("encode metrics: {e}");
        }
        out
    }

    /// jemalloc's counters, refreshed (`epoch`) first: they are cached per epoch.
    /// A read that fails leaves the last figures (logged: never a failed scrape).
    fn heap_stats(&self) {
        use tikv_jemalloc_ctl::{epoch, stats};
        let read = || -> Result<[(&str, usize); 5], tikv_jemalloc_ctl::Error> {
            epoch::advance()?;
            Ok([
                ("allocated", stats::allocated::read()?),
                ("active", stats::active::read()?),
                ("resident", stats::resident::read()?),
                ("retained", stats::retained::read()?),
                ("metadata", stats::metadata::read()?),
            ])
        };
        match read() {
            Ok(figures) => {
                for (state, bytes) in figures {
                    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
                    self.heap.get_or_create(&vec![("state", state)]).set(bytes);
                }
            }
            Err(e) => tracing::warn!("read the allocator's statistics: {e}"),
        }
    }
}

fn seconds_between(from: &Time, to: &Time) -> f64 {
    to.0.duration_since(from.0).as_secs_f64().max(0.0)
}

/// `GET /metrics`.
pub fn route(
    metrics: Arc<Metrics>,
    jobs: Store<Job>,
    runners: Store<Runner>,
    hub: Arc<Hub>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .map(move || {
            let body = metrics.render(&jobs, &runners, &hub);
            let mut res = warp::reply::Response::new(body.into());
            res.headers_mut().insert(
                warp::http::header::CONTENT_TYPE,
                warp::http::HeaderValue::from_static(CONTENT_TYPE),
            );
            res
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::crd::job::JobSpec;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn job(name: &str, phase: JobPhase) -> Job {
        let mut j = Job::new(name, JobSpec::default());
        j.metadata.namespace = Some("ns".into());
        j.status = Some(JobStatus {
            phase: Some(phase),
            ..Default::default()
        });
        j
    }

    fn line<'a>(body: &'a str, prefix: &str) -> Option<&'a str> {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[tokio::test]
    async fn families_appear_and_move() {
        let metrics = Arc::new(Metrics::new());
        let (jobs, mut jw) = reflector::store::<Job>();
        let (runners, mut rw) = reflector::store::<Runner>();
        jw.apply_watcher_event(&Event::InitDone);
        rw.apply_watcher_event(&Event::InitDone);
        jw.apply_watcher_event(&Event::Apply(job("a", JobPhase::Queued)));
        jw.apply_watcher_event(&Event::Apply(job("b", JobPhase::Queued)));
        jw.apply_watcher_event(&Event::Apply(job("c", JobPhase::Succeeded)));
        let hub = Arc::new(Hub::default());
        let filter = route(metrics.clone(), jobs, runners, hub.clone());

        let res = warp::test::request().path("/metrics").reply(&filter).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], CONTENT_TYPE);
        let body = String::from_utf8_lossy(res.body()).into_owned();
        for family in [
            "# TYPE baton_reconcile counter",
            "# TYPE baton_reconcile_duration_seconds histogram",
            "# TYPE baton_jobs gauge",
            "# TYPE baton_queue_depth gauge",
            "# TYPE baton_runners gauge",
            "# TYPE baton_job_start_latency_seconds histogram",
            "# TYPE baton_job_duration_seconds histogram",
            "# TYPE baton_log_bytes_appended counter",
        ] {
            assert!(body.contains(family), "{family} missing:\n{body}");
        }
        assert_eq!(line(&body, "baton_queue_depth "), Some("2"), "{body}");
        assert_eq!(line(&body, "baton_leader "), Some("1"), "{body}");
        assert_eq!(line(&body, "baton_jobs{phase=\"Queued\"}"), Some("2"));
        assert_eq!(line(&body, "baton_jobs{phase=\"Succeeded\"}"), Some("1"));
        assert_eq!(
            line(
                &body,
                "baton_runners{adoption=\"Pending\",connected=\"false\"}"
            ),
            Some("0")
        );
        assert!(
            body.contains("# TYPE baton_allocator_bytes gauge"),
            "{body}"
        );
        for state in ["allocated", "active", "resident", "retained", "metadata"] {
            let figure = line(
                &body,
                &format!("baton_allocator_bytes{{state=\"{state}\"}}"),
            );
            assert!(
                figure.is_some_and(|n| n.parse::<u64>().is_ok()),
                "{state}:\n{body}"
            );
        }
        // jemalloc's own bookkeeping exists once it is asked (allocated stays 0
        // here: the test binary allocates with the system's malloc).
        let metadata = line(&body, "baton_allocator_bytes{state=\"metadata\"}");
        assert!(
            metadata.is_some_and(|n| n.parse::<u64>().unwrap() > 0),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");

        metrics.reconciled(Kind::Job, true, Duration::from_millis(3));
        metrics.reconciled(Kind::Job, true, Duration::from_millis(3));
        metrics.reconciled(Kind::Runner, false, Duration::from_millis(3));
        let t0 = Timestamp::UNIX_EPOCH;
        let at = |s: i64| Some(Time(t0.checked_add(SignedDuration::from_secs(s)).unwrap()));
        let created = at(0).unwrap();
        let queued = JobStatus::default();
        let running = JobStatus {
            phase: Some(JobPhase::Running),
            start_time: at(4),
            ..Default::default()
        };
        let done = JobStatus {
            phase: Some(JobPhase::Succeeded),
            completion_time: at(10),
            ..running.clone()
        };
        metrics.job_status_written(Some(&created), &queued, &running);
        // A later write that neither starts nor ends the Job observes nothing.
        metrics.job_status_written(Some(&created), &running, &running);
        metrics.job_status_written(Some(&created), &running, &done);
        metrics.job_status_written(Some(&created), &done, &done);
        metrics.log_appended(42);

        let res = warp::test::request().path("/metrics").reply(&filter).await;
        let body = String::from_utf8_lossy(res.body()).into_owned();
        assert_eq!(
            line(&body, "baton_reconcile_total{kind=\"Job\",outcome=\"ok\"}"),
            Some("2"),
            "{body}"
        );
        assert_eq!(
            line(
                &body,
                "baton_reconcile_total{kind=\"Runner\",outcome=\"error\"}"
            ),
            Some("1")
        );
        assert_eq!(
            line(&body, "baton_job_start_latency_seconds_count"),
            Some("1")
        );
        assert_eq!(
            line(&body, "baton_job_start_latency_seconds_sum"),
            Some("4.0")
        );
        assert_eq!(line(&body, "baton_job_duration_seconds_count"), Some("1"));
        assert_eq!(line(&body, "baton_job_duration_seconds_sum"), Some("6.0"));
        assert_eq!(line(&body, "baton_log_bytes_appended_total"), Some("42"));

        // A standby says so.
        hub.stand_by();
        let res = warp::test::request().path("/metrics").reply(&filter).await;
        let body = String::from_utf8_lossy(res.body()).into_owned();
        assert_eq!(line(&body, "baton_leader "), Some("0"), "{body}");
    }
}
