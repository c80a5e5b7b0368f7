//! The loop's side of `mode = "orchestrated"`: commands routed to the
//! running activity, and a document that becomes the enforced one only once
//! its activity completes.
//!
//! Only documents from MQTT are orchestrated: the Update Manager sends its
//! documents there, and state files (which it knows nothing of) are carried
//! out autonomously as always.
//!
//! An Update Manager owns the order of the phases, so berth must never
//! carry a document out on its own: drift correction and a restart enforce
//! the last document whose orchestrated activity ended `COMPLETED`, never
//! one the Update Manager abandoned (it is not persisted until then).
//!
//! An activity may wait for its next command for as long as the Update
//! Manager's `phaseTimeout` (10 minutes); the device is not left without
//! drift correction meanwhile. Beside the activity, drift correction keeps
//! repairing the containers the activity does not change (a killed
//! container is started again), and leaves the ones it changes alone. It
//! keeps its own undo log (`<state>/aside/`), so the activity's stays
//! whole for a crash between two commands.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Document, Job, JobFuture, Loop, Origin, Report};
use crate::execute::Order;
use crate::feedback::{Status, Tracker};
use crate::journal::StateDir;
use crate::orchestrate::{Command, Mode};
use crate::plan::Plan;
use crate::runtime::Runtime;
use crate::spec::DesiredState;

/// Commands waiting for the running activity at most; it takes them one
/// phase at a time, and the Update Manager sends the next only after the
/// answer, so more are a flood and are dropped.
pub(super) const ORDERS: usize = 8;

/// Where drift correction beside an orchestrated activity keeps its undo
/// log, under the state directory.
const ASIDE: &str = "aside";

/// Drift correction beside a running orchestrated activity.
#[derive(Default)]
pub(super) struct Aside {
    /// The containers the activity changes, once it has planned.
    pub owned: Option<watch::Receiver<Option<BTreeSet<String>>>>,
    /// The drift correction running beside it, if any.
    pub job: Option<(JobFuture, String)>,
}

impl Aside {
    /// A new activity's way to say which containers it changes.
    pub fn watch(&mut self) -> watch::Sender<Option<BTreeSet<String>>> {
        let (tx, rx) = watch::channel(None);
        self.owned = Some(rx);
        tx
    }
}

/// The containers a plan changes: an orchestrated activity's own.
pub(super) fn changed(plan: &Plan) -> BTreeSet<String> {
    plan.actions
        .iter()
        .filter(|e| e.action.changes())
        .map(|e| e.id.clone())
        .collect()
}

/// Whether drift correction beside an activity that changes `owned` must
/// leave `name` alone: one of them, or a temporary of one.
pub(super) fn owned_by(owned: Option<&BTreeSet<String>>, name: &str) -> bool {
    let Some(owned) = owned else {
        return false;
    };
    let base = crate::plan::temporary(name).map_or(name, |(b, _)| b);
    owned.contains(name) || owned.contains(base)
}

/// The state directory of drift correction beside an activity; `None`
/// (logged) when it cannot be opened, and the correction waits.
pub(super) async fn aside_state(state: &Path) -> Option<StateDir> {
    let path = state.join(ASIDE);
    let opened = tokio::task::spawn_blocking(move || StateDir::open(&path)).await;
    match opened {
        Ok(Ok(dir)) => Some(dir),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot open the undo log of drift correction beside the orchestrated activity; it waits");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the undo log of drift correction beside the orchestrated activity; it waits");
            None
        }
    }
}

/// At start-up, after recovery: a drift correction beside an activity that
/// a crash interrupted was undone by recovery from the temporary names
/// alone (its effects are repairs the next correction makes again), so
/// its log is stale and goes.
pub(super) async fn forget_aside(state: &Path) {
    if !tokio::fs::try_exists(state.join(ASIDE))
        .await
        .unwrap_or(false)
    {
        return;
    }
    let Some(dir) = aside_state(state).await else {
        return;
    };
    if matches!(dir.read_journal(), Ok(Some(_))) {
        tracing::warn!("a drift correction beside an orchestrated activity was interrupted; recovery undid it, the next one repairs again");
        if let Err(e) = dir.discard_journal().await {
            tracing::warn!(error = %e, "cannot clear the undo log of drift correction beside the orchestrated activity");
        }
    }
}

impl<R: Runtime + 'static> Loop<R> {
    pub(super) fn orchestrated(&self) -> bool {
        self.options().mode == Mode::Orchestrated
    }

    /// An accepted document, orchestrated: queued (superseding a waiting
    /// one, and ending a running activity that waits for commands), but not
    /// persisted nor enforced by drift correction until it completes.
    pub(super) fn accept_orchestrated(
        &mut self,
        desired: DesiredState,
        origin: Origin,
        text: String,
        warnings: Arc<[String]>,
    ) {
        let activity_id = desired.activity_id.clone();
        tracing::info!(origin = %origin, activity = %activity_id, "accepted a desired state; waiting for the Update Manager's commands");
        self.history
            .send_modify(|h| h.accepted(&activity_id, desired.timestamp));
        if let Some((running, tx)) = &self.orders {
            tracing::info!(activity = %running, by = %activity_id, "a newer document ends the orchestrated activity");
            let _ = tx.try_send(Order::Supersede(activity_id.clone()));
        }
        let document = Document {
            desired: Arc::new(desired),
            origin,
            warnings,
        };
        self.pending = Some((document.clone(), text));
        self.backoff.reset();
        self.generation += 1;
        if let Some(old) = self.queue.offer(document) {
            let old_id = &old.desired.activity_id;
            let tracker = Tracker::new(old_id, &self.options().domain);
            self.shared.feedback(tracker.message(
                Status::Superseded,
                Some(format!("superseded by {activity_id} before it started")),
            ));
            self.history
                .send_modify(|h| h.finished(old_id, Status::Superseded));
        }
    }

    /// Starts drift correction beside the running orchestrated activity,
    /// when one is due and the activity has said which containers it
    /// changes (those are left alone). Never while a newer document waits.
    pub(super) fn start_aside(&mut self) {
        if self.aside.job.is_some()
            || self.orders.is_none()
            || self.queue.waiting().is_some()
            || !self.queue.reconcile_waiting()
        {
            return;
        }
        let Some(owned) = self.aside.owned.as_ref().and_then(|rx| rx.borrow().clone()) else {
            return;
        };
        let Some(next @ Job::Reconcile(_)) = self.queue.take() else {
            return;
        };
        tracing::debug!(left_alone = ?owned, "correcting drift beside the orchestrated activity");
        self.aside.job = self.start(next, Some(owned));
    }

    /// At shutdown: drift correction beside the activity ends first, within
    /// the shutdown grace (else recovery undoes it at the next start).
    pub(super) async fn finish_aside(&mut self) {
        let Some((task, id)) = self.aside.job.take() else {
            return;
        };
        let grace = self.options().shutdown_grace;
        if tokio::time::timeout(grace, task).await.is_err() {
            tracing::warn!(activity = %id, "drift correction beside the orchestrated activity did not end in time");
        }
    }

    /// A command: to the running orchestrated activity it names, else
    /// ignored with a log line (as Kanto's agent does).
    pub(super) fn command(&mut self, command: Command) {
        if !self.orchestrated() {
            tracing::warn!(activity = %command.activity_id, "ignoring a command: berth runs its phases itself (mode = \"orchestrated\" follows an Update Manager)");
            return;
        }
        match &self.orders {
            None => {
                tracing::warn!(activity = %command.activity_id, command = ?command.word, "ignoring a command: no activity is waiting for one")
            }
            Some((running, _)) if *running != command.activity_id => tracing::warn!(
                activity = %command.activity_id,
                running = %running,
                command = ?command.word,
                "ignoring a command for another activity"
            ),
            Some((_, tx)) => {
                if tx.try_send(Order::Command(command)).is_err() {
                    tracing::warn!("too many commands waiting for the activity; dropping one");
                }
            }
        }
    }

    /// An orchestrated activity ended: a completed document becomes the
    /// one enforced (persisted, then kept by drift correction); any other
    /// end leaves the previous one in force.
    pub(super) fn orchestrated_finished(&mut self, report: &Report) {
        let ours = self
            .pending
            .as_ref()
            .is_some_and(|(d, _)| d.desired.activity_id == report.activity_id);
        if !ours {
            return;
        }
        let Some((document, text)) = self.pending.take() else {
            return;
        };
        if report.status != Some(Status::Completed) {
            tracing::info!(activity = %report.activity_id, "the orchestrated activity did not complete; the previous desired state stays in force");
            return;
        }
        if let Err(e) = self.shared.state.save_desired(&text) {
            tracing::error!(error = %e, "cannot persist the completed document; a restart enforces the previous one");
        }
        self.current = Some(document);
    }
}
