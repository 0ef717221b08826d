//! The runner's state directory: its id and key pair (generated once), its token
//! (files mode 0600, written atomically), and the wipe that `delete` asks for.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::domain::identity::{Identity, KeyError};

const ID_FILE: &str = "runner-id";
const TOKEN_FILE: &str = "token";
const KEY_FILE: &str = "key";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{doing} {path}: {source}")]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generate a runner id from the OS random source: {0}")]
    Random(getrandom::Error),
    #[error("the runner's key {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
}

fn io(doing: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_owned();
    move |source| StateError::Io {
        doing,
        path,
        source,
    }
}

/// A state directory, created (mode 0700) when missing.
#[derive(Clone, Debug)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn open(path: &Path) -> Result<Self, StateError> {
        fs::create_dir_all(path).map_err(io("create the state directory", path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(io("restrict the state directory", path))?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The runner id: read, or generated (128 random bits, hex) and kept.
    pub fn runner_id(&self) -> Result<String, StateError> {
        let file = self.path.join(ID_FILE);
        match fs::read_to_string(&file) {
            Ok(id) if is_valid_id(id.trim()) => return Ok(id.trim().to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read the runner id", &file)(e)),
        }
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(StateError::Random)?;
        let id = hex::encode(bytes);
        self.write_private(ID_FILE, &id)?;
        Ok(id)
    }

    /// The runner's key pair: read, or generated and kept (mode 0600). A key file
    /// that does not parse is an error, never silently replaced: the Runner is
    /// bound to that key, and a new one would lock the runner out of its name.
    pub fn identity(&self) -> Result<Identity, StateError> {
        let file = self.path.join(KEY_FILE);
        let key_err = |source| StateError::Key {
            path: file.clone(),
            source,
        };
        match fs::read_to_string(&file) {
            Ok(text) => return Identity::from_text(&text).map_err(key_err),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read the runner's key", &file)(e)),
        }
        let id = Identity::generate().map_err(key_err)?;
        self.write_private(KEY_FILE, &id.to_text())?;
        Ok(id)
    }

    /// The token kept from an earlier adoption, if any.
    pub fn token(&self) -> Result<Option<String>, StateError> {
        let file = self.path.join(TOKEN_FILE);
        match fs::read_to_string(&file) {
            Ok(t) => Ok(Some(t.trim().to_owned()).filter(|t| !t.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read the token", &file)(e)),
        }
    }

    /// Keep a token: written to a temporary file created with mode 0600, then renamed.
    pub fn save_token(&self, token: &str) -> Result<(), StateError> {
        self.write_private(TOKEN_FILE, token)
    }

    pub fn remove_token(&self) -> Result<(), StateError> {
        let file = self.path.join(TOKEN_FILE);
        match fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io("remove the refused token", &file)(e))
            }
            _ => Ok(()),
        }
    }

    /// Remove the state directory and everything in it.
    pub fn wipe(&self) -> Result<(), StateError> {
        match fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io("wipe the state directory", &self.path)(e))
            }
            _ => Ok(()),
        }
    }

    fn write_private(&self, name: &str, content: &str) -> Result<(), StateError> {
        let tmp = self.path.join(format!(".{name}.tmp"));
        let file = self.path.join(name);
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(content.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io("write", &tmp))?;
        fs::rename(&tmp, &file).map_err(io("rename into place", &file))
    }
}

fn is_valid_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temp() -> PathBuf {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        std::env::temp_dir().join(format!("baton-state-test-{}", hex::encode(b)))
    }

    #[test]
    fn id_is_generated_once_and_kept() {
        let dir = temp();
        let s = StateDir::open(&dir).unwrap();
        let id = s.runner_id().unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(StateDir::open(&dir).unwrap().runner_id().unwrap(), id);
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        s.wipe().unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn key_is_generated_once_private_and_a_broken_one_is_an_error() {
        let dir = StateDir::open(&temp()).unwrap();
        let a = dir.identity().unwrap();
        let b = dir.identity().unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        let err = dir.identity().unwrap_err().to_string();
        assert!(err.contains("key"), "{err}");
        dir.wipe().unwrap();
    }

    #[test]
    fn token_is_private_and_replaceable() {
        let dir = temp();
        let s = StateDir::open(&dir).unwrap();
        assert_eq!(s.token().unwrap(), None);
        s.save_token("baton_a").unwrap();
        s.save_token("baton_b").unwrap();
        assert_eq!(s.token().unwrap().as_deref(), Some("baton_b"));
        let mode = fs::metadata(dir.join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        s.remove_token().unwrap();
        s.remove_token().unwrap();
        assert_eq!(s.token().unwrap(), None);
        s.wipe().unwrap();
    }
}
