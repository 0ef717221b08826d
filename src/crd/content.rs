//! What a Job starts from: the directory a user sent (`spec.content`) and which
//! of its paths go where under `/workspace` (`spec.inputs`).

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Most `inputs` a Job may list.
pub const MAX_INPUTS: usize = 64;

/// One path of the directory sent with the Job, and where it lands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    /// A file or directory, relative to the directory sent (`.` for all of it).
    #[schemars(schema_with = "relative_path")]
    pub from: String,
    /// Where it lands, relative to `/workspace`; unset: at `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "relative_path")]
    pub to: Option<String>,
}

/// The archive unpacked into `/workspace` before the first step, as stored by
/// the controller (`kubectl baton job run --upload DIR` sets it).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    /// `sha256:<hex>` of the archive.
    #[schemars(schema_with = "digest")]
    pub digest: String,
    /// The archive's size in bytes.
    #[schemars(range(min = 0))]
    pub size: i64,
}

fn relative_path(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 1024,
        "x-kubernetes-validations": [{
            "rule": "!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')",
            "message": "an input path is relative: it may not start with '/' or hold a '..' component"
        }]
    })
}

fn digest(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "^sha256:[0-9a-f]{64}$",
        "maxLength": 71
    })
}

/// `spec.inputs`: at most [`MAX_INPUTS`].
pub fn inputs_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": MAX_INPUTS,
        "items": generator.subschema_for::<Input>()
    })
}
