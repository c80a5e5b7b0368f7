//! Kanto's orchestrated protocol, the pure part: the Update Manager's
//! `desiredstate/command` messages, which phase each asks for, whether the
//! activity is in a state to run it, and the baselines a command may name.
//!
//! The Update Manager drives every domain agent one phase at a time (it
//! sends UPDATE only after every domain has downloaded), so berth in
//! `mode = "orchestrated"` must answer each command exactly as Kanto's
//! container update agent does: the same preconditions, the same words when
//! a command does not fit. The driver that runs the phases is
//! `execute::orchestrated`; this module only decides.

use serde::Deserialize;

pub mod progress;

pub use progress::{Progress, Selection};

use crate::feedback::Status;
use crate::plan::{Action, Plan};
use crate::spec::model::DesiredState;

/// Who runs the phases of an activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// berth runs every phase itself, back to back (the default).
    #[default]
    Autonomous,
    /// After IDENTIFIED, berth runs each phase when a Kanto Update
    /// Manager's command asks for it, as Kanto's container update agent.
    Orchestrated,
}

/// The Update Manager's own `phaseTimeout`.
pub const DEFAULT_PHASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The implicit baseline of the removals, as Kanto names it
/// (`<domain>:remove-components`: `containers:remove-components`).
pub fn removals_baseline(domain: &str) -> String {
    format!("{domain}:remove-components")
}

/// A phase the Update Manager asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Pull and create the new containers.
    Download,
    /// Stop what is replaced or removed, update in place.
    Update,
    /// Start the new containers.
    Activate,
    /// End the activity: remove the old containers, or restore them after a
    /// failed phase.
    Cleanup,
    /// Undo what was done (owner consent refused).
    Rollback,
}

impl Phase {
    /// The command's word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Download => "DOWNLOAD",
            Phase::Update => "UPDATE",
            Phase::Activate => "ACTIVATE",
            Phase::Cleanup => "CLEANUP",
            Phase::Rollback => "ROLLBACK",
        }
    }

    /// The baseline status Kanto reports when this command cannot run.
    pub fn failure(self) -> Status {
        match self {
            Phase::Download => Status::DownloadFailure,
            Phase::Update => Status::UpdateFailure,
            Phase::Activate => Status::ActivationFailure,
            Phase::Cleanup => Status::Cleanup,
            Phase::Rollback => Status::RollbackFailure,
        }
    }

    /// The statuses after which the command may run; empty means any
    /// (Kanto's `baselineCommandHandlers`).
    pub fn allowed_after(self) -> &'static [Status] {
        match self {
            Phase::Download => &[Status::Identified],
            Phase::Update => &[Status::DownloadSuccess],
            Phase::Activate => &[Status::UpdateSuccess],
            Phase::Rollback => &[
                Status::DownloadSuccess,
                Status::UpdateSuccess,
                Status::ActivationFailure,
                Status::ActivationSuccess,
            ],
            Phase::Cleanup => &[],
        }
    }
}

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word {
    /// A phase berth knows.
    Phase(Phase),
    /// Anything else: ignored, as Kanto does.
    Unknown(String),
}

/// One `desiredstate/command` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The activity it is for.
    pub activity_id: String,
    /// The phase asked for.
    pub word: Word,
    /// The baseline named; empty (absent) and `*` mean every baseline.
    pub baseline: String,
}

/// Why a command message cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not an envelope.
    #[error("the command is not a desired-state envelope: {0}")]
    Malformed(String),
    /// An envelope whose payload is null or missing (Kanto ignores it).
    #[error("the command message for activity {0:?} has no payload")]
    NoPayload(String),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "activityId", default)]
    activity_id: Option<String>,
    #[serde(default)]
    payload: Option<Payload>,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    baseline: Option<String>,
}

/// Reads a command message as Kanto's Go decoder does: unknown fields are
/// ignored, a missing `baseline` means every baseline.
///
/// # Errors
/// [`CommandError`] when it is not JSON of the envelope's shape, or has no
/// payload.
pub fn parse(bytes: &[u8]) -> Result<Command, CommandError> {
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| CommandError::Malformed(e.to_string()))?;
    let activity_id = envelope.activity_id.unwrap_or_default();
    let Some(payload) = envelope.payload else {
        return Err(CommandError::NoPayload(activity_id));
    };
    let text = payload.command.unwrap_or_default();
    let word = match text.as_str() {
        "DOWNLOAD" => Word::Phase(Phase::Download),
        "UPDATE" => Word::Phase(Phase::Update),
        "ACTIVATE" => Word::Phase(Phase::Activate),
        "CLEANUP" => Word::Phase(Phase::Cleanup),
        "ROLLBACK" => Word::Phase(Phase::Rollback),
        _ => Word::Unknown(text),
    };
    Ok(Command {
        activity_id,
        word,
        baseline: payload.baseline.unwrap_or_default(),
    })
}

/// Whether `phase` may run now that the activity reported `status`; the
/// refusal is Kanto's sentence, word for word.
///
/// # Errors
/// `"<CMD> is possible only after status <S1|S2> is reported"`.
pub fn admit(phase: Phase, status: Status) -> Result<(), String> {
    let allowed = phase.allowed_after();
    if allowed.is_empty() || allowed.contains(&status) {
        return Ok(());
    }
    let names: Vec<String> = allowed.iter().map(|s| status_word(*s)).collect();
    Err(format!(
        "{} is possible only after status {} is reported",
        phase.as_str(),
        names.join("|")
    ))
}

/// Kanto's word for a status (`DOWNLOAD_SUCCESS`).
pub fn status_word(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The baselines of an activity: the document's own, one implicit
/// `<domain>:<name>` per container in none, and
/// `<domain>:remove-components` for the removals, empty or not (Kanto's
/// names). Each lists its container names.
pub fn baselines(desired: &DesiredState, plan: &Plan, domain: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = desired
        .baselines
        .iter()
        .map(|b| (b.title.clone(), b.containers.clone()))
        .collect();
    let grouped = |name: &str| {
        desired
            .baselines
            .iter()
            .any(|b| b.containers.iter().any(|c| c == name))
    };
    let mut removals = Vec::new();
    for entry in &plan.actions {
        match entry.action {
            Action::Ignore => {}
            Action::Remove => removals.push(entry.id.clone()),
            _ if grouped(&entry.id) => {}
            _ => out.push((format!("{domain}:{}", entry.id), vec![entry.id.clone()])),
        }
    }
    // Always there, as Kanto's: a test tool may send its commands to it
    // even when nothing is removed (they then change nothing).
    out.push((removals_baseline(domain), removals));
    out
}

#[cfg(test)]
mod tests;
