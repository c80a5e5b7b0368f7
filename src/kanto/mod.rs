//! Kanto's own configuration, `/etc/container-management/config.json`, read
//! so that a Kanto device switches to berth without a new configuration
//! (`berth run --kanto-config PATH`).
//!
//! Two sections matter: `update_agent` (`enable`, `domain`,
//! `system_containers`, `verbose_inventory_report`) and `connection` (the
//! broker, keep-alive, credentials, timeouts). berth's own configuration
//! wins where both set a value; everything else in the file is listed once
//! as ignored. Pure: the caller reads the file.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::{Config, MqttConfig};
use crate::orchestrate::Mode;

/// Where Kanto keeps it.
pub const DEFAULT_PATH: &str = "/etc/container-management/config.json";

/// Why the file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct KantoError {
    /// The key, as a path (`connection.keep_alive`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn bad(field: &str, problem: impl Into<String>) -> KantoError {
    KantoError {
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// What berth takes from Kanto's file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KantoConfig {
    /// `update_agent.enable`: whether Kanto's update agent (and so berth in
    /// its place) talks to the broker.
    pub enable: Option<bool>,
    /// `update_agent.domain`.
    pub domain: Option<String>,
    /// `update_agent.system_containers`.
    pub system_containers: Option<Vec<String>>,
    /// `update_agent.verbose_inventory_report`.
    pub verbose_inventory_report: Option<bool>,
    /// `connection.broker_url` (`tcp://host:port`).
    pub broker_url: Option<String>,
    /// `connection.keep_alive`.
    pub keep_alive: Option<Duration>,
    /// `connection.client_username` (empty means none).
    pub username: Option<String>,
    /// `connection.client_password` (empty means none).
    pub password: Option<String>,
    /// The `connection` timeouts, read and checked: `connect_timeout`
    /// becomes `mqtt.connect_timeout`; the others have no equivalent in
    /// berth's MQTT client (see [`apply`]'s note).
    pub timeouts: Vec<(String, Duration)>,
    /// Every key berth does not use, as a path.
    pub ignored: Vec<String>,
}

const TIMEOUT_KEYS: &[&str] = &[
    "disconnect_timeout",
    "connect_timeout",
    "acknowledge_timeout",
    "subscribe_timeout",
    "unsubscribe_timeout",
];

/// Reads Kanto's `config.json`.
///
/// # Errors
/// A [`KantoError`] naming the key: not JSON, a section that is not an
/// object, a value of the wrong type, a duration Go would not read.
pub fn parse(text: &str) -> Result<KantoConfig, KantoError> {
    let root: Value =
        serde_json::from_str(text).map_err(|e| bad("config.json", format!("is not JSON: {e}")))?;
    let Value::Object(root) = root else {
        return Err(bad("config.json", "is not a JSON object"));
    };
    let mut k = KantoConfig::default();
    for (section, value) in &root {
        match section.as_str() {
            "update_agent" => agent(&mut k, object(value, "update_agent")?)?,
            "connection" => connection(&mut k, object(value, "connection")?)?,
            other => k.ignored.push(other.to_string()),
        }
    }
    Ok(k)
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, KantoError> {
    v.as_object()
        .ok_or_else(|| bad(field, "is not a JSON object"))
}

fn boolean(v: &Value, field: &str) -> Result<bool, KantoError> {
    v.as_bool()
        .ok_or_else(|| bad(field, format!("{v} is not true or false")))
}

fn string(v: &Value, field: &str) -> Result<String, KantoError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| bad(field, format!("{v} is not a string")))
}

/// A Go duration (`20s`, `250ms`, `1m30s`).
fn duration(v: &Value, field: &str) -> Result<Duration, KantoError> {
    let text = string(v, field)?;
    humantime::parse_duration(&text).map_err(|e| {
        bad(
            field,
            format!("\"{text}\" is not a duration ({e}); write e.g. 20s"),
        )
    })
}

fn agent(k: &mut KantoConfig, section: &Map<String, Value>) -> Result<(), KantoError> {
    for (key, v) in section {
        let field = format!("update_agent.{key}");
        match key.as_str() {
            "enable" => k.enable = Some(boolean(v, &field)?),
            "domain" => k.domain = Some(string(v, &field)?),
            "system_containers" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| bad(&field, format!("{v} is not a list of names")))?;
                let names = list
                    .iter()
                    .map(|n| string(n, &field))
                    .collect::<Result<Vec<_>, _>>()?;
                k.system_containers = Some(names);
            }
            "verbose_inventory_report" => k.verbose_inventory_report = Some(boolean(v, &field)?),
            _ => k.ignored.push(field),
        }
    }
    Ok(())
}

fn connection(k: &mut KantoConfig, section: &Map<String, Value>) -> Result<(), KantoError> {
    for (key, v) in section {
        let field = format!("connection.{key}");
        match key.as_str() {
            "broker_url" => k.broker_url = Some(string(v, &field)?),
            "keep_alive" => k.keep_alive = Some(duration(v, &field)?),
            "client_username" => {
                k.username = Some(string(v, &field)?).filter(|s| !s.is_empty());
            }
            "client_password" => {
                k.password = Some(string(v, &field)?).filter(|s| !s.is_empty());
            }
            t if TIMEOUT_KEYS.contains(&t) => {
                k.timeouts.push((field.clone(), duration(v, &field)?))
            }
            // Kanto collects TLS settings and never uses them (its update
            // agent connects without TLS); berth does the same.
            _ => k.ignored.push(field),
        }
    }
    Ok(())
}

/// Which settings berth's own file set (so they win), by their TOML path.
pub trait Explicit {
    /// Whether the file set `path` (`system_containers`, `mqtt.url`).
    fn sets(&self, path: &str) -> bool;
}

impl Explicit for toml::Table {
    fn sets(&self, path: &str) -> bool {
        let mut at: Option<&toml::Value> = None;
        for (i, part) in path.split('.').enumerate() {
            at = if i == 0 {
                self.get(part)
            } else {
                at.and_then(|v| v.get(part))
            };
            if at.is_none() {
                return false;
            }
        }
        at.is_some()
    }
}

/// No berth file: every Kanto value applies.
impl Explicit for () {
    fn sets(&self, _: &str) -> bool {
        false
    }
}

/// Lays Kanto's values under berth's: each is taken unless berth's own
/// file set it. Returns what was done, one line each, for the log.
///
/// An enabled update agent means MQTT on Kanto's broker, and
/// `mode = "orchestrated"` (Kanto's agent never acts on its own), unless
/// berth's file says otherwise.
pub fn apply(k: &KantoConfig, config: &mut Config, berth: &dyn Explicit) -> Vec<String> {
    let mut notes = Vec::new();
    let take = |path: &str, what: &str, notes: &mut Vec<String>| {
        let wins = berth.sets(path);
        if wins {
            notes.push(format!(
                "{path}: berth's configuration wins over Kanto's ({what})"
            ));
        }
        !wins
    };
    if let Some(names) = &k.system_containers {
        if take("system_containers", &format!("{names:?}"), &mut notes) {
            config.system_containers = names.clone();
        }
    }
    if let Some(v) = k.verbose_inventory_report {
        if take("verbose_inventory_report", &v.to_string(), &mut notes) {
            config.verbose_inventory_report = v;
        }
    }
    if k.enable != Some(true) {
        notes.push(
            "update_agent.enable is not true: Kanto's update agent is off, so its connection is not used"
                .to_string(),
        );
    } else {
        if take("mode", "orchestrated", &mut notes) {
            config.mode = Mode::Orchestrated;
        }
        let mqtt = config.mqtt.get_or_insert_with(MqttConfig::default);
        let url = k
            .broker_url
            .clone()
            .unwrap_or_else(|| "tcp://localhost:1883".into());
        if take("mqtt.url", &url, &mut notes) {
            mqtt.url = url;
        }
        if let Some(d) = &k.domain {
            if take("mqtt.domain", d, &mut notes) {
                mqtt.domain = d.clone();
            }
        }
        if let Some(d) = k.keep_alive {
            let text = humantime::format_duration(d).to_string();
            if take("mqtt.keep_alive", &text, &mut notes) {
                mqtt.keep_alive = d;
            }
        }
        if let Some(u) = &k.username {
            if take("mqtt.username", u, &mut notes) {
                mqtt.username = Some(u.clone());
            }
        }
        let berth_password = berth.sets("mqtt.password_file");
        if k.password.is_some()
            && take("mqtt.password", "<redacted>", &mut notes)
            && !berth_password
        {
            mqtt.password = k.password.clone();
            // Kanto's agent sends it over plain TCP. To a broker on this
            // machine that stays on it; to any other, berth's own rule
            // (mqtt.allow_insecure, or TLS) must say so.
            if !mqtt.is_tls() && is_loopback(&mqtt.url) && !berth.sets("mqtt.allow_insecure") {
                mqtt.allow_insecure = true;
                notes.push(
                    "connection.client_password: sent over plain TCP to the broker on this machine, as Kanto sends it"
                        .into(),
                );
            }
        }
    }
    if let Some(mqtt) = config.mqtt.as_mut().filter(|_| k.enable == Some(true)) {
        if let Some((_, d)) = k
            .timeouts
            .iter()
            .find(|(n, _)| n == "connection.connect_timeout")
        {
            let (d, note) = connect_timeout(*d);
            let text = humantime::format_duration(d).to_string();
            if take("mqtt.connect_timeout", &text, &mut notes) {
                mqtt.connect_timeout = d;
                notes.extend(note);
            }
        }
    }
    let unapplied: Vec<&str> = k
        .timeouts
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "connection.connect_timeout")
        .collect();
    if !unapplied.is_empty() {
        notes.push(format!(
            "{}: not applied: rumqttc, berth's MQTT client, has no timeout per acknowledgement, subscription or disconnect; a broker that stops answering is found by the keep-alive (mqtt.keep_alive), then berth reconnects and sends again what was not acknowledged, and at a stop it delivers what is queued for up to 5s",
            unapplied.join(", ")
        ));
    }
    if !k.ignored.is_empty() {
        notes.push(format!("ignored Kanto settings: {}", k.ignored.join(", ")));
    }
    notes
}

/// Kanto's `connect_timeout` as berth's `mqtt.connect_timeout` takes it:
/// whole seconds (rumqttc's unit, rounded up) within 1s and
/// [`crate::config::MAX_CONNECT_TIMEOUT`]; the note says when it had to
/// change.
pub fn connect_timeout(d: Duration) -> (Duration, Option<String>) {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let fitted =
        Duration::from_secs(secs).clamp(Duration::from_secs(1), crate::config::MAX_CONNECT_TIMEOUT);
    let note = (fitted != d).then(|| {
        format!(
            "connection.connect_timeout: {} is taken as {} (whole seconds, 1s to {})",
            humantime::format_duration(d),
            humantime::format_duration(fitted),
            humantime::format_duration(crate::config::MAX_CONNECT_TIMEOUT)
        )
    });
    (fitted, note)
}

/// Whether a broker URL names this machine.
fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    matches!(host, "localhost" | "[::1]") || host.starts_with("127.")
}

#[cfg(test)]
mod tests;
