//! The typed, normalised desired state that the rest of berth works with.
//!
//! Everything here is already validated and in canonical form: defaults are
//! explicit, sets are sorted, sizes are bytes and images fully qualified, so
//! two specs that mean the same thing are `==` and hash the same.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use super::image::ImageRef;

/// A whole validated document: what should run, and the rules for this apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesiredState {
    /// Correlates feedback with the document.
    pub activity_id: String,
    /// The sender's timestamp, only logged.
    pub timestamp: Option<i64>,
    /// The document's `systemContainers`, added to the agent's list (never
    /// replacing it); `None` when the document gives none.
    pub system_containers: Option<Vec<String>>,
    /// Baselines in document order, members as bare container names.
    pub baselines: Vec<Baseline>,
    /// Containers in document order.
    pub containers: Vec<ContainerSpec>,
}

impl DesiredState {
    /// Finds a container by its name.
    pub fn container(&self, name: &str) -> Option<&ContainerSpec> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// A group of containers updated together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Baseline {
    /// Names the group in feedback.
    pub title: String,
    /// Member container names (without the `containers:` prefix).
    pub containers: Vec<String>,
}

/// One desired container: its identity, how to roll it out, and the
/// configuration that defines it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerSpec {
    /// Container name (the component id).
    pub name: String,
    /// The component version, echoed in feedback and recorded as a label.
    pub version: Option<String>,
    /// The config keys the document set. An adopted container (one berth did
    /// not create) is compared only on these, so its image defaults and the
    /// settings nobody asked for never cause a recreate.
    pub keys: BTreeSet<&'static str>,
    /// How berth rolls the container out; not part of the container itself.
    pub rollout: Rollout,
    /// Everything that defines the container; its hash decides "changed".
    pub config: ContainerConfig,
}

/// Rollout rules: they change how berth acts, never the container, so they
/// are kept out of the spec hash (changing them recreates nothing).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Rollout {
    /// Stop the old container first, or start the new one first.
    pub update_strategy: UpdateStrategy,
    /// When the image is pulled.
    pub pull_policy: PullPolicy,
    /// Components that must be started before this one.
    pub depends_on: BTreeSet<String>,
    /// Kanto's on-failure retry timeout; Docker has no equivalent, kept so
    /// current state can report it back.
    #[serde(with = "opt_duration")]
    pub restart_timeout: Option<Duration>,
    /// Kanto's log directory; Docker has no equivalent, kept for reporting.
    pub log_path: Option<String>,
    /// Commands run around a create or recreate.
    pub hooks: Hooks,
}

/// The default of `hookTimeout`.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// Commands berth runs when it creates or recreates the container (never
/// on a no-op or a drift repair of an unchanged spec), so that an upgrade
/// can prepare data, check the new version and undo its preparation. They
/// are rollout rules: changing one recreates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Hooks {
    /// `/bin/sh -c` command run to completion in a one-shot container of
    /// the new image, after the old container stopped and before the new
    /// one starts.
    pub pre_start: Option<String>,
    /// `/bin/sh -c` command run with exec in the started new container,
    /// before its readiness gate can pass.
    pub post_start: Option<String>,
    /// `/bin/sh -c` command run in a one-shot container of the old image
    /// when the activity rolls back after `pre_start` ran.
    pub on_rollback: Option<String>,
    /// The directory of migration scripts inside the new image.
    pub migrations: Option<String>,
    /// How long each hook may run; `None` means [`DEFAULT_HOOK_TIMEOUT`].
    #[serde(with = "opt_duration")]
    pub timeout: Option<Duration>,
}

impl Hooks {
    /// How long each hook may run.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT)
    }

    /// Whether any hook runs around a replacement.
    pub fn any(&self) -> bool {
        self.pre_start.is_some()
            || self.post_start.is_some()
            || self.on_rollback.is_some()
            || self.migrations.is_some()
    }
}

/// The container's definition. Two containers with equal configs are
/// interchangeable; any difference means update or recreate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerConfig {
    /// The image, fully qualified.
    pub image: ImageRef,
    /// Environment berth owns: `Some(value)` sets, `None` removes the image's.
    pub env: BTreeMap<String, Option<String>>,
    /// Command override; `None` keeps the image's.
    pub cmd: Option<Vec<String>>,
    /// Entrypoint override; `None` keeps the image's, `Some([""])` clears it.
    pub entrypoint: Option<Vec<String>>,
    /// Working directory override.
    pub workdir: Option<String>,
    /// User override.
    pub user: Option<String>,
    /// Host name inside the container (`<name>-host` by default, as Kanto;
    /// `None` where the network mode forbids setting one).
    pub hostname: Option<String>,
    /// Domain name inside the container (`<name>-domain` by default).
    pub domainname: Option<String>,
    /// User labels (never under `berth.`).
    pub labels: BTreeMap<String, String>,
    /// Published ports.
    pub ports: BTreeSet<PortBinding>,
    /// Bind mounts.
    pub mounts: BTreeSet<BindMount>,
    /// Named volumes.
    pub volumes: BTreeSet<VolumeMount>,
    /// Devices.
    pub devices: BTreeSet<DeviceMapping>,
    /// Extra /etc/hosts entries.
    pub extra_hosts: BTreeSet<ExtraHost>,
    /// Network mode.
    pub network: NetworkMode,
    /// Privileged mode.
    pub privileged: bool,
    /// TTY.
    pub terminal: bool,
    /// Keep stdin open.
    pub interactive: bool,
    /// Restart policy (changed in place).
    pub restart: RestartPolicy,
    /// Log configuration.
    pub log: LogConfig,
    /// Resource limits (changed in place).
    pub resources: Resources,
    /// Grace period between the stop signal and kill.
    #[serde(with = "opt_duration")]
    pub stop_timeout: Option<Duration>,
    /// Stop signal, canonical (`SIGTERM`, or a number).
    pub stop_signal: Option<String>,
    /// Health check overrides.
    pub health: HealthConfig,
}

impl ContainerConfig {
    /// A container of `image` with every setting at its default, never to
    /// be started: what recovery creates to hold a name (see
    /// `execute::undo`).
    pub fn placeholder(image: ImageRef) -> Self {
        Self {
            image,
            env: BTreeMap::new(),
            cmd: None,
            entrypoint: None,
            workdir: None,
            user: None,
            hostname: None,
            domainname: None,
            labels: BTreeMap::new(),
            ports: BTreeSet::new(),
            mounts: BTreeSet::new(),
            volumes: BTreeSet::new(),
            devices: BTreeSet::new(),
            extra_hosts: BTreeSet::new(),
            network: NetworkMode::None,
            privileged: false,
            terminal: false,
            interactive: false,
            restart: RestartPolicy::default(),
            log: LogConfig {
                driver: LogDriver::default(),
                max_files: None,
                max_size: None,
                non_blocking: false,
                max_buffer_size: None,
            },
            resources: Resources::default(),
            stop_timeout: None,
            stop_signal: None,
            health: HealthConfig::default(),
        }
    }
}

/// Whether the new container starts before or after the old one stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateStrategy {
    /// Stop the old, then start the new: never two at once.
    #[default]
    StopFirst,
    /// Start the new, then stop the old: near-zero downtime.
    StartFirst,
}

/// When berth pulls an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Only when the image is not present locally.
    #[default]
    Missing,
    /// On every apply, so a moved tag is noticed.
    Always,
    /// Never; the image must be present.
    Never,
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// One published container port. Container port ranges are expanded into
/// one binding each, so `8080-8081:80-81` equals `8080:80` plus `8081:81`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PortBinding {
    /// Container port.
    pub container_port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Host address (`0.0.0.0` by default, as in Kanto).
    pub host_ip: IpAddr,
    /// First host port; 0 lets the engine choose.
    pub host_port: u16,
    /// Last host port of a range the engine picks from; equals `host_port`
    /// for a single port.
    pub host_port_end: u16,
}

impl PortBinding {
    /// Whether two bindings would fight for the same host socket.
    pub fn conflicts_with(&self, other: &PortBinding) -> bool {
        let ips_overlap = self.host_ip == other.host_ip
            || (self.host_ip.is_unspecified() && self.host_ip.is_ipv4() == other.host_ip.is_ipv4())
            || (other.host_ip.is_unspecified()
                && self.host_ip.is_ipv4() == other.host_ip.is_ipv4());
        self.protocol == other.protocol
            && self.host_port != 0
            && other.host_port != 0
            && ips_overlap
            && self.host_port <= other.host_port_end
            && other.host_port <= self.host_port_end
    }
}

impl fmt::Display for PortBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            IpAddr::V4(ip) if ip.is_unspecified() => {}
            IpAddr::V4(ip) => write!(f, "{ip}:")?,
            IpAddr::V6(ip) => write!(f, "[{ip}]:")?,
        }
        write!(f, "{}", self.host_port)?;
        if self.host_port_end != self.host_port {
            write!(f, "-{}", self.host_port_end)?;
        }
        write!(f, ":{}/{}", self.container_port, self.protocol)
    }
}

/// Mount propagation of a bind mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    /// rprivate (the default).
    #[default]
    Rprivate,
    /// private.
    Private,
    /// rshared.
    Rshared,
    /// shared.
    Shared,
    /// rslave.
    Rslave,
    /// slave.
    Slave,
}

impl Propagation {
    /// Every mode with its word.
    pub const ALL: [(&'static str, Propagation); 6] = [
        ("rprivate", Propagation::Rprivate),
        ("private", Propagation::Private),
        ("rshared", Propagation::Rshared),
        ("shared", Propagation::Shared),
        ("rslave", Propagation::Rslave),
        ("slave", Propagation::Slave),
    ];

    /// The word Docker and Kanto use.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("rprivate", |(s, _)| s)
    }
}

/// A bind mount of a host path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BindMount {
    /// Path inside the container (first, so sets sort by destination).
    pub destination: String,
    /// Absolute host path.
    pub source: String,
    /// Read-only.
    pub read_only: bool,
    /// Propagation mode.
    pub propagation: Propagation,
}

impl fmt::Display for BindMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.source, self.destination)?;
        if self.read_only {
            f.write_str("ro,")?;
        }
        f.write_str(self.propagation.as_str())
    }
}

/// A named volume mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct VolumeMount {
    /// Path inside the container.
    pub destination: String,
    /// Volume name.
    pub name: String,
    /// Read-only.
    pub read_only: bool,
}

impl fmt::Display for VolumeMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.destination)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

/// A host device made available in the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DeviceMapping {
    /// Path inside the container.
    pub container_path: String,
    /// Path on the host.
    pub host_path: String,
    /// cgroup permissions in canonical order (`rwm`, `rw`, `r`, …).
    pub permissions: String,
}

impl fmt::Display for DeviceMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.host_path, self.container_path, self.permissions
        )
    }
}

/// What an extra host name resolves to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostTarget {
    /// A literal address.
    Ip(IpAddr),
    /// The host as seen from the container (`host_ip`, Docker's `host-gateway`).
    HostGateway,
    /// The address of a host interface (`host_ip_<iface>`), resolved at apply.
    HostInterface(String),
    /// The address of another container by host name (`container_<hostname>`),
    /// resolved at apply.
    Container(String),
}

/// An extra /etc/hosts entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ExtraHost {
    /// The name to resolve.
    pub name: String,
    /// What it resolves to.
    pub target: HostTarget,
}

impl fmt::Display for ExtraHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            HostTarget::Ip(ip) => write!(f, "{}:{ip}", self.name),
            HostTarget::HostGateway => write!(f, "{}:host_ip", self.name),
            HostTarget::HostInterface(i) => write!(f, "{}:host_ip_{i}", self.name),
            HostTarget::Container(c) => write!(f, "{}:container_{c}", self.name),
        }
    }
}

/// Which network the container joins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The default bridge.
    #[default]
    Bridge,
    /// The host's network stack.
    Host,
    /// No networking.
    None,
    /// Share another container's network stack.
    Container(String),
    /// A user-defined network that must already exist.
    User(String),
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkMode::Bridge => f.write_str("bridge"),
            NetworkMode::Host => f.write_str("host"),
            NetworkMode::None => f.write_str("none"),
            NetworkMode::Container(c) => write!(f, "container:{c}"),
            NetworkMode::User(n) => f.write_str(n),
        }
    }
}

impl NetworkMode {
    /// Whether ports can be published in this mode.
    pub fn can_publish(&self) -> bool {
        matches!(self, NetworkMode::Bridge | NetworkMode::User(_))
    }
}

/// The engine's restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum RestartPolicy {
    /// Never restart.
    No,
    /// Always restart, also after a manual stop and a daemon restart.
    Always,
    /// Restart unless stopped by hand (Kanto's default).
    #[default]
    UnlessStopped,
    /// Restart after a non-zero exit, up to `max_retries` times (0: no limit).
    OnFailure {
        /// Retry limit; 0 means no limit.
        max_retries: u32,
    },
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
            RestartPolicy::OnFailure { max_retries: 0 } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max_retries } => write!(f, "on-failure:{max_retries}"),
        }
    }
}

/// The log driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogDriver {
    /// JSON files (Kanto's default).
    #[default]
    JsonFile,
    /// Discard output.
    None,
    /// Docker's compact local format.
    Local,
    /// The systemd journal.
    Journald,
}

impl LogDriver {
    /// Whether the driver writes rotating files (and so takes max size/files).
    pub fn writes_files(self) -> bool {
        matches!(self, LogDriver::JsonFile | LogDriver::Local)
    }

    /// The engine's name for the driver.
    pub fn as_str(self) -> &'static str {
        match self {
            LogDriver::JsonFile => "json-file",
            LogDriver::None => "none",
            LogDriver::Local => "local",
            LogDriver::Journald => "journald",
        }
    }
}

/// Log configuration with Kanto's defaults made explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LogConfig {
    /// Driver.
    pub driver: LogDriver,
    /// Files kept (file drivers only).
    pub max_files: Option<u32>,
    /// Bytes per file (file drivers only).
    pub max_size: Option<u64>,
    /// Whether logging may drop output instead of blocking.
    pub non_blocking: bool,
    /// Buffer bytes (non-blocking only).
    pub max_buffer_size: Option<u64>,
}

/// Swap limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Swap {
    /// Memory plus swap, in bytes.
    Limit(u64),
    /// No swap limit (`-1`).
    Unlimited,
}

/// Resource limits, changed in place by the engine's update call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// Hard memory limit in bytes.
    pub memory: Option<u64>,
    /// Soft memory limit in bytes.
    pub memory_reservation: Option<u64>,
    /// Memory plus swap.
    pub memory_swap: Option<Swap>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<u64>,
}

/// Health check overrides; unset fields keep the image's.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HealthConfig {
    /// The check: a shell command, or disabled.
    pub test: Option<HealthTest>,
    /// Time between checks.
    #[serde(with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Time one check may take.
    #[serde(with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Failures before unhealthy.
    pub retries: Option<u32>,
    /// Grace period after start.
    #[serde(with = "opt_duration")]
    pub start_period: Option<Duration>,
}

/// A health check command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthTest {
    /// Run with `/bin/sh -c`.
    Shell(String),
    /// Disable the image's check.
    Disabled,
}

/// Durations serialise as humantime text, so hashes and diffs read well.
mod opt_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(ip: &str, start: u16, end: u16) -> PortBinding {
        PortBinding {
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: ip.parse().unwrap(),
            host_port: start,
            host_port_end: end,
        }
    }

    #[test]
    fn same_port_on_all_interfaces_conflicts_with_a_specific_address() {
        assert!(binding("0.0.0.0", 80, 80).conflicts_with(&binding("127.0.0.1", 80, 80)));
    }

    #[test]
    fn same_port_on_two_specific_addresses_does_not_conflict() {
        assert!(!binding("127.0.0.1", 80, 80).conflicts_with(&binding("127.0.0.2", 80, 80)));
    }

    #[test]
    fn overlapping_ranges_conflict() {
        assert!(binding("0.0.0.0", 8000, 8010).conflicts_with(&binding("0.0.0.0", 8010, 8020)));
        assert!(!binding("0.0.0.0", 8000, 8009).conflicts_with(&binding("0.0.0.0", 8010, 8020)));
    }

    #[test]
    fn engine_chosen_ports_never_conflict() {
        assert!(!binding("0.0.0.0", 0, 0).conflicts_with(&binding("0.0.0.0", 0, 0)));
    }

    #[test]
    fn port_binding_displays_like_kanto_inventory() {
        assert_eq!(binding("0.0.0.0", 8080, 8080).to_string(), "8080:80/tcp");
        assert_eq!(
            binding("::1", 5000, 6000).to_string(),
            "[::1]:5000-6000:80/tcp"
        );
    }
}
