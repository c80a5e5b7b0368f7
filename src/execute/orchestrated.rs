//! An activity the Kanto Update Manager drives: after IDENTIFIED, each
//! phase runs when its command comes (`mode = "orchestrated"`), with the
//! activity's state (its units, its undo log) kept in between.
//!
//! The phases are the autonomous activity's own ([`Run::download`],
//! [`Run::update`], [`Run::activate`], [`Run::commit`], [`Run::cleanup`]),
//! and the undo log is written as they go, so a crash between two
//! commands is recovered at the next start like any other. What differs is
//! only who decides the next step and what happens after a failure:
//! berth reports the phase's `*_FAILURE` and waits, as Kanto's agent does,
//! for the Update Manager's CLEANUP, which then restores the old containers
//! (Kanto leaves the device half-applied).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::mpsc;

use super::rollout::Run;
use super::{Activity, ExecuteOptions, Outcome, RollbackMode, Sink};
use crate::feedback::{Status, Tracker};
use crate::journal::{StateDir, StateError};
use crate::orchestrate::progress::{self, Progress, Reached};
use crate::orchestrate::{self, Command, Phase, Word};
use crate::runtime::Runtime;

/// What the agent hands an orchestrated activity while it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// A command for this activity.
    Command(Command),
    /// A newer document was accepted: this activity ends, undone.
    Supersede(String),
}

/// Runs an activity one commanded phase at a time, until CLEANUP ends it,
/// `phase_timeout` passes without a command, a newer document supersedes
/// it, or `orders` closes (berth is stopping). The final status is sent.
///
/// # Errors
/// None today, as [`super::execute`].
#[allow(clippy::too_many_arguments)]
pub async fn orchestrate<R: Runtime>(
    rt: &R,
    state: &StateDir,
    activity: Activity<'_>,
    options: &ExecuteOptions,
    tracker: &mut Tracker,
    sink: &mut dyn Sink,
    orders: &mut mpsc::Receiver<Order>,
    phase_timeout: Duration,
) -> Result<Outcome, StateError> {
    let plan = activity.plan;
    if let Some(done) = super::identified(plan, tracker, sink) {
        return Ok(done);
    }
    let baselines = orchestrate::baselines(activity.desired, plan, tracker.domain());
    let changed: Vec<String> = plan
        .actions
        .iter()
        .filter(|e| e.action.changes())
        .map(|e| e.id.clone())
        .collect();
    // Every failure waits for the Update Manager's CLEANUP: nothing here
    // rolls back on its own, and one container never goes back alone.
    let options = ExecuteOptions {
        rollback: RollbackMode::Activity,
        ..options.clone()
    };
    let mut run = Run::begin(rt, state, activity, &options, tracker, sink);
    let mut progress = Progress::new(&baselines, &changed);
    // The words of the failed phase, for the outcome.
    let mut failure: Option<String> = None;
    // A rollback's outcome, for the CLEANUP that follows it.
    let mut rolled_back: Option<Outcome> = None;
    // What the cleanups of single baselines could not remove.
    let mut cleanup_errors: Vec<String> = Vec::new();
    // The final status is the activity's (no baseline), as Kanto's, unless
    // the last command was for every baseline (`*`), as before.
    let mut last_baseline = String::new();
    let outcome = loop {
        run.tracker.answering("");
        run.focus(None);
        let order = match tokio::time::timeout(phase_timeout, orders.recv()).await {
            Err(_) => {
                let at = progress
                    .status()
                    .map_or("the last command".to_string(), orchestrate::status_word);
                let cause = format!(
                    "no command came within phase_timeout ({}) after {at}",
                    humantime::format_duration(phase_timeout),
                );
                tracing::warn!("{cause}; undoing the activity");
                break undo(&mut run, progress.reached(), rolled_back.take(), cause).await;
            }
            Ok(None) => {
                let cause = "berth is stopping".to_string();
                break undo(&mut run, progress.reached(), rolled_back.take(), cause).await;
            }
            Ok(Some(Order::Supersede(by))) => {
                let cause = format!("superseded by {by}");
                break undo(&mut run, progress.reached(), rolled_back.take(), cause).await;
            }
            Ok(Some(Order::Command(c))) => c,
        };
        run.tracker.answering(&order.baseline);
        last_baseline.clone_from(&order.baseline);
        let phase = match &order.word {
            Word::Phase(p) => *p,
            Word::Unknown(w) => {
                tracing::warn!(command = %w, "ignoring an unknown command");
                continue;
            }
        };
        let selection = match progress.admit(phase, &order.baseline) {
            Ok(s) => s,
            Err(words) => {
                run.emit(phase.failure(), Some(words));
                continue;
            }
        };
        tracing::info!(command = phase.as_str(), baseline = %order.baseline, "running the commanded phase");
        run.restart_clock();
        run.focus(selection.names());
        match phase {
            Phase::Download => match run.download(activity.observed).await {
                Ok(()) => progress.record(&selection, Status::DownloadSuccess),
                Err(m) => {
                    progress.record(&selection, Status::DownloadFailure);
                    failure = Some(m);
                }
            },
            Phase::Update => match run.update().await {
                Ok(()) => progress.record(&selection, Status::UpdateSuccess),
                Err(m) => {
                    progress.record(&selection, Status::UpdateFailure);
                    failure = Some(m);
                }
            },
            Phase::Activate => match run.activate().await {
                Ok(_) => {
                    run.emit(Status::ActivationSuccess, None);
                    progress.record(&selection, Status::ActivationSuccess);
                }
                Err(m) => {
                    progress.record(&selection, Status::ActivationFailure);
                    failure = Some(m);
                }
            },
            Phase::Rollback => {
                // Whatever the phase reached (DOWNLOAD_SUCCESS included),
                // ROLLBACK answers ROLLBACK, then ROLLBACK_SUCCESS or
                // _FAILURE: the Update Manager waits for it to send CLEANUP.
                let cause = "the Update Manager ordered a rollback".to_string();
                let only: Option<BTreeSet<String>> =
                    selection.names().map(|n| n.iter().cloned().collect());
                let outcome = run.roll_back(only.as_ref(), cause).await;
                let status = if outcome.status == Status::Incomplete {
                    Status::RollbackSuccess
                } else {
                    Status::RollbackFailure
                };
                progress.record(&selection, status);
                if only.is_none() {
                    rolled_back = Some(outcome);
                } else if status == Status::RollbackFailure {
                    failure = outcome.message;
                }
            }
            Phase::Cleanup => match progress.cleanup(&selection) {
                progress::Cleanup::Commit { last } => {
                    if let Err(outcome) = run.commit().await {
                        break outcome;
                    }
                    cleanup_errors.extend(run.clean().await);
                    progress.cleaned(&selection);
                    if last {
                        run.focus(None);
                        break run
                            .settle(Vec::new(), std::mem::take(&mut cleanup_errors))
                            .await;
                    }
                }
                progress::Cleanup::Restore => {
                    run.focus(None);
                    let cause = failure.clone().unwrap_or_else(|| match progress.status() {
                        Some(s) => format!("cleanup after {}", orchestrate::status_word(s)),
                        None => format!(
                            "cleanup of baseline {} before it was activated",
                            order.baseline
                        ),
                    });
                    let outcome =
                        undo(&mut run, progress.reached(), rolled_back.take(), cause).await;
                    if outcome.status == Status::Incomplete {
                        run.emit(Status::CleanupSuccess, None);
                    } else {
                        run.emit(Status::CleanupFailure, outcome.message.clone());
                    }
                    break outcome;
                }
            },
        }
    };
    if !(last_baseline.is_empty() || last_baseline == "*") {
        run.tracker.answering("");
    }
    run.emit(outcome.status, outcome.message.clone());
    Ok(outcome)
}

/// Undoes what the phases so far did, whatever they were: nothing after
/// IDENTIFIED, the temporaries after DOWNLOAD, the whole log after UPDATE
/// or ACTIVATE (the stopped containers run again, the new ones go).
async fn undo<R: Runtime>(
    run: &mut Run<'_, R>,
    reached: Reached,
    rolled_back: Option<Outcome>,
    cause: String,
) -> Outcome {
    if let Some(done) = rolled_back {
        return done;
    }
    match reached {
        Reached::Nothing => Outcome {
            status: Status::Incomplete,
            message: Some(format!("{cause}; nothing was changed")),
            failed: BTreeSet::new(),
            migrations: Default::default(),
        },
        Reached::Downloaded => run.discard(cause).await,
        Reached::Changed => run.roll_back(None, cause).await,
    }
}
