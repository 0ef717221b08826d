//! Route tests through `warp::test`: no cluster. The kube client points at a closed
//! port (any request that reaches it fails), the watch caches are filled by hand.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;

use super::*;
use crate::crd::runner::{AdoptionDecision, RunnerStatus};
use crate::crd::{RunnerSpec, RunnerTokenSpec, RunnerTokenStatus};
use crate::domain::identity::{Identity, Purpose};
use crate::domain::token;

const ID: &str = "0123456789abcdef";

struct Fixture {
    state: ApiState,
    runners: Writer<Runner>,
    tokens: Writer<RunnerToken>,
}

fn fixture() -> Fixture {
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (runners_r, mut runners) = reflector::store::<Runner>();
    let (tokens_r, mut tokens) = reflector::store::<RunnerToken>();
    let (jobs_r, mut jobs) = reflector::store::<Job>();
    jobs.apply_watcher_event(&Event::InitDone);
    runners.apply_watcher_event(&Event::InitDone);
    tokens.apply_watcher_event(&Event::InitDone);
    let readiness = Readiness::default();
    Fixture {
        state: ApiState {
            events: crate::domain::events::Events::new(client.clone()),
            client,
            runners: runners_r,
            tokens: tokens_r,
            jobs: jobs_r.clone(),
            landed: Arc::new(crate::domain::job_write::Landed::new(jobs_r.clone())),
            logs: Arc::new(logs::LogStore::new(
                std::env::temp_dir().join(format!("baton-server-tests-{}", std::process::id())),
                logs::DEFAULT_CAP,
            )),
            store: crate::store::BlobStore::in_memory(),
            hub: Arc::new(Hub::default()),
            readiness,
            config: ApiConfig {
                namespaces: crate::domain::scope::Scope::only(&["ns"]),
                ..Default::default()
            },
            metrics: Default::default(),
            challenges: Arc::new(crate::domain::challenge::Challenges::new().unwrap()),
            rate: Default::default(),
        },
        runners,
        tokens,
    }
}

impl Fixture {
    fn token(&mut self, name: &str, plaintext: &str, runner: Option<&str>, expires_in: i64) {
        let mut rt = RunnerToken::new(
            name,
            RunnerTokenSpec {
                runner_name: runner.map(str::to_owned),
                ..Default::default()
            },
        );
        rt.metadata.namespace = Some("ns".into());
        let at = Timestamp::now().as_second() + expires_in;
        rt.status = Some(RunnerTokenStatus {
            token_hash: Some(token::hash(plaintext)),
            expires_at: Some(Time(Timestamp::from_second(at).unwrap())),
            ..Default::default()
        });
        self.tokens.apply_watcher_event(&Event::Apply(rt));
    }

    fn runner(&mut self, name: &str, decision: Option<AdoptionDecision>) {
        let mut r = Runner::new(
            name,
            RunnerSpec {
                adoption: decision,
                ..Default::default()
            },
        );
        r.metadata.namespace = Some("ns".into());
        r.status = Some(RunnerStatus {
            runner_id: Some(ID.into()),
            public_key: Some(key().public_key()),
            ..Default::default()
        });
        self.runners.apply_watcher_event(&Event::Apply(r));
    }
}

/// The test runner's key (one per test process: Runners in the fixtures are bound to it).
fn key() -> &'static Identity {
    static KEY: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
    KEY.get_or_init(|| Identity::generate().unwrap())
}

/// A fresh challenge of this server, signed by `id` for `purpose` as `name`.
fn proof(state: &ApiState, id: &Identity, purpose: Purpose, name: &str) -> (String, String) {
    let now = Timestamp::now().as_second() as u64;
    let challenge = state.challenges.issue(now).unwrap();
    let signature = id.sign(purpose, &challenge, name);
    (challenge, signature)
}

/// A registration body with `fields` (JSON members, no braces) and a valid proof.
fn signed_body(state: &ApiState, name: &str, fields: &str) -> String {
    let (challenge, signature) = proof(state, key(), Purpose::Register, name);
    let pk = key().public_key();
    format!(
        r#"{{{fields},"publicKey":"{pk}","challenge":"{challenge}","signature":"{signature}"}}"#
    )
}

fn register_body(state: &ApiState, name: &str) -> String {
    signed_body(
        state,
        name,
        &format!(r#""name":"{name}","runnerId":"{ID}","namespace":"ns""#),
    )
}

async fn reason_of(res: &warp::http::Response<warp::hyper::body::Bytes>) -> String {
    serde_json::from_slice::<crate::protocol::ErrorBody>(res.body())
        .map(|b| b.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(res.body()).into_owned())
}

mod bad_input;

#[tokio::test]
async fn register_waits_for_readiness() {
    let f = fixture();
    f.state.readiness.require("watch/runners", "not synced yet");
    let res = warp::test::request()
        .method("POST")
        .path("/v1/register")
        .header("content-type", "application/json")
        .body(register_body(&f.state, "r1"))
        .reply(&routes(f.state.clone()))
        .await;
    assert_eq!(res.status(), 503);
    let res = warp::test::request()
        .path("/readyz")
        .reply(&routes(f.state))
        .await;
    assert_eq!(res.status(), 503);
}

#[tokio::test]
async fn a_standby_replica_refuses_runners_but_answers_health() {
    let mut f = fixture();
    f.token("good", "tok-good", None, 3600);
    f.state.hub.stand_by();
    let res = warp::test::request()
        .method("POST")
        .path("/v1/register")
        .header("content-type", "application/json")
        .header("authorization", "Bearer tok-good")
        .body(register_body(&f.state, "r1"))
        .reply(&routes(f.state.clone()))
        .await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(body["error"], "StandingBy", "{body}");
    let res = warp::test::request()
        .path("/v1/namespaces/ns/jobs/j/log?step=s")
        .reply(&routes(f.state.clone()))
        .await;
    assert_eq!(res.status(), 503);
    for path in ["/livez", "/readyz", "/metrics"] {
        let res = warp::test::request()
            .path(path)
            .reply(&routes(f.state.clone()))
            .await;
        assert_eq!(res.status(), 200, "{path}");
    }
    // Leading again: the same request is served.
    f.state.hub.activate();
    let res = warp::test::request()
        .method("POST")
        .path("/v1/register")
        .header("content-type", "application/json")
        .header("authorization", "Bearer tok-good")
        .body(register_body(&f.state, "r1"))
        .reply(&routes(f.state))
        .await;
    // (It goes on to create the Runner, which this fixture's client cannot reach.)
    let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    assert_ne!(body["error"], "StandingBy", "{body}");
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn a_valid_token_opens_the_control_channel_with_hello() {
    let mut f = fixture();
    f.token("own", "tok-r1", Some("r1"), 3600);
    f.runner("r1", None);
    let routes = routes(f.state.clone());
    let hub = f.state.hub.clone();
    let (challenge, signature) = proof(&f.state, key(), Purpose::Control, "r1");
    let request = warp::test::request()
        .path("/v1/control?name=r1&namespace=ns")
        .header("authorization", "Bearer tok-r1")
        .header(crate::protocol::CHALLENGE_HEADER, challenge)
        .header(crate::protocol::SIGNATURE_HEADER, signature)
        .reply(&routes);
    // warp::test collects the whole body: end the stream from the hub once open.
    let closer = async {
        for _ in 0..500 {
            if hub.connected() == 1 {
                hub.set_disabled(&hub::RunnerKey::new("ns", "r1"), true);
                hub.close_all("test over");
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    };
    let (res, closed) = tokio::join!(request, closer);
    assert!(closed, "the control channel never opened");
    assert_eq!(res.status(), 200);
    let body = String::from_utf8_lossy(res.body()).into_owned();
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event:"))
        .collect();
    assert_eq!(events, ["hello", "disable", "close"], "{body}");
    assert_eq!(hub.connected(), 0);
    assert!(
        !hub.view(&hub::RunnerKey::new("ns", "r1"))
            .unwrap()
            .connected
    );
}

#[tokio::test]
async fn pending_registration_of_a_known_runner_answers_202() {
    let mut f = fixture();
    f.runner("r1", None);
    let res = warp::test::request()
        .method("POST")
        .path("/v1/register")
        .header("content-type", "application/json")
        .body(register_body(&f.state, "r1"))
        .reply(&routes(f.state.clone()))
        .await;
    assert_eq!(res.status(), 202);
    let body: crate::protocol::RegisterResponse = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(body.state, "Pending");
    assert_eq!(body.namespace, "ns");
    assert!(body.token.is_none());

    // With a pool token: Preadopted, and a token of its own is being issued (202
    // until the controller mints it).
    f.token("good", "tok-good", None, 3600);
    let res = warp::test::request()
        .method("POST")
        .path("/v1/register")
        .header("content-type", "application/json")
        .header("authorization", "Bearer tok-good")
        .body(register_body(&f.state, "r1"))
        .reply(&routes(f.state.clone()))
        .await;
    assert_eq!(res.status(), 202);
    let body: crate::protocol::RegisterResponse = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(body.state, "Preadopted");
    assert!(body.token.is_none());
    let view = f.state.hub.view(&hub::RunnerKey::new("ns", "r1")).unwrap();
    assert_eq!(view.token.as_deref(), Some("good"));
    assert!(!view.own_token, "a pool token is not the runner's own");

    // With its own token: registered.
    f.token("own", "tok-r1", Some("r1"), 3600);
    let res = warp::test::request()
        .method("POST")
        .path("/v1/register")
        .header("content-type", "application/json")
        .header("authorization", "Bearer tok-r1")
        .body(register_body(&f.state, "r1"))
        .reply(&routes(f.state.clone()))
        .await;
    assert_eq!(res.status(), 200);
    let view = f.state.hub.view(&hub::RunnerKey::new("ns", "r1")).unwrap();
    assert!(view.own_token);
    assert_eq!(view.public_key, key().public_key());

    // Another key, tokenless or with the pool token: the name is bound to ours.
    let other = Identity::generate().unwrap();
    for auth in [None, Some("Bearer tok-good")] {
        let (challenge, signature) = proof(&f.state, &other, Purpose::Register, "r1");
        let body = format!(
            r#"{{"name":"r1","runnerId":"{ID}","namespace":"ns","publicKey":"{}","challenge":"{challenge}","signature":"{signature}"}}"#,
            other.public_key()
        );
        let mut req = warp::test::request()
            .method("POST")
            .path("/v1/register")
            .header("content-type", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.body(body).reply(&routes(f.state.clone())).await;
        assert_eq!(
            (res.status().as_u16(), reason_of(&res).await.as_str()),
            (409, "KeyMismatch"),
            "{auth:?}"
        );
    }
}

#[tokio::test]
async fn a_taken_port_is_an_error_not_a_panic() {
    let (_held, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let err = bind(addr).await.err().unwrap();
    assert!(matches!(err, ServerError::Bind { .. }));
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
