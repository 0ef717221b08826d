//! Hand-made hostile archives, byte by byte (a well-behaved tar writer would
//! refuse to make most of them), and the refusal each gets. After every
//! refusal the destination is exactly as it was.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use tar::EntryType;

use super::*;

/// One raw tar entry: a v7 header with `name` and `link` byte for byte, then
/// the body padded to 512.
fn entry(name: &[u8], kind: EntryType, body: &[u8], link: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(body.len() as u64);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend(body);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn file(name: &str, body: &[u8]) -> Vec<u8> {
    entry(name.as_bytes(), EntryType::Regular, body, b"")
}

fn manifest_with(json: &str) -> Vec<u8> {
    file(MANIFEST, json.as_bytes())
}

fn manifest(deleted: &[&str]) -> Vec<u8> {
    let json = serde_json::json!({"version": 1, "added": [], "modified": [], "deleted": deleted});
    manifest_with(&json.to_string())
}

fn zstd_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut tar: Vec<u8> = entries.concat();
    tar.extend([0u8; 1024]);
    zstd::encode_all(tar.as_slice(), 3).unwrap()
}

/// A destination with a file, and a symlink to a directory outside it.
fn destination() -> (tempfile::TempDir, tempfile::TempDir) {
    let (dest, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(dest.path().join("keep.txt"), "mine").unwrap();
    std::os::unix::fs::symlink(outside.path(), dest.path().join("out")).unwrap();
    (dest, outside)
}

fn refused(archive: &[u8], dest: &Path, limits: &Limits) -> String {
    let before = snapshot(dest).unwrap();
    let err = extract(archive, dest, limits).unwrap_err();
    assert_eq!(
        snapshot(dest).unwrap(),
        before,
        "the destination changed: {err}"
    );
    err.to_string()
}

#[test]
fn hostile_archives_are_refused_and_change_nothing() {
    let link =
        |name: &str, to: &str| entry(name.as_bytes(), EntryType::Symlink, b"", to.as_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "path traversal",
            zstd_of(&[manifest(&[]), file("files/../escape", b"x")]),
            "`..`",
        ),
        (
            "deep traversal",
            zstd_of(&[manifest(&[]), file("files/a/../../../x", b"x")]),
            "`..`",
        ),
        (
            "absolute path",
            zstd_of(&[manifest(&[]), file("files//etc/passwd", b"x")]),
            "absolute",
        ),
        (
            "outside files/",
            zstd_of(&[manifest(&[]), file("/etc/passwd", b"x")]),
            "outside files/",
        ),
        (
            "escape in name",
            zstd_of(&[manifest(&[]), file("files/a\x1b[2Jb", b"x")]),
            "control",
        ),
        (
            "name not UTF-8",
            zstd_of(&[
                manifest(&[]),
                entry(b"files/a\xff", EntryType::Regular, b"x", b""),
            ]),
            "not UTF-8",
        ),
        (
            "absolute link",
            zstd_of(&[manifest(&[]), link("files/l", "/etc")]),
            "outside the directory",
        ),
        (
            "climbing link",
            zstd_of(&[manifest(&[]), link("files/d/l", "../../x")]),
            "outside the directory",
        ),
        (
            "file through an archived link",
            zstd_of(&[
                manifest(&[]),
                link("files/l", "sub"),
                file("files/l/x", b"x"),
            ]),
            "through the symlink \"l\"",
        ),
        (
            "file through the destination's link",
            zstd_of(&[manifest(&[]), file("files/out/x", b"x")]),
            "through the symlink \"out\"",
        ),
        (
            "deletion through the destination's link",
            zstd_of(&[manifest(&["out/victim"])]),
            "through the symlink \"out\"",
        ),
        (
            "hard link",
            zstd_of(&[
                manifest(&[]),
                entry(b"files/h", EntryType::Link, b"", b"keep.txt"),
            ]),
            "a link entry",
        ),
        (
            "device",
            zstd_of(&[
                manifest(&[]),
                entry(b"files/sda", EntryType::Block, b"", b""),
            ]),
            "a block entry",
        ),
        (
            "char device",
            zstd_of(&[
                manifest(&[]),
                entry(b"files/tty", EntryType::Char, b"", b""),
            ]),
            "a char entry",
        ),
        (
            "fifo",
            zstd_of(&[manifest(&[]), entry(b"files/p", EntryType::Fifo, b"", b"")]),
            "a fifo entry",
        ),
        (
            "duplicate",
            zstd_of(&[manifest(&[]), file("files/a", b"1"), file("files/a", b"2")]),
            "appears twice",
        ),
        (
            "added and deleted",
            zstd_of(&[manifest(&["a"]), file("files/a", b"1")]),
            "appears twice",
        ),
        (
            "deleted traversal",
            zstd_of(&[manifest(&["../keep.txt"])]),
            "`..`",
        ),
        (
            "deleted absolute",
            zstd_of(&[manifest(&["/etc/passwd"])]),
            "absolute",
        ),
        (
            "no manifest",
            zstd_of(&[file("files/a", b"x")]),
            "not changes.json",
        ),
        (
            "future format",
            zstd_of(&[manifest_with(
                r#"{"version":2,"added":[],"modified":[],"deleted":[]}"#,
            )]),
            "format version 2",
        ),
        (
            "unknown manifest field",
            zstd_of(&[manifest_with(
                r#"{"version":1,"added":[],"modified":[],"deleted":[],"run":"x"}"#,
            )]),
            "unknown field",
        ),
        (
            "plain tar, not zstd",
            [manifest(&[]), vec![0; 1024]].concat(),
            "not a change archive",
        ),
        ("empty input", Vec::new(), "not a change archive"),
    ];
    for (what, archive, want) in cases {
        let (dest, outside) = destination();
        let err = refused(&archive, dest.path(), &Limits::default());
        assert!(err.contains(want), "{what}: {err}");
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "{what}"
        );
    }
}

#[test]
fn a_truncated_archive_is_refused_before_anything_is_written() {
    let whole = zstd_of(&[manifest(&["keep.txt"]), file("files/a", &[7; 5000])]);
    let (dest, _outside) = destination();
    let err = refused(&whole[..whole.len() / 2], dest.path(), &Limits::default());
    assert!(err.contains("not a change archive"), "{err}");
}

#[test]
fn caps_on_size_entries_and_compression_ratio() {
    let small = Limits {
        max_bytes: 1000,
        max_entries: 3,
        max_ratio: 100,
        ratio_floor: 1 << 20,
    };
    let (dest, _outside) = destination();
    let big = zstd_of(&[manifest(&[]), file("files/big", &[1; 2000])]);
    assert!(refused(&big, dest.path(), &small).contains("1000 bytes"));

    let many: Vec<Vec<u8>> = std::iter::once(manifest(&[]))
        .chain((0..4).map(|i| file(&format!("files/f{i}"), b"x")))
        .collect();
    assert!(refused(&zstd_of(&many), dest.path(), &small).contains("3 entries"));
    let deletions = zstd_of(&[manifest(&["a", "b", "c", "d"])]);
    assert!(refused(&deletions, dest.path(), &small).contains("3 entries"));

    // 8 MiB of zeros compress to a few hundred bytes: a bomb at any scale.
    let bomb = zstd_of(&[manifest(&[]), file("files/zeros", &vec![0; 8 << 20])]);
    let roomy = Limits {
        max_bytes: 1 << 30,
        ..small
    };
    assert!(refused(&bomb, dest.path(), &roomy).contains("ratio over 100:1"));
}

#[test]
fn modes_are_plain_and_no_staging_is_left_behind() {
    use std::os::unix::fs::PermissionsExt;
    let mut setuid = tar::Header::new_old();
    setuid.as_old_mut().name[..7].copy_from_slice(b"files/s");
    setuid.set_entry_type(EntryType::Regular);
    setuid.set_mode(0o4777);
    setuid.set_size(1);
    setuid.set_cksum();
    let mut raw = setuid.as_bytes().to_vec();
    raw.push(b'x');
    raw.resize(1024, 0);
    let (dest, _outside) = destination();
    extract(
        zstd_of(&[manifest(&[]), raw]).as_slice(),
        dest.path(),
        &Limits::default(),
    )
    .unwrap();
    let mode = dest
        .path()
        .join("s")
        .metadata()
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
    let names: Vec<String> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(".baton-extract")),
        "{names:?}"
    );
}
