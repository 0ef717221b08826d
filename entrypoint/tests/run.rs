//! The built program, run as a step container runs it (with /bin/sh from the host
//! as the step's command).

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_baton-entrypoint");

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("baton-entrypoint-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Until the step created `file` (it started), at most 10 s.
fn wait_for(file: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !file.exists() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn passes_the_exit_code_on_and_frames_the_outputs_after_the_log() {
    let dir = scratch("frame");
    let output = dir.join("output");
    std::fs::write(&output, "stale=1\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "run",
            "n0nce",
            "--",
            "sh",
            "-c",
            "printf 'log line'; echo a=1 >> \"$BATON_OUTPUT\"; exit 3",
        ])
        .env("BATON_OUTPUT", &output)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8(out.stdout).unwrap();
    // The stale content was truncated before the step ran: only a=1 is framed.
    assert_eq!(
        text,
        "log line\u{1e}::baton-outputs-begin n0nce::\nYT0xCg==\n::baton-outputs-end n0nce::\n"
    );
}

#[test]
fn an_empty_outputs_file_adds_nothing_to_the_log() {
    let dir = scratch("empty");
    let out = Command::new(BIN)
        .args(["run", "n", "--", "echo", "hello"])
        .env("BATON_OUTPUT", dir.join("output"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"hello\n");
}

#[test]
fn a_missing_command_is_127_and_an_unrunnable_one_126() {
    let out = Command::new(BIN)
        .args(["run", "n", "--", "/no/such/program"])
        .env_remove("BATON_OUTPUT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run /no/such/program"));
    let dir = scratch("noexec");
    let file = dir.join("not-executable");
    std::fs::write(&file, "#!/bin/sh\n").unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .arg("n")
        .arg("--")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126));
}

#[test]
fn an_unwritable_outputs_file_fails_before_the_step_runs() {
    let out = Command::new(BIN)
        .args(["run", "n", "--", "sh", "-c", "echo ran"])
        .env("BATON_OUTPUT", "/proc/no/such/dir/output")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126));
    assert!(out.stdout.is_empty(), "the step must not run");
}

#[test]
fn a_stop_request_reaches_the_step_and_its_outputs_are_still_framed() {
    let dir = scratch("stop");
    let output = dir.join("output");
    let ready = dir.join("ready");
    let script = format!(
        "trap 'echo stopped=yes > \"$BATON_OUTPUT\"; exit 7' TERM; touch {}; while :; do sleep 0.05; done",
        ready.display()
    );
    let child = Command::new(BIN)
        .args(["run", "n", "--", "sh", "-c", &script])
        .env("BATON_OUTPUT", &output)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&ready);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("c3RvcHBlZD15ZXMK"), "{text}");
}

#[test]
fn a_stop_ends_a_step_that_set_no_handler_of_its_own() {
    // The step inherits default signal actions and an empty mask: SIGTERM ends it.
    let dir = scratch("plain-stop");
    let ready = dir.join("ready");
    let script = format!("touch {}; exec sleep 30", ready.display());
    let child = Command::new(BIN)
        .args(["run", "n", "--", "sh", "-c", &script])
        .env_remove("BATON_OUTPUT")
        .spawn()
        .unwrap();
    wait_for(&ready);
    let started = Instant::now();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "128 + SIGTERM");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stop was passed on"
    );
}

#[test]
fn install_copies_a_runnable_program() {
    let dir = scratch("install");
    let dest = dir.join("bin/baton-entrypoint");
    let status = Command::new(BIN)
        .arg("install")
        .arg(&dest)
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new(&dest)
        .args(["run", "n", "--", "true"])
        .env_remove("BATON_OUTPUT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let bad = Command::new(BIN)
        .arg("install")
        .arg("/proc/forbidden/x")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let usage = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage:"));
}
