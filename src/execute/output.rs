//! What a failing job or hook said, made fit to show: the end of its
//! output, at most [`FAILURE_OUTPUT`] bytes, with secrets hidden.

use crate::redact::{Redactor, REDACTED};
use crate::runtime;
use crate::spec::model::ContainerSpec;

/// A component's env as the model keeps it.
type Env = std::collections::BTreeMap<String, Option<String>>;

/// How much of a failing job's or hook's output goes into the feedback
/// and the log: enough for the error a script printed last, not a flood.
pub const FAILURE_OUTPUT: usize = 4096;

/// Secret values shorter than this are not searched for in output: a
/// two-letter password would hide every occurrence of two letters.
const MIN_SECRET: usize = 4;

/// The end of `raw`, at most [`FAILURE_OUTPUT`] bytes, trimmed, with the
/// values of the component's secret env variables (by `redactor`'s names)
/// and whatever [`Redactor::text`] recognises hidden. Redaction happens
/// before the cut, so a secret cannot be half-shown at the edge.
pub fn last_words(raw: &str, spec: Option<&ContainerSpec>, redactor: &Redactor) -> String {
    last_words_env(raw, spec.map(|s| &s.config.env), redactor)
}

/// [`last_words`] with the component's env alone: what recovery has (from
/// the container), where no document is.
pub fn last_words_env(raw: &str, env: Option<&Env>, redactor: &Redactor) -> String {
    let mut text = redactor.text(raw).into_owned();
    if let Some(env) = env {
        let mut secrets: Vec<&str> = env
            .iter()
            .filter(|(name, _)| redactor.is_secret(name))
            .filter_map(|(_, value)| value.as_deref())
            .filter(|v| v.len() >= MIN_SECRET)
            .collect();
        // Longest first, so a secret containing another is hidden whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for secret in secrets {
            text = text.replace(secret, REDACTED);
        }
    }
    runtime::tail(text.trim(), FAILURE_OUTPUT)
        .trim()
        .to_string()
}

/// `reason`, followed by the output when there is any.
pub fn with_output(reason: String, output: &str) -> String {
    if output.is_empty() {
        reason
    } else {
        format!("{reason}; output: {output}")
    }
}

/// A component `app` on `127.0.0.1:5000/x:1` with this env, for tests.
#[cfg(test)]
pub(super) fn spec_with_env(env: &[(&str, &str)]) -> ContainerSpec {
    let mut config = crate::spec::model::ContainerConfig::placeholder(
        crate::spec::ImageRef::parse("127.0.0.1:5000/x:1").expect("a valid reference"),
    );
    config.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect();
    ContainerSpec {
        name: "app".into(),
        version: None,
        keys: Default::default(),
        rollout: crate::spec::model::Rollout::default(),
        config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_env_value_printed_by_the_command_is_hidden() {
        let spec = spec_with_env(&[("DB_PASSWORD", "hunter22"), ("MODE", "fast")]);
        let out = last_words(
            "connecting with hunter22 in fast mode\n",
            Some(&spec),
            &Redactor::default(),
        );
        assert_eq!(out, "connecting with <redacted> in fast mode");
    }

    #[test]
    fn a_url_password_in_the_output_is_hidden() {
        let out = last_words("GET http://u:pw@host/x failed", None, &Redactor::default());
        assert!(!out.contains("pw@"), "{out}");
    }

    #[test]
    fn only_the_last_4_kib_are_kept() {
        let raw = format!("{}END", "x".repeat(10_000));
        let out = last_words(&raw, None, &Redactor::default());
        assert_eq!(out.len(), FAILURE_OUTPUT);
        assert!(out.ends_with("END"));
    }
}
