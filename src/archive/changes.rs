//! What a step changed under its workspace: a snapshot of the tree before it
//! ran, one after, and the pure difference of the two.
//!
//! Files are compared by content (SHA-256) and executable bit, not by mtime: a
//! step that rewrites a file with the same bytes changed nothing, and one that
//! edits within the filesystem's mtime granularity still changed it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One path of a tree, as far as a change is concerned. Serialized (a file's
/// digest in hex) where a snapshot crosses a process: the kubernetes backend
/// takes it in a helper pod and keeps it until the step ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Node {
    File {
        #[serde(with = "hex_digest")]
        digest: [u8; 32],
        executable: bool,
    },
    Dir,
    Symlink {
        target: String,
    },
}

/// A tree: relative paths (`/`-separated, no `.` or `..`) to what they are.
/// Devices, sockets and FIFOs are not content and are left out.
pub type Snapshot = BTreeMap<String, Node>;

/// Paths added, modified (content, executable bit, link target or kind) and
/// deleted, each sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub deleted: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.deleted.is_empty()
    }
}

/// The tree under `root`, never following a symlink. A path that is not UTF-8
/// is an error: it could not be named in an archive any tool reads back alike.
pub fn snapshot(root: &Path) -> io::Result<Snapshot> {
    let mut tree = Snapshot::new();
    let mut pending = vec![String::new()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(root.join(&dir))? {
            let entry = entry?;
            let name = entry.file_name().into_string().map_err(|name| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{dir}/{}: not a UTF-8 name", name.to_string_lossy()),
                )
            })?;
            let rel = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                tree.insert(rel.clone(), Node::Dir);
                pending.push(rel);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(entry.path())?;
                let target = target.to_string_lossy().into_owned();
                tree.insert(rel, Node::Symlink { target });
            } else if kind.is_file() {
                let executable = entry.metadata()?.permissions().mode() & 0o111 != 0;
                let digest = file_digest(&entry.path())?;
                tree.insert(rel, Node::File { digest, executable });
            }
        }
    }
    Ok(tree)
}

fn file_digest(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

/// A SHA-256 digest as 64 hex digits, nothing else accepted.
mod hex_digest {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(digest: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(digest))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = <&str>::deserialize(d)?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(text, &mut digest)
            .map_err(|e| D::Error::custom(format!("digest {text:?}: {e}")))?;
        Ok(digest)
    }
}

/// The pure middle: what changed from `before` to `after`.
pub fn diff(before: &Snapshot, after: &Snapshot) -> Changes {
    let mut changes = Changes::default();
    for (path, node) in after {
        match before.get(path) {
            None => changes.added.push(path.clone()),
            Some(old) if old != node => changes.modified.push(path.clone()),
            Some(_) => {}
        }
    }
    changes.deleted = before
        .keys()
        .filter(|path| !after.contains_key(*path))
        .cloned()
        .collect();
    changes
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(byte: u8, executable: bool) -> Node {
        Node::File {
            digest: [byte; 32],
            executable,
        }
    }

    #[test]
    fn added_modified_and_deleted_paths() {
        let before = Snapshot::from([
            ("a".into(), file(1, false)),
            ("b".into(), file(2, false)),
            ("d".into(), Node::Dir),
            ("d/c".into(), file(3, false)),
            ("l".into(), Node::Symlink { target: "a".into() }),
            ("same".into(), file(4, false)),
        ]);
        let after = Snapshot::from([
            ("a".into(), file(9, false)),
            ("b".into(), file(2, true)),
            ("l".into(), Node::Symlink { target: "b".into() }),
            ("n".into(), Node::Dir),
            ("n/x".into(), file(5, false)),
            ("same".into(), file(4, false)),
        ]);
        let changes = diff(&before, &after);
        assert_eq!(changes.added, ["n", "n/x"]);
        assert_eq!(changes.modified, ["a", "b", "l"]);
        assert_eq!(changes.deleted, ["d", "d/c"]);
        assert!(diff(&after, &after).is_empty());
    }

    #[test]
    fn a_snapshot_survives_json_and_a_bad_one_is_refused() {
        let tree = Snapshot::from([
            ("a".into(), file(0xab, true)),
            ("d".into(), Node::Dir),
            ("l".into(), Node::Symlink { target: "a".into() }),
        ]);
        let json = serde_json::to_string(&tree).unwrap();
        assert!(json.contains(&"ab".repeat(32)), "{json}");
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), tree);
        for bad in [
            r#"{"a":{"file":{"digest":"abc","executable":false}}}"#,
            r#"{"a":{"file":{"digest":"zz","executable":false}}}"#,
            r#"{"a":{"file":{"digest":[1,2],"executable":false}}}"#,
            r#"{"a":{"device":{}}}"#,
            r#"{"a":{"dir":null,"extra":1}}"#,
        ] {
            assert!(serde_json::from_str::<Snapshot>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_path_that_changes_kind_is_modified() {
        let before = Snapshot::from([("p".into(), file(1, false))]);
        let after = Snapshot::from([("p".into(), Node::Dir)]);
        assert_eq!(diff(&before, &after).modified, ["p"]);
    }

    #[test]
    fn snapshots_read_content_and_never_follow_links() {
        let dir = tempdir();
        let root = dir.path();
        std::fs::create_dir(root.join("src")).unwrap();
        std::fs::write(root.join("src/main.rs"), "fn main() {}").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        let before = snapshot(root).unwrap();
        assert_eq!(
            before["etc"],
            Node::Symlink {
                target: "/etc".into()
            }
        );
        assert!(!before.keys().any(|k| k.starts_with("etc/")));

        // Same bytes written again: no change. New bytes: modified.
        std::fs::write(root.join("src/main.rs"), "fn main() {}").unwrap();
        assert!(diff(&before, &snapshot(root).unwrap()).is_empty());
        std::fs::write(root.join("src/main.rs"), "fn main() { run() }").unwrap();
        std::fs::write(root.join("new.txt"), "x").unwrap();
        std::fs::remove_file(root.join("etc")).unwrap();
        let changes = diff(&before, &snapshot(root).unwrap());
        assert_eq!(changes.modified, ["src/main.rs"]);
        assert_eq!(changes.added, ["new.txt"]);
        assert_eq!(changes.deleted, ["etc"]);
    }

    #[test]
    fn a_name_that_is_not_utf8_is_an_error() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempdir();
        let name = std::ffi::OsStr::from_bytes(b"bad\xff");
        std::fs::write(dir.path().join(name), "x").unwrap();
        let err = snapshot(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a UTF-8 name"), "{err}");
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }
}
