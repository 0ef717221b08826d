//! Users reading a Job's logs: a Kubernetes bearer token checked with a TokenReview,
//! a SubjectAccessReview for `get` on the Job, then the stored log streamed (and
//! followed) until the step or the Job ends.

#[allow(clippy::wildcard_imports)]
use super::*;
use kube::api::PostParams;

/// Whether the user behind a Kubernetes bearer token may `get` Job `ns/name`.
async fn user_may_get(
    state: &ApiState,
    authorization: Option<&str>,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    // Kubernetes tokens (JWTs) are longer than runner tokens: their own bound.
    let token = authorization
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "TokenMissing",
                "reading logs needs a Kubernetes bearer token (Authorization: Bearer ...)",
            )
        })?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 8192 && t.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "MalformedToken",
                "Authorization must be `Bearer <token>`, at most 8 KiB of printable ASCII",
            )
        })?
        .to_owned();
    let pp = PostParams::default();
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviewed = Api::<TokenReview>::all(state.client.clone())
        .create(&pp, &review)
        .await
        .map_err(|e| unavailable("TokenReview", e))?;
    let status = reviewed.status.unwrap_or_default();
    let user = match (status.authenticated, status.user) {
        (Some(true), Some(user)) => user,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthenticated",
                status
                    .error
                    .unwrap_or_else(|| "the token was not accepted by Kubernetes".into()),
            ));
        }
    };
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_owned()),
                verb: Some("get".into()),
                group: Some("baton.dev".into()),
                resource: Some("jobs".into()),
                name: Some(name.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let decided = Api::<SubjectAccessReview>::all(state.client.clone())
        .create(&pp, &sar)
        .await
        .map_err(|e| unavailable("SubjectAccessReview", e))?;
    if decided.status.is_some_and(|s| s.allowed) {
        Ok(())
    } else {
        info!(user = ?user.username, namespace = ns, job = name, "log read refused by RBAC");
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{} may not get jobs.baton.dev {name} in namespace {ns}",
                user.username.unwrap_or_default()
            ),
        ))
    }
}

/// A channel's receiving end as a `Sync` stream (what warp's streaming body needs).
struct Chunks(tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures::Stream for Chunks {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Whether a step's log can still grow: its Job and the step are still going.
fn still_going(state: &ApiState, ns: &str, name: &str, uid: &str, step: &str) -> bool {
    let Some(job) = cached(state, ns, name) else {
        return false;
    };
    if job.uid().as_deref() != Some(uid) {
        return false;
    }
    let Some(status) = job.status.as_ref() else {
        return true;
    };
    if status.phase.unwrap_or_default().is_finished() {
        return false;
    }
    !status
        .steps
        .iter()
        .any(|s| s.name == step && s.phase.is_finished())
}

pub(super) async fn read(
    state: &ApiState,
    ns: &str,
    name: &str,
    q: &ReadQuery,
    authorization: Option<&str>,
) -> Result<Response, ApiError> {
    names(ns, name)?;
    user_may_get(state, authorization, ns, name).await?;
    let job = match cached(state, ns, name) {
        Some(j) => (*j).clone(),
        None => fresh(state, ns, name).await?,
    };
    if !job.spec.steps.iter().any(|s| s.name == q.step) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "UnknownStep",
            format!("the Job has no step {:?}", q.step),
        ));
    }
    let key = log_key(&job, &q.step);
    if !q.follow {
        let bytes = state.logs.read_from(&key, 0).await.map_err(log_error)?;
        let mut res = warp::reply::Response::new(bytes.into());
        res.headers_mut().insert(
            warp::http::header::CONTENT_TYPE,
            warp::http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return Ok(res);
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let state = state.clone();
    let (ns, name, uid, step) = (
        ns.to_owned(),
        name.to_owned(),
        job.uid().unwrap_or_default(),
        q.step.clone(),
    );
    tokio::spawn(async move {
        let mut pos = 0u64;
        loop {
            let changed = state.logs.changed();
            // Decide before reading: a step seen finished has its whole log stored.
            let going = still_going(&state, &ns, &name, &uid, &step);
            match state.logs.read_from(&key, pos).await {
                Ok(bytes) if !bytes.is_empty() => {
                    pos += bytes.len() as u64;
                    if tx.send(Ok(Bytes::from(bytes))).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(job = %name, step = %step, "follow logs: {e}");
                    return;
                }
            }
            if !going {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
        }
    });
    use warp::Reply;
    let mut res = warp::reply::stream(Chunks(rx)).into_response();
    res.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(res)
}
