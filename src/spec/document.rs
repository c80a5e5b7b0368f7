//! The wire format of a desired-state document, exactly as Eclipse Kanto's
//! container-update-agent receives it.
//!
//! These types only give the JSON its shape; they accept anything that is
//! well-typed so that [`super::validate`] can report *every* semantic problem
//! with a path, instead of serde stopping at the first.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::keys;

/// The envelope every Kanto message travels in. `activityId` correlates the
/// feedback berth sends back with the document that caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "berth desired-state document")]
pub struct Envelope {
    /// Correlates every feedback message with this document; echoed verbatim.
    pub activity_id: String,
    /// When the sender created the document, in milliseconds since the Unix
    /// epoch. Only logged; berth never orders documents by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// The desired state itself.
    pub payload: Payload,
}

/// The Kanto `DesiredState`: which containers should exist, grouped into
/// baselines that are updated together.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Groups of containers that are updated together. Containers in no
    /// baseline form a baseline of their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<Baseline>,
    /// Exactly one domain with id `containers`.
    #[serde(default)]
    pub domains: Vec<Domain>,
}

/// A named group of components that are updated together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Names the baseline in feedback.
    pub title: String,
    /// Free text for people; berth ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Free text; Kanto ignores it and so does berth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preconditions: Option<String>,
    /// Members, each `containers:<component id>` (here the prefix is required,
    /// unlike component ids).
    #[serde(default)]
    pub components: Vec<String>,
}

/// One update domain. berth serves the `containers` domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    /// The domain id; berth accepts only `containers`.
    pub id: String,
    /// Domain-wide settings. Only `systemContainers` is defined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<DomainSetting>")]
    pub config: Vec<KeyValue>,
    /// The containers that should exist. An empty list asks for every managed
    /// container to be removed.
    #[serde(default)]
    pub components: Vec<Component>,
}

/// One container that should exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// The container name, bare (`influxdb`, not `containers:influxdb`).
    pub id: String,
    /// Echoed in feedback and recorded on the container; when `image` is
    /// absent the image defaults to `<id>:<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The container's settings as key/value pairs; see each key's description.
    #[serde(default)]
    #[schemars(with = "Vec<ContainerSetting>")]
    pub config: Vec<KeyValue>,
}

/// Kanto's universal setting: every value is a string, whatever it means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyValue {
    /// The setting's name.
    pub key: String,
    /// The setting's value, always a JSON string.
    pub value: String,
}

impl KeyValue {
    /// Builds a pair; handy for tests and for documents berth writes itself.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Schema-only stand-in for a container `config` entry: one `oneOf` branch per
/// known key, generated from [`keys::CONTAINER_KEYS`] so the schema can never
/// drift from the parser.
struct ContainerSetting;

impl JsonSchema for ContainerSetting {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ContainerSetting".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        keys::setting_schema(keys::CONTAINER_KEYS, "One container setting.")
    }
}

/// Schema-only stand-in for a domain `config` entry.
struct DomainSetting;

impl JsonSchema for DomainSetting {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DomainSetting".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        keys::setting_schema(keys::DOMAIN_KEYS, "One domain-wide setting.")
    }
}
