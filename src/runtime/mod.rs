//! The container engine, behind one trait.
//!
//! Everything berth needs from an engine goes through [`Runtime`]; the types
//! here are berth's own plain data, so the pure code (observe, plan) never sees
//! bollard, and an in-memory `fake::FakeRuntime` can stand in for tests
//! (with `faults::Faulty` around either to inject failures, compiled only
//! for unit tests and with the `test-hooks` feature). The in-memory engine
//! is also the core of [`hollow::Hollow`], which only `berth fleet-sim`
//! selects.

pub mod cache;
pub mod docker;
pub mod fake;
#[cfg(any(test, feature = "test-hooks"))]
pub mod faults;
pub mod hollow;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use crate::spec::model::ContainerConfig;

/// What kind of object the engine did not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Missing {
    /// A container: the one asked about, or one it refers to (the target
    /// of a `container:<x>` network mode, reported at start).
    Container,
    /// An image, locally (create) or in its registry (pull).
    Image,
    /// A network (reported at start, not at create or connect).
    Network,
    /// A named volume.
    Volume,
    /// Something else the engine did not find.
    Other,
}

impl Missing {
    /// The word for it: `container`, `image`, `network`, `volume`, `object`.
    pub fn as_str(self) -> &'static str {
        match self {
            Missing::Container => "container",
            Missing::Image => "image",
            Missing::Network => "network",
            Missing::Volume => "volume",
            Missing::Other => "object",
        }
    }
}

/// `container abc`, `image x:1`, `network "edge"`, `volume "data"`; names a
/// user chose for networks and volumes are quoted.
pub(crate) fn describe_missing(kind: Missing, what: &str) -> String {
    match kind {
        Missing::Container | Missing::Image => format!("{} {what}", kind.as_str()),
        Missing::Network | Missing::Volume => format!("{} {what:?}", kind.as_str()),
        Missing::Other => what.to_string(),
    }
}

/// What the engine said when an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The container, image, network or volume does not exist. `kind` and
    /// `what` come from the engine's message, so they name what was really
    /// missing: starting a container whose network is gone reports the
    /// network, not the container.
    #[error("{} not found", describe_missing(*kind, what))]
    NotFound {
        /// What kind of object is missing.
        kind: Missing,
        /// Its name, id or reference as the engine gave it (for
        /// [`Missing::Other`], a description).
        what: String,
    },
    /// The operation conflicts with the current state (name in use, …).
    #[error("conflict: {message}")]
    Conflict {
        /// The engine's words.
        message: String,
    },
    /// The engine could not be reached.
    #[error("cannot reach the Docker engine at {endpoint}: {message}")]
    Unavailable {
        /// Where berth looked.
        endpoint: String,
        /// Why it failed.
        message: String,
    },
    /// The engine refused the request.
    #[error("the engine refused: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The engine's words.
        message: String,
    },
    /// A registry refused the credentials berth sent (or wanted some and
    /// got none), or berth could not read the credentials configured for
    /// it. Never carries a secret: only the registry and what went wrong.
    #[error("registry {registry}: {message}")]
    Unauthorized {
        /// The registry host (`127.0.0.1:5001`).
        registry: String,
        /// What the engine or berth said, and what to do about it.
        message: String,
    },
    /// Anything else (transport, decoding).
    #[error("{0}")]
    Other(String),
}

impl RuntimeError {
    /// Whether this says an object of `kind` does not exist.
    pub fn is_missing(&self, kind: Missing) -> bool {
        matches!(self, RuntimeError::NotFound { kind: k, .. } if *k == kind)
    }

    /// The missing object's kind and name, when this is a [`RuntimeError::NotFound`].
    pub fn missing(&self) -> Option<(Missing, &str)> {
        match self {
            RuntimeError::NotFound { kind, what } => Some((*kind, what.as_str())),
            _ => None,
        }
    }

    /// A not-found error.
    pub fn not_found(kind: Missing, what: impl Into<String>) -> Self {
        RuntimeError::NotFound {
            kind,
            what: what.into(),
        }
    }
}

/// The result of a runtime call.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Engine identity, for logs and `berth state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// Engine version (`20.10.24`).
    pub version: String,
    /// Negotiated API version (`1.41`).
    pub api_version: String,
}

/// Life-cycle state of a container, as the engine reports it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum Status {
    /// Created, never started.
    #[default]
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Being restarted by its restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Exited.
    Exited,
    /// Dead (removal failed half-way).
    Dead,
}

impl Status {
    /// The word Kanto's inventory uses.
    pub fn kanto_word(self) -> &'static str {
        match self {
            Status::Created => "Created",
            Status::Running | Status::Restarting => "Running",
            Status::Paused => "Paused",
            Status::Removing | Status::Exited => "Exited",
            Status::Dead => "Dead",
        }
    }

    /// The engine's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Parses the engine's word; unknown words count as dead so nothing
    /// relies on a container in a state berth does not understand.
    pub fn parse(word: &str) -> Self {
        match word {
            "created" => Status::Created,
            "running" => Status::Running,
            "paused" => Status::Paused,
            "restarting" => Status::Restarting,
            "removing" => Status::Removing,
            "exited" => Status::Exited,
            _ => Status::Dead,
        }
    }
}

/// Health as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Health {
    /// Within the start period, or no check has finished yet.
    Starting,
    /// The last checks passed.
    Healthy,
    /// Too many checks failed.
    Unhealthy,
}

/// A container's state.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ContainerState {
    /// Life-cycle status.
    pub status: Status,
    /// Exit code of the last run.
    pub exit_code: i64,
    /// When it last started (RFC 3339), if ever.
    pub started_at: Option<String>,
    /// When it last stopped (RFC 3339), if ever.
    pub finished_at: Option<String>,
    /// Health, when the container has a health check.
    pub health: Option<Health>,
    /// How often the engine restarted it.
    pub restart_count: i64,
    /// Error from the last start attempt.
    pub error: Option<String>,
}

/// A published port as the engine stores it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RawPortBinding {
    /// Container port.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Host address; empty means all.
    pub host_ip: String,
    /// Host port or range (`8080`, `5000-6000`); empty means any.
    pub host_port: String,
}

/// A mount as the engine reports it (top-level `Mounts`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RawMount {
    /// `bind`, `volume`, `tmpfs`, …
    pub kind: String,
    /// Volume name (volumes only).
    pub name: Option<String>,
    /// Host path (binds) or the volume's data directory.
    pub source: String,
    /// Path inside the container.
    pub destination: String,
    /// Writable.
    pub rw: bool,
    /// Propagation mode (binds).
    pub propagation: String,
}

/// A health check as the engine stores it (durations in nanoseconds, 0 = inherit).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RawHealthcheck {
    /// `["CMD-SHELL", cmd]`, `["CMD", ...]`, `["NONE"]` or empty (inherit).
    pub test: Vec<String>,
    /// Interval.
    pub interval_ns: i64,
    /// Timeout.
    pub timeout_ns: i64,
    /// Retries.
    pub retries: i64,
    /// Start period.
    pub start_period_ns: i64,
}

/// Everything berth reads about one container, in the engine's own terms.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ContainerDetails {
    /// Engine id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// The image reference the container was created with.
    pub image_ref: String,
    /// The image id (`sha256:…`).
    pub image_id: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// All labels (image's and the container's).
    pub labels: BTreeMap<String, String>,
    /// State.
    pub state: ContainerState,
    /// Effective environment (image's merged with the container's).
    pub env: Vec<String>,
    /// Effective command.
    pub cmd: Option<Vec<String>>,
    /// Effective entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Working directory.
    pub workdir: String,
    /// User.
    pub user: String,
    /// Host name.
    pub hostname: String,
    /// Domain name.
    pub domainname: String,
    /// Published ports (`HostConfig.PortBindings`).
    pub port_bindings: Vec<RawPortBinding>,
    /// Mounts as reported (binds, named and anonymous volumes).
    pub mounts: Vec<RawMount>,
    /// Devices: host path, container path, permissions.
    pub devices: Vec<(String, String, String)>,
    /// `HostConfig.ExtraHosts` (`name:ip`).
    pub extra_hosts: Vec<String>,
    /// `HostConfig.NetworkMode` (`default`, `bridge`, `host`, `container:<id>`, …).
    pub network_mode: String,
    /// Networks the container is attached to, with its aliases on each.
    pub networks: BTreeMap<String, Vec<String>>,
    /// Its IPv4 address on each network it has one on.
    pub ips: BTreeMap<String, String>,
    /// Privileged.
    pub privileged: bool,
    /// TTY.
    pub tty: bool,
    /// Stdin kept open.
    pub open_stdin: bool,
    /// Restart policy name (`""` = no).
    pub restart_policy: String,
    /// Restart retry limit.
    pub restart_max_retries: i64,
    /// Log driver.
    pub log_driver: String,
    /// Log options.
    pub log_options: BTreeMap<String, String>,
    /// Memory limit bytes (0 = none).
    pub memory: i64,
    /// Memory reservation bytes (0 = none).
    pub memory_reservation: i64,
    /// Memory + swap bytes (0 = default, -1 = unlimited).
    pub memory_swap: i64,
    /// CPU limit in billionths (0 = none).
    pub nano_cpus: i64,
    /// Stop timeout seconds, when set.
    pub stop_timeout: Option<i64>,
    /// Stop signal, when set.
    pub stop_signal: Option<String>,
    /// Health check, when the container (or its image) has one.
    pub healthcheck: Option<RawHealthcheck>,
}

impl ContainerDetails {
    /// A one-shot job that finished its work: restart policy `no` and
    /// exited with code 0 (compose's `service_completed_successfully`).
    /// It stays as it is: neither restarted nor reported as failed.
    pub fn is_completed_job(&self) -> bool {
        matches!(self.restart_policy.as_str(), "" | "no")
            && self.state.status == Status::Exited
            && self.state.exit_code == 0
    }
}

/// What berth reads about an image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageDetails {
    /// Image id (`sha256:…`).
    pub id: String,
    /// Tags pointing at it.
    pub repo_tags: Vec<String>,
    /// Registry digests (`repo@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Default environment.
    pub env: Vec<String>,
    /// Default command.
    pub cmd: Option<Vec<String>>,
    /// Default entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Default working directory.
    pub workdir: String,
    /// Default user.
    pub user: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Anonymous volume paths (`VOLUME`).
    pub volumes: Vec<String>,
    /// Default stop signal.
    pub stop_signal: Option<String>,
    /// Default health check.
    pub healthcheck: Option<RawHealthcheck>,
}

/// A request to create a container: the normalised configuration plus what
/// only the executor knows (labels, resolved host entries).
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    /// Container name to create under.
    pub name: String,
    /// The configuration.
    pub config: ContainerConfig,
    /// Every label to set (the document's and berth's).
    pub labels: BTreeMap<String, String>,
    /// Extra hosts with `container_`/`host_ip_` targets resolved (`name:ip`,
    /// `name:host-gateway`).
    pub extra_hosts: Vec<String>,
    /// Anonymous volumes to carry over from a container being replaced:
    /// (volume name, container path).
    pub inherited_volumes: Vec<(String, String)>,
    /// Networks to attach with their aliases, carried over from a container
    /// being replaced; the one named by the network mode is attached at
    /// create, the others right after.
    pub networks: Vec<(String, Vec<String>)>,
}

/// One progress report from a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    /// Bytes downloaded so far, over all layers seen.
    pub current: u64,
    /// Bytes to download, over all layers seen.
    pub total: u64,
}

impl PullProgress {
    /// Percent done, 0–100.
    pub fn percent(&self) -> u8 {
        (self.current.min(self.total) * 100)
            .checked_div(self.total)
            .map_or(0, |p| p as u8)
    }
}

/// A container event from the engine (start, die, destroy, rename, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `start`, `die`, `destroy`, `rename`, …
    pub action: String,
    /// Container id.
    pub id: String,
    /// Container name at the time.
    pub name: String,
}

/// How a command run with [`Runtime::exec`] ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    /// Its exit code.
    pub exit_code: i64,
    /// The end of what it wrote (standard output and error, interleaved),
    /// at most [`OUTPUT_LIMIT`] bytes: a hook's output is for a person
    /// to read, and must not grow berth's memory with a chatty command.
    pub output: String,
}

/// The most output berth keeps of a command or a one-shot container.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// The last `limit` bytes of `text`, cut at a character boundary.
pub fn tail(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// A boxed future, for trait methods that must be `Send`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A boxed stream of engine events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

/// Everything berth asks of a container engine.
///
/// Methods take names or ids interchangeably, as the engine does.
pub trait Runtime: Send + Sync {
    /// Engine identity; also proves the engine answers.
    fn info(&self) -> impl Future<Output = Result<EngineInfo>> + Send;
    /// Proves the engine answers, and nothing more: the agent asks before
    /// every activity, and the engine's `/version` asks containerd for its
    /// own (about 9 ms here) where `/_ping` answers at once (issue 25).
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;
    /// Every container, running or not, fully inspected.
    fn list(&self) -> impl Future<Output = Result<Vec<ContainerDetails>>> + Send;
    /// One container; `None` when it does not exist.
    fn inspect(&self, id: &str) -> impl Future<Output = Result<Option<ContainerDetails>>> + Send;
    /// A local image; `None` when it is not present.
    fn image(&self, reference: &str) -> impl Future<Output = Result<Option<ImageDetails>>> + Send;
    /// The digest the registry has for a reference now, without pulling.
    fn registry_digest(&self, reference: &str) -> impl Future<Output = Result<String>> + Send;
    /// Names of the existing networks.
    fn networks(&self) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Pulls an image, reporting progress.
    fn pull(
        &self,
        reference: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> impl Future<Output = Result<()>> + Send;
    /// Creates a container (not started); returns its id.
    fn create(&self, request: &CreateRequest) -> impl Future<Output = Result<String>> + Send;
    /// Starts a container.
    fn start(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Stops: the stop signal, then kill after `timeout`.
    fn stop(&self, id: &str, timeout: Duration) -> impl Future<Output = Result<()>> + Send;
    /// Sends a signal.
    fn kill(&self, id: &str, signal: &str) -> impl Future<Output = Result<()>> + Send;
    /// Resumes a paused container.
    fn unpause(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Renames a container.
    fn rename(&self, id: &str, new_name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Removes a container (forcefully), never its volumes.
    fn remove(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Changes restart policy and resources in place, without a restart.
    fn update(&self, id: &str, config: &ContainerConfig)
        -> impl Future<Output = Result<()>> + Send;
    /// The end of a container's output (standard output and error),
    /// at most [`OUTPUT_LIMIT`] bytes: what a failing job or hook said.
    fn logs(&self, id: &str) -> impl Future<Output = Result<String>> + Send;
    /// Runs `cmd` in the running container `id` (as its user) to the end
    /// and says how it ended. The caller bounds how long it may take.
    fn exec(&self, id: &str, cmd: &[String]) -> impl Future<Output = Result<ExecOutput>> + Send;
    /// Whether a path (a bind-mount source, a device) exists on the
    /// engine's host; `None` when berth cannot tell (a remote engine).
    fn host_path_exists(&self, path: &str) -> impl Future<Output = Option<bool>> + Send {
        let _ = path;
        std::future::ready(None)
    }
    /// Container events as they happen.
    fn events(&self) -> EventStream;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(policy: &str, code: i64) -> ContainerDetails {
        ContainerDetails {
            restart_policy: policy.into(),
            state: ContainerState {
                status: Status::Exited,
                exit_code: code,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_job_that_exited_0_with_restart_policy_no_has_completed() {
        assert!(exited("no", 0).is_completed_job());
        // The engine reports an unset policy as empty: that is `no` too.
        assert!(exited("", 0).is_completed_job());
    }

    #[test]
    fn a_job_that_failed_or_a_service_that_stopped_has_not_completed() {
        assert!(!exited("no", 3).is_completed_job());
        assert!(!exited("unless-stopped", 0).is_completed_job());
        assert!(!exited("always", 0).is_completed_job());
        assert!(!exited("on-failure", 0).is_completed_job());
        let mut running = exited("no", 0);
        running.state.status = Status::Running;
        assert!(!running.is_completed_job());
    }

    #[test]
    fn tail_keeps_the_last_bytes_at_a_character_boundary() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ab", 3), "ab");
        // "é" is two bytes: a cut inside it moves past it.
        assert_eq!(tail("aéb", 2), "b");
    }

    #[test]
    fn not_found_says_what_kind_of_thing_is_missing() {
        let cases = [
            (Missing::Container, "abc", "container abc not found"),
            (Missing::Image, "x/app:1", "image x/app:1 not found"),
            (Missing::Network, "nosuch", "network \"nosuch\" not found"),
            (Missing::Volume, "data", "volume \"data\" not found"),
            (Missing::Other, "the page", "the page not found"),
        ];
        for (kind, what, shown) in cases {
            let err = RuntimeError::not_found(kind, what);
            assert_eq!(err.to_string(), shown);
            assert!(err.is_missing(kind));
            assert_eq!(err.missing(), Some((kind, what)));
        }
        let err = RuntimeError::not_found(Missing::Network, "edge");
        assert!(!err.is_missing(Missing::Container));
        assert!(!RuntimeError::Other("x".into()).is_missing(Missing::Other));
    }
}
