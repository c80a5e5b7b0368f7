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

use std::sync::Arc;

use super::{Document, Loop, Origin, Report};
use crate::execute::Order;
use crate::feedback::{Status, Tracker};
use crate::orchestrate::{Command, Mode};
use crate::runtime::Runtime;
use crate::spec::DesiredState;

/// Commands waiting for the running activity at most; it takes them one
/// phase at a time, and the Update Manager sends the next only after the
/// answer, so more are a flood and are dropped.
pub(super) const ORDERS: usize = 8;

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
