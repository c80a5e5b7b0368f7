//! The event hub between the agent and the API: every message the loop
//! publishes passes through [`Hub::publish`], which turns it into
//! server-sent events (kept in a bounded buffer for `Last-Event-ID`
//! resumption), remembers each activity's latest feedback for polling and
//! waiting, and feeds the metrics.
//!
//! Publishing never waits: the buffer is bounded and the live fan-out is a
//! `tokio::sync::broadcast`, so a slow or stuck client loses events (and
//! is told so) but never holds up the agent.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::broadcast;

use super::metrics::{Kind, Metrics, Outcome, Phase as PhaseLabel};
use crate::agent::Outbound;
use crate::feedback::{self, ActionFeedback, ActionStatus, Feedback, Status};

/// How many activities are remembered for `GET /api/v1/activities/{id}`.
pub const ACTIVITIES_KEPT: usize = 256;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its id, increasing; what `Last-Event-ID` names.
    pub id: u64,
    /// `feedback` or `version-update`.
    pub name: &'static str,
    /// The JSON data.
    pub data: String,
    /// For a feedback event, the message (to wait on an activity).
    pub feedback: Option<Arc<Feedback>>,
}

/// Where one container is in an update, as a version-management proxy
/// shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The image is being pulled.
    Pulling,
    /// The new container is created (under a temporary name).
    Creating,
    /// The old container is being stopped.
    Stopping,
    /// The container is being removed.
    Removing,
    /// The new container is starting (and passing its readiness gate).
    Starting,
    /// The update is done and the new version runs.
    Completed,
    /// The update failed (and was rolled back when the message says so).
    Failed,
}

/// A `version-update` event's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionUpdate {
    /// The activity.
    pub activity_id: String,
    /// The component id (container name).
    pub component: String,
    /// Its version in the document.
    pub version: String,
    /// Where it is.
    pub phase: Phase,
    /// Kanto's action status behind it (`DOWNLOADING`, ...).
    #[schema(value_type = String)]
    pub status: ActionStatus,
    /// The words of the feedback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn is_failure(s: ActionStatus) -> bool {
    matches!(
        s,
        ActionStatus::DownloadFailure
            | ActionStatus::UpdateFailure
            | ActionStatus::ActivationFailure
            | ActionStatus::RemovalFailure
    )
}

/// The phase an action's status and words put its container in, if any.
pub fn phase_of(a: &ActionFeedback) -> Option<Phase> {
    let words = a.message.as_deref().unwrap_or("");
    match a.status {
        ActionStatus::Downloading => Some(Phase::Pulling),
        ActionStatus::DownloadSuccess if words == feedback::words::NEW_CONTAINER_CREATED => {
            Some(Phase::Creating)
        }
        ActionStatus::DownloadSuccess => Some(Phase::Pulling),
        ActionStatus::Updating if words == feedback::words::STOPPING_OLD => Some(Phase::Stopping),
        ActionStatus::UpdateSuccess if words == feedback::words::OLD_STOPPED => {
            Some(Phase::Stopping)
        }
        ActionStatus::Updating | ActionStatus::UpdateSuccess => Some(Phase::Creating),
        ActionStatus::Removing | ActionStatus::RemovalSuccess => Some(Phase::Removing),
        ActionStatus::Activating => Some(Phase::Starting),
        ActionStatus::ActivationSuccess => Some(Phase::Starting),
        s if is_failure(s) => Some(Phase::Failed),
        _ => None,
    }
}

/// The `version-update` events a feedback message brings, given the last
/// phase each container of the activity was reported in (updated). A
/// container is reported when its phase changes; when the activity ends,
/// every container that moved gets `completed` unless it `failed`.
pub fn version_updates(last: &mut BTreeMap<String, Phase>, f: &Feedback) -> Vec<VersionUpdate> {
    let mut out = Vec::new();
    let finished = f.payload.status.is_final();
    for a in &f.payload.actions {
        let name = a
            .component
            .id
            .split_once(':')
            .map_or(a.component.id.as_str(), |(_, n)| n)
            .to_string();
        let before = last.get(&name).copied();
        let now = match phase_of(a) {
            Some(Phase::Failed) => Some(Phase::Failed),
            Some(_) | None if finished && before.is_some_and(|p| p != Phase::Failed) => {
                Some(Phase::Completed)
            }
            Some(p) if before != Some(Phase::Completed) => Some(p),
            _ => None,
        };
        let Some(now) = now else { continue };
        if before == Some(now) {
            continue;
        }
        last.insert(name.clone(), now);
        out.push(VersionUpdate {
            activity_id: f.activity_id.clone(),
            component: name,
            version: a.component.version.clone(),
            phase: now,
            status: a.status,
            message: a.message.clone(),
        });
    }
    out
}

/// What is known of one activity.
#[derive(Debug, Clone)]
struct Activity {
    latest: Arc<Feedback>,
    phases: BTreeMap<String, Phase>,
    status_since: Instant,
    started: Instant,
}

#[derive(Debug)]
struct State {
    next_id: u64,
    /// Activities handed to the loop that have no feedback yet.
    queued: VecDeque<String>,
    buffer: VecDeque<Arc<Event>>,
    capacity: usize,
    activities: BTreeMap<String, Activity>,
    order: VecDeque<String>,
    /// The last round of the periodic registry check (`check_interval`),
    /// as JSON.
    upgrades: Option<Arc<serde_json::Value>>,
}

/// The hub. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    live: broadcast::Sender<Arc<Event>>,
    /// The metrics it feeds.
    pub metrics: Metrics,
}

/// What a new subscriber gets: the buffered events after its
/// `Last-Event-ID`, whether some it asked for are gone, and the live feed
/// from there on (no gap, no duplicate: both are taken under one lock).
pub struct Subscription {
    /// Buffered events to send first.
    pub replay: Vec<Arc<Event>>,
    /// Events after `Last-Event-ID` fell out of the buffer.
    pub missed: bool,
    /// Everything published from now on.
    pub live: broadcast::Receiver<Arc<Event>>,
}

impl Hub {
    /// A hub keeping `capacity` events for resumption.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (live, _) = broadcast::channel(capacity);
        Self {
            state: Mutex::new(State {
                next_id: first_id(),
                queued: VecDeque::new(),
                buffer: VecDeque::with_capacity(capacity),
                capacity,
                activities: BTreeMap::new(),
                order: VecDeque::new(),
                upgrades: None,
            }),
            live,
            metrics: Metrics::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one message the loop published.
    pub fn publish(&self, message: &Outbound) {
        match message {
            Outbound::Feedback(f) => self.feedback(f),
            Outbound::CurrentState(_) => {
                self.metrics
                    .messages_sent
                    .get_or_create(&Kind {
                        kind: "current_state".into(),
                    })
                    .inc();
            }
            Outbound::Upgrades(report) => {
                self.metrics
                    .messages_sent
                    .get_or_create(&Kind {
                        kind: "upgrades".into(),
                    })
                    .inc();
                let value = serde_json::to_value(report).unwrap_or_default();
                let data = value.to_string();
                let mut state = self.lock();
                state.upgrades = Some(Arc::new(value));
                self.push(&mut state, "upgrades", data, None);
            }
        }
    }

    fn push(&self, state: &mut State, name: &'static str, data: String, fb: Option<Arc<Feedback>>) {
        let event = Arc::new(Event {
            id: state.next_id,
            name,
            data,
            feedback: fb,
        });
        state.next_id += 1;
        if state.buffer.len() == state.capacity {
            state.buffer.pop_front();
        }
        state.buffer.push_back(event.clone());
        // No receiver is fine: nobody listens.
        let _ = self.live.send(event);
    }

    fn feedback(&self, f: &Feedback) {
        self.metrics
            .messages_sent
            .get_or_create(&Kind {
                kind: "feedback".into(),
            })
            .inc();
        let fb = Arc::new(f.clone());
        let now = Instant::now();
        let mut state = self.lock();
        let fresh = !state.activities.contains_key(&f.activity_id);
        state.queued.retain(|q| q != &f.activity_id);
        if fresh {
            state.order.push_back(f.activity_id.clone());
            while state.order.len() > ACTIVITIES_KEPT {
                if let Some(old) = state.order.pop_front() {
                    state.activities.remove(&old);
                }
            }
        }
        let activity = state
            .activities
            .entry(f.activity_id.clone())
            .or_insert_with(|| Activity {
                latest: fb.clone(),
                phases: BTreeMap::new(),
                status_since: now,
                started: now,
            });
        let previous = activity.latest.payload.status;
        if !fresh && previous != f.payload.status && !previous.is_final() {
            self.metrics
                .phases
                .get_or_create(&PhaseLabel {
                    phase: phase_name(previous),
                })
                .observe(now.duration_since(activity.status_since).as_secs_f64());
            activity.status_since = now;
        }
        let ended = f.payload.status.is_final() && (fresh || !previous.is_final());
        activity.latest = fb.clone();
        let updates = version_updates(&mut activity.phases, f);
        let started = activity.started;
        if ended {
            self.ended(f, started, now);
        }
        let data = serde_json::to_string(f).unwrap_or_default();
        self.push(&mut state, "feedback", data, Some(fb));
        for u in updates {
            let data = serde_json::to_string(&u).unwrap_or_default();
            self.push(&mut state, "version-update", data, None);
        }
    }

    fn ended(&self, f: &Feedback, started: Instant, now: Instant) {
        let outcome = Outcome {
            outcome: status_word(f.payload.status),
        };
        self.metrics.activities.get_or_create(&outcome).inc();
        self.metrics
            .activity_seconds
            .observe(now.duration_since(started).as_secs_f64());
        if f.activity_id.starts_with("reconcile-") {
            self.metrics.drift_corrections.get_or_create(&outcome).inc();
            // A container whose correction failed is held back before the
            // next try.
            let failed = f
                .payload
                .actions
                .iter()
                .filter(|a| is_failure(a.status))
                .count();
            self.metrics.backoffs.inc_by(failed as u64);
        }
        if f.payload.status == Status::Completed {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.metrics.last_success.set(secs);
        }
    }

    /// The latest feedback of an activity, while it is remembered.
    pub fn activity(&self, id: &str) -> Option<Arc<Feedback>> {
        self.lock().activities.get(id).map(|a| a.latest.clone())
    }

    /// What is known of an activity: its latest feedback, or that it was
    /// handed to the loop and waits for its turn.
    /// The last round of the periodic registry check, once one ended.
    pub fn upgrades(&self) -> Option<Arc<serde_json::Value>> {
        self.lock().upgrades.clone()
    }

    pub fn lookup(&self, id: &str) -> Lookup {
        let state = self.lock();
        match state.activities.get(id) {
            Some(a) => Lookup::Feedback(a.latest.clone()),
            None if state.queued.iter().any(|q| q == id) => Lookup::Queued,
            None => Lookup::Unknown,
        }
    }

    /// Remembers that `id` was handed to the loop, so polling it says
    /// "queued" until its first feedback.
    pub fn queued(&self, id: &str) {
        let mut state = self.lock();
        if state.queued.len() == ACTIVITIES_KEPT {
            state.queued.pop_front();
        }
        state.queued.push_back(id.to_string());
    }

    /// Subscribes after `last_event_id` (`None`: only what comes next).
    pub fn subscribe(&self, last_event_id: Option<u64>) -> Subscription {
        let state = self.lock();
        let live = self.live.subscribe();
        let Some(last) = last_event_id else {
            return Subscription {
                replay: Vec::new(),
                missed: false,
                live,
            };
        };
        let oldest = state.buffer.front().map_or(state.next_id, |e| e.id);
        // An id below the buffer, or one this run never gave (from before
        // a restart: ids start at the start time), cannot be resumed from.
        let missed = last.saturating_add(1) < oldest || last >= state.next_id;
        let replay = state
            .buffer
            .iter()
            .filter(|e| e.id > last)
            .cloned()
            .collect();
        Subscription {
            replay,
            missed,
            live,
        }
    }
}

/// What [`Hub::lookup`] knows.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The latest feedback.
    Feedback(Arc<Feedback>),
    /// Handed to the loop, no feedback yet.
    Queued,
    /// Never seen, or forgotten.
    Unknown,
}

/// The first event id of a run: the start time in milliseconds, times a
/// thousand, so the ids of one run are all above the previous run's and a
/// `Last-Event-ID` from before a restart is recognised as such.
fn first_id() -> u64 {
    u64::try_from(crate::feedback::now_ms())
        .unwrap_or(0)
        .saturating_mul(1000)
        .max(1)
}

/// Kanto's word for a status (`COMPLETED`).
pub fn status_word(s: Status) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn phase_name(s: Status) -> String {
    status_word(s).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::{ComponentRef, FeedbackPayload};

    fn action(status: ActionStatus, message: &str) -> ActionFeedback {
        ActionFeedback {
            component: ComponentRef {
                id: "containers:web".into(),
                version: "2".into(),
            },
            status,
            progress: None,
            message: Some(message.into()),
        }
    }

    fn fb(id: &str, status: Status, actions: Vec<ActionFeedback>) -> Feedback {
        Feedback {
            activity_id: id.into(),
            timestamp: 1,
            payload: FeedbackPayload {
                status,
                message: None,
                actions,
                baseline: None,
            },
        }
    }

    fn phases(messages: &[Feedback]) -> Vec<Phase> {
        let mut last = BTreeMap::new();
        messages
            .iter()
            .flat_map(|m| version_updates(&mut last, m))
            .map(|u| u.phase)
            .collect()
    }

    #[test]
    fn a_recreate_goes_through_every_phase_once() {
        let a = |s, m| fb("a", Status::Running, vec![action(s, m)]);
        let got = phases(&[
            a(
                ActionStatus::Identified,
                "Existing container will be replaced",
            ),
            a(ActionStatus::Downloading, ""),
            a(ActionStatus::Downloading, ""),
            a(ActionStatus::DownloadSuccess, "image x downloaded"),
            a(
                ActionStatus::DownloadSuccess,
                feedback::words::NEW_CONTAINER_CREATED,
            ),
            a(ActionStatus::Updating, feedback::words::STOPPING_OLD),
            a(ActionStatus::UpdateSuccess, feedback::words::OLD_STOPPED),
            a(ActionStatus::Activating, "Starting the new container."),
            a(
                ActionStatus::ActivationSuccess,
                "New container instance is started.",
            ),
            a(
                ActionStatus::RemovalSuccess,
                "Old container instance is removed.",
            ),
            fb(
                "a",
                Status::Completed,
                vec![action(
                    ActionStatus::RemovalSuccess,
                    "Old container instance is removed.",
                )],
            ),
        ]);
        assert_eq!(
            got,
            vec![
                Phase::Pulling,
                Phase::Creating,
                Phase::Stopping,
                Phase::Starting,
                Phase::Removing,
                Phase::Completed
            ]
        );
    }

    #[test]
    fn a_failure_is_reported_once_and_never_completed() {
        let got = phases(&[
            fb(
                "a",
                Status::Running,
                vec![action(ActionStatus::Downloading, "")],
            ),
            fb(
                "a",
                Status::Running,
                vec![action(ActionStatus::DownloadFailure, "not found")],
            ),
            fb(
                "a",
                Status::Incomplete,
                vec![action(ActionStatus::DownloadFailure, "not found")],
            ),
        ]);
        assert_eq!(got, vec![Phase::Pulling, Phase::Failed]);
    }

    #[test]
    fn a_container_left_alone_gets_no_events() {
        let got = phases(&[
            fb(
                "a",
                Status::Identified,
                vec![action(ActionStatus::Identified, "No changes detected.")],
            ),
            fb(
                "a",
                Status::Completed,
                vec![action(ActionStatus::Identified, "No changes detected.")],
            ),
        ]);
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn events_carry_increasing_ids_and_resume_after_the_last_seen() {
        let hub = Hub::new(100);
        hub.publish(&Outbound::Feedback(fb("a", Status::Identified, vec![])));
        hub.publish(&Outbound::Feedback(fb("a", Status::Completed, vec![])));
        let ids: Vec<u64> = hub.subscribe(Some(0)).replay.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids[0] < ids[1]);
        let sub = hub.subscribe(Some(ids[0]));
        assert!(!sub.missed);
        assert_eq!(
            sub.replay.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![ids[1]]
        );
    }

    #[test]
    fn a_resume_from_before_the_buffer_says_events_were_missed() {
        let hub = Hub::new(2);
        for _ in 0..5 {
            hub.publish(&Outbound::Feedback(fb("a", Status::Running, vec![])));
        }
        let first = hub.subscribe(Some(0)).replay[0].id - 3;
        let sub = hub.subscribe(Some(first));
        assert!(sub.missed);
        assert_eq!(
            sub.replay.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![first + 3, first + 4]
        );
        assert!(!hub.subscribe(Some(first + 2)).missed);
    }

    #[test]
    fn a_resume_from_another_run_says_events_were_missed() {
        let hub = Hub::new(8);
        hub.publish(&Outbound::Feedback(fb("a", Status::Running, vec![])));
        assert!(
            hub.subscribe(Some(17)).missed,
            "an id from before a restart"
        );
        assert!(hub.subscribe(Some(u64::MAX)).missed, "an id never given");
    }

    #[test]
    fn a_queued_activity_is_known_until_its_feedback_comes() {
        let hub = Hub::new(8);
        hub.queued("api-1");
        assert_eq!(hub.lookup("api-1"), Lookup::Queued);
        hub.publish(&Outbound::Feedback(fb(
            "api-1",
            Status::Identifying,
            vec![],
        )));
        assert!(matches!(hub.lookup("api-1"), Lookup::Feedback(_)));
        assert_eq!(hub.lookup("api-2"), Lookup::Unknown);
    }

    #[test]
    fn publishing_without_listeners_or_with_a_stuck_one_never_blocks() {
        let hub = Hub::new(4);
        let _stuck = hub.subscribe(None);
        for _ in 0..1000 {
            hub.publish(&Outbound::Feedback(fb("a", Status::Running, vec![])));
        }
        assert_eq!(hub.subscribe(Some(0)).replay.len(), 4);
    }

    #[test]
    fn an_activity_is_remembered_with_its_latest_feedback() {
        let hub = Hub::new(4);
        hub.publish(&Outbound::Feedback(fb("a", Status::Running, vec![])));
        hub.publish(&Outbound::Feedback(fb("a", Status::Completed, vec![])));
        assert_eq!(hub.activity("a").unwrap().payload.status, Status::Completed);
        assert!(hub.activity("b").is_none());
    }

    #[test]
    fn ended_activities_are_counted_by_outcome() {
        let hub = Hub::new(4);
        hub.publish(&Outbound::Feedback(fb("a", Status::Running, vec![])));
        hub.publish(&Outbound::Feedback(fb("a", Status::Completed, vec![])));
        hub.publish(&Outbound::Feedback(fb(
            "b",
            Status::IdentificationFailed,
            vec![],
        )));
        let text = hub.metrics.encode();
        assert!(
            text.contains("berth_activities_total{outcome=\"COMPLETED\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("berth_activities_total{outcome=\"IDENTIFICATION_FAILED\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("berth_activity_phase_duration_seconds_count{phase=\"running\"} 1"),
            "{text}"
        );
    }
}
