//! `baton run` starts each Job's workspace as a copy of `--from` (default the
//! current directory): what `spec.inputs` maps, never `.git/` or what
//! `.gitignore` ignores; `--empty-workspace` starts from nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn write(root: &Path, path: &str, body: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, body).unwrap();
}

fn baton_run(dir: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["run", "job.yaml", "--color", "never"])
        .args(extra)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run baton");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), said)
}

const JOB: &str = "apiVersion: baton.dev/v1alpha1
kind: Job
metadata: {name: seeded}
spec:
  inputs:
    - {from: src, to: app}
    - {from: build.sh}
  steps:
    - name: look
      image: busybox
      script: |
        find . -path ./.baton -prune -o -type f -print | sort
        test -x build.sh && ./build.sh
";

fn checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "job.yaml", JOB);
    write(root, "src/lib.rs", "pub fn f() {}\n");
    write(root, "src/gen.o", "object\n");
    write(root, ".gitignore", "*.o\n");
    write(root, ".git/HEAD", "ref: refs/heads/main\n");
    write(root, "notes.txt", "not an input\n");
    write(root, "build.sh", "#!/bin/sh\necho built\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("build.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    dir
}

#[test]
fn the_workspace_starts_as_the_inputs_of_the_current_directory() {
    let dir = checkout();
    let (code, said) = baton_run(dir.path(), &[]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("workspace: 3 paths"),
        "app, app/lib.rs, build.sh: {said}"
    );
    assert!(said.contains("[look] ./app/lib.rs"), "{said}");
    assert!(said.contains("[look] ./build.sh"), "{said}");
    assert!(
        said.contains("[look] built"),
        "the executable bit travels: {said}"
    );
    for absent in ["gen.o", ".git", "notes.txt", "job.yaml"] {
        assert!(!said.contains(absent), "{absent} was copied: {said}");
    }
}

#[test]
fn an_empty_workspace_or_a_missing_from_directory() {
    let dir = checkout();
    let (code, said) = baton_run(dir.path(), &["--empty-workspace"]);
    assert_eq!(code, 1, "build.sh is not there: {said}");
    assert!(!said.contains("./app/lib.rs"), "{said}");
    let (code, said) = baton_run(dir.path(), &["--from", "nowhere"]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("--from nowhere: not a directory"), "{said}");
    let (code, said) = baton_run(dir.path(), &["--from", "src"]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("spec.inputs[0]: \"src\" is not in src"),
        "an input missing from --from is named: {said}"
    );
}
