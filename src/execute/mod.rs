//! Runs a plan: download first, then a per-container rollout behind a
//! readiness gate, with every destructive step written to an undo log before
//! it is issued.
//!
//! The phases are a short sequence of calls: [`download`] (images, then the
//! new containers under temporary names), [`rollout`] (UPDATING, ACTIVATING
//! in dependency waves, commit, CLEANUP), and on any failure [`undo`], the
//! one path that rollback and crash recovery ([`recover`]) share.
//!
//! # Guarantees
//! - Nothing running is touched until every image is present and every new
//!   container that can be made early has been created (under a temporary
//!   name). A failure until then changes nothing that runs.
//! - Every destructive effect (stop, rename, update, start, remove, the
//!   creation of a container) is journaled and fsynced before it is issued,
//!   with what undoing it needs.
//! - A failure after the first destructive step replays the log in reverse:
//!   the old containers come back under their names, running if they were,
//!   with their data. Success is reported only when verified on the engine.
//! - The journal is cleared only when the outcome is final and verified
//!   (COMPLETED with cleanup done, or a rollback whose every step held). A
//!   rollback that failed keeps it, the activity ends
//!   `INCOMPLETE_INCONSISTENT` naming what is left, and [`recover`] (run
//!   before every activity) finishes the job.
//! - Volumes are never removed.

mod compensate;
mod download;
mod gate;
mod hooks;
pub mod migrations;
mod orchestrated;
mod output;
mod recover;
mod rollout;
mod undo;

use std::collections::BTreeSet;
use std::time::Duration;

use crate::feedback::{Feedback, Status, Tracker};
use crate::journal::{StateDir, StateError};
use crate::labels;
use crate::observe::Observed;
use crate::plan::Plan;
use crate::runtime::{Missing, Runtime, RuntimeError};
use crate::spec::model::DesiredState;

pub use crate::plan::{NEW_SUFFIX, OLD_SUFFIX};
pub use orchestrated::{orchestrate, Order};
pub use recover::{
    final_word, recover, recover_with_verdict, verdict, AfterRecovery, Recovered, ROLLBACK_FAILED,
};

/// The engine's default grace period between stop signal and kill.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of an activity a failure undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RollbackMode {
    /// Every container of the activity goes back (the default).
    #[default]
    Activity,
    /// Only the container that failed goes back; the others keep their new version.
    Container,
}

/// A point where a test can make berth wait, to kill it there. Only the
/// `test-hooks` build lets the command line set one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PausePoint {
    /// After the old containers are stopped and renamed.
    Updating,
    /// After the first new container took its name and started.
    Activating,
    /// Right before the activity's nth write of its journal (from 1), so a
    /// test can kill berth between an engine call and its record.
    JournalWrite(u32),
}

/// Limits and choices for one activity.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// Pulls, creates, stops and gates at once.
    pub parallel: usize,
    /// Longest time one image may take to pull.
    pub pull_timeout: Duration,
    /// Stop grace period for containers whose document sets none.
    pub stop_timeout: Duration,
    /// Time a container without a health check must keep running.
    pub min_ready: Duration,
    /// Added to a health check's own worst case before giving up on it.
    pub ready_margin: Duration,
    /// Longest time the whole activity may take; past it, the current step
    /// fails and the activity rolls back. It also caps every readiness wait.
    pub activity_timeout: Duration,
    /// What a failure undoes.
    pub rollback: RollbackMode,
    /// Test hook: wait here (for an hour) so a test can kill berth.
    pub pause_at: Option<PausePoint>,
    /// This berth's instance name, recorded on every container it creates.
    pub instance: String,
    /// Hides secrets in what jobs and hooks printed before it goes into
    /// feedback and the log.
    pub redactor: crate::redact::Redactor,
    /// This activity repairs drift against the last accepted document:
    /// hooks and migrations run only for a container replaced by one of
    /// another spec, never for one put back as it was.
    pub drift_repair: bool,
}

impl Default for ExecuteOptions {
    fn default() -> Self {
        Self {
            parallel: 4,
            pull_timeout: Duration::from_secs(600),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            min_ready: Duration::from_secs(2),
            ready_margin: Duration::from_secs(10),
            activity_timeout: Duration::from_secs(1800),
            rollback: RollbackMode::Activity,
            pause_at: None,
            instance: labels::DEFAULT_INSTANCE.to_string(),
            redactor: crate::redact::Redactor::default(),
            drift_repair: false,
        }
    }
}

/// How an activity ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `COMPLETED`, `INCOMPLETE`, or `INCOMPLETE_INCONSISTENT` when a
    /// rollback could not finish (the journal is kept for recovery).
    pub status: Status,
    /// What went wrong, in words.
    pub message: Option<String>,
    /// The containers whose own step failed (not the ones a rollback of
    /// the whole activity took back with them): the ones to blame.
    pub failed: BTreeSet<String>,
    /// The migrations this activity applied and kept, per component, in
    /// the order they ran (issue 22; `berth history` shows them).
    pub migrations: std::collections::BTreeMap<String, Vec<String>>,
}

/// Why a step of an activity failed. Each variant names the container and
/// the step; the engine's own words are in the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    /// The undo log could not be written, so the step was not issued.
    #[error("cannot write the journal: {0}")]
    Journal(String),
    /// A pull failed.
    #[error("{}", pull_words(.image, .source))]
    PullFailed {
        /// The image.
        image: String,
        /// What the engine said.
        source: RuntimeError,
    },
    /// A pull took longer than `pull_timeout`.
    #[error("pulling image {image} took longer than {}", humantime::format_duration(*.after))]
    PullTimedOut {
        /// The image.
        image: String,
        /// The limit.
        after: Duration,
    },
    /// `pullPolicy=never` and the image is not there.
    #[error("image {image} is not present and pullPolicy is never")]
    ImageUnavailable {
        /// The image.
        image: String,
    },
    /// Something the document needs is missing or taken (a network, a host
    /// port); found before anything was touched.
    #[error("{name}: {problem}")]
    Preflight {
        /// Component.
        name: String,
        /// What is missing or taken.
        problem: String,
    },
    /// One engine call of the rollout failed.
    #[error("{name}: cannot {step}: {source}")]
    Step {
        /// Component.
        name: String,
        /// The step, in words (`stop the old container`).
        step: &'static str,
        /// What the engine said.
        source: RuntimeError,
    },
    /// The new container did not prove ready.
    #[error("{name}: {reason}")]
    NotReady {
        /// Component.
        name: String,
        /// Why (exited, unhealthy, not healthy in time).
        reason: String,
    },
    /// A hook (`preStart`, `postStart`) or a migration failed: it exited
    /// non-zero, ran past `hookTimeout`, or could not be run.
    #[error("{name}: {reason}")]
    Hook {
        /// Component.
        name: String,
        /// Which hook, how it ended, and the end of its output.
        reason: String,
    },
    /// The activity ran past `activity_timeout`.
    #[error("the activity took longer than {}", humantime::format_duration(*.limit))]
    Deadline {
        /// The limit.
        limit: Duration,
    },
}

impl ExecuteError {
    fn step<'a>(name: &'a str, step: &'static str) -> impl FnOnce(RuntimeError) -> Self + 'a {
        move |source| ExecuteError::Step {
            name: name.to_string(),
            step,
            source,
        }
    }
}

fn pull_words(image: &str, e: &RuntimeError) -> String {
    // The runtime says what was missing; no reading of the engine's words.
    if e.is_missing(Missing::Image) {
        format!("image {image} not found in registry")
    } else {
        format!("cannot pull image {image}: {e}")
    }
}

/// Sends feedback messages as the activity goes.
pub trait Sink {
    /// One message.
    fn send(&mut self, feedback: Feedback);
}

impl<F: FnMut(Feedback)> Sink for F {
    fn send(&mut self, feedback: Feedback) {
        self(feedback)
    }
}

/// What an activity is about: the document, its plan, and the engine
/// snapshot the plan was computed from.
#[derive(Debug, Clone, Copy)]
pub struct Activity<'a> {
    /// The accepted document.
    pub desired: &'a DesiredState,
    /// The plan for it.
    pub plan: &'a Plan,
    /// What the engine looked like when planning.
    pub observed: &'a Observed,
}

/// Carries out a plan. The plan must have been computed from `observed`,
/// and recovery must have run since the last activity (no journal left).
///
/// # Errors
/// None today: every failure, state directory included, ends as an
/// [`Outcome`] with feedback. The `Result` is kept for the callers' sake.
pub async fn execute<R: Runtime>(
    rt: &R,
    state: &StateDir,
    activity: Activity<'_>,
    options: &ExecuteOptions,
    tracker: &mut Tracker,
    sink: &mut dyn Sink,
) -> Result<Outcome, StateError> {
    let outcome = rollout::run(rt, state, activity, options, tracker, sink).await;
    let m = tracker.message(outcome.status, outcome.message.clone());
    sink.send(m);
    Ok(outcome)
}

/// One whole activity for an accepted document: IDENTIFYING (observe and
/// plan), IDENTIFIED, then the rollout when anything changes, with every
/// feedback message sent to `sink`. Recovery is the caller's to run first.
///
/// # Errors
/// Only state-directory failures; engine failures end as feedback and an
/// `INCOMPLETE` or `IDENTIFICATION_FAILED` status.
pub async fn apply<R: Runtime>(
    rt: &R,
    state: &StateDir,
    desired: &DesiredState,
    plan_options: &crate::plan::PlanOptions,
    options: &ExecuteOptions,
    sink: &mut dyn Sink,
) -> Result<Status, StateError> {
    let mut tracker = Tracker::new(&desired.activity_id, crate::spec::validate::DEFAULT_DOMAIN);
    sink.send(tracker.message(Status::Identifying, None));
    let observed = match crate::observe::gather_for(rt, desired).await {
        Ok(o) => o,
        Err(e) => {
            sink.send(tracker.message(Status::IdentificationFailed, Some(e.to_string())));
            return Ok(Status::IdentificationFailed);
        }
    };
    let plan = crate::plan::compute(desired, &observed, plan_options);
    let activity = Activity {
        desired,
        plan: &plan,
        observed: &observed,
    };
    let outcome = carry_out(rt, state, activity, options, &mut tracker, sink).await?;
    Ok(outcome.status)
}

/// The part of an activity after planning: IDENTIFIED with every action,
/// then `COMPLETED` at once when nothing changes, else the rollout.
///
/// # Errors
/// As [`execute`].
pub async fn carry_out<R: Runtime>(
    rt: &R,
    state: &StateDir,
    activity: Activity<'_>,
    options: &ExecuteOptions,
    tracker: &mut Tracker,
    sink: &mut dyn Sink,
) -> Result<Outcome, StateError> {
    if let Some(done) = identified(activity.plan, tracker, sink) {
        return Ok(done);
    }
    execute(rt, state, activity, options, tracker, sink).await
}

/// IDENTIFIED, with the plan's warnings logged; when the plan changes
/// nothing the activity ends right there, COMPLETED (the outcome is
/// returned), in both modes: the Update Manager too sends no command to a
/// domain with nothing to do.
pub(crate) fn identified(
    plan: &Plan,
    tracker: &mut Tracker,
    sink: &mut dyn Sink,
) -> Option<Outcome> {
    tracker.identified(plan);
    for w in &plan.warnings {
        tracing::warn!(activity = %plan.activity_id, "{w}");
    }
    sink.send(tracker.message(Status::Identified, Some(plan.summary())));
    if plan.has_changes() {
        return None;
    }
    let message = Some("nothing to change".to_string());
    sink.send(tracker.message(Status::Completed, message.clone()));
    Some(Outcome {
        status: Status::Completed,
        message,
        failed: BTreeSet::new(),
        migrations: Default::default(),
    })
}

#[cfg(test)]
mod tests;
