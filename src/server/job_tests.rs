//! Job route tests through `warp::test`: no cluster. The kube client points at a
//! closed port; the watch caches (tokens, Jobs) are filled by hand, so everything
//! the cache decides is tested here, and what needs the API server gives 503.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;

use crate::crd::job::{JobPhase, JobStatus};
use crate::crd::{Job, JobSpec, RunnerTokenSpec, RunnerTokenStatus, Step};
use crate::domain::token;
use crate::protocol::ErrorBody;
use crate::protocol::jobs::{AppendResponse, Assignment, MAX_LOG_BODY, MAX_STATUS_BODY};
use crate::server::health::Readiness;
use crate::server::hub::Hub;
use crate::server::logs::LogStore;
use crate::server::{ApiConfig, ApiState, routes};

struct Fixture {
    state: ApiState,
    jobs: Writer<Job>,
}

fn fixture(name: &str) -> Fixture {
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (runners, mut rw) = reflector::store();
    let (tokens, mut tw) = reflector::store();
    let (jobs_r, mut jobs) = reflector::store();
    rw.apply_watcher_event(&Event::InitDone);
    jobs.apply_watcher_event(&Event::InitDone);
    // InitDone swaps in what was listed: it comes first, the tokens after.
    tw.apply_watcher_event(&Event::InitDone);
    let tokens_of = [
        ("t1", "tok-r1", Some("r1")),
        ("t2", "tok-r2", Some("r2")),
        ("pool", "tok-pool", None),
    ];
    for (t, plain, runner) in tokens_of {
        let mut rt = crate::crd::RunnerToken::new(
            t,
            RunnerTokenSpec {
                runner_name: runner.map(Into::into),
                ..Default::default()
            },
        );
        rt.metadata.namespace = Some("ns".into());
        rt.status = Some(RunnerTokenStatus {
            token_hash: Some(token::hash(plain)),
            expires_at: Some(Time(
                Timestamp::from_second(Timestamp::now().as_second() + 3600).unwrap(),
            )),
            ..Default::default()
        });
        tw.apply_watcher_event(&Event::Apply(rt));
    }
    let dir = std::env::temp_dir().join(format!("baton-job-routes-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Fixture {
        state: ApiState {
            events: crate::domain::events::Events::new(client.clone()),
            client,
            runners,
            tokens,
            jobs: jobs_r.clone(),
            landed: Arc::new(crate::domain::job_write::Landed::new(jobs_r.clone())),
            logs: Arc::new(LogStore::new(dir, 1024)),
            store: crate::store::BlobStore::in_memory(),
            hub: Arc::new(Hub::default()),
            readiness: Readiness::default(),
            config: ApiConfig {
                namespaces: crate::domain::scope::Scope::only(&["ns"]),
                ..Default::default()
            },
            metrics: Default::default(),
            challenges: Arc::new(crate::domain::challenge::Challenges::new().unwrap()),
            rate: Default::default(),
        },
        jobs,
    }
}

impl Fixture {
    fn job(&mut self, name: &str, runner: &str, epoch: i64, phase: JobPhase) {
        let mut j = Job::new(
            name,
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
        j.metadata.namespace = Some("ns".into());
        j.metadata.uid = Some(format!("uid-{name}"));
        j.status = Some(JobStatus {
            phase: Some(phase),
            runner: Some(runner.into()),
            epoch: Some(epoch),
            ..Default::default()
        });
        self.jobs.apply_watcher_event(&Event::Apply(j));
    }
}

fn reason(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}

#[tokio::test]
async fn assignments_are_listed_for_their_runner_only() {
    let mut f = fixture("list");
    f.job("a", "r1", 1, JobPhase::Assigned);
    f.job("b", "r1", 3, JobPhase::Running);
    f.job("c", "r1", 1, JobPhase::Succeeded);
    f.job("d", "r2", 1, JobPhase::Running);
    let routes = routes(f.state.clone());
    let res = warp::test::request()
        .path("/v1/jobs?runner=r1&namespace=ns")
        .header("authorization", "Bearer tok-r1")
        .reply(&routes)
        .await;
    assert_eq!(res.status(), 200);
    let list: Vec<Assignment> = serde_json::from_slice(res.body()).unwrap();
    let names: Vec<(&str, i64)> = list.iter().map(|a| (a.name.as_str(), a.epoch)).collect();
    assert_eq!(names, [("a", 1), ("b", 3)]);

    for (auth, status, why) in [
        (None, 401, "TokenMissing"),
        (Some("Bearer nope"), 401, "TokenUnknown"),
        (Some("Bearer tok-r2"), 403, "TokenForAnotherRunner"),
    ] {
        let mut req = warp::test::request().path("/v1/jobs?runner=r1&namespace=ns");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.reply(&routes).await;
        assert_eq!(
            (res.status().as_u16(), reason(res.body()).as_str()),
            (status, why)
        );
    }
}

/// The fixture's API server is down: a claim answered 200 was answered from the
/// cache; one that needs the stored Job gets 503.
#[tokio::test]
async fn a_first_claim_is_answered_from_the_cache_and_a_resume_reads_the_stored_job() {
    let mut f = fixture("claim-cache");
    f.job("fresh", "r1", 1, JobPhase::Assigned);
    f.job("resumed", "r1", 1, JobPhase::Running);
    f.job("moved", "r1", 2, JobPhase::Assigned);
    f.job("other", "r2", 1, JobPhase::Assigned);
    let cached = f
        .state
        .jobs
        .get(&reflector::ObjectRef::new("resumed").within("ns"));
    let mut resumed = Job::clone(&cached.unwrap());
    resumed.status.as_mut().unwrap().steps = vec![crate::crd::job::StepStatus {
        name: "s".into(),
        phase: crate::crd::job::StepPhase::Running,
        ..Default::default()
    }];
    f.jobs.apply_watcher_event(&Event::Apply(resumed));
    let routes = routes(f.state.clone());
    let claim = |job: &str, epoch: i64| claim_by_r1(job, epoch).reply(&routes);
    let res = claim("fresh", 1).await;
    assert_eq!(res.status(), 200, "{:?}", res.body());
    let got: crate::protocol::jobs::ClaimResponse = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(
        (got.name.as_str(), got.uid.as_str(), got.epoch),
        ("fresh", "uid-fresh", 1)
    );
    assert_eq!(got.spec.steps[0].name, "s");
    assert!(got.steps.is_empty() && got.start_time.is_none());
    for (job, epoch, why) in [
        (
            "resumed",
            1,
            "a step was recorded Running: the run resumes from the stored Job",
        ),
        (
            "moved",
            1,
            "the cache shows a later epoch: the stored Job decides",
        ),
        (
            "other",
            1,
            "the cache shows another runner: the stored Job decides",
        ),
    ] {
        let res = claim(job, epoch).await;
        assert_eq!(
            (res.status().as_u16(), reason(res.body()).as_str()),
            (503, "Unavailable"),
            "{job}: {why}"
        );
    }
}

fn claim_by_r1(job: &str, epoch: i64) -> warp::test::RequestBuilder {
    warp::test::request()
        .method("POST")
        .path(&format!("/v1/jobs/ns/{job}/claim"))
        .header("authorization", "Bearer tok-r1")
        .header("content-type", "application/json")
        .body(format!(r#"{{"runner":"r1","epoch":{epoch}}}"#))
}

/// The claim that follows an assignment at once, before the watch delivers it:
/// the assignment this process wrote answers it (the API server is down here,
/// so a 200 read nothing), until the watch shows that version or a later one.
#[tokio::test]
async fn a_claim_the_cache_is_behind_on_is_answered_from_the_landed_assignment() {
    let mut f = fixture("claim-landed");
    f.job("j", "", 0, JobPhase::Queued);
    let at = |job: &Job, version: &str| {
        let mut j = job.clone();
        j.metadata.resource_version = Some(version.into());
        j
    };
    let cached = f
        .state
        .jobs
        .get(&reflector::ObjectRef::new("j").within("ns"));
    let queued = at(&cached.unwrap(), "1");
    let mut deliver = |j: Job| {
        let event = Event::Apply(j);
        f.jobs.apply_watcher_event(&event);
        f.state.landed.seen(&event);
    };
    deliver(queued.clone());
    let mut assigned = at(&queued, "2");
    let status = assigned.status.as_mut().unwrap();
    (status.phase, status.runner, status.epoch) =
        (Some(JobPhase::Assigned), Some("r1".into()), Some(1));
    f.state.landed.record(assigned);
    let routes = routes(f.state.clone());
    for why in [
        "the landed assignment",
        "a late older version changes nothing",
    ] {
        let res = claim_by_r1("j", 1).reply(&routes).await;
        assert_eq!(res.status(), 200, "{why}: {:?}", res.body());
        deliver(queued.clone());
    }
    // A later version the watch shows (queued again, say) is the truth.
    deliver(at(&queued, "3"));
    let res = claim_by_r1("j", 1).reply(&routes).await;
    assert_eq!(
        (res.status().as_u16(), reason(res.body()).as_str()),
        (503, "Unavailable"),
        "the cache shows a later version, the Job queued: the stored Job decides"
    );
}

#[tokio::test]
async fn log_appends_are_fenced_idempotent_and_gap_free() {
    let mut f = fixture("append");
    f.job("j", "r1", 2, JobPhase::Running);
    let routes = routes(f.state.clone());
    let append = |q: &str, token: &str, body: &'static str| {
        warp::test::request()
            .method("POST")
            .path(&format!("/v1/jobs/ns/j/logs?{q}"))
            .header("authorization", format!("Bearer {token}"))
            .body(body)
    };
    // (what, query, token, body, status, reason or the resulting length)
    let cases: &[(&str, &str, &str, &str, u16, &str)] = &[
        (
            "first chunk",
            "step=s&offset=0&runner=r1&epoch=2",
            "tok-r1",
            "1\n2\n",
            200,
            "4",
        ),
        (
            "resent overlap",
            "step=s&offset=2&runner=r1&epoch=2",
            "tok-r1",
            "2\n3\n",
            200,
            "6",
        ),
        (
            "all duplicate",
            "step=s&offset=0&runner=r1&epoch=2",
            "tok-r1",
            "1\n",
            200,
            "6",
        ),
        (
            "gap",
            "step=s&offset=9&runner=r1&epoch=2",
            "tok-r1",
            "x",
            409,
            "LogGap",
        ),
        (
            "older epoch",
            "step=s&offset=6&runner=r1&epoch=1",
            "tok-r1",
            "x",
            409,
            "StaleEpoch",
        ),
        (
            "other runner",
            "step=s&offset=6&runner=r2&epoch=2",
            "tok-r2",
            "x",
            409,
            "StaleEpoch",
        ),
        (
            "token of another runner",
            "step=s&offset=6&runner=r1&epoch=2",
            "tok-r2",
            "x",
            403,
            "TokenForAnotherRunner",
        ),
        (
            "unknown step",
            "step=zz&offset=0&runner=r1&epoch=2",
            "tok-r1",
            "x",
            400,
            "UnknownStep",
        ),
        (
            "bad query",
            "step=s&offset=-1&runner=r1&epoch=2",
            "tok-r1",
            "x",
            400,
            "InvalidQuery",
        ),
        // The cache is behind a newer epoch: checked against the API (down here).
        (
            "newer epoch than the cache",
            "step=s&offset=6&runner=r1&epoch=3",
            "tok-r1",
            "x",
            503,
            "Unavailable",
        ),
    ];
    for (what, q, token, body, status, want) in cases {
        let res = append(q, token, body).reply(&routes).await;
        let got = if res.status() == 200 {
            serde_json::from_slice::<AppendResponse>(res.body())
                .unwrap()
                .length
                .to_string()
        } else {
            reason(res.body())
        };
        assert_eq!(
            (res.status().as_u16(), got.as_str()),
            (*status, *want),
            "{what}"
        );
    }
    // A finished Job takes no more logs.
    f.job("j", "r1", 2, JobPhase::Succeeded);
    let res = append("step=s&offset=6&runner=r1&epoch=2", "tok-r1", "x")
        .reply(&routes)
        .await;
    assert_eq!(
        (res.status().as_u16(), reason(res.body()).as_str()),
        (409, "NotActive")
    );
}

#[tokio::test]
async fn claims_and_reports_check_their_input_first() {
    let f = fixture("input");
    let routes = routes(f.state.clone());
    let post = |path: &str, ct: &str, body: &'static str| {
        warp::test::request()
            .method("POST")
            .path(path)
            .header("authorization", "Bearer tok-r1")
            .header("content-type", ct)
            .body(body)
    };
    let json = "application/json";
    let cases: &[(&str, &str, &str, &str, u16, &str)] = &[
        (
            "claim: text",
            "/v1/jobs/ns/j/claim",
            "text/plain",
            "{}",
            415,
            "UnsupportedMediaType",
        ),
        (
            "claim: malformed",
            "/v1/jobs/ns/j/claim",
            json,
            "{",
            400,
            "MalformedJson",
        ),
        (
            "claim: unknown field",
            "/v1/jobs/ns/j/claim",
            json,
            r#"{"runner":"r1","epoch":1,"x":1}"#,
            400,
            "UnknownField",
        ),
        (
            "status: malformed",
            "/v1/jobs/ns/j/status",
            json,
            "[]",
            400,
            "MalformedJson",
        ),
        (
            "status: bad name",
            "/v1/jobs/ns/J_J/status",
            json,
            "{}",
            400,
            "InvalidName",
        ),
        (
            "claim: API down",
            "/v1/jobs/ns/j/claim",
            json,
            r#"{"runner":"r1","epoch":1}"#,
            503,
            "Unavailable",
        ),
    ];
    for (what, path, ct, body, status, want) in cases {
        let res = post(path, ct, body).reply(&routes).await;
        assert_eq!(
            (res.status().as_u16(), reason(res.body()).as_str()),
            (*status, *want),
            "{what}"
        );
    }
    // Reading logs needs a Kubernetes bearer token.
    let res = warp::test::request()
        .path("/v1/jobs/ns/j/logs?step=s")
        .reply(&routes)
        .await;
    assert_eq!(
        (res.status().as_u16(), reason(res.body()).as_str()),
        (401, "TokenMissing")
    );
}

/// Each route refuses an oversized body from its Content-Length, unread, and the
/// refusal names that route's own limit (not one limit for all).
#[tokio::test]
async fn each_route_states_its_own_body_limit() {
    let f = fixture("limits");
    let routes = routes(f.state.clone());
    let cases: &[(&str, u64, &str)] = &[
        (
            "/v1/register",
            crate::server::input::MAX_BODY,
            "a registration body may be at most 16384 bytes",
        ),
        (
            "/v1/jobs/ns/j/claim",
            crate::server::input::MAX_BODY,
            "a claim body may be at most 16384 bytes",
        ),
        (
            "/v1/jobs/ns/j/status",
            MAX_STATUS_BODY,
            "a status report body may be at most 2097152 bytes",
        ),
        (
            "/v1/jobs/ns/j/logs?step=s&offset=0&runner=r1&epoch=1",
            MAX_LOG_BODY,
            "a log chunk body may be at most 1048576 bytes",
        ),
    ];
    for (path, max, want) in cases {
        let over = (max + 1).to_string();
        let res = warp::test::request()
            .method("POST")
            .path(path)
            .header("authorization", "Bearer tok-r1")
            .header("content-type", "application/json")
            .body("{}")
            // After the body, which sets its own length: the declared length wins.
            .header("content-length", over.as_str())
            .reply(&routes)
            .await;
        assert_eq!(res.status().as_u16(), 413, "{path}: {:?}", res.body());
        let body: crate::protocol::ErrorBody = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(
            (body.error.as_str(), body.message.as_str()),
            ("PayloadTooLarge", *want),
            "{path}"
        );
    }
}

/// The token is checked before a body is read: a stranger announcing megabytes is
/// refused for who it is, not for the size, and a pool token never gets that far.
#[tokio::test]
async fn job_routes_check_the_token_before_the_body() {
    let f = fixture("token-first");
    let routes = routes(f.state.clone());
    let paths = [
        "/v1/jobs/ns/j/claim",
        "/v1/jobs/ns/j/status",
        "/v1/jobs/ns/j/logs?step=s&offset=0&runner=r1&epoch=1",
    ];
    for path in paths {
        for (auth, status, why) in [
            (None, 401, "TokenMissing"),
            (Some("Bearer nonsense"), 401, "TokenUnknown"),
            (Some("Bearer tok-pool"), 403, "PoolToken"),
        ] {
            let mut req = warp::test::request()
                .method("POST")
                .path(path)
                .header("content-type", "application/json")
                .body("{}")
                .header("content-length", (MAX_STATUS_BODY * 8).to_string().as_str());
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let res = req.reply(&routes).await;
            assert_eq!(
                (res.status().as_u16(), reason(res.body()).as_str()),
                (status, why),
                "{path} {auth:?}"
            );
        }
    }
}

#[path = "job_tests_artifacts.rs"]
mod artifacts;

#[path = "job_tests_uploads.rs"]
mod uploads;
