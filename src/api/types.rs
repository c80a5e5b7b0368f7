//! The request and response bodies, with their OpenAPI schemas.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `POST /api/v1/containers/{id}/update-image`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateImageRequest {
    /// The repository, without tag or digest (`127.0.0.1:5000/app`).
    pub image: String,
    /// The tag to run (`v2.1.0`).
    pub tag: String,
    /// Keep the container's volumes (the only behaviour berth has: named
    /// volumes and binds stay in the document, anonymous volumes are
    /// handed to the new container). `false` is refused.
    #[serde(default = "yes")]
    pub preserve_volumes: bool,
    /// Keep the container's networks (always: they stay in the document).
    /// `false` is refused.
    #[serde(default = "yes")]
    pub preserve_networks: bool,
}

fn yes() -> bool {
    true
}

/// `?wait=false` answers `202` at once instead of waiting for the end.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Wait for the activity to end (default `true`).
    pub wait: Option<bool>,
}

/// The answer to a mutation once its activity has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MutationResult {
    /// Whether the activity ended `COMPLETED`.
    pub success: bool,
    /// The activity (`api-<ms>` for API mutations).
    pub activity_id: String,
    /// The component's container before, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_container_id: Option<String>,
    /// The component's container after, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_container_id: Option<String>,
    /// The image the component runs now (update-image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The activity's final status in Kanto's words (`COMPLETED`,
    /// `INCOMPLETE`, `SUPERSEDED`, `IDENTIFICATION_FAILED`).
    pub status: String,
    /// What happened, in words, when the feedback says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A remark about the change's lifetime (on a device fed by state
    /// files, the next file change replaces it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The component's env in the new document (env changes), secrets
    /// redacted unless the token may read them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, Option<String>>>,
}

/// The answer to a mutation with `?wait=false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// The activity to follow.
    pub activity_id: String,
    /// Where to poll it (also in the `Location` header).
    pub location: String,
    /// See [`MutationResult::note`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `GET /api/v1/activities/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityView {
    /// The activity.
    pub activity_id: String,
    /// Its latest status (Kanto's word).
    pub status: String,
    /// Whether it is over.
    #[serde(rename = "final")]
    pub done: bool,
    /// The latest feedback message, as published on MQTT (`null` while
    /// the activity is `QUEUED`: handed to the agent, waiting its turn).
    #[schema(value_type = Object)]
    pub feedback: serde_json::Value,
}

/// `GET /api/v1/upgrades`: what the agent's periodic registry check
/// (`check_interval`) found last.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct UpgradesView {
    /// The last round's report, as `berth check --json` prints it
    /// (`timestamp`, `containers`, `available`); `null` before the first
    /// round ended, or when `check_interval` is 0.
    #[schema(value_type = Object)]
    pub report: Option<serde_json::Value>,
}

/// `GET /api/v1/containers/{id}/env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvView {
    /// The component.
    pub id: String,
    /// The container the environment was read from.
    pub container_id: String,
    /// The environment the container runs with (the image's merged with
    /// the document's), secret values as `<redacted>` unless the token has
    /// `can_read_secrets`.
    pub env: BTreeMap<String, String>,
    /// The names whose values were redacted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
}

/// The component as the engine runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedView {
    /// Engine id.
    pub container_id: String,
    /// The image reference it was created with.
    pub image: String,
    /// The image id.
    pub image_id: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// When it last started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Its env, redacted like the env endpoint.
    pub env: Vec<String>,
    /// Its mounts: `source:destination`.
    pub mounts: Vec<String>,
}

/// `GET /api/v1/containers/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    /// The component id (container name).
    pub id: String,
    /// The component version in the desired state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The desired settings (the document's key/value pairs, secret env
    /// values redacted).
    pub desired: Vec<Setting>,
    /// What the engine runs, when it runs something under that name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<ObservedView>,
    /// `running`, `stopped`, `missing` (no container) or the engine's word.
    pub status: String,
}

/// One desired setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Setting {
    /// The key.
    pub key: String,
    /// The value (redacted when secret).
    pub value: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ready` once recovery ran and the desired state was first
    /// enforced, `starting` before.
    pub status: String,
}

/// `?lastEventId=` for clients that cannot send the `Last-Event-ID` header.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventsQuery {
    /// Resume after this event id.
    pub last_event_id: Option<u64>,
}
