//! Content a Job starts from (`spec.content`): users upload a packed directory
//! once per namespace, runners fetch it for the Job they run.
//!
//! `HEAD /v1/namespaces/{ns}/uploads/{digest}` and `PUT` the same path (a user's
//! Kubernetes token for Baton, allowed to `create` Jobs in `ns`): HEAD answers
//! 200 with the stored size or 404, so the same tree is never sent twice; PUT
//! stores the body (`Content-Length` required, at most the archive cap) only if
//! its SHA-256 is the digest. Uploads are kept per namespace: a digest seen in
//! one namespace's Job does not open another namespace's content.
//!
//! `GET /v1/jobs/{ns}/{name}/content?runner=R&epoch=E` (the runner's own token,
//! fenced like a status report): the upload the Job's `spec.content` names.

use super::artifacts::{
    BodyStream, archive_response, byte_stream, check_media, digest, runner_query, store_error,
    store_once,
};
use super::user_logs::user_may;
#[allow(clippy::wildcard_imports)]
use super::*;
use crate::store::keys;

pub(super) fn routes(
    state: ApiState,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let auth = warp::header::optional::<String>("authorization");
    let probe = warp::path!("v1" / "namespaces" / String / "uploads" / String)
        .and(warp::head())
        .and(with_state.clone())
        .and(auth)
        .then(
            |ns: String, digest: String, state: ApiState, auth: Option<String>| async move {
                probe(&state, &ns, &digest, auth.as_deref())
                    .await
                    .unwrap_or_else(ApiError::into_response)
            },
        );
    let upload = warp::path!("v1" / "namespaces" / String / "uploads" / String)
        .and(warp::put())
        .and(with_state.clone())
        .and(auth)
        .and(warp::header::optional::<String>("content-type"))
        .and(input::body_limit("upload", state.config.artifact_cap))
        .and(warp::body::stream().map(byte_stream))
        .then(
            |ns: String,
             digest: String,
             state: ApiState,
             auth: Option<String>,
             ct: Option<String>,
             body: BodyStream| async move {
                let sent = Sent {
                    ns: &ns,
                    digest: &digest,
                    content_type: ct.as_deref(),
                    authorization: auth.as_deref(),
                };
                store(&state, &sent, body)
                    .await
                    .unwrap_or_else(ApiError::into_response)
            },
        );
    let fetch = warp::path!("v1" / "jobs" / String / String / "content")
        .and(warp::get())
        .and(with_state)
        .and(query_map())
        .and(auth)
        .then(
            |ns: String, name: String, state: ApiState, q: Query, auth: Option<String>| async move {
                fetch(&state, &ns, &name, &q, auth.as_deref())
                    .await
                    .unwrap_or_else(ApiError::into_response)
            },
        );
    probe.or(upload).unify().or(fetch).unify()
}

struct Sent<'a> {
    ns: &'a str,
    digest: &'a str,
    content_type: Option<&'a str>,
    authorization: Option<&'a str>,
}

fn upload_key(
    ns: &str,
    digest: &crate::store::Digest,
) -> Result<object_store::path::Path, ApiError> {
    keys::upload(ns, digest).map_err(|e| ApiError::bad_request("InvalidName", e.to_string()))
}

/// The caller may create Jobs in `ns`: the one right an upload serves.
async fn may_upload(
    state: &ApiState,
    authorization: Option<&str>,
    ns: &str,
) -> Result<(), ApiError> {
    user_may(state, authorization, "create", ns, None).await
}

async fn probe(
    state: &ApiState,
    ns: &str,
    digest_text: &str,
    authorization: Option<&str>,
) -> Result<Response, ApiError> {
    let key = upload_key(ns, &digest(digest_text)?)?;
    may_upload(state, authorization, ns).await?;
    let size = state.store.size(&key).await.map_err(store_error)?;
    let mut response = warp::reply::Response::new(Default::default());
    match size {
        Some(size) => {
            response
                .headers_mut()
                .insert("content-length", warp::http::HeaderValue::from(size));
        }
        None => *response.status_mut() = StatusCode::NOT_FOUND,
    }
    Ok(response)
}

async fn store<S>(state: &ApiState, sent: &Sent<'_>, body: S) -> Result<Response, ApiError>
where
    S: futures::Stream<Item = Result<Bytes, warp::Error>> + Send,
{
    let digest = digest(sent.digest)?;
    let key = upload_key(sent.ns, &digest)?;
    may_upload(state, sent.authorization, sent.ns).await?;
    check_media(sent.content_type)?;
    let reply = store_once(state, &key, body, &digest).await?;
    info!(namespace = sent.ns, %digest, status = %reply.status(), "upload received");
    Ok(reply)
}

async fn fetch(
    state: &ApiState,
    ns: &str,
    name: &str,
    q: &Query,
    authorization: Option<&str>,
) -> Result<Response, ApiError> {
    names(ns, name)?;
    let (runner, epoch) = runner_query(q)?;
    runner_auth(state, authorization, &runner, ns)?;
    let job = fenced(state, ns, name, &runner, epoch).await?;
    let Some(content) = job.spec.content.as_ref() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NoContent",
            format!("Job {ns}/{name} has no spec.content"),
        ));
    };
    let key = upload_key(ns, &digest(&content.digest)?)?;
    let blob = state.store.get(&key, 0).await.map_err(store_error)?;
    let blob = blob.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ContentNotFound",
            format!(
                "no upload {} is stored in namespace {ns}: upload it (job run --upload) before creating the Job",
                content.digest
            ),
        )
    })?;
    Ok(archive_response(blob))
}
