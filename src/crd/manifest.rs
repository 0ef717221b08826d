//! Reading Baton manifests from YAML and checking them against the same rules the
//! CRD enforces at apply time (shape via serde, CEL rules via kube's evaluator), so
//! `baton run` refuses exactly what `kubectl apply` would.

use serde::Deserialize;

use super::{GROUP, Job, Runner, RunnerToken, VERSION};

/// One Baton object read from a manifest.
#[derive(Clone, Debug, PartialEq)]
pub enum Manifest {
    Job(Box<Job>),
    Runner(Box<Runner>),
    RunnerToken(Box<RunnerToken>),
}

/// Why a manifest document was refused. Every variant names the document (1-based).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid YAML: {0}")]
    Yaml(#[source] serde_saphyr::Error),
    #[error("document {doc}: {message}")]
    Shape { doc: usize, message: String },
    #[error("document {doc} ({kind} {name}): {}", problems.join("; "))]
    Invalid {
        doc: usize,
        kind: &'static str,
        name: String,
        problems: Vec<String>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    api_version: Option<String>,
    kind: Option<String>,
}

/// Parse every document of a YAML stream into Baton objects and validate each.
/// Empty documents (a trailing `---`) are skipped.
pub fn parse_all(text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(ManifestError::Yaml)?;
    docs.into_iter()
        .filter(|d| !d.is_null())
        .enumerate()
        .map(|(i, doc)| parse_value(i + 1, doc))
        .collect()
}

/// Parse and validate one document already read as JSON.
pub fn parse_value(doc: usize, value: serde_json::Value) -> Result<Manifest, ManifestError> {
    let shape = |message: String| ManifestError::Shape { doc, message };
    let meta = TypeMeta::deserialize(&value)
        .map_err(|e| shape(format!("not a Kubernetes object: {e}")))?;
    let expected = format!("{GROUP}/{VERSION}");
    match meta.api_version.as_deref() {
        Some(v) if v == expected => {}
        Some(v) => {
            return Err(shape(format!(
                "apiVersion is {v:?}; Baton reads {expected:?}"
            )));
        }
        None => {
            return Err(shape(format!(
                "apiVersion is missing; expected {expected:?}"
            )));
        }
    }
    let manifest = match meta.kind.as_deref() {
        Some("Job") => Manifest::Job(Box::new(typed(doc, value)?)),
        Some("Runner") => Manifest::Runner(Box::new(typed(doc, value)?)),
        Some("RunnerToken") => Manifest::RunnerToken(Box::new(typed(doc, value)?)),
        Some(other) => {
            return Err(shape(format!(
                "kind {other:?} is not a Baton kind (Job, Runner, RunnerToken)"
            )));
        }
        None => return Err(shape("kind is missing".to_owned())),
    };
    let problems = manifest.problems();
    if problems.is_empty() {
        Ok(manifest)
    } else {
        Err(ManifestError::Invalid {
            doc,
            kind: manifest.kind(),
            name: manifest.name(),
            problems,
        })
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    doc: usize,
    value: serde_json::Value,
) -> Result<T, ManifestError> {
    serde_json::from_value(value).map_err(|e| ManifestError::Shape {
        doc,
        message: e.to_string(),
    })
}

impl Manifest {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Job(_) => "Job",
            Self::Runner(_) => "Runner",
            Self::RunnerToken(_) => "RunnerToken",
        }
    }

    pub fn name(&self) -> String {
        let meta = match self {
            Self::Job(o) => &o.metadata,
            Self::Runner(o) => &o.metadata,
            Self::RunnerToken(o) => &o.metadata,
        };
        meta.name.clone().unwrap_or_else(|| "<unnamed>".to_owned())
    }

    /// Every CEL rule this object breaks, as `field: message` lines.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = match self {
            Self::Job(job) => unique_step_names(&job.spec.steps),
            _ => Vec::new(),
        };
        problems.extend(self.cel_problems());
        problems
    }

    fn cel_problems(&self) -> Vec<String> {
        let result = match self {
            Self::Job(o) => o.validate_cel(),
            Self::Runner(o) => o.validate_cel(),
            Self::RunnerToken(o) => o.validate_cel(),
        };
        match result {
            Ok(()) => Vec::new(),
            Err(errors) => errors
                .iter()
                .map(|e| {
                    if e.field_path.is_empty() {
                        e.message.clone()
                    } else {
                        format!("{}: {}", e.field_path, e.message)
                    }
                })
                .collect(),
        }
    }
}

/// What the API server's list map on `spec.steps` refuses, said in words: each
/// step name once (one pass, as the server does it).
pub fn unique_step_names(steps: &[crate::crd::Step]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut twice: Vec<&str> = steps
        .iter()
        .filter(|s| !seen.insert(s.name.as_str()))
        .map(|s| s.name.as_str())
        .collect();
    twice.dedup();
    twice
        .into_iter()
        .map(|name| format!("spec.steps: step names must be unique within a Job: {name:?} appears more than once"))
        .collect()
}
