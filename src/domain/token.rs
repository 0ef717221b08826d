//! Runner tokens: minting (OS CSPRNG), hashing (SHA-256), constant-time verification
//! against the RunnerTokens in the watch cache, and expiry.
//!
//! The plaintext token lives only in the RunnerToken's Secret and with the runner;
//! `status.tokenHash` (hex SHA-256) is what the server compares against.

use base64::Engine;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::crd::RunnerToken;

/// Every token starts with this, so a leaked one is recognisable in a scan.
pub const TOKEN_PREFIX: &str = "baton_";

/// Random bytes in a token: 256 bits.
pub const TOKEN_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("read {TOKEN_BYTES} random bytes from the OS for a runner token: {0}")]
pub struct MintError(getrandom::Error);

/// A fresh token: `baton_` + 32 bytes from the OS CSPRNG, base64url without padding.
pub fn mint() -> Result<String, MintError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(MintError)?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// SHA-256 of the token, lowercase hex: what `status.tokenHash` holds.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` hashes to `expected_hex`, compared in constant time.
pub fn verify(token: &str, expected_hex: &str) -> bool {
    digest_matches(&Sha256::digest(token.as_bytes()), expected_hex)
}

fn digest_matches(actual: &[u8], expected_hex: &str) -> bool {
    let Ok(expected) = hex::decode(expected_hex) else {
        return false;
    };
    actual.ct_eq(&expected).into()
}

/// When a token minted at `created` with lifetime `ttl` stops being valid.
pub fn expires_at(created: Timestamp, ttl: std::time::Duration) -> Option<Timestamp> {
    let span = k8s_openapi::jiff::SignedDuration::try_from(ttl).ok()?;
    created.checked_add(span).ok()
}

/// Whether a token with this expiry is expired at `now` (expiry itself is expired).
pub fn is_expired(expires_at: Option<Timestamp>, now: Timestamp) -> bool {
    expires_at.is_none_or(|at| now >= at)
}

/// What checking a presented token against the RunnerTokens found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// No token was presented.
    Absent,
    /// A known, unexpired token that this runner name may use.
    Valid(ValidToken),
    /// A known token past its expiry.
    Expired { token: String },
    /// A known token restricted to another runner name.
    WrongRunner { token: String, runner_name: String },
    /// No RunnerToken (left) with this hash: garbage, or its RunnerToken was deleted.
    Unknown,
}

/// The RunnerToken a valid token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidToken {
    /// RunnerToken name.
    pub token: String,
    /// RunnerToken namespace: the runner's Runner lives here.
    pub namespace: String,
    /// Labels the runner gets.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Bound to this runner's name (`spec.runnerName`): the runner's own
    /// credential. A pool token (no `runnerName`) only registers.
    pub bound: bool,
}

/// Check `presented` for runner `runner_name` against `tokens` (the watch cache).
/// The presented token is hashed once and compared with every candidate's hash in
/// constant time; a RunnerToken being deleted no longer counts.
pub fn check<'a>(
    presented: Option<&str>,
    runner_name: &str,
    tokens: impl IntoIterator<Item = &'a RunnerToken>,
    now: Timestamp,
) -> TokenCheck {
    let Some(presented) = presented else {
        return TokenCheck::Absent;
    };
    let actual = Sha256::digest(presented.as_bytes());
    let mut found = None;
    for rt in tokens {
        let Some(status) = rt.status.as_ref() else {
            continue;
        };
        let Some(expected) = status.token_hash.as_deref() else {
            continue;
        };
        // No early exit: every candidate costs the same.
        if digest_matches(&actual, expected) && rt.metadata.deletion_timestamp.is_none() {
            found = Some(rt);
        }
    }
    let Some(rt) = found else {
        return TokenCheck::Unknown;
    };
    let name = rt.name_any();
    let expires = rt
        .status
        .as_ref()
        .and_then(|s| s.expires_at.as_ref())
        .map(|t| t.0);
    if is_expired(expires, now) {
        return TokenCheck::Expired { token: name };
    }
    if let Some(only) = rt.spec.runner_name.as_deref()
        && only != runner_name
    {
        return TokenCheck::WrongRunner {
            token: name,
            runner_name: only.to_owned(),
        };
    }
    TokenCheck::Valid(ValidToken {
        token: name,
        namespace: rt.namespace().unwrap_or_default(),
        labels: rt.spec.labels.clone(),
        bound: rt.spec.runner_name.is_some(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crd::{RunnerTokenSpec, RunnerTokenStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn token(name: &str, plaintext: &str, runner: Option<&str>, expires: i64) -> RunnerToken {
        let mut rt = RunnerToken::new(
            name,
            RunnerTokenSpec {
                runner_name: runner.map(str::to_owned),
                ..Default::default()
            },
        );
        rt.metadata.namespace = Some("ns".into());
        rt.status = Some(RunnerTokenStatus {
            token_hash: Some(hash(plaintext)),
            expires_at: Some(Time(at(expires))),
            ..Default::default()
        });
        rt
    }

    #[test]
    fn minted_tokens_are_long_distinct_and_prefixed() {
        let a = mint().unwrap();
        let b = mint().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        // 32 bytes base64url without padding = 43 characters.
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
    }

    #[test]
    fn hash_is_sha256_hex_and_verifies() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(verify("abc", &hash("abc")));
        assert!(!verify("abd", &hash("abc")));
        assert!(!verify("abc", "not hex"));
        assert!(!verify("abc", ""));
        assert!(!verify("abc", &hash("abc")[..32]));
    }

    #[test]
    fn expiry_is_inclusive() {
        let ttl = crate::crd::duration::parse("3s").unwrap();
        let exp = expires_at(at(100), ttl);
        assert_eq!(exp, Some(at(103)));
        assert!(!is_expired(exp, at(102)));
        assert!(is_expired(exp, at(103)));
        assert!(
            is_expired(None, at(0)),
            "no expiry recorded yet: not usable"
        );
    }

    #[test]
    fn check_table() {
        let tokens = [
            token("any", "t-any", None, 1000),
            token("only-r1", "t-r1", Some("r1"), 1000),
            token("old", "t-old", None, 10),
        ];
        let mut deleting = token("gone", "t-gone", None, 1000);
        deleting.metadata.deletion_timestamp = Some(Time(at(1)));
        let all: Vec<&RunnerToken> = tokens.iter().chain([&deleting]).collect();
        let cases: [(Option<&str>, &str, &str); 7] = [
            (None, "r1", "Absent"),
            (Some("t-any"), "r1", "Valid any pool"),
            (Some("t-r1"), "r1", "Valid only-r1 bound"),
            (Some("t-r1"), "r2", "WrongRunner"),
            (Some("t-old"), "r1", "Expired"),
            (Some("garbage"), "r1", "Unknown"),
            (Some("t-gone"), "r1", "Unknown"),
        ];
        for (presented, runner, want) in cases {
            let got = check(presented, runner, all.iter().copied(), at(100));
            let label = match &got {
                TokenCheck::Absent => "Absent".to_owned(),
                TokenCheck::Valid(v) => {
                    format!(
                        "Valid {} {}",
                        v.token,
                        if v.bound { "bound" } else { "pool" }
                    )
                }
                TokenCheck::Expired { .. } => "Expired".to_owned(),
                TokenCheck::WrongRunner { .. } => "WrongRunner".to_owned(),
                TokenCheck::Unknown => "Unknown".to_owned(),
            };
            assert_eq!(label, want, "{presented:?} for {runner}");
        }
    }
}
