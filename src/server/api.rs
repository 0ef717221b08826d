//! The runner API's front door: `GET /v1/challenge`, `POST /v1/register` (see
//! [`super::register`]) and the `GET /v1/control` event stream, with the checks
//! they share: a runner's token, its key proof, and the namespace served.

use std::time::Duration;

use futures::Stream;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, info};
use warp::Filter;
use warp::http::StatusCode;
use warp::sse::Event;

use super::hub::{Control, RunnerKey};
use super::input::{self, ApiError};
use super::{ApiState, register};
use crate::crd::runner::AdoptionDecision;
use crate::domain::adoption::{self, Known, Outcome};
use crate::domain::identity::{self, Purpose};
use crate::domain::token::{self, TokenCheck, ValidToken};
use crate::protocol::{
    CHALLENGE_HEADER, ChallengeResponse, ControlQuery, RegisterResponse, SIGNATURE_HEADER,
};

type Response = warp::reply::Response;

/// `GET /v1/challenge`, `POST /v1/register` and `GET /v1/control`.
pub fn routes(
    state: ApiState,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    // Path before method: a rejection names the route that was meant.
    let limited = super::rate::limited(state.rate.clone());
    let register = warp::path!("v1" / "register")
        .and(warp::post())
        .and(limited.clone())
        .and(with_state.clone())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("authorization"))
        .and(input::body_limit("registration", input::MAX_BODY))
        .and(warp::body::bytes())
        .then(
            |state: ApiState,
             ct: Option<String>,
             auth: Option<String>,
             body: warp::hyper::body::Bytes| async move {
                register::handle(&state, ct.as_deref(), auth.as_deref(), &body)
                    .await
                    .unwrap_or_else(ApiError::into_response)
            },
        );
    let challenge = warp::path!("v1" / "challenge")
        .and(warp::get())
        .and(limited)
        .and(with_state.clone())
        .map(|state: ApiState| challenge(&state).unwrap_or_else(ApiError::into_response));
    let control = warp::path!("v1" / "control")
        .and(warp::get())
        .and(with_state)
        .and(warp::query::<ControlQuery>())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>(CHALLENGE_HEADER))
        .and(warp::header::optional::<String>(SIGNATURE_HEADER))
        .then(
            |state: ApiState,
             q: ControlQuery,
             auth: Option<String>,
             challenge: Option<String>,
             signature: Option<String>| async move {
                let proof = Proof {
                    challenge: challenge.unwrap_or_default(),
                    signature: signature.unwrap_or_default(),
                };
                control(&state, &q, auth.as_deref(), &proof).unwrap_or_else(ApiError::into_response)
            },
        );
    challenge.or(register).unify().or(control).unify()
}

fn unix_now() -> u64 {
    Timestamp::now().as_second().try_into().unwrap_or(0)
}

/// `GET /v1/challenge`: no authentication (it grants nothing, and costs the server
/// no memory: see [`Challenges`](crate::domain::challenge::Challenges)).
fn challenge(state: &ApiState) -> Result<Response, ApiError> {
    state.readiness.check().map_err(unavailable)?;
    let challenge = state
        .challenges
        .issue(unix_now())
        .map_err(|e| unavailable(e.to_string()))?;
    use warp::Reply;
    let body = ChallengeResponse {
        challenge,
        expires_in_seconds: crate::domain::challenge::LIFETIME_SECS,
    };
    Ok(warp::reply::json(&body).into_response())
}

/// A signed challenge, as a registration body or the control channel's headers carry it.
pub(super) struct Proof {
    pub challenge: String,
    pub signature: String,
}

/// The holder of `public_key`'s private key signed a challenge of ours, unused,
/// for `purpose` as runner `name`.
pub(super) fn verify_proof(
    state: &ApiState,
    public_key: &str,
    purpose: Purpose,
    name: &str,
    proof: &Proof,
) -> Result<(), ApiError> {
    input::validate_proof(public_key, &proof.challenge, &proof.signature)?;
    let invalid =
        |message: String| ApiError::new(StatusCode::UNAUTHORIZED, "ProofInvalid", message);
    // The signature first: redeeming marks the challenge used, which a forged
    // signature must not be able to do to someone else's challenge.
    identity::verify(
        public_key,
        purpose,
        &proof.challenge,
        name,
        &proof.signature,
    )
    .map_err(|e| invalid(e.to_string()))?;
    state
        .challenges
        .redeem(&proof.challenge, unix_now())
        .map_err(|e| invalid(e.to_string()))
}

pub(super) fn json(status: StatusCode, body: &RegisterResponse) -> Response {
    use warp::Reply;
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

pub(super) fn refusal(outcome: Outcome) -> ApiError {
    match outcome {
        Outcome::Unauthorized { reason, message } => {
            ApiError::new(StatusCode::UNAUTHORIZED, reason, message)
        }
        Outcome::Forbidden { reason, message } => {
            ApiError::new(StatusCode::FORBIDDEN, reason, message)
        }
        Outcome::Conflict { reason, message } => {
            ApiError::new(StatusCode::CONFLICT, reason, message)
        }
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            format!("unexpected outcome {other:?}"),
        ),
    }
}

pub(super) fn unavailable(why: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NotReady", why)
}

/// The namespace a runner's Runner lives in: a valid token's own, else the one it
/// asked for, else the server's one namespace, else `default`.
pub(super) fn namespace_for(state: &ApiState, check: &TokenCheck, asked: Option<&str>) -> String {
    match check {
        TokenCheck::Valid(v) => v.namespace.clone(),
        _ => asked
            .map(str::to_owned)
            .or_else(|| state.config.namespaces.single().map(str::to_owned))
            .unwrap_or_else(|| "default".to_owned()),
    }
}

pub(super) fn serves(state: &ApiState, ns: &str) -> Result<(), ApiError> {
    let served = &state.config.namespaces;
    if served.serves(ns) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "NamespaceNotServed",
        format!("this server serves namespaces {served} only, not {ns}"),
    ))
}

/// What the cluster (the Runner) and this process (the hub) know of a runner.
pub(super) fn known(state: &ApiState, key: &RunnerKey) -> Option<Known> {
    let runner = state
        .runners
        .get(&ObjectRef::new(&key.name).within(&key.namespace))?;
    let public_key = state
        .hub
        .view(key)
        .map(|v| v.public_key)
        .filter(|k| !k.is_empty())
        .or_else(|| runner.status.as_ref().and_then(|s| s.public_key.clone()));
    Some(Known {
        decision: runner.spec.adoption,
        public_key,
    })
}

pub(super) fn check_token(state: &ApiState, presented: Option<&str>, name: &str) -> TokenCheck {
    let tokens = state.tokens.state();
    token::check(
        presented,
        name,
        tokens.iter().map(|t| t.as_ref()),
        Timestamp::now(),
    )
}

fn control(
    state: &ApiState,
    q: &ControlQuery,
    authorization: Option<&str>,
    proof: &Proof,
) -> Result<Response, ApiError> {
    input::validate_control(q)?;
    let presented = input::bearer(authorization)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "TokenMissing",
            "the control channel needs the runner's own token: register first",
        )
    })?;
    state.readiness.check().map_err(unavailable)?;
    let (key, valid, public_key) = allowed(state, &presented, &q.name, q.namespace.as_deref())?;
    verify_proof(state, &public_key, Purpose::Control, &q.name, proof)?;
    let disabled = state
        .runners
        .get(&ObjectRef::new(&key.name).within(&key.namespace))
        .is_some_and(|r| r.spec.disabled);
    state.hub.set_direct_only(&key, q.direct_only);
    let (id, rx) = state.hub.connect(&key, &valid.token, disabled);
    info!(runner = %key, connection = id, "control channel opened");
    let held = Held {
        presented,
        public_key,
    };
    let stream = control_stream(state.clone(), key, held, id, rx, disabled);
    use warp::Reply;
    Ok(warp::sse::reply(stream).into_response())
}

/// Whether the holder of `presented` may hold runner `name`'s control channel now:
/// the runner's own token (bound to its name, not a pool token), a Runner not
/// rejected, and the key bound to it (returned: the proof must be made with it).
fn allowed(
    state: &ApiState,
    presented: &str,
    name: &str,
    asked_ns: Option<&str>,
) -> Result<(RunnerKey, ValidToken, String), ApiError> {
    let check = check_token(state, Some(presented), name);
    let ns = namespace_for(state, &check, asked_ns);
    serves(state, &ns)?;
    let key = RunnerKey::new(&ns, name);
    let known = known(state, &key);
    let rejected = known
        .as_ref()
        .is_some_and(|k| k.decision == Some(AdoptionDecision::Rejected));
    if rejected {
        // Whatever the token: the operator's rejection wins.
        return Err(refusal(adoption::decide(
            &check,
            known.as_ref(),
            adoption::Presented {
                public_key: "",
                reserved: false,
            },
        )));
    }
    let valid = match check {
        TokenCheck::Valid(v) if v.bound => v,
        TokenCheck::Valid(v) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "PoolToken",
                format!(
                    "RunnerToken {} is a pool token: it registers runners, and each \
                     runner then uses the token issued for it",
                    v.token
                ),
            ));
        }
        other => return Err(token_refused(&other)),
    };
    let public_key = known.and_then(|k| k.public_key).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotRegistered",
            format!("no Runner {key} with a key bound to it: register first"),
        )
    })?;
    Ok((key, valid, public_key))
}

/// The 401 for a token that is not valid (expired, unknown, another runner's).
fn token_refused(check: &TokenCheck) -> ApiError {
    adoption::token_refusal(check).map_or_else(
        || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "TokenMissing",
                "this route needs the runner's own token",
            )
        },
        refusal,
    )
}

/// What an open control channel was opened with, checked again at every ping.
struct Held {
    presented: String,
    public_key: String,
}

/// At a ping: the channel's token still valid and its own, the Runner not rejected,
/// and still bound to the key the channel was opened with.
fn still_allowed(state: &ApiState, held: &Held, key: &RunnerKey) -> Result<(), ApiError> {
    let (_, _, bound) = allowed(state, &held.presented, &key.name, Some(&key.namespace))?;
    if bound != held.public_key {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "KeyMismatch",
            "the Runner was bound to another key",
        ));
    }
    Ok(())
}

/// Ends the hub's connection when the stream is dropped (the runner went away).
struct ConnectionGuard {
    state: ApiState,
    key: RunnerKey,
    id: u64,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.state.hub.disconnected(&self.key, self.id);
        debug!(runner = %self.key, connection = self.id, "control channel closed");
    }
}

fn event(ev: &Control) -> Event {
    Event::default().event(ev.name()).data(ev.data())
}

/// `hello`, then commands from the hub and a `ping` every ping interval; at each ping
/// the token, the Runner and its bound key are checked again, and a `close` ends
/// the stream.
fn control_stream(
    state: ApiState,
    key: RunnerKey,
    held: Held,
    id: u64,
    rx: tokio::sync::mpsc::UnboundedReceiver<Control>,
    disabled: bool,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> + Send + 'static {
    let ping: Duration = state.config.ping_interval;
    let hello = event(&Control::Hello {
        disabled,
        ping_seconds: ping.as_secs().max(1),
    });
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + ping, ping);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let guard = ConnectionGuard {
        state: state.clone(),
        key: key.clone(),
        id,
    };
    let init = (guard, rx, ticker, false);
    let held = std::sync::Arc::new(held);
    let rest = futures::stream::unfold(init, move |(guard, mut rx, mut ticker, done)| {
        let held = held.clone();
        async move {
            if done {
                return None;
            }
            let (ev, done) = tokio::select! {
                cmd = rx.recv() => {
                    let cmd = cmd?;
                    (event(&cmd), cmd.is_final())
                }
                _ = ticker.tick() => {
                    match still_allowed(&guard.state, &held, &guard.key) {
                        Ok(()) => (event(&Control::Ping), false),
                        Err(e) => {
                            info!(runner = %guard.key, reason = e.reason, "control channel closed: {}", e.message);
                            (event(&Control::Close { reason: e.message }), true)
                        }
                    }
                }
            };
            Some((Ok(ev), (guard, rx, ticker, done)))
        }
    });
    futures::StreamExt::chain(futures::stream::once(async move { Ok(hello) }), rest)
}
