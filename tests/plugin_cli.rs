//! The binary as a kubectl plugin (`kubectl-baton`) and the runner/token verbs'
//! argument handling. No cluster: nothing here reaches one.
#![allow(clippy::unwrap_used)]

use std::process::Command;

const BATON: &str = env!("CARGO_BIN_EXE_baton");

fn run(bin: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin)
        .args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("BATON_SERVER")
        .env_remove("BATON_TOKEN")
        .env_remove("BATON_CA_FILE")
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

#[test]
fn job_logs_refuses_to_send_the_token_in_clear_to_another_machine() {
    let bin = std::path::Path::new(BATON);
    let logs = |server: &str, extra: &[&str]| {
        let args = [
            &["job", "logs", "j", "--server", server, "--token", "t"][..],
            extra,
        ]
        .concat();
        run(bin, &args)
    };
    for server in ["http://10.0.0.1:8080", "http://baton.baton-system:8080"] {
        let (code, _, err) = logs(server, &[]);
        assert_ne!(code, 0);
        assert!(
            err.contains("unencrypted") && err.contains("--insecure"),
            "{server}: {err}"
        );
        // `job run -f` refuses before it creates anything (no manifest is read).
        let (code, _, err) = run(
            bin,
            &[
                "job",
                "run",
                "/nonexistent.yaml",
                "-f",
                "--server",
                server,
                "--token",
                "t",
            ],
        );
        assert!(code != 0 && err.contains("unencrypted"), "{server}: {err}");
    }
    // Loopback, https, or --insecure: past the check (to the missing kubeconfig).
    for (server, extra) in [
        ("http://127.0.0.1:1", &[][..]),
        ("http://[::1]:1", &[]),
        ("https://baton.example.com", &[]),
        ("http://10.0.0.1:8080", &["--insecure"]),
    ] {
        let (code, _, err) = logs(server, extra);
        assert!(code != 0 && !err.contains("unencrypted"), "{server}: {err}");
        assert!(err.contains("kubeconfig"), "{server}: {err}");
    }
    let (code, _, err) = logs(
        "https://baton.example.com",
        &["--ca-file", "/nonexistent/ca.crt"],
    );
    assert!(
        code != 0 && err.contains("--ca-file") && err.contains("/nonexistent/ca.crt"),
        "{err}"
    );
}
