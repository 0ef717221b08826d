//! Where a runner's local steps run: a work directory of the runner's user only
//! (0700), apart from the runner's state directory (which holds its token), and a
//! runner process that steps — processes of the same user — cannot look into.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Create `dir` (and missing parents) readable by this user only; an existing one
/// must be a directory owned by this user and is tightened to 0700. A directory
/// someone else made (say, in a shared `/tmp`) is refused, not used.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let shown = dir.display();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("create {shown}: {e}"))?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("inspect {shown}: {e}"))?;
    let me = std::fs::metadata("/proc/self")
        .map_err(|e| format!("find this process's user (/proc/self): {e}"))?
        .uid();
    if !meta.is_dir() {
        return Err(format!("{shown} is not a directory"));
    }
    if meta.uid() != me {
        return Err(format!(
            "{shown} belongs to uid {}, not to this runner's uid {me}: choose another --work-dir",
            meta.uid()
        ));
    }
    if meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("make {shown} private (0700): {e}"))?;
    }
    Ok(())
}

/// `baton runner`'s default work directory: beside the state directory, named
/// after it with `-work` (`/srv/r1` → `/srv/r1-work`). As unique as the state
/// directory, found again after a restart (to reap or resume its steps), and
/// removed with it by whoever cleans up beside it.
pub fn default_work_dir(state_dir: &Path) -> Result<PathBuf, String> {
    let state = resolved(state_dir);
    match (state.parent(), state.file_name()) {
        (Some(parent), Some(name)) => {
            let mut name = name.to_os_string();
            name.push("-work");
            Ok(parent.join(name))
        }
        _ => Err(format!(
            "cannot derive a work directory from the state directory {}: set --work-dir",
            state_dir.display()
        )),
    }
}

/// Refuse a work directory that is, holds or lies inside the state directory:
/// steps see their workspace (and may walk up from it with relative paths), and
/// must not find the runner's token there.
pub fn apart(work: &Path, state: &Path) -> Result<(), String> {
    let (w, s) = (resolved(work), resolved(state));
    if w.starts_with(&s) || s.starts_with(&w) {
        return Err(format!(
            "the work directory {} and the state directory {} must be apart (neither inside \
             the other): steps run in the work directory, the state directory holds the \
             runner's token",
            work.display(),
            state.display()
        ));
    }
    Ok(())
}

/// The path with symlinks resolved when it exists; otherwise absolute, with `.`
/// and `..` taken lexically.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Make this process undumpable, so processes of the same user — the local
/// backend's steps — cannot read its environment (`BATON_RUNNER_TOKEN`) or memory
/// through `/proc/PID/{environ,mem}` or attach a debugger. Steps start dumpable
/// again (exec resets it), so this changes nothing for them.
pub fn shield_process() -> Result<(), String> {
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| format!("make the runner process undumpable (prctl PR_SET_DUMPABLE): {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn work_and_state_directories_must_be_apart() {
        let ok = [
            ("/var/lib/baton-runner/work", "/var/lib/baton-runner/state"),
            ("/home/ci/.cache/baton/runner-r1", "/srv/r1"),
            ("/srv/r1-work", "/srv/r1"),
        ];
        for (work, state) in ok {
            assert_eq!(
                apart(Path::new(work), Path::new(state)),
                Ok(()),
                "{work} {state}"
            );
        }
        let refused = [
            ("/srv/r1/work", "/srv/r1"),
            ("/srv/r1", "/srv/r1/work/.."),
            ("/srv", "/srv/r1"),
            ("/srv/r1/../r1/work", "/srv/r1"),
            ("relative/work", "relative"),
        ];
        for (work, state) in refused {
            let err = apart(Path::new(work), Path::new(state)).unwrap_err();
            assert!(err.contains("must be apart"), "{work} {state}: {err}");
        }
    }

    #[test]
    fn the_default_work_dir_is_beside_the_state_dir() {
        let cases = [
            ("/srv/r1", "/srv/r1-work"),
            (
                "/var/lib/baton-runner/state/",
                "/var/lib/baton-runner/state-work",
            ),
            ("/srv/x/../r1", "/srv/r1-work"),
        ];
        for (state, want) in cases {
            let got = default_work_dir(Path::new(state)).unwrap();
            assert_eq!(got, PathBuf::from(want), "{state}");
            assert_eq!(apart(&got, Path::new(state)), Ok(()), "{state}");
        }
        assert!(default_work_dir(Path::new("/")).is_err());
    }

    #[test]
    fn a_private_dir_is_made_0700_and_tightened() {
        let base = std::env::temp_dir().join(format!("baton-dirs-{}", std::process::id()));
        let dir = base.join("a/work");
        private_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "an existing directory is tightened");
        let file = base.join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(
            private_dir(&file).is_err(),
            "a file is not a work directory"
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
