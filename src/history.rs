//! The activity history: a bounded journal of the last activities, in the
//! state directory, for `berth history` and `berth rollback`.
//!
//! Every activity that applies a document (`berth apply`, `berth upgrade`,
//! `berth rollback`, and the agent's MQTT, file and start-up activities)
//! adds one [`Record`]: who asked, when it started and ended, the versions
//! each component ran before and after, the outcome, and the document's own
//! text, so that a rollback can apply exactly that document again (and write
//! it back, byte for byte, to a state file).
//!
//! It is not the replay memory the agent keeps in `activities.json`
//! ([`crate::agent::queue::History`]): that one remembers a thousand ids to
//! refuse redeliveries and must stay small; this one keeps documents.
//!
//! # Guarantees
//! - At most [`MAX_RECORDS`] records and about [`MAX_BYTES`] bytes: the
//!   oldest records go first, and past the byte bound the oldest documents
//!   are dropped (the record stays, without a document to roll back to).
//! - Written atomically with mode 0600, like every state file; the caller
//!   holds the state directory's lock, so writers never interleave.
//! - Stored documents keep their values, as `desired.json` does: the state
//!   directory is private. What is shown to people goes through the
//!   [`crate::redact::Redactor`] ([`Record::redacted`]).
//! - Records missing fields an older berth did not write still load.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::feedback::Status;
use crate::journal::StateError;
use crate::observe::Observed;
use crate::redact::Redactor;
use crate::runtime::Runtime;
use crate::spec::model::DesiredState;

/// The history's file in the state directory.
pub const FILE: &str = "history.json";
/// The format this berth writes.
pub const FORMAT: u32 = 1;
/// The number of activities kept.
pub const MAX_RECORDS: usize = 100;
/// About the most bytes the file may take; documents of the oldest records
/// are dropped past it.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;

/// Why the history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be read.
    #[error("cannot read the activity history {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a history this berth can read.
    #[error("the activity history {path} is unreadable: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The file could not be written.
    #[error("cannot store the activity history: {0}")]
    Write(#[from] StateError),
}

/// Who started an activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// `berth apply`.
    Cli,
    /// The agent's MQTT desired-state topic.
    Mqtt,
    /// The agent's state file or directory.
    File,
    /// `berth upgrade`.
    Upgrade,
    /// `berth rollback`.
    Rollback,
    /// A local API, where one exists.
    Api,
    /// The agent enforcing the persisted document at start-up.
    State,
}

impl Source {
    /// The word for it, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cli => "cli",
            Source::Mqtt => "mqtt",
            Source::File => "file",
            Source::Upgrade => "upgrade",
            Source::Rollback => "rollback",
            Source::Api => "api",
            Source::State => "state",
        }
    }
}

/// What one component ran: its image reference and its `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Version {
    /// The image reference, as the document named it.
    pub image: String,
    /// The component's `version`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One component before and after an activity; `None` where it did not
/// exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Change {
    /// The component (container name).
    pub component: String,
    /// Before the activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Version>,
    /// After it, as found on the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Version>,
}

impl Change {
    /// Whether the component runs something else than before.
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// One migration an activity applied (filled in by the executor where it
/// runs migrations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Migration {
    /// The component it ran for.
    pub component: String,
    /// The script's name.
    pub name: String,
}

/// One activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The activity id (the document's `activityId`).
    pub id: String,
    /// Who started it.
    pub source: Source,
    /// When it started, in milliseconds since the Unix epoch.
    pub started: u64,
    /// When it ended; `None` while it runs (or when berth stopped first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<u64>,
    /// Its final status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Status>,
    /// What its last feedback message said (what failed, or what changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Every component it touched or found, before and after.
    #[serde(default)]
    pub components: Vec<Change>,
    /// Migrations applied, in order.
    #[serde(default)]
    pub migrations: Vec<Migration>,
    /// The document applied, as its text; dropped for the oldest records
    /// when the history grows past [`MAX_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
}

impl Record {
    /// A record for an activity starting now.
    pub fn start(id: &str, source: Source, document: Option<String>) -> Self {
        Self {
            id: id.to_string(),
            source,
            started: now_ms(),
            ended: None,
            outcome: None,
            message: None,
            components: Vec::new(),
            migrations: Vec::new(),
            document,
        }
    }

    /// Sets how the activity ended, now.
    pub fn finish(&mut self, outcome: Status, message: Option<String>) {
        self.ended = Some(now_ms());
        self.outcome = Some(outcome);
        self.message = message;
    }

    /// Whether the activity completed: its document is what ran after it.
    pub fn completed(&self) -> bool {
        self.outcome == Some(Status::Completed)
    }

    /// The record as it may be shown: secrets in the document (env values
    /// whose names look secret, credentials in URLs) and in the message
    /// replaced.
    pub fn redacted(&self, redactor: &Redactor) -> Self {
        let mut shown = self.clone();
        shown.message = self
            .message
            .as_deref()
            .map(|m| redactor.text(m).into_owned());
        shown.document = self
            .document
            .as_deref()
            .map(|d| redact_document(d, redactor));
        shown
    }
}

/// A document with the values of secret-looking env entries and every
/// credential in a URL replaced; not JSON of the expected shape, the text
/// redacted as a whole.
fn redact_document(text: &str, redactor: &Redactor) -> String {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(text) else {
        return redactor.text(text).into_owned();
    };
    redact_value(&mut value, redactor);
    serde_json::to_string(&value).unwrap_or_else(|_| redactor.text(text).into_owned())
}

fn redact_value(value: &mut serde_json::Value, redactor: &Redactor) {
    match value {
        serde_json::Value::String(s) => {
            let r = redactor.env_entry(s);
            let r = redactor.text(&r).into_owned();
            *s = r;
        }
        serde_json::Value::Array(items) => {
            for item in items {
                redact_value(item, redactor);
            }
        }
        serde_json::Value::Object(map) => {
            for (_, v) in map.iter_mut() {
                redact_value(v, redactor);
            }
        }
        _ => {}
    }
}

/// The last activities, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    records: VecDeque<Record>,
}

/// The file's shape.
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    #[serde(default)]
    records: VecDeque<Record>,
}

/// Why there is nothing to roll back to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// `--to` names no activity on record.
    #[error("no activity {0} in the history (berth history lists them)")]
    Unknown(String),
    /// `--to` names an activity that did not complete.
    #[error("activity {id} did not complete ({outcome}): only a document that was applied successfully is rolled back to")]
    NotCompleted {
        /// The activity.
        id: String,
        /// How it ended.
        outcome: String,
    },
    /// The record's document was dropped to bound the history.
    #[error("the document of activity {0} was not kept (the history keeps about {MAX_BYTES} bytes of documents)")]
    NoDocument(String),
    /// Nothing completed before the current document.
    #[error("no successfully applied document before the current one ({0}) in the history")]
    NothingBefore(String),
    /// Nothing completed at all.
    #[error("the history has no successfully applied document")]
    Empty,
}

impl History {
    /// The history in `dir`: empty when there is none yet.
    ///
    /// # Errors
    /// [`HistoryError::Read`] when it cannot be read,
    /// [`HistoryError::Corrupt`] when it is not a history of a known format.
    pub fn load(dir: &Path) -> Result<Self, HistoryError> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(HistoryError::Read { path, source }),
        };
        let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| HistoryError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if stored.version > FORMAT {
            return Err(HistoryError::Corrupt {
                path,
                message: format!(
                    "format {} is newer than this berth's ({FORMAT})",
                    stored.version
                ),
            });
        }
        let mut history = Self {
            records: stored.records,
        };
        history.bound();
        Ok(history)
    }

    /// Writes the history to `dir` atomically (mode 0600).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn store(&self, dir: &Path) -> Result<(), HistoryError> {
        let bytes = self.encode();
        crate::journal::write_atomic(dir, FILE, &bytes)?;
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Out<'a> {
            version: u32,
            records: &'a VecDeque<Record>,
        }
        serde_json::to_vec(&Out {
            version: FORMAT,
            records: &self.records,
        })
        .unwrap_or_default()
    }

    /// Adds a record, or replaces the one with the same id and start (the
    /// end of an activity whose start was recorded), then bounds the history.
    pub fn push(&mut self, record: Record) {
        if let Some(same) = self
            .records
            .iter_mut()
            .rev()
            .find(|r| r.id == record.id && r.started == record.started)
        {
            *same = record;
        } else {
            self.records.push_back(record);
        }
        self.bound();
    }

    /// At most [`MAX_RECORDS`], and documents dropped oldest first past
    /// [`MAX_BYTES`] (the newest record's document last of all).
    fn bound(&mut self) {
        while self.records.len() > MAX_RECORDS {
            self.records.pop_front();
        }
        let mut size: usize = self.records.iter().map(record_size).sum();
        for r in self.records.iter_mut() {
            if size <= MAX_BYTES {
                break;
            }
            if let Some(d) = r.document.take() {
                size = size.saturating_sub(d.len());
            }
        }
    }

    /// Every record, oldest first.
    pub fn records(&self) -> impl DoubleEndedIterator<Item = &Record> {
        self.records.iter()
    }

    /// The newest record with this activity id.
    pub fn find(&self, id: &str) -> Option<&Record> {
        self.records.iter().rev().find(|r| r.id == id)
    }

    /// The record a rollback applies: the one `to` names (it must have
    /// completed and kept its document), or else the newest completed
    /// record before the current one (the newest completed) whose document
    /// differs from the current one's.
    ///
    /// # Errors
    /// [`RollbackError`] saying why there is none.
    pub fn rollback_target(&self, to: Option<&str>) -> Result<&Record, RollbackError> {
        if let Some(id) = to {
            let r = self
                .find(id)
                .ok_or_else(|| RollbackError::Unknown(id.to_string()))?;
            if !r.completed() {
                return Err(RollbackError::NotCompleted {
                    id: id.to_string(),
                    outcome: r.outcome.map_or_else(
                        || "it has not ended".to_string(),
                        |s| format!("it ended {}", status_word(s)),
                    ),
                });
            }
            if r.document.is_none() {
                return Err(RollbackError::NoDocument(id.to_string()));
            }
            return Ok(r);
        }
        let mut completed = self.records.iter().rev().filter(|r| r.completed());
        let current = completed.next().ok_or(RollbackError::Empty)?;
        completed
            .filter(|r| r.document.is_some() && !same_document(r, current))
            .find(|_| true)
            .ok_or_else(|| RollbackError::NothingBefore(current.id.clone()))
    }
}

/// Whether two records applied the same document (ignoring its activity id,
/// which a re-apply changes).
fn same_document(a: &Record, b: &Record) -> bool {
    let meaning = |r: &Record| {
        r.document
            .as_deref()
            .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
            .map(|mut v| {
                if let Some(o) = v.as_object_mut() {
                    o.remove("activityId");
                    o.remove("timestamp");
                }
                v
            })
    };
    match (meaning(a), meaning(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.document == b.document,
    }
}

fn record_size(r: &Record) -> usize {
    // The document dominates; the rest is a few hundred bytes.
    r.document.as_ref().map_or(0, String::len)
        + r.message.as_ref().map_or(0, String::len)
        + 256
        + r.components.len() * 128
}

/// A status as Kanto spells it (`COMPLETED`).
pub fn status_word(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One read-modify-write of the history at a time in this process (the
/// agent records an activity's end in the background while the next one
/// starts); other processes are kept out by the state directory's lock.
fn turn() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Loads the history in `dir`, adds `record` and stores it. An unreadable
/// history is set aside (`history.json.unreadable`) and a new one begun, so
/// that one bad file never stops activities from being recorded.
///
/// # Errors
/// When the history cannot be written.
pub fn append(dir: &Path, record: Record) -> Result<(), HistoryError> {
    let _turn = turn();
    let mut history = match History::load(dir) {
        Ok(h) => h,
        Err(e @ HistoryError::Corrupt { .. }) => {
            tracing::warn!(error = %e, "setting the activity history aside and starting a new one");
            let _ = std::fs::rename(dir.join(FILE), dir.join(format!("{FILE}.unreadable")));
            History::default()
        }
        Err(e) => return Err(e),
    };
    history.push(record);
    history.store(dir)
}

/// [`append`] on tokio's blocking pool, logging instead of failing: a
/// history that cannot be stored never fails an activity.
pub async fn append_logged(dir: &Path, record: Record) {
    let dir = dir.to_path_buf();
    match tokio::task::spawn_blocking(move || append(&dir, record)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot record the activity in the history"),
        Err(e) => tracing::warn!(error = %e, "cannot record the activity in the history"),
    }
}

/// One activity's record from its start to its end: stored when it starts
/// (so `berth history` shows it running) and again when it ends, with the
/// versions found on the engine before and after.
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    record: Record,
    before: BTreeMap<String, Version>,
    instance: String,
}

impl Recorder {
    /// Records the start of activity `id` in the history in `dir`, with the
    /// versions `observed` shows (the engine as planned against).
    pub async fn start(
        dir: &Path,
        id: &str,
        source: Source,
        document: Option<String>,
        observed: &Observed,
        desired: &DesiredState,
        instance: &str,
    ) -> Self {
        let record = Record::start(id, source, document);
        append_logged(dir, record.clone()).await;
        Self {
            dir: dir.to_path_buf(),
            record,
            before: versions(observed, desired, instance),
            instance: instance.to_string(),
        }
    }

    /// Records how the activity ended, reading the engine once more for
    /// what runs now, unless its plan `changed` nothing (what runs is then
    /// what ran before: a no-op reads the engine once, issue 25); returns
    /// the record.
    pub async fn finish<R: Runtime>(
        mut self,
        rt: &R,
        desired: &DesiredState,
        outcome: &crate::execute::Outcome,
        changed: bool,
    ) -> Record {
        self.record.migrations = outcome
            .migrations
            .iter()
            .flat_map(|(component, names)| {
                names.iter().map(move |name| Migration {
                    component: component.clone(),
                    name: name.clone(),
                })
            })
            .collect();
        let (outcome, message) = (outcome.status, outcome.message.clone());
        let after = if changed {
            match crate::observe::gather_for(rt, desired).await {
                Ok(o) => versions(&o, desired, &self.instance),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the engine after the activity; the history records no versions after it");
                    BTreeMap::new()
                }
            }
        } else {
            self.before.clone()
        };
        self.record.components = changes(&self.before, &after);
        self.record.finish(outcome, message);
        append_logged(&self.dir, self.record.clone()).await;
        self.record
    }
}

/// The document last accepted in the state directory `dir`, read without
/// blocking the async runtime; `None` when there is none or it cannot be
/// read.
pub async fn persisted_document(dir: &Path) -> Option<String> {
    tokio::fs::read_to_string(dir.join(crate::journal::DESIRED))
        .await
        .ok()
}

/// Ends the newest record of `activity` that has no end (berth stopped
/// while it ran, and recovery has just given it its final status), logging
/// instead of failing. A record that has ended is left as it is.
pub async fn close_logged(dir: &Path, activity: &str, outcome: Status, message: Option<String>) {
    let dir = dir.to_path_buf();
    let activity = activity.to_string();
    let closed = tokio::task::spawn_blocking(move || {
        let _turn = turn();
        let mut history = History::load(&dir)?;
        let Some(open) = history
            .records
            .iter_mut()
            .rev()
            .find(|r| r.id == activity && r.ended.is_none())
        else {
            return Ok(());
        };
        open.finish(outcome, message);
        history.store(&dir)
    })
    .await;
    match closed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot record the recovered activity's end in the history")
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot record the recovered activity's end in the history")
        }
    }
}

/// What each component runs on the engine: the desired state's components
/// and every other container `instance` manages (temporary names of an
/// activity left out). The image is the one the document named (berth's
/// label), else the engine's reference.
pub fn versions(
    observed: &Observed,
    desired: &DesiredState,
    instance: &str,
) -> BTreeMap<String, Version> {
    let wanted: BTreeSet<&str> = desired.containers.iter().map(|c| c.name.as_str()).collect();
    observed
        .containers
        .iter()
        .filter(|c| !c.name().contains(".berth-"))
        .filter(|c| {
            wanted.contains(c.name()) || c.owner.as_ref().is_some_and(|o| o.instance == instance)
        })
        .map(|c| {
            let (image, version) = match &c.owner {
                Some(o) => (
                    o.image
                        .clone()
                        .unwrap_or_else(|| c.details.image_ref.clone()),
                    o.version.clone(),
                ),
                None => (c.details.image_ref.clone(), None),
            };
            (c.name().to_string(), Version { image, version })
        })
        .collect()
}

/// Every component in either map, before and after, by name.
pub fn changes(
    before: &BTreeMap<String, Version>,
    after: &BTreeMap<String, Version>,
) -> Vec<Change> {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .map(|n| Change {
            component: n.clone(),
            before: before.get(n).cloned(),
            after: after.get(n).cloned(),
        })
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
