//! Reading the Jobs of a `baton run` file: YAML syntax (with file, line and
//! column), kinds, the CRD's own rules (`crd::manifest`, the same CEL the API server
//! runs), fields the CRD does not know, and the DAG checks. Every problem is
//! collected, so one run shows them all.

use std::path::Path;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::crd::manifest::{self, Manifest, ManifestError};
use crate::crd::{Job, JobSpec, When};
use crate::executor::dag::{Dag, DagError};

/// A Job to run, with where it came from.
#[derive(Clone, Debug)]
pub struct LocalJob {
    pub name: String,
    pub spec: JobSpec,
}

/// What a file held: Jobs to run and notes worth saying, or every problem.
#[derive(Debug, Default)]
pub struct Loaded {
    pub jobs: Vec<LocalJob>,
    pub notes: Vec<String>,
}

/// Where each document's `kind` is, to point problems at a line.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DocHead {
    kind: Option<Spanned<String>>,
}

/// Read and check every document of `text` (the contents of `path`).
pub fn load(path: &Path, text: &str) -> Result<Loaded, Vec<String>> {
    let file = path.display().to_string();
    let located =
        |e: serde_saphyr::Error| format!("{file}: {}", e.to_string().replace("<input>", &file));
    let heads: Vec<DocHead> = serde_saphyr::from_multiple(text).map_err(|e| vec![located(e)])?;
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| vec![located(e)])?;
    if docs.is_empty() {
        return Err(vec![format!("{file}: holds no YAML document")]);
    }
    let line_of = |i: usize| {
        heads
            .get(i)
            .and_then(|h| h.kind.as_ref())
            .map(|k| k.referenced.line())
    };
    let at = |i: usize| match line_of(i) {
        Some(line) => format!("{file}:{line}"),
        None => file.clone(),
    };
    let all_jobs = docs
        .iter()
        .all(|d| d.get("kind").and_then(|k| k.as_str()) == Some("Job"));

    let mut problems = Vec::new();
    let mut loaded = Loaded::default();
    for (i, value) in docs.into_iter().enumerate() {
        let doc = i + 1;
        let typed: Option<Job> = serde_json::from_value(value.clone()).ok();
        let mut doc_problems = Vec::new();
        let cel_clean = match manifest::parse_value(doc, value.clone()) {
            Ok(Manifest::Job(_)) => true,
            Ok(other) => {
                doc_problems.push(format!(
                    "{} {}: baton run runs Jobs only",
                    other.kind(),
                    other.name()
                ));
                false
            }
            Err(ManifestError::Invalid {
                kind,
                name,
                problems,
                ..
            }) => {
                doc_problems.extend(problems.into_iter().map(|p| format!("{kind} {name}: {p}")));
                false
            }
            Err(ManifestError::Shape { message, .. }) => {
                // serde_json's message has no position; YAML's own pass over the
                // file has one, and finds the first such problem when all are Jobs.
                match serde_saphyr::from_multiple::<Job>(text) {
                    Err(e) if all_jobs && typed.is_none() => problems.push(located(e)),
                    _ => doc_problems.push(format!("document {doc}: {message}")),
                }
                false
            }
            Err(e @ ManifestError::Yaml(_)) => {
                doc_problems.push(e.to_string());
                false
            }
        };
        let Some(job) = typed else {
            problems.extend(doc_problems.into_iter().map(|p| format!("{}: {p}", at(i))));
            continue;
        };
        let name = local_name(&job.metadata);
        let label = format!("Job {}", if name.is_empty() { "<unnamed>" } else { &name });
        if name.is_empty() {
            doc_problems.push(format!(
                "{label}: metadata.name or metadata.generateName is required"
            ));
        }
        let mut unknown = Vec::new();
        if let Ok(round_trip) = serde_json::to_value(&job) {
            unknown_fields(&value, &round_trip, "", &mut unknown);
        }
        doc_problems.extend(
            unknown
                .into_iter()
                .map(|f| format!("{label}: {f}: unknown field")),
        );
        if let Err(errors) = Dag::from_steps(&job.spec.steps) {
            // The CEL rules already name dangling, duplicate and self dependencies.
            doc_problems.extend(
                errors
                    .into_iter()
                    .filter(|e| cel_clean || matches!(e, DagError::Cycle(_)))
                    .map(|e| format!("{label}: spec.steps: {e}")),
            );
        }
        doc_problems.extend(
            crate::archive::glob_problems(&job.spec.steps)
                .into_iter()
                .map(|p| format!("{label}: {p}")),
        );
        if doc_problems.is_empty() {
            loaded.notes.extend(notes(&name, &job.spec));
            loaded.jobs.push(LocalJob {
                name,
                spec: job.spec,
            });
        }
        problems.extend(doc_problems.into_iter().map(|p| format!("{}: {p}", at(i))));
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(problems)
    }
}

/// The Job's name: `metadata.name`, else `metadata.generateName` plus five random
/// characters, as the API server would make it (so each run has its own name);
/// empty when it has neither.
fn local_name(meta: &ObjectMeta) -> String {
    let set = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    match (set(&meta.name), set(&meta.generate_name)) {
        (Some(name), _) => name,
        (None, Some(prefix)) => format!("{prefix}{}", random_suffix()),
        (None, None) => String::new(),
    }
}

/// Five characters from the API server's alphabet for generated names (no
/// vowels, no look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    // No OS randomness is no reason to refuse a run: the clock will do.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes[..4].copy_from_slice(&nanos.to_le_bytes());
    }
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// Paths of fields in `original` that do not survive a round trip through the
/// typed Job: unknown fields, which the API server refuses under strict field
/// validation (kubectl's default). Null and empty values are not compared.
fn unknown_fields(
    original: &serde_json::Value,
    typed: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (original, typed) {
        (Value::Object(orig), Value::Object(typed)) => {
            for (key, value) in orig {
                let empty = match value {
                    Value::Null => true,
                    Value::Array(a) => a.is_empty(),
                    Value::Object(o) => o.is_empty(),
                    _ => false,
                };
                let here = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match typed.get(key) {
                    Some(t) => unknown_fields(value, t, &here, out),
                    None if empty => {}
                    None => out.push(here),
                }
            }
        }
        (Value::Array(orig), Value::Array(typed)) => {
            for (i, (o, t)) in orig.iter().zip(typed).enumerate() {
                unknown_fields(o, t, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Things that are valid but probably not what was meant.
fn notes(job: &str, spec: &JobSpec) -> Vec<String> {
    let mut notes: Vec<String> = spec.steps
        .iter()
        .filter(|s| s.when == Some(When::OnFailure) && s.depends_on.as_ref().is_none_or(Vec::is_empty))
        .map(|s| {
            format!(
                "note: Job {job}: step {} runs onFailure but depends on nothing, so it never runs (onFailure looks at the steps it depends on)",
                s.name
            )
        })
        .collect();
    let shaped: Vec<&str> = spec
        .steps
        .iter()
        .filter(|s| s.pod_template.is_some() || s.volumes.is_some())
        .map(|s| s.name.as_str())
        .collect();
    if spec.pod_template.is_some() || !shaped.is_empty() {
        let steps = if shaped.is_empty() {
            String::new()
        } else {
            format!(" (steps {})", shaped.join(", "))
        };
        notes.push(format!(
            "note: Job {job}: podTemplate and volumes shape step pods; local mode ignores them{steps}"
        ));
    }
    notes
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Loaded, Vec<String>> {
        load(Path::new("job.yaml"), text)
    }

    const HEADER: &str = "apiVersion: baton.dev/v1alpha1\nkind: Job\n";

    use proptest::prelude::*;

    proptest::proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any text, and manifests with hostile values in the right places, are
        /// loaded or refused with messages: never a panic.
        #[test]
        fn any_manifest_is_answered(
            text in prop_oneof![
                "\\PC{0,300}".prop_map(String::from),
                "[a-z:{}\\[\\]\n \\-,'\"&*!|>]{0,300}",
                ("\\PC{0,40}", "\\PC{0,40}", "\\PC{0,40}").prop_map(|(name, step, cmd)| format!(
                    "{HEADER}metadata: {{name: {name:?}}}\nspec:\n  steps: [{{name: {step:?}, image: busybox, command: [{cmd:?}]}}]\n"
                )),
            ],
        ) {
            if let Err(problems) = load_str(&text) {
                proptest::prop_assert!(!problems.is_empty());
            }
        }
    }

    #[test]
    fn loads_several_jobs() {
        let text = format!(
            "{HEADER}metadata: {{name: one}}\nspec:\n  steps: [{{name: a, image: busybox:1.36, command: [\"true\"]}}]\n---\n{HEADER}metadata: {{name: two}}\nspec:\n  steps: [{{name: b, image: busybox:1.36, script: echo}}]\n"
        );
        let loaded = load_str(&text).unwrap();
        let names: Vec<&str> = loaded.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let err = load_str("apiVersion: baton.dev/v1alpha1\nkind: Job\nspec: [\n").unwrap_err();
        assert!(
            err[0].starts_with("job.yaml: ") && err[0].contains("job.yaml:"),
            "{err:?}"
        );
        assert!(err[0].contains("line "), "{err:?}");
    }

    #[test]
    fn unknown_kind_points_at_its_line() {
        let err = load_str(
            "# a comment\napiVersion: baton.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: x}\n",
        )
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].starts_with("job.yaml:3: "), "{err:?}");
        assert!(
            err[0].contains("kind \"Pipeline\" is not a Baton kind"),
            "{err:?}"
        );
    }

    #[test]
    fn lists_every_problem() {
        let text = format!(
            "{HEADER}metadata: {{name: bad}}\nspec:\n  steps:\n    - {{name: a, image: busybox:1.36, command: [\"true\"], dependsOn: [c], colour: red}}\n    - {{name: c, image: busybox:1.36, script: x, command: [ls], dependsOn: [a]}}\n"
        );
        let err = load_str(&text).unwrap_err();
        let all = err.join("\n");
        assert!(all.contains("either command/args or script"), "{all}");
        assert!(all.contains("spec.steps[0].colour: unknown field"), "{all}");
        assert!(all.contains("dependency cycle: a -> c -> a"), "{all}");
        assert!(err.iter().all(|e| e.starts_with("job.yaml:2: ")), "{all}");
    }

    #[test]
    fn type_errors_carry_a_position() {
        let err = load_str(&format!(
            "{HEADER}metadata: {{name: x}}\nspec:\n  steps: 5\n"
        ))
        .unwrap_err();
        assert!(err[0].contains("line 5"), "{err:?}");
    }

    #[test]
    fn other_baton_kinds_are_refused() {
        let err = load_str(
            "apiVersion: baton.dev/v1alpha1\nkind: Runner\nmetadata: {name: r}\nspec: {}\n",
        )
        .unwrap_err();
        assert!(err[0].contains("runs Jobs only"), "{err:?}");
    }

    #[test]
    fn generate_name_gives_each_run_a_new_name() {
        let job = |meta: &str| {
            format!(
                "{HEADER}metadata: {meta}\nspec:\n  steps: [{{name: a, image: busybox:1.36, script: x}}]\n"
            )
        };
        let text = job("{generateName: build-}");
        let (one, two) = (load_str(&text).unwrap(), load_str(&text).unwrap());
        let name = &one.jobs[0].name;
        assert!(name.starts_with("build-"), "{name}");
        assert_eq!(name.len(), "build-".len() + 5, "{name}");
        assert_ne!(name, &two.jobs[0].name, "a new name each run");
        assert_eq!(
            load_str(&job("{name: fixed, generateName: build-}"))
                .unwrap()
                .jobs[0]
                .name,
            "fixed"
        );
        let err = load_str(&job("{}")).unwrap_err();
        assert!(
            err[0].contains("metadata.name or metadata.generateName is required"),
            "{err:?}"
        );
    }

    #[test]
    fn notes_that_pod_settings_are_ignored_locally() {
        let text = format!(
            "{HEADER}metadata: {{name: shaped}}\nspec:\n  steps:\n  - {{name: a, image: i, script: x, volumes: [{{name: t, mountPath: /t, emptyDir: {{medium: Memory}}}}]}}\n  - {{name: b, image: i, script: x}}\n"
        );
        let loaded = load_str(&text).unwrap();
        assert_eq!(
            loaded.notes,
            [
                "note: Job shaped: podTemplate and volumes shape step pods; local mode ignores them (steps a)"
            ]
        );
    }

    #[test]
    fn notes_on_failure_without_dependencies() {
        let text = format!(
            "{HEADER}metadata: {{name: note}}\nspec:\n  steps: [{{name: a, image: busybox:1.36, script: x, when: onFailure}}]\n"
        );
        let loaded = load_str(&text).unwrap();
        assert_eq!(loaded.notes.len(), 1);
    }
}
