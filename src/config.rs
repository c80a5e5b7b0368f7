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
    /// How long a running activity may take to end at shutdown before it
    /// is stopped and undone.
    #[serde(with = "duration_text")]
    pub shutdown_grace: Duration,
    /// Env-name patterns shown as `<redacted>`.
    pub redact_env: Vec<String>,
    /// Drift correction period; `0` disables it.
    #[serde(with = "duration_text")]
    pub reconcile_interval: Duration,
    /// The MQTT connection, when a broker is used.
    pub mqtt: Option<MqttConfig>,
    /// The file source, when state files are used.
    pub files: Option<FilesConfig>,
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
            shutdown_grace: Duration::from_secs(60),
            redact_env: crate::inventory::DEFAULT_REDACT
                .iter()
                .map(|s| s.to_string())
                .collect(),
            reconcile_interval: Duration::from_secs(60),
            mqtt: None,
            files: None,
        }
    }
}

/// The broker and how berth appears on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Client id; empty means `berth-<instance>`.
    pub client_id: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password, inline (prefer `password_file`).
    pub password: Option<String>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// CA bundle for `mqtts://`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for `mqtts://`.
    pub cert_file: Option<PathBuf>,
    /// Client key for `mqtts://`.
    pub key_file: Option<PathBuf>,
    /// Keep-alive period.
    #[serde(with = "duration_text")]
    pub keep_alive: Duration,
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
            client_id: None,
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            keep_alive: Duration::from_secs(20),
            domain: crate::spec::validate::DEFAULT_DOMAIN.into(),
            topic_prefix: String::new(),
            max_message_size: 1 << 20,
        }
    }
}

/// State files on disk (GitOps, or the embedded default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// A state file, or a directory of them.
    pub path: PathBuf,
    /// How often the path is looked at.
    #[serde(with = "duration_text")]
    pub poll_interval: Duration,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/etc/berth/desired-state.json"),
            poll_interval: Duration::from_secs(2),
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
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError(e.to_string().trim().to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Checks values that TOML's types cannot, for a configuration put
    /// together from a file and flags.
    ///
    /// # Errors
    /// The option and what is wrong with it.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |option: &str, problem: String| Err(ConfigError(format!("{option}: {problem}")));
        if self.parallel == 0 || self.parallel > 64 {
            return bad(
                "parallel",
                format!("{} is not between 1 and 64", self.parallel),
            );
        }
        if let Err(e) = crate::spec::values::check_name(&self.instance) {
            return bad("instance", format!("\"{}\" {e}", self.instance));
        }
        for (option, d) in [
            ("activity_timeout", self.activity_timeout),
            ("pull_timeout", self.pull_timeout),
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
            if !mqtt.keep_alive.is_zero() && mqtt.keep_alive < Duration::from_secs(1) {
                return bad("mqtt.keep_alive", "must be 0 (off) or at least 1s".into());
            }
            if let Err(e) = crate::spec::values::check_name(&mqtt.domain) {
                return bad("mqtt.domain", format!("\"{}\" {e}", mqtt.domain));
            }
            if mqtt.max_message_size == 0 {
                return bad("mqtt.max_message_size", "must be more than 0".into());
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, with the MQTT password hidden.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(m) = shown.mqtt.as_mut() {
            if m.password.is_some() {
                m.password = Some("<redacted>".into());
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_default()
    }
}

mod duration_text {
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
    fn print_config_hides_the_password() {
        let c = Config::parse("[mqtt]\npassword = \"hunter2\"").unwrap();
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
