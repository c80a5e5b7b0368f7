//! `berth upgrade`'s decisions: which components move to a release, the
//! references they move to, and the document rewritten with only their
//! tags (and `version`s) changed. Pure: the command checks the registry,
//! writes the file and applies.
//!
//! # Guarantees
//! - Selection is explicit (`--components`) or the tag most components
//!   share; a tie is refused, never guessed.
//! - The rewrite changes, for each selected component, the tag of its
//!   `image` value (registry, path and spelling kept; a digest pin is
//!   replaced by the tag) and its `version`, and the document's
//!   `activityId` (a new activity, so that the agent and the history tell
//!   it from the one before). Every other value is kept as it was.

use std::collections::BTreeMap;

use crate::spec::image::ImageRef;
use crate::spec::model::DesiredState;

/// Why an upgrade cannot be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// VERSION is not a tag.
    #[error("version {version:?} is not an image tag: {problem}")]
    BadVersion {
        /// What was given.
        version: String,
        /// Why it is not a tag.
        problem: String,
    },
    /// `--components` names a component the document does not have.
    #[error("--components: {0} is not a component of the document (it has {1})")]
    UnknownComponent(String, String),
    /// No tag is shared by more components than any other.
    #[error("no tag is shared by most components ({0}): name the components to upgrade with --components")]
    NoMajority(String),
    /// The document has no component with a tag.
    #[error("the document has no component with an image tag to upgrade")]
    Nothing,
    /// The document is not JSON of the expected shape.
    #[error("the document cannot be rewritten: {0}")]
    Shape(String),
}

/// One component that moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The component.
    pub component: String,
    /// What it runs now.
    pub from: ImageRef,
    /// What it will run.
    pub to: ImageRef,
}

/// The components an upgrade moves, and how they were chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The components that move, in document order.
    pub moves: Vec<Move>,
    /// Selected components already on the version (nothing to move).
    pub current: Vec<String>,
    /// The tag the selection was made by, when no component was named.
    pub by_tag: Option<String>,
    /// Components left as they are (not named, or on another tag).
    pub others: Vec<String>,
}

/// Checks that `version` can be an image tag.
///
/// # Errors
/// [`UpgradeError::BadVersion`] saying why not.
pub fn check_version(version: &str) -> Result<(), UpgradeError> {
    ImageRef::parse(&format!("berth-check:{version}"))
        .map(|_| ())
        .map_err(|problem| UpgradeError::BadVersion {
            version: version.to_string(),
            problem,
        })
}

/// Chooses the components to move to `version`: those `named`, or with no
/// names every component whose tag is the one most components share.
///
/// # Errors
/// A bad version, an unknown name, a tie, or nothing with a tag.
pub fn select(
    desired: &DesiredState,
    named: &[String],
    version: &str,
) -> Result<Selection, UpgradeError> {
    check_version(version)?;
    let all = || {
        desired
            .containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for n in named {
        if desired.container(n).is_none() {
            return Err(UpgradeError::UnknownComponent(n.clone(), all()));
        }
    }
    let by_tag = if named.is_empty() {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &desired.containers {
            if let Some(t) = &c.config.image.tag {
                *counts.entry(t.as_str()).or_default() += 1;
            }
        }
        let top = counts
            .values()
            .copied()
            .max()
            .ok_or(UpgradeError::Nothing)?;
        let leaders: Vec<&str> = counts
            .iter()
            .filter(|(_, n)| **n == top)
            .map(|(t, _)| *t)
            .collect();
        if leaders.len() > 1 {
            let words = counts
                .iter()
                .map(|(t, n)| format!("tag {t}: {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(UpgradeError::NoMajority(words));
        }
        leaders.first().map(|t| (*t).to_string())
    } else {
        None
    };
    let mut selection = Selection {
        moves: Vec::new(),
        current: Vec::new(),
        by_tag: by_tag.clone(),
        others: Vec::new(),
    };
    for c in &desired.containers {
        let chosen = match &by_tag {
            Some(t) => c.config.image.tag.as_deref() == Some(t.as_str()),
            None => named.contains(&c.name),
        };
        if !chosen {
            selection.others.push(c.name.clone());
            continue;
        }
        let from = c.config.image.clone();
        let to = ImageRef {
            tag: Some(version.to_string()),
            digest: None,
            ..from.clone()
        };
        if from == to && c.version.as_deref() == Some(version) {
            selection.current.push(c.name.clone());
        } else {
            selection.moves.push(Move {
                component: c.name.clone(),
                from,
                to,
            });
        }
    }
    Ok(selection)
}

/// `reference` with its tag set to `version` and any digest removed,
/// spelled as it was (`nginx:1` becomes `nginx:2`, not
/// `docker.io/library/nginx:2`).
pub fn retag(reference: &str, version: &str) -> String {
    let name = reference.split_once('@').map_or(reference, |(n, _)| n);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let repo = match name[last_slash..].rfind(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    };
    format!("{repo}:{version}")
}

/// The document `text` with every component in `moves` on `version`: its
/// `image` value retagged (a component without one gets only its
/// `version`, which its image follows) and its `version` set, and the
/// document's `activityId` set to `activity_id`. Written back in the
/// layout it came in (indented, or on one line).
///
/// # Errors
/// [`UpgradeError::Shape`] when the text is not such a document.
pub fn rewrite(
    text: &str,
    moves: &[Move],
    version: &str,
    activity_id: &str,
) -> Result<String, UpgradeError> {
    let shape = |m: &str| UpgradeError::Shape(m.to_string());
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| UpgradeError::Shape(e.to_string()))?;
    let domains = value
        .pointer_mut("/payload/domains")
        .and_then(|d| d.as_array_mut())
        .ok_or_else(|| shape("it has no payload.domains"))?;
    for domain in domains {
        let Some(components) = domain.get_mut("components").and_then(|c| c.as_array_mut()) else {
            continue;
        };
        for component in components {
            let id = component.get("id").and_then(|i| i.as_str()).unwrap_or("");
            if !moves.iter().any(|m| m.component == id) {
                continue;
            }
            if let Some(config) = component.get_mut("config").and_then(|c| c.as_array_mut()) {
                for kv in config.iter_mut() {
                    if kv.get("key").and_then(|k| k.as_str()) != Some("image") {
                        continue;
                    }
                    if let Some(old) = kv.get("value").and_then(|v| v.as_str()) {
                        let new = retag(old, version);
                        kv["value"] = serde_json::Value::String(new);
                    }
                }
            }
            component["version"] = serde_json::Value::String(version.to_string());
        }
    }
    value["activityId"] = serde_json::Value::String(activity_id.to_string());
    in_layout_of(text, &value)
}

/// The same document under another activity id (a rollback's new
/// activity), in the layout it came in.
///
/// # Errors
/// [`UpgradeError::Shape`] when the text is not a JSON object.
pub fn with_activity_id(text: &str, activity_id: &str) -> Result<String, UpgradeError> {
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| UpgradeError::Shape(e.to_string()))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| UpgradeError::Shape("it is not a JSON object".into()))?;
    obj.insert(
        "activityId".into(),
        serde_json::Value::String(activity_id.to_string()),
    );
    in_layout_of(text, &value)
}

/// `value` written the way `text` was: indented when it spans lines, on
/// one line otherwise, with its final newline when it had one.
fn in_layout_of(text: &str, value: &serde_json::Value) -> Result<String, UpgradeError> {
    let mut out = if text.trim_end().contains('\n') {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    }
    .map_err(|e| UpgradeError::Shape(e.to_string()))?;
    if text.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
