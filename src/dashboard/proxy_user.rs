//! Acting as each proxied user (`--proxy-user-header`, `--proxy-groups-header`):
//! the authenticating proxy names every request's user and groups in headers.
//! Those headers are hostile input — whoever reaches the pod past the proxy can
//! send them — so they are checked strictly, a request without a user is refused
//! (401, never the ServiceAccount's view), and names in the `system:` space are
//! refused: the dashboard may impersonate any user and group, and `system:masters`
//! or a ServiceAccount is never a person the proxy logged in.
//!
//! Reads come from the shared watch caches, filtered by SubjectAccessReviews for
//! the user ([`super::access`]); changes go through a client that impersonates the
//! user ([`impersonating`]), so the API server decides and audits them as that user.

use std::sync::Arc;

use warp::http::StatusCode;
use warp::http::header::{HeaderMap, HeaderName};
use warp::{Filter, Rejection};

use super::guard::Refused;

/// The longest user or group name taken from a header, in bytes.
pub const MAX_NAME: usize = 256;
/// The most groups one request may name.
pub const MAX_GROUPS: usize = 64;
/// The group the API server adds to every authenticated (and impersonated) user.
pub const AUTHENTICATED: &str = "system:authenticated";

/// A proxied user: a name and groups (sorted, no duplicates).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

/// Whom a request acts as.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Who {
    /// The dashboard's own credentials (a kubeconfig locally, or its ServiceAccount).
    Own,
    /// The user the proxy names.
    User(Identity),
}

/// A kube client acting as an identity.
pub type ClientAs = dyn Fn(&Identity) -> anyhow::Result<kube::Client> + Send + Sync;

/// The proxy's headers, and how to make a client that acts as their user.
pub struct ProxyUsers {
    pub user_header: HeaderName,
    pub groups_header: Option<HeaderName>,
    pub client_as: Box<ClientAs>,
}

/// The identity `headers` name, or why the request is refused.
pub fn identity(
    headers: &HeaderMap,
    user_header: &HeaderName,
    groups_header: Option<&HeaderName>,
) -> Result<Identity, Refused> {
    let mut users = headers.get_all(user_header).iter();
    let Some(user) = users.next() else {
        let why = "no user: this dashboard answers only requests its proxy authenticated";
        return Err(refuse(StatusCode::UNAUTHORIZED, "NoProxyUser", why));
    };
    if users.next().is_some() {
        return Err(bad(user_header, "more than one user"));
    }
    let user = name(user.as_bytes()).map_err(|why| bad(user_header, why))?;
    let mut groups = Vec::new();
    if let Some(h) = groups_header {
        for value in headers.get_all(h) {
            groups.extend(group_list(value.as_bytes()).map_err(|why| bad(h, why))?);
        }
    }
    groups.sort();
    groups.dedup();
    if groups.len() > MAX_GROUPS {
        let why = format!("more than {MAX_GROUPS} groups");
        return Err(bad(groups_header.unwrap_or(user_header), &why));
    }
    Ok(Identity {
        user: user.to_owned(),
        groups,
    })
}

/// One user or group name: not empty, not over-long, UTF-8 without control
/// characters, and not in the `system:` space.
pub fn name(raw: &[u8]) -> Result<&str, &'static str> {
    if raw.len() > MAX_NAME {
        return Err("a name is longer than 256 bytes");
    }
    let text = std::str::from_utf8(raw).map_err(|_| "a name is not UTF-8")?;
    let text = text.trim();
    if text.is_empty() {
        return Err("a name is empty");
    }
    if text.chars().any(char::is_control) {
        return Err("a name holds a control character");
    }
    if text.starts_with("system:") {
        return Err("a name is in the system: space, which the dashboard never acts as");
    }
    Ok(text)
}

/// A comma-separated list of groups; an empty value is no group, an empty item
/// (`a,,b`) is refused.
pub fn group_list(raw: &[u8]) -> Result<Vec<String>, &'static str> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    raw.split(|&b| b == b',')
        .map(|g| name(g).map(str::to_owned))
        .collect()
}

fn bad(header: &HeaderName, why: &str) -> Refused {
    // The header's name only: its value is the attacker's text.
    let message = format!("header {header}: {why}");
    refuse(StatusCode::BAD_REQUEST, "BadProxyHeader", &message)
}

fn refuse(status: StatusCode, reason: &'static str, message: &str) -> Refused {
    Refused {
        status,
        reason,
        message: message.to_owned(),
    }
}

/// Whom each request acts as: [`Who::Own`] without `proxy`, else the proxied user
/// (refused when the headers do not name one).
pub fn who(
    proxy: Option<Arc<ProxyUsers>>,
) -> impl Filter<Extract = (Who,), Error = Rejection> + Clone {
    warp::header::headers_cloned().and_then(move |headers: HeaderMap| {
        let found = match &proxy {
            None => Ok(Who::Own),
            Some(p) => identity(&headers, &p.user_header, p.groups_header.as_ref())
                .map(Who::User)
                .map_err(warp::reject::custom),
        };
        async move { found }
    })
}

/// `base` changed to impersonate `id` (the `Impersonate-User` and
/// `Impersonate-Group` headers on every request).
pub fn impersonation(base: &kube::Config, id: &Identity) -> kube::Config {
    let mut config = base.clone();
    config.auth_info.impersonate = Some(id.user.clone());
    config.auth_info.impersonate_groups = (!id.groups.is_empty()).then(|| id.groups.clone());
    config
}

/// A [`ClientAs`] over `base`: a fresh client per change (changes are rare, and a
/// client holds no state worth sharing between users).
pub fn impersonating(base: kube::Config) -> Box<ClientAs> {
    Box::new(move |id: &Identity| {
        let client = kube::Client::try_from(impersonation(&base, id))?;
        Ok(client)
    })
}

#[cfg(test)]
#[path = "proxy_user_tests.rs"]
mod tests;
