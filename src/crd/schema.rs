//! Schema pieces shared by several fields: durations and DNS-label names carry a
//! CEL rule with a message a person understands, instead of a bare regex.

use schemars::{Schema, SchemaGenerator, json_schema};

use super::duration::{DURATION_MESSAGE, DURATION_PATTERN};

fn duration_rule() -> String {
    // CEL string literal: the pattern inside single quotes, backslashes doubled.
    format!("self.matches('{}')", DURATION_PATTERN.replace('\\', "\\\\"))
}

/// An optional Go-style duration string (`30s`, `1h30m`).
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 32,
        "x-kubernetes-validations": [{ "rule": duration_rule(), "message": DURATION_MESSAGE }]
    })
}

/// A step name: a DNS label, since it becomes part of a pod name and a label value.
pub fn step_name(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 63,
        "x-kubernetes-validations": [{
            "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
            "message": "a step name must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
        }]
    })
}

/// A list of step names (`dependsOn`).
pub fn step_names(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 200,
        "items": step_name(generator),
        "x-kubernetes-list-type": "set"
    })
}

/// How many `imagePullSecrets` a Job may name (a pod takes any number; a handful
/// is what a Job pulling from a few registries needs).
pub const MAX_PULL_SECRETS: usize = 16;

/// `imagePullSecrets`: Secret references (`{name}`), each a DNS subdomain (what a
/// Secret's name must be), each name once, at most [`MAX_PULL_SECRETS`]. Count and
/// uniqueness are CEL rules too (besides `maxItems` and the list-map key, which the
/// API server checks and the cost estimate needs), so `baton run` refuses the same.
pub fn pull_secrets(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": MAX_PULL_SECRETS,
        "items": {
            "type": "object",
            "description": "A Secret in the Job's namespace, by name.",
            "required": ["name"],
            "properties": {
                "name": {
                    "type": "string",
                    "description": "The Secret's name.",
                    "minLength": 1,
                    "maxLength": 253,
                    "x-kubernetes-validations": [{
                        "rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
                        "message": "an image pull secret's name must be a Secret name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"
                    }]
                }
            }
        },
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "x-kubernetes-validations": [
            {
                "rule": format!("size(self) <= {MAX_PULL_SECRETS}"),
                "message": format!("a Job may name at most {MAX_PULL_SECRETS} imagePullSecrets")
            },
            {
                "rule": "self.all(s, self.exists_one(t, t.name == s.name))",
                "message": "each image pull secret may be named once"
            }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_rule_escapes_the_pattern_for_cel() {
        let rule = duration_rule();
        assert!(
            rule.starts_with("self.matches('^([0-9]+(\\\\.[0-9]+)?"),
            "{rule}"
        );
    }
}
