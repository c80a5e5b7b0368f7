//! The current-state inventory in Kanto's format: what `berth state --json`
//! prints and what the agent publishes on `containersupdate/currentstate`.
//! Pure: it renders an [`Observed`] snapshot.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::observe::{Observed, ObservedContainer};
use crate::redact::Redactor;
use crate::runtime::{ImageDetails, Status};
use crate::spec::document::KeyValue;
use crate::spec::params;

/// Env names matching these (case-insensitive globs) are shown as
/// `<redacted>`; the one list is [`crate::redact::DEFAULT_PATTERNS`].
pub use crate::redact::DEFAULT_PATTERNS as DEFAULT_REDACT;

/// The envelope of a current-state message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "berth current-state message")]
pub struct CurrentState {
    /// `initial-current-state-<ms>` at connect, the request's id for a
    /// `currentstate/get`, the activity's id after an apply.
    pub activity_id: String,
    /// When the inventory was taken, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The inventory.
    pub payload: Inventory,
}

/// Kanto's inventory: the agent node, one node per container, and the links
/// between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// The agent first, then one `CONTAINER` node per container.
    pub software_nodes: Vec<SoftwareNode>,
    /// Agent -> container, one per container.
    pub associations: Vec<Association>,
}

/// One node of the inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SoftwareNode {
    /// `containers-update-agent` for the agent, `containers:<name>` for a container.
    pub id: String,
    /// The agent's version, or the container's component version (or its image tag).
    pub version: String,
    /// Human name (the agent only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Settings in desired-state keys, plus `status`, `created`, `exitCode`, `finishedAt`.
    pub parameters: Vec<KeyValue>,
    /// `APPLICATION` (the agent) or `CONTAINER`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A link from the agent to a container it reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Association {
    /// The agent node id.
    pub source_id: String,
    /// The container node id.
    pub target_id: String,
}

/// How a container relates to berth, for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Management {
    /// Created by berth.
    Managed,
    /// On the system-container list.
    System,
    /// Neither.
    Unmanaged,
}

impl Management {
    /// The word shown in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Management::Managed => "managed",
            Management::System => "system",
            Management::Unmanaged => "unmanaged",
        }
    }
}

/// Whether a container is berth's, a system container, or neither.
pub fn management(c: &ObservedContainer, system: &[String]) -> Management {
    if system.iter().any(|s| s == c.name()) {
        Management::System
    } else if c.owner.is_some() {
        Management::Managed
    } else {
        Management::Unmanaged
    }
}

/// What goes into an inventory besides the snapshot.
#[derive(Debug, Clone)]
pub struct InventoryOptions {
    /// The update domain (`containers`).
    pub domain: String,
    /// Env-name patterns whose values are hidden.
    pub redact: Vec<String>,
    /// Every parameter, defaults included (Kanto's
    /// `verbose_inventory_report`); otherwise only what differs from them.
    pub verbose: bool,
}

impl Default for InventoryOptions {
    fn default() -> Self {
        Self {
            domain: crate::spec::validate::DEFAULT_DOMAIN.to_string(),
            redact: DEFAULT_REDACT.iter().map(|s| s.to_string()).collect(),
            verbose: false,
        }
    }
}

/// Renders the inventory. `images` are the containers' images by image id,
/// so image defaults can be left out of each container's parameters.
pub fn build(
    observed: &Observed,
    images: &BTreeMap<String, ImageDetails>,
    activity_id: &str,
    timestamp: i64,
    options: &InventoryOptions,
) -> CurrentState {
    let agent_id = format!("{}-update-agent", options.domain);
    let mut nodes = vec![SoftwareNode {
        id: agent_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        name: Some("berth containers update agent".into()),
        parameters: vec![KeyValue::new("domain", options.domain.clone())],
        kind: "APPLICATION".into(),
    }];
    let redactor = Redactor::or_everything(&options.redact);
    let mut associations = Vec::new();
    let mut containers: Vec<&ObservedContainer> = observed.containers.iter().collect();
    containers.sort_by(|a, b| a.name().cmp(b.name()));
    for c in containers {
        let id = format!("{}:{}", options.domain, c.name());
        associations.push(Association {
            source_id: agent_id.clone(),
            target_id: id.clone(),
        });
        nodes.push(SoftwareNode {
            id,
            version: version(c),
            name: None,
            parameters: parameters(
                c,
                images.get(&c.details.image_id),
                &redactor,
                options.verbose,
            ),
            kind: "CONTAINER".into(),
        });
    }
    CurrentState {
        activity_id: activity_id.to_string(),
        timestamp,
        payload: Inventory {
            software_nodes: nodes,
            associations,
        },
    }
}

/// The component version berth recorded, else the image's tag or digest.
pub fn version(c: &ObservedContainer) -> String {
    c.owner
        .as_ref()
        .and_then(|o| o.version.clone())
        .unwrap_or_else(|| c.config.image.version_hint().to_string())
}

/// A container's settings without what its image supplies, so the
/// parameters read like the document that would create it.
fn parameters(
    c: &ObservedContainer,
    image: Option<&ImageDetails>,
    redactor: &Redactor,
    verbose: bool,
) -> Vec<KeyValue> {
    let mut config = c.config.clone();
    match (&c.owner, image) {
        (Some(owner), _) => config.env.retain(|k, _| owner.env_keys.contains(k)),
        (None, Some(img)) => config.env.retain(|k, v| {
            let entry = match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            };
            !img.env.contains(&entry)
        }),
        (None, None) => {}
    }
    // The engine names an unnamed container's host after its id.
    if c.details
        .id
        .starts_with(config.hostname.as_deref().unwrap_or("-"))
    {
        config.hostname = None;
    }
    if let Some(img) = image {
        if config.cmd == img.cmd {
            config.cmd = None;
        }
        if config.entrypoint == img.entrypoint {
            config.entrypoint = None;
        }
        if config.workdir.as_deref().unwrap_or("") == img.workdir {
            config.workdir = None;
        }
        if config.user.as_deref().unwrap_or("") == img.user {
            config.user = None;
        }
        config.labels.retain(|k, v| img.labels.get(k) != Some(v));
        if config.stop_signal == img.stop_signal {
            config.stop_signal = None;
        }
        if img.healthcheck.as_ref().map(crate::observe::health) == Some(config.health.clone()) {
            config.health = Default::default();
        }
    }
    let settings = if verbose {
        params::verbose_parameters(c.name(), &config)
    } else {
        params::parameters(c.name(), &config)
    };
    let mut out: Vec<KeyValue> = redacted_parameters(&settings, redactor)
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, v))
        .collect();
    let state = &c.details.state;
    out.push(KeyValue::new("status", state.status.kanto_word()));
    if !c.details.created.is_empty() {
        out.push(KeyValue::new("created", c.details.created.clone()));
    }
    if verbose
        || !matches!(
            state.status,
            Status::Running | Status::Restarting | Status::Paused
        )
    {
        out.push(KeyValue::new("exitCode", state.exit_code.to_string()));
        if c.details.is_completed_job() {
            out.push(KeyValue::new("completed", "true"));
        }
        if let Some(f) = &state.finished_at {
            out.push(KeyValue::new("finishedAt", f.clone()));
        }
    }
    if verbose || state.restart_count > 0 {
        out.push(KeyValue::new(
            "restartCount",
            state.restart_count.to_string(),
        ));
    }
    out
}

/// Parameters as they may be shown: env and label values with a secret
/// name hidden, command arguments by [`Redactor::argv`], every other value
/// with URL passwords hidden. Shared with the planner's diff, so the
/// inventory and the plan agree on what is secret.
pub fn redacted_parameters(
    params: &[params::Parameter],
    redactor: &Redactor,
) -> Vec<params::Parameter> {
    let argv = |key: &str| {
        let values: Vec<&str> = params
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .collect();
        redactor.argv(&values).into_iter()
    };
    let mut cmd = argv("cmd");
    let mut entrypoint = argv("entrypoint");
    params
        .iter()
        .map(|(k, v)| {
            let shown = match *k {
                "env" | "label" => redactor.env_entry(v).into_owned(),
                "cmd" => cmd.next().unwrap_or_default(),
                "entrypoint" => entrypoint.next().unwrap_or_default(),
                _ => redactor.text(v).into_owned(),
            };
            (*k, shown)
        })
        .collect()
}

/// `NAME=value` with the value hidden when NAME matches a pattern (and any
/// URL password hidden otherwise).
pub fn redact_env(entry: &str, patterns: &[String]) -> String {
    Redactor::or_everything(patterns)
        .env_entry(entry)
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns() -> Vec<String> {
        DEFAULT_REDACT.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn secrets_are_redacted_case_insensitively() {
        assert_eq!(
            redact_env("DB_PASSWORD=hunter2", &patterns()),
            "DB_PASSWORD=<redacted>"
        );
        assert_eq!(
            redact_env("api_token=x", &patterns()),
            "api_token=<redacted>"
        );
        assert_eq!(
            redact_env("MY_KEY_ID=1", &patterns()),
            "MY_KEY_ID=<redacted>"
        );
    }

    #[test]
    fn other_env_is_shown() {
        assert_eq!(
            redact_env("LOG_LEVEL=debug", &patterns()),
            "LOG_LEVEL=debug"
        );
        assert_eq!(redact_env("UNSET", &patterns()), "UNSET");
    }

    #[test]
    fn inventory_never_shows_a_secret_env_value_or_url_password() {
        let params = vec![
            ("env", "DB_PASSWORD=hunter2".to_string()),
            ("env", "API_TOKEN=t0k3n".to_string()),
            ("env", "DATABASE_URL=postgres://u:s3cr3t@db/x".to_string()),
            ("cmd", "--auth-key".to_string()),
            ("cmd", "k3y".to_string()),
            ("cmd", "postgres://u:s3cr3t@db/x".to_string()),
            ("entrypoint", "run".to_string()),
            (
                "healthCmd",
                "curl -f http://u:h3alth@localhost/".to_string(),
            ),
            ("label", "app.token=l4bel".to_string()),
            ("env", "LOG_LEVEL=debug".to_string()),
        ];
        let shown = redacted_parameters(&params, &Redactor::default());
        let text = format!("{shown:?}");
        for secret in ["hunter2", "t0k3n", "s3cr3t", "k3y", "h3alth", "l4bel"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("LOG_LEVEL=debug"), "{text}");
        assert_eq!(shown.len(), params.len());
    }

    fn job(exit_code: i64) -> ObservedContainer {
        let details = crate::runtime::ContainerDetails {
            id: "c1".into(),
            name: "init".into(),
            image_ref: "127.0.0.1:5000/app:1".into(),
            restart_policy: "no".into(),
            state: crate::runtime::ContainerState {
                status: Status::Exited,
                exit_code,
                ..Default::default()
            },
            ..Default::default()
        };
        crate::observe::container(details, &Default::default())
    }

    fn value<'a>(params: &'a [KeyValue], key: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    #[test]
    fn a_completed_job_is_reported_completed_with_its_exit_code() {
        let params = parameters(&job(0), None, &Redactor::default(), false);
        assert_eq!(value(&params, "completed"), Some("true"));
        assert_eq!(value(&params, "exitCode"), Some("0"));
        assert_eq!(value(&params, "status"), Some("Exited"));
    }

    #[test]
    fn a_failed_job_is_not_reported_completed() {
        let params = parameters(&job(3), None, &Redactor::default(), false);
        assert_eq!(value(&params, "completed"), None);
        assert_eq!(value(&params, "exitCode"), Some("3"));
    }

    #[test]
    fn glob_anchors_without_stars() {
        let p = |pattern: &str| vec![pattern.to_string()];
        assert_eq!(redact_env("pass=1", &p("PASS")), "pass=<redacted>");
        assert_eq!(redact_env("PASSWORD=1", &p("PASS")), "PASSWORD=1");
        assert_eq!(redact_env("PASSWORD=1", &p("PASS*")), "PASSWORD=<redacted>");
        assert_eq!(redact_env("WORDS=1", &p("*WORD")), "WORDS=1");
    }
}
