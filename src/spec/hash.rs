//! The spec hash: a short, versioned fingerprint of a container's normalised
//! configuration, stored as a label on every container berth creates, so that
//! "nothing changed" is known exactly and without an engine round-trip.

use sha2::{Digest, Sha256};

use super::model::ContainerConfig;

/// The hash scheme of this berth. Bump it when the normalised form changes;
/// the planner then compares fields instead of hashes for containers carrying
/// an older version, so a berth upgrade never recreates a fleet.
pub const HASH_VERSION: &str = "v1";

/// Fields the engine changes in place (`docker update`); they are compared
/// with what the engine reports instead, because a container's labels cannot
/// change after an in-place update.
pub const IN_PLACE_FIELDS: [&str; 2] = ["restart", "resources"];

/// `v1:sha256:<64 hex>` over the canonical JSON of the configuration.
///
/// Rollout rules (update strategy, pull policy, dependencies), the name, the
/// version and the in-place fields ([`IN_PLACE_FIELDS`]) are not part of it:
/// changing them never calls for a new container.
pub fn spec_hash(config: &ContainerConfig) -> String {
    // Serialising plain data with string keys and sorted maps cannot fail;
    // should it ever, an empty input still yields a stable, valid hash.
    let mut value = serde_json::to_value(config).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        for field in IN_PLACE_FIELDS {
            fields.remove(field);
        }
    }
    let canonical = serde_json::to_vec(&value).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    let mut out = String::with_capacity(HASH_VERSION.len() + 8 + 64);
    out.push_str(HASH_VERSION);
    out.push_str(":sha256:");
    for byte in digest.iter() {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    out
}

/// The scheme version of a stored hash label (`v1` of `v1:sha256:…`).
pub fn hash_version(label: &str) -> Option<&str> {
    label.split_once(':').map(|(v, _)| v)
}
