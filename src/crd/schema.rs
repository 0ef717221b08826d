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
