//! What the dashboard refuses before any route runs, as warp filters over pure
//! checks:
//! - **DNS rebinding**: every request's `Host` must name the address it is bound to
//!   (`127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`), or a `--public-host` when it
//!   sits behind an authenticating proxy. A hostile page whose name re-resolves to
//!   127.0.0.1 sends its own name, and is refused (421).
//! - **CSRF** on the changing routes (POST): the request must carry the page's
//!   per-process token in `X-Baton-Token` (a custom header, so a cross-site form
//!   cannot send it and a cross-site `fetch` needs a preflight we never allow), and
//!   an `Origin` or `Sec-Fetch-Site` it does send must say same-origin (403).
//!
//! Every refusal is JSON `{reason, message}`, as the runner API's are.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// The header the page's script sends its token in.
pub const TOKEN_HEADER: &str = "x-baton-token";

/// A refusal, with a machine-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl warp::reject::Reject for Refused {}

/// Which hosts and origins the dashboard answers, and its CSRF token.
#[derive(Debug, Clone)]
pub struct Guard {
    hosts: Vec<String>,
    origins: Vec<String>,
    token: String,
}

impl Guard {
    /// For a listener bound to `addr`; `public` are the names a proxy forwards
    /// (host or host:port, as its users' browsers send them).
    pub fn new(addr: SocketAddr, public: &[String], token: String) -> Guard {
        let port = addr.port();
        let mut hosts = vec![match addr {
            SocketAddr::V4(a) => format!("{}:{port}", a.ip()),
            SocketAddr::V6(a) => format!("[{}]:{port}", a.ip()),
        }];
        if addr.ip().is_loopback() {
            hosts.push(format!("localhost:{port}"));
        }
        hosts.extend(public.iter().map(|h| h.to_ascii_lowercase()));
        let mut origins: Vec<String> = hosts.iter().map(|h| format!("http://{h}")).collect();
        origins.extend(
            public
                .iter()
                .map(|h| format!("https://{}", h.to_ascii_lowercase())),
        );
        Guard {
            hosts,
            origins,
            token,
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The Host header must name this dashboard.
    pub fn check_host(&self, host: Option<&str>) -> Result<(), Refused> {
        let host = host.map(|h| h.trim().to_ascii_lowercase());
        match host {
            Some(h) if self.hosts.contains(&h) => Ok(()),
            other => Err(Refused {
                status: StatusCode::MISDIRECTED_REQUEST,
                reason: "UnknownHost",
                message: format!(
                    "this dashboard answers only for {}, not for Host {}",
                    self.hosts.join(", "),
                    other.as_deref().unwrap_or("(none)")
                ),
            }),
        }
    }

    /// A change must carry the token and come from this dashboard's own pages.
    pub fn check_change(
        &self,
        token: Option<&str>,
        origin: Option<&str>,
        fetch_site: Option<&str>,
    ) -> Result<(), Refused> {
        let refuse = |reason, message: String| {
            Err(Refused {
                status: StatusCode::FORBIDDEN,
                reason,
                message,
            })
        };
        let good = token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(self.token.as_bytes())));
        if !good {
            return refuse(
                "BadToken",
                format!("a change needs this page's token in {TOKEN_HEADER}"),
            );
        }
        if let Some(o) = origin.filter(|o| !self.origins.contains(&o.to_ascii_lowercase())) {
            return refuse("CrossOrigin", format!("origin {o} may not change anything"));
        }
        if let Some(s) = fetch_site.filter(|s| !s.eq_ignore_ascii_case("same-origin")) {
            return refuse(
                "CrossSite",
                format!("a {s} request may not change anything"),
            );
        }
        Ok(())
    }
}

/// Passes requests whose Host names this dashboard.
pub fn host(guard: Arc<Guard>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("host")
        .and_then(move |h: Option<String>| {
            let checked = guard.check_host(h.as_deref()).map_err(warp::reject::custom);
            async move { checked }
        })
        .untuple_one()
}

/// Passes changes that carry the token and come from the same origin.
pub fn change(guard: Arc<Guard>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>(TOKEN_HEADER)
        .and(warp::header::optional::<String>("origin"))
        .and(warp::header::optional::<String>("sec-fetch-site"))
        .and_then(
            move |t: Option<String>, o: Option<String>, s: Option<String>| {
                let checked = guard
                    .check_change(t.as_deref(), o.as_deref(), s.as_deref())
                    .map_err(warp::reject::custom);
                async move { checked }
            },
        )
        .untuple_one()
}

/// A JSON refusal.
pub fn refusal(status: StatusCode, reason: &str, message: &str) -> warp::reply::Response {
    let body = serde_json::json!({ "reason": reason, "message": message });
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// Rejections as JSON refusals.
pub async fn recover(r: Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(refused) = r.find::<Refused>() {
        return Ok(refusal(refused.status, refused.reason, &refused.message));
    }
    if r.is_not_found() {
        return Ok(refusal(StatusCode::NOT_FOUND, "NotFound", "no such page"));
    }
    if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        let m = "method not allowed";
        return Ok(refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            m,
        ));
    }
    Ok(refusal(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "bad request",
    ))
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
