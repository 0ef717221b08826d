//! Users reading a Job's logs: a Kubernetes bearer token minted for Baton (audience
//! [`LOG_TOKEN_AUDIENCE`]) checked with a TokenReview, a SubjectAccessReview for
//! `get` on the Job, then the stored log streamed (and followed) until the step or
//! the Job ends.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::server::logs::{LogReader, Open};
use kube::api::PostParams;

/// Whether the user behind a Kubernetes bearer token may `get` Job `ns/name`.
pub(super) async fn user_may_get(
    state: &ApiState,
    authorization: Option<&str>,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    user_may(state, authorization, "get", ns, Some(name)).await
}

/// Whether the user behind a Kubernetes bearer token may `verb` jobs in `ns`
/// (Job `name`, when given).
pub(super) async fn user_may(
    state: &ApiState,
    authorization: Option<&str>,
    verb: &str,
    ns: &str,
    name: Option<&str>,
) -> Result<(), ApiError> {
    // Kubernetes tokens (JWTs) are longer than runner tokens: their own bound.
    let token = authorization
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "TokenMissing",
                "this route needs a Kubernetes bearer token (Authorization: Bearer ...)",
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
            audiences: Some(vec![LOG_TOKEN_AUDIENCE.to_owned()]),
        },
        ..Default::default()
    };
    let reviewed = Api::<TokenReview>::all(state.client.clone())
        .create(&pp, &review)
        .await
        .map_err(|e| unavailable("TokenReview", e))?;
    let user = reviewed_user(reviewed.status.unwrap_or_default())?;
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_owned()),
                verb: Some(verb.to_owned()),
                group: Some("baton.dev".into()),
                resource: Some("jobs".into()),
                name: name.map(str::to_owned),
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
        info!(user = ?user.username, namespace = ns, job = ?name, verb, "refused by RBAC");
        let which = name.map(|n| format!(" {n}")).unwrap_or_default();
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{} may not {verb} jobs.baton.dev{which} in namespace {ns}",
                user.username.unwrap_or_default()
            ),
        ))
    }
}

/// How to get a token Baton takes, for the refusals.
const MINT_HINT: &str = "mint one for Baton: kubectl create token SA --audience baton";

/// The user a TokenReview authenticated, if the token was meant for Baton: the
/// review's audiences must include [`LOG_TOKEN_AUDIENCE`] (an authenticator that
/// ignores the asked audiences must not let an API-server token through).
fn reviewed_user(status: TokenReviewStatus) -> Result<UserInfo, ApiError> {
    let for_baton = status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|a| a == LOG_TOKEN_AUDIENCE));
    match (status.authenticated, status.user) {
        (Some(true), Some(user)) if for_baton => Ok(user),
        (Some(true), Some(_)) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "WrongAudience",
            format!(
                "the token is not meant for Baton (audience {LOG_TOKEN_AUDIENCE}): {MINT_HINT}"
            ),
        )),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated",
            format!(
                "{} ({MINT_HINT})",
                status
                    .error
                    .unwrap_or_else(|| "the token was not accepted by Kubernetes".into())
            ),
        )),
    }
}

/// A `Send` stream made `Sync`, as warp's streaming body asks: it is only ever
/// polled through `&mut`, so the mutex is never locked.
pub(super) struct SyncStream<S>(std::sync::Mutex<Pin<Box<S>>>);

impl<S> SyncStream<S> {
    pub(super) fn new(stream: S) -> Self {
        Self(std::sync::Mutex::new(Box::pin(stream)))
    }
}

impl<S: futures::Stream> futures::Stream for SyncStream<S> {
    type Item = S::Item;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.as_mut().poll_next(cx)
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

/// How long a follower waits for an append before it checks the Job again.
const RECHECK: Duration = Duration::from_secs(1);

/// A followed log: the stored bytes from an offset on, then every append, until the
/// step or the Job ends or the server shuts down. It is the response body itself
/// (no task of its own), so it ends with its client's connection.
struct Follow {
    state: ApiState,
    key: LogKey,
    uid: String,
    pos: u64,
    changes: tokio::sync::watch::Receiver<u64>,
    /// The open reader, and whether the step was still going before it was opened
    /// (a step seen finished has its whole log stored).
    reading: Option<(LogReader, bool)>,
    _open: Open,
}

impl Follow {
    /// Opened at once, so an offset past the log is refused before any answer.
    async fn start(
        state: &ApiState,
        key: LogKey,
        uid: String,
        from: u64,
    ) -> Result<Self, ApiError> {
        let mut f = Self {
            changes: state.logs.changes(),
            _open: state.logs.follower(),
            state: state.clone(),
            key,
            uid,
            pos: from,
            reading: None,
        };
        f.open().await.map_err(log_error)?;
        Ok(f)
    }

    async fn open(&mut self) -> Result<(), LogError> {
        self.changes.borrow_and_update();
        let k = &self.key;
        let going = still_going(&self.state, &k.namespace, &k.name, &self.uid, &k.step);
        let reader = self.state.logs.read(&self.key, self.pos).await?;
        self.reading = Some((reader, going));
        Ok(())
    }

    /// The next chunk; `None` at the end.
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        use futures::StreamExt;
        loop {
            let Some((reader, going)) = self.reading.as_mut() else {
                match self.open().await {
                    Ok(()) => continue,
                    // The file went (the Job was deleted): the end, not a fault.
                    Err(e @ LogError::Beyond { .. }) => {
                        debug!(job = %self.key.name, step = %self.key.step, "follow logs: {e}")
                    }
                    Err(e) => {
                        warn!(job = %self.key.name, step = %self.key.step, "follow logs: {e}")
                    }
                }
                return None;
            };
            match reader.next().await {
                Some(Ok(bytes)) => {
                    self.pos += bytes.len() as u64;
                    return Some(Ok(bytes));
                }
                Some(Err(e)) => {
                    self.reading = None;
                    return Some(Err(e));
                }
                None if !*going => return None,
                None => self.reading = None,
            }
            tokio::select! {
                _ = tokio::time::timeout(RECHECK, self.changes.changed()) => {}
                () = self.state.logs.following_stopped() => return None,
            }
        }
    }

    fn into_stream(self) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
        futures::stream::unfold(self, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        })
    }
}

fn text_plain(mut res: Response) -> Response {
    res.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

pub(super) async fn read(
    state: &ApiState,
    ns: &str,
    name: &str,
    q: &ReadQuery,
    authorization: Option<&str>,
) -> Result<Response, ApiError> {
    use warp::Reply;
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
        let reader = state.logs.read(&key, q.offset).await.map_err(log_error)?;
        return Ok(text_plain(
            warp::reply::stream(SyncStream::new(reader)).into_response(),
        ));
    }
    let uid = job.uid().unwrap_or_default();
    let follow = Follow::start(state, key, uid, q.offset).await?;
    Ok(text_plain(
        warp::reply::stream(SyncStream::new(follow.into_stream())).into_response(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn status(
        authenticated: Option<bool>,
        user: bool,
        audiences: Option<&[&str]>,
    ) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated,
            user: user.then(|| UserInfo {
                username: Some("system:serviceaccount:ns:reader".into()),
                ..Default::default()
            }),
            audiences: audiences.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
            error: (authenticated != Some(true)).then(|| "invalid bearer token".to_owned()),
        }
    }

    #[test]
    fn only_a_token_reviewed_for_baton_is_taken() {
        let api_server: &[&str] = &["https://kubernetes.default.svc.cluster.local"];
        let cases: &[(TokenReviewStatus, Result<(), &str>)] = &[
            (status(Some(true), true, Some(&["baton"])), Ok(())),
            (status(Some(true), true, Some(&["other", "baton"])), Ok(())),
            (
                status(Some(true), true, Some(api_server)),
                Err("WrongAudience"),
            ),
            (status(Some(true), true, Some(&[])), Err("WrongAudience")),
            (status(Some(true), true, None), Err("WrongAudience")),
            (
                status(Some(true), true, Some(&["Baton"])),
                Err("WrongAudience"),
            ),
            (
                status(Some(true), false, Some(&["baton"])),
                Err("Unauthenticated"),
            ),
            (
                status(Some(false), true, Some(&["baton"])),
                Err("Unauthenticated"),
            ),
            (status(None, false, None), Err("Unauthenticated")),
        ];
        for (st, want) in cases {
            let got = reviewed_user(st.clone()).map(drop).map_err(|e| e.reason);
            assert_eq!(got, *want, "{st:?}");
        }
        let e = reviewed_user(status(Some(false), false, None)).unwrap_err();
        assert!(
            e.message.starts_with("invalid bearer token") && e.message.contains("--audience baton"),
            "{}",
            e.message
        );
    }
}
