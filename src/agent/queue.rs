//! What the reconcile loop does next. Pure: documents and reconcile
//! requests go in, one job at a time comes out.
//!
//! Only one document ever waits: a newer one supersedes it (the caller
//! sends the superseded one its `SUPERSEDED` feedback), and a waiting
//! document makes a waiting reconcile pointless, since applying the
//! document re-plans everything anyway.

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
}
