//! The agent's configuration file (`berth run --config`), TOML with
//! humantime durations. Pure: parsing, defaults, validation and the
//! secret-redacted rendering for `--print-config`.
//!
//! Every option has a default, so an empty file is a valid configuration;
//! an unknown option or a bad value is refused with its name.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::execute::RollbackMode;
use crate::plan::Scope;
use crate::spec::Limits;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

// ---------------------------------------------------------------------------
// Bounds. Every wait below is added to an `Instant` or multiplied into a
// deadline somewhere; each bound is what a person can mean, far inside what
// the arithmetic holds, and is named in the error that refuses a value.
// ---------------------------------------------------------------------------

/// The most `parallel`: each unit is an engine call and a pull stream held
/// open at once; past 64 an edge device's engine only queues them.
pub const MAX_PARALLEL: usize = 64;
/// The longest `min_ready`: an activity waits this long for every container
/// without a health check, so a day is already a very patient rollout.
pub const MAX_MIN_READY: Duration = DAY;
/// The longest `ready_margin`: added to a health check's own worst case
/// (at most 24h + 24h x 100, see [`crate::spec::values::MAX_HEALTH_DURATION`]),
/// which keeps the readiness deadline far inside `Instant`'s range.
pub const MAX_READY_MARGIN: Duration = DAY;
/// The longest `stop_timeout`: the same bound as a document's `stopTimeout`,
/// since it stands in for it and the engine counts it in whole seconds.
pub const MAX_STOP_TIMEOUT: Duration = crate::spec::values::MAX_STOP_TIMEOUT;
/// The longest `pull_timeout`: a pull that has not finished within a day
/// is stalled, not slow.
pub const MAX_PULL_TIMEOUT: Duration = DAY;
/// The longest `activity_timeout`: an activity holds the lock and blocks
/// every newer document while it runs; a week covers the slowest link and
/// the longest readiness gates.
pub const MAX_ACTIVITY_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The longest `shutdown_grace`: no service manager waits longer than a
/// day for a stop (systemd's `TimeoutStopSec` is usually seconds).
pub const MAX_SHUTDOWN_GRACE: Duration = DAY;
/// The longest `reconcile_interval`: drift corrected less than daily is not
/// corrected; `0` still turns it off.
pub const MAX_RECONCILE_INTERVAL: Duration = DAY;
/// The longest `check_interval`: a week, so a typo of units is caught.
pub const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest `files.poll_interval`: a state file looked at less than
/// daily is not being watched.
pub const MAX_POLL_INTERVAL: Duration = DAY;
/// The longest `mqtt.keep_alive`: MQTT sends it as a 16-bit number of
/// seconds, and the client truncates anything longer.
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(u16::MAX as u64);

/// `mqtt.connect_timeout` unless set: rumqttc's own, what berth always had.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `mqtt.connect_timeout`: longer, a broker that never answers
/// keeps berth off MQTT for more than a few minutes per attempt.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest `mqtt.max_message_size`: MQTT's largest packet (a remaining
/// length of 268,435,455 bytes); no broker delivers a bigger message.
pub const MAX_MQTT_MESSAGE_SIZE: usize = 268_435_455;

/// The most `limits.max_components`: 100,000 components validate in half a
/// second and 200 MB (a million take 5 s and 2 GB, too much for the devices
/// berth runs on), and no device runs nearly that many containers.
pub const MAX_LIMITS_MAX_COMPONENTS: usize = 100_000;
/// The least `limits.max_depth`: a valid document nests this deep itself
/// (a config entry is at level 8), so less would refuse every document.
pub const MIN_LIMITS_MAX_DEPTH: usize = crate::spec::limits::DOCUMENT_DEPTH;
/// The most `limits.max_depth`: serde_json refuses the 128th level itself,
/// so a larger limit would never be the one that answers.
pub const MAX_LIMITS_MAX_DEPTH: usize = crate::spec::limits::JSON_DEPTH;

/// Refuses a duration above `max`, in the words of every configuration
/// error (`activity_timeout: 8d must be at most 7d`). Public so that the
/// command line's flags (`berth apply --min-ready`) apply the same bounds
/// and say the same thing; `option` is the name the person wrote.
///
/// # Errors
/// The option, the value and the bound, when the value is above it.
pub fn check_duration(
    option: &str,
    value: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    if value > max {
        return Err(ConfigError(format!(
            "{option}: {} must be at most {}",
            crate::spec::values::duration_text(value),
            crate::spec::values::duration_text(max)
        )));
    }
    Ok(value)
}

/// Refuses a count outside `min..=max` (`parallel: 65 is not between 1 and
/// 64`), for the options and flags that take one.
///
/// # Errors
/// The option, the value and both bounds, when the value is outside them.
pub fn check_count(
    option: &str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    if !(min..=max).contains(&value) {
        return Err(ConfigError(format!(
            "{option}: {value} is not between {min} and {max}"
        )));
    }
    Ok(value)
}

/// Why a configuration file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The agent's whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Docker endpoint; empty means `DOCKER_HOST` or the local socket.
    pub docker_host: Option<String>,
    /// Lock, journal and last accepted document.
    pub state_dir: PathBuf,
    /// This berth's instance name on the engine.
    pub instance: String,
    /// `owned` or `all`.
    #[serde(with = "scope_text")]
    pub scope: Scope,
    /// Containers berth never touches.
    pub system_containers: Vec<String>,
    /// Pulls, creates, starts and gates at once.
    pub parallel: usize,
    /// Readiness without a health check.
    #[serde(with = "duration_text")]
    pub min_ready: Duration,
    /// `activity` or `container`.
    #[serde(with = "rollback_text")]
    pub rollback: RollbackMode,
    /// Added to a health check's own worst case before giving up on it.
    #[serde(with = "duration_text")]
    pub ready_margin: Duration,
    /// Stop grace period for containers whose document sets none.
    #[serde(with = "duration_text")]
    pub stop_timeout: Duration,
    /// Longest time one image pull may take.
    #[serde(with = "duration_text")]
    pub pull_timeout: Duration,
    /// Longest time one activity may take before it rolls back.
    #[serde(with = "duration_text")]
    pub activity_timeout: Duration,
    /// `autonomous` (berth runs every phase) or `orchestrated` (a Kanto
    /// Update Manager commands each phase).
    pub mode: crate::orchestrate::Mode,
    /// Orchestrated: how long berth waits for the next command before it
    /// undoes the activity (`INCOMPLETE`).
    #[serde(with = "duration_text")]
    pub phase_timeout: Duration,
    /// `strict` (malformed entries and unknown keys refuse the document) or
    /// `lenient` (the ones Kanto drops are dropped, with a warning each).
    pub validation: crate::spec::validate::Validation,
    /// Report every parameter of every container in the current state,
    /// defaults included, as Kanto's `verbose_inventory_report` does.
    pub verbose_inventory_report: bool,
    /// How long a running activity may take to end at shutdown before it
    /// is stopped and undone.
    #[serde(with = "duration_text")]
    pub shutdown_grace: Duration,
    /// Env-name patterns shown as `<redacted>`.
    pub redact_env: Vec<String>,
    /// Drift correction period; `0` disables it.
    #[serde(with = "duration_text")]
    pub reconcile_interval: Duration,
    /// How often the agent asks the registries for newer images and
    /// publishes what `berth check` would say (retained, on
    /// `containersupdate/upgrades`); `0`, the default, never.
    #[serde(with = "duration_text")]
    pub check_interval: Duration,
    /// With `check_interval`: a newer major version is a candidate too.
    pub check_any_major: bool,
    /// How large and deep a desired-state document may be, from any source.
    pub limits: Limits,
    /// The MQTT connection, when a broker is used.
    pub mqtt: Option<MqttConfig>,
    /// The file source, when state files are used.
    pub files: Option<FilesConfig>,
    /// What a document may ask the device to run (docs/SECURITY.md).
    pub policy: crate::policy::PolicyConfig,
    /// Credentials and transport per registry (`[[registries]]`), for
    /// pulls and `berth check`; they win over docker's stored logins.
    pub registries: Vec<crate::registry::RegistryConfig>,
    /// The local HTTP API (`[api]`), served by `berth run` when present.
    pub api: Option<crate::api::ApiConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            docker_host: None,
            state_dir: PathBuf::from(crate::journal::DEFAULT_STATE_DIR),
            instance: crate::labels::DEFAULT_INSTANCE.to_string(),
            scope: Scope::Owned,
            system_containers: Vec::new(),
            parallel: 4,
            min_ready: Duration::from_secs(2),
            rollback: RollbackMode::Activity,
            ready_margin: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
            pull_timeout: Duration::from_secs(600),
            activity_timeout: Duration::from_secs(1800),
            mode: crate::orchestrate::Mode::Autonomous,
            phase_timeout: crate::orchestrate::DEFAULT_PHASE_TIMEOUT,
            validation: crate::spec::validate::Validation::Strict,
            verbose_inventory_report: false,
            shutdown_grace: Duration::from_secs(60),
            redact_env: crate::redact::DEFAULT_PATTERNS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            reconcile_interval: Duration::from_secs(60),
            check_interval: Duration::ZERO,
            check_any_major: false,
            limits: Limits::default(),
            mqtt: None,
            files: None,
            policy: crate::policy::PolicyConfig::default(),
            registries: Vec::new(),
            api: None,
        }
    }
}

/// The broker and how berth appears on it. Its `Debug` hides the password
/// (and a password in the URL), so no log line or panic can print them.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// More brokers of the same cluster, tried in turn after `url` when a
    /// connection fails or is lost (with jittered back-off), so that a
    /// fleet survives a broker node going down. Same scheme as `url`.
    pub failover_urls: Vec<String>,
    /// Client id; empty means one derived from this device's machine id
    /// (see [`crate::agent::mqtt::default_client_id`]), so that two devices
    /// never take each other's session on a shared broker.
    pub client_id: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password, inline (prefer `password_file`).
    pub password: Option<String>,
    /// File holding the password. Like the other files it may start with
    /// `${CREDENTIALS_DIRECTORY}/`, for systemd's `LoadCredential=`.
    pub password_file: Option<PathBuf>,
    /// CA bundle for `mqtts://`; only `mqtts://` reads it, so it is refused
    /// with `mqtt://` rather than ignored.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for `mqtts://`.
    pub cert_file: Option<PathBuf>,
    /// Client key for `mqtts://`.
    pub key_file: Option<PathBuf>,
    /// Lets a password go over plain `mqtt://`: refused otherwise, since
    /// anyone on the path reads it. For a broker on a trusted link only.
    pub allow_insecure: bool,
    /// Keep-alive period.
    #[serde(with = "duration_text")]
    pub keep_alive: Duration,
    /// How long a connection attempt may take (TCP, TLS and the broker's
    /// CONNACK) before berth gives it up and retries: a broker that accepts
    /// TCP but never answers must not hold berth forever. Also bounds one
    /// write to the broker. Whole seconds (rumqttc's unit), rounded up.
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    /// Update domain (`containers` -> topics `containersupdate/...`).
    pub domain: String,
    /// Root put before every topic, for many agents on one broker.
    pub topic_prefix: String,
    /// Largest desired-state message accepted, in bytes.
    pub max_message_size: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: "mqtt://127.0.0.1:1883".into(),
            failover_urls: Vec::new(),
            client_id: None,
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            allow_insecure: false,
            keep_alive: Duration::from_secs(20),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            domain: crate::spec::validate::DEFAULT_DOMAIN.into(),
            topic_prefix: String::new(),
            max_message_size: 1 << 20,
        }
    }
}

impl MqttConfig {
    /// Whether the URL asks for TLS (`mqtts://`, or `ssl://` as
    /// Paho and rumqttc spell it).
    pub fn is_tls(&self) -> bool {
        matches!(self.url.split_once("://"), Some(("mqtts" | "ssl", _)))
    }

    /// Refuses settings that would not protect what they seem to: TLS
    /// files with plain TCP (they would be ignored, and the person thinks
    /// the link is encrypted), and a password over plain TCP (sent in
    /// clear) unless `allow_insecure` says that is meant.
    fn check_transport(&self) -> Result<(), ConfigError> {
        if self.is_tls() {
            return Ok(());
        }
        for (option, set) in [
            ("mqtt.ca_file", self.ca_file.is_some()),
            ("mqtt.cert_file", self.cert_file.is_some()),
            ("mqtt.key_file", self.key_file.is_some()),
        ] {
            if set {
                return Err(ConfigError(format!(
                    "{option}: set, but \"{}\" is plain TCP, which uses no TLS file; \
                     write mqtts://",
                    crate::redact::userinfo(&self.url)
                )));
            }
        }
        let password = if self.password.is_some() {
            Some("mqtt.password")
        } else if self.password_file.is_some() {
            Some("mqtt.password_file")
        } else {
            None
        };
        if let (Some(option), false) = (password, self.allow_insecure) {
            return Err(ConfigError(format!(
                "{option}: the password would cross \"{}\" in clear text (plain TCP); \
                 use mqtts://, or set mqtt.allow_insecure = true (--mqtt-allow-insecure) \
                 for a broker on a trusted link",
                crate::redact::userinfo(&self.url)
            )));
        }
        Ok(())
    }
}

/// Checks a topic prefix: empty (none), or a topic level path ending in
/// `/`, so that `<prefix>containersupdate/...` stays the topics Kanto's
/// cloud side expects. A wildcard would make every topic one berth cannot
/// publish to; a missing `/` would silently glue the prefix onto the domain
/// (`devices/d1containersupdate`).
///
/// # Errors
/// What is wrong, to follow the quoted prefix.
pub fn check_topic_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.contains(['+', '#']) {
        return Err("contains an MQTT wildcard (+ or #), which no topic to publish to may".into());
    }
    if prefix.contains('\0') {
        return Err("contains a NUL character, which MQTT forbids in topics".into());
    }
    if !prefix.ends_with('/') {
        return Err(format!(
            "must end in / (\"{prefix}/\"), or be empty for none"
        ));
    }
    Ok(())
}

/// State files on disk (GitOps, or the embedded default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// A state file, or a directory of them.
    pub path: PathBuf,
    /// How often the path is looked at when the kernel's file
    /// notifications (inotify) cannot be set up; otherwise they say when.
    #[serde(with = "duration_text")]
    pub poll_interval: Duration,
    /// Larger state files are refused unread, in bytes.
    pub max_file_size: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/etc/berth/desired-state.json"),
            poll_interval: Duration::from_secs(2),
            max_file_size: crate::agent::files::DEFAULT_MAX_FILE_SIZE,
        }
    }
}

impl Config {
    /// Parses TOML text and checks the values.
    ///
    /// # Errors
    /// The option and what is wrong with it (toml's message names the key
    /// and line for unknown options and wrong types).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // TOML's errors quote the offending line, which may be a
            // password.
            let text = e.to_string();
            ConfigError(crate::redact::default_rule().text(text.trim()).into_owned())
        })?;
        config.check()?;
        Ok(config)
    }

    /// Checks values that TOML's types cannot, for a configuration put
    /// together from a file and flags.
    ///
    /// # Errors
    /// The option and what is wrong with it.
    pub fn check(&self) -> Result<(), ConfigError> {
        // Problems quote values (a broker URL may carry a password).
        let bad = |option: &str, problem: String| {
            let problem = crate::redact::userinfo(&problem);
            Err(ConfigError(format!("{option}: {problem}")))
        };
        check_count("parallel", self.parallel, 1, MAX_PARALLEL)?;
        for (option, value, max) in [
            ("min_ready", self.min_ready, MAX_MIN_READY),
            ("ready_margin", self.ready_margin, MAX_READY_MARGIN),
            ("stop_timeout", self.stop_timeout, MAX_STOP_TIMEOUT),
            ("pull_timeout", self.pull_timeout, MAX_PULL_TIMEOUT),
            (
                "activity_timeout",
                self.activity_timeout,
                MAX_ACTIVITY_TIMEOUT,
            ),
            ("shutdown_grace", self.shutdown_grace, MAX_SHUTDOWN_GRACE),
            ("phase_timeout", self.phase_timeout, MAX_ACTIVITY_TIMEOUT),
            (
                "reconcile_interval",
                self.reconcile_interval,
                MAX_RECONCILE_INTERVAL,
            ),
            ("check_interval", self.check_interval, MAX_CHECK_INTERVAL),
        ] {
            check_duration(option, value, max)?;
        }
        if !self.check_interval.is_zero() && self.check_interval < crate::check::watch::MIN_INTERVAL
        {
            return bad(
                "check_interval",
                format!(
                    "{} is too often; at least {} (or 0 for never)",
                    crate::spec::values::duration_text(self.check_interval),
                    crate::spec::values::duration_text(crate::check::watch::MIN_INTERVAL)
                ),
            );
        }
        if let Err(e) = crate::redact::Redactor::new(&self.redact_env) {
            return bad("redact_env", e.to_string());
        }
        if let Err(e) = crate::spec::values::check_name(&self.instance) {
            return bad("instance", format!("\"{}\" {e}", self.instance));
        }
        for (option, d) in [
            ("activity_timeout", self.activity_timeout),
            ("pull_timeout", self.pull_timeout),
            ("phase_timeout", self.phase_timeout),
        ] {
            if d.is_zero() {
                return bad(option, "must be more than 0".into());
            }
        }
        for name in &self.system_containers {
            if let Err(e) = crate::spec::values::check_name(name) {
                return bad("system_containers", format!("\"{name}\" {e}"));
            }
        }
        if let Some(mqtt) = &self.mqtt {
            let scheme = mqtt.url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("mqtt" | "mqtts" | "tcp" | "ssl")) {
                return bad(
                    "mqtt.url",
                    format!(
                        "\"{}\" is not mqtt://host:port or mqtts://host:port",
                        mqtt.url
                    ),
                );
            }
            for url in &mqtt.failover_urls {
                let alt = url.split_once("://").map(|(s, _)| s);
                let tls = |s: Option<&str>| matches!(s, Some("mqtts" | "ssl"));
                if !matches!(alt, Some("mqtt" | "mqtts" | "tcp" | "ssl")) || tls(alt) != tls(scheme)
                {
                    return bad(
                        "mqtt.failover_urls",
                        format!(
                            "\"{}\" must be a broker URL with the same kind of scheme as mqtt.url (\"{}\"): all TLS or all plain",
                            crate::redact::userinfo(url),
                            crate::redact::userinfo(&mqtt.url)
                        ),
                    );
                }
            }
            if let Err(e) = check_topic_prefix(&mqtt.topic_prefix) {
                return bad(
                    "mqtt.topic_prefix",
                    format!("\"{}\" {e}", mqtt.topic_prefix),
                );
            }
            if mqtt.password.is_some() && mqtt.password_file.is_some() {
                return bad(
                    "mqtt.password",
                    "give password or password_file, not both".into(),
                );
            }
            if mqtt.cert_file.is_some() != mqtt.key_file.is_some() {
                return bad(
                    "mqtt.cert_file",
                    "cert_file and key_file go together".into(),
                );
            }
            mqtt.check_transport()?;
            if !mqtt.keep_alive.is_zero() && mqtt.keep_alive < Duration::from_secs(1) {
                return bad("mqtt.keep_alive", "must be 0 (off) or at least 1s".into());
            }
            check_duration("mqtt.keep_alive", mqtt.keep_alive, MAX_KEEP_ALIVE)?;
            if mqtt.connect_timeout < Duration::from_secs(1) {
                return bad("mqtt.connect_timeout", "must be at least 1s".into());
            }
            check_duration(
                "mqtt.connect_timeout",
                mqtt.connect_timeout,
                MAX_CONNECT_TIMEOUT,
            )?;
            if let Err(e) = crate::spec::values::check_name(&mqtt.domain) {
                return bad("mqtt.domain", format!("\"{}\" {e}", mqtt.domain));
            }
            check_count(
                "mqtt.max_message_size",
                mqtt.max_message_size,
                1,
                MAX_MQTT_MESSAGE_SIZE,
            )?;
        }
        if let Some(files) = &self.files {
            check_duration(
                "files.poll_interval",
                files.poll_interval,
                MAX_POLL_INTERVAL,
            )?;
            check_count(
                "files.max_file_size",
                usize::try_from(files.max_file_size).unwrap_or(usize::MAX),
                1,
                MAX_MQTT_MESSAGE_SIZE,
            )?;
        }
        check_count(
            "limits.max_components",
            self.limits.max_components,
            1,
            MAX_LIMITS_MAX_COMPONENTS,
        )?;
        check_count(
            "limits.max_depth",
            self.limits.max_depth,
            MIN_LIMITS_MAX_DEPTH,
            MAX_LIMITS_MAX_DEPTH,
        )?;
        self.policy
            .compile()
            .map_err(|e| ConfigError(e.to_string()))?;
        if let Some(api) = &self.api {
            api.check().map_err(|e| ConfigError(e.to_string()))?;
        }
        for (i, r) in self.registries.iter().enumerate() {
            r.check(&format!("registries[{i}]")).map_err(ConfigError)?;
            let host = r.host.trim();
            if self.registries[..i].iter().any(|o| o.host.trim() == host) {
                return Err(ConfigError(format!(
                    "registries[{i}].host: \"{host}\" has an entry already"
                )));
            }
        }
        Ok(())
    }

    /// The credential store for pulls and `berth check`: `[[registries]]`
    /// first, then docker's stored logins.
    pub fn credentials(&self) -> crate::registry::Credentials {
        crate::registry::Credentials::new(self.registries.clone())
    }

    /// The update domain the agent serves: the MQTT one when a broker is
    /// configured, else the default (`containers`).
    pub fn domain(&self) -> &str {
        self.mqtt
            .as_ref()
            .map_or(crate::spec::validate::DEFAULT_DOMAIN, |m| m.domain.as_str())
    }

    /// How every source (MQTT, state files, the persisted document) reads
    /// a desired state under this configuration: its domain and limits.
    pub fn spec_options(&self) -> crate::spec::Options {
        crate::spec::Options {
            domain: self.domain().to_string(),
            limits: self.limits,
            validation: self.validation,
        }
    }

    /// The effective configuration as TOML, with the secrets hidden: the
    /// MQTT password, a password in the broker URL or the Docker endpoint.
    /// File paths (`password_file`, `key_file`) are shown: they are where
    /// a secret is, not the secret.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(m) = shown.mqtt.as_mut() {
            if m.password.is_some() {
                m.password = Some(crate::redact::REDACTED.into());
            }
            m.url = crate::redact::userinfo(&m.url).into_owned();
            for u in &mut m.failover_urls {
                *u = crate::redact::userinfo(u).into_owned();
            }
        }
        if let Some(h) = shown.docker_host.as_mut() {
            *h = crate::redact::userinfo(h).into_owned();
        }
        for r in &mut shown.registries {
            if r.identity_token.is_some() {
                r.identity_token = Some(crate::redact::REDACTED.into());
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_default()
    }
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &crate::redact::userinfo(&self.url))
            .field(
                "failover_urls",
                &self
                    .failover_urls
                    .iter()
                    .map(|u| crate::redact::userinfo(u).into_owned())
                    .collect::<Vec<_>>(),
            )
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field(
                "password",
                &self.password.as_ref().map(|_| crate::redact::REDACTED),
            )
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("domain", &self.domain)
            .field("topic_prefix", &self.topic_prefix)
            .finish_non_exhaustive()
    }
}

pub(crate) mod duration_text {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim() == "0" {
            return Ok(Duration::ZERO);
        }
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "\"{text}\" is not a duration ({e}); write e.g. 30s or 10m"
            ))
        })
    }
}

mod scope_text {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Scope, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match v {
            Scope::Owned => "owned",
            Scope::All => "all",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
        match String::deserialize(d)?.as_str() {
            "owned" => Ok(Scope::Owned),
            "all" => Ok(Scope::All),
            other => Err(serde::de::Error::custom(format!(
                "\"{other}\" is not owned or all"
            ))),
        }
    }
}

mod rollback_text {
    use super::*;

    pub fn serialize<S: Serializer>(v: &RollbackMode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match v {
            RollbackMode::Activity => "activity",
            RollbackMode::Container => "container",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RollbackMode, D::Error> {
        match String::deserialize(d)?.as_str() {
            "activity" => Ok(RollbackMode::Activity),
            "container" => Ok(RollbackMode::Container),
            other => Err(serde::de::Error::custom(format!(
                "\"{other}\" is not activity or container"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn the_example_file_parses() {
        let config = Config::parse(include_str!("../examples/config.toml")).unwrap();
        assert_eq!(config.reconcile_interval, Duration::from_secs(60));
        assert!(config.mqtt.is_some() && config.files.is_some());
    }

    #[test]
    fn the_mode_is_autonomous_unless_orchestrated_is_asked() {
        assert_eq!(Config::default().mode, crate::orchestrate::Mode::Autonomous);
        let c = Config::parse("mode = \"orchestrated\"\nphase_timeout = \"30m\"").unwrap();
        assert_eq!(c.mode, crate::orchestrate::Mode::Orchestrated);
        assert_eq!(c.phase_timeout, Duration::from_secs(1800));
    }

    #[test]
    fn an_unknown_mode_is_refused_naming_the_field() {
        let e = Config::parse("mode = \"manual\"").unwrap_err().to_string();
        assert!(e.contains("mode") && e.contains("manual"), "{e}");
    }

    #[test]
    fn a_zero_phase_timeout_is_refused() {
        let e = Config::parse("phase_timeout = \"0s\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("phase_timeout: must be more than 0"), "{e}");
    }

    #[test]
    fn durations_are_humantime() {
        let c = Config::parse("min_ready = \"5s\"\nreconcile_interval = \"2m\"").unwrap();
        assert_eq!(
            (c.min_ready, c.reconcile_interval),
            (Duration::from_secs(5), Duration::from_secs(120))
        );
    }

    #[test]
    fn zero_disables_drift_correction() {
        assert_eq!(
            Config::parse("reconcile_interval = \"0\"")
                .unwrap()
                .reconcile_interval,
            Duration::ZERO
        );
    }

    #[test]
    fn an_unknown_option_is_named() {
        let e = Config::parse("paralel = 3").unwrap_err().0;
        assert!(e.contains("paralel"), "{e}");
    }

    #[test]
    fn an_unknown_mqtt_option_is_named() {
        let e = Config::parse("[mqtt]\nuri = \"mqtt://x\"").unwrap_err().0;
        assert!(e.contains("uri"), "{e}");
    }

    // Issue 26: a fleet's brokers are a cluster's nodes.
    #[test]
    fn failover_urls_of_another_kind_of_scheme_are_refused_naming_the_field() {
        let e = refusal("[mqtt]\nurl = \"mqtt://a:1883\"\nfailover_urls = [\"mqtts://b:8883\"]");
        assert!(e.starts_with("mqtt.failover_urls: "), "{e}");
        assert!(e.contains("mqtts://b:8883"), "{e}");
        let e = refusal("[mqtt]\nurl = \"mqtt://a:1883\"\nfailover_urls = [\"http://b\"]");
        assert!(e.starts_with("mqtt.failover_urls: "), "{e}");
    }

    #[test]
    fn failover_urls_of_the_same_kind_are_accepted() {
        let c = Config::parse(
            "[mqtt]\nurl = \"mqtt://a:1883\"\nfailover_urls = [\"mqtt://b:1883\", \"tcp://c:1883\"]",
        )
        .unwrap();
        assert_eq!(c.mqtt.unwrap().failover_urls.len(), 2);
    }

    #[test]
    fn a_password_over_plain_mqtt_is_refused_naming_the_field() {
        for (key, line) in [
            ("mqtt.password", "password = \"pw\""),
            ("mqtt.password_file", "password_file = \"/etc/berth/pw\""),
        ] {
            let e = refusal(&format!(
                "[mqtt]\nurl = \"mqtt://broker:1883\"\nusername = \"u\"\n{line}"
            ));
            assert!(
                e.starts_with(&format!("{key}: "))
                    && e.contains("clear text")
                    && e.contains("allow_insecure"),
                "{e}"
            );
        }
        let e = refusal("[mqtt]\nurl = \"tcp://b\"\nusername = \"u\"\npassword = \"pw\"");
        assert!(e.starts_with("mqtt.password: "), "{e}");
    }

    #[test]
    fn a_password_over_plain_mqtt_is_accepted_with_allow_insecure() {
        let c = Config::parse(
            "[mqtt]\nurl = \"mqtt://b\"\nusername = \"u\"\npassword = \"pw\"\nallow_insecure = true",
        )
        .unwrap();
        assert!(c.mqtt.is_some_and(|m| m.allow_insecure));
    }

    #[test]
    fn a_password_over_mqtts_and_a_user_alone_over_mqtt_are_accepted() {
        Config::parse("[mqtt]\nurl = \"mqtts://b\"\nusername = \"u\"\npassword = \"pw\"").unwrap();
        Config::parse("[mqtt]\nurl = \"ssl://b\"\nusername = \"u\"\npassword_file = \"/p\"")
            .unwrap();
        Config::parse("[mqtt]\nurl = \"mqtt://b\"\nusername = \"u\"").unwrap();
        assert!(!MqttConfig::default().allow_insecure);
    }

    #[test]
    fn tls_files_with_plain_mqtt_are_refused_naming_the_field() {
        for (key, lines) in [
            ("mqtt.ca_file", "ca_file = \"/ca.pem\""),
            (
                "mqtt.cert_file",
                "cert_file = \"/c.pem\"\nkey_file = \"/k.pem\"",
            ),
        ] {
            let e = refusal(&format!("[mqtt]\nurl = \"mqtt://b\"\n{lines}"));
            assert!(
                e.starts_with(&format!("{key}: set, but \"mqtt://b\" is plain TCP")),
                "{e}"
            );
        }
    }

    #[test]
    fn tls_files_with_mqtts_are_accepted() {
        let c = Config::parse(
            "[mqtt]\nurl = \"mqtts://b\"\nca_file = \"/ca.pem\"\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"",
        )
        .unwrap();
        assert!(c.mqtt.is_some_and(|m| m.is_tls() && m.ca_file.is_some()));
    }

    #[test]
    fn a_topic_prefix_with_a_wildcard_is_refused() {
        for prefix in ["devices/+/", "devices/#/", "#"] {
            let e = refusal(&format!("[mqtt]\ntopic_prefix = \"{prefix}\""));
            assert!(
                e.starts_with(&format!(
                    "mqtt.topic_prefix: \"{prefix}\" contains an MQTT wildcard"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn a_topic_prefix_without_a_trailing_slash_is_refused() {
        assert_refused_with(
            "[mqtt]\ntopic_prefix = \"devices/d1\"",
            "mqtt.topic_prefix: \"devices/d1\" must end in / (\"devices/d1/\"), or be empty for none",
        );
        let e = refusal("[mqtt]\ntopic_prefix = \"a\\u0000/\"");
        assert!(e.contains("NUL"), "{e}");
    }

    #[test]
    fn an_empty_topic_prefix_and_one_ending_in_a_slash_are_accepted() {
        assert_eq!(MqttConfig::default().topic_prefix, "");
        Config::parse("[mqtt]").unwrap();
        let c = Config::parse("[mqtt]\ntopic_prefix = \"devices/d1/\"").unwrap();
        assert_eq!(
            c.mqtt.map(|m| m.topic_prefix).as_deref(),
            Some("devices/d1/")
        );
    }

    #[test]
    fn a_bad_duration_is_named() {
        let e = Config::parse("min_ready = \"soon\"").unwrap_err().0;
        assert!(e.contains("min_ready") && e.contains("soon"), "{e}");
    }

    #[test]
    fn a_bad_scope_is_refused() {
        assert!(Config::parse("scope = \"everything\"")
            .unwrap_err()
            .0
            .contains("owned or all"));
    }

    #[test]
    fn parallel_must_be_sensible() {
        assert!(Config::parse("parallel = 0")
            .unwrap_err()
            .0
            .starts_with("parallel:"));
    }

    /// The error of a configuration that must be refused.
    #[track_caller]
    fn refusal(text: &str) -> String {
        match Config::parse(text) {
            Ok(c) => panic!("expected {text:?} to be refused, got {c:#?}"),
            Err(e) => e.0,
        }
    }

    #[track_caller]
    fn assert_refused_with(text: &str, expected: &str) {
        assert_eq!(refusal(text), expected, "for {text:?}");
    }

    #[test]
    fn parallel_of_64_is_accepted() {
        assert_eq!(Config::parse("parallel = 64").unwrap().parallel, 64);
    }

    #[test]
    fn parallel_above_64_is_refused_naming_the_bound() {
        assert_refused_with("parallel = 65", "parallel: 65 is not between 1 and 64");
    }

    #[test]
    fn min_ready_of_24h_is_accepted() {
        assert_eq!(Config::parse("min_ready = \"24h\"").unwrap().min_ready, DAY);
    }

    #[test]
    fn min_ready_above_24h_is_refused_naming_the_bound() {
        assert_refused_with(
            "min_ready = \"24h 1ns\"",
            "min_ready: 86400.000000001s must be at most 24h",
        );
    }

    #[test]
    fn ready_margin_of_24h_is_accepted() {
        assert_eq!(
            Config::parse("ready_margin = \"24h\"")
                .unwrap()
                .ready_margin,
            DAY
        );
    }

    #[test]
    fn ready_margin_above_24h_is_refused_naming_the_bound() {
        assert_refused_with(
            "ready_margin = \"25h\"",
            "ready_margin: 25h must be at most 24h",
        );
    }

    #[test]
    fn stop_timeout_of_1h_is_accepted() {
        assert_eq!(
            Config::parse("stop_timeout = \"1h\"").unwrap().stop_timeout,
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn stop_timeout_above_1h_is_refused_naming_the_bound() {
        assert_refused_with(
            "stop_timeout = \"3601s\"",
            "stop_timeout: 3601s must be at most 1h",
        );
    }

    #[test]
    fn pull_timeout_of_24h_is_accepted() {
        assert_eq!(
            Config::parse("pull_timeout = \"24h\"")
                .unwrap()
                .pull_timeout,
            DAY
        );
    }

    #[test]
    fn pull_timeout_above_24h_is_refused_naming_the_bound() {
        assert_refused_with(
            "pull_timeout = \"2days\"",
            "pull_timeout: 2d must be at most 24h",
        );
    }

    #[test]
    fn activity_timeout_of_7_days_is_accepted() {
        assert_eq!(
            Config::parse("activity_timeout = \"7d\"")
                .unwrap()
                .activity_timeout,
            MAX_ACTIVITY_TIMEOUT
        );
    }

    #[test]
    fn activity_timeout_above_7_days_is_refused_naming_the_bound() {
        assert_refused_with(
            "activity_timeout = \"7d 1s\"",
            "activity_timeout: 604801s must be at most 7d",
        );
    }

    #[test]
    fn shutdown_grace_of_24h_is_accepted() {
        assert_eq!(
            Config::parse("shutdown_grace = \"24h\"")
                .unwrap()
                .shutdown_grace,
            DAY
        );
    }

    #[test]
    fn shutdown_grace_above_24h_is_refused_naming_the_bound() {
        assert_refused_with(
            "shutdown_grace = \"24h 1s\"",
            "shutdown_grace: 86401s must be at most 24h",
        );
    }

    #[test]
    fn check_interval_is_off_by_default_and_read_as_a_duration() {
        assert_eq!(Config::default().check_interval, Duration::ZERO);
        let c = Config::parse("check_interval = \"6h\"\ncheck_any_major = true").unwrap();
        assert_eq!(c.check_interval, Duration::from_secs(6 * 3600));
        assert!(c.check_any_major);
    }

    #[test]
    fn check_interval_below_a_minute_is_refused_naming_the_bound() {
        let e = Config::parse("check_interval = \"10s\"").unwrap_err();
        assert_eq!(
            e.to_string(),
            "check_interval: 10s is too often; at least 1m (or 0 for never)"
        );
    }

    #[test]
    fn reconcile_interval_of_24h_is_accepted() {
        assert_eq!(
            Config::parse("reconcile_interval = \"24h\"")
                .unwrap()
                .reconcile_interval,
            DAY
        );
    }

    #[test]
    fn reconcile_interval_above_24h_is_refused_naming_the_bound() {
        assert_refused_with(
            "reconcile_interval = \"1000d\"",
            "reconcile_interval: 1000d must be at most 24h",
        );
    }

    #[test]
    fn mqtt_connect_timeout_is_read() {
        let c = Config::parse("[mqtt]\nconnect_timeout = \"30s\"").unwrap();
        assert_eq!(
            c.mqtt.map(|m| m.connect_timeout),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn mqtt_connect_timeout_defaults_to_rumqttcs_five_seconds() {
        let c = Config::parse("[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"").unwrap();
        assert_eq!(
            c.mqtt.map(|m| m.connect_timeout),
            Some(DEFAULT_CONNECT_TIMEOUT)
        );
    }

    #[test]
    fn mqtt_connect_timeout_under_a_second_is_refused() {
        assert_refused_with(
            "[mqtt]\nconnect_timeout = \"500ms\"",
            "mqtt.connect_timeout: must be at least 1s",
        );
    }

    #[test]
    fn mqtt_connect_timeout_above_five_minutes_is_refused_naming_the_bound() {
        assert_refused_with(
            "[mqtt]\nconnect_timeout = \"10m\"",
            "mqtt.connect_timeout: 10m must be at most 5m",
        );
    }

    #[test]
    fn mqtt_keep_alive_of_65535s_is_accepted() {
        let c = Config::parse("[mqtt]\nkeep_alive = \"65535s\"").unwrap();
        assert_eq!(c.mqtt.map(|m| m.keep_alive), Some(MAX_KEEP_ALIVE));
    }

    #[test]
    fn mqtt_keep_alive_above_65535s_is_refused_naming_the_bound() {
        assert_refused_with(
            "[mqtt]\nkeep_alive = \"65536s\"",
            "mqtt.keep_alive: 65536s must be at most 65535s",
        );
    }

    #[test]
    fn mqtt_max_message_size_of_mqtts_largest_packet_is_accepted() {
        let c = Config::parse("[mqtt]\nmax_message_size = 268435455").unwrap();
        assert_eq!(c.mqtt.map(|m| m.max_message_size), Some(268_435_455));
    }

    #[test]
    fn mqtt_max_message_size_above_mqtts_largest_packet_is_refused_naming_the_bound() {
        assert_refused_with(
            "[mqtt]\nmax_message_size = 268435456",
            "mqtt.max_message_size: 268435456 is not between 1 and 268435455",
        );
    }

    #[test]
    fn files_max_file_size_is_read_and_bounded_like_an_mqtt_message() {
        let c = Config::parse("[files]\nmax_file_size = 4096").unwrap();
        assert_eq!(c.files.map(|f| f.max_file_size), Some(4096));
        assert_eq!(
            Config::parse("[files]\nmax_file_size = 0"),
            Err(ConfigError(
                "files.max_file_size: 0 is not between 1 and 268435455".into()
            ))
        );
    }

    #[test]
    fn files_poll_interval_of_24h_is_accepted() {
        let c = Config::parse("[files]\npoll_interval = \"24h\"").unwrap();
        assert_eq!(c.files.map(|f| f.poll_interval), Some(DAY));
    }

    #[test]
    fn files_poll_interval_above_24h_is_refused_naming_the_bound() {
        assert_refused_with(
            "[files]\npoll_interval = \"24h 1ns\"",
            "files.poll_interval: 86400.000000001s must be at most 24h",
        );
    }

    #[test]
    fn limits_default_far_above_real_devices() {
        let c = Config::parse("").unwrap();
        assert_eq!((c.limits.max_components, c.limits.max_depth), (10_000, 64));
    }

    #[test]
    fn limits_are_read_from_their_table() {
        let c = Config::parse("[limits]\nmax_components = 50\nmax_depth = 16").unwrap();
        assert_eq!(
            c.limits,
            Limits {
                max_components: 50,
                max_depth: 16
            }
        );
    }

    #[test]
    fn an_unknown_limit_is_named() {
        let e = refusal("[limits]\nmax_component = 5");
        assert!(e.contains("max_component"), "{e}");
    }

    #[test]
    fn limits_max_components_of_100000_is_accepted() {
        let c = Config::parse("[limits]\nmax_components = 100000").unwrap();
        assert_eq!(c.limits.max_components, MAX_LIMITS_MAX_COMPONENTS);
    }

    #[test]
    fn limits_max_components_above_100000_is_refused_naming_the_bound() {
        assert_refused_with(
            "[limits]\nmax_components = 100001",
            "limits.max_components: 100001 is not between 1 and 100000",
        );
    }

    #[test]
    fn limits_max_components_of_0_is_refused_naming_the_bound() {
        assert_refused_with(
            "[limits]\nmax_components = 0",
            "limits.max_components: 0 is not between 1 and 100000",
        );
    }

    #[test]
    fn limits_max_depth_of_8_and_127_is_accepted() {
        for depth in [8, 127] {
            let c = Config::parse(&format!("[limits]\nmax_depth = {depth}")).unwrap();
            assert_eq!(c.limits.max_depth, depth);
        }
    }

    #[test]
    fn limits_max_depth_below_a_documents_own_depth_is_refused_naming_the_bound() {
        assert_refused_with(
            "[limits]\nmax_depth = 7",
            "limits.max_depth: 7 is not between 8 and 127",
        );
    }

    #[test]
    fn limits_max_depth_above_serde_jsons_own_limit_is_refused_naming_the_bound() {
        assert_refused_with(
            "[limits]\nmax_depth = 128",
            "limits.max_depth: 128 is not between 8 and 127",
        );
    }

    #[test]
    fn spec_options_carry_the_mqtt_domain_and_the_limits() {
        let c = Config::parse("[limits]\nmax_components = 7\n[mqtt]\ndomain = \"apps\"").unwrap();
        let o = c.spec_options();
        assert_eq!((o.domain.as_str(), o.limits.max_components), ("apps", 7));
        assert_eq!(
            Config::default().spec_options(),
            crate::spec::Options::default()
        );
    }

    #[test]
    fn print_config_shows_the_limits_and_reads_back() {
        let c = Config::parse("[limits]\nmax_depth = 20").unwrap();
        let text = c.redacted_toml();
        assert!(text.contains("[limits]"), "{text}");
        assert_eq!(Config::parse(&text).unwrap().limits.max_depth, 20);
    }

    #[test]
    fn check_duration_names_the_option_the_value_and_the_bound() {
        assert_eq!(check_duration("--min-ready", DAY, MAX_MIN_READY), Ok(DAY));
        assert_eq!(
            check_duration("--min-ready", 2 * DAY, MAX_MIN_READY),
            Err(ConfigError("--min-ready: 2d must be at most 24h".into()))
        );
    }

    #[test]
    fn check_count_names_the_option_the_value_and_the_bounds() {
        assert_eq!(check_count("--parallel", 1, 1, MAX_PARALLEL), Ok(1));
        assert_eq!(
            check_count("--parallel", 0, 1, MAX_PARALLEL),
            Err(ConfigError("--parallel: 0 is not between 1 and 64".into()))
        );
    }

    /// The readiness gate waits start period + interval x retries + margin
    /// from now, possibly late in an activity; with every value at its bound
    /// that deadline, even past the activity timeout, is still an `Instant`.
    #[test]
    fn the_longest_readiness_wait_the_bounds_allow_fits_an_instant() {
        use crate::spec::values::{MAX_HEALTH_DURATION, MAX_HEALTH_RETRIES};
        let worst = MAX_HEALTH_DURATION
            .checked_mul(MAX_HEALTH_RETRIES)
            .and_then(|d| d.checked_add(MAX_HEALTH_DURATION))
            .and_then(|d| d.checked_add(MAX_READY_MARGIN))
            .and_then(|d| d.checked_add(MAX_ACTIVITY_TIMEOUT));
        let deadline = worst.and_then(|w| std::time::Instant::now().checked_add(w));
        assert!(deadline.is_some(), "{worst:?}");
    }

    #[test]
    fn a_bad_broker_url_is_refused() {
        assert!(Config::parse("[mqtt]\nurl = \"http://x\"")
            .unwrap_err()
            .0
            .starts_with("mqtt.url:"));
    }

    #[test]
    fn password_and_password_file_exclude_each_other() {
        let e = Config::parse("[mqtt]\npassword = \"a\"\npassword_file = \"/p\"")
            .unwrap_err()
            .0;
        assert!(e.starts_with("mqtt.password:"));
    }

    #[test]
    fn print_config_and_debug_never_show_a_password_in_the_broker_url() {
        let c =
            Config::parse("[mqtt]\nurl = \"mqtts://u:hunter2@broker:1883\"\npassword = \"s3cr3t\"")
                .unwrap();
        for text in [c.redacted_toml(), format!("{c:?}")] {
            assert!(
                !text.contains("hunter2") && !text.contains("s3cr3t"),
                "{text}"
            );
            assert!(text.contains("mqtts://u:<redacted>@broker:1883"), "{text}");
        }
    }

    #[test]
    fn the_insecure_password_refusal_never_quotes_a_password_in_the_url() {
        let e = Config::parse("[mqtt]\nurl = \"mqtt://u:hunter2@broker:1883\"\npassword = \"x\"")
            .unwrap_err()
            .0;
        assert!(
            e.starts_with("mqtt.password:") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn config_error_for_a_bad_broker_url_never_quotes_its_password() {
        let e = Config::parse("[mqtt]\nurl = \"http://u:hunter2@x\"")
            .unwrap_err()
            .0;
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn config_syntax_error_never_quotes_a_password_line() {
        let e = Config::parse("[mqtt]\npassword = hunter2\n").unwrap_err().0;
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn an_invalid_redact_pattern_is_refused_with_its_option() {
        let e = Config::parse("redact_env = [\"[oops\"]").unwrap_err().0;
        assert!(e.starts_with("redact_env:"), "{e}");
    }

    #[test]
    fn registries_are_read_checked_by_field_and_their_token_hidden() {
        let c = Config::parse(
            "[[registries]]\nhost = \"127.0.0.1:5001\"\nusername = \"u\"\npassword_file = \"/p\"\n\
             [[registries]]\nhost = \"ghcr.io\"\nidentity_token = \"tok-s3cret\"\ninsecure = false\n",
        )
        .unwrap();
        assert_eq!(c.registries.len(), 2);
        let text = c.redacted_toml();
        assert!(
            !text.contains("tok-s3cret") && text.contains("[[registries]]"),
            "{text}"
        );
        assert!(!format!("{c:?}").contains("tok-s3cret"));
        assert_eq!(Config::parse(&text).unwrap().registries.len(), 2);
        assert_refused_with(
            "[[registries]]\nhost = \"r\"\nusername = \"u\"",
            "registries[0].username: needs password_file (or an identity token)",
        );
        assert_refused_with(
            "[[registries]]\nhost = \"r\"\n[[registries]]\nhost = \"r\"",
            "registries[1].host: \"r\" has an entry already",
        );
        let e = refusal("[[registries]]\nhost = \"r\"\npassword = \"hunter2\"");
        assert!(e.contains("password") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn print_config_hides_the_password() {
        let c = Config::parse("[mqtt]\nurl = \"mqtts://b\"\npassword = \"hunter2\"").unwrap();
        let text = c.redacted_toml();
        assert!(
            !text.contains("hunter2") && text.contains("<redacted>"),
            "{text}"
        );
        assert_eq!(
            Config::parse(&text.replace("<redacted>", "x"))
                .unwrap()
                .parallel,
            4
        );
    }
}
