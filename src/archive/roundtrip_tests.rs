//! Pack what changed in a tree, extract it into a copy of the tree as it was:
//! the copy becomes the tree as it is.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

fn write(root: &Path, path: &str, body: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, body).unwrap();
}

fn chmod(root: &Path, path: &str, mode: u32) {
    std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A small repository, and a copy of it.
fn repo() -> (tempfile::TempDir, tempfile::TempDir) {
    let (work, copy) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for root in [work.path(), copy.path()] {
        write(root, "README.md", "# demo\n");
        write(root, "src/lib.rs", "pub fn f() {}\n");
        write(root, "src/old.rs", "// to be removed\n");
        write(root, "gone/a.txt", "a\n");
        write(root, "build.sh", "echo build\n");
    }
    (work, copy)
}

/// What a step does: edit, add (deep, long-named, executable, a link), delete.
fn step(root: &Path) {
    write(root, "src/lib.rs", "pub fn f() { g() }\n");
    write(root, "src/new/deep/mod.rs", "// new\n");
    write(
        root,
        &format!("{}.txt", "long".repeat(40)),
        "a name over 100 bytes\n",
    );
    write(root, "empty.txt", "");
    chmod(root, "build.sh", 0o755);
    std::os::unix::fs::symlink("src/lib.rs", root.join("lib-link")).unwrap();
    std::fs::create_dir(root.join("empty-dir")).unwrap();
    std::fs::remove_file(root.join("src/old.rs")).unwrap();
    std::fs::remove_dir_all(root.join("gone")).unwrap();
}

#[test]
fn extracting_the_changes_reproduces_them_exactly() {
    let (work, copy) = repo();
    let before = snapshot(work.path()).unwrap();
    step(work.path());
    let after = snapshot(work.path()).unwrap();
    let changes = diff(&before, &after);

    let mut bytes = Vec::new();
    let packed = pack(work.path(), &changes, &mut bytes).unwrap();
    assert_eq!(packed.size, bytes.len() as u64);
    assert_eq!((packed.added, packed.modified, packed.deleted), (7, 2, 3));
    assert!(packed.digest.starts_with("sha256:"), "{}", packed.digest);

    let done = extract(bytes.as_slice(), copy.path(), &Limits::default()).unwrap();
    assert_eq!((done.written, done.deleted), (9, 3));
    assert_eq!(snapshot(copy.path()).unwrap(), after);
}

#[test]
fn the_same_changes_make_the_same_bytes() {
    let (work, _) = repo();
    let before = snapshot(work.path()).unwrap();
    step(work.path());
    let changes = diff(&before, &snapshot(work.path()).unwrap());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let first = pack(work.path(), &changes, &mut a).unwrap();
    let second = pack(work.path(), &changes, &mut b).unwrap();
    assert_eq!(first, second);
    assert_eq!(a, b);
}

#[test]
fn a_path_gone_before_packing_is_recorded_deleted() {
    let (work, copy) = repo();
    let before = snapshot(work.path()).unwrap();
    write(work.path(), "tmp.txt", "scratch");
    let changes = diff(&before, &snapshot(work.path()).unwrap());
    std::fs::remove_file(work.path().join("tmp.txt")).unwrap();
    let mut bytes = Vec::new();
    let packed = pack(work.path(), &changes, &mut bytes).unwrap();
    assert_eq!((packed.added, packed.deleted), (0, 1));
    extract(bytes.as_slice(), copy.path(), &Limits::default()).unwrap();
    assert_eq!(snapshot(copy.path()).unwrap(), before);
}

#[test]
fn extracting_into_a_new_directory_writes_the_added_and_modified_files() {
    let (work, _) = repo();
    let before = snapshot(work.path()).unwrap();
    step(work.path());
    let changes = diff(&before, &snapshot(work.path()).unwrap());
    let mut bytes = Vec::new();
    pack(work.path(), &changes, &mut bytes).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("artifacts");
    extract(bytes.as_slice(), &dest, &Limits::default()).unwrap();
    let got = std::fs::read_to_string(dest.join("src/lib.rs")).unwrap();
    assert_eq!(got, "pub fn f() { g() }\n");
    let mode = dest
        .join("build.sh")
        .metadata()
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert!(!dest.join("README.md").exists());
}

#[test]
fn links_leading_out_of_the_tree_are_left_out_and_named() {
    let (work, copy) = repo();
    let before = snapshot(work.path()).unwrap();
    std::os::unix::fs::symlink("/usr/bin/env", work.path().join("env")).unwrap();
    std::os::unix::fs::symlink("../../outside", work.path().join("src/up")).unwrap();
    write(work.path(), "kept.txt", "x");
    let changes = diff(&before, &snapshot(work.path()).unwrap());
    let mut bytes = Vec::new();
    let packed = pack(work.path(), &changes, &mut bytes).unwrap();
    assert_eq!(packed.skipped, ["env", "src/up"]);
    assert_eq!(packed.added, 1);
    // The archive still extracts: nothing in it leads out.
    extract(bytes.as_slice(), copy.path(), &Limits::default()).unwrap();
    assert!(copy.path().join("kept.txt").exists());
    assert!(copy.path().join("env").symlink_metadata().is_err());
}
