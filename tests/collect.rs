//! `baton run --output DIR` on steps that collect what they changed: the
//! archive reproduces the changes exactly, globs select, and bad globs are
//! refused before anything runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use baton::archive::snapshot;

fn baton_run(file: &Path, extra: &[&Path]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("run")
        .arg(file)
        .args(["--color", "never"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run baton");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap(),
        text(&out.stdout),
        text(&out.stderr),
    )
}

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/changes.yaml")
}

#[test]
fn output_over_the_checkout_becomes_the_workspace_the_steps_left() {
    let scratch = tempfile::tempdir().unwrap();
    let (work, out) = (scratch.path().join("work"), scratch.path().join("out"));
    // What the checkout step makes: the state `build` started from.
    std::fs::create_dir_all(out.join("src")).unwrap();
    std::fs::create_dir_all(out.join("docs")).unwrap();
    std::fs::write(out.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(out.join("docs/old.md"), "to be replaced\n").unwrap();
    std::fs::write(out.join("README.md"), "# demo\n").unwrap();

    // The checkout above is the whole premise: the workspace starts empty, not
    // as a copy of the directory the test runs in.
    let args = [
        Path::new("--work-dir"),
        &work,
        Path::new("--output"),
        &out,
        Path::new("--empty-workspace"),
    ];
    let (code, stdout, stderr) = baton_run(&example(), &args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("build: 2 added, 1 modified, 1 deleted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("report: 2 added, 0 modified, 0 deleted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("step build: 3 paths written, 1 deleted"),
        "{stdout}"
    );

    let mut workspace = snapshot(&work.join("changes/workspace")).unwrap();
    // The one change no step collected.
    assert!(workspace.remove("scratch.tmp").is_some());
    assert_eq!(snapshot(&out).unwrap(), workspace);
    let mode = out
        .join("dist/app")
        .metadata()
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "dist/app keeps its executable bit");
}

#[test]
fn a_step_that_changes_nothing_has_no_archive() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("job.yaml");
    std::fs::write(
        &file,
        "apiVersion: baton.dev/v1alpha1\nkind: Job\nmetadata: {name: quiet}\nspec:\n  steps:\n  \
         - {name: look, image: busybox, collect: changes, script: 'ls >/dev/null'}\n",
    )
    .unwrap();
    let out = scratch.path().join("out");
    let (code, stdout, stderr) = baton_run(&file, &[Path::new("--output"), &out]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!stdout.contains("changes collected"), "{stdout}");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}

#[test]
fn a_glob_that_does_not_parse_is_refused_before_anything_runs() {
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("job.yaml");
    std::fs::write(
        &file,
        "apiVersion: baton.dev/v1alpha1\nkind: Job\nmetadata: {name: bad}\nspec:\n  steps:\n  \
         - {name: build, image: busybox, artifacts: ['dist/[a'], script: 'touch ran'}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = baton_run(&file, &[]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("step build: artifacts glob \"dist/[a\""),
        "{stderr}"
    );
}
