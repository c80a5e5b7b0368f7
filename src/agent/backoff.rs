//! Per-container back-off for drift correction. Pure: the caller passes the
//! time in.
//!
//! A container that has to be put back again and again (it crashes, its
//! image is gone, its port is taken) is retried after 2 s, 4 s, 8 s … up to
//! a cap, while the other containers keep converging. It starts afresh when
//! a new document arrives, or once it has stayed as desired for a while.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// The back-off rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The first wait after a repeated failure.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
    /// How long a container must stay as desired to be forgiven.
    pub healthy_after: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(300),
            healthy_after: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_attempt: Instant,
    retry_at: Instant,
}

/// Back-off state of every container berth had to act on.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    policy: Policy,
    entries: BTreeMap<String, Entry>,
}

impl Backoff {
    /// No container backed off yet.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            entries: BTreeMap::new(),
        }
    }

    /// When `name` may be acted on again, if not yet.
    pub fn blocked_until(&self, name: &str, now: Instant) -> Option<Instant> {
        self.entries
            .get(name)
            .map(|e| e.retry_at)
            .filter(|at| *at > now)
    }

    /// Every container that must not be touched now.
    pub fn blocked(&self, now: Instant) -> std::collections::BTreeSet<String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.retry_at > now)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Records that berth acted on `name`. A failure, or a success soon
    /// after the previous attempt (the container did not stay put), counts
    /// against it and pushes the next attempt out.
    pub fn attempted(&mut self, name: &str, ok: bool, now: Instant) {
        let policy = self.policy;
        let entry = self.entries.entry(name.to_string()).or_insert(Entry {
            failures: 0,
            last_attempt: now,
            retry_at: now,
        });
        let again_soon = entry.failures > 0
            || (entry.last_attempt != now
                && now.saturating_duration_since(entry.last_attempt) < policy.healthy_after);
        if !ok || again_soon {
            entry.failures = entry.failures.saturating_add(1);
        }
        entry.last_attempt = now;
        entry.retry_at = now + wait(policy, entry.failures);
    }

    /// Records that `name` is as desired; long enough after the last
    /// attempt, its record is forgotten.
    pub fn in_sync(&mut self, name: &str, now: Instant) {
        let healthy_after = self.policy.healthy_after;
        if self
            .entries
            .get(name)
            .is_some_and(|e| now.saturating_duration_since(e.last_attempt) >= healthy_after)
        {
            self.entries.remove(name);
        }
    }

    /// Forgets everything: a new document deserves a fresh start.
    pub fn reset(&mut self) {
        self.entries.clear();
    }

    /// The earliest future moment a backed-off container may be retried.
    pub fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .map(|e| e.retry_at)
            .filter(|at| *at > now)
            .min()
    }

    /// How many failures count against `name`.
    pub fn failures(&self, name: &str) -> u32 {
        self.entries.get(name).map_or(0, |e| e.failures)
    }
}

/// The wait after `failures` counted failures: none for zero, then
/// base, 2 x base, 4 x base … up to the cap.
fn wait(policy: Policy, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    policy
        .base
        .checked_mul(factor)
        .unwrap_or(policy.cap)
        .min(policy.cap)
}

/// The first reconnect wait, before jitter.
pub const RECONNECT_BASE: Duration = Duration::from_millis(250);
/// The longest reconnect wait.
pub const RECONNECT_CAP: Duration = Duration::from_secs(30);

/// The wait before reconnect attempt `attempt` (1-based) to a broker:
/// doubling from [`RECONNECT_BASE`] up to [`RECONNECT_CAP`], then drawn
/// uniformly between half of that and all of it ("equal jitter"), so that
/// a thousand devices that lost one broker do not all come back in the
/// same instant, and none waits less than half its step.
pub fn jittered(attempt: u32) -> Duration {
    jittered_with(attempt, fastrand::f64())
}

/// [`jittered`] with the draw (0 to 1) given: pure, for tests.
pub fn jittered_with(attempt: u32, draw: f64) -> Duration {
    let step = RECONNECT_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(RECONNECT_CAP);
    step.mul_f64(0.5 + 0.5 * draw.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn backoff() -> Backoff {
        Backoff::new(Policy {
            base: 2 * S,
            cap: 60 * S,
            healthy_after: 120 * S,
        })
    }

    #[test]
    fn a_first_successful_repair_costs_nothing() {
        let mut b = backoff();
        let t = Instant::now();
        b.attempted("web", true, t);
        assert_eq!(b.blocked_until("web", t), None);
        assert_eq!(b.failures("web"), 0);
    }

    #[test]
    fn a_failed_attempt_waits_the_base_delay() {
        let mut b = backoff();
        let t = Instant::now();
        b.attempted("web", false, t);
        assert_eq!(b.blocked_until("web", t), Some(t + 2 * S));
        assert_eq!(b.blocked_until("web", t + 2 * S), None);
    }

    #[test]
    fn repeated_failures_double_the_wait_up_to_the_cap() {
        let mut b = backoff();
        let mut t = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..8 {
            b.attempted("web", false, t);
            let until = b.blocked_until("web", t).unwrap();
            waits.push((until - t).as_secs());
            t = until;
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn a_container_that_needs_repair_again_soon_is_backed_off() {
        let mut b = backoff();
        let t = Instant::now();
        b.attempted("web", true, t);
        b.attempted("web", true, t + 5 * S);
        assert_eq!(b.failures("web"), 1);
        assert_eq!(b.blocked_until("web", t + 5 * S), Some(t + 7 * S));
    }

    #[test]
    fn a_repair_long_after_the_last_one_is_not_held_against_it() {
        let mut b = backoff();
        let t = Instant::now();
        b.attempted("web", true, t);
        b.attempted("web", true, t + 500 * S);
        assert_eq!(b.failures("web"), 0);
    }

    #[test]
    fn one_container_backing_off_does_not_block_another() {
        let mut b = backoff();
        let t = Instant::now();
        b.attempted("web", false, t);
        assert!(b.blocked_until("web", t).is_some());
        assert_eq!(b.blocked_until("db", t), None);
    }

    #[test]
    fn staying_in_sync_for_a_while_forgives_a_container() {
        let mut b = backoff();
        let t = Instant::now();
        b.attempted("web", false, t);
        b.in_sync("web", t + 10 * S);
        assert_eq!(b.failures("web"), 1, "too soon to forgive");
        b.in_sync("web", t + 120 * S);
        assert_eq!(b.failures("web"), 0);
    }

    #[test]
    fn a_new_document_resets_every_container() {
        let mut b = backoff();
        let t = Instant::now();
        b.attempted("web", false, t);
        b.attempted("db", false, t);
        b.reset();
        assert_eq!(b.blocked_until("web", t), None);
        assert_eq!(b.next_retry(t), None);
    }

    #[test]
    fn next_retry_is_the_earliest_pending_one() {
        let mut b = backoff();
        let t = Instant::now();
        b.attempted("web", false, t);
        b.attempted("db", false, t);
        b.attempted("db", false, t);
        assert_eq!(b.next_retry(t), Some(t + 2 * S));
        assert_eq!(b.next_retry(t + 3 * S), Some(t + 4 * S));
        assert_eq!(b.next_retry(t + 5 * S), None);
    }

    #[test]
    fn reconnect_waits_double_from_250ms_to_a_30s_cap() {
        assert_eq!(jittered_with(1, 1.0), Duration::from_millis(250));
        assert_eq!(jittered_with(2, 1.0), Duration::from_millis(500));
        assert_eq!(jittered_with(20, 1.0), RECONNECT_CAP);
    }

    #[test]
    fn reconnect_jitter_stays_between_half_and_all_of_the_step() {
        assert_eq!(jittered_with(3, 0.0), Duration::from_millis(500));
        for _ in 0..100 {
            let w = jittered(3);
            assert!(
                w >= Duration::from_millis(500) && w <= Duration::from_millis(1000),
                "{w:?}"
            );
        }
    }
}
