//! `POST /v1/register`: a runner proves it holds its key, presents its token (or
//! none), and is answered by the pure [`adoption::decide`]; then the little I/O
//! that follows: admit and create a Runner, record the session, hand out the
//! token issued for it.
//!
//! Admission: a tokenless (Pending) registration creates a Runner only in a
//! namespace that opted in (label [`PENDING_RUNNERS_LABEL`]` = allow` on the
//! Namespace), under a cap per namespace, and never under a name a RunnerToken
//! reserves. The session is recorded only after its Runner exists, so refused or
//! failed registrations leave nothing behind in memory.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, info, warn};
use warp::http::StatusCode;

use super::api::{
    Proof, check_token, json, known, namespace_for, refusal, serves, unavailable, verify_proof,
};
use super::hub::{Registration, RunnerKey};
use super::input::{self, ApiError};
use super::{ApiState, FIELD_MANAGER};
use crate::crd::runner::{AdoptionDecision, AdoptionState};
use crate::crd::{Runner, RunnerSpec, runner_token};
use crate::domain::adoption::{self, Outcome, Presented};
use crate::domain::identity::Purpose;
use crate::domain::token::{self, TokenCheck, ValidToken};
use crate::protocol::{RegisterRequest, RegisterResponse};

type Response = warp::reply::Response;

/// Label on a Namespace that lets runners register there without a token, as
/// Pending Runners an operator adopts or rejects.
pub const PENDING_RUNNERS_LABEL: &str = "baton.dev/pending-runners";

pub(super) async fn handle(
    state: &ApiState,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req = input::parse_register(content_type, body)?;
    let presented = input::bearer(authorization)?;
    state.readiness.check().map_err(unavailable)?;
    let proof = Proof {
        challenge: req.challenge.clone(),
        signature: req.signature.clone(),
    };
    verify_proof(state, &req.public_key, Purpose::Register, &req.name, &proof)?;
    let check = check_token(state, presented.as_deref(), &req.name);
    let ns = namespace_for(state, &check, req.namespace.as_deref());
    serves(state, &ns)?;
    let key = RunnerKey::new(&ns, &req.name);
    let known = known(state, &key);
    let outcome = adoption::decide(
        &check,
        known.as_ref(),
        Presented {
            public_key: &req.public_key,
            reserved: reserved(state, &key),
        },
    );
    let valid = match &check {
        TokenCheck::Valid(v) => Some(v),
        _ => None,
    };
    let adopted = known
        .as_ref()
        .is_some_and(|k| k.decision == Some(AdoptionDecision::Adopted));
    let reply = Reply::new(&key);
    match outcome {
        Outcome::Pending { create } => pending(state, &key, &req, create, reply).await,
        Outcome::IssueToken { create } => {
            if create && let Some(v) = valid {
                create_runner(state, &key, &v.labels).await?;
            }
            record(state, &key, &req, valid);
            issue_token(state, &key, adopted, reply).await
        }
        Outcome::Registered { adoption, create } => {
            let Some(v) = valid else {
                return Err(refusal(Outcome::Registered { adoption, create }));
            };
            if create {
                create_runner(state, &key, &v.labels).await?;
            }
            record(state, &key, &req, valid);
            info!(runner = %key, adoption = ?adoption, token = %v.token, "runner registered");
            let mut body = reply.0;
            body.state = format!("{adoption:?}");
            body.ping_seconds = Some(state.config.ping_interval.as_secs().max(1));
            Ok(json(StatusCode::OK, &body))
        }
        refused => {
            info!(runner = %key, outcome = ?refused, "registration refused");
            Err(refusal(refused))
        }
    }
}

/// The answer being built.
struct Reply(RegisterResponse);

impl Reply {
    fn new(key: &RunnerKey) -> Self {
        Self(RegisterResponse {
            state: String::new(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            token: None,
            poll_seconds: None,
            ping_seconds: None,
            message: String::new(),
        })
    }
}

fn poll_seconds(state: &ApiState) -> Option<u64> {
    Some(state.config.poll_interval.as_secs().max(1))
}

/// Record the registration in the hub (the reconciler writes it to the Runner).
fn record(state: &ApiState, key: &RunnerKey, req: &RegisterRequest, valid: Option<&ValidToken>) {
    let reg = Registration {
        runner_id: &req.runner_id,
        version: req.version.as_deref().unwrap_or_default(),
        token: valid.map(|v| v.token.as_str()),
        own_token: valid.is_some_and(|v| v.bound),
        public_key: &req.public_key,
    };
    state.hub.registered(key, &reg);
}

async fn pending(
    state: &ApiState,
    key: &RunnerKey,
    req: &RegisterRequest,
    create: bool,
    reply: Reply,
) -> Result<Response, ApiError> {
    if create {
        admit_pending(state, &key.namespace).await?;
        // Its own labels: the operator sees them before adopting.
        create_runner(state, key, &req.labels).await?;
        info!(runner = %key, runner_id = %req.runner_id, "runner registered, pending adoption");
    } else {
        debug!(runner = %key, "pending runner polled");
    }
    record(state, key, req, None);
    let mut body = reply.0;
    body.state = "Pending".into();
    body.poll_seconds = poll_seconds(state);
    body.message = format!(
        "waiting for an operator: kubectl baton runner adopt {} -n {}",
        key.name, key.namespace
    );
    Ok(json(StatusCode::ACCEPTED, &body))
}

/// Hand out the token issued for this runner (bound to its name): 200 with it once
/// the controller minted it, 202 (poll again) until then.
async fn issue_token(
    state: &ApiState,
    key: &RunnerKey,
    adopted: bool,
    reply: Reply,
) -> Result<Response, ApiError> {
    let mut body = reply.0;
    body.state = if adopted { "Adopted" } else { "Preadopted" }.into();
    match issued_token(state, key).await? {
        Some(token) => {
            info!(runner = %key, "runner collected the token issued for it");
            body.token = Some(token);
            Ok(json(StatusCode::OK, &body))
        }
        None => {
            body.poll_seconds = poll_seconds(state);
            body.message = "a token of its own is being issued for this runner".into();
            Ok(json(StatusCode::ACCEPTED, &body))
        }
    }
}

/// Whether a RunnerToken's `runnerName` reserves this name.
fn reserved(state: &ApiState, key: &RunnerKey) -> bool {
    state.tokens.state().iter().any(|t| {
        t.metadata.namespace.as_deref() == Some(&key.namespace)
            && t.spec.runner_name.as_deref() == Some(&key.name)
            && t.metadata.deletion_timestamp.is_none()
    })
}

/// A new Pending Runner: only where the Namespace opted in, and under the cap.
async fn admit_pending(state: &ApiState, ns: &str) -> Result<(), ApiError> {
    let api: Api<Namespace> = Api::all(state.client.clone());
    let namespace = api
        .get_opt(ns)
        .await
        .map_err(|e| unavailable(format!("read Namespace {ns}: {e}")))?;
    let opted_in = namespace
        .as_ref()
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(PENDING_RUNNERS_LABEL))
        .is_some_and(|v| v == "allow");
    if !opted_in {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "PendingRegistrationOff",
            format!(
                "namespace {ns} takes no runner without a token: present a RunnerToken \
                 (kubectl baton token create), or an operator opts the namespace in with \
                 kubectl label namespace {ns} {PENDING_RUNNERS_LABEL}=allow"
            ),
        ));
    }
    let pending = pending_count(state, ns);
    if pending >= state.config.max_pending_runners {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyPending",
            format!(
                "namespace {ns} already holds {pending} Pending Runners (the cap): \
                 an operator adopts, rejects or deletes some first"
            ),
        ));
    }
    Ok(())
}

/// Runners of `ns` that wait for an operator's decision.
pub fn pending_count(state: &ApiState, ns: &str) -> usize {
    state
        .runners
        .state()
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(ns))
        .filter(|r| r.spec.adoption.is_none())
        .filter(|r| {
            r.status
                .as_ref()
                .and_then(|s| s.adoption)
                .is_none_or(|a| a == AdoptionState::Pending)
        })
        .count()
}

async fn create_runner(
    state: &ApiState,
    key: &RunnerKey,
    labels: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let mut runner = Runner::new(
        &key.name,
        RunnerSpec {
            labels: labels.clone(),
            ..Default::default()
        },
    );
    runner.metadata.namespace = Some(key.namespace.clone());
    let api: Api<Runner> = Api::namespaced(state.client.clone(), &key.namespace);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.create(&pp, &runner).await {
        Ok(_) => Ok(()),
        // Created a moment ago and not in the cache yet: fine.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => {
            warn!(runner = %key, error = %e, "create Runner failed");
            Err(unavailable(format!("create Runner {key}: {e}")))
        }
    }
}

/// The plaintext of the token issued for this runner, once minted.
async fn issued_token(state: &ApiState, key: &RunnerKey) -> Result<Option<String>, ApiError> {
    let name = adoption::issued_token_name(&key.name);
    let Some(rt) = state
        .tokens
        .get(&ObjectRef::new(&name).within(&key.namespace))
    else {
        return Ok(None);
    };
    let issued_for = rt
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(adoption::ISSUED_FOR_LABEL));
    let Some(status) = rt.status.as_ref() else {
        return Ok(None);
    };
    let (Some(secret), Some(hash)) = (&status.secret_name, &status.token_hash) else {
        return Ok(None);
    };
    let expires = status.expires_at.as_ref().map(|t| t.0);
    if issued_for != Some(&key.name)
        || rt.spec.runner_name.as_deref() != Some(&key.name)
        || rt.metadata.deletion_timestamp.is_some()
        || token::is_expired(expires, Timestamp::now())
    {
        return Ok(None);
    }
    let api: Api<Secret> = Api::namespaced(state.client.clone(), &key.namespace);
    let secret = api
        .get_opt(secret)
        .await
        .map_err(|e| unavailable(format!("read Secret {secret} of RunnerToken {name}: {e}")))?;
    let plaintext = secret
        .and_then(|s| s.data)
        .and_then(|d| d.get(runner_token::SECRET_KEY).cloned())
        .and_then(|b| String::from_utf8(b.0).ok());
    Ok(plaintext.filter(|t| token::verify(t, hash)))
}
