//! Which changes a step's `artifacts` globs select.
//!
//! A path is selected when it or one of its directories matches a glob, so
//! `dist` takes everything under `dist/`. `*` stays within one directory and
//! `**` crosses them, as in `.gitignore` (`*.log` is top-level only;
//! `**/*.log` is any depth).

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::Changes;
use crate::crd::Step;

/// A step's globs, compiled.
#[derive(Clone, Debug)]
pub struct Selection {
    set: GlobSet,
}

impl Selection {
    /// Compile `globs`; the first that does not parse is the error.
    pub fn new(globs: &[String]) -> Result<Self, String> {
        let mut builder = GlobSetBuilder::new();
        for glob in globs {
            builder.add(compile(glob)?);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(Self { set })
    }

    /// Whether `path` or one of its directories matches.
    pub fn selects(&self, path: &str) -> bool {
        let mut prefix_ends = path.match_indices('/').map(|(i, _)| i).chain([path.len()]);
        prefix_ends.any(|end| self.set.is_match(&path[..end]))
    }

    /// The changes whose paths are selected.
    pub fn filter(&self, changes: &Changes) -> Changes {
        let keep = |paths: &[String]| paths.iter().filter(|p| self.selects(p)).cloned().collect();
        Changes {
            added: keep(&changes.added),
            modified: keep(&changes.modified),
            deleted: keep(&changes.deleted),
        }
    }
}

fn compile(glob: &str) -> Result<Glob, String> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("artifacts glob {glob:?}: {e}"))
}

/// Every step's globs that do not parse, as `step NAME: artifacts glob ...`.
pub fn glob_problems(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .flat_map(|step| {
            let globs = step.artifacts.iter().flatten();
            globs.filter_map(move |g| compile(g).err().map(|e| format!("step {}: {e}", step.name)))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn selection(globs: &[&str]) -> Selection {
        Selection::new(&globs.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn globs_match_paths_and_whole_directories() {
        let s = selection(&["dist", "*.log", "reports/**/*.xml"]);
        for yes in [
            "dist",
            "dist/app.js",
            "dist/a/b.css",
            "build.log",
            "reports/x/y/t.xml",
            "reports/t.xml",
        ] {
            assert!(s.selects(yes), "{yes}");
        }
        for no in ["distro/x", "logs/build.log", "src/main.rs", "reports/t.txt"] {
            assert!(!s.selects(no), "{no}");
        }
    }

    #[test]
    fn filtering_keeps_each_kind_of_change() {
        let changes = Changes {
            added: vec!["dist".into(), "dist/a.js".into(), "tmp.o".into()],
            modified: vec!["dist/index.html".into(), "src/lib.rs".into()],
            deleted: vec!["dist/old.js".into(), "old.o".into()],
        };
        let got = selection(&["dist"]).filter(&changes);
        assert_eq!(got.added, ["dist", "dist/a.js"]);
        assert_eq!(got.modified, ["dist/index.html"]);
        assert_eq!(got.deleted, ["dist/old.js"]);
    }

    #[test]
    fn a_glob_that_does_not_parse_is_named() {
        let step = Step {
            name: "build".into(),
            artifacts: Some(vec!["ok/*".into(), "bad[".into()]),
            ..Default::default()
        };
        let problems = glob_problems(&[step]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("step build: artifacts glob \"bad[\""),
            "{problems:?}"
        );
        assert!(Selection::new(&["bad[".into()]).is_err());
    }
}
