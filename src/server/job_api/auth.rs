//! Who may use the job routes: a runner's own token (bound to its name), checked
//! once before a body is read and fully (runner, namespace, rejection) after.

use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use warp::Filter;
use warp::http::StatusCode;

use super::super::ApiState;
use super::super::input::{self, ApiError};
use crate::domain::token::{self, TokenCheck};

/// Before a body is read: the request carries a runner's own token (valid, bound
/// to a runner name). Which runner, and its namespace, are checked after, with
/// the body; this only keeps strangers from making the server read megabytes.
pub(super) fn token_first(
    state: ApiState,
) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |auth: Option<String>| {
            let verdict = own_token(&state, auth.as_deref());
            async move { verdict.map_err(|e| warp::reject::custom(input::Refused(e))) }
        })
        .untuple_one()
}

fn own_token(state: &ApiState, authorization: Option<&str>) -> Result<(), ApiError> {
    // No runner name is "": a token bound to any runner answers WrongRunner.
    match check(state, authorization, "")? {
        TokenCheck::WrongRunner { .. } => Ok(()),
        TokenCheck::Valid(v) => Err(pool_token(&v.token)),
        other => Err(not_valid(other)),
    }
}

/// The bearer token must be a valid runner token for `runner`, from namespace `ns`.
pub(super) fn runner_auth(
    state: &ApiState,
    authorization: Option<&str>,
    runner: &str,
    ns: &str,
) -> Result<(), ApiError> {
    match check(state, authorization, runner)? {
        TokenCheck::Valid(v) if v.namespace != ns => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "WrongNamespace",
            format!("the token belongs to namespace {}, not {ns}", v.namespace),
        )),
        // A pool token registers runners; only a runner's own token acts as it.
        TokenCheck::Valid(v) if !v.bound => Err(pool_token(&v.token)),
        TokenCheck::Valid(_) => rejected(state, runner, ns),
        other => Err(not_valid(other)),
    }
}

/// The request's bearer token checked for `runner`, once the caches can tell (before
/// they synced, a valid token would look unknown).
fn check(
    state: &ApiState,
    authorization: Option<&str>,
    runner: &str,
) -> Result<TokenCheck, ApiError> {
    state
        .readiness
        .check()
        .map_err(|why| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "NotReady", why))?;
    let presented = input::bearer(authorization)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "TokenMissing",
            "job routes need the runner's token",
        )
    })?;
    let tokens = state.tokens.state();
    Ok(token::check(
        Some(&presented),
        runner,
        tokens.iter().map(|t| t.as_ref()),
        Timestamp::now(),
    ))
}

fn pool_token(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "PoolToken",
        format!("RunnerToken {name} is a pool token: job routes take a runner's own token"),
    )
}

/// The refusal of a token that is not valid for the runner it claims to be.
fn not_valid(check: TokenCheck) -> ApiError {
    match check {
        TokenCheck::WrongRunner { runner_name, .. } => ApiError::new(
            StatusCode::FORBIDDEN,
            "TokenForAnotherRunner",
            format!("the token is for runner {runner_name}"),
        ),
        TokenCheck::Expired { .. } => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "TokenExpired",
            "the token has expired",
        ),
        TokenCheck::Absent | TokenCheck::Unknown | TokenCheck::Valid(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "TokenUnknown",
            "the token is not known",
        ),
    }
}

/// A rejected runner is refused on every route, whatever token it holds.
fn rejected(state: &ApiState, runner: &str, ns: &str) -> Result<(), ApiError> {
    let decision = state
        .runners
        .get(&ObjectRef::new(runner).within(ns))
        .and_then(|r| r.spec.adoption);
    if decision == Some(crate::crd::runner::AdoptionDecision::Rejected) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Rejected",
            "an operator rejected this runner (spec.adoption: Rejected)",
        ));
    }
    Ok(())
}
