//! The file source: a state file, or a directory of them, read again
//! whenever the kernel says something changed there (inotify, through the
//! `notify` crate), or every `poll_interval` when notifications cannot be
//! set up. Any change (a write, an atomic rename, a new or removed file)
//! produces a document for the loop; a missing path produces nothing,
//! since "no file" must not mean "remove every container".
//!
//! The state directory is input like any other, so nothing in it may block
//! the poll or exhaust memory: every file is judged by its metadata before
//! it is opened (only regular files, at most [`FileLimits::max_file_size`]
//! bytes; a symbolic link is judged by its target), read through a bounded
//! reader, and decoded as UTF-8. A file that fails any of these is refused
//! with `IDENTIFICATION_FAILED` naming it and why, and nothing is applied.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{refused_activity_id, Body, Incoming, Input, Origin};
use crate::spec::merge::{merge, Part};
use crate::spec::Options;

/// The largest state file read, in bytes: the same 1 MiB as MQTT's default
/// `max_message_size`, far above any real document and small enough that a
/// runaway file cannot take the device's memory.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 20;

/// Where the state files are and how often to look.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// A file, or a directory whose `*.json` files are merged.
    pub path: PathBuf,
    /// How often the path is read when the kernel's file notifications
    /// cannot be set up (otherwise they say when).
    pub poll_interval: Duration,
    /// The domain and limits documents are read under.
    pub spec: Options,
    /// What files are read at all.
    pub limits: FileLimits,
}

/// What the file source is willing to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// Larger files are refused unread.
    pub max_file_size: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        Self {
            max_file_size: DEFAULT_MAX_FILE_SIZE,
        }
    }
}

/// What the path holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Nothing to apply, and why.
    Nothing(String),
    /// The files, in name order.
    Parts(Vec<Part>),
    /// Some files cannot be read as state files: nothing is applied.
    Refused {
        /// One line per refused file, naming it.
        errors: Vec<String>,
        /// The files that could be read, for the activity id.
        parts: Vec<Part>,
    },
}

/// Why one file is not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Unreadable {
    /// Not there (any more): a writer renamed or removed it.
    #[error("it is gone")]
    Gone,
    /// Not a regular file.
    #[error("{what}; only regular files are read")]
    NotRegular { what: String },
    /// Above the size limit.
    #[error("{size} bytes, more than the limit of {limit} (files.max_file_size); not read")]
    TooLarge { size: u64, limit: u64 },
    /// Not text.
    #[error("{0}")]
    NotUtf8(String),
    /// Others than its owner may write it, so whoever they are chooses what
    /// runs on the device.
    #[error("mode {mode:04o} lets others than its owner write it; not read (chmod go-w)")]
    Writable { mode: u32 },
    /// Changed between the look at its metadata and the open.
    #[error("it was replaced while being read; it is read again at the next poll")]
    Replaced,
    /// The system refused.
    #[error("{0}")]
    Io(String),
}

/// What a file's metadata says it is, in words for a refusal.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Reads one state file, judging it by its metadata first: a FIFO, a
/// socket or a device is never opened (opening a FIFO blocks until a writer
/// comes; reading `/dev/zero` never ends), a file above the limit is never
/// read. A symbolic link is followed for the judgement and named in it.
/// After the open, the handle's own metadata must still be the same regular
/// file, so one swapped in between is not read either. Blocking: call from a
/// blocking thread.
fn read_file(path: &Path, limit: u64) -> Result<String, Unreadable> {
    let io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Unreadable::Gone
        } else {
            Unreadable::Io(e.to_string())
        }
    };
    let link = std::fs::symlink_metadata(path).map_err(io)?;
    let via = if link.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(io)?;
        format!("a symbolic link to {}, which is ", target.display())
    } else {
        String::new()
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        // A dangling link is not a file that went away: refusing it keeps
        // its components from being read as removed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !via.is_empty() => {
            return Err(Unreadable::NotRegular {
                what: format!("{via}missing"),
            })
        }
        Err(e) => return Err(io(e)),
    };
    if !meta.is_file() {
        return Err(Unreadable::NotRegular {
            what: format!("{via}{}", kind(&meta)),
        });
    }
    if meta.len() > limit {
        return Err(Unreadable::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    let file = File::open(path).map_err(io)?;
    let opened = file.metadata().map_err(io)?;
    if !opened.is_file() || opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(Unreadable::Replaced);
    }
    if opened.mode() & 0o022 != 0 {
        return Err(Unreadable::Writable {
            mode: opened.mode() & 0o7777,
        });
    }
    // A file that grows after the look is still read no further than the
    // limit.
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > limit {
        return Err(Unreadable::TooLarge { size, limit });
    }
    String::from_utf8(bytes).map_err(|e| {
        Unreadable::NotUtf8(
            crate::spec::validate::utf8(e.as_bytes())
                .err()
                .unwrap_or_default(),
        )
    })
}

/// Reads the path: one file, or a directory's `*.json` files (hidden and
/// temporary files are skipped, so editors and atomic writers can work
/// next to them). Blocking: call from a blocking thread.
pub fn read(path: &Path, limits: FileLimits) -> Reading {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Reading::Nothing(format!("{}: {e}", path.display())),
    };
    let limit = limits.max_file_size;
    if let Some(refused) = open_directory(path, &meta) {
        return refused;
    }
    if !meta.is_dir() {
        return match read_file(path, limit) {
            Ok(text) => Reading::Parts(vec![Part {
                name: path.display().to_string(),
                text,
            }]),
            Err(Unreadable::Gone) => Reading::Nothing(format!("{}: it is gone", path.display())),
            Err(e) => Reading::Refused {
                errors: vec![format!("{}: {e}", path.display())],
                parts: Vec::new(),
            },
        };
    }
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) => return Reading::Nothing(format!("{}: {e}", path.display())),
    };
    // Chosen by name alone: whatever they are, they are judged one by one.
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            (!name.starts_with('.') && name.ends_with(".json")).then(|| (name, e.path()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Reading::Nothing(format!("{}: no *.json state files", path.display()));
    }
    let mut parts = Vec::new();
    let mut errors = Vec::new();
    for (name, file) in files {
        match read_file(&file, limit) {
            Ok(text) => parts.push(Part { name, text }),
            // Gone between listing and reading: the next poll sees the new state.
            Err(Unreadable::Gone) => {}
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    if errors.is_empty() {
        Reading::Parts(parts)
    } else {
        Reading::Refused { errors, parts }
    }
}

/// Refuses a directory others than its owner may write in: they could put
/// a state file of their own there, or replace the one berth reads. The
/// sticky bit (as on `/tmp`) keeps them from replacing a file they do not
/// own, so a single state file may sit in such a directory; a directory of
/// state files may not, since anyone could add one.
fn open_directory(path: &Path, meta: &Metadata) -> Option<Reading> {
    let (dir, dir_meta) = if meta.is_dir() {
        (path.to_path_buf(), meta.clone())
    } else {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let m = std::fs::metadata(&parent).ok()?;
        (parent, m)
    };
    let mode = dir_meta.mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 == 0 || (sticky && !meta.is_dir()) {
        return None;
    }
    Some(Reading::Refused {
        errors: vec![format!(
            "{}: directory mode {mode:04o} lets others than its owner put state files in it; not read (chmod go-w {})",
            dir.display(),
            dir.display()
        )],
        parts: Vec::new(),
    })
}

/// A digest of what was read, to notice changes.
fn fingerprint(reading: &Reading) -> Vec<u8> {
    fn parts_into(h: &mut Sha256, parts: &[Part]) {
        for p in parts {
            h.update(p.name.as_bytes());
            h.update(b"\0");
            h.update((p.text.len() as u64).to_le_bytes());
            h.update(p.text.as_bytes());
        }
    }
    let mut h = Sha256::new();
    match reading {
        Reading::Nothing(why) => {
            h.update(b"nothing\0");
            h.update(why.as_bytes());
        }
        Reading::Parts(parts) => parts_into(&mut h, parts),
        Reading::Refused { errors, parts } => {
            h.update(b"refused\0");
            for e in errors {
                h.update(e.as_bytes());
                h.update(b"\0");
            }
            parts_into(&mut h, parts);
        }
    }
    h.finalize().to_vec()
}

/// The first activity id the parts name, read without trusting the rest.
fn activity_id_of(parts: &[Part]) -> Option<String> {
    parts.iter().find_map(|p| {
        serde_json::from_str::<serde_json::Value>(&p.text)
            .ok()?
            .get("activityId")?
            .as_str()
            .map(str::to_string)
    })
}

/// The document the parts make, or why they make none.
pub fn document(parts: &[Part], options: &Options) -> Body {
    match merge(parts, options) {
        Ok(merged) => Body::Text(merged.text),
        Err(errors) => Body::Refused {
            activity_id: activity_id_of(parts).unwrap_or_default(),
            errors,
        },
    }
}

/// What a reading gives the loop; `None` when it has nothing to apply.
fn body_of(reading: &Reading, options: &Options) -> Option<Body> {
    match reading {
        Reading::Nothing(_) => None,
        Reading::Parts(parts) => Some(document(parts, options)),
        Reading::Refused { errors, parts } => Some(Body::Refused {
            activity_id: activity_id_of(parts).unwrap_or_else(refused_activity_id),
            errors: errors.clone(),
        }),
    }
}

async fn read_async(path: &Path, limits: FileLimits) -> Reading {
    let path = path.to_path_buf();
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || read(&path, limits))
        .await
        .unwrap_or_else(|e| Reading::Nothing(format!("{shown}: {e}")))
}

/// What wakes the file source: the kernel's file notifications (inotify,
/// through `notify`) when they can be set up, else a timer every
/// `poll_interval`. Notifications make a written file reach the loop at
/// once and an idle agent never look at the disk.
enum Trigger {
    /// Woken by notifications for the path's directory (and the path
    /// itself when it is a directory).
    Notified {
        watcher: RecommendedWatcher,
        wakes: mpsc::UnboundedReceiver<()>,
        path: PathBuf,
    },
    /// Woken by a timer.
    Polled(tokio::time::Interval),
}

/// The directories whose entries decide what `path` reads as: its parent
/// (an atomic rename, a new or removed file, an in-place write), and the
/// parent of a symbolic link's target. The path itself, when a directory,
/// is watched by [`Trigger::rearm`], since it may come and go.
fn watch_points(path: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut points = vec![parent(path)];
    if let Ok(target) = std::fs::canonicalize(path) {
        let target_parent = parent(&target);
        if !points.contains(&target_parent) && target != path {
            points.push(target_parent);
        }
    }
    points
}

/// Whether a notification may mean different contents. Opening, reading
/// and closing a file unwritten do not, and must not wake the source: its
/// own read would wake it again, for ever.
fn may_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

impl Trigger {
    /// Notifications for `path`, else polling every `interval` (at least
    /// 50 ms), saying why.
    fn for_path(path: &Path, interval: Duration) -> Self {
        match Self::notified(path) {
            Ok(trigger) => trigger,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot watch the state files for changes; polling them every {}", humantime::format_duration(interval));
                Self::polled(interval)
            }
        }
    }

    fn polled(interval: Duration) -> Self {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Trigger::Polled(tick)
    }

    fn notified(path: &Path) -> notify::Result<Self> {
        let (tx, wakes) = mpsc::unbounded_channel();
        // Whatever else happened (a change, an overflowed queue, an error),
        // the path is read again: the fingerprint tells whether it changed.
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.as_ref().is_ok_and(|e| !may_change(&e.kind)) {
                    return;
                }
                let _ = tx.send(());
            })?;
        for dir in watch_points(path) {
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        }
        let mut trigger = Trigger::Notified {
            watcher,
            wakes,
            path: path.to_path_buf(),
        };
        trigger.rearm();
        Ok(trigger)
    }

    /// Watches the path itself when it is a directory (again: it may have
    /// been replaced); its parent's watch sees it come and go.
    fn rearm(&mut self) {
        if let Trigger::Notified { watcher, path, .. } = self {
            if path.is_dir() {
                let _ = watcher.watch(path, RecursiveMode::NonRecursive);
            }
        }
    }

    /// Waits for the next reason to read the path. The first call returns
    /// at once: the path is read when the source starts.
    async fn next(&mut self, first: bool) {
        match self {
            Trigger::Polled(tick) => {
                tick.tick().await;
            }
            Trigger::Notified { wakes, .. } => {
                if !first {
                    if wakes.recv().await.is_none() {
                        // The watcher is gone: nothing will wake us again.
                        std::future::pending::<()>().await;
                    }
                    // One read for a burst of notifications.
                    while wakes.try_recv().is_ok() {}
                }
            }
        }
        self.rearm();
    }
}

/// Watches the path for ever, sending a document whenever it changes.
pub async fn watch(source: FileSource, inputs: mpsc::UnboundedSender<Input>) {
    let limits = source.limits;
    let mut last: Option<Vec<u8>> = None;
    let mut trigger = Trigger::for_path(&source.path, source.poll_interval);
    let mut first = true;
    loop {
        trigger.next(first).await;
        first = false;
        let mut reading = read_async(&source.path, limits).await;
        let mut print = fingerprint(&reading);
        if last.as_ref() == Some(&print) {
            continue;
        }
        let Some(mut body) = body_of(&reading, &source.spec) else {
            if let Reading::Nothing(why) = &reading {
                tracing::warn!(path = %source.path.display(), "no desired state from files: {why}");
            }
            last = Some(print);
            continue;
        };
        if matches!(body, Body::Refused { .. }) {
            // A writer that does not rename atomically may be half-way:
            // look once more before calling the document broken.
            tokio::time::sleep(Duration::from_millis(250)).await;
            let again = read_async(&source.path, limits).await;
            let again_print = fingerprint(&again);
            if again_print != print {
                reading = again;
                print = again_print;
                match body_of(&reading, &source.spec) {
                    Some(b) => body = b,
                    None => continue,
                }
            }
        }
        last = Some(print);
        tracing::info!(path = %source.path.display(), "state files changed");
        if inputs
            .send(Input::Document(Incoming::new(
                Origin::Files(source.path.clone()),
                body,
                None,
            )))
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_file_is_not_a_change_and_writing_moving_or_removing_one_is() {
        use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
        let quiet = [
            EventKind::Access(AccessKind::Open(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Any),
        ];
        for kind in quiet {
            assert!(!may_change(&kind), "{kind:?}");
        }
        let changes = [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
            EventKind::Other,
        ];
        for kind in changes {
            assert!(may_change(&kind), "{kind:?}");
        }
    }

    const DOC: &str = r#"{"activityId":"a","payload":{"domains":[{"id":"containers","components":[{"id":"web","version":"1","config":[{"key":"image","value":"nginx:1"}]}]}]}}"#;

    #[test]
    fn a_missing_path_yields_nothing() {
        assert!(matches!(
            read(Path::new("/nonexistent/berth.json"), FileLimits::default()),
            Reading::Nothing(_)
        ));
    }

    #[test]
    fn a_file_is_one_part() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("state.json");
        std::fs::write(&f, DOC).unwrap();
        let Reading::Parts(parts) = read(&f, FileLimits::default()) else {
            panic!("no parts")
        };
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].text, DOC);
    }

    #[test]
    fn a_directory_yields_its_json_files_in_name_order_skipping_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.json",
            "a.json",
            ".a.json.tmp",
            ".hidden.json",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), DOC).unwrap();
        }
        let Reading::Parts(parts) = read(dir.path(), FileLimits::default()) else {
            panic!("no parts")
        };
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a.json", "b.json"]);
    }

    #[test]
    fn an_empty_directory_yields_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read(dir.path(), FileLimits::default()),
            Reading::Nothing(_)
        ));
    }

    #[test]
    fn a_changed_file_changes_the_fingerprint() {
        let part = |text: &str| {
            Reading::Parts(vec![Part {
                name: "a.json".into(),
                text: text.into(),
            }])
        };
        assert_eq!(fingerprint(&part(DOC)), fingerprint(&part(DOC)));
        assert_ne!(fingerprint(&part(DOC)), fingerprint(&part("{}")));
    }

    #[test]
    fn a_broken_file_is_refused_with_its_activity_id() {
        let broken = DOC.replace("nginx:1", "");
        let body = document(
            &[Part {
                name: "a.json".into(),
                text: broken,
            }],
            &Options::default(),
        );
        let Body::Refused {
            activity_id,
            errors,
        } = body
        else {
            panic!("accepted")
        };
        assert_eq!(activity_id, "a");
        assert!(errors[0].starts_with("a.json: "), "{errors:?}");
    }

    /// The errors of a refused reading, or a panic naming what it was.
    fn refusal(reading: Reading) -> Vec<String> {
        match reading {
            Reading::Refused { errors, .. } => errors,
            other => panic!("not refused: {other:?}"),
        }
    }

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo runs");
        assert!(status.success(), "mkfifo {}", path.display());
    }

    #[test]
    fn a_file_above_the_limit_is_refused_unread_naming_its_size_and_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.json");
        // Sparse: 64 GiB that nobody could read whole in a test.
        std::fs::File::create(&f)
            .unwrap()
            .set_len(64 << 30)
            .unwrap();
        let errors = refusal(read(dir.path(), FileLimits::default()));
        assert_eq!(errors.len(), 1, "{errors:?}");
        for words in [
            "big.json",
            "68719476736 bytes",
            "1048576",
            "files.max_file_size",
        ] {
            assert!(errors[0].contains(words), "{words}: {errors:?}");
        }
    }

    #[test]
    fn a_file_at_the_limit_is_read_and_one_byte_more_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("state.json");
        std::fs::write(&f, DOC).unwrap();
        let exact = FileLimits {
            max_file_size: DOC.len() as u64,
        };
        assert!(matches!(read(&f, exact), Reading::Parts(_)));
        let below = FileLimits {
            max_file_size: DOC.len() as u64 - 1,
        };
        let errors = refusal(read(&f, below));
        assert!(
            errors[0].contains(&format!("{} bytes", DOC.len())),
            "{errors:?}"
        );
    }

    #[test]
    fn a_fifo_in_the_directory_is_refused_without_being_opened() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), DOC).unwrap();
        // No writer ever opens it: reading it would block for ever.
        mkfifo(&dir.path().join("b.json"));
        let Reading::Refused { errors, parts } = read(dir.path(), FileLimits::default()) else {
            panic!("a FIFO was accepted")
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("b.json: a FIFO"), "{errors:?}");
        assert_eq!(parts.len(), 1, "the regular file is still read");
    }

    #[test]
    fn a_fifo_as_the_state_file_is_refused_without_being_opened() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("state.json");
        mkfifo(&f);
        let errors = refusal(read(&f, FileLimits::default()));
        assert!(errors[0].contains("a FIFO"), "{errors:?}");
    }

    #[test]
    fn a_symlink_to_dev_zero_is_refused_naming_its_target() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.json")).unwrap();
        let errors = refusal(read(dir.path(), FileLimits::default()));
        assert!(
            errors[0].starts_with(
                "zero.json: a symbolic link to /dev/zero, which is a character device"
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn a_symlink_to_a_regular_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("real.json");
        std::fs::write(&target, DOC).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("a.json")).unwrap();
        let Reading::Parts(parts) = read(dir.path(), FileLimits::default()) else {
            panic!("refused")
        };
        assert_eq!(parts[0].text, DOC);
    }

    #[test]
    fn a_dangling_symlink_is_refused_rather_than_read_as_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/nonexistent/x.json", dir.path().join("a.json")).unwrap();
        let errors = refusal(read(dir.path(), FileLimits::default()));
        assert!(
            errors[0].contains("/nonexistent/x.json, which is missing"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_socket_and_a_directory_named_json_are_refused_naming_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("s.json")).unwrap();
        std::fs::create_dir(dir.path().join("d.json")).unwrap();
        let errors = refusal(read(dir.path(), FileLimits::default()));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("d.json: a directory"), "{errors:?}");
        assert!(errors[1].starts_with("s.json: a socket"), "{errors:?}");
    }

    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_state_file_others_may_write_is_refused_naming_the_file_and_its_mode() {
        for mode in [0o666, 0o646, 0o664] {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("state.json");
            std::fs::write(&f, DOC).unwrap();
            chmod(&f, mode);
            let errors = refusal(read(&f, FileLimits::default()));
            assert_eq!(
                errors,
                [format!(
                    "{}: mode {mode:04o} lets others than its owner write it; not read (chmod go-w)",
                    f.display()
                )]
            );
        }
    }

    #[test]
    fn a_state_file_only_its_owner_may_write_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("state.json");
        std::fs::write(&f, DOC).unwrap();
        chmod(&f, 0o644);
        assert!(matches!(read(&f, FileLimits::default()), Reading::Parts(_)));
    }

    #[test]
    fn a_state_file_in_a_directory_others_may_write_is_refused_unless_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("state.json");
        std::fs::write(&f, DOC).unwrap();
        chmod(&f, 0o644);
        chmod(dir.path(), 0o777);
        let errors = refusal(read(&f, FileLimits::default()));
        assert!(
            errors[0].contains("directory mode 0777")
                && errors[0].contains(&dir.path().display().to_string()),
            "{errors:?}"
        );
        chmod(dir.path(), 0o1777);
        assert!(matches!(read(&f, FileLimits::default()), Reading::Parts(_)));
    }

    #[test]
    fn a_state_directory_others_may_write_is_refused_even_when_sticky() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), DOC).unwrap();
        chmod(dir.path(), 0o1777);
        let errors = refusal(read(dir.path(), FileLimits::default()));
        assert!(errors[0].contains("directory mode 1777"), "{errors:?}");
        chmod(dir.path(), 0o755);
        assert!(matches!(
            read(dir.path(), FileLimits::default()),
            Reading::Parts(_)
        ));
    }

    #[test]
    fn a_file_that_is_not_utf8_is_refused_naming_the_byte_and_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = br#"{"activityId":"a"#.to_vec();
        let column = bytes.len() + 1;
        bytes.extend_from_slice(&[0xff, 0xfe]);
        bytes.extend_from_slice(br#""}"#);
        std::fs::write(dir.path().join("bad.json"), bytes).unwrap();
        let errors = refusal(read(dir.path(), FileLimits::default()));
        assert!(
            errors[0].starts_with("bad.json: is not UTF-8: byte 0xff")
                && errors[0].contains(&format!("line 1, column {column}")),
            "{errors:?}"
        );
    }

    #[test]
    fn a_refused_reading_becomes_a_refused_body_with_the_readable_parts_activity_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), DOC).unwrap();
        mkfifo(&dir.path().join("b.json"));
        let reading = read(dir.path(), FileLimits::default());
        let Some(Body::Refused {
            activity_id,
            errors,
        }) = body_of(&reading, &Options::default())
        else {
            panic!("not refused")
        };
        assert_eq!(activity_id, "a");
        assert!(errors[0].starts_with("b.json"), "{errors:?}");

        let alone = tempfile::tempdir().unwrap();
        mkfifo(&alone.path().join("b.json"));
        let Some(Body::Refused { activity_id, .. }) = body_of(
            &read(alone.path(), FileLimits::default()),
            &Options::default(),
        ) else {
            panic!("not refused")
        };
        assert!(
            activity_id.starts_with(super::super::REFUSED_PREFIX),
            "{activity_id}"
        );
    }
}
