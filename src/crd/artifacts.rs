//! What a step collects from its workspace (`collect`, `artifacts`) and what its
//! status says of the archive it made.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Most `artifacts` globs a step may list.
pub const MAX_GLOBS: usize = 32;

/// What a step collects once it ended.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Collect {
    /// Every path the step added, modified or deleted under the workspace.
    Changes,
}

/// The archive of what a step changed: content address, size and counts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StepArtifacts {
    /// `sha256:<hex>` of the archive (a zstd-compressed tar).
    pub digest: String,
    /// The archive's size in bytes.
    pub size: i64,
    /// Paths the step added.
    pub added: i32,
    /// Paths whose content, executable bit or link target the step changed.
    pub modified: i32,
    /// Paths the step deleted.
    pub deleted: i32,
}

/// `artifacts`: globs relative to the workspace (`dist/**`, `*.log`), never
/// absolute and never climbing out with `..`.
pub fn globs_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": MAX_GLOBS,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 256,
            "x-kubernetes-validations": [{
                "rule": "!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')",
                "message": "an artifacts glob is relative to the workspace: it may not start with '/' or hold a '..' component"
            }]
        }
    })
}
