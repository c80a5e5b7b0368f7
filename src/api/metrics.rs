//! What `/metrics` serves, through `prometheus-client` (OpenMetrics text).
//!
//! Everything is fed from what berth already says: the feedback stream
//! (activities, their phases and outcomes, drift corrections), the inputs
//! the sources hand the loop (documents by origin, MQTT connections), the
//! messages sent out, and at scrape time the engine (containers by state).
//! Nothing here can slow the agent: updates are atomic counters.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// An activity's outcome, or a phase, or a state: one label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `COMPLETED`, `INCOMPLETE`, `IDENTIFICATION_FAILED`, ...
    pub outcome: String,
}

/// A phase of an activity.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Phase {
    /// `downloading`, `updating`, `activating`, `cleanup`, `rollback`, ...
    pub phase: String,
}

/// A container state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct State {
    /// `running`, `exited`, ...
    pub state: String,
}

/// Where a document came from.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Source {
    /// `mqtt`, `files`, `api`, `persisted`.
    pub origin: String,
}

/// What kind of message berth sent.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// `feedback` or `current_state`.
    pub kind: String,
}

/// An API request's answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Answer {
    /// The route (`/api/v1/containers/{id}/env`).
    pub route: String,
    /// The HTTP status class: `2xx`, `4xx`, `5xx`.
    pub code: String,
}

/// An HTTP status class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1xx-3xx.
    Success,
    /// 4xx.
    Client,
    /// 5xx.
    Server,
}

impl Code {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Code::Success => "2xx",
            Code::Client => "4xx",
            Code::Server => "5xx",
        }
    }
}

type Buckets = fn() -> Histogram;

fn phase_buckets() -> Histogram {
    // 50 ms to about 14 minutes.
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

/// Every metric berth serves.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Activities ended, by final status.
    pub activities: Family<Outcome, Counter>,
    /// How long each phase of an activity took.
    pub phases: Family<Phase, Histogram, Buckets>,
    /// How long whole activities took.
    pub activity_seconds: Histogram,
    /// Drift corrections (reconcile activities that changed something), by
    /// final status; a failed one puts its containers into back-off.
    pub drift_corrections: Family<Outcome, Counter>,
    /// Containers that failed a drift correction and were put into back-off.
    pub backoffs: Counter,
    /// Containers of this instance, by state, at the last scrape.
    pub containers: Family<State, Gauge>,
    /// Documents handed to the loop, by origin.
    pub documents: Family<Source, Counter>,
    /// MQTT connections (re)established.
    pub mqtt_connects: Counter,
    /// Whether the MQTT connection was up at the last news of it.
    pub mqtt_connected: Gauge,
    /// Messages published, by kind (to MQTT when configured, and to the
    /// event stream).
    pub messages_sent: Family<Kind, Counter>,
    /// When the last activity or reconcile ended `COMPLETED` (seconds
    /// since the epoch).
    pub last_success: Gauge<f64, AtomicU64>,
    /// Whether start-up is over (recovery ran, the document was enforced).
    pub ready: Gauge,
    /// API requests answered.
    pub requests: Family<Answer, Counter>,
    /// Event-stream clients connected now.
    pub event_clients: Gauge,
    /// Events dropped for clients too slow to keep up (each then resumes).
    pub events_lagged: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered under `berth_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let m = Self {
            activities: Family::default(),
            phases: Family::new_with_constructor(phase_buckets as Buckets),
            activity_seconds: phase_buckets(),
            drift_corrections: Family::default(),
            backoffs: Counter::default(),
            containers: Family::default(),
            documents: Family::default(),
            mqtt_connects: Counter::default(),
            mqtt_connected: Gauge::default(),
            messages_sent: Family::default(),
            last_success: Gauge::default(),
            ready: Gauge::default(),
            requests: Family::default(),
            event_clients: Gauge::default(),
            events_lagged: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "activities",
            "Activities ended, by final status",
            m.activities.clone(),
        );
        registry.register(
            "activity_phase_duration_seconds",
            "How long each phase of an activity took",
            m.phases.clone(),
        );
        registry.register(
            "activity_duration_seconds",
            "How long whole activities took, first feedback to final status",
            m.activity_seconds.clone(),
        );
        registry.register(
            "drift_corrections",
            "Reconciles that changed something, by final status",
            m.drift_corrections.clone(),
        );
        registry.register(
            "backoffs",
            "Containers that failed a drift correction and were put into back-off",
            m.backoffs.clone(),
        );
        registry.register(
            "containers",
            "Containers of this instance, by state",
            m.containers.clone(),
        );
        registry.register(
            "documents_received",
            "Desired-state documents handed to the loop, by origin",
            m.documents.clone(),
        );
        registry.register(
            "mqtt_connects",
            "MQTT connections established",
            m.mqtt_connects.clone(),
        );
        registry.register(
            "mqtt_connected",
            "1 once the MQTT connection is up",
            m.mqtt_connected.clone(),
        );
        registry.register(
            "messages_sent",
            "Feedback and current-state messages published",
            m.messages_sent.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When the last activity or reconcile ended COMPLETED",
            m.last_success.clone(),
        );
        registry.register(
            "ready",
            "1 once recovery ran and the desired state was first enforced",
            m.ready.clone(),
        );
        registry.register(
            "api_requests",
            "API requests answered, by route and status class",
            m.requests.clone(),
        );
        registry.register(
            "api_event_clients",
            "Event-stream clients connected",
            m.event_clients.clone(),
        );
        registry.register(
            "api_events_lagged",
            "Events a slow client missed (it resumes with Last-Event-ID)",
            m.events_lagged.clone(),
        );
        Self { registry, ..m }
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
