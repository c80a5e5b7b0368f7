//! A plan entry's settings diff, rendered when it is first read.
//!
//! Rendering (both sides' parameters, redaction, a line diff) costs more
//! than deciding the plan itself, and most plans are computed to be acted
//! on, not shown: the agent's reconciles, `apply` without `--json`. So an
//! entry keeps what the diff is made of and renders it once, when printed,
//! serialised or read; what it says is exactly what an eager one said.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde::{Serialize, Serializer};

use crate::redact::Redactor;
use crate::spec::model::ContainerConfig;

/// The unified diff of the normalised settings, current against desired.
#[derive(Clone)]
pub struct Diff {
    sides: Option<Arc<Sides>>,
    text: OnceLock<String>,
}

/// What a diff is rendered from.
struct Sides {
    name: String,
    have: ContainerConfig,
    want: ContainerConfig,
    redactor: Arc<Redactor>,
}

impl Diff {
    /// A diff of `have` (the current settings, already limited to what berth
    /// owns) against `want`, redacted by `redactor`, rendered when read.
    pub(crate) fn between(
        name: &str,
        have: ContainerConfig,
        want: ContainerConfig,
        redactor: Arc<Redactor>,
    ) -> Self {
        Self {
            sides: Some(Arc::new(Sides {
                name: name.to_string(),
                have,
                want,
                redactor,
            })),
            text: OnceLock::new(),
        }
    }

    /// A diff already rendered.
    pub fn rendered(text: impl Into<String>) -> Self {
        Self {
            sides: None,
            text: OnceLock::from(text.into()),
        }
    }

    /// The diff's text, rendered on the first call.
    pub fn text(&self) -> &str {
        self.text.get_or_init(|| match &self.sides {
            Some(s) => super::render_settings_diff(&s.name, &s.have, &s.want, &s.redactor),
            None => String::new(),
        })
    }
}

impl Deref for Diff {
    type Target = str;

    fn deref(&self) -> &str {
        self.text()
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl fmt::Debug for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.text(), f)
    }
}

impl PartialEq for Diff {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

impl Serialize for Diff {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(env: &str) -> ContainerConfig {
        let text = serde_json::json!({
            "activityId": "a",
            "payload": {"domains": [{"id": "containers", "components": [{
                "id": "web", "version": "1",
                "config": [{"key": "image", "value": "x/web:1"}, {"key": "env", "value": format!("MODE={env}")}]
            }]}]}
        })
        .to_string();
        let accepted = crate::spec::parse(&text, &Default::default()).expect("valid document");
        accepted.desired.containers[0].config.clone()
    }

    #[test]
    fn a_diff_is_rendered_only_when_first_read_and_then_once() {
        let diff = Diff::between(
            "web",
            config("a"),
            config("b"),
            Arc::new(Redactor::default()),
        );
        assert!(diff.text.get().is_none(), "rendered before it was read");
        let text = diff.to_string();
        assert!(
            text.contains("-env: MODE=a") && text.contains("+env: MODE=b"),
            "{text}"
        );
        assert_eq!(diff.text.get().map(String::as_str), Some(text.as_str()));
    }

    #[test]
    fn a_diff_serialises_and_compares_as_its_text() {
        let lazy = Diff::between(
            "web",
            config("a"),
            config("b"),
            Arc::new(Redactor::default()),
        );
        let eager = Diff::rendered(lazy.text().to_string());
        assert_eq!(lazy, eager);
        assert_eq!(
            serde_json::to_value(&lazy).unwrap(),
            serde_json::Value::String(eager.to_string())
        );
        assert_eq!(format!("{lazy:?}"), format!("{:?}", eager.text()));
    }
}
