//! `baton run` as a user runs it: the built binary on the examples and on broken
//! files, checking exit codes, output and messages. Waits are bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(30);

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn baton_run(file: &Path, extra: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("run")
        .arg(file)
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run baton");
    (
        status.code().expect("exited normally"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A scratch file, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, contents: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("baton-local-mode-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The summary row of `step`, columns split on whitespace.
fn row<'a>(stdout: &'a str, step: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .map(str::split_whitespace)
        .map(Iterator::collect::<Vec<_>>)
        .rfind(|cols| cols.first() == Some(&step) && cols.len() == 5)
        .unwrap_or_else(|| panic!("no summary row for {step} in:\n{stdout}"))
}

#[test]
fn generate_name_runs_under_a_generated_name() {
    let (code, stdout, stderr) = baton_run(&example("generate-name.yaml"), &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let header = stdout
        .lines()
        .find(|l| l.starts_with("=== Job "))
        .unwrap_or_else(|| panic!("no Job header in:\n{stdout}"));
    assert!(header.starts_with("=== Job build-"), "{header}");
    assert_eq!(row(&stdout, "build")[1..3], ["Succeeded", "0"]);
}

#[test]
fn hello_succeeds() {
    let (code, stdout, stderr) = baton_run(&example("hello.yaml"), &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("images are ignored").count(), 1, "said once");
    assert!(
        stdout.contains("[hello] Hello from Baton, running in "),
        "{stdout}"
    );
    assert!(
        stdout.contains("--> hello started (running: hello)"),
        "{stdout}"
    );
    assert_eq!(row(&stdout, "hello")[1..3], ["Succeeded", "0"]);
    assert!(stdout.contains("outputs:\n  greeting=hello"), "{stdout}");
    assert!(
        !stdout.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
}

#[test]
fn diamond_passes_outputs_from_both_branches_into_the_join() {
    let (code, stdout, stderr) = baton_run(&example("diamond.yaml"), &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let publish: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("[publish]"))
        .collect();
    assert_eq!(publish.len(), 3, "{stdout}");
    assert!(publish[0].ends_with("publishing 1.4.2"));
    let digest = |l: &str| l.rsplit(' ').next().unwrap().to_owned();
    assert!(
        publish[1].contains("linux:") && !digest(publish[1]).is_empty(),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("linux-digest={}", digest(publish[1]))),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("darwin-digest={}", digest(publish[2]))),
        "{stdout}"
    );
    assert!(stdout.contains("release=v1.4.2"));
    for step in ["prepare", "build-linux", "build-darwin", "publish"] {
        assert_eq!(row(&stdout, step)[1], "Succeeded");
    }
}

#[test]
fn failure_example_exits_1_and_runs_its_on_failure_and_always_steps() {
    let (code, stdout, stderr) = baton_run(&example("failure.yaml"), &[]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert_eq!(
        row(&stdout, "test")[1..],
        ["Failed", "1", row(&stdout, "test")[3], "Error"]
    );
    assert_eq!(
        row(&stdout, "deploy")[1..],
        ["Skipped", "-", "-", "DependencyFailed"]
    );
    assert_eq!(row(&stdout, "report-failure")[1], "Succeeded");
    assert_eq!(row(&stdout, "cleanup")[1], "Succeeded");
    assert!(
        stdout.contains("[test]           FAIL: 1 of 3 tests failed"),
        "stderr is captured too:\n{stdout}"
    );
    assert!(stdout.contains("tests failed for app-1.0.tar"), "{stdout}");
    assert!(stdout.contains("Job failure: Failed"), "{stdout}");
}

#[test]
fn an_allowed_failure_is_recorded_and_the_job_succeeds() {
    let (code, stdout, stderr) = baton_run(&example("allow-failure.yaml"), &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // STEP PHASE EXIT DURATION REASON, the phase being "Failed (allowed)".
    let lint: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .rfind(|cols| cols.len() == 6 && cols[0] == "lint")
        .unwrap_or_else(|| panic!("no summary row for lint in:\n{stdout}"));
    assert_eq!(lint[1..4], ["Failed", "(allowed)", "3"], "{stdout}");
    assert_eq!(lint[5], "Error", "{stdout}");
    assert!(
        stdout.contains("<-- lint Failed (allowed) (exit 3): Error"),
        "{stdout}"
    );
    assert_eq!(row(&stdout, "build")[1], "Succeeded", "{stdout}");
    assert_eq!(
        row(&stdout, "on-lint-failure")[1..],
        ["Skipped", "-", "-", "NotOnFailure"],
        "{stdout}"
    );
    assert!(!stdout.contains("never printed"), "{stdout}");
    assert!(
        stdout.contains("Job allow-failure: Succeeded")
            && stdout.contains("(Succeeded: lint failed (allowed))"),
        "{stdout}"
    );
}

#[test]
fn timeout_example_exits_1_with_reason_deadline_exceeded() {
    let started = Instant::now();
    let (code, stdout, stderr) = baton_run(&example("timeout.yaml"), &[]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(row(&stdout, "slow")[1..3], ["Failed", "143"]);
    assert_eq!(row(&stdout, "slow")[4], "DeadlineExceeded");
    assert!(!stdout.contains("never printed"));
    assert_eq!(row(&stdout, "after-timeout")[1], "Succeeded");
}

#[test]
fn several_jobs_run_one_after_another_and_the_worst_result_wins() {
    let hello = std::fs::read_to_string(example("hello.yaml")).unwrap();
    let failure = std::fs::read_to_string(example("failure.yaml")).unwrap();
    let file = Scratch::new("multi.yaml", &format!("{failure}---\n{hello}"));
    let (code, stdout, _) = baton_run(&file.0, &[]);
    assert_eq!(code, 1, "{stdout}");
    let failure_at = stdout.find("=== Job failure").unwrap();
    let hello_at = stdout.find("=== Job hello").unwrap();
    assert!(failure_at < hello_at, "in file order");
    assert!(stdout.contains("Job hello: Succeeded"), "{stdout}");
    assert_eq!(stdout.matches("images are ignored").count(), 1);
}

#[test]
fn pull_settings_are_ignored_and_said_so_once() {
    let file = Scratch::new(
        "private.yaml",
        "apiVersion: baton.dev/v1alpha1\nkind: Job\nmetadata: {name: private}\nspec:\n  imagePullSecrets: [{name: registry-login}]\n  steps:\n  - {name: a, image: registry.example/private/step:1, imagePullPolicy: Always, script: echo pulled-nothing}\n  - {name: b, image: registry.example/private/step:1, imagePullPolicy: Never, script: echo ran}\n",
    );
    let (code, stdout, stderr) = baton_run(&file.0, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let said =
        "images are ignored in local mode, and with them imagePullPolicy and imagePullSecrets";
    assert_eq!(stdout.matches(said).count(), 1, "{stdout}");
    assert_eq!(row(&stdout, "a")[1..3], ["Succeeded", "0"]);
    assert_eq!(row(&stdout, "b")[1..3], ["Succeeded", "0"]);
}

#[test]
fn invalid_files_exit_2_and_say_why() {
    let header = "apiVersion: baton.dev/v1alpha1\nkind: Job\nmetadata: {name: bad}\n";
    let cases: &[(&str, String, &[&str])] = &[
        (
            "syntax.yaml",
            format!("{header}spec:\n  steps: [\n"),
            &["syntax.yaml", "line 5", "unclosed bracket"],
        ),
        (
            "kind.yaml",
            "apiVersion: baton.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n".into(),
            &["kind.yaml:2:", "kind \"Pipeline\" is not a Baton kind"],
        ),
        (
            "rules.yaml",
            format!(
                "{header}spec:\n  steps:\n    - {{name: a, image: busybox:1.36, script: x, command: [ls], dependsOn: [b]}}\n    - {{name: b, image: busybox:1.36, script: x, dependsOn: [a], extra: 1}}\n"
            ),
            &[
                "(3 problems)",
                "command/args or script, not both",
                "spec.steps[1].extra: unknown field",
                "dependency cycle: a -> b -> a",
            ],
        ),
        (
            "types.yaml",
            format!("{header}spec:\n  steps: 5\n"),
            &["types.yaml", "line 5"],
        ),
        ("empty.yaml", String::new(), &["holds no YAML document"]),
    ];
    for (name, contents, wants) in cases {
        let file = Scratch::new(name, contents);
        let (code, stdout, stderr) = baton_run(&file.0, &[]);
        assert_eq!(code, 2, "{name}: {stdout}\n{stderr}");
        assert!(!stdout.contains("=== Job"), "{name}: nothing runs");
        for want in *wants {
            assert!(stderr.contains(want), "{name}: {want:?} not in:\n{stderr}");
        }
    }
    let (code, _, stderr) = baton_run(Path::new("/nonexistent/job.yaml"), &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot read /nonexistent/job.yaml"),
        "{stderr}"
    );
}

#[test]
fn colour_only_when_asked_or_on_a_terminal() {
    let (code, stdout, _) = baton_run(&example("hello.yaml"), &["--color", "always"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("\x1b["), "{stdout:?}");
}

#[test]
fn ctrl_c_stops_the_steps_and_still_prints_the_summary() {
    let file = Scratch::new(
        "ctrlc.yaml",
        "apiVersion: baton.dev/v1alpha1\nkind: Job\nmetadata: {name: interrupted}\nspec:\n  steps:\n    - name: wait\n      image: busybox:1.36\n      script: |\n        echo \"pgid=$$\"\n        sleep 1000 & sleep 1000\n    - name: after\n      image: busybox:1.36\n      dependsOn: [wait]\n      script: echo never\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["run", "--grace", "2s"])
        .arg(&file.0)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let pgid: i32 = loop {
        let line = rx
            .recv_timeout(BOUND)
            .expect("the step printed its process group");
        seen.push(line.clone());
        if let Some(pgid) = line.strip_prefix("[wait]  pgid=") {
            break pgid.parse().unwrap();
        }
    };
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "baton did not exit after Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    seen.extend(rx.try_iter());
    let stdout = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert_eq!(
        row(&stdout, "wait")[1..],
        ["Cancelled", "143", row(&stdout, "wait")[3], "Cancelled"]
    );
    assert_eq!(
        row(&stdout, "after")[1..],
        ["Cancelled", "-", "-", "Cancelled"]
    );
    assert!(stdout.contains("Job interrupted: Cancelled"), "{stdout}");
    // The step's whole process group is gone (only unreaped zombies may linger).
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_has_live_process(pgid) {
        assert!(
            Instant::now() < deadline,
            "process group {pgid} outlived the run"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn group_has_live_process(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z"
    })
}

#[test]
fn secret_values_are_masked_in_logs_and_outputs() {
    let job = Scratch::new(
        "secrets.yaml",
        r#"apiVersion: baton.dev/v1alpha1
kind: Job
metadata:
  name: secrets
spec:
  steps:
    - name: leak
      image: busybox:1.36
      env:
        - name: TOKEN
          valueFrom:
            secretKeyRef: {name: deploy, key: token}
      script: |
        echo "whole: $TOKEN"
        printf 'split: hunter'; sleep 0.3; printf '2-xyzzy\n'
        echo "token=$TOKEN" >> "$BATON_OUTPUT"
    - name: downstream
      image: busybox:1.36
      dependsOn: [leak]
      script: echo "got $BATON_OUTPUT_TOKEN"
"#,
    );
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("run")
        .arg(&job.0)
        .env("RUST_LOG", "warn")
        .env("BATON_SECRET_DEPLOY_TOKEN", "hunter2-xyzzy")
        .output()
        .expect("run baton");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains("hunter") && !stderr.contains("hunter2"),
        "the value leaked:\n{stdout}\n{stderr}"
    );
    for (step, text) in [
        ("[leak]", "whole: ***"),
        ("[leak]", "split: ***"),
        ("[downstream]", "got ***"),
    ] {
        let found = stdout
            .lines()
            .filter_map(|l| l.strip_prefix(step))
            .any(|rest| rest.trim() == text);
        assert!(found, "no {step} {text:?} in:\n{stdout}");
    }
    assert!(stdout.contains("token=***"), "outputs masked:\n{stdout}");
}
