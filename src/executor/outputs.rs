//! `$BATON_OUTPUT`: what a step writes there becomes Job outputs and the
//! environment of the steps downstream.
//!
//! Format, one entry per line: `key=value` (the value is the rest of the line, kept
//! as is), or GitHub-style for multi-line values:
//! ```text
//! notes<<EOF
//! line one
//! line two
//! EOF
//! ```
//! A key starts with a letter or `_` and holds letters, digits, `_`, `-` and `.`.
//! Blank lines are ignored; a later line for the same key wins. Every other line is
//! a problem, reported with its line number — never dropped silently.
//!
//! Passing convention: a step sees the outputs of every step upstream of it (its
//! transitive `dependsOn`) as `BATON_OUTPUT_<KEY>` (see [`env_name`]); when two of
//! them set one key, the later in DAG order wins. Only upstream steps count, so what
//! a step sees never depends on timing. The Job's outputs are the union over all
//! steps, later in DAG order winning.

use std::collections::BTreeMap;

/// Default cap on the outputs of one Job, all steps together (Kubernetes status
/// objects stay far below etcd's limit with this).
pub const DEFAULT_LIMIT: usize = 1024 * 1024;

/// What one step's outputs file held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Entries in file order (a later duplicate overrides an earlier one).
    pub values: Vec<(String, String)>,
    pub problems: Vec<Problem>,
}

/// A line that is not an output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct Problem {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// Parse the contents of a `$BATON_OUTPUT` file.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            out.problems.push(Problem {
                line,
                message: "not valid UTF-8; the file is ignored".into(),
            });
            return out;
        }
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((number, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let problem = |message: String| Problem {
            line: number,
            message,
        };
        if let Some((key, delimiter)) = line.split_once("<<")
            && !key.contains('=')
        {
            if let Err(message) = check_key(key) {
                out.problems.push(problem(message));
            } else if delimiter.is_empty() {
                out.problems
                    .push(problem(format!("{key}<<: a delimiter must follow <<")));
            } else {
                let mut value: Vec<&str> = Vec::new();
                let mut closed = false;
                for (_, l) in lines.by_ref() {
                    if l == delimiter {
                        closed = true;
                        break;
                    }
                    value.push(l);
                }
                if closed {
                    out.values.push((key.to_owned(), value.join("\n")));
                } else {
                    out.problems.push(problem(format!(
                        "{key}<<{delimiter}: no closing {delimiter:?} line"
                    )));
                }
            }
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) => match check_key(key) {
                Ok(()) => out.values.push((key.to_owned(), value.to_owned())),
                Err(message) => out.problems.push(problem(message)),
            },
            None => out
                .problems
                .push(problem(format!("expected key=value, got {:?}", clip(line)))),
        }
    }
    out
}

fn check_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        Ok(())
    } else {
        Err(format!(
            "invalid key {:?}: it must start with a letter or '_' and hold only letters, digits, '_', '-', '.'",
            clip(key)
        ))
    }
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The variable a downstream step reads an output from: `BATON_OUTPUT_` + the key
/// upper-cased, with `-` and `.` turned into `_` (`image-tag` → `BATON_OUTPUT_IMAGE_TAG`).
pub fn env_name(key: &str) -> String {
    format!("BATON_OUTPUT_{}", crate::backend::env_token(key))
}

/// Merge per-step outputs, given in DAG order, later winning.
pub fn merge<'a>(
    in_order: impl IntoIterator<Item = &'a [(String, String)]>,
) -> BTreeMap<String, String> {
    let mut merged = BTreeMap::new();
    for values in in_order {
        for (k, v) in values {
            merged.insert(k.clone(), v.clone());
        }
    }
    merged
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn values(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_lines_and_heredocs() {
        let parsed = parse(b"a=1\n\nurl=http://x/?q=1&r=2\nempty=\nnotes<<END\nline 1\n\nline=3\nEND\nwin.dows=crlf\r\n");
        assert_eq!(
            parsed.values,
            values(&[
                ("a", "1"),
                ("url", "http://x/?q=1&r=2"),
                ("empty", ""),
                ("notes", "line 1\n\nline=3"),
                ("win.dows", "crlf")
            ])
        );
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    }

    #[test]
    fn reports_malformed_lines_with_numbers() {
        let parsed = parse(b"ok=1\njust text\n=novalue\n9lives=x\nmulti<<EOF\nnever closed\n");
        assert_eq!(parsed.values, values(&[("ok", "1")]));
        let lines: Vec<usize> = parsed.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
        assert!(
            parsed.problems[0]
                .to_string()
                .starts_with("line 2: expected key=value"),
            "{}",
            parsed.problems[0]
        );
        assert!(
            parsed.problems[3].message.contains("no closing \"EOF\""),
            "{}",
            parsed.problems[3]
        );
    }

    #[test]
    fn refuses_invalid_utf8() {
        let parsed = parse(b"a=1\nb=\xff\n");
        assert!(parsed.values.is_empty());
        assert_eq!(parsed.problems[0].line, 2);
    }

    #[test]
    fn no_small_cap() {
        let big = format!("blob={}\n", "x".repeat(512 * 1024));
        let parsed = parse(big.as_bytes());
        assert_eq!(parsed.values[0].1.len(), 512 * 1024);
    }

    #[test]
    fn env_names_and_merge() {
        assert_eq!(env_name("image-tag"), "BATON_OUTPUT_IMAGE_TAG");
        assert_eq!(env_name("v1.2"), "BATON_OUTPUT_V1_2");
        let first = values(&[("k", "1"), ("a", "x")]);
        let second = values(&[("k", "2")]);
        let merged = merge([first.as_slice(), second.as_slice()]);
        assert_eq!(merged["k"], "2");
        assert_eq!(merged["a"], "x");
    }
}
