//! A directory packed as content, and extracted into an empty workspace.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::archive::{Limits, extract, snapshot};

fn write(root: &Path, path: &str, body: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, body).unwrap();
}

fn input(from: &str, to: Option<&str>) -> Input {
    Input {
        from: from.into(),
        to: to.map(Into::into),
    }
}

/// A checkout: sources, a build directory .gitignore names, git's own files.
fn checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "README.md", "# demo\n");
    write(root, "src/lib.rs", "pub fn f() {}\n");
    write(root, "src/gen/skip.o", "object\n");
    write(root, "src/.gitignore", "*.o\n");
    write(root, "target/debug/app", "binary\n");
    write(root, ".gitignore", "/target\n*.log\n");
    write(root, "run.log", "noise\n");
    write(root, ".github/ci.yaml", "on: push\n");
    write(root, ".git/HEAD", "ref: refs/heads/main\n");
    write(root, "build.sh", "echo build\n");
    std::fs::set_permissions(
        root.join("build.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("src/lib.rs", root.join("lib-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("escape")).unwrap();
    dir
}

fn names(tree: &Tree) -> Vec<&str> {
    tree.entries.keys().map(String::as_str).collect()
}

#[test]
fn everything_but_git_and_what_gitignore_ignores() {
    let dir = checkout();
    let tree = select(dir.path(), &[], &Limits::default()).unwrap();
    assert_eq!(
        names(&tree),
        [
            ".github",
            ".github/ci.yaml",
            ".gitignore",
            "README.md",
            "build.sh",
            "lib-link",
            "src",
            "src/.gitignore",
            "src/gen",
            "src/lib.rs",
        ]
    );
    assert_eq!(
        tree.skipped,
        ["escape"],
        "a link out of the tree is left out"
    );
}

#[test]
fn unpacked_into_an_empty_workspace_it_is_the_checkout() {
    let dir = checkout();
    let tree = select(dir.path(), &[], &Limits::default()).unwrap();
    let mut bytes = Vec::new();
    let packed = tree.pack(&mut bytes).unwrap();
    assert_eq!(packed.added, tree.len());
    let again = tree.pack(Vec::new()).unwrap();
    assert_eq!(
        again.digest, packed.digest,
        "the same tree packs the same bytes"
    );

    let workspace = tempfile::tempdir().unwrap();
    extract(bytes.as_slice(), workspace.path(), &Limits::default()).unwrap();
    let got = snapshot(workspace.path()).unwrap();
    let want = snapshot(dir.path()).unwrap();
    for (path, node) in &got {
        assert_eq!(want.get(path), Some(node), "{path}");
    }
    assert_eq!(got.len(), tree.len());
    let mode = std::fs::metadata(workspace.path().join("build.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "the executable bit travels");
}

#[test]
fn inputs_map_paths_to_where_they_land() {
    let dir = checkout();
    let inputs = [input("src", Some("app/src")), input("README.md", None)];
    let tree = select(dir.path(), &inputs, &Limits::default()).unwrap();
    assert_eq!(
        names(&tree),
        [
            "README.md",
            "app/src",
            "app/src/.gitignore",
            "app/src/gen",
            "app/src/lib.rs"
        ]
    );
    let root = select(dir.path(), &[input("src/", Some("."))], &Limits::default()).unwrap();
    assert_eq!(names(&root), [".gitignore", "gen", "lib.rs"]);
}

#[test]
fn careless_inputs_are_refused_by_name() {
    let dir = checkout();
    let refused = |inputs: &[Input]| {
        select(dir.path(), inputs, &Limits::default())
            .unwrap_err()
            .to_string()
    };
    let cases: [(&[Input], &str); 5] = [
        (&[input("../etc", None)], "spec.inputs[0].from \"../etc\""),
        (&[input("/etc", None)], "absolute path"),
        (&[input("src", Some("a/../../x"))], "spec.inputs[0].to"),
        (&[input("nope", None)], "spec.inputs[0]: \"nope\" is not in"),
        (
            &[
                input("README.md", None),
                input("src/lib.rs", Some("README.md")),
            ],
            "two inputs put a file at \"README.md\"",
        ),
    ];
    for (inputs, want) in cases {
        let got = refused(inputs);
        assert!(got.contains(want), "{inputs:?}: {got}");
    }
}

#[test]
fn a_tree_over_the_caps_is_refused_before_packing() {
    let dir = checkout();
    let few = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let err = select(dir.path(), &[], &few).unwrap_err().to_string();
    assert!(err.contains("over 3 paths"), "{err}");
    assert!(err.contains("spec.inputs"), "says what to do: {err}");
    let small = Limits {
        max_bytes: 10,
        ..Limits::default()
    };
    let err = select(dir.path(), &[], &small).unwrap_err().to_string();
    assert!(err.contains("over 10 bytes"), "{err}");
}
