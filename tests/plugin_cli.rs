//! The binary as a kubectl plugin (`kubectl-baton`) and the runner/token verbs'
//! argument handling. No cluster: nothing here reaches one.
#![allow(clippy::unwrap_used)]

use std::process::Command;

const BATON: &str = env!("CARGO_BIN_EXE_baton");

fn run(bin: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin)
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invoked_as_kubectl_baton_it_speaks_as_the_plugin() {
    let dir = std::env::temp_dir().join(format!("baton-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("kubectl-baton");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(BATON, &plugin).unwrap();

    let (code, out, _) = run(&plugin, &["runner", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Usage: kubectl baton runner"), "{out}");
    for verb in ["list", "adopt", "reject", "forget", "decommission"] {
        assert!(out.contains(verb), "{verb} missing from:\n{out}");
    }
    let (code, out, _) = run(&plugin, &["token", "create", "--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--ttl",
        "--runner",
        "--namespace",
        "--kubeconfig",
        "--context",
    ] {
        assert!(out.contains(flag), "{flag} missing from:\n{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_fail_before_any_cluster_call() {
    let bin = std::path::Path::new(BATON);
    // A malformed TTL is refused locally.
    let (code, _, err) = run(bin, &["token", "create", "t1", "--ttl", "3 days"]);
    assert_ne!(code, 0);
    assert!(err.contains("invalid duration"), "{err}");
    // A runner name that cannot be a Runner's name.
    let (code, _, err) = run(
        bin,
        &[
            "runner",
            "--server",
            "http://127.0.0.1:1",
            "--name",
            "Bad_Name",
            "--state-dir",
            "/tmp/x",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("DNS label"), "{err}");
    // Labels must be key=value.
    let (code, _, err) = run(
        bin,
        &[
            "runner",
            "--server",
            "http://x",
            "--name",
            "r1",
            "--state-dir",
            "/tmp/x",
            "--labels",
            "oops",
        ],
    );
    assert_eq!(code, 2, "{err}");
    // A verb needs its NAME.
    let (code, _, _) = run(bin, &["runner", "adopt"]);
    assert_eq!(code, 2);
}
