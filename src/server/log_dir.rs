//! Where step logs live on disk, kept private: logs hold whatever the steps printed,
//! secrets included.
//!
//! The default data directory, `$TMPDIR/baton-data`, sits in a directory every user
//! can write to, so it is held to the strictest rule: created with mode 0700, and an
//! existing one must be a real directory (not a symlink) owned by this process's
//! user, else the start fails; group or other permissions on it (an older Baton
//! made it 0755) are removed, with a warning. An explicit `--data-dir` is the
//! operator's (often a mounted volume whose root is not ours to change): created
//! 0700 when missing, otherwise left as it is. The `logs` directory under either is
//! ours: created 0700, and opened permissions are removed with a warning (on a
//! volume that does not allow it, the warning says so and the start goes on).

use std::fs::Permissions;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::warn;

/// The data directory when `--data-dir` is not given.
pub fn default_data_dir() -> PathBuf {
    std::env::temp_dir().join("baton-data")
}

#[derive(Debug, thiserror::Error)]
pub enum LogDirError {
    #[error("create the log directory {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("inspect the log directory {}: {source}", path.display())]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a directory (a symlink or a file): step logs are not kept there; remove it or pass --data-dir", .0.display())]
    NotADirectory(PathBuf),
    #[error("{} belongs to uid {owner}, not to this process (uid {me}): step logs are not kept there; remove it or pass --data-dir", path.display())]
    NotOurs { path: PathBuf, owner: u32, me: u32 },
    #[error("make the log directory {} private (mode 0700): {source}", path.display())]
    Chmod {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The logs directory under `data_dir` (the default when `None`), made private as
/// the module says. Returns its path.
pub fn prepare(data_dir: Option<&Path>) -> Result<PathBuf, LogDirError> {
    let Some(base) = data_dir else {
        let base = default_data_dir();
        let logs = base.join("logs");
        // A `logs` planted while the directory was open is checked as well.
        for dir in [&base, &logs] {
            ours(dir)?;
            private(dir)?;
        }
        return Ok(logs);
    };
    let logs = base.join("logs");
    create(&logs)?;
    if let Err(e) = private(&logs) {
        warn!(error = %e, "the log directory stays open to other users");
    }
    Ok(logs)
}

/// Create `dir` (and missing parents) with mode 0700; an existing one is kept.
fn create(dir: &Path) -> Result<(), LogDirError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| LogDirError::Create {
            path: dir.to_owned(),
            source,
        })
}

/// `dir` must be a directory itself (not a symlink to one) owned by our user.
fn ours(dir: &Path) -> Result<(), LogDirError> {
    create(dir)?;
    let meta = std::fs::symlink_metadata(dir).map_err(|source| LogDirError::Inspect {
        path: dir.to_owned(),
        source,
    })?;
    if !meta.file_type().is_dir() {
        return Err(LogDirError::NotADirectory(dir.to_owned()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(LogDirError::NotOurs {
            path: dir.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

/// Remove group and other permissions from `dir`, with a warning when there were any.
fn private(dir: &Path) -> Result<(), LogDirError> {
    let meta = std::fs::metadata(dir).map_err(|source| LogDirError::Inspect {
        path: dir.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(|source| {
        LogDirError::Chmod {
            path: dir.to_owned(),
            source,
        }
    })?;
    warn!(dir = %dir.display(), was = format!("{mode:o}"), "the log directory was open to other users: made private (0700)");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("baton-logdir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn an_explicit_data_dir_is_created_private_and_an_existing_one_left_alone() {
        let fresh = tmp("fresh").join("nested");
        let logs = prepare(Some(&fresh)).unwrap();
        assert_eq!(logs, fresh.join("logs"));
        assert_eq!((mode(&fresh), mode(&logs)), (0o700, 0o700));

        // A volume's root, open to a group: left so; its logs directory made private.
        let volume = tmp("volume");
        std::fs::create_dir_all(volume.join("logs")).unwrap();
        std::fs::set_permissions(&volume, Permissions::from_mode(0o2775)).unwrap();
        std::fs::set_permissions(volume.join("logs"), Permissions::from_mode(0o777)).unwrap();
        let logs = prepare(Some(&volume)).unwrap();
        assert_eq!((mode(&volume), mode(&logs)), (0o2775, 0o700));
        for d in [fresh.parent().unwrap(), &volume] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn the_default_data_dir_must_be_ours_and_is_made_private() {
        // `ours` + `private` as `prepare(None)` applies them, on a path of the test's.
        let open = tmp("open");
        std::fs::create_dir_all(&open).unwrap();
        std::fs::set_permissions(&open, Permissions::from_mode(0o777)).unwrap();
        ours(&open).unwrap();
        private(&open).unwrap();
        assert_eq!(mode(&open), 0o700);

        let fresh = tmp("new");
        ours(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);

        // A symlink planted where the directory should be is refused, not followed.
        let link = tmp("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        assert!(matches!(ours(&link), Err(LogDirError::NotADirectory(_))));
        let file = tmp("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(ours(&file), Err(LogDirError::Create { .. })));

        // Another user's directory (only root can make one here).
        if nix::unistd::geteuid().is_root() {
            let theirs = tmp("theirs");
            std::fs::create_dir_all(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
            let err = ours(&theirs).unwrap_err();
            assert!(
                matches!(err, LogDirError::NotOurs { owner: 65534, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("--data-dir"), "{err}");
            std::fs::remove_dir_all(&theirs).unwrap();
        }
        for p in [&link, &file] {
            std::fs::remove_file(p).unwrap();
        }
        for d in [&open, &fresh] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}
