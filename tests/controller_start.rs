//! `baton controller`'s data directory at start, through the built binary and no
//! cluster: `TMPDIR` points the default (`$TMPDIR/baton-data`) at a directory of the
//! test's, so the machine's own is never touched. The controller stops at the
//! missing kubeconfig once the directory is settled.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// `baton controller` with `TMPDIR=tmpdir` and `extra` flags: (exit code, stderr).
fn controller(tmpdir: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(BATON)
        .args(["controller", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("TMPDIR", tmpdir)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("BATON_DATA_DIR")
        .env_remove("BATON_TLS_CERT_FILE")
        .env_remove("BATON_TLS_KEY_FILE")
        .env_remove("BATON_RUNNER_CA_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fresh(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("baton-start-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_default_data_dir_is_created_private_and_an_open_one_closed() {
    let tmp = fresh("default");
    let data = tmp.join("baton-data");
    let (code, err) = controller(&tmp, &[]);
    assert!(code != 0 && err.contains("connect to the cluster"), "{err}");
    assert_eq!((mode(&data), mode(&data.join("logs"))), (0o700, 0o700));

    // As an older Baton left it: world-readable, and one left world-writable.
    for open in [0o755, 0o777] {
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(open)).unwrap();
        let (code, err) = controller(&tmp, &[]);
        assert!(code != 0 && err.contains("made private"), "{open:o}: {err}");
        assert_eq!(mode(&data), 0o700, "{open:o}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_symlink_planted_as_the_default_data_dir_is_refused() {
    let tmp = fresh("planted");
    let elsewhere = tmp.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, tmp.join("baton-data")).unwrap();
    let (code, err) = controller(&tmp, &[]);
    assert!(
        code != 0 && err.contains("is not a directory") && err.contains("--data-dir"),
        "{err}"
    );
    assert!(!elsewhere.join("logs").exists(), "followed the symlink");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn an_explicit_data_dir_that_cannot_be_made_is_named() {
    let tmp = fresh("explicit");
    let file = tmp.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let dir = file.join("data");
    let (code, err) = controller(&tmp, &["--data-dir", dir.to_str().unwrap()]);
    assert!(
        code != 0
            && err.contains("create the log directory")
            && err.contains(dir.to_str().unwrap()),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}
