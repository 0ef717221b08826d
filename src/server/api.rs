//! The runner API: `POST /v1/register` and the `GET /v1/control` event stream.
//!
//! Handlers read the watch caches (Runners, RunnerTokens) and the hub, ask the pure
//! [`adoption::decide`] what to answer, and do the little I/O that follows (create a
//! Runner, read an issued token's Secret).

use std::time::Duration;

use futures::Stream;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, info, warn};
use warp::Filter;
use warp::http::StatusCode;
use warp::sse::Event;

use super::hub::{Control, RunnerKey};
use super::input::{self, ApiError};
use super::{ApiState, FIELD_MANAGER};
use crate::crd::runner::AdoptionDecision;
use crate::crd::{Runner, RunnerSpec, runner_token};
use crate::domain::adoption::{self, Known, Outcome};
use crate::domain::token::{self, TokenCheck};
use crate::protocol::{ControlQuery, RegisterRequest, RegisterResponse};

type Response = warp::reply::Response;

/// `POST /v1/register` and `GET /v1/control`.
pub fn routes(
    state: ApiState,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    // Path before method: a rejection names the route that was meant.
    let register = warp::path!("v1" / "register")
        .and(warp::post())
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
                register(&state, ct.as_deref(), auth.as_deref(), &body)
                    .await
                    .unwrap_or_else(ApiError::into_response)
            },
        );
    let control = warp::path!("v1" / "control")
        .and(warp::get())
        .and(with_state)
        .and(warp::query::<ControlQuery>())
        .and(warp::header::optional::<String>("authorization"))
        .then(
            |state: ApiState, q: ControlQuery, auth: Option<String>| async move {
                control(&state, &q, auth.as_deref()).unwrap_or_else(ApiError::into_response)
            },
        );
    register.or(control).unify()
}

fn json(status: StatusCode, body: &RegisterResponse) -> Response {
    use warp::Reply;
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

fn refusal(outcome: Outcome) -> ApiError {
    match outcome {
        Outcome::Unauthorized { reason, message } => {
            ApiError::new(StatusCode::UNAUTHORIZED, reason, message)
        }
        Outcome::Forbidden { reason, message } => {
            ApiError::new(StatusCode::FORBIDDEN, reason, message)
        }
        Outcome::Conflict { message } => ApiError::new(StatusCode::CONFLICT, "NameTaken", message),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            format!("unexpected outcome {other:?}"),
        ),
    }
}

fn unavailable(why: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NotReady", why)
}

/// The namespace a runner's Runner lives in: a valid token's own, else the one it
/// asked for, else the server's, else `default`.
fn namespace_for(state: &ApiState, check: &TokenCheck, asked: Option<&str>) -> String {
    match check {
        TokenCheck::Valid(v) => v.namespace.clone(),
        _ => asked
            .map(str::to_owned)
            .or_else(|| state.config.namespace.clone())
            .unwrap_or_else(|| "default".to_owned()),
    }
}

fn serves(state: &ApiState, ns: &str) -> Result<(), ApiError> {
    match &state.config.namespace {
        Some(only) if only != ns => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "NamespaceNotServed",
            format!("this server serves namespace {only} only, not {ns}"),
        )),
        _ => Ok(()),
    }
}

fn known(state: &ApiState, key: &RunnerKey) -> Option<Known> {
    let runner = state
        .runners
        .get(&ObjectRef::new(&key.name).within(&key.namespace))?;
    let runner_id = state
        .hub
        .view(key)
        .map(|v| v.runner_id)
        .filter(|id| !id.is_empty())
        .or_else(|| runner.status.as_ref().and_then(|s| s.runner_id.clone()));
    Some(Known {
        decision: runner.spec.adoption,
        runner_id,
    })
}

fn check_token(state: &ApiState, presented: Option<&str>, name: &str) -> TokenCheck {
    let tokens = state.tokens.state();
    token::check(
        presented,
        name,
        tokens.iter().map(|t| t.as_ref()),
        Timestamp::now(),
    )
}

async fn register(
    state: &ApiState,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let req = input::parse_register(content_type, body)?;
    let presented = input::bearer(authorization)?;
    state.readiness.check().map_err(unavailable)?;
    let check = check_token(state, presented.as_deref(), &req.name);
    let ns = namespace_for(state, &check, req.namespace.as_deref());
    serves(state, &ns)?;
    let key = RunnerKey::new(&ns, &req.name);
    let outcome = adoption::decide(&check, known(state, &key).as_ref(), &req.runner_id);
    let version = req.version.clone().unwrap_or_default();
    let mut reply = RegisterResponse {
        state: String::new(),
        namespace: ns.clone(),
        name: req.name.clone(),
        token: None,
        poll_seconds: None,
        ping_seconds: None,
        message: String::new(),
    };
    match outcome {
        Outcome::Pending { create } => {
            state.hub.registered(&key, &req.runner_id, &version, None);
            if create {
                create_runner(state, &key, &req, &Default::default()).await?;
                info!(runner = %key, runner_id = %req.runner_id, "runner registered, pending adoption");
            } else {
                debug!(runner = %key, "pending runner polled");
            }
            reply.state = "Pending".into();
            reply.poll_seconds = Some(state.config.poll_interval.as_secs().max(1));
            reply.message = format!(
                "waiting for an operator: kubectl baton runner adopt {} -n {ns}",
                req.name
            );
            Ok(json(StatusCode::ACCEPTED, &reply))
        }
        Outcome::IssueToken => {
            state.hub.registered(&key, &req.runner_id, &version, None);
            reply.state = "Adopted".into();
            match issued_token(state, &key).await? {
                Some(token) => {
                    info!(runner = %key, "adopted runner collected its token");
                    reply.token = Some(token);
                    Ok(json(StatusCode::OK, &reply))
                }
                None => {
                    reply.poll_seconds = Some(state.config.poll_interval.as_secs().max(1));
                    reply.message = "adopted; its token is being issued".into();
                    Ok(json(StatusCode::ACCEPTED, &reply))
                }
            }
        }
        Outcome::Registered { adoption, create } => {
            let TokenCheck::Valid(valid) = &check else {
                return Err(refusal(Outcome::Registered { adoption, create }));
            };
            state
                .hub
                .registered(&key, &req.runner_id, &version, Some(&valid.token));
            if create {
                create_runner(state, &key, &req, &valid.labels).await?;
            }
            info!(runner = %key, adoption = ?adoption, token = %valid.token, "runner registered");
            reply.state = format!("{adoption:?}");
            reply.ping_seconds = Some(state.config.ping_interval.as_secs().max(1));
            Ok(json(StatusCode::OK, &reply))
        }
        refused => {
            info!(runner = %key, outcome = ?refused, "registration refused");
            Err(refusal(refused))
        }
    }
}

async fn create_runner(
    state: &ApiState,
    key: &RunnerKey,
    req: &RegisterRequest,
    token_labels: &std::collections::BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let mut labels = req.labels.clone();
    labels.extend(token_labels.clone());
    let mut runner = Runner::new(
        &key.name,
        RunnerSpec {
            labels,
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

/// The plaintext of the token issued for an adopted runner, once minted.
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

fn control(
    state: &ApiState,
    q: &ControlQuery,
    authorization: Option<&str>,
) -> Result<Response, ApiError> {
    input::validate_control(q)?;
    let presented = input::bearer(authorization)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "TokenMissing",
            "the control channel needs a token: register and wait for adoption",
        )
    })?;
    state.readiness.check().map_err(unavailable)?;
    let key = allowed(state, &presented, &q.name, q.namespace.as_deref())?;
    let disabled = state
        .runners
        .get(&ObjectRef::new(&key.name).within(&key.namespace))
        .is_some_and(|r| r.spec.disabled);
    let TokenCheck::Valid(valid) = check_token(state, Some(&presented), &q.name) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "TokenUnknown",
            "token no longer valid",
        ));
    };
    let (id, rx) = state.hub.connect(&key, &valid.token, disabled);
    info!(runner = %key, connection = id, "control channel opened");
    let stream = control_stream(state.clone(), key, presented, id, rx, disabled);
    use warp::Reply;
    Ok(warp::sse::reply(stream).into_response())
}

/// Whether the holder of `presented` may hold runner `name`'s control channel now.
fn allowed(
    state: &ApiState,
    presented: &str,
    name: &str,
    asked_ns: Option<&str>,
) -> Result<RunnerKey, ApiError> {
    let check = check_token(state, Some(presented), name);
    let ns = namespace_for(state, &check, asked_ns);
    serves(state, &ns)?;
    let key = RunnerKey::new(&ns, name);
    let runner = state.runners.get(&ObjectRef::new(name).within(&ns));
    if runner.as_ref().and_then(|r| r.spec.adoption) == Some(AdoptionDecision::Rejected) {
        return Err(refusal(adoption::decide(
            &check,
            Some(&Known {
                decision: Some(AdoptionDecision::Rejected),
                runner_id: None,
            }),
            "",
        )));
    }
    if !matches!(check, TokenCheck::Valid(_)) {
        return Err(refusal(adoption::decide(&check, None, "")));
    }
    if runner.is_none() && state.hub.view(&key).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NotRegistered",
            format!("no Runner {key}: register first"),
        ));
    }
    Ok(key)
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
/// the token and the Runner are checked again, and a `close` ends the stream.
fn control_stream(
    state: ApiState,
    key: RunnerKey,
    presented: String,
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
    let rest = futures::stream::unfold(init, move |(guard, mut rx, mut ticker, done)| {
        let presented = presented.clone();
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
                    match allowed(&guard.state, &presented, &guard.key.name, Some(&guard.key.namespace)) {
                        Ok(_) => (event(&Control::Ping), false),
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
