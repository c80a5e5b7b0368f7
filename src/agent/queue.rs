//! What the reconcile loop does next. Pure: documents and reconcile
//! requests go in, one job at a time comes out.
//!
//! Only one document ever waits: a newer one supersedes it (the caller
//! sends the superseded one its `SUPERSEDED` feedback), and a waiting
//! document makes a waiting reconcile pointless, since applying the
//! document re-plans everything anyway.
//!
//! [`History`] decides whether a document may be queued at all: one that
//! was answered before (a QoS 1 redelivery, a retained message replayed at
//! a reconnect) or one older than the last accepted is never applied, so
//! nothing a broker replays can take the device back.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::feedback::Status;

/// Why berth re-plans against the last accepted document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The persisted document, enforced at start-up.
    Startup,
    /// `reconcile_interval` passed.
    Interval,
    /// A managed container died, went away or was renamed.
    Event,
    /// The engine came back after being unreachable.
    Engine,
    /// A container's back-off ended.
    Retry,
}

impl Reason {
    /// A word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::Interval => "interval",
            Reason::Event => "event",
            Reason::Engine => "engine",
            Reason::Retry => "retry",
        }
    }
}

/// One unit of work for the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job<D> {
    /// Apply a newly accepted document.
    Apply(D),
    /// Converge to the last accepted document again.
    Reconcile(Reason),
}

/// The waiting work: at most one document and at most one reconcile.
#[derive(Debug, Clone)]
pub struct Queue<D> {
    document: Option<D>,
    reconcile: Option<Reason>,
}

impl<D> Default for Queue<D> {
    fn default() -> Self {
        Self {
            document: None,
            reconcile: None,
        }
    }
}

impl<D> Queue<D> {
    /// Queues a document; returns the one it supersedes, if one was waiting.
    pub fn offer(&mut self, document: D) -> Option<D> {
        self.reconcile = None;
        self.document.replace(document)
    }

    /// Asks for a reconcile, unless a document is waiting (it converges
    /// everything anyway). The first reason asked for is kept.
    pub fn request_reconcile(&mut self, reason: Reason) {
        if self.document.is_none() && self.reconcile.is_none() {
            self.reconcile = Some(reason);
        }
    }

    /// The next job: the waiting document first.
    pub fn take(&mut self) -> Option<Job<D>> {
        if let Some(d) = self.document.take() {
            self.reconcile = None;
            return Some(Job::Apply(d));
        }
        self.reconcile.take().map(Job::Reconcile)
    }

    /// Whether anything waits.
    pub fn is_empty(&self) -> bool {
        self.document.is_none() && self.reconcile.is_none()
    }

    /// Drops a waiting document (at shutdown), handing it back.
    pub fn drain(&mut self) -> Option<D> {
        self.reconcile = None;
        self.document.take()
    }

    /// The document waiting, if one is.
    pub fn waiting(&self) -> Option<&D> {
        self.document.as_ref()
    }

    /// Whether a reconcile waits.
    pub fn reconcile_waiting(&self) -> bool {
        self.reconcile.is_some()
    }
}

/// How many answered documents are remembered: enough for every document a
/// flood can supersede between two that are applied, small enough to
/// rewrite on every change.
pub const HISTORY_LEN: usize = 1024;

/// One document berth answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    /// Its activity id.
    pub activity_id: String,
    /// Its sender's timestamp, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Its final status, once the activity ended (or the document was
    /// superseded before it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// The documents berth accepted or superseded, and the last accepted one:
/// what decides whether a document arriving now is new.
///
/// "Newer" is the sender's `timestamp` when both documents carry one (Kanto's
/// envelope does, in milliseconds); otherwise arrival order, with every
/// activity id answered before counting as old.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Oldest first, at most [`HISTORY_LEN`].
    seen: VecDeque<Seen>,
    /// The last accepted document; kept when `seen` rolls over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<Seen>,
}

/// What [`History::judge`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Never seen, and not older than the last accepted: apply it.
    New,
    /// Answered before: this is it again.
    Again {
        /// Its final status, when known.
        status: Option<Status>,
        /// The last accepted document's id, when that is another one.
        since: Option<String>,
    },
    /// Older than the last accepted document by the sender's own clock.
    Stale {
        /// The last accepted document's id.
        newer: String,
        /// This document's timestamp.
        timestamp: i64,
        /// The last accepted document's timestamp.
        newer_timestamp: i64,
    },
}

impl History {
    /// Whether a document with this id and timestamp may be applied.
    pub fn judge(&self, activity_id: &str, timestamp: Option<i64>) -> Verdict {
        let since = self
            .last
            .as_ref()
            .filter(|l| l.activity_id != activity_id)
            .map(|l| l.activity_id.clone());
        if let Some(seen) = self.find(activity_id) {
            return Verdict::Again {
                status: seen.status,
                since,
            };
        }
        // Only the last accepted one is compared with: a document dated in
        // the future can hold back the ones after it only until a document
        // without a timestamp is accepted.
        if let (Some(t), Some(last)) = (timestamp, &self.last) {
            if let Some(lt) = last.timestamp.filter(|lt| t < *lt) {
                return Verdict::Stale {
                    newer: last.activity_id.clone(),
                    timestamp: t,
                    newer_timestamp: lt,
                };
            }
        }
        Verdict::New
    }

    /// Records an accepted document: the last one from now on.
    pub fn accepted(&mut self, activity_id: &str, timestamp: Option<i64>) {
        let seen = Seen {
            activity_id: activity_id.to_string(),
            timestamp,
            status: None,
        };
        self.remember(seen.clone());
        self.last = Some(seen);
    }

    /// Records a document answered without being accepted (superseded
    /// before berth read it), so that it is not applied when it comes again.
    pub fn answered(&mut self, activity_id: &str, status: Status) {
        if self.find(activity_id).is_none() {
            self.remember(Seen {
                activity_id: activity_id.to_string(),
                timestamp: None,
                status: Some(status),
            });
        }
    }

    /// Records how an accepted document's activity ended.
    pub fn finished(&mut self, activity_id: &str, status: Status) {
        for seen in self
            .seen
            .iter_mut()
            .filter(|s| s.activity_id == activity_id)
        {
            seen.status = Some(status);
        }
        if let Some(last) = self.last.as_mut().filter(|l| l.activity_id == activity_id) {
            last.status = Some(status);
        }
    }

    /// The last accepted document.
    pub fn last(&self) -> Option<&Seen> {
        self.last.as_ref()
    }

    /// The document in the state directory is the last accepted one, whatever
    /// the history says (it is written first; the history may lag behind).
    pub fn persisted(&mut self, activity_id: &str, timestamp: Option<i64>) {
        if self
            .last
            .as_ref()
            .is_some_and(|l| l.activity_id == activity_id)
        {
            return;
        }
        let status = self.find(activity_id).and_then(|s| s.status);
        self.accepted(activity_id, timestamp);
        if let Some(status) = status {
            self.finished(activity_id, status);
        }
    }

    /// Whether a document with this id was answered before.
    pub fn knows(&self, activity_id: &str) -> bool {
        self.find(activity_id).is_some()
    }

    fn find(&self, activity_id: &str) -> Option<&Seen> {
        self.seen
            .iter()
            .rev()
            .find(|s| s.activity_id == activity_id)
            .or(self.last.as_ref().filter(|l| l.activity_id == activity_id))
    }

    fn remember(&mut self, seen: Seen) {
        self.seen.retain(|s| s.activity_id != seen.activity_id);
        self.seen.push_back(seen);
        while self.seen.len() > HISTORY_LEN {
            self.seen.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_queue_has_no_job() {
        assert_eq!(Queue::<u32>::default().take(), None);
    }

    #[test]
    fn a_queued_document_is_the_next_job() {
        let mut q = Queue::default();
        assert_eq!(q.offer(1), None);
        assert_eq!(q.take(), Some(Job::Apply(1)));
        assert_eq!(q.take(), None);
    }

    #[test]
    fn a_newer_document_supersedes_the_waiting_one() {
        let mut q = Queue::default();
        q.offer(1);
        assert_eq!(q.offer(2), Some(1));
        assert_eq!(q.offer(3), Some(2));
        assert_eq!(q.take(), Some(Job::Apply(3)));
        assert!(q.is_empty());
    }

    #[test]
    fn a_waiting_document_makes_a_reconcile_pointless() {
        let mut q = Queue::default();
        q.offer(1);
        q.request_reconcile(Reason::Interval);
        assert_eq!(q.take(), Some(Job::Apply(1)));
        assert_eq!(q.take(), None);
    }

    #[test]
    fn a_document_replaces_a_waiting_reconcile() {
        let mut q = Queue::default();
        q.request_reconcile(Reason::Event);
        q.offer(7);
        assert_eq!(q.take(), Some(Job::Apply(7)));
        assert_eq!(q.take(), None);
    }

    #[test]
    fn reconcile_requests_collapse_into_one() {
        let mut q = Queue::<u32>::default();
        q.request_reconcile(Reason::Event);
        q.request_reconcile(Reason::Interval);
        assert_eq!(q.take(), Some(Job::Reconcile(Reason::Event)));
        assert_eq!(q.take(), None);
    }

    #[test]
    fn drain_hands_back_the_waiting_document() {
        let mut q = Queue::default();
        q.offer(5);
        q.request_reconcile(Reason::Retry);
        assert_eq!(q.drain(), Some(5));
        assert!(q.is_empty());
    }

    #[test]
    fn the_waiting_document_can_be_looked_at_without_taking_it() {
        let mut q = Queue::default();
        assert_eq!(q.waiting(), None);
        q.offer(4);
        assert_eq!(q.waiting(), Some(&4));
        assert_eq!(q.take(), Some(Job::Apply(4)));
    }

    #[test]
    fn a_document_never_seen_is_new() {
        let mut h = History::default();
        assert_eq!(h.judge("a", None), Verdict::New);
        h.accepted("a", Some(10));
        assert_eq!(h.judge("b", None), Verdict::New);
        assert_eq!(h.judge("b", Some(11)), Verdict::New);
    }

    #[test]
    fn the_last_accepted_document_again_is_known_with_its_final_status() {
        let mut h = History::default();
        h.accepted("a", None);
        assert_eq!(
            h.judge("a", None),
            Verdict::Again {
                status: None,
                since: None
            }
        );
        h.finished("a", Status::Completed);
        assert_eq!(
            h.judge("a", None),
            Verdict::Again {
                status: Some(Status::Completed),
                since: None
            }
        );
    }

    #[test]
    fn an_earlier_document_again_is_known_and_names_the_one_accepted_since() {
        let mut h = History::default();
        h.accepted("a", None);
        h.finished("a", Status::Completed);
        h.accepted("b", None);
        assert_eq!(
            h.judge("a", None),
            Verdict::Again {
                status: Some(Status::Completed),
                since: Some("b".into())
            }
        );
    }

    #[test]
    fn a_document_older_than_the_last_accepted_by_timestamp_is_stale() {
        let mut h = History::default();
        h.accepted("b", Some(2000));
        assert_eq!(
            h.judge("a", Some(1000)),
            Verdict::Stale {
                newer: "b".into(),
                timestamp: 1000,
                newer_timestamp: 2000
            }
        );
        assert_eq!(
            h.judge("c", Some(2000)),
            Verdict::New,
            "a tie goes by arrival"
        );
        assert_eq!(
            h.judge("c", None),
            Verdict::New,
            "no timestamp: arrival order"
        );
    }

    #[test]
    fn a_future_dated_document_holds_back_only_until_one_without_a_timestamp_is_accepted() {
        let mut h = History::default();
        h.accepted("future", Some(i64::MAX));
        assert!(matches!(h.judge("a", Some(5)), Verdict::Stale { .. }));
        h.accepted("plain", None);
        assert_eq!(h.judge("a", Some(5)), Verdict::New);
    }

    #[test]
    fn a_document_superseded_before_it_was_read_is_known_when_it_comes_again() {
        let mut h = History::default();
        h.answered("skipped", Status::Superseded);
        h.accepted("b", None);
        assert_eq!(
            h.judge("skipped", None),
            Verdict::Again {
                status: Some(Status::Superseded),
                since: Some("b".into())
            }
        );
    }

    #[test]
    fn the_last_accepted_document_outlives_a_flood_of_superseded_ones() {
        let mut h = History::default();
        h.accepted("kept", Some(7));
        for i in 0..HISTORY_LEN * 2 {
            h.answered(&format!("s{i}"), Status::Superseded);
        }
        assert_eq!(h.last().map(|l| l.activity_id.as_str()), Some("kept"));
        assert!(h.knows("kept"));
        assert!(!h.knows("s0"), "the oldest roll over");
        assert!(matches!(h.judge("old", Some(6)), Verdict::Stale { .. }));
    }

    #[test]
    fn the_persisted_document_becomes_the_last_accepted_keeping_a_known_status() {
        let mut h = History::default();
        h.accepted("a", None);
        h.finished("a", Status::Completed);
        h.accepted("b", None);
        h.persisted("a", None);
        assert_eq!(
            h.last().map(|l| (l.activity_id.as_str(), l.status)),
            Some(("a", Some(Status::Completed)))
        );
        let mut fresh = History::default();
        fresh.persisted("x", Some(3));
        assert_eq!(
            fresh.judge("x", None),
            Verdict::Again {
                status: None,
                since: None
            }
        );
    }

    #[test]
    fn the_history_round_trips_through_json() {
        let mut h = History::default();
        h.accepted("a", Some(1));
        h.finished("a", Status::Incomplete);
        h.answered("s", Status::Superseded);
        let text = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<History>(&text).unwrap(), h);
    }
}
