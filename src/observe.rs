//! What exists on the engine, normalised into the same model the desired
//! state uses, so that comparing the two is comparing like with like.
//!
//! [`gather`] does the I/O (list, inspect, image and registry look-ups);
//! everything else here is pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use crate::labels::{self, Ownership};
use crate::runtime::{ContainerDetails, ImageDetails, RawHealthcheck, Runtime, RuntimeError};
use crate::spec::image::ImageRef;
use crate::spec::model::*;

/// Everything the planner needs to know about the engine, gathered once.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every container on the engine.
    pub containers: Vec<ObservedContainer>,
    /// Local images by the normalised reference the desired state names.
    pub images: BTreeMap<String, ImageDetails>,
    /// Registry digests for references whose pull policy is `always`;
    /// missing when the registry could not be asked.
    pub registry_digests: BTreeMap<String, String>,
    /// Existing network names.
    pub networks: BTreeSet<String>,
}

impl Observed {
    /// Finds a container by name.
    pub fn container(&self, name: &str) -> Option<&ObservedContainer> {
        self.containers.iter().find(|c| c.details.name == name)
    }
}

/// One container as it exists, with berth's reading of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedContainer {
    /// What the engine reported.
    pub details: ContainerDetails,
    /// berth's labels, when berth created it.
    pub owner: Option<Ownership>,
    /// The configuration it effectively runs with, in desired-state terms.
    pub config: ContainerConfig,
    /// Anonymous volumes (image `VOLUME`s): (volume name, container path).
    pub anonymous_volumes: Vec<(String, String)>,
}

impl ObservedContainer {
    /// Container name.
    pub fn name(&self) -> &str {
        &self.details.name
    }
}

/// Reads the engine: every container, the local images the desired state
/// names, registry digests for `pullPolicy=always`, and the networks.
///
/// # Errors
/// Only when the engine cannot list containers, images or networks; a
/// registry that does not answer just leaves its digest out.
pub async fn gather<R: Runtime>(
    rt: &R,
    images: &[ImageRef],
    check_registry: &[ImageRef],
) -> Result<Observed, RuntimeError> {
    let details = rt.list().await?;
    gather_listed(rt, details, images, check_registry).await
}

/// [`gather`] from containers the caller has just listed.
async fn gather_listed<R: Runtime>(
    rt: &R,
    details: Vec<ContainerDetails>,
    images: &[ImageRef],
    check_registry: &[ImageRef],
) -> Result<Observed, RuntimeError> {
    let id_to_name: HashMap<String, String> = details
        .iter()
        .map(|d| (d.id.clone(), d.name.clone()))
        .collect();
    let containers = details
        .into_iter()
        .map(|d| container(d, &id_to_name))
        .collect();
    let mut observed = Observed {
        containers,
        networks: rt.networks().await?.into_iter().collect(),
        ..Default::default()
    };
    for image in images {
        let reference = image.to_string();
        if observed.images.contains_key(&reference) {
            continue;
        }
        if let Some(details) = rt.image(&reference).await? {
            observed.images.insert(reference, details);
        }
    }
    for image in check_registry {
        let reference = image.to_string();
        match rt.registry_digest(&reference).await {
            Ok(digest) => {
                observed.registry_digests.insert(reference, digest);
            }
            Err(e) => {
                tracing::warn!(image = %reference, error = %e, "cannot ask the registry for the current digest")
            }
        }
    }
    Ok(observed)
}

/// The images of the observed containers, by image id, so an inventory can
/// leave out the settings a container merely inherits from its image.
///
/// # Errors
/// When the engine cannot be read.
pub async fn images_of<R: Runtime>(
    rt: &R,
    observed: &Observed,
) -> Result<std::collections::BTreeMap<String, crate::runtime::ImageDetails>, RuntimeError> {
    let mut images = std::collections::BTreeMap::new();
    for c in &observed.containers {
        let id = &c.details.image_id;
        if !images.contains_key(id) {
            if let Some(image) = rt.image(id).await? {
                images.insert(id.clone(), image);
            }
        }
    }
    Ok(images)
}

/// [`gather`] for a desired state: its images, and registry digests for
/// the ones whose pull policy is `always`.
///
/// # Errors
/// As [`gather`].
pub async fn gather_for<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
) -> Result<Observed, RuntimeError> {
    gather_for_listed(rt, desired, None).await
}

/// [`gather_for`], starting from `listed` when the caller has just listed
/// the engine's containers and changed nothing since (recovery's sweep,
/// see [`crate::execute::AfterRecovery`]): one list per activity, not two.
///
/// # Errors
/// As [`gather`].
pub async fn gather_for_listed<R: Runtime>(
    rt: &R,
    desired: &DesiredState,
    listed: Option<Vec<ContainerDetails>>,
) -> Result<Observed, RuntimeError> {
    let images: Vec<ImageRef> = desired
        .containers
        .iter()
        .map(|c| c.config.image.clone())
        .collect();
    let always: Vec<ImageRef> = desired
        .containers
        .iter()
        .filter(|c| c.rollout.pull_policy == PullPolicy::Always)
        .map(|c| c.config.image.clone())
        .collect();
    let details = match listed {
        Some(details) => details,
        None => rt.list().await?,
    };
    gather_listed(rt, details, &images, &always).await
}

/// Normalises one container. `id_to_name` resolves `container:<id>` network
/// modes to names.
pub fn container(
    details: ContainerDetails,
    id_to_name: &HashMap<String, String>,
) -> ObservedContainer {
    let owner = labels::ownership(&details.labels);
    let (config, anonymous_volumes) = config_of(&details, id_to_name);
    ObservedContainer {
        details,
        owner,
        config,
        anonymous_volumes,
    }
}

/// A volume name the engine generated for an anonymous volume.
fn is_anonymous(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The reference a container was asked for. berth creates its containers
/// from the digest it resolved at DOWNLOADING (so what was checked is what
/// runs), and records the document's reference in a label: that one is
/// compared with the document, or every pinned container would look changed.
fn created_from(d: &ContainerDetails) -> ImageRef {
    d.labels
        .get(labels::IMAGE)
        .filter(|_| labels::ownership(&d.labels).is_some())
        .and_then(|r| ImageRef::parse(r).ok())
        .unwrap_or_else(|| ImageRef::parse_lenient(&d.image_ref))
}

fn config_of(
    d: &ContainerDetails,
    id_to_name: &HashMap<String, String>,
) -> (ContainerConfig, Vec<(String, String)>) {
    let env = d
        .env
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (e.clone(), None),
        })
        .collect();
    let mut mounts = BTreeSet::new();
    let mut volumes = BTreeSet::new();
    let mut anonymous = Vec::new();
    for m in &d.mounts {
        match (m.kind.as_str(), &m.name) {
            ("bind", _) => {
                mounts.insert(BindMount {
                    source: m.source.clone(),
                    destination: m.destination.clone(),
                    read_only: !m.rw,
                    propagation: Propagation::ALL
                        .iter()
                        .find(|(w, _)| *w == m.propagation)
                        .map(|(_, p)| *p)
                        .unwrap_or_default(),
                });
            }
            ("volume", Some(name)) if is_anonymous(name) => {
                anonymous.push((name.clone(), m.destination.clone()));
            }
            ("volume", Some(name)) => {
                volumes.insert(VolumeMount {
                    name: name.clone(),
                    destination: m.destination.clone(),
                    read_only: !m.rw,
                });
            }
            _ => {}
        }
    }
    let ports = d
        .port_bindings
        .iter()
        .filter_map(|p| {
            let protocol = match p.protocol.as_str() {
                "udp" => Protocol::Udp,
                "sctp" => Protocol::Sctp,
                _ => Protocol::Tcp,
            };
            let host_ip = if p.host_ip.is_empty() {
                IpAddr::from([0, 0, 0, 0])
            } else {
                p.host_ip.parse().ok()?
            };
            let (start, end) = match p.host_port.split_once('-') {
                Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                None if p.host_port.is_empty() => (0, 0),
                None => {
                    let port = p.host_port.parse().ok()?;
                    (port, port)
                }
            };
            Some(PortBinding {
                container_port: p.container_port,
                protocol,
                host_ip,
                host_port: start,
                host_port_end: end,
            })
        })
        .collect();
    let extra_hosts = d
        .extra_hosts
        .iter()
        .filter_map(|h| {
            let (name, target) = h.split_once(':')?;
            let target = if target == "host-gateway" {
                HostTarget::HostGateway
            } else {
                HostTarget::Ip(target.trim_matches(['[', ']']).parse().ok()?)
            };
            Some(ExtraHost {
                name: name.to_string(),
                target,
            })
        })
        .collect();
    let network = match d.network_mode.as_str() {
        "" | "default" | "bridge" => NetworkMode::Bridge,
        "host" => NetworkMode::Host,
        "none" => NetworkMode::None,
        mode => match mode.strip_prefix("container:") {
            Some(id) => NetworkMode::Container(
                id_to_name
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| id.to_string()),
            ),
            None => NetworkMode::User(mode.to_string()),
        },
    };
    let restart = match d.restart_policy.as_str() {
        "always" => RestartPolicy::Always,
        "unless-stopped" => RestartPolicy::UnlessStopped,
        "on-failure" => RestartPolicy::OnFailure {
            max_retries: u32::try_from(d.restart_max_retries).unwrap_or(0),
        },
        _ => RestartPolicy::No,
    };
    let driver = match d.log_driver.as_str() {
        "none" => LogDriver::None,
        "local" => LogDriver::Local,
        "journald" => LogDriver::Journald,
        _ => LogDriver::JsonFile,
    };
    let non_blocking = d.log_options.get("mode").map(String::as_str) == Some("non-blocking");
    let log = LogConfig {
        driver,
        max_files: d.log_options.get("max-file").and_then(|v| v.parse().ok()),
        max_size: d.log_options.get("max-size").and_then(|v| engine_size(v)),
        non_blocking,
        max_buffer_size: d
            .log_options
            .get("max-buffer-size")
            .and_then(|v| engine_size(v)),
    };
    let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    let resources = Resources {
        memory: positive(d.memory),
        memory_reservation: positive(d.memory_reservation),
        memory_swap: match d.memory_swap {
            -1 => Some(Swap::Unlimited),
            v => positive(v).map(Swap::Limit),
        },
        nano_cpus: positive(d.nano_cpus),
    };
    let config = ContainerConfig {
        image: created_from(d),
        env,
        cmd: d.cmd.clone(),
        entrypoint: d.entrypoint.clone(),
        workdir: Some(d.workdir.clone()).filter(|w| !w.is_empty()),
        user: Some(d.user.clone()).filter(|u| !u.is_empty()),
        hostname: Some(d.hostname.clone()).filter(|h| !h.is_empty()),
        domainname: Some(d.domainname.clone()).filter(|h| !h.is_empty()),
        labels: d
            .labels
            .iter()
            .filter(|(k, _)| !k.starts_with(labels::PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ports,
        mounts,
        volumes,
        devices: d
            .devices
            .iter()
            .map(|(h, c, p)| DeviceMapping {
                host_path: h.clone(),
                container_path: c.clone(),
                permissions: p.clone(),
            })
            .collect(),
        extra_hosts,
        network,
        privileged: d.privileged,
        terminal: d.tty,
        interactive: d.open_stdin,
        restart,
        log,
        resources,
        stop_timeout: d
            .stop_timeout
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs),
        stop_signal: d.stop_signal.clone(),
        health: d.healthcheck.as_ref().map(health).unwrap_or_default(),
    };
    (config, anonymous)
}

/// Reads an engine health check into berth's terms (0 means "inherit").
pub fn health(h: &RawHealthcheck) -> HealthConfig {
    let duration = |ns: i64| {
        u64::try_from(ns)
            .ok()
            .filter(|n| *n > 0)
            .map(Duration::from_nanos)
    };
    let test = match h.test.first().map(String::as_str) {
        Some("NONE") => Some(HealthTest::Disabled),
        Some("CMD-SHELL") => h.test.get(1).cloned().map(HealthTest::Shell),
        Some("CMD") => Some(HealthTest::Shell(h.test[1..].join(" "))),
        _ => None,
    };
    HealthConfig {
        test,
        interval: duration(h.interval_ns),
        timeout: duration(h.timeout_ns),
        retries: u32::try_from(h.retries).ok().filter(|r| *r > 0),
        start_period: duration(h.start_period_ns),
    }
}

/// The engine's size syntax for log options: a number with an optional
/// binary unit (`10m`, `100k`, `1g`, or plain bytes).
fn engine_size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (number, multiplier) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1u64 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        't' => (&v[..v.len() - 1], 1 << 40),
        _ => (v, 1),
    };
    number.trim().parse::<u64>().ok()?.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{RawMount, RawPortBinding};

    fn details() -> ContainerDetails {
        ContainerDetails {
            id: "c1".into(),
            name: "web".into(),
            image_ref: "nginx".into(),
            ..Default::default()
        }
    }

    fn normalise(d: ContainerDetails) -> ObservedContainer {
        container(d, &HashMap::from([("abc".to_string(), "db".to_string())]))
    }

    #[test]
    fn image_reference_is_normalised() {
        assert_eq!(
            normalise(details()).config.image.to_string(),
            "docker.io/library/nginx:latest"
        );
    }

    #[test]
    fn empty_host_ip_and_port_mean_all_addresses_and_any_port() {
        let mut d = details();
        d.port_bindings.push(RawPortBinding {
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
            host_port: String::new(),
        });
        let p = normalise(d).config.ports.into_iter().next().unwrap();
        assert_eq!(
            (p.host_ip.to_string().as_str(), p.host_port),
            ("0.0.0.0", 0)
        );
    }

    #[test]
    fn host_port_range_is_read_back() {
        let mut d = details();
        d.port_bindings.push(RawPortBinding {
            container_port: 80,
            protocol: "udp".into(),
            host_ip: "127.0.0.1".into(),
            host_port: "5000-6000".into(),
        });
        let p = normalise(d).config.ports.into_iter().next().unwrap();
        assert_eq!(p.to_string(), "127.0.0.1:5000-6000:80/udp");
    }

    #[test]
    fn anonymous_volumes_are_set_apart_from_named_ones() {
        let mut d = details();
        let anon = "a".repeat(64);
        for (name, dest) in [(anon.as_str(), "/data"), ("cache", "/cache")] {
            d.mounts.push(RawMount {
                kind: "volume".into(),
                name: Some(name.into()),
                source: String::new(),
                destination: dest.into(),
                rw: true,
                propagation: String::new(),
            });
        }
        let o = normalise(d);
        assert_eq!(
            o.anonymous_volumes,
            vec![(anon.clone(), "/data".to_string())]
        );
        assert_eq!(o.config.volumes.len(), 1);
    }

    #[test]
    fn container_network_mode_is_resolved_to_a_name() {
        let mut d = details();
        d.network_mode = "container:abc".into();
        assert_eq!(
            normalise(d).config.network,
            NetworkMode::Container("db".into())
        );
    }

    #[test]
    fn default_network_mode_is_bridge() {
        let mut d = details();
        d.network_mode = "default".into();
        assert_eq!(normalise(d).config.network, NetworkMode::Bridge);
    }

    #[test]
    fn berth_labels_are_not_user_labels() {
        let mut d = details();
        d.labels.insert(labels::MANAGED.into(), "true".into());
        d.labels.insert("team".into(), "edge".into());
        let o = normalise(d);
        assert!(o.owner.is_some());
        assert_eq!(o.config.labels.keys().collect::<Vec<_>>(), ["team"]);
    }

    #[test]
    fn engine_log_sizes_use_binary_units() {
        assert_eq!(engine_size("10m"), Some(10 << 20));
        assert_eq!(engine_size("104857600"), Some(100 << 20));
        assert_eq!(engine_size("1g"), Some(1 << 30));
        assert_eq!(engine_size("x"), None);
    }

    #[test]
    fn unlimited_swap_is_read_back() {
        let mut d = details();
        d.memory_swap = -1;
        assert_eq!(
            normalise(d).config.resources.memory_swap,
            Some(Swap::Unlimited)
        );
    }

    #[test]
    fn health_check_words_are_read_back() {
        let h = RawHealthcheck {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval_ns: 1_000_000_000,
            ..Default::default()
        };
        let read = health(&h);
        assert_eq!(read.test, Some(HealthTest::Shell("true".into())));
        assert_eq!(read.interval, Some(Duration::from_secs(1)));
        assert_eq!(read.timeout, None);
    }
}
