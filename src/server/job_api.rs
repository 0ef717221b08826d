//! The job routes of the runner API (see [`super::jobs`] for the contract and the
//! pure rules): runner-authenticated claim, status and log appends, and the
//! RBAC-checked log reads of users.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{
    TokenReview, TokenReviewSpec, TokenReviewStatus, UserInfo,
};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use tracing::{debug, info, warn};
use warp::Filter;
use warp::http::StatusCode;

use super::ApiState;
use super::input::{self, ApiError};
use super::jobs;
use super::logs::{LogError, LogKey};
use crate::crd::job::JobPhase;
use crate::crd::job_status::{self, Transition};
use crate::crd::reasons::reason;
use crate::crd::{Job, JobStatus};
use crate::domain::job_write::{self, Written};
use crate::protocol::jobs::{
    AppendQuery, AppendResponse, Assignment, ClaimRequest, ClaimResponse, LOG_TOKEN_AUDIENCE,
    ListQuery, MAX_LOG_BODY, MAX_STATUS_BODY, ReadQuery, StatusReport,
};

type Response = warp::reply::Response;
type Bytes = warp::hyper::body::Bytes;

fn reply_json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    use warp::Reply;
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// The job routes.
pub fn routes(
    state: ApiState,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let auth = warp::header::optional::<String>("authorization");
    let list = warp::path!("v1" / "jobs")
        .and(warp::get())
        .and(with_state.clone())
        .and(warp::query::<ListQuery>())
        .and(auth)
        .then(
            |state: ApiState, q: ListQuery, auth: Option<String>| async move {
                list(&state, &q, auth.as_deref()).unwrap_or_else(ApiError::into_response)
            },
        );
    let claim = warp::path!("v1" / "jobs" / String / String / "claim")
        .and(warp::post())
        .and(with_state.clone())
        .and(warp::header::optional::<String>("content-type"))
        .and(auth)
        .and(token_first(state.clone()))
        .and(input::body_limit("claim", input::MAX_BODY))
        .and(warp::body::bytes())
        .then(
            |ns: String,
             name: String,
             state: ApiState,
             ct: Option<String>,
             auth: Option<String>,
             body: Bytes| async move {
                claim(&state, &ns, &name, ct.as_deref(), auth.as_deref(), &body)
                    .await
                    .unwrap_or_else(ApiError::into_response)
            },
        );
    let status = warp::path!("v1" / "jobs" / String / String / "status")
        .and(warp::post())
        .and(with_state.clone())
        .and(warp::header::optional::<String>("content-type"))
        .and(auth)
        .and(token_first(state.clone()))
        .and(input::body_limit("status report", MAX_STATUS_BODY))
        .and(warp::body::bytes())
        .then(
            |ns: String,
             name: String,
             state: ApiState,
             ct: Option<String>,
             auth: Option<String>,
             body: Bytes| async move {
                report(&state, &ns, &name, ct.as_deref(), auth.as_deref(), &body)
                    .await
                    .unwrap_or_else(ApiError::into_response)
            },
        );
    let append = warp::path!("v1" / "jobs" / String / String / "logs")
        .and(warp::post())
        .and(with_state.clone())
        .and(query_map())
        .and(auth)
        .and(token_first(state.clone()))
        .and(input::body_limit("log chunk", MAX_LOG_BODY))
        .and(warp::body::bytes())
        .then(
            |ns: String,
             name: String,
             state: ApiState,
             q: Query,
             auth: Option<String>,
             body: Bytes| async move {
                let res = match append_query(&q) {
                    Ok(q) => append(&state, &ns, &name, &q, auth.as_deref(), &body).await,
                    Err(e) => Err(e),
                };
                res.unwrap_or_else(ApiError::into_response)
            },
        );
    let read = warp::path!("v1" / "jobs" / String / String / "logs")
        .and(warp::get())
        .and(with_state.clone())
        .and(query_map())
        .and(auth)
        .then(
            |ns: String, name: String, state: ApiState, q: Query, auth: Option<String>| async move {
                let res = match read_query(&q) {
                    Ok(q) => read(&state, &ns, &name, &q, auth.as_deref()).await,
                    Err(e) => Err(e),
                };
                res.unwrap_or_else(ApiError::into_response)
            },
        );
    list.or(claim)
        .unify()
        .or(artifacts::routes(state.clone()))
        .unify()
        .or(uploads::routes(state.clone()))
        .unify()
        .or(status)
        .unify()
        .or(append)
        .unify()
        .or(read)
        .unify()
}

type Query = std::collections::HashMap<String, String>;

/// The query as a map: never rejects, so a bad query is answered by its route.
fn query_map() -> impl Filter<Extract = (Query,), Error = std::convert::Infallible> + Clone {
    warp::query::<Query>()
        .or(warp::any().map(Query::new))
        .unify()
}

fn field<T: std::str::FromStr>(q: &Query, key: &str, expected: &str) -> Result<T, ApiError> {
    q.get(key)
        .ok_or_else(|| {
            ApiError::bad_request(
                "InvalidQuery",
                format!("missing {key}: expected {expected}"),
            )
        })?
        .parse()
        .map_err(|_| {
            ApiError::bad_request("InvalidQuery", format!("bad {key}: expected {expected}"))
        })
}

fn append_query(q: &Query) -> Result<AppendQuery, ApiError> {
    const EXPECTED: &str = "?step=S&offset=N&runner=R&epoch=E";
    if let Some(k) = q
        .keys()
        .find(|k| !matches!(k.as_str(), "step" | "offset" | "runner" | "epoch"))
    {
        return Err(ApiError::bad_request(
            "InvalidQuery",
            format!("unknown parameter {k}: expected {EXPECTED}"),
        ));
    }
    Ok(AppendQuery {
        step: field(q, "step", EXPECTED)?,
        offset: field(q, "offset", EXPECTED)?,
        runner: field(q, "runner", EXPECTED)?,
        epoch: field(q, "epoch", EXPECTED)?,
    })
}

fn read_query(q: &Query) -> Result<ReadQuery, ApiError> {
    const EXPECTED: &str = "?step=S[&follow=true][&offset=N]";
    if let Some(k) = q
        .keys()
        .find(|k| !matches!(k.as_str(), "step" | "follow" | "offset"))
    {
        return Err(ApiError::bad_request(
            "InvalidQuery",
            format!("unknown parameter {k}: expected {EXPECTED}"),
        ));
    }
    Ok(ReadQuery {
        step: field(q, "step", EXPECTED)?,
        follow: match q.get("follow") {
            Some(_) => field(q, "follow", EXPECTED)?,
            None => false,
        },
        offset: match q.get("offset") {
            Some(_) => field(q, "offset", EXPECTED)?,
            None => 0,
        },
    })
}

fn names(ns: &str, name: &str) -> Result<(), ApiError> {
    for (field, v) in [("namespace", ns), ("job name", name)] {
        // Job names are DNS subdomains; a label check would refuse dots.
        if v.is_empty()
            || v.len() > 253
            || !v
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(ApiError::bad_request(
                "InvalidName",
                format!("{field} {v:?} is not a valid name"),
            ));
        }
    }
    Ok(())
}

fn unavailable(doing: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        format!("{doing}: {e}"),
    )
}

async fn fresh(state: &ApiState, ns: &str, name: &str) -> Result<Job, ApiError> {
    let api: Api<Job> = Api::namespaced(state.client.clone(), ns);
    api.get_opt(name)
        .await
        .map_err(|e| unavailable("read the Job", e))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "JobNotFound",
                format!("no Job {ns}/{name}"),
            )
        })
}

/// The Job as this process knows it: the watch cache, or a write of its own
/// the cache does not show yet.
fn cached(state: &ApiState, ns: &str, name: &str) -> Option<std::sync::Arc<Job>> {
    state.landed.newest(ns, name)
}

fn list(
    state: &ApiState,
    q: &ListQuery,
    authorization: Option<&str>,
) -> Result<Response, ApiError> {
    let ns = q
        .namespace
        .clone()
        .or_else(|| state.config.namespaces.single().map(str::to_owned))
        .unwrap_or_else(|| "default".to_owned());
    runner_auth(state, authorization, &q.runner, &ns)?;
    let mut out: Vec<Assignment> = state
        .jobs
        .state()
        .iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter_map(|j| {
            let s = j.status.as_ref()?;
            let active = matches!(s.phase, Some(JobPhase::Assigned | JobPhase::Running));
            (active && s.runner.as_deref() == Some(q.runner.as_str())).then(|| Assignment {
                namespace: ns.clone(),
                name: j.name_any(),
                epoch: s.epoch.unwrap_or(0),
                cancel: j.spec.cancel == Some(true),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(reply_json(StatusCode::OK, &out))
}

fn parse_json<T: serde::de::DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    let essence = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|s| s.trim().to_ascii_lowercase());
    if essence.as_deref() != Some("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "Content-Type must be application/json",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        let reason = if e.to_string().contains("unknown field") {
            "UnknownField"
        } else {
            "MalformedJson"
        };
        ApiError::bad_request(reason, format!("{what}: {e}"))
    })
}

fn log_key(job: &Job, step: &str) -> LogKey {
    LogKey {
        namespace: job.namespace().unwrap_or_default(),
        name: job.name_any(),
        uid: job.uid().unwrap_or_default(),
        step: step.to_owned(),
    }
}

fn log_error(e: LogError) -> ApiError {
    match e {
        LogError::Gap { offset, stored } => ApiError::new(
            StatusCode::CONFLICT,
            "LogGap",
            format!(
                "chunk at offset {offset}, but {stored} bytes are stored: resend from {stored}"
            ),
        ),
        LogError::Beyond { offset, size } => ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "OffsetBeyondLog",
            format!("offset {offset} is past the stored log's {size} bytes"),
        ),
        e @ LogError::BadKey { .. } => ApiError::bad_request("InvalidName", e.to_string()),
        e => unavailable("log store", e),
    }
}

async fn claim(
    state: &ApiState,
    ns: &str,
    name: &str,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    names(ns, name)?;
    let req: ClaimRequest = parse_json(content_type, body, "claim body")?;
    runner_auth(state, authorization, &req.runner, ns)?;
    let job = match cached(state, ns, name) {
        Some(j) if first_claim(&j, &req.runner, req.epoch) => j,
        _ => std::sync::Arc::new(fresh(state, ns, name).await?),
    };
    jobs::fence(job.status.as_ref(), &req.runner, req.epoch)?;
    let mut log_offsets = std::collections::BTreeMap::new();
    for step in &job.spec.steps {
        let n = state
            .logs
            .length(&log_key(&job, &step.name))
            .await
            .map_err(log_error)?;
        log_offsets.insert(step.name.clone(), n);
    }
    info!(namespace = ns, job = name, runner = %req.runner, epoch = req.epoch, "job claimed");
    // A resumed run continues the recorded clocks (timeouts).
    let recorded = job.status.clone().unwrap_or_default();
    Ok(reply_json(
        StatusCode::OK,
        &ClaimResponse {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            uid: job.uid().unwrap_or_default(),
            epoch: req.epoch,
            spec: job.spec.clone(),
            log_offsets,
            start_time: recorded.start_time,
            steps: recorded.steps,
        },
    ))
}

/// Whether the cached Job can answer a claim: it shows this runner's
/// assignment at this epoch and nothing recorded yet (no start, no step past
/// Pending), as the first claim of an assignment finds it. One read less per
/// Job. A resume reads the stored Job: what it runs depends on what was
/// recorded, and a cache behind a report would hide it. (Were the cache
/// behind all the same, the run's pods are created by name, so a step pod
/// that exists is adopted, never run again.)
fn first_claim(job: &Job, runner: &str, epoch: i64) -> bool {
    let Some(status) = job.status.as_ref() else {
        return false;
    };
    jobs::fence(Some(status), runner, epoch).is_ok()
        && status.start_time.is_none()
        && (status.steps.iter()).all(|s| s.phase == crate::crd::job::StepPhase::Pending)
}

async fn report(
    state: &ApiState,
    ns: &str,
    name: &str,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    names(ns, name)?;
    let req: StatusReport = parse_json(content_type, body, "status report")?;
    runner_auth(state, authorization, &req.runner, ns)?;
    // Optimistic concurrency: the write carries the resourceVersion the fence
    // check read; a conflict means someone wrote in between: read and check again.
    // The first try starts from the watch cache when it already fences this
    // runner in (one request instead of a read and a write); a cache that is
    // behind costs a conflict, then the loop reads for real.
    for attempt in 0..5 {
        let (job, from_cache) = match cached(state, ns, name) {
            Some(j)
                if attempt == 0
                    && jobs::fence(j.status.as_ref(), &req.runner, req.epoch).is_ok() =>
            {
                ((*j).clone(), true)
            }
            _ => (fresh(state, ns, name).await?, false),
        };
        jobs::fence(job.status.as_ref(), &req.runner, req.epoch)?;
        artifacts::check_reported(state, &job, req.step.as_ref()).await?;
        let current = job.status.clone().unwrap_or_default();
        let next = job_status::next(&job, Transition::Report(req.as_report()), Timestamp::now());
        if next == current && from_cache {
            continue; // nothing to write as far as the cache knows: ask the API server
        }
        if next == current {
            return Ok(reply_json(
                StatusCode::OK,
                &serde_json::json!({ "changed": false }),
            ));
        }
        match job_write::replace_status(&state.client, &state.landed, &job, next.clone()).await {
            Ok(Written::Landed) => {
                let created = job.metadata.creation_timestamp.as_ref();
                state.metrics.job_status_written(created, &current, &next);
                report_event(state, &job, &req, &current, &next);
                debug!(namespace = ns, job = name, step = ?req.step.as_ref().map(|s| &s.name), phase = ?req.phase, "job status written");
                return Ok(reply_json(
                    StatusCode::OK,
                    &serde_json::json!({ "changed": true }),
                ));
            }
            Ok(Written::Conflict) => continue,
            Ok(Written::Gone) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("Job {ns}/{name} not found"),
                ));
            }
            Err(e) => return Err(unavailable("write the Job status", e)),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        "the Job kept changing; retry",
    ))
}

/// An Event when a report moved the Job's phase.
fn report_event(
    state: &ApiState,
    job: &Job,
    req: &StatusReport,
    before: &JobStatus,
    after: &JobStatus,
) {
    let (was, now) = (
        before.phase.unwrap_or_default(),
        after.phase.unwrap_or_default(),
    );
    if was == now {
        return;
    }
    let (warning, why) = match now {
        JobPhase::Running => (false, reason::STARTED),
        JobPhase::Succeeded => (false, reason::SUCCEEDED),
        JobPhase::Cancelled => (false, reason::CANCELLED),
        _ => (true, reason::FAILED),
    };
    let note = match (&req.reason, &req.message) {
        (Some(r), Some(m)) => format!("{r}: {m}"),
        (Some(r), None) => r.clone(),
        _ => format!("runner {} at epoch {}", req.runner, req.epoch),
    };
    state.events.publish(job, warning, why, note);
}

/// The Job, if `runner` at `epoch` still runs it. The watch cache first: epochs
/// only grow, so a cache at this epoch or later decides; only a cache behind the
/// presented epoch is checked for real.
async fn fenced(
    state: &ApiState,
    ns: &str,
    name: &str,
    runner: &str,
    epoch: i64,
) -> Result<Job, ApiError> {
    match cached(state, ns, name) {
        Some(j) if jobs::fence(j.status.as_ref(), runner, epoch).is_ok() => Ok((*j).clone()),
        Some(j) if j.status.as_ref().and_then(|s| s.epoch).unwrap_or(0) >= epoch => {
            jobs::fence(j.status.as_ref(), runner, epoch)?;
            Ok((*j).clone())
        }
        _ => {
            let j = fresh(state, ns, name).await?;
            jobs::fence(j.status.as_ref(), runner, epoch)?;
            Ok(j)
        }
    }
}

async fn append(
    state: &ApiState,
    ns: &str,
    name: &str,
    q: &AppendQuery,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    names(ns, name)?;
    runner_auth(state, authorization, &q.runner, ns)?;
    let job = fenced(state, ns, name, &q.runner, q.epoch).await?;
    if !job.spec.steps.iter().any(|s| s.name == q.step) {
        return Err(ApiError::bad_request(
            "UnknownStep",
            format!("the Job has no step {:?}", q.step),
        ));
    }
    let done = state
        .logs
        .append(&log_key(&job, &q.step), q.offset, body)
        .await
        .map_err(log_error)?;
    state.metrics.log_appended(done.accepted);
    Ok(reply_json(
        StatusCode::OK,
        &AppendResponse {
            length: done.length,
            accepted: done.accepted,
        },
    ))
}

mod artifacts;
mod auth;
mod uploads;
mod user_logs;
use auth::{runner_auth, token_first};
use user_logs::{SyncStream, read, user_may_get};

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;

#[cfg(test)]
mod properties;
