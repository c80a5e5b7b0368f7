//! berth's state directory: the lock that keeps two berth processes from
//! applying at once, the journal of an activity's destructive steps (so a
//! crash can be undone at the next start), and the last accepted document
//! (so a reboot enforces it before any broker answers).
//!
//! Every file is written atomically: a temporary file, fsync, rename, and an
//! fsync of the directory, so a power cut leaves either the old or the new
//! content, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where berth keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/berth";

const LOCK: &str = "lock";
const JOURNAL: &str = "journal.json";
const DESIRED: &str = "desired.json";

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another berth holds the lock.
    #[error("another berth process is applying (lock {0} is held); wait for it to finish")]
    Locked(PathBuf),
    /// The directory or a file in it could not be read or written.
    #[error("state directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The journal is not berth's JSON.
    #[error("journal {path} is unreadable: {message}")]
    Corrupt {
        /// The journal's path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// What one container went through in the activity, for recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Container (component) name.
    pub name: String,
    /// The old container's id, when there was one.
    pub old_id: Option<String>,
    /// Whether the old container was running before berth touched it.
    pub old_running: bool,
    /// The new container's id, once created.
    pub new_id: Option<String>,
    /// The new container passed its readiness gate: keep it on recovery.
    pub activated: bool,
}

/// The record of an activity in progress.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Journal {
    /// The activity.
    pub activity_id: String,
    /// Its phase when last written (`downloading`, `updating`, …).
    pub phase: String,
    /// One entry per container it touches.
    pub entries: Vec<JournalEntry>,
}

impl Journal {
    /// The entry for a container, created on first use.
    pub fn entry(&mut self, name: &str) -> &mut JournalEntry {
        if let Some(i) = self.entries.iter().position(|e| e.name == name) {
            return &mut self.entries[i];
        }
        self.entries.push(JournalEntry {
            name: name.to_string(),
            old_id: None,
            old_running: false,
            new_id: None,
            activated: false,
        });
        let last = self.entries.len() - 1;
        &mut self.entries[last]
    }

    /// The entry for a container, if any.
    pub fn get(&self, name: &str) -> Option<&JournalEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// An open, locked state directory. The lock is released when this drops.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Creates the directory if needed and takes the lock.
    ///
    /// # Errors
    /// [`StateError::Locked`] when another berth holds it.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(path).map_err(io)?;
        let lock_path = path.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StateError::Locked(lock_path)),
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the journal atomically.
    pub fn write_journal(&self, journal: &Journal) -> Result<(), StateError> {
        let text = serde_json::to_vec_pretty(journal).unwrap_or_default();
        self.write_atomic(JOURNAL, &text)
    }

    /// The journal of an interrupted activity, if one was left.
    pub fn read_journal(&self) -> Result<Option<Journal>, StateError> {
        let path = self.path.join(JOURNAL);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StateError::Corrupt {
                        path,
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Removes the journal: the activity is over.
    pub fn clear_journal(&self) -> Result<(), StateError> {
        let path = self.path.join(JOURNAL);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Persists the last accepted document.
    pub fn save_desired(&self, text: &str) -> Result<(), StateError> {
        self.write_atomic(DESIRED, text.as_bytes())
    }

    /// The last accepted document, if any.
    pub fn load_desired(&self) -> Result<Option<String>, StateError> {
        let path = self.path.join(DESIRED);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let target = self.path.join(name);
        let temp = self.path.join(format!(".{name}.tmp"));
        let io = |source| StateError::Io {
            path: target.clone(),
            source,
        };
        let mut file = File::create(&temp).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&temp, &target).map_err(io)?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), StateError> {
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(|source| StateError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateDir::open(dir.path()).unwrap();
        assert!(matches!(
            StateDir::open(dir.path()),
            Err(StateError::Locked(_))
        ));
    }

    #[test]
    fn the_lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateDir::open(dir.path()).unwrap());
        assert!(StateDir::open(dir.path()).is_ok());
    }

    #[test]
    fn journal_round_trips_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let mut journal = Journal {
            activity_id: "a".into(),
            phase: "updating".into(),
            entries: vec![],
        };
        journal.entry("web").old_running = true;
        state.write_journal(&journal).unwrap();
        assert_eq!(state.read_journal().unwrap(), Some(journal));
        state.clear_journal().unwrap();
        assert_eq!(state.read_journal().unwrap(), None);
    }

    #[test]
    fn corrupt_journal_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        fs::write(dir.path().join(JOURNAL), "{").unwrap();
        assert!(matches!(
            state.read_journal(),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn desired_document_is_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.load_desired().unwrap(), None);
        state.save_desired("{}").unwrap();
        assert_eq!(state.load_desired().unwrap().as_deref(), Some("{}"));
    }
}
