//! Every API mutation as a new desired document derived from the last
//! accepted one. Pure: the handlers read the document and send the result
//! to the agent, which validates, checks policy, persists and applies it
//! like a document from MQTT.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::spec::document::{Component, Envelope, KeyValue};
use crate::spec::image::ImageRef;

/// How the activity ids of API mutations begin (`api-<epoch ms>`).
pub const API_PREFIX: &str = "api-";

/// An activity id for a mutation made now.
pub fn activity_id(now_ms: i64) -> String {
    format!("{API_PREFIX}{now_ms}")
}

/// Why a mutation cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeriveError {
    /// No document was accepted yet, so there is nothing to change.
    #[error("no desired state was accepted yet; post one to /api/v1/desired-state first")]
    NoDocument,
    /// The last accepted document does not parse (it was accepted, so this
    /// is a damaged state directory).
    #[error("the last accepted document cannot be read: {0}")]
    Unreadable(String),
    /// The component is not in the desired state.
    #[error("{0} is not in the desired state (the API changes components the desired state has; add new ones with a whole document)")]
    NotDesired(String),
    /// A field of the request is wrong.
    #[error("{field}: {problem}")]
    Field {
        /// The request's field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn field(field: impl Into<String>, problem: impl Into<String>) -> DeriveError {
    DeriveError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Reads the last accepted document.
///
/// # Errors
/// [`DeriveError::NoDocument`] or [`DeriveError::Unreadable`].
pub fn base(text: Option<&str>) -> Result<Envelope, DeriveError> {
    let text = text.ok_or(DeriveError::NoDocument)?;
    serde_json::from_str(text).map_err(|e| DeriveError::Unreadable(e.to_string()))
}

/// The component named `id` in the `domain` of `doc`.
pub fn component<'a>(doc: &'a Envelope, domain: &str, id: &str) -> Option<&'a Component> {
    doc.payload
        .domains
        .iter()
        .filter(|d| d.id == domain)
        .flat_map(|d| d.components.iter())
        .find(|c| c.id == id)
}

fn component_mut<'a>(
    doc: &'a mut Envelope,
    domain: &str,
    id: &str,
) -> Result<&'a mut Component, DeriveError> {
    doc.payload
        .domains
        .iter_mut()
        .filter(|d| d.id == domain)
        .flat_map(|d| d.components.iter_mut())
        .find(|c| c.id == id)
        .ok_or_else(|| DeriveError::NotDesired(id.to_string()))
}

/// Whether `tag` is a tag Docker accepts: up to 128 characters of
/// letters, digits, `_`, `.` and `-`, not starting with `.` or `-`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let Some(first) = chars.next() else {
        return Err("is empty".into());
    };
    if tag.len() > 128 {
        return Err(format!("is {} characters long, at most 128", tag.len()));
    }
    if !(first.is_ascii_alphanumeric() || first == '_') {
        return Err(format!(
            "\"{tag}\" must start with a letter, a digit or '_'"
        ));
    }
    if let Some(bad) = tag
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "\"{tag}\" has '{bad}'; a tag has letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

/// The image reference an update names: `image` (a repository, without a
/// tag or digest) and `tag`, normalised as the engine would.
///
/// # Errors
/// The field (`image` or `tag`) and the problem.
pub fn image_reference(image: &str, tag: &str) -> Result<ImageRef, DeriveError> {
    check_tag(tag).map_err(|p| field("tag", p))?;
    let repo = ImageRef::parse(image).map_err(|p| field("image", p))?;
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        return Err(field(
            "image",
            format!("\"{image}\" carries a tag or digest; give the repository in image and the tag in tag"),
        ));
    }
    Ok(ImageRef {
        tag: Some(tag.to_string()),
        digest: None,
        ..repo
    })
}

/// Sets `key` to `value` in a component's config: the first entry is
/// replaced, later duplicates dropped, a missing one added.
fn set_key(config: &mut Vec<KeyValue>, key: &str, value: String) {
    let mut seen = false;
    config.retain_mut(|kv| {
        if kv.key != key {
            return true;
        }
        if seen {
            return false;
        }
        seen = true;
        kv.value = value.clone();
        true
    });
    if !seen {
        config.push(KeyValue::new(key, value));
    }
}

/// The document with `id` rolled to `image` (the component's version
/// becomes the tag), under a new activity id.
///
/// # Errors
/// [`DeriveError::NotDesired`] when the component is not there.
pub fn update_image(
    mut doc: Envelope,
    domain: &str,
    id: &str,
    image: &ImageRef,
    activity_id: &str,
    now_ms: i64,
) -> Result<Envelope, DeriveError> {
    let c = component_mut(&mut doc, domain, id)?;
    set_key(&mut c.config, "image", image.to_string());
    c.version = image.tag.clone();
    doc.activity_id = activity_id.to_string();
    doc.timestamp = Some(now_ms);
    Ok(doc)
}

/// Whether `name` is an env name the document format accepts.
fn env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The env a component's document entries give: name to value (`None` for
/// a bare `NAME`, which removes the image's variable).
pub fn desired_env(c: &Component) -> BTreeMap<String, Option<String>> {
    c.config
        .iter()
        .filter(|kv| kv.key == "env")
        .map(|kv| match kv.value.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (kv.value.clone(), None),
        })
        .collect()
}

/// The document with a JSON merge patch (RFC 7386) applied to `id`'s env:
/// a string sets the variable, `null` removes the document's entry for it.
/// Everything else in the document stays as it was.
///
/// # Errors
/// A patch that is not an object, a name that is not an env name, a value
/// that is neither a string nor `null` (the field names the variable).
pub fn patch_env(
    mut doc: Envelope,
    domain: &str,
    id: &str,
    patch: &Value,
    activity_id: &str,
    now_ms: i64,
) -> Result<Envelope, DeriveError> {
    let Value::Object(patch) = patch else {
        return Err(field(
            "body",
            "must be a JSON object of NAME: \"value\" (or null to remove)",
        ));
    };
    if patch.is_empty() {
        return Err(field("body", "is empty: nothing to change"));
    }
    let c = component_mut(&mut doc, domain, id)?;
    for (name, value) in patch {
        if !env_name(name) {
            return Err(field(
                name.clone(),
                "is not an env name (letters, digits and '_', not starting with a digit)",
            ));
        }
        let is_entry = |kv: &KeyValue| {
            kv.key == "env"
                && (kv.value == *name
                    || kv
                        .value
                        .split_once('=')
                        .is_some_and(|(n, _)| n == name.as_str()))
        };
        match value {
            Value::Null => c.config.retain(|kv| !is_entry(kv)),
            Value::String(v) => {
                let entry = format!("{name}={v}");
                match c.config.iter().position(is_entry) {
                    Some(at) => {
                        c.config[at].value = entry;
                        let mut i = 0;
                        c.config.retain(|kv| {
                            i += 1;
                            i - 1 == at || !is_entry(kv)
                        });
                    }
                    None => c.config.push(KeyValue::new("env", entry)),
                }
            }
            _ => {
                return Err(field(
                    name.clone(),
                    "must be a string, or null to remove the variable",
                ))
            }
        }
    }
    doc.activity_id = activity_id.to_string();
    doc.timestamp = Some(now_ms);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Envelope {
        serde_json::from_value(serde_json::json!({
            "activityId": "a1",
            "timestamp": 5,
            "payload": {"domains": [{"id": "containers", "components": [
                {"id": "web", "version": "1", "config": [
                    {"key": "image", "value": "127.0.0.1:5000/app:1"},
                    {"key": "env", "value": "MODE=prod"},
                    {"key": "env", "value": "DEBUG"},
                    {"key": "mount", "value": "data:/data"}
                ]},
                {"id": "db", "version": "2", "config": []}
            ]}]}
        }))
        .unwrap()
    }

    fn config(doc: &Envelope, id: &str) -> Vec<(String, String)> {
        component(doc, "containers", id)
            .unwrap()
            .config
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect()
    }

    #[test]
    fn an_update_sets_the_image_and_the_version_and_keeps_the_rest() {
        let image = image_reference("127.0.0.1:5000/app", "2").unwrap();
        let d = update_image(doc(), "containers", "web", &image, "api-9", 9).unwrap();
        let c = component(&d, "containers", "web").unwrap();
        assert_eq!(c.version.as_deref(), Some("2"));
        assert_eq!(config(&d, "web")[0].1, "127.0.0.1:5000/app:2");
        assert_eq!(config(&d, "web")[3].1, "data:/data");
        assert_eq!(d.activity_id, "api-9");
        assert_eq!(d.timestamp, Some(9));
        assert_eq!(config(&d, "db"), config(&doc(), "db"));
    }

    #[test]
    fn an_update_adds_an_image_to_a_component_that_had_none() {
        let image = image_reference("127.0.0.1:5000/db", "3").unwrap();
        let d = update_image(doc(), "containers", "db", &image, "api-9", 9).unwrap();
        assert_eq!(
            config(&d, "db"),
            vec![("image".into(), "127.0.0.1:5000/db:3".into())]
        );
    }

    #[test]
    fn a_component_not_desired_is_named() {
        let image = image_reference("app", "2").unwrap();
        let e = update_image(doc(), "containers", "nope", &image, "api-9", 9).unwrap_err();
        assert_eq!(e, DeriveError::NotDesired("nope".into()));
    }

    #[test]
    fn a_bad_tag_names_the_tag_field() {
        let e = image_reference("app", "v 2").unwrap_err();
        assert!(
            matches!(e, DeriveError::Field { ref field, .. } if field == "tag"),
            "{e}"
        );
        assert!(image_reference("app", "").is_err());
        assert!(image_reference("app", "-x").is_err());
        assert!(image_reference("app", &"a".repeat(129)).is_err());
        assert!(image_reference("app", "v2.1.0_rc-1").is_ok());
    }

    #[test]
    fn an_image_with_a_tag_of_its_own_names_the_image_field() {
        let e = image_reference("127.0.0.1:5000/app:1", "2").unwrap_err();
        assert!(
            matches!(e, DeriveError::Field { ref field, .. } if field == "image"),
            "{e}"
        );
        assert!(image_reference("127.0.0.1:5000/app", "2").is_ok());
    }

    #[test]
    fn a_merge_patch_sets_replaces_and_removes_variables() {
        let patch = serde_json::json!({"MODE": "dev", "NEW": "x=y", "DEBUG": null});
        let d = patch_env(doc(), "containers", "web", &patch, "api-1", 1).unwrap();
        let env = desired_env(component(&d, "containers", "web").unwrap());
        assert_eq!(env.get("MODE"), Some(&Some("dev".into())));
        assert_eq!(env.get("NEW"), Some(&Some("x=y".into())));
        assert!(!env.contains_key("DEBUG"));
        assert_eq!(config(&d, "web")[0].1, "127.0.0.1:5000/app:1");
        assert!(config(&d, "web").contains(&("mount".into(), "data:/data".into())));
    }

    #[test]
    fn a_merge_patch_removing_an_absent_variable_changes_nothing_else() {
        let patch = serde_json::json!({"ABSENT": null});
        let d = patch_env(doc(), "containers", "web", &patch, "api-1", 1).unwrap();
        assert_eq!(config(&d, "web"), config(&doc(), "web"));
    }

    #[test]
    fn a_merge_patch_value_that_is_not_a_string_names_the_variable() {
        let patch = serde_json::json!({"PORT": 80});
        let e = patch_env(doc(), "containers", "web", &patch, "api-1", 1).unwrap_err();
        assert!(
            matches!(e, DeriveError::Field { ref field, .. } if field == "PORT"),
            "{e}"
        );
    }

    #[test]
    fn a_merge_patch_with_a_bad_name_is_refused() {
        let patch = serde_json::json!({"1X": "a"});
        assert!(patch_env(doc(), "containers", "web", &patch, "api-1", 1).is_err());
        let patch = serde_json::json!(["MODE"]);
        assert!(patch_env(doc(), "containers", "web", &patch, "api-1", 1).is_err());
    }

    #[test]
    fn no_document_yet_says_what_to_do() {
        assert_eq!(base(None).unwrap_err(), DeriveError::NoDocument);
    }
}
