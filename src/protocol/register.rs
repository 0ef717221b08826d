//! Registration and the control channel's query: what a runner sends to join,
//! and the JSON body of every error answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The JSON body of every error answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

/// `POST /v1/register`.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegisterRequest {
    /// The runner's name (a DNS label): its Runner's name.
    pub name: String,
    /// The id the runner generated and keeps in its state directory.
    pub runner_id: String,
    /// Where its Runner should live (a token's own namespace wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels for a Runner created by this registration.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The runner's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `ed25519:<base64url>`: the runner's public key, bound to its Runner.
    #[serde(default)]
    pub public_key: String,
    /// A challenge from `GET /v1/challenge`, signed below.
    #[serde(default)]
    pub challenge: String,
    /// The runner's signature over the challenge (see `domain::identity`).
    #[serde(default)]
    pub signature: String,
}

/// `GET /v1/challenge`: something to sign, good once and for a minute.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeResponse {
    pub challenge: String,
    pub expires_in_seconds: u64,
}

/// Headers of `GET /v1/control` carrying the key proof (a GET has no body).
pub const CHALLENGE_HEADER: &str = "baton-challenge";
pub const SIGNATURE_HEADER: &str = "baton-signature";

/// Successful answer to a registration (200, or 202 while Pending).
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegisterResponse {
    /// Pending, Preadopted, Adopted.
    pub state: String,
    pub namespace: String,
    pub name: String,
    /// A token issued by adoption: store it and use it from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Poll again after this many seconds (Pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_seconds: Option<u64>,
    /// Pings come this often on the control channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `GET /v1/control` query.
#[derive(Deserialize, Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlQuery {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    /// Started with `--direct-only`: give it only Jobs that name it.
    #[serde(default)]
    pub direct_only: bool,
}
