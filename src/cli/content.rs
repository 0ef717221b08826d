//! The content a Job starts from, packed on this machine: `baton run` packs the
//! current directory, `job run --upload DIR` packs DIR and sends it. Both pack
//! what `spec.inputs` maps, less `.git/` and what `.gitignore` ignores, into an
//! unnamed temporary file, and say what they packed.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::archive::{self, Limits, Packed};
use crate::crd::job::Input;

/// A directory packed into a temporary archive (removed when dropped).
pub struct Packing {
    pub file: tempfile::NamedTempFile,
    pub packed: Packed,
    /// Bytes of the files packed, before compression.
    pub bytes: u64,
}

impl Packing {
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// `12 paths, 1.2 MB (0.3 MB packed)`.
    pub fn summary(&self) -> String {
        format!(
            "{} path{}, {} ({} packed)",
            self.packed.added,
            if self.packed.added == 1 { "" } else { "s" },
            human_bytes(self.bytes),
            human_bytes(self.packed.size)
        )
    }
}

/// Pack what `inputs` select under `dir` (blocking: call it off the runtime).
pub fn pack(dir: &Path, inputs: &[Input]) -> anyhow::Result<Packing> {
    let tree = archive::select_tree(dir, inputs, &Limits::default())?;
    for link in &tree.skipped {
        eprintln!("note: {link} is a symlink leading out of the workspace; it is not sent");
    }
    let mut file = tempfile::NamedTempFile::new().context("create a temporary archive")?;
    let mut out = BufWriter::new(file.as_file_mut());
    let packed = tree
        .pack(&mut out)
        .with_context(|| format!("pack {}", dir.display()))?;
    out.flush().context("write the temporary archive")?;
    drop(out);
    Ok(Packing {
        file,
        packed,
        bytes: tree.bytes,
    })
}

/// [`pack`] on a blocking thread.
pub async fn pack_off_runtime(dir: PathBuf, inputs: Vec<Input>) -> anyhow::Result<Packing> {
    tokio::task::spawn_blocking(move || pack(&dir, &inputs))
        .await
        .context("packing stopped")?
}

/// `1.2 MB`, `340 B`: decimal units, as download tools print them.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Progress of a transfer on a terminal (stderr): one line, rewritten at most
/// once per percent, ended at 100 %. Silent when stderr is not a terminal.
pub struct Progress {
    what: String,
    total: u64,
    done: u64,
    shown: Option<u64>,
    on: bool,
}

impl Progress {
    pub fn new(what: impl Into<String>, total: u64) -> Self {
        Self {
            what: what.into(),
            total,
            done: 0,
            shown: None,
            on: std::io::stderr().is_terminal(),
        }
    }

    pub fn advance(&mut self, n: u64) {
        self.done += n;
        let percent = (self.done * 100).checked_div(self.total).unwrap_or(100);
        if !self.on || self.shown == Some(percent) {
            return;
        }
        self.shown = Some(percent);
        eprint!(
            "\r{}: {percent:>3}% of {}",
            self.what,
            human_bytes(self.total)
        );
        if self.done >= self.total {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_download_tools() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.5 kB");
        assert_eq!(human_bytes(99_200_000), "99.2 MB");
        assert_eq!(human_bytes(3_000_000_000_000_000), "3000.0 TB");
    }
}
