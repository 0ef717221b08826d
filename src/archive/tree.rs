//! A directory as the content a Job starts from (`job run --upload DIR`, and
//! `baton run` on the current directory): the paths `spec.inputs` maps (all of
//! it when there are none), less `.git/` and what `.gitignore` files ignore,
//! packed as an archive in which every path is added. Extraction is then the
//! same safe extraction as for a step's changes.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::path::{link_stays_inside, refuse};
use super::{Limits, Manifest, Packed, VERSION};
use crate::crd::job::Input;

/// The files of a directory chosen for upload: archive path to source path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, PathBuf>,
    /// Bytes of regular files, in total.
    pub bytes: u64,
    /// Symlinks left out: their targets lead out of where they land.
    pub skipped: Vec<String>,
}

impl Tree {
    /// Paths in the archive (files, directories, symlinks).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pack every path as added, sorted: the same tree gives the same bytes.
    pub fn pack(&self, out: impl Write) -> io::Result<Packed> {
        let manifest = Manifest {
            version: VERSION,
            added: self.entries.keys().cloned().collect(),
            modified: Vec::new(),
            deleted: Vec::new(),
        };
        let sources: Vec<(String, PathBuf)> = self
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        super::pack::write(&manifest, &sources, out, self.skipped.clone())
    }
}

/// Why a directory cannot be packed as content.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("spec.inputs[{index}].{field} {value:?}: {why}")]
    BadInput {
        index: usize,
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("spec.inputs[{index}]: {from:?} is not in {root}")]
    Missing {
        index: usize,
        from: String,
        root: String,
    },
    #[error("two inputs put a file at {0:?}")]
    Overlap(String),
    #[error(
        "{root} holds over {limit} {what}: list what the Job needs in spec.inputs, or ignore the rest in .gitignore"
    )]
    TooBig {
        root: String,
        limit: u64,
        what: &'static str,
    },
    #[error("{0}: not a UTF-8 name")]
    NotUtf8(String),
    #[error("read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// What `inputs` select under `root` (every path when empty), within `limits`.
pub fn select(root: &Path, inputs: &[Input], limits: &Limits) -> Result<Tree, TreeError> {
    let everything = [Input {
        from: ".".into(),
        to: None,
    }];
    let inputs = if inputs.is_empty() {
        &everything[..]
    } else {
        inputs
    };
    let mut tree = Tree::default();
    for (index, input) in inputs.iter().enumerate() {
        let (from, to) = mapping(index, input)?;
        let source = root.join(from.as_deref().unwrap_or("."));
        if source.symlink_metadata().is_err() {
            return Err(TreeError::Missing {
                index,
                from: input.from.clone(),
                root: root.display().to_string(),
            });
        }
        walk(&mut tree, &source, to.as_deref(), root, limits)?;
    }
    Ok(tree)
}

/// `(from, to)` as plain relative paths; `None` is the directory itself.
fn mapping(index: usize, input: &Input) -> Result<(Option<String>, Option<String>), TreeError> {
    let plain = |field, value: &str| -> Result<Option<String>, TreeError> {
        let trimmed = value.trim_end_matches('/');
        if trimmed == "." || trimmed.is_empty() {
            return Ok(None);
        }
        match refuse(trimmed) {
            None => Ok(Some(trimmed.to_owned())),
            Some(why) => Err(TreeError::BadInput {
                index,
                field,
                value: value.to_owned(),
                why,
            }),
        }
    };
    let from = plain("from", &input.from)?;
    let to = match &input.to {
        Some(to) => plain("to", to)?,
        None => from.clone(),
    };
    Ok((from, to))
}

fn walk(
    tree: &mut Tree,
    source: &Path,
    to: Option<&str>,
    root: &Path,
    limits: &Limits,
) -> Result<(), TreeError> {
    let walker = ignore::WalkBuilder::new(source)
        .standard_filters(false)
        .git_ignore(true)
        .git_exclude(true)
        .parents(true)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for entry in walker {
        let entry = entry.map_err(|e| TreeError::Io {
            path: source.display().to_string(),
            source: io::Error::other(e.to_string()),
        })?;
        let rel = entry.path().strip_prefix(source).unwrap_or(entry.path());
        let rel = rel
            .to_str()
            .ok_or_else(|| TreeError::NotUtf8(entry.path().display().to_string()))?;
        let name = match (to, rel) {
            (None, "") => continue,
            (Some(to), "") => to.to_owned(),
            (None, rel) => rel.to_owned(),
            (Some(to), rel) => format!("{to}/{rel}"),
        };
        add(tree, name, entry.path(), root, limits)?;
    }
    Ok(())
}

fn add(
    tree: &mut Tree,
    name: String,
    path: &Path,
    root: &Path,
    limits: &Limits,
) -> Result<(), TreeError> {
    let io_at = |source| TreeError::Io {
        path: path.display().to_string(),
        source,
    };
    let meta = path.symlink_metadata().map_err(io_at)?;
    if meta.is_file() {
        tree.bytes += meta.len();
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(io_at)?;
        if !link_stays_inside(&name, &target.to_string_lossy()) {
            tree.skipped.push(name);
            return Ok(());
        }
    } else if !meta.is_dir() {
        return Ok(()); // a socket or FIFO: not content
    }
    let too_big = |limit, what| TreeError::TooBig {
        root: root.display().to_string(),
        limit,
        what,
    };
    if tree.bytes > limits.max_bytes {
        return Err(too_big(limits.max_bytes, "bytes"));
    }
    if tree.entries.len() as u64 >= limits.max_entries {
        return Err(too_big(limits.max_entries, "paths"));
    }
    match tree.entries.insert(name.clone(), path.to_owned()) {
        Some(earlier) if !meta.is_dir() || !earlier.is_dir() => Err(TreeError::Overlap(name)),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
