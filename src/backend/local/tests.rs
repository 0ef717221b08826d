//! The local backend's own tests: a step's environment, and steps given up
//! with their backend.
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
