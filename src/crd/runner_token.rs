//! `RunnerToken`: a credential for a runner, minted by the controller.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default lifetime of a token: 30 days.
pub const DEFAULT_TTL: &str = "720h";

/// Key of the token in the Secret the controller writes.
pub const SECRET_KEY: &str = "token";

/// A token request. The plaintext token lives only in the Secret named by
/// `status.secretName` (key `token`) and with the runner.
// printcolumn(...) repeats keys by design; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "baton.dev",
    version = "v1alpha1",
    kind = "RunnerToken",
    namespaced,
    cel,
    status = "RunnerTokenStatus",
    shortname = "brt",
    category = "baton",
    derive = "PartialEq",
    printcolumn(name = "Runner", type_ = "string", json_path = ".spec.runnerName"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    // A string: kubectl shows a future `date` as "<invalid>".
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.secretName",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RunnerTokenSpec {
    /// Only a runner of this name may use the token. Unset: any runner name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub runner_name: Option<String>,

    /// Labels a runner registering with this token gets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// How long the token is valid (default `720h`, 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::duration")]
    pub ttl: Option<String>,
}

/// Observed state of a RunnerToken.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunnerTokenStatus {
    /// The Secret holding the token (key `token`), owned by this RunnerToken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// SHA-256 of the token, hex: what the server compares against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
    /// When the token stops being valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// `Ready`, `Expired`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
