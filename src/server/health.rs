//! `/healthz`, `/livez` (the process serves) and `/readyz` (every named check
//! passed: CRDs present, each watch synced once; 503 with the reasons otherwise).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use warp::Filter;
use warp::http::StatusCode;

/// Named readiness checks; each starts failing with a reason until it is marked ok.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<&'static str, Option<String>>>>,
}

impl Readiness {
    /// Register a check that fails with `reason` until [`Readiness::ok`].
    pub fn require(&self, name: &'static str, reason: impl Into<String>) {
        self.lock().insert(name, Some(reason.into()));
    }

    pub fn ok(&self, name: &'static str) {
        self.lock().insert(name, None);
    }

    pub fn fail(&self, name: &'static str, reason: impl Into<String>) {
        self.lock().insert(name, Some(reason.into()));
    }

    /// `Ok` when every check passed; otherwise the failing reasons, one a line.
    pub fn check(&self) -> Result<(), String> {
        let failing: Vec<String> = self
            .lock()
            .iter()
            .filter_map(|(name, reason)| reason.as_ref().map(|r| format!("{name}: {r}")))
            .collect();
        if failing.is_empty() {
            Ok(())
        } else {
            Err(failing.join("\n"))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Option<String>>> {
        self.checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `GET /livez` and `GET /healthz`: 200 while the process serves.
pub fn livez() -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    warp::path("livez")
        .or(warp::path("healthz"))
        .unify()
        .and(warp::path::end())
        .and(warp::get())
        .map(|| "ok\n")
}

/// `GET /readyz`: 200 when ready, 503 with the reasons otherwise.
pub fn readyz(
    readiness: Readiness,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    warp::path("readyz")
        .and(warp::path::end())
        .and(warp::get())
        .and_then(move || {
            let readiness = readiness.clone();
            async move {
                Ok::<_, Infallible>(match readiness.check() {
                    Ok(()) => warp::reply::with_status("ok\n".to_owned(), StatusCode::OK),
                    Err(why) => warp::reply::with_status(
                        format!("not ready:\n{why}\n"),
                        StatusCode::SERVICE_UNAVAILABLE,
                    ),
                })
            }
        })
}

/// All three health routes.
pub fn routes(
    readiness: Readiness,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    livez().or(readyz(readiness))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn livez_and_healthz_answer_ok() {
        for path in ["/livez", "/healthz"] {
            let res = warp::test::request().path(path).reply(&livez()).await;
            assert_eq!(res.status(), 200, "{path}");
        }
        let res = warp::test::request()
            .method("POST")
            .path("/livez")
            .reply(&livez())
            .await;
        assert_eq!(res.status(), 405);
    }

    #[tokio::test]
    async fn readyz_says_why_until_every_check_passes() {
        let r = Readiness::default();
        r.require("crds", "CRD runners.baton.dev not found");
        r.require("watch/runners", "not synced yet");
        let filter = readyz(r.clone());

        let res = warp::test::request().path("/readyz").reply(&filter).await;
        assert_eq!(res.status(), 503);
        let body = String::from_utf8_lossy(res.body()).into_owned();
        assert!(body.contains("runners.baton.dev not found"), "{body}");
        assert!(body.contains("watch/runners"), "{body}");

        r.ok("crds");
        r.ok("watch/runners");
        let res = warp::test::request().path("/readyz").reply(&filter).await;
        assert_eq!(res.status(), 200);

        r.fail("crds", "gone");
        let res = warp::test::request().path("/readyz").reply(&filter).await;
        assert_eq!(res.status(), 503);
    }
}
