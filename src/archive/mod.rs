//! Change archives: the files a step added or modified under its workspace and
//! the paths it deleted, as one zstd-compressed tar. The runner packs one after
//! a step that asks for it; `baton run --output` and `job artifacts` extract it.
//!
//! Layout, which extraction insists on (anything else is refused):
//! - `changes.json` first: the format version and the added, modified and
//!   deleted paths ([`Manifest`]);
//! - then every added or modified path under `files/`: regular files (mode 0644
//!   or 0755, nothing else), directories, and symlinks that stay inside.
//!
//! Archives are deterministic (sorted, no owners, mtime 0), so the same changes
//! make the same bytes and the same content address.

pub mod changes;
mod extract;
mod pack;
mod path;
pub mod received;
mod select;
mod tree;

pub use changes::{Changes, Snapshot, diff, snapshot};
pub use extract::{Extracted, Limits, Refused, extract, manifest};
pub use pack::{Packed, pack};
pub use select::{Selection, glob_problems};
pub use tree::{Tree, TreeError, select as select_tree};

use serde::{Deserialize, Serialize};

/// The archive's first entry.
pub const MANIFEST: &str = "changes.json";
/// Where changed paths live in the archive.
pub const FILES: &str = "files/";
/// The only format this build writes and reads.
pub const VERSION: u32 = 1;

/// What an archive holds, written before its files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub deleted: Vec<String>,
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod roundtrip_tests;
