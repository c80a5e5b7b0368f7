//! The labels berth puts on every container it creates. They are berth's
//! memory: ownership, what the container was created from, and which env keys
//! are berth's rather than the image's. Reading them needs no state file.

use std::collections::BTreeMap;

use crate::spec::hash::spec_hash;
use crate::spec::model::ContainerSpec;

/// Every berth label starts with this; documents may not use it.
pub const PREFIX: &str = "berth.";
/// `true` on every container berth created.
pub const MANAGED: &str = "berth.managed";
/// Which berth instance created it; several berths can share an engine, and
/// each manages only its own containers.
pub const INSTANCE: &str = "berth.instance";
/// The instance name when none is configured.
pub const DEFAULT_INSTANCE: &str = "default";
/// The component id the container was created for.
pub const COMPONENT: &str = "berth.component";
/// The component version from the document.
pub const VERSION: &str = "berth.version";
/// The versioned spec hash ([`crate::spec::spec_hash`]).
pub const SPEC_HASH: &str = "berth.spec-hash";
/// The image reference as the document named it, normalised.
pub const IMAGE: &str = "berth.image";
/// On a container recovery creates only to hold a name for a moment.
pub const PLACEHOLDER: &str = "berth.placeholder";
/// On a one-shot container of a hook or migration: what it runs
/// (`preStart`, `migration v1.2.0`). It is removed as soon as it ended.
pub const ONE_SHOT: &str = "berth.one-shot";
/// The image id the container was created from.
pub const IMAGE_ID: &str = "berth.image-id";
/// Comma-separated env names the document set; the rest came from the image.
pub const ENV_KEYS: &str = "berth.env-keys";
/// Comma-separated user label keys the document set.
pub const LABEL_KEYS: &str = "berth.label-keys";

/// What berth's labels say about a container it created.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ownership {
    /// The berth instance that created it.
    pub instance: String,
    /// Component id.
    pub component: Option<String>,
    /// Component version.
    pub version: Option<String>,
    /// Spec hash, when present.
    pub spec_hash: Option<String>,
    /// Normalised image reference.
    pub image: Option<String>,
    /// Image id at creation.
    pub image_id: Option<String>,
    /// Env names berth owns.
    pub env_keys: Vec<String>,
    /// User label keys berth owns.
    pub label_keys: Vec<String>,
}

/// Reads berth's labels; `None` when the container is not berth's.
pub fn ownership(labels: &BTreeMap<String, String>) -> Option<Ownership> {
    if labels.get(MANAGED).map(String::as_str) != Some("true") {
        return None;
    }
    let list = |key: &str| {
        labels
            .get(key)
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(Ownership {
        instance: labels
            .get(INSTANCE)
            .cloned()
            .unwrap_or_else(|| DEFAULT_INSTANCE.to_string()),
        component: labels.get(COMPONENT).cloned(),
        version: labels.get(VERSION).cloned(),
        spec_hash: labels.get(SPEC_HASH).cloned(),
        image: labels.get(IMAGE).cloned(),
        image_id: labels.get(IMAGE_ID).cloned(),
        env_keys: list(ENV_KEYS),
        label_keys: list(LABEL_KEYS),
    })
}

/// Every label a container created for `spec` carries: the document's own
/// labels and berth's record of what it was created from.
pub fn for_spec(
    spec: &ContainerSpec,
    image_id: Option<&str>,
    instance: &str,
) -> BTreeMap<String, String> {
    let mut labels = spec.config.labels.clone();
    let mut put = |k: &str, v: String| {
        labels.insert(k.to_string(), v);
    };
    put(MANAGED, "true".into());
    put(INSTANCE, instance.to_string());
    put(COMPONENT, spec.name.clone());
    if let Some(v) = &spec.version {
        put(VERSION, v.clone());
    }
    put(SPEC_HASH, spec_hash(&spec.config));
    put(IMAGE, spec.config.image.to_string());
    if let Some(id) = image_id {
        put(IMAGE_ID, id.to_string());
    }
    put(ENV_KEYS, join(spec.config.env.keys()));
    put(LABEL_KEYS, join(spec.config.labels.keys()));
    labels
}

/// Joins names for a list label.
pub fn join<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlabelled_container_is_not_owned() {
        assert_eq!(ownership(&BTreeMap::new()), None);
    }

    #[test]
    fn managed_label_must_say_true() {
        let labels = BTreeMap::from([(MANAGED.to_string(), "false".to_string())]);
        assert_eq!(ownership(&labels), None);
    }

    #[test]
    fn list_labels_are_split() {
        let labels = BTreeMap::from([
            (MANAGED.to_string(), "true".to_string()),
            (ENV_KEYS.to_string(), "A,B".to_string()),
        ]);
        assert_eq!(ownership(&labels).unwrap().env_keys, ["A", "B"]);
    }
}
