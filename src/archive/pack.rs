//! Packing a step's changes from its workspace into an archive.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::path::link_stays_inside;
use super::{Changes, FILES, MANIFEST, Manifest, VERSION};

/// zstd's default level: fast enough to keep up with a disk, and a workspace's
/// text compresses well at it.
const LEVEL: i32 = 3;

/// What was written: the archive's content address and size, and its counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// `sha256:<hex>` of the compressed bytes.
    pub digest: String,
    pub size: u64,
    pub added: usize,
    pub modified: usize,
    pub deleted: usize,
    /// Symlinks changed but left out: their targets lead out of the tree.
    pub skipped: Vec<String>,
}

/// Pack `changes` of the tree at `root` into `out`. A path that vanished since
/// the snapshot is recorded as deleted, so the archive tells the tree as it is.
pub fn pack(root: &Path, changes: &Changes, out: impl Write) -> io::Result<Packed> {
    let mut manifest = Manifest {
        version: VERSION,
        added: Vec::new(),
        modified: Vec::new(),
        deleted: changes.deleted.clone(),
    };
    let mut skipped = Vec::new();
    for (list, into) in [
        (&changes.added, &mut manifest.added),
        (&changes.modified, &mut manifest.modified),
    ] {
        for path in list {
            match std::fs::read_link(root.join(path)) {
                // A link out of the tree (`/usr/bin/node`) would make the whole
                // archive refused on extraction: it is left out, and said so.
                Ok(target) if !link_stays_inside(path, &target.to_string_lossy()) => {
                    skipped.push(path.clone());
                }
                _ if root.join(path).symlink_metadata().is_ok() => into.push(path.clone()),
                _ => manifest.deleted.push(path.clone()),
            }
        }
    }
    manifest.deleted.sort();
    let mut paths: Vec<&String> = manifest.added.iter().chain(&manifest.modified).collect();
    paths.sort();
    let sources: Vec<(String, PathBuf)> = paths
        .into_iter()
        .map(|p| (p.clone(), root.join(p)))
        .collect();
    write(&manifest, &sources, out, skipped)
}

/// Write `manifest`, then each `(archive path, source)` in the order given.
pub(super) fn write(
    manifest: &Manifest,
    sources: &[(String, PathBuf)],
    out: impl Write,
    skipped: Vec<String>,
) -> io::Result<Packed> {
    let hashing = HashingWriter::new(out);
    let encoder = zstd::Encoder::new(hashing, LEVEL)?;
    let mut tar = tar::Builder::new(encoder);
    let json = serde_json::to_vec(manifest).map_err(io::Error::other)?;
    append_bytes(&mut tar, MANIFEST, &json)?;
    for (path, source) in sources {
        append_path(&mut tar, source, path)?;
    }
    let hashing = tar.into_inner()?.finish()?;
    let (digest, size) = hashing.finish()?;
    Ok(Packed {
        digest,
        size,
        added: manifest.added.len(),
        modified: manifest.modified.len(),
        deleted: manifest.deleted.len(),
        skipped,
    })
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
    tar.append_data(&mut h, name, bytes)
}

fn append_path<W: Write>(tar: &mut tar::Builder<W>, full: &Path, path: &str) -> io::Result<()> {
    let name = format!("{FILES}{path}");
    let meta = full.symlink_metadata()?;
    if meta.is_dir() {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, &name, io::empty())
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(full)?;
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, &name, target)
    } else if meta.is_file() {
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        let file = File::open(full)?;
        // Exactly the length read now: a file another step is still writing is
        // cut there (or zero-padded if it shrank), never a torn archive.
        let len = file.metadata()?.len();
        let mut h = header(tar::EntryType::Regular, mode, len);
        let body = io::Read::take(io::Read::chain(file, io::repeat(0)), len);
        tar.append_data(&mut h, &name, body)
    } else {
        // A device, socket or FIFO made by the step: not content to carry.
        Ok(())
    }
}

/// Counts and hashes what passes through to `inner`.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn finish(mut self) -> io::Result<(String, u64)> {
        self.inner.flush()?;
        Ok((
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.size,
        ))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
