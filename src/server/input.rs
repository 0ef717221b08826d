//! What the runner API accepts, checked before anything else happens: body size and
//! content type, strict JSON (unknown fields refused), names and labels, the bearer
//! token header. Every refusal is an [`ApiError`]: a 4xx with a reason and a message.

use warp::http::StatusCode;

use crate::domain::{challenge, identity};
use crate::protocol::{ControlQuery, ErrorBody, RegisterRequest};

/// Largest request body the API reads (registration, claim).
pub const MAX_BODY: u64 = 16 * 1024;

/// A body over its route's limit (refused from its Content-Length, unread).
#[derive(Debug)]
pub struct BodyTooLarge {
    pub what: &'static str,
    pub max: u64,
}

impl warp::reject::Reject for BodyTooLarge {}

/// The size limit of one route: a declared length over `max` is refused with a
/// message naming this route's limit; a body without a length is refused too.
pub fn body_limit(
    what: &'static str,
    max: u64,
) -> impl warp::Filter<Extract = (), Error = warp::Rejection> + Clone {
    use warp::Filter;
    warp::header::optional::<u64>("content-length")
        .and_then(move |len: Option<u64>| async move {
            match len {
                Some(n) if n > max => Err(warp::reject::custom(BodyTooLarge { what, max })),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::content_length_limit(max))
}

/// A refusal decided in a filter (before the handler), answered as is by `recover`.
#[derive(Debug)]
pub struct Refused(pub ApiError);

impl warp::reject::Reject for Refused {}

/// An answer other than success: status code, a stable reason, a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }

    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }

    pub fn into_response(self) -> warp::reply::Response {
        use warp::Reply;
        warp::reply::with_status(
            warp::reply::json(&ErrorBody {
                error: self.reason.to_owned(),
                message: self.message,
            }),
            self.status,
        )
        .into_response()
    }
}

/// Parse and validate a registration body.
pub fn parse_register(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<RegisterRequest, ApiError> {
    require_json(content_type)?;
    let req: RegisterRequest = serde_json::from_slice(body).map_err(|e| {
        let reason = if e.to_string().contains("unknown field") {
            "UnknownField"
        } else {
            "MalformedJson"
        };
        ApiError::bad_request(reason, format!("registration body: {e}"))
    })?;
    validate_dns_label("name", &req.name)?;
    if req.runner_id.len() < 8
        || req.runner_id.len() > 64
        || !req
            .runner_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ApiError::bad_request(
            "InvalidRunnerId",
            "runnerId must be 8 to 64 characters of letters, digits and '-'",
        ));
    }
    if let Some(ns) = &req.namespace {
        validate_dns_label("namespace", ns)?;
    }
    if req.labels.len() > 64 {
        return Err(ApiError::bad_request("InvalidLabels", "at most 64 labels"));
    }
    for (k, v) in &req.labels {
        validate_label(k, v)?;
    }
    if let Some(v) = &req.version
        && (v.len() > 64 || v.chars().any(|c| c.is_control()))
    {
        return Err(ApiError::bad_request(
            "InvalidVersion",
            "version must be at most 64 printable characters",
        ));
    }
    validate_proof(&req.public_key, &req.challenge, &req.signature)?;
    Ok(req)
}

/// The key proof's fields are present and well-formed (whether the signature
/// verifies, and the challenge is ours, is checked after).
pub fn validate_proof(public_key: &str, challenge: &str, signature: &str) -> Result<(), ApiError> {
    if public_key.is_empty() || challenge.is_empty() || signature.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "ProofMissing",
            "a runner proves it holds its key: publicKey, and a challenge from \
             GET /v1/challenge signed with it (a runner older than this server does \
             not: upgrade it)",
        ));
    }
    identity::parse_public(public_key)
        .map_err(|e| ApiError::bad_request("InvalidPublicKey", e.to_string()))?;
    if challenge.len() > challenge::MAX_LEN || signature.len() > 128 {
        return Err(ApiError::bad_request(
            "InvalidProof",
            "challenge or signature too long",
        ));
    }
    Ok(())
}

/// The control query's fields, validated.
pub fn validate_control(q: &ControlQuery) -> Result<(), ApiError> {
    validate_dns_label("name", &q.name)?;
    if let Some(ns) = &q.namespace {
        validate_dns_label("namespace", ns)?;
    }
    Ok(())
}

fn require_json(content_type: Option<&str>) -> Result<(), ApiError> {
    let essence = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|s| s.trim().to_ascii_lowercase());
    if essence.as_deref() == Some("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "Content-Type must be application/json, got {}",
                content_type.unwrap_or("none")
            ),
        ))
    }
}

/// The bearer token of an `Authorization` header: `None` without the header.
pub fn bearer(authorization: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(value) = authorization else {
        return Ok(None);
    };
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "MalformedToken", m);
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| unauthorized("Authorization must be `Bearer <token>`"))?
        .trim();
    if token.is_empty() || token.len() > 256 || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(unauthorized(
            "the bearer token must be 1 to 256 printable ASCII characters",
        ));
    }
    Ok(Some(token.to_owned()))
}

/// A DNS-1123 label: 1 to 63 of `a-z`, `0-9`, `-`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn validate_dns_label(field: &str, s: &str) -> Result<(), ApiError> {
    if is_dns_label(s) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidName",
            format!(
                "{field} {s:?} must be a DNS label: 1 to 63 of a-z, 0-9 and '-', alphanumeric at both ends"
            ),
        ))
    }
}

fn is_label_part(s: &str, allow_empty: bool) -> bool {
    if s.is_empty() {
        return allow_empty;
    }
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn validate_label(key: &str, value: &str) -> Result<(), ApiError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns_label));
    if !prefix_ok || !is_label_part(name, false) || !is_label_part(value, true) {
        return Err(ApiError::bad_request(
            "InvalidLabels",
            format!("label {key}={value} is not a valid Kubernetes label"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");

    #[test]
    fn a_good_registration_parses() {
        let body = format!(
            r#"{{"name":"r1","runnerId":"0123456789abcdef","namespace":"ci","labels":{{"pool":"a","baton.dev/os":"linux"}},"version":"0.1.0",{}}}"#,
            proof()
        );
        let req = parse_register(Some("application/json; charset=utf-8"), body.as_bytes());
        assert_eq!(req.map(|r| r.labels.len()), Ok(2));
    }

    /// Well-formed proof fields (verified later, by the route).
    fn proof() -> String {
        let key = format!("ed25519:{}", "A".repeat(43));
        format!(r#""publicKey":"{key}","challenge":"c","signature":"s""#)
    }

    #[test]
    fn registrations_without_a_well_formed_key_proof_are_refused() {
        let ok = r#""name":"r1","runnerId":"0123456789abcdef""#;
        let key = format!("ed25519:{}", "A".repeat(43));
        let cases = [
            (format!("{{{ok}}}"), 401, "ProofMissing"),
            (
                format!(r#"{{{ok},"publicKey":"{key}","challenge":"c"}}"#),
                401,
                "ProofMissing",
            ),
            (
                format!(r#"{{{ok},"publicKey":"ssh-rsa AAAA","challenge":"c","signature":"s"}}"#),
                400,
                "InvalidPublicKey",
            ),
            (
                format!(
                    r#"{{{ok},"publicKey":"{key}","challenge":"{}","signature":"s"}}"#,
                    "c".repeat(500)
                ),
                400,
                "InvalidProof",
            ),
        ];
        for (body, status, reason) in cases {
            let err = parse_register(JSON, body.as_bytes()).err();
            assert_eq!(
                err.as_ref().map(|e| (e.status.as_u16(), e.reason)),
                Some((status, reason)),
                "{body}"
            );
        }
    }

    #[test]
    fn bad_registrations_are_refused_with_a_reason() {
        let ok_id = "0123456789abcdef";
        let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
            (JSON, "{".into(), 400, "MalformedJson"),
            (JSON, "[]".into(), 400, "MalformedJson"),
            (JSON, "".into(), 400, "MalformedJson"),
            (JSON, "\u{0}\u{1}binary".into(), 400, "MalformedJson"),
            (
                JSON,
                format!(r#"{{"name":"r1","runnerId":"{ok_id}","extra":1}}"#),
                400,
                "UnknownField",
            ),
            (
                JSON,
                format!(r#"{{"runnerId":"{ok_id}"}}"#),
                400,
                "MalformedJson",
            ),
            (
                JSON,
                format!(r#"{{"name":"R_1","runnerId":"{ok_id}"}}"#),
                400,
                "InvalidName",
            ),
            (
                JSON,
                format!(r#"{{"name":"{}","runnerId":"{ok_id}"}}"#, "a".repeat(64)),
                400,
                "InvalidName",
            ),
            (
                JSON,
                r#"{"name":"r1","runnerId":"short"}"#.into(),
                400,
                "InvalidRunnerId",
            ),
            (
                JSON,
                r#"{"name":"r1","runnerId":"../../etc/passwd"}"#.into(),
                400,
                "InvalidRunnerId",
            ),
            (
                JSON,
                format!(r#"{{"name":"r1","runnerId":"{ok_id}","namespace":"Bad NS"}}"#),
                400,
                "InvalidName",
            ),
            (
                JSON,
                format!(r#"{{"name":"r1","runnerId":"{ok_id}","labels":{{"a b":"c"}}}}"#),
                400,
                "InvalidLabels",
            ),
            (
                JSON,
                format!(
                    r#"{{"name":"r1","runnerId":"{ok_id}","version":"{}"}}"#,
                    "v".repeat(65)
                ),
                400,
                "InvalidVersion",
            ),
            (
                JSON,
                format!(r#"{{"name":1,"runnerId":"{ok_id}"}}"#),
                400,
                "MalformedJson",
            ),
            (
                Some("text/plain"),
                format!(r#"{{"name":"r1","runnerId":"{ok_id}"}}"#),
                415,
                "UnsupportedMediaType",
            ),
            (
                None,
                format!(r#"{{"name":"r1","runnerId":"{ok_id}"}}"#),
                415,
                "UnsupportedMediaType",
            ),
        ];
        for (ct, body, status, reason) in cases {
            let err = parse_register(ct, body.as_bytes()).err();
            assert_eq!(
                err.as_ref().map(|e| (e.status.as_u16(), e.reason)),
                Some((status, reason)),
                "{ct:?} {body}"
            );
        }
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(None), Ok(None));
        assert_eq!(bearer(Some("Bearer abc")), Ok(Some("abc".into())));
        for bad in ["abc", "Basic abc", "Bearer ", "Bearer a b", "bearer abc"] {
            let err = bearer(Some(bad)).err();
            assert_eq!(err.map(|e| e.status.as_u16()), Some(401), "{bad:?}");
        }
        let long = format!("Bearer {}", "a".repeat(257));
        assert!(bearer(Some(&long)).is_err());
    }
}
