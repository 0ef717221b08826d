//! The executor over the local backend running steps: real processes, exact logs,
//! outputs, exit codes and `when`, parallelism, resuming. Every wait is on a
//! condition with a bound; nothing sleeps and hopes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/executor.rs"]
mod support;

use std::collections::BTreeMap;

use baton::backend::{Backend, LocalBackend, Workflow};
use baton::crd::job::{JobPhase, StepPhase};
use baton::executor::{CancellationToken, Executor, ExecutorError, ExecutorOptions};
use support::*;

#[tokio::test]
async fn logs_are_exact_ordered_and_per_step() {
    let root = Root::new("logs");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec = spec(
        r#"
steps:
  - name: mixed
    image: busybox:1.36
    script: |
      echo one
      echo two >&2
      printf 'three\nfour'
  - name: argv
    image: busybox:1.36
    command: [printf, "%s|"]
    args: [a, "b c", "$(GREETING)"]
    env: [{name: GREETING, value: hello}]
  - name: big
    image: busybox:1.36
    script: |
      i=0
      while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done
"#,
    );
    let rec = Recorder::new();
    let report = run_with(&backend, &spec, options(), &rec).await;
    assert_eq!(report.phase, JobPhase::Succeeded);
    assert_eq!(rec.log("mixed"), "one\ntwo\nthree\nfour");
    assert_eq!(rec.log("argv"), "a|b c|hello|");
    let big: String = (0..3000).map(|i| format!("line {i}\n")).collect();
    assert_eq!(
        rec.log("big"),
        big,
        "a log larger than one chunk arrives whole and in order"
    );
    for s in &report.steps {
        assert_eq!(s.status.exit_code, Some(0), "{}", s.status.name);
        assert!(s.status.start_time.is_some() && s.status.completion_time.is_some());
    }
}

#[tokio::test]
async fn outputs_flow_downstream_in_dag_order() {
    let root = Root::new("outputs");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec = spec(
        r#"
steps:
  - name: root
    image: busybox:1.36
    script: echo version=1.0 >> "$BATON_OUTPUT"
  - name: left
    image: busybox:1.36
    dependsOn: [root]
    script: |
      echo left=L >> "$BATON_OUTPUT"
      echo shared=from-left >> "$BATON_OUTPUT"
  - name: right
    image: busybox:1.36
    dependsOn: [root]
    script: |
      printf 'shared=from-right\nnotes<<EOF\nmulti\nline\nEOF\n' >> "$BATON_OUTPUT"
  - name: join
    image: busybox:1.36
    dependsOn: [left, right]
    script: |
      echo "$BATON_OUTPUT_VERSION $BATON_OUTPUT_LEFT $BATON_OUTPUT_SHARED"
      echo "$BATON_OUTPUT_NOTES"
  - name: loner
    image: busybox:1.36
    script: echo "[${BATON_OUTPUT_VERSION:-unset}]"
"#,
    );
    let rec = Recorder::new();
    let report = run_with(&backend, &spec, options(), &rec).await;
    assert_eq!(report.phase, JobPhase::Succeeded, "{report:#?}");
    assert_eq!(rec.log("join"), "1.0 L from-right\nmulti\nline\n");
    assert_eq!(
        rec.log("loner"),
        "[unset]\n",
        "only upstream outputs are visible"
    );
    let want: BTreeMap<String, String> = [
        ("left", "L"),
        ("notes", "multi\nline"),
        ("shared", "from-right"),
        ("version", "1.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(report.outputs, want);
}

#[tokio::test]
async fn exit_codes_and_when_rules() {
    let root = Root::new("when");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec = spec(
        r#"
steps:
  - name: build
    image: busybox:1.36
    script: echo building
  - name: test
    image: busybox:1.36
    dependsOn: [build]
    script: |
      echo failing
      exit 3
  - name: lint
    image: busybox:1.36
    dependsOn: [build]
    command: ["true"]
  - name: deploy
    image: busybox:1.36
    dependsOn: [test, lint]
    script: echo never
  - name: report
    image: busybox:1.36
    dependsOn: [test]
    when: onFailure
    script: echo "reporting"
  - name: cleanup
    image: busybox:1.36
    dependsOn: [deploy, report]
    when: always
    script: echo cleaning
  - name: celebrate
    image: busybox:1.36
    dependsOn: [lint]
    when: onFailure
    script: echo never
"#,
    );
    let rec = Recorder::new();
    let report = run_with(&backend, &spec, options(), &rec).await;
    assert_eq!(report.phase, JobPhase::Failed);
    assert_eq!(report.reason.as_deref(), Some("StepFailed"));
    assert_eq!(step(&report, "test").exit_code, Some(3));
    assert_eq!(
        phase_and_reason(&report, "test"),
        (StepPhase::Failed, Some("Error".into()))
    );
    assert_eq!(
        phase_and_reason(&report, "lint"),
        (StepPhase::Succeeded, Some("Completed".into()))
    );
    assert_eq!(
        phase_and_reason(&report, "deploy"),
        (StepPhase::Skipped, Some("DependencyFailed".into()))
    );
    assert_eq!(
        phase_and_reason(&report, "report"),
        (StepPhase::Succeeded, Some("Completed".into()))
    );
    assert_eq!(
        phase_and_reason(&report, "cleanup"),
        (StepPhase::Succeeded, Some("Completed".into()))
    );
    assert_eq!(
        phase_and_reason(&report, "celebrate"),
        (StepPhase::Skipped, Some("NotOnFailure".into()))
    );
    assert_eq!(rec.log("test"), "failing\n");
    assert_eq!(rec.log("deploy"), "", "skipped steps never run");
    assert_eq!(step(&report, "deploy").exit_code, None);
    // Every step is reported; skipped ones once, the rest Running then their end.
    let events = rec.events.lock().unwrap().clone();
    let of = |name: &str| {
        events
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .collect::<Vec<_>>()
    };
    assert_eq!(of("deploy"), [StepPhase::Skipped]);
    assert_eq!(of("test"), [StepPhase::Running, StepPhase::Failed]);
}

#[tokio::test]
async fn independent_steps_run_at_the_same_time() {
    // Each step waits until all three started: this only ends if they run in parallel.
    let root = Root::new("parallel");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let script = r#"touch "$BATON_WORKSPACE/$0.started"
      while [ "$(ls "$BATON_WORKSPACE" | grep -c started)" -lt 3 ]; do sleep 0.01; done"#;
    let yaml = format!(
        "steps:\n{}",
        ["a", "b", "c"]
            .iter()
            .map(|n| format!("  - name: {n}\n    image: busybox:1.36\n    timeout: 15s\n    script: |\n      {script}\n"))
            .collect::<String>()
    );
    let rec = Recorder::new();
    let report = run_with(&backend, &spec(&yaml), options(), &rec).await;
    assert_eq!(report.phase, JobPhase::Succeeded, "{report:#?}");
}

#[tokio::test]
async fn malformed_or_oversized_outputs_fail_the_step_visibly() {
    let root = Root::new("badoutputs");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec = spec(
        r#"
steps:
  - name: garbage
    image: busybox:1.36
    script: printf 'ok=1\nnot an output\n' > "$BATON_OUTPUT"
  - name: large
    image: busybox:1.36
    script: |
      printf 'blob=' >> "$BATON_OUTPUT"
      head -c 600000 /dev/zero | tr '\0' x >> "$BATON_OUTPUT"
      echo >> "$BATON_OUTPUT"
"#,
    );
    let rec = Recorder::new();
    let report = run_with(&backend, &spec, options(), &rec).await;
    let garbage = step(&report, "garbage");
    assert_eq!(
        (garbage.phase, garbage.reason.as_deref()),
        (StepPhase::Failed, Some("InvalidOutput"))
    );
    assert!(
        garbage
            .message
            .as_deref()
            .unwrap()
            .contains("line 2: expected key=value"),
        "{garbage:?}"
    );
    assert_eq!(report.outputs["ok"], "1", "the valid lines still count");
    assert_eq!(
        report.outputs["blob"].len(),
        600_000,
        "far beyond a termination message's 4 KiB"
    );

    let root2 = Root::new("badoutputs-limit");
    let backend = LocalBackend::with_host_env(&root2.0, host_env(&[]));
    let report = run_with(
        &backend,
        &spec,
        ExecutorOptions {
            outputs_limit: 1000,
            ..options()
        },
        &rec,
    )
    .await;
    assert_eq!(
        step(&report, "large").reason.as_deref(),
        Some("OutputsTooLarge")
    );
}

#[tokio::test]
async fn secrets_come_from_baton_secret_variables() {
    let root = Root::new("secrets");
    let backend = LocalBackend::with_host_env(
        &root.0,
        host_env(&[("BATON_SECRET_REGISTRY_CREDS_TOKEN", "t0k3n")]),
    );
    let spec = spec(
        r#"
steps:
  - name: push
    image: busybox:1.36
    env:
      - name: TOKEN
        valueFrom: {secretKeyRef: {name: registry-creds, key: token}}
    script: |
      echo "token=$TOKEN other=${BATON_SECRET_REGISTRY_CREDS_TOKEN:-hidden}"
      [ "$TOKEN" = t0k3n ] && echo "the step got the value"
  - name: missing
    image: busybox:1.36
    env:
      - name: PASSWORD
        valueFrom: {secretKeyRef: {name: db, key: password}}
    script: echo never
"#,
    );
    let rec = Recorder::new();
    let report = run_with(&backend, &spec, options(), &rec).await;
    // The value reaches the step, and is masked in its log.
    assert_eq!(
        rec.log("push"),
        "token=*** other=hidden\nthe step got the value\n"
    );
    let missing = step(&report, "missing");
    assert_eq!(
        (missing.phase, missing.reason.as_deref()),
        (StepPhase::Failed, Some("SecretNotFound"))
    );
    assert!(
        missing
            .message
            .as_deref()
            .unwrap()
            .contains("BATON_SECRET_DB_PASSWORD"),
        "{missing:?}"
    );
    assert_eq!(missing.exit_code, None, "it never started");
}

#[tokio::test]
async fn workspace_is_shared_and_is_the_working_directory() {
    let root = Root::new("workspace");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec = spec(
        r#"
steps:
  - name: write
    image: busybox:1.36
    script: |
      [ "$(pwd -P)" = "$(cd "$BATON_WORKSPACE" && pwd -P)" ]
      mkdir -p src && echo hello > src/greeting
  - name: read
    image: busybox:1.36
    dependsOn: [write]
    workingDir: /workspace/src
    command: [cat, greeting]
"#,
    );
    let rec = Recorder::new();
    let report = run_with(&backend, &spec, options(), &rec).await;
    assert_eq!(report.phase, JobPhase::Succeeded, "{report:#?}");
    assert_eq!(rec.log("read"), "hello\n");
    assert_eq!(
        backend.workspace(&Workflow::new("job")),
        root.0.join("job/workspace")
    );
}

#[tokio::test]
async fn an_invalid_dag_fails_before_anything_runs() {
    let root = Root::new("cycle");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec = spec(
        r#"
steps:
  - {name: a, image: busybox:1.36, command: ["true"], dependsOn: [c]}
  - {name: b, image: busybox:1.36, command: ["true"], dependsOn: [a]}
  - {name: c, image: busybox:1.36, command: ["true"], dependsOn: [b]}
"#,
    );
    let rec = Recorder::new();
    let err = Executor::new(&backend, options())
        .run(
            &Workflow::new("job"),
            &spec,
            &rec,
            &rec,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ExecutorError::InvalidDag(_)));
    assert!(
        err.to_string()
            .contains("dependency cycle: a -> c -> b -> a"),
        "{err}"
    );
    assert!(rec.events.lock().unwrap().is_empty());
    assert!(!root.0.exists(), "nothing was set up");
}

#[tokio::test]
async fn a_resumed_run_adopts_running_steps_instead_of_starting_them_again() {
    let root = Root::new("resume");
    let backend = LocalBackend::with_host_env(&root.0, host_env(&[]));
    let spec = spec(
        r#"
steps:
  - name: once
    image: busybox:1.36
    script: |
      echo run >> "$BATON_WORKSPACE/runs"
      echo started
      while [ ! -e "$BATON_WORKSPACE/go" ]; do sleep 0.01; done
      echo finished
      echo result=42 >> "$BATON_OUTPUT"
  - name: next
    image: busybox:1.36
    dependsOn: [once]
    script: echo "got $BATON_OUTPUT_RESULT"
"#,
    );
    let workflow = Workflow::new("job");
    let executor = Executor::new(&backend, options());
    // First executor: gone (dropped) while the step runs, like a runner that died.
    let first = Recorder::new();
    let cancel = CancellationToken::new();
    tokio::time::timeout(BOUND, async {
        tokio::select! {
            _ = executor.run(&workflow, &spec, &first, &first, &cancel) => panic!("the step should still be running"),
            () = first.wait_running("once") => {}
        }
    })
    .await
    .unwrap();
    let discovered = backend.discover(&workflow).await.unwrap();
    assert_eq!(discovered.len(), 1);
    assert_eq!(discovered[0].state, baton::backend::StepState::Running);

    // Second executor on the same workflow: adopts "once", lets it finish.
    let second = Recorder::new();
    let ws = backend.workspace(&workflow);
    let release = async {
        second.wait_running("once").await;
        std::fs::write(ws.join("go"), b"").unwrap();
    };
    let (report, ()) = tokio::time::timeout(BOUND, async {
        tokio::join!(
            executor.run(&workflow, &spec, &second, &second, &cancel),
            release
        )
    })
    .await
    .unwrap();
    let report = report.unwrap();
    assert_eq!(report.phase, JobPhase::Succeeded, "{report:#?}");
    assert_eq!(
        std::fs::read_to_string(ws.join("runs")).unwrap(),
        "run\n",
        "started exactly once"
    );
    assert_eq!(
        second.log("once"),
        "started\nfinished\n",
        "tailed from offset 0 again"
    );
    assert_eq!(second.log("next"), "got 42\n");
    backend.destroy_workflow(&workflow).await.unwrap();
    assert!(!ws.exists());
}
