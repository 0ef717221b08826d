#![allow(dead_code)] // shared by two test crates; each reads part of it
//! The table of invalid manifests under `tests/fixtures/invalid/`, shared by the
//! local rule tests and the e2e test that applies them to a real API server.
//!
//! Each file starts with `# expect: TEXT` (what the API server's refusal contains)
//! and optionally `# expect-local: TEXT` (what `baton`'s own check says, where the
//! wording differs because serde, not CEL, refuses it).

use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct InvalidFixture {
    pub path: PathBuf,
    pub yaml: String,
    pub expect: String,
    pub expect_local: String,
}

fn header(yaml: &str, key: &str) -> Option<String> {
    yaml.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::to_owned))
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every YAML file in a repo directory, sorted, as (path, text).
pub fn yaml_files(rel_dir: &str) -> Vec<(PathBuf, String)> {
    let dir = repo_path(rel_dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (p, text)
        })
        .collect()
}

pub fn invalid_fixtures() -> Vec<InvalidFixture> {
    yaml_files("tests/fixtures/invalid")
        .into_iter()
        .map(|(path, yaml)| {
            let expect = header(&yaml, "expect")
                .unwrap_or_else(|| panic!("{} has no '# expect:' line", path.display()));
            let expect_local = header(&yaml, "expect-local").unwrap_or_else(|| expect.clone());
            InvalidFixture {
                path,
                yaml,
                expect,
                expect_local,
            }
        })
        .collect()
}
