//! How a step becomes a local process: program and arguments, environment and
//! working directory. Pure functions of the step and the host, so they are tested
//! without spawning anything.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::EnvVar;

use crate::backend::{BackendError, env_token};
use crate::crd::Step;

/// Where a cluster step sees its workspace; mapped to the local workspace directory.
pub const CLUSTER_WORKSPACE: &str = "/workspace";

/// Prefix of the host variables that stand in for Kubernetes Secrets.
pub const SECRET_PREFIX: &str = "BATON_SECRET_";

/// The host variables a step inherits (with every `LC_*`): who and where the user
/// is, the search path, the locale, the time zone, the temporary directory and the
/// terminal. Nothing else of the host's environment reaches a step — not the
/// runner's `BATON_RUNNER_TOKEN`, not `BATON_CA_PEM`, not a cloud or registry
/// credential the runner process happens to hold: a step gets what its Job
/// declares, as a step pod does.
pub const INHERITED: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
];

/// Whether a step inherits the host variable `name` ([`INHERITED`] and `LC_*`).
pub fn inherited(name: &str) -> bool {
    INHERITED.contains(&name) || name.starts_with("LC_")
}

/// Everything needed to spawn a step's process.
#[derive(Debug, PartialEq)]
pub struct Launch {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// The complete environment (the process inherits nothing else).
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
}

/// The host variable a `secretKeyRef` reads locally: `BATON_SECRET_<NAME>_<KEY>`,
/// upper-cased, every character but letters and digits turned into `_`.
pub fn secret_variable(secret: &str, key: &str) -> String {
    format!("{SECRET_PREFIX}{}_{}", env_token(secret), env_token(key))
}

/// Plan the process of `step`.
///
/// Environment, later entries winning: the host's [`inherited`] variables only
/// (`BATON_SECRET_*` reach a step only through the `secretKeyRef`s it declares),
/// `injected` (from the executor), the step's own `env`, then `BATON_WORKSPACE`
/// and `BATON_OUTPUT`, which the step cannot override.
pub fn plan(
    step: &Step,
    injected: &[(String, String)],
    host_env: &BTreeMap<OsString, OsString>,
    workspace: &Path,
    output_file: &Path,
) -> Result<Launch, BackendError> {
    let mut env: Vec<(OsString, OsString)> = host_env
        .iter()
        .filter(|(k, _)| k.to_str().is_some_and(inherited))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // `$(NAME)` in a step's env and command refers to these, as on Kubernetes.
    let mut defined: BTreeMap<String, String> = injected.iter().cloned().collect();
    env.extend(injected.iter().map(|(k, v)| (k.into(), v.into())));
    for var in step.env.iter().flatten() {
        if let Some(value) = resolve_var(step, var, host_env, &defined)? {
            defined.insert(var.name.clone(), value.clone());
            env.push((var.name.clone().into(), value.into()));
        }
    }
    env.push(("BATON_WORKSPACE".into(), workspace.into()));
    env.push(("BATON_OUTPUT".into(), output_file.into()));

    let (program, args) = argv(step, &defined)?;
    let cwd = working_dir(step, workspace)?;
    Ok(Launch {
        program,
        args,
        env,
        cwd,
    })
}

/// The value of one `env` entry, or `None` for an optional secret that is absent.
fn resolve_var(
    step: &Step,
    var: &EnvVar,
    host_env: &BTreeMap<OsString, OsString>,
    defined: &BTreeMap<String, String>,
) -> Result<Option<String>, BackendError> {
    let env_err = |message: &str| BackendError::Env {
        step: step.name.clone(),
        var: var.name.clone(),
        message: message.to_owned(),
    };
    let Some(from) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), defined)));
    };
    if let Some(secret) = &from.secret_key_ref {
        let lookup = secret_variable(&secret.name, &secret.key);
        return match host_env.get(OsString::from(&lookup).as_os_str()) {
            Some(value) => value
                .to_str()
                .map(|v| Some(v.to_owned()))
                .ok_or_else(|| env_err(&format!("the variable {lookup} is not valid UTF-8"))),
            None if secret.optional == Some(true) => Ok(None),
            None => Err(BackendError::SecretNotFound {
                step: step.name.clone(),
                var: var.name.clone(),
                secret: secret.name.clone(),
                key: secret.key.clone(),
                lookup,
            }),
        };
    }
    let kind = if from.config_map_key_ref.is_some() {
        "configMapKeyRef"
    } else if from.field_ref.is_some() {
        "fieldRef"
    } else if from.resource_field_ref.is_some() {
        "resourceFieldRef"
    } else {
        "an empty valueFrom"
    };
    Err(env_err(&format!(
        "valueFrom.{kind} is not supported by local mode (only value and secretKeyRef are)"
    )))
}

/// Kubernetes' dependent-variable expansion: `$(NAME)` becomes the value of an
/// earlier variable, `$$` becomes `$`, anything else (an unknown name) is kept.
pub fn expand(input: &str, defined: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(value) = defined.get(&inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `script` runs as `sh -e -c SCRIPT STEP` (`$0` is the step name); `command` +
/// `args` run directly, with `$(NAME)` expanded as Kubernetes does.
fn argv(
    step: &Step,
    defined: &BTreeMap<String, String>,
) -> Result<(OsString, Vec<OsString>), BackendError> {
    if let Some(script) = &step.script {
        let args = ["-e", "-c", script.as_str(), step.name.as_str()];
        return Ok(("sh".into(), args.iter().map(OsString::from).collect()));
    }
    let mut words = step
        .command
        .iter()
        .flatten()
        .chain(step.args.iter().flatten())
        .map(|w| OsString::from(expand(w, defined)));
    let program = words.next().ok_or_else(|| BackendError::InvalidStep {
        step: step.name.clone(),
        message: "has neither command nor script: on a cluster it runs its image's own \
                  entrypoint, but local steps are processes, not images; give it a command"
            .into(),
    })?;
    Ok((program, words.collect()))
}

/// The step's directory: the workspace by default; `/workspace/...` and relative
/// paths map into the local workspace (created if missing, as a container runtime
/// does); any other absolute path must exist on this machine.
fn working_dir(step: &Step, workspace: &Path) -> Result<PathBuf, BackendError> {
    let Some(dir) = &step.working_dir else {
        return Ok(workspace.to_path_buf());
    };
    let err = |message: String| BackendError::WorkingDir {
        step: step.name.clone(),
        dir: dir.clone(),
        message,
    };
    let inside = match Path::new(dir).strip_prefix(CLUSTER_WORKSPACE) {
        Ok(rest) => Some(rest),
        Err(_) if Path::new(dir).is_relative() => Some(Path::new(dir)),
        Err(_) => None,
    };
    match inside {
        Some(rest) => {
            if rest
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(err("must not leave the workspace with '..'".into()));
            }
            let path = workspace.join(rest);
            std::fs::create_dir_all(&path)
                .map_err(|e| err(format!("create {}: {e}", path.display())))?;
            Ok(path)
        }
        None if Path::new(dir).is_dir() => Ok(PathBuf::from(dir)),
        None => Err(err(format!(
            "does not exist on this machine (local mode maps only {CLUSTER_WORKSPACE} and relative paths)"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMapKeySelector, EnvVarSource, SecretKeySelector};

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn secret_var(name: &str, secret: &str, key: &str, optional: Option<bool>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.into(),
                    key: key.into(),
                    optional,
                }),
                ..Default::default()
            }),
        }
    }

    fn step(env: Vec<EnvVar>) -> Step {
        Step {
            name: "build".into(),
            image: "busybox:1.36".into(),
            command: Some(vec!["echo".into(), "$(GREETING)".into()]),
            args: Some(vec!["$$(GREETING)".into()]),
            env: Some(env),
            ..Default::default()
        }
    }

    fn host(vars: &[(&str, &str)]) -> BTreeMap<OsString, OsString> {
        vars.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn env_of(launch: &Launch) -> BTreeMap<String, String> {
        launch
            .env
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn names_the_secret_variable() {
        assert_eq!(
            secret_variable("db-creds", "password"),
            "BATON_SECRET_DB_CREDS_PASSWORD"
        );
        assert_eq!(
            secret_variable("a.b", "tls.crt"),
            "BATON_SECRET_A_B_TLS_CRT"
        );
    }

    #[test]
    fn expands_like_kubernetes() {
        let defined: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        let cases = [
            ("$(A)", "1"),
            ("x$(A)y", "x1y"),
            ("$$(A)", "$(A)"),
            ("$(B)", "$(B)"),
            ("$A", "$A"),
            ("$(A", "$(A"),
            ("cost: $5", "cost: $5"),
            ("$", "$"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &defined), want, "{input}");
        }
    }

    #[test]
    fn builds_env_in_order_and_hides_secrets() {
        let ws = Path::new("/tmp/ws");
        let injected = vec![("BATON_OUTPUT_VERSION".to_string(), "1.2".to_string())];
        let s = step(vec![
            var("GREETING", "hi $(BATON_OUTPUT_VERSION)"),
            secret_var("TOKEN", "api", "token", None),
            secret_var("MAYBE", "api", "other", Some(true)),
            var("PATH", "/custom"),
        ]);
        let host = host(&[
            ("PATH", "/usr/bin"),
            ("BATON_SECRET_API_TOKEN", "s3cr3t"),
            ("PWD", "/elsewhere"),
        ]);
        let launch = plan(&s, &injected, &host, ws, Path::new("/tmp/out")).unwrap();
        let env = env_of(&launch);
        assert_eq!(env["GREETING"], "hi 1.2");
        assert_eq!(env["TOKEN"], "s3cr3t");
        assert_eq!(env["PATH"], "/custom");
        assert_eq!(env["BATON_WORKSPACE"], "/tmp/ws");
        assert_eq!(env["BATON_OUTPUT"], "/tmp/out");
        assert!(!env.contains_key("MAYBE"));
        assert!(!env.contains_key("PWD"));
        assert!(
            !env.contains_key("BATON_SECRET_API_TOKEN"),
            "secrets only reach steps that reference them"
        );
        assert_eq!(launch.program, "echo");
        assert_eq!(
            launch.args,
            vec![OsString::from("hi 1.2"), OsString::from("$(GREETING)")]
        );
        assert_eq!(launch.cwd, ws);
    }

    #[test]
    fn steps_inherit_the_allowlist_and_no_credential() {
        let host = host(&[
            ("PATH", "/usr/bin"),
            ("HOME", "/home/ci"),
            ("LC_ALL", "C.UTF-8"),
            ("BATON_RUNNER_TOKEN", "brt_secret"),
            ("BATON_TOKEN", "t"),
            ("BATON_CA_PEM", "-----BEGIN CERTIFICATE-----"),
            ("BATON_SERVER", "https://baton:8080"),
            ("AWS_SECRET_ACCESS_KEY", "k"),
            ("KUBECONFIG", "/home/ci/.kube/config"),
            ("BATON_SECRET_API_TOKEN", "s3cr3t"),
        ]);
        let s = Step {
            name: "s".into(),
            script: Some("env".into()),
            ..Default::default()
        };
        let launch = plan(&s, &[], &host, Path::new("/w"), Path::new("/o")).unwrap();
        let names: Vec<String> = env_of(&launch).into_keys().collect();
        assert_eq!(
            names,
            ["BATON_OUTPUT", "BATON_WORKSPACE", "HOME", "LC_ALL", "PATH"],
            "only the allowlist and what Baton sets"
        );
    }

    #[test]
    fn missing_secret_names_the_variable() {
        let s = step(vec![secret_var("TOKEN", "api-keys", "token", None)]);
        let err = plan(&s, &[], &host(&[]), Path::new("/tmp"), Path::new("/tmp/o")).unwrap_err();
        assert_eq!(err.reason(), "SecretNotFound");
        assert!(
            err.to_string().contains("BATON_SECRET_API_KEYS_TOKEN"),
            "{err}"
        );
    }

    #[test]
    fn other_value_from_kinds_fail_clearly() {
        let mut v = var("CFG", "");
        v.value = None;
        v.value_from = Some(EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: "c".into(),
                key: "k".into(),
                optional: None,
            }),
            ..Default::default()
        });
        let err = plan(
            &step(vec![v]),
            &[],
            &host(&[]),
            Path::new("/tmp"),
            Path::new("/tmp/o"),
        )
        .unwrap_err();
        assert_eq!(err.reason(), "InvalidEnv");
        assert!(err.to_string().contains("configMapKeyRef"), "{err}");
    }

    #[test]
    fn script_runs_with_sh_e() {
        let s = Step {
            name: "s".into(),
            script: Some("echo hi".into()),
            ..Default::default()
        };
        let launch = plan(&s, &[], &host(&[]), Path::new("/tmp"), Path::new("/tmp/o")).unwrap();
        assert_eq!(launch.program, "sh");
        assert_eq!(launch.args, vec!["-e", "-c", "echo hi", "s"]);
    }

    #[test]
    fn maps_working_dirs_into_the_workspace() {
        let ws = std::env::temp_dir().join(format!("baton-launch-test-{}", std::process::id()));
        let with_dir = |dir: &str| Step {
            name: "s".into(),
            script: Some("true".into()),
            working_dir: Some(dir.into()),
            ..Default::default()
        };
        let cwd = |dir: &str| working_dir(&with_dir(dir), &ws);
        assert_eq!(cwd("/workspace").unwrap(), ws);
        assert_eq!(cwd("/workspace/src/app").unwrap(), ws.join("src/app"));
        assert_eq!(cwd("build").unwrap(), ws.join("build"));
        assert_eq!(cwd("/").unwrap(), PathBuf::from("/"));
        assert_eq!(
            cwd("/nonexistent-baton-dir").unwrap_err().reason(),
            "InvalidWorkingDir"
        );
        assert_eq!(cwd("../escape").unwrap_err().reason(), "InvalidWorkingDir");
        let _ = std::fs::remove_dir_all(&ws);
    }
}
