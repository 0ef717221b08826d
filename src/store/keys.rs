//! Where each blob lives in the store: pure, validated names.
//!
//! ```text
//! jobs/<namespace>/<name>-<uid>/logs/<step>.log            a finished step's log
//! jobs/<namespace>/<name>-<uid>/artifacts/<hex>.tar.zst    a step's changes
//! uploads/<namespace>/<hex>.tar.zst                        content a user sent in
//! ```
//!
//! A Job's blobs share one prefix, so deleting the Job deletes one prefix. Every
//! part is checked before it becomes a key: a Kubernetes name never holds `/`, but
//! a key is built from what a client sent, and a `..` or a slash must never reach
//! the store.

use object_store::path::Path;

/// A part of a key that is not a Kubernetes name, or a digest that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part} {value:?} cannot name a stored blob: {why}")]
pub struct BadKey {
    pub part: &'static str,
    pub value: String,
    pub why: &'static str,
}

/// A SHA-256 digest, `sha256:` and 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

impl Digest {
    pub fn parse(value: &str) -> Result<Self, BadKey> {
        let hex = value.strip_prefix("sha256:").ok_or_else(|| BadKey {
            part: "digest",
            value: clip(value),
            why: "expected sha256:<64 lowercase hex digits>",
        })?;
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(hex.to_owned()))
        } else {
            Err(BadKey {
                part: "digest",
                value: clip(value),
                why: "expected sha256:<64 lowercase hex digits>",
            })
        }
    }

    /// From the raw 32 bytes of a SHA-256 hash.
    pub fn of_hash(hash: &[u8]) -> Self {
        Self(hex::encode(hash))
    }

    pub fn hex(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// One Job's blobs: namespace, name and uid (a re-created Job starts afresh).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey {
    namespace: String,
    name: String,
    uid: String,
}

impl JobKey {
    pub fn new(namespace: &str, name: &str, uid: &str) -> Result<Self, BadKey> {
        name_part("namespace", namespace)?;
        name_part("job name", name)?;
        name_part("job uid", uid)?;
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The prefix all of this Job's blobs are under.
    pub fn prefix(&self) -> Path {
        Path::from_iter([
            "jobs",
            &self.namespace,
            &format!("{}-{}", self.name, self.uid),
        ])
    }

    /// A finished step's log.
    pub fn log(&self, step: &str) -> Result<Path, BadKey> {
        name_part("step", step)?;
        Ok(self.prefix().child("logs").child(format!("{step}.log")))
    }

    /// The archive of a step's changes.
    pub fn archive(&self, digest: &Digest) -> Path {
        self.prefix()
            .child("artifacts")
            .child(format!("{}.tar.zst", digest.hex()))
    }
}

/// Content a user uploaded for Jobs of `namespace` to start from (shared by
/// every Job there that names it; a Job elsewhere never finds it).
pub fn upload(namespace: &str, digest: &Digest) -> Result<Path, BadKey> {
    name_part("namespace", namespace)?;
    Ok(Path::from_iter([
        UPLOADS,
        namespace,
        &format!("{}.tar.zst", digest.hex()),
    ]))
}

/// Where uploads live.
pub const UPLOADS: &str = "uploads";

/// The uid of a Job's prefix directory, `<name>-<uid>` (a uid is 36 characters).
pub fn uid_of_job_dir(dir: &str) -> Option<&str> {
    let uid = dir.get(dir.len().checked_sub(36)?..)?;
    (dir.len() > 37 && dir.as_bytes()[dir.len() - 37] == b'-').then_some(uid)
}

/// A Kubernetes name (DNS subdomain or label) or uid: never empty, `.`/`..`, a
/// separator, or anything but lowercase letters, digits, `-`, `.`, `_`.
pub fn name_part(part: &'static str, value: &str) -> Result<(), BadKey> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value != "."
        && value != ".."
        && value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(BadKey {
            part,
            value: clip(value),
            why: "lowercase letters, digits, '-', '.', '_' only",
        })
    }
}

fn clip(value: &str) -> String {
    value.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const UID: &str = "0f8e4a52-77b5-4bb0-9c35-6f2c1d3e4a5b";

    #[test]
    fn keys_of_one_job_share_its_prefix() {
        let job = JobKey::new("ci", "build.1", UID).unwrap();
        let d = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        let prefix = job.prefix().to_string();
        assert_eq!(prefix, format!("jobs/ci/build.1-{UID}"));
        assert_eq!(
            job.log("test").unwrap().to_string(),
            format!("{prefix}/logs/test.log")
        );
        assert_eq!(
            job.archive(&d).to_string(),
            format!("{prefix}/artifacts/{}.tar.zst", "ab".repeat(32))
        );
        assert_eq!(
            upload("ci", &d).unwrap().to_string(),
            format!("uploads/ci/{}.tar.zst", "ab".repeat(32))
        );
        assert!(upload("../x", &d).is_err());
        assert_eq!(uid_of_job_dir(&format!("build.1-{UID}")), Some(UID));
    }

    #[test]
    fn hostile_parts_never_become_keys() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "A",
            "a b",
            "a\0b",
            "é",
            &"a".repeat(254),
        ] {
            assert!(JobKey::new(bad, "n", UID).is_err(), "namespace {bad:?}");
            assert!(JobKey::new("ns", bad, UID).is_err(), "name {bad:?}");
            assert!(
                JobKey::new("ns", "n", UID).unwrap().log(bad).is_err(),
                "step {bad:?}"
            );
        }
    }

    #[test]
    fn digests_are_exactly_sha256_hex() {
        let good = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert_eq!(Digest::parse(&good).unwrap().to_string(), good);
        for bad in [
            String::new(),
            "0123".into(),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}", "a".repeat(65)),
            format!("sha256:{}/..", "a".repeat(62)),
            format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn job_dirs_without_a_uid_are_not_taken_for_one() {
        assert_eq!(uid_of_job_dir(UID), None);
        assert_eq!(uid_of_job_dir("short"), None);
        assert_eq!(uid_of_job_dir(&format!("x{UID}")), None);
    }
}
