//! berth's state directory: the lock that keeps two berth processes from
//! applying at once, the journal of an activity's destructive steps (so a
//! crash can be undone at the next start), and the last accepted document
//! (so a reboot enforces it before any broker answers).
//!
//! Every file is written atomically: a temporary file, fsync, rename, and an
//! fsync of the directory, so a power cut leaves either the old or the new
//! content, never a torn one.
//!
//! The persisted document holds secret env values in the clear (the agent
//! needs them to re-create containers after a power loss), so the directory
//! is `0700` and every file `0600`, set explicitly whatever the umask (a
//! root shell's 022 included), and a looser directory or file found at open
//! is tightened, with a warning. Temporary files are created exclusively
//! and never through a symlink.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::spec::model::{Resources, RestartPolicy};

/// Where berth keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/berth";

const LOCK: &str = "lock";
const JOURNAL: &str = "journal.json";
/// The last accepted document, as its text.
pub const DESIRED: &str = "desired.json";

/// The state directory's mode: only its owner may list or enter it.
pub const DIR_MODE: u32 = 0o700;
/// Every state file's mode: only its owner may read it.
pub const FILE_MODE: u32 = 0o600;

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another berth holds the lock.
    #[error("another berth process ({holder}) holds the state directory (lock {path}); wait for it to finish, or give this one another --state-dir")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as it wrote into the lock file.
        holder: String,
    },
    /// The directory or a file in it could not be read or written.
    #[error("state directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The directory is a shared one (sticky and writable by all, like
    /// `/tmp`): berth keeps secrets there, and tightening it would break
    /// everyone else using it.
    #[error("state directory {path} is shared (mode {mode:o}); give berth a directory of its own (--state-dir)")]
    Shared {
        /// The directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
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

/// The journal format this berth writes; a journal in another format is
/// treated as unreadable (recovery then works from container names alone).
pub const JOURNAL_VERSION: u32 = 2;

/// In-place settings as they were before an update, to put them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InPlace {
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Resource limits.
    pub resources: Resources,
}

/// One destructive step of an activity, written to the journal (and
/// fsynced) before it is issued, with what undoing it needs. Undoing an
/// effect whose target is already in the undone state does nothing, so the
/// log can be replayed any number of times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "effect",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Effect {
    /// A new container created under the temporary name `temp`; `id` once
    /// the engine answered. Undo: remove it.
    Create {
        /// Component.
        name: String,
        /// Temporary name it is created under.
        temp: String,
        /// Its id, once known.
        id: Option<String>,
        /// The image it is created from, so that recovery can tell a create
        /// the engine may still be carrying out from one never issued.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<String>,
    },
    /// An existing container stopped. Undo: start it, if it was running.
    Stop {
        /// Component.
        name: String,
        /// Container id.
        id: String,
        /// Whether it was running before.
        was_running: bool,
    },
    /// A container renamed. Undo: rename it back.
    Rename {
        /// Component.
        name: String,
        /// Container id.
        id: String,
        /// Name before.
        from: String,
        /// Name after.
        to: String,
    },
    /// Restart policy and resources changed in place. Undo: put `previous` back.
    Update {
        /// Component.
        name: String,
        /// Container id.
        id: String,
        /// What they were.
        previous: InPlace,
    },
    /// A container started (or resumed). Undo: stop it, if it was not running
    /// (a new container is removed instead).
    Start {
        /// Component.
        name: String,
        /// Container id.
        id: String,
        /// Whether it was running before.
        was_running: bool,
    },
    /// A container removed after the activity was committed. Never undone.
    Remove {
        /// Component.
        name: String,
        /// Container id.
        id: String,
    },
    /// A one-shot container for a hook or a migration of the component,
    /// created under `temp`; `id` once the engine answered. It is removed
    /// as soon as it ended, and undoing it removes it too, so a kill of
    /// berth while a hook runs leaves nothing behind after recovery.
    OneShot {
        /// Component.
        name: String,
        /// What it runs (`preStart`, `onRollback`, `migration v1.2.0`).
        purpose: String,
        /// The name it is created under.
        temp: String,
        /// Its id, once known.
        id: Option<String>,
        /// The image it is created from (see [`Effect::Create`]).
        image: String,
        /// The migration it runs, when it runs one: what undoing the
        /// migration needs, and how far it got.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        migration: Option<Migration>,
    },
}

/// A migration script run by a one-shot container, as the undo log keeps
/// it: a rollback and a recovery undo it alike, by its down script, so an
/// old version never runs on data a newer one migrated (issue 22).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    /// The script's name without `.sh` (`v1.1.0`): what the record says.
    pub script: String,
    /// Its down script's file name, when the image ships one.
    #[serde(default)]
    pub down: Option<String>,
    /// The component's last applied migration before it ran, which the
    /// record goes back to when its down script ran.
    #[serde(default)]
    pub before: Option<String>,
    /// It exited 0: written before its container is removed, so that a
    /// migration not marked applied whose container is gone never ran to
    /// its end.
    #[serde(default)]
    pub applied: bool,
    /// Undone: its down script ran, or it stays applied for good (no down
    /// script, or a later one's down failed).
    #[serde(default)]
    pub reverted: bool,
}

/// A component's hooks as the undo log needs them: recovery has no
/// document, and still runs the down migrations and `onRollback` of an
/// activity it undoes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hooks {
    /// The migrations' directory inside the new image.
    #[serde(default)]
    pub migrations: Option<String>,
    /// The `onRollback` command.
    #[serde(default)]
    pub on_rollback: Option<String>,
    /// `hookTimeout`, in milliseconds.
    pub timeout_ms: u64,
}

impl Hooks {
    /// `hookTimeout`.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }
}

impl Effect {
    /// The component the effect belongs to.
    pub fn name(&self) -> &str {
        match self {
            Effect::Create { name, .. }
            | Effect::Stop { name, .. }
            | Effect::Rename { name, .. }
            | Effect::Update { name, .. }
            | Effect::Start { name, .. }
            | Effect::Remove { name, .. }
            | Effect::OneShot { name, .. } => name,
        }
    }
}

/// An effect and whether it was undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The effect.
    #[serde(flatten)]
    pub effect: Effect,
    /// Undone by a rollback or recovery.
    #[serde(default)]
    pub undone: bool,
}

/// What the activity is to do to one container, written before anything is
/// touched: enough for recovery to finish a committed container's cleanup.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// Component.
    pub name: String,
    /// The plan's action word (`create`, `recreate`, …).
    pub action: String,
    /// The container the activity found, if any.
    pub old_id: Option<String>,
    /// Its name then, when it was not the component's (a container restored
    /// from a temporary name).
    #[serde(default)]
    pub old_name: Option<String>,
    /// Whether it was running.
    pub old_running: bool,
    /// Its hooks, when they run in this activity and have something to
    /// undo (migrations, `onRollback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
}

/// The undo log of an activity in progress.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    /// [`JOURNAL_VERSION`].
    pub version: u32,
    /// The activity.
    pub activity_id: String,
    /// The berth instance that wrote it: only its containers are touched.
    pub instance: String,
    /// Its phase when last written (`downloading`, `updating`, …).
    pub phase: String,
    /// One entry per container the activity changes.
    pub intents: Vec<Intent>,
    /// Containers whose new version stays: their effects are never undone;
    /// recovery finishes their cleanup instead.
    pub committed: BTreeSet<String>,
    /// Every destructive effect, in the order it was issued.
    pub records: Vec<Record>,
    /// Containers whose hooks were undone (down migrations, `onRollback`):
    /// a replay after a crash does not run them again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub compensated: BTreeSet<String>,
}

impl Journal {
    /// A journal for a new activity.
    pub fn new(activity_id: &str, instance: &str) -> Self {
        Self {
            version: JOURNAL_VERSION,
            activity_id: activity_id.to_string(),
            instance: instance.to_string(),
            ..Default::default()
        }
    }

    /// The intent for a container.
    pub fn intent(&self, name: &str) -> Option<&Intent> {
        self.intents.iter().find(|i| i.name == name)
    }

    /// Appends an effect (not yet written).
    pub fn push(&mut self, effect: Effect) -> usize {
        self.records.push(Record {
            effect,
            undone: false,
        });
        self.records.len() - 1
    }

    /// Ids of the containers this activity created.
    pub fn created(&self) -> BTreeSet<&str> {
        self.records
            .iter()
            .filter_map(|r| match &r.effect {
                Effect::Create { id: Some(id), .. } => Some(id.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The containers the activity changes.
    pub fn names(&self) -> BTreeSet<&str> {
        self.intents.iter().map(|i| i.name.as_str()).collect()
    }
}

/// An open, locked state directory. The lock is released when this drops.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: File,
}

/// The last accepted document in state directory `dir`, if any, without
/// taking the lock: for readers beside the agent that holds it (the API
/// derives its changes from it). The file is replaced atomically, so a
/// reader sees one whole document or the next.
///
/// # Errors
/// When the file exists but cannot be read.
pub fn read_desired(dir: &Path) -> Result<Option<String>, StateError> {
    let path = dir.join(DESIRED);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io { path, source }),
    }
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
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(path)
            .map_err(io)?;
        let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o7777;
        if mode & 0o1002 == 0o1002 {
            return Err(StateError::Shared {
                path: path.to_path_buf(),
                mode,
            });
        }
        tighten(path).map_err(io)?;
        let lock_path = path.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(io)?;
        lock.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&lock_path)
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| "a process that did not say who it is".into());
                return Err(StateError::Locked {
                    path: lock_path,
                    holder,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for the next one to name (best effort: a full disk
        // must not stop berth from starting).
        let _ = lock
            .set_len(0)
            .and_then(|()| (&lock).write_all(format!("pid {}", std::process::id()).as_bytes()));
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
        let text = serde_json::to_vec(journal).map_err(|e| StateError::Corrupt {
            path: self.path.join(JOURNAL),
            message: e.to_string(),
        })?;
        self.write_atomic(JOURNAL, &text)
    }

    /// The journal of an interrupted activity, if one was left.
    pub fn read_journal(&self) -> Result<Option<Journal>, StateError> {
        let path = self.path.join(JOURNAL);
        match fs::read(&path) {
            Ok(bytes) => {
                let journal: Journal =
                    serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                if journal.version != JOURNAL_VERSION {
                    return Err(StateError::Corrupt {
                        path,
                        message: format!(
                            "journal format {} (this berth writes {JOURNAL_VERSION})",
                            journal.version
                        ),
                    });
                }
                Ok(Some(journal))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Writes the journal atomically without blocking the async runtime:
    /// the writes and fsyncs run on tokio's blocking pool.
    ///
    /// # Errors
    /// When the file cannot be written (a full disk, say).
    pub async fn store_journal(&self, journal: &Journal) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(journal).map_err(|e| StateError::Corrupt {
            path: self.path.join(JOURNAL),
            message: e.to_string(),
        })?;
        let dir = self.path.clone();
        blocking(move || write_atomic(&dir, JOURNAL, &bytes), &self.path).await
    }

    /// Removes the journal without blocking the async runtime.
    ///
    /// # Errors
    /// When the file cannot be removed.
    pub async fn discard_journal(&self) -> Result<(), StateError> {
        let dir = self.path.clone();
        blocking(move || remove_journal(&dir), &self.path).await
    }

    /// Removes the journal: the activity is over.
    pub fn clear_journal(&self) -> Result<(), StateError> {
        remove_journal(&self.path)
    }

    /// Persists the last accepted document.
    pub fn save_desired(&self, text: &str) -> Result<(), StateError> {
        self.write_atomic(DESIRED, text.as_bytes())
    }

    /// [`Self::save_desired`] on tokio's blocking pool: the agent's loop
    /// persists every document it accepts, and its fsyncs must not stall
    /// the runtime's workers.
    pub async fn store_desired(&self, text: &str) -> Result<(), StateError> {
        let (dir, bytes) = (self.path.clone(), text.as_bytes().to_vec());
        blocking(move || write_atomic(&dir, DESIRED, &bytes), &self.path).await
    }

    /// The last accepted document, if any.
    pub fn load_desired(&self) -> Result<Option<String>, StateError> {
        read_desired(&self.path)
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        write_atomic(&self.path, name, bytes)
    }
}

/// Gives the directory [`DIR_MODE`] and berth's files in it (`lock`,
/// `*.json`, `.*.tmp`) [`FILE_MODE`] when they allow more (an older berth,
/// a directory made by hand or by a package with umask 022), saying so
/// once for each. Symlinks are left alone: berth never writes through one.
fn tighten(dir: &Path) -> io::Result<()> {
    let meta = fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o7777), "the state directory was readable by others; set to 0700");
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))?;
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?; // does not follow symlinks
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name == LOCK
            || name.ends_with(".json")
            || (name.starts_with('.') && name.ends_with(".tmp"));
        if ours && meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %entry.path().display(), mode = format!("{:o}", meta.permissions().mode() & 0o7777), "a state file was readable by others; set to 0600");
            fs::set_permissions(entry.path(), Permissions::from_mode(FILE_MODE))?;
        }
    }
    Ok(())
}

/// Creates `path` for writing: exclusively (never an existing file), never
/// through a symlink, mode [`FILE_MODE`] whatever the umask.
fn create_private(path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    let file = match open() {
        // A temporary left by a crash (or something planted in its place,
        // a symlink included): remove it, never write through it.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            open()?
        }
        other => other?,
    };
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// A temporary file, fsync, rename, fsync of the directory: a power cut
/// leaves the old content or the new, never a torn one. Every file berth
/// keeps in its state directory is written this way, mode [`FILE_MODE`].
///
/// # Errors
/// When the directory cannot be written.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    let io = |source| StateError::Io {
        path: target.clone(),
        source,
    };
    let mut file = create_private(&temp).map_err(io)?;
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        // A full disk must not leave a half-written temporary behind.
        drop(file);
        let _ = fs::remove_file(&temp);
        return Err(io(e));
    }
    fs::rename(&temp, &target).map_err(io)?;
    sync_dir(dir)
}

fn remove_journal(dir: &Path) -> Result<(), StateError> {
    let path = dir.join(JOURNAL);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io { path, source }),
    }
}

/// Runs file work (writes, fsyncs) on tokio's blocking pool.
async fn blocking(
    work: impl FnOnce() -> Result<(), StateError> + Send + 'static,
    dir: &Path,
) -> Result<(), StateError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StateError::Io {
            path: dir.to_path_buf(),
            source: io::Error::other(e.to_string()),
        })?
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    // Issue 22: a journal written before migrations were undo effects
    // (no `migration`, `hooks`, `compensated`) is still recovered.
    #[test]
    fn a_journal_from_before_migrations_were_journaled_still_reads() {
        let text = r#"{"version":2,"activityId":"a","instance":"i","phase":"activating",
            "intents":[{"name":"db","action":"recreate","oldId":"o","oldRunning":true}],
            "committed":[],
            "records":[{"effect":"oneShot","name":"db","purpose":"preStart",
                        "temp":"db.berth-hook","id":"x","image":"r/db:2","undone":true}]}"#;
        let j: Journal = serde_json::from_str(text).unwrap();
        assert_eq!(j.intents[0].hooks, None);
        assert!(j.compensated.is_empty());
        let Effect::OneShot { migration, .. } = &j.records[0].effect else {
            panic!("a one-shot: {:?}", j.records[0]);
        };
        assert_eq!(*migration, None);
    }

    #[test]
    fn a_migration_and_its_progress_survive_the_journal() {
        let mut j = Journal::new("a", "i");
        j.push(Effect::OneShot {
            name: "db".into(),
            purpose: "migration v1.1.0".into(),
            temp: "db.berth-hook".into(),
            id: Some("x".into()),
            image: "r/db:2".into(),
            migration: Some(Migration {
                script: "v1.1.0".into(),
                down: Some("v1.1.0.down.sh".into()),
                before: Some("v1.0.0".into()),
                applied: true,
                reverted: false,
            }),
        });
        j.compensated.insert("db".into());
        let back: Journal = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        assert_eq!(back, j);
    }

    // Issue 20: the persisted document holds secret env values.
    #[test]
    fn state_directory_and_files_are_private_whatever_the_umask() {
        // The test process's umask (022 as a rule) would leave 0755/0644.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("new/state");
        let state = StateDir::open(&dir).unwrap();
        state.save_desired("{\"DB_PASSWORD\":\"x\"}").unwrap();
        state.write_journal(&Journal::new("a", "default")).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        for name in [LOCK, DESIRED, JOURNAL] {
            assert_eq!(mode(&dir.join(name)), FILE_MODE, "{name}");
        }
    }

    #[test]
    fn an_existing_loose_state_directory_and_its_files_are_tightened_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join(DESIRED), "{}").unwrap();
        fs::set_permissions(dir.join(DESIRED), Permissions::from_mode(0o644)).unwrap();
        fs::write(dir.join(LOCK), "").unwrap();
        fs::set_permissions(dir.join(LOCK), Permissions::from_mode(0o666)).unwrap();
        let _state = StateDir::open(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&dir.join(DESIRED)), FILE_MODE);
        assert_eq!(mode(&dir.join(LOCK)), FILE_MODE);
    }

    #[test]
    fn a_shared_directory_like_tmp_is_refused_and_left_as_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("shared");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o1777)).unwrap();
        assert!(matches!(
            StateDir::open(&dir),
            Err(StateError::Shared { .. })
        ));
        assert_eq!(mode(&dir), 0o1777);
    }

    #[test]
    fn a_write_never_follows_a_symlink_planted_as_its_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let outside = tmp.path().join("outside");
        fs::write(&outside, "untouched").unwrap();
        let state = StateDir::open(&dir).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join(format!(".{DESIRED}.tmp"))).unwrap();
        state.save_desired("secret document").unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "untouched");
        assert_eq!(
            state.load_desired().unwrap().as_deref(),
            Some("secret document")
        );
        assert_eq!(mode(&dir.join(DESIRED)), FILE_MODE);
        assert!(!dir.join(format!(".{DESIRED}.tmp")).exists());
    }

    #[test]
    fn a_temporary_file_left_by_a_crash_is_replaced_not_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let state = StateDir::open(&dir).unwrap();
        let temp = dir.join(format!(".{DESIRED}.tmp"));
        fs::write(&temp, "stale and longer than the new content").unwrap();
        fs::set_permissions(&temp, Permissions::from_mode(0o644)).unwrap();
        state.save_desired("new").unwrap();
        assert_eq!(state.load_desired().unwrap().as_deref(), Some("new"));
        assert_eq!(mode(&dir.join(DESIRED)), FILE_MODE);
    }

    #[test]
    fn the_lock_is_never_opened_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, "untouched").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join(LOCK)).unwrap();
        assert!(StateDir::open(&dir).is_err());
        assert_eq!(fs::read_to_string(&outside).unwrap(), "untouched");
    }

    #[test]
    fn a_second_open_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateDir::open(dir.path()).unwrap();
        let err = StateDir::open(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }));
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
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
        let mut journal = Journal::new("a", "default");
        journal.phase = "updating".into();
        journal.push(Effect::Stop {
            name: "web".into(),
            id: "1".into(),
            was_running: true,
        });
        journal.committed.insert("db".into());
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
    fn a_journal_of_another_format_is_reported_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        fs::write(
            dir.path().join(JOURNAL),
            r#"{"activity_id":"a","phase":"updating","entries":[]}"#,
        )
        .unwrap();
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
