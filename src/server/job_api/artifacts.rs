//! Change archives (`collect`, `artifacts`): a runner uploads a step's archive
//! under its digest before it reports the step, and users download the archives
//! their Job's status names.
//!
//! `PUT /v1/jobs/{ns}/{name}/artifacts/{digest}?runner=R&epoch=E` (the runner's
//! own token, fenced like a status report; `Content-Length` required, at most the
//! cap): the body lands only if its SHA-256 is the digest, so what the status
//! names is exactly what was packed. The same archive sent twice is stored once.
//!
//! `GET /v1/jobs/{ns}/{name}/artifacts/{digest}` (a user's Kubernetes token, as
//! for log reads): only a digest the Job's status names, so a token that may read
//! one Job cannot fish for another's archives.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::crd::job::StepStatus;
use crate::store::{Digest, JobKey, StoreError};
use bytes::Buf;
use futures::TryStreamExt;

/// Archive media types a runner may send.
const MEDIA: [&str; 2] = ["application/zstd", "application/octet-stream"];

pub(super) fn routes(
    state: ApiState,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let auth = warp::header::optional::<String>("authorization");
    let upload = warp::path!("v1" / "jobs" / String / String / "artifacts" / String)
        .and(warp::put())
        .and(with_state.clone())
        .and(query_map())
        .and(auth)
        .and(warp::header::optional::<String>("content-type"))
        .and(token_first(state.clone()))
        .and(input::body_limit(
            "change archive",
            state.config.artifact_cap,
        ))
        .and(warp::body::stream().map(byte_stream))
        .then(
            |ns: String,
             name: String,
             digest: String,
             state: ApiState,
             q: Query,
             auth: Option<String>,
             ct: Option<String>,
             body: BodyStream| async move {
                let up = Upload {
                    ns: &ns,
                    name: &name,
                    digest: &digest,
                    content_type: ct.as_deref(),
                    authorization: auth.as_deref(),
                };
                store(&state, &up, &q, body)
                    .await
                    .unwrap_or_else(ApiError::into_response)
            },
        );
    let download =
        warp::path!("v1" / "jobs" / String / String / "artifacts" / String)
            .and(warp::get())
            .and(with_state)
            .and(auth)
            .then(
                |ns: String,
                 name: String,
                 digest: String,
                 state: ApiState,
                 auth: Option<String>| async move {
                    download(&state, &ns, &name, &digest, auth.as_deref())
                        .await
                        .unwrap_or_else(ApiError::into_response)
                },
            );
    upload.or(download).unify()
}

pub(super) type BodyStream = futures::stream::BoxStream<'static, Result<Bytes, warp::Error>>;

/// The request body as `Bytes` chunks (a fn, not a closure: warp's body type
/// has no name to annotate a closure with).
pub(super) fn byte_stream<S, B>(body: S) -> BodyStream
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf,
{
    use futures::StreamExt;
    body.map_ok(|mut b| b.copy_to_bytes(b.remaining())).boxed()
}

struct Upload<'a> {
    ns: &'a str,
    name: &'a str,
    digest: &'a str,
    content_type: Option<&'a str>,
    authorization: Option<&'a str>,
}

pub(super) fn digest(value: &str) -> Result<Digest, ApiError> {
    Digest::parse(value).map_err(|e| ApiError::bad_request("InvalidDigest", e.to_string()))
}

fn job_key(job: &Job) -> Result<JobKey, ApiError> {
    JobKey::new(
        &job.namespace().unwrap_or_default(),
        &job.name_any(),
        &job.uid().unwrap_or_default(),
    )
    .map_err(|e| ApiError::bad_request("InvalidName", e.to_string()))
}

pub(super) fn runner_query(q: &Query) -> Result<(String, i64), ApiError> {
    const EXPECTED: &str = "?runner=R&epoch=E";
    if let Some(k) = q.keys().find(|k| !matches!(k.as_str(), "runner" | "epoch")) {
        return Err(ApiError::bad_request(
            "InvalidQuery",
            format!("unknown parameter {k}: expected {EXPECTED}"),
        ));
    }
    Ok((field(q, "runner", EXPECTED)?, field(q, "epoch", EXPECTED)?))
}

pub(super) fn store_error(e: StoreError) -> ApiError {
    match e {
        e @ StoreError::TooLarge { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TooLarge",
            format!("the archive is {e}"),
        ),
        e @ StoreError::DigestMismatch { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "DigestMismatch",
            e.to_string(),
        ),
        e @ StoreError::Body(_) => ApiError::bad_request("BodyBroken", e.to_string()),
        e => unavailable("the blob store", e),
    }
}

async fn store<S>(
    state: &ApiState,
    up: &Upload<'_>,
    q: &Query,
    body: S,
) -> Result<Response, ApiError>
where
    S: futures::Stream<Item = Result<Bytes, warp::Error>> + Send,
{
    names(up.ns, up.name)?;
    let digest = digest(up.digest)?;
    let (runner, epoch) = runner_query(q)?;
    runner_auth(state, up.authorization, &runner, up.ns)?;
    check_media(up.content_type)?;
    let job = fenced(state, up.ns, up.name, &runner, epoch).await?;
    let key = job_key(&job)?.archive(&digest);
    let reply = store_once(state, &key, body, &digest).await?;
    info!(namespace = up.ns, job = up.name, %digest, status = %reply.status(), "change archive received");
    Ok(reply)
}

/// Store a content-addressed archive at `key` unless it is there already:
/// 201 with its size when stored now, 200 when it was held before.
pub(super) async fn store_once<S>(
    state: &ApiState,
    key: &object_store::path::Path,
    body: S,
    digest: &Digest,
) -> Result<Response, ApiError>
where
    S: futures::Stream<Item = Result<Bytes, warp::Error>> + Send,
{
    if let Some(size) = state.store.size(key).await.map_err(store_error)? {
        return Ok(reply_json(
            StatusCode::OK,
            &serde_json::json!({ "size": size, "stored": false }),
        ));
    }
    let size = state
        .store
        .put_verified(key, body, state.config.artifact_cap, digest)
        .await
        .map_err(store_error)?;
    Ok(reply_json(
        StatusCode::CREATED,
        &serde_json::json!({ "size": size, "stored": true }),
    ))
}

/// An archive's body must say it is one.
pub(super) fn check_media(content_type: Option<&str>) -> Result<(), ApiError> {
    let essence = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|s| s.trim().to_ascii_lowercase());
    if essence.as_deref().is_some_and(|e| MEDIA.contains(&e)) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        format!("Content-Type must be one of {}", MEDIA.join(", ")),
    ))
}

/// A stored archive as the response body, with its type and length.
pub(super) fn archive_response(blob: crate::store::Blob) -> Response {
    use warp::Reply;
    let mut response = warp::reply::stream(SyncStream::new(blob.bytes)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        warp::http::HeaderValue::from_static("application/zstd"),
    );
    headers.insert("content-length", warp::http::HeaderValue::from(blob.size));
    response
}

/// A step report that names an archive: it must be stored, at the size reported.
pub(super) async fn check_reported(
    state: &ApiState,
    job: &Job,
    step: Option<&StepStatus>,
) -> Result<(), ApiError> {
    let Some(artifacts) = step.and_then(|s| s.artifacts.as_ref()) else {
        return Ok(());
    };
    let key = job_key(job)?.archive(&digest(&artifacts.digest)?);
    match state.store.size(&key).await.map_err(store_error)? {
        Some(size) if i64::try_from(size).ok() == Some(artifacts.size) => Ok(()),
        Some(size) => Err(ApiError::bad_request(
            "ArtifactsSizeMismatch",
            format!(
                "the stored archive {} has {size} bytes, not {}",
                artifacts.digest, artifacts.size
            ),
        )),
        None => Err(ApiError::bad_request(
            "ArtifactsNotStored",
            format!(
                "no archive {} is stored: upload it before reporting the step",
                artifacts.digest
            ),
        )),
    }
}

async fn download(
    state: &ApiState,
    ns: &str,
    name: &str,
    digest_text: &str,
    authorization: Option<&str>,
) -> Result<Response, ApiError> {
    names(ns, name)?;
    let digest = digest(digest_text)?;
    user_may_get(state, authorization, ns, name).await?;
    let job = match cached(state, ns, name) {
        Some(j) => (*j).clone(),
        None => fresh(state, ns, name).await?,
    };
    let wanted = digest.to_string();
    let named = job
        .status
        .iter()
        .flat_map(|s| &s.steps)
        .any(|s| s.artifacts.as_ref().is_some_and(|a| a.digest == wanted));
    let not_found = |why: &str| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ArtifactNotFound",
            format!("Job {ns}/{name} has no archive {wanted}{why}"),
        )
    };
    if !named {
        return Err(not_found(""));
    }
    let key = job_key(&job)?.archive(&digest);
    let blob = state
        .store
        .get(&key, 0)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(" in the store (it was lost or removed)"))?;
    Ok(archive_response(blob))
}
