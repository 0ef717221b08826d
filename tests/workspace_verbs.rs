//! `baton workspace`, the verbs the kubernetes backend execs in its workspace
//! helper pods, run here on a directory: a snapshot and the changes since
//! round-trip into the tree the step left; bad input (a broken snapshot, an
//! archive that escapes, a non-archive) is refused with a message and a
//! non-zero exit, and nothing is written; `hold` ends at SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use baton::archive::snapshot;

fn verb(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("workspace")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run baton");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn write(root: &Path, path: &str, body: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, body).unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A zstd tar with `entries` as (path, body), the manifest first.
fn archive(manifest: &str, entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, body: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Written raw: `set_path` itself refuses `..`, an attacker's tar does not.
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        tar.append(&header, body).unwrap();
    };
    add("changes.json", manifest.as_bytes());
    for (path, body) in entries {
        add(path, body);
    }
    zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap()
}

#[test]
fn a_snapshot_then_the_changes_since_rebuild_the_tree_the_step_left() {
    let dir = tempfile::tempdir().unwrap();
    let (work, copy) = (dir.path().join("work"), dir.path().join("copy"));
    for root in [&work, &copy] {
        write(root, "src/lib.rs", "pub fn f() {}\n");
        write(root, "src/old.rs", "// old\n");
        write(root, "README.md", "# r\n");
    }
    let before = verb(&["snapshot", work.to_str().unwrap()], b"");
    assert!(before.status.success(), "{}", stderr(&before));

    let unchanged = verb(&["changes", work.to_str().unwrap()], &before.stdout);
    assert!(unchanged.status.success(), "{}", stderr(&unchanged));
    assert!(unchanged.stdout.is_empty(), "nothing changed, nothing sent");

    write(&work, "src/lib.rs", "pub fn f() {}\n// edited\n");
    std::fs::remove_file(work.join("src/old.rs")).unwrap();
    write(&work, "gen/out.txt", "new\n");
    let changes = verb(&["changes", work.to_str().unwrap()], &before.stdout);
    assert!(changes.status.success(), "{}", stderr(&changes));
    let manifest = baton::archive::manifest(&changes.stdout[..], &Default::default()).unwrap();
    assert_eq!(
        (manifest.added, manifest.modified, manifest.deleted),
        (
            vec!["gen".into(), "gen/out.txt".into()],
            vec!["src/lib.rs".into()],
            vec!["src/old.rs".into()]
        )
    );

    let seeded = verb(&["seed", copy.to_str().unwrap()], &changes.stdout);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let said: serde_json::Value = serde_json::from_slice(&seeded.stdout).unwrap();
    assert_eq!(said["deleted"], 1, "{said}");
    assert_eq!(snapshot(&copy).unwrap(), snapshot(&work).unwrap());

    // `--artifact` keeps what its globs select.
    let only = verb(
        &["changes", work.to_str().unwrap(), "--artifact", "gen/**"],
        &before.stdout,
    );
    let manifest = baton::archive::manifest(&only.stdout[..], &Default::default()).unwrap();
    assert_eq!(manifest.added, ["gen/out.txt"]);
    assert!(manifest.modified.is_empty() && manifest.deleted.is_empty());
}

#[test]
fn a_broken_snapshot_is_refused_before_anything_is_packed() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a", "x");
    let d = dir.path().to_str().unwrap();
    for bad in [
        &b""[..],
        b"not json",
        br#"{"a":{"file":{"digest":"00","executable":false}}}"#,
    ] {
        let out = verb(&["changes", d], bad);
        assert!(
            !out.status.success(),
            "accepted {:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(out.stdout.is_empty(), "nothing packed");
        assert!(
            stderr(&out).contains("read the snapshot taken before the step"),
            "{}",
            stderr(&out)
        );
    }
    let bad_glob = verb(&["changes", d, "--artifact", "a/[z"], b"{}");
    assert!(!bad_glob.status.success(), "a broken glob packed");
}

#[test]
fn a_hostile_or_broken_content_archive_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("workspace");
    let d = dest.to_str().unwrap();
    let manifest = r#"{"version":1,"added":["x"],"modified":[],"deleted":[]}"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not an archive", b"hello".to_vec()),
        (
            "escapes",
            archive(manifest, &[("files/../../escaped", b"x")]),
        ),
        (
            "absolute",
            archive(manifest, &[("files//etc/passwd", b"x")]),
        ),
        ("wrong manifest", archive("{}", &[])),
    ];
    for (what, bytes) in cases {
        let out = verb(&["seed", d], &bytes);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(
            stderr(&out).contains("unpack the content"),
            "{what}: {}",
            stderr(&out)
        );
        assert!(
            !dir.path().join("escaped").exists(),
            "{what}: wrote outside"
        );
        let left = std::fs::read_dir(&dest).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "{what}: wrote into the workspace");
    }
}

#[test]
fn hold_ends_at_sigterm_as_pid_1_must() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["workspace", "hold", "--for", "60"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    println!("hold ended {:?} after SIGTERM", sent.elapsed());
    assert!(sent.elapsed() < Duration::from_secs(10));
}
