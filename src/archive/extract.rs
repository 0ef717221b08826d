//! Extracting a change archive into a directory, safely: every entry is checked
//! and unpacked into a staging directory first, so a refused archive leaves the
//! destination as it was. Only then are the files moved into place and the
//! deleted paths removed.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::path::{link_stays_inside, refuse};
use super::{FILES, MANIFEST, Manifest, VERSION};

/// Caps on what one archive may unpack to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of file content, in total.
    pub max_bytes: u64,
    /// Entries (files, directories, links) plus deleted paths.
    pub max_entries: u64,
    /// Unpacked bytes per compressed byte, checked once past `ratio_floor`.
    pub max_ratio: u64,
    pub ratio_floor: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 2 << 30,
            max_entries: 200_000,
            max_ratio: 1_000,
            ratio_floor: 16 << 20,
        }
    }
}

/// Why an archive was not extracted. The destination is untouched.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("not a change archive: {0}")]
    NotAnArchive(String),
    #[error("{path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("{path:?}: a {kind} entry; only files, directories and symlinks are extracted")]
    EntryType { path: String, kind: String },
    #[error("{path:?}: the symlink's target {target:?} leads outside the directory")]
    LinkEscapes { path: String, target: String },
    #[error("{path:?}: would be written through the symlink {link:?}")]
    ThroughLink { path: String, link: String },
    #[error("{path:?}: appears twice")]
    Duplicate { path: String },
    #[error("over the cap of {0} bytes unpacked")]
    TooLarge(u64),
    #[error("over the cap of {0} entries")]
    TooManyEntries(u64),
    #[error("compression ratio over {0}:1 (a decompression bomb?)")]
    Ratio(u64),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

/// What an extraction did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Extracted {
    pub written: usize,
    pub deleted: usize,
    pub bytes: u64,
}

/// Extract `input` (a zstd-compressed change archive) into `dest`, creating it.
pub fn extract(input: impl Read, dest: &Path, limits: &Limits) -> Result<Extracted, Refused> {
    fs::create_dir_all(dest).map_err(io_at(dest))?;
    let staging = Staging::new(dest)?;
    let (manifest, unpacked) = unpack(input, &staging.path, limits)?;
    check_destination(dest, &unpacked, &manifest.deleted)?;
    let mut done = Extracted::default();
    for entry in &unpacked {
        move_into_place(&staging.path, dest, entry)?;
        done.written += 1;
        done.bytes += entry.bytes;
    }
    done.deleted = delete(dest, &manifest.deleted)?;
    Ok(done)
}

/// Only the manifest of the archive `input`: what it adds, modifies and
/// deletes, checked as [`extract`] checks it.
pub fn manifest(input: impl Read, limits: &Limits) -> Result<Manifest, Refused> {
    let decoder = zstd::Decoder::new(input).map_err(not_an_archive)?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(not_an_archive)?;
    read_manifest(entries.next(), limits)
}

/// An entry unpacked into staging, to be moved into place.
struct Unpacked {
    path: String,
    is_dir: bool,
    bytes: u64,
}

fn unpack(
    input: impl Read,
    staging: &Path,
    limits: &Limits,
) -> Result<(Manifest, Vec<Unpacked>), Refused> {
    let compressed = Arc::new(AtomicU64::new(0));
    let counting = CountingReader {
        inner: input,
        count: compressed.clone(),
    };
    let decoder = zstd::Decoder::new(counting).map_err(not_an_archive)?;
    let mut archive = tar::Archive::new(decoder);
    let mut entries = archive.entries().map_err(not_an_archive)?;
    let manifest = read_manifest(entries.next(), limits)?;
    let mut seen = BTreeSet::new();
    let mut links = BTreeSet::new();
    let mut unpacked = Vec::new();
    let mut bytes = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(not_an_archive)?;
        let path = entry_path(&entry)?;
        if !seen.insert(path.clone()) {
            return Err(Refused::Duplicate { path });
        }
        if seen.len() as u64 + manifest.deleted.len() as u64 > limits.max_entries {
            return Err(Refused::TooManyEntries(limits.max_entries));
        }
        let through = ancestors(&path)
            .find(|a| links.contains(*a))
            .map(str::to_string);
        if let Some(link) = through {
            return Err(Refused::ThroughLink { path, link });
        }
        let target = staging.join(&path);
        let kind = entry.header().entry_type();
        let size = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(not_an_archive)?;
                if bytes.saturating_add(size) > limits.max_bytes {
                    return Err(Refused::TooLarge(limits.max_bytes));
                }
                let executable = entry.header().mode().unwrap_or(0) & 0o111 != 0;
                // The ratio is watched while a file is written: one huge entry
                // of zeros is stopped early, not after filling the disk.
                let before = bytes;
                write_file(&mut entry, &target, executable, &mut |written| {
                    check_ratio(before + written, compressed.load(Ordering::Relaxed), limits)
                })?;
                bytes += size;
                size
            }
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(io_at(&target))?;
                0
            }
            tar::EntryType::Symlink => {
                let to = link_target(&entry, &path)?;
                make_parent(&target)?;
                std::os::unix::fs::symlink(&to, &target).map_err(io_at(&target))?;
                links.insert(path.clone());
                0
            }
            other => {
                let kind = format!("{other:?}").to_lowercase();
                return Err(Refused::EntryType { path, kind });
            }
        };
        unpacked.push(Unpacked {
            path,
            is_dir: kind == tar::EntryType::Directory,
            bytes: size,
        });
    }
    if let Some(path) = manifest.deleted.iter().find(|p| seen.contains(*p)) {
        return Err(Refused::Duplicate { path: path.clone() });
    }
    Ok((manifest, unpacked))
}

fn read_manifest<R: Read>(
    first: Option<io::Result<tar::Entry<'_, R>>>,
    limits: &Limits,
) -> Result<Manifest, Refused> {
    let mut entry = first
        .ok_or_else(|| Refused::NotAnArchive("empty".into()))?
        .map_err(not_an_archive)?;
    let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    if name != MANIFEST || entry.header().entry_type() != tar::EntryType::Regular {
        return Err(Refused::NotAnArchive(format!(
            "first entry is {name:?}, not {MANIFEST}"
        )));
    }
    // A path is at most 4 KiB: this holds the deleted list of a full archive.
    let cap = limits.max_entries.saturating_mul(4200).min(1 << 30);
    let mut json = Vec::new();
    entry
        .by_ref()
        .take(cap + 1)
        .read_to_end(&mut json)
        .map_err(not_an_archive)?;
    if json.len() as u64 > cap {
        return Err(Refused::TooLarge(cap));
    }
    let manifest: Manifest = serde_json::from_slice(&json)
        .map_err(|e| Refused::NotAnArchive(format!("{MANIFEST}: {e}")))?;
    if manifest.version != VERSION {
        return Err(Refused::NotAnArchive(format!(
            "format version {}; this baton reads {VERSION}",
            manifest.version
        )));
    }
    if manifest.deleted.len() as u64 > limits.max_entries {
        return Err(Refused::TooManyEntries(limits.max_entries));
    }
    for path in &manifest.deleted {
        if let Some(why) = refuse(path) {
            return Err(Refused::BadPath {
                path: path.clone(),
                why,
            });
        }
    }
    Ok(manifest)
}

/// The entry's path under `files/`, checked.
fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, Refused> {
    let raw = entry.path_bytes();
    let Ok(name) = std::str::from_utf8(&raw) else {
        let path = String::from_utf8_lossy(&raw).into_owned();
        return Err(Refused::BadPath {
            path,
            why: "not UTF-8",
        });
    };
    let Some(rel) = name.strip_prefix(FILES) else {
        let path = name.to_string();
        return Err(Refused::BadPath {
            path,
            why: "outside files/",
        });
    };
    // Directories may carry a trailing slash in tar; nothing else may.
    let rel = if entry.header().entry_type() == tar::EntryType::Directory {
        rel.strip_suffix('/').unwrap_or(rel)
    } else {
        rel
    };
    match refuse(rel) {
        Some(why) => Err(Refused::BadPath {
            path: rel.to_string(),
            why,
        }),
        None => Ok(rel.to_string()),
    }
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>, path: &str) -> Result<String, Refused> {
    let raw = entry.link_name_bytes().unwrap_or_default();
    let target = String::from_utf8_lossy(&raw).into_owned();
    if link_stays_inside(path, &target) {
        Ok(target)
    } else {
        Err(Refused::LinkEscapes {
            path: path.to_string(),
            target,
        })
    }
}

/// Copy an entry's content to `target`, calling `progress` with the bytes
/// written so far after every chunk.
fn write_file(
    entry: &mut impl Read,
    target: &Path,
    executable: bool,
    progress: &mut dyn FnMut(u64) -> Result<(), Refused>,
) -> Result<(), Refused> {
    make_parent(target)?;
    let mut file = File::create(target).map_err(io_at(target))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        let n = entry.read(&mut buf).map_err(not_an_archive)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(io_at(target))?;
        written += n as u64;
        progress(written)?;
    }
    let mode = if executable { 0o755 } else { 0o644 };
    fs::set_permissions(target, fs::Permissions::from_mode(mode)).map_err(io_at(target))
}

fn check_ratio(unpacked: u64, compressed: u64, limits: &Limits) -> Result<(), Refused> {
    if unpacked > limits.ratio_floor && unpacked / compressed.max(1) > limits.max_ratio {
        return Err(Refused::Ratio(limits.max_ratio));
    }
    Ok(())
}

/// Every proper ancestor of a relative path, nearest the root first.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Nothing is written through a symlink already in `dest`, and a deleted path
/// is never reached through one either.
fn check_destination(
    dest: &Path,
    unpacked: &[Unpacked],
    deleted: &[String],
) -> Result<(), Refused> {
    let paths = unpacked
        .iter()
        .map(|u| u.path.as_str())
        .chain(deleted.iter().map(String::as_str));
    for path in paths {
        for ancestor in ancestors(path) {
            let is_link = dest
                .join(ancestor)
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink());
            if is_link {
                let (path, link) = (path.to_string(), ancestor.to_string());
                return Err(Refused::ThroughLink { path, link });
            }
        }
    }
    Ok(())
}

fn move_into_place(staging: &Path, dest: &Path, entry: &Unpacked) -> Result<(), Refused> {
    let target = dest.join(&entry.path);
    let existing = target.symlink_metadata().ok();
    if entry.is_dir {
        if existing.as_ref().is_some_and(|m| !m.is_dir()) {
            fs::remove_file(&target).map_err(io_at(&target))?;
        }
        return fs::create_dir_all(&target).map_err(io_at(&target));
    }
    match existing {
        Some(m) if m.is_dir() => fs::remove_dir_all(&target).map_err(io_at(&target))?,
        _ => make_parent(&target)?,
    }
    let from = staging.join(&entry.path);
    fs::rename(&from, &target).map_err(io_at(&target))
}

/// Remove the deleted paths, deepest first; a directory that still holds
/// files of the destination's own is kept.
fn delete(dest: &Path, deleted: &[String]) -> Result<usize, Refused> {
    let mut paths: Vec<&String> = deleted.iter().collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    let mut removed = 0;
    for path in paths {
        let target = dest.join(path);
        let Ok(meta) = target.symlink_metadata() else {
            continue;
        };
        let result = if meta.is_dir() {
            fs::remove_dir(&target)
        } else {
            fs::remove_file(&target)
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTEMPTY) => {}
            Err(e) => return Err(io_at(&target)(e)),
        }
    }
    Ok(removed)
}

fn make_parent(target: &Path) -> Result<(), Refused> {
    match target.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(io_at(parent)),
        None => Ok(()),
    }
}

fn not_an_archive(e: io::Error) -> Refused {
    Refused::NotAnArchive(e.to_string())
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> Refused + '_ {
    move |source| Refused::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A directory beside the files, removed however extraction ends.
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn new(dest: &Path) -> Result<Self, Refused> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| Refused::NotAnArchive(e.to_string()))?;
        let path = dest.join(format!(".baton-extract-{}", hex::encode(nonce)));
        fs::create_dir(&path).map_err(io_at(&path))?;
        Ok(Self { path })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
