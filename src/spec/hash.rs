//! The spec hash: a short, versioned fingerprint of a container's normalised
//! configuration, stored as a label on every container berth creates, so that
//! "nothing changed" is known exactly and without an engine round-trip.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::image::ImageRef;
use super::model::*;

/// The hash scheme of this berth. Bump it when the normalised form changes;
/// the planner then compares fields instead of hashes for containers carrying
/// an older version, so a berth upgrade never recreates a fleet.
pub const HASH_VERSION: &str = "v1";

/// Fields the engine changes in place (`docker update`); they are compared
/// with what the engine reports instead, because a container's labels cannot
/// change after an in-place update.
pub const IN_PLACE_FIELDS: [&str; 2] = ["restart", "resources"];

/// The hashed part of a [`ContainerConfig`]: everything but the in-place
/// fields, borrowed, in declaration order.
#[derive(Serialize)]
struct Hashed<'a> {
    image: &'a ImageRef,
    env: &'a BTreeMap<String, Option<String>>,
    cmd: &'a Option<Vec<String>>,
    entrypoint: &'a Option<Vec<String>>,
    workdir: &'a Option<String>,
    user: &'a Option<String>,
    hostname: &'a Option<String>,
    domainname: &'a Option<String>,
    labels: &'a BTreeMap<String, String>,
    ports: &'a BTreeSet<PortBinding>,
    mounts: &'a BTreeSet<BindMount>,
    volumes: &'a BTreeSet<VolumeMount>,
    devices: &'a BTreeSet<DeviceMapping>,
    extra_hosts: &'a BTreeSet<ExtraHost>,
    network: &'a NetworkMode,
    privileged: bool,
    terminal: bool,
    interactive: bool,
    log: &'a LogConfig,
    #[serde(serialize_with = "seconds")]
    stop_timeout: &'a Option<Duration>,
    stop_signal: &'a Option<String>,
    health: &'a HealthConfig,
}

fn seconds<S: Serializer>(d: &&Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.collect_str(&humantime::format_duration(*d)),
        None => s.serialize_none(),
    }
}

/// `v1:sha256:<64 hex>` over the canonical JSON of the configuration.
///
/// Rollout rules (update strategy, pull policy, dependencies), the name, the
/// version and the in-place fields ([`IN_PLACE_FIELDS`]) are not part of it:
/// changing them never calls for a new container.
pub fn spec_hash(config: &ContainerConfig) -> String {
    // Destructured in full so that a new field cannot be forgotten here.
    let ContainerConfig {
        image,
        env,
        cmd,
        entrypoint,
        workdir,
        user,
        hostname,
        domainname,
        labels,
        ports,
        mounts,
        volumes,
        devices,
        extra_hosts,
        network,
        privileged,
        terminal,
        interactive,
        restart: _,
        log,
        resources: _,
        stop_timeout,
        stop_signal,
        health,
    } = config;
    let hashed = Hashed {
        image,
        env,
        cmd,
        entrypoint,
        workdir,
        user,
        hostname,
        domainname,
        labels,
        ports,
        mounts,
        volumes,
        devices,
        extra_hosts,
        network,
        privileged: *privileged,
        terminal: *terminal,
        interactive: *interactive,
        log,
        stop_timeout,
        stop_signal,
        health,
    };
    // Serialising plain data with string keys and sorted maps cannot fail;
    // should it ever, the hash still is stable and valid. The JSON goes
    // straight into the hasher: no buffer per container.
    let mut hasher = HashWriter(Sha256::new());
    let _ = serde_json::to_writer(&mut hasher, &hashed);
    let digest = hasher.0.finalize();
    let mut out = String::with_capacity(HASH_VERSION.len() + 8 + 64);
    out.push_str(HASH_VERSION);
    out.push_str(":sha256:");
    for byte in digest.iter() {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    out
}

/// Feeds what is written into the hash.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The scheme version of a stored hash label (`v1` of `v1:sha256:…`).
pub fn hash_version(label: &str) -> Option<&str> {
    label.split_once(':').map(|(v, _)| v)
}
