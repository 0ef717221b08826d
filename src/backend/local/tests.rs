//! The local backend's own tests: a step's environment, steps given up with
//! their backend, and secrets masked in logs and outputs.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::crd::Step;

#[tokio::test]
async fn a_step_sees_no_credential_of_its_runner() {
    let root = std::env::temp_dir().join(format!("baton-local-env-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut host: BTreeMap<OsString, OsString> =
        std::env::vars_os().filter(|(k, _)| k == "PATH").collect();
    for (k, v) in [
        ("BATON_RUNNER_TOKEN", "brt_runner_secret"),
        ("BATON_CA_PEM", "-----BEGIN CERTIFICATE-----"),
        ("HOME", "/home/ci"),
    ] {
        host.insert(k.into(), v.into());
    }
    let backend = LocalBackend::with_host_env(&root, host);
    let workflow = Workflow::new("wf");
    backend.setup_workflow(&workflow).await.unwrap();
    let step = Step {
        name: "env".into(),
        command: Some(vec!["env".into()]),
        ..Default::default()
    };
    let request = StepRequest::new(step, Vec::new());
    backend.start_step(&workflow, &request).await.unwrap();
    assert_eq!(backend.wait_step(&workflow, "env").await.unwrap().code, 0);
    let chunks: Vec<_> = backend
        .tail_step(&workflow, "env", 0)
        .await
        .unwrap()
        .collect()
        .await;
    let log: String = chunks
        .into_iter()
        .map(|c| String::from_utf8(c.unwrap().bytes).unwrap())
        .collect();
    assert!(
        log.contains("HOME=/home/ci\n"),
        "the allowlist is passed:\n{log}"
    );
    assert!(
        !log.contains("BATON_RUNNER_TOKEN"),
        "no runner token:\n{log}"
    );
    assert!(
        !log.contains("brt_runner_secret"),
        "no runner token:\n{log}"
    );
    assert!(
        !log.contains("BATON_CA_PEM"),
        "nothing else of Baton's:\n{log}"
    );
    backend.destroy_workflow(&workflow).await.unwrap();
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn a_step_given_up_with_its_backend_is_lost_not_failed() {
    let root = std::env::temp_dir().join(format!("baton-local-drop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let host: BTreeMap<OsString, OsString> =
        std::env::vars_os().filter(|(k, _)| k == "PATH").collect();
    let workflow = Workflow::new("wf");
    let step = Step {
        name: "s".into(),
        script: Some("sleep 30".into()),
        ..Default::default()
    };
    let first = LocalBackend::with_host_env(&root, host.clone()).resumable();
    first.setup_workflow(&workflow).await.unwrap();
    let request = StepRequest::new(step, Vec::new());
    first.start_step(&workflow, &request).await.unwrap();
    let mut exit = first.get(&workflow, "s").unwrap().handle.exit.clone();
    // A runner shutting down: the step is killed, and its end is not an exit.
    drop(first);
    assert_eq!(process::wait(&mut exit).await, Ok(137));

    let second = LocalBackend::with_host_env(&root, host).resumable();
    let found = second.discover(&workflow).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].state, StepState::Running, "waiting tells");
    let error = second.wait_step(&workflow, "s").await.unwrap_err();
    assert_eq!(error.reason(), "RunnerLost");
    second.destroy_workflow(&workflow).await.unwrap();
    assert!(!root.join("wf").exists());
    let _ = std::fs::remove_dir_all(&root);
}

fn secret_env(name: &str, secret: &str, key: &str) -> k8s_openapi::api::core::v1::EnvVar {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn whole_log(backend: &LocalBackend, workflow: &Workflow, from: u64) -> (u64, Vec<u8>) {
    let chunks: Vec<_> = backend
        .tail_step(workflow, "leak", from)
        .await
        .unwrap()
        .collect()
        .await;
    let mut log = Vec::new();
    let mut start = None;
    for chunk in chunks {
        let chunk = chunk.unwrap();
        assert_eq!(
            chunk.offset,
            start.unwrap_or(chunk.offset) + log.len() as u64
        );
        start.get_or_insert(chunk.offset);
        log.extend(chunk.bytes);
    }
    (start.unwrap_or(from), log)
}

#[tokio::test]
async fn a_step_log_and_outputs_are_masked_of_its_secrets() {
    let root = std::env::temp_dir().join(format!("baton-local-mask-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut host: BTreeMap<OsString, OsString> =
        std::env::vars_os().filter(|(k, _)| k == "PATH").collect();
    host.insert("BATON_SECRET_API_TOKEN".into(), "tok-3141592653".into());
    host.insert(
        "BATON_SECRET_API_CERT".into(),
        "line-one-of-cert\nline-two-of-cert\n".into(),
    );
    let workflow = Workflow::new("wf");
    // The token whole, then in two writes a pipe read apart, then one cert line.
    let script = "printf 'whole=%s\\n' \"$TOKEN\"\n\
                  printf 'tok-31'; sleep 0.3; printf '41592653 split\\n'\n\
                  printf '%s' \"$CERT\" | tail -n 1\n\
                  echo \"out=$TOKEN\" >> \"$BATON_OUTPUT\"";
    let step = Step {
        name: "leak".into(),
        script: Some(script.into()),
        env: Some(vec![
            secret_env("TOKEN", "api", "token"),
            secret_env("CERT", "api", "cert"),
        ]),
        ..Default::default()
    };
    let backend = LocalBackend::with_host_env(&root, host.clone()).resumable();
    backend.setup_workflow(&workflow).await.unwrap();
    let request = StepRequest::new(step, Vec::new());
    backend.start_step(&workflow, &request).await.unwrap();
    assert_eq!(backend.wait_step(&workflow, "leak").await.unwrap().code, 0);
    let (_, log) = whole_log(&backend, &workflow, 0).await;
    assert_eq!(String::from_utf8_lossy(&log), "whole=***\n*** split\n***\n");
    // Offsets are offsets into the masked log.
    let (start, rest) = whole_log(&backend, &workflow, 6).await;
    assert_eq!((start, rest.as_slice()), (6, &log[6..]));
    let outputs = backend.read_outputs(&workflow, "leak", 100).await.unwrap();
    assert_eq!(outputs, b"out=***\n");
    // A restarted runner masks the outputs it finds of every BATON_SECRET_* value.
    drop(backend);
    let second = LocalBackend::with_host_env(&root, host).resumable();
    second.discover(&workflow).await.unwrap();
    let outputs = second.read_outputs(&workflow, "leak", 100).await.unwrap();
    assert_eq!(outputs, b"out=***\n");
    assert_eq!(whole_log(&second, &workflow, 0).await.1, log);
    second.destroy_workflow(&workflow).await.unwrap();
    let _ = std::fs::remove_dir_all(&root);
}
