//! An in-memory engine for fast tests of the planner and executor, and
//! the core of the hollow engine `berth fleet-sim` runs agents on.
//!
//! It takes the very create body the Docker implementation would send
//! ([`super::docker::create_body`]) and applies the engine's rules to it
//! (image defaults merged in, swap defaulting to twice the memory, anonymous
//! volumes for image `VOLUME`s), so what it reports back is what a real
//! engine would. It records every call and can fail one on demand, and it
//! delivers the engine events a test emits (it makes up none itself, so a
//! test decides exactly what the agent hears).
//!
//! Where the executor relies on the engine's answers, the fake gives the
//! same ones (checked against Docker 20.10, API 1.41):
//!
//! - create resolves `container:<name>` to `container:<id>` when the target
//!   exists, and keeps the name when it does not (it is looked up again at
//!   each start); it accepts a user network that does not exist;
//! - start fails with `NotFound { Container, <target> }` when a
//!   `container:` target is gone, with `Conflict` (`cannot join network of
//!   a non running container: <target>`) when it is not running, and with
//!   `NotFound { Network, <name> }` when a network it is on does not exist;
//!   a failed start leaves the container `created` with the error recorded;
//! - rename to the current name is refused (400), to a name in use is a
//!   `Conflict`; stopping a stopped container succeeds.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;

use super::docker::{create_body, raw_devices, raw_health};
use super::{
    ContainerDetails, ContainerState, CreateRequest, EngineInfo, Event, EventStream, ExecOutput,
    ImageDetails, Missing, PullProgress, RawHealthcheck, RawMount, RawPortBinding, Result, Runtime,
    RuntimeError, Status,
};
use crate::spec::model::ContainerConfig;

/// A container carrying this label "exits" with its value as exit code
/// as soon as it is started.
pub const EXIT_LABEL: &str = "fake.exit-code";

/// A runtime call, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Call {
    /// `pull(reference)`.
    Pull(String),
    /// `create(name)`.
    Create(String),
    /// `start(id or name)`.
    Start(String),
    /// `stop(id or name)`.
    Stop(String),
    /// `kill(id or name)`.
    Kill(String),
    /// `unpause(id or name)`.
    Unpause(String),
    /// `rename(id or name, new name)`.
    Rename(String, String),
    /// `remove(id or name)`.
    Remove(String),
    /// `update(id or name)`.
    Update(String),
    /// `exec(id or name, argv)`.
    Exec(String, Vec<String>),
}

#[derive(Default)]
struct State {
    containers: Vec<ContainerDetails>,
    images: BTreeMap<String, ImageDetails>,
    registry: BTreeMap<String, ImageDetails>,
    networks: Vec<String>,
    calls: Vec<Call>,
    failures: HashMap<Call, RuntimeError>,
    missing_paths: std::collections::BTreeSet<String>,
    next_id: u64,
    /// Scripted commands: argv text to look for, exit code, output.
    scripts: Vec<(String, i64, String)>,
    /// What each container (by id) wrote.
    output: HashMap<String, String>,
    /// Calls are not kept (the hollow engine of a long simulation).
    unrecorded: bool,
}

/// How many emitted events a slow watcher may fall behind before it misses
/// some (as a real engine's event stream would drop them too).
const EVENT_BACKLOG: usize = 256;

/// The in-memory engine.
pub struct FakeRuntime {
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            events: broadcast::channel(EVENT_BACKLOG).0,
        }
    }
}

impl FakeRuntime {
    /// Scripts a command: a container started whose command line contains
    /// `needle`, or an exec whose argv does, exits at once with
    /// `exit_code` having written `output`. The first matching script wins;
    /// an exec that matches none exits 0 without output.
    pub fn script(&self, needle: &str, exit_code: i64, output: &str) {
        self.lock()
            .scripts
            .push((needle.to_string(), exit_code, output.to_string()));
    }

    /// Sets what the container `id` (or name) wrote, for [`Runtime::logs`].
    pub fn set_output(&self, id: &str, text: &str) {
        let mut state = self.lock();
        let key = state
            .containers
            .iter()
            .find(|c| c.id == id || c.name == id)
            .map_or_else(|| id.to_string(), |c| c.id.clone());
        state.output.insert(key, text.to_string());
    }

    /// An empty engine with the default networks.
    pub fn new() -> Self {
        let fake = Self::default();
        fake.lock().networks = vec!["bridge".into(), "host".into(), "none".into()];
        fake
    }

    /// [`FakeRuntime::new`] that keeps no record of its calls, so that its
    /// memory stays flat however long it runs ([`super::hollow`]).
    pub fn unrecorded() -> Self {
        let fake = Self::new();
        fake.lock().unrecorded = true;
        fake
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes an image available locally under `reference`.
    pub fn add_image(&self, reference: &str, image: ImageDetails) {
        self.lock().images.insert(reference.to_string(), image);
    }

    /// Makes an image available in the "registry" (pull succeeds).
    pub fn add_registry_image(&self, reference: &str, image: ImageDetails) {
        self.lock().registry.insert(reference.to_string(), image);
    }

    /// Puts a container on the engine as-is (one "created by hand").
    pub fn add_container(&self, details: ContainerDetails) {
        self.lock().containers.push(details);
    }

    /// Adds a user network.
    pub fn add_network(&self, name: &str) {
        self.lock().networks.push(name.to_string());
    }

    /// Makes a host path (a bind-mount source, a device) absent; every
    /// other path exists.
    pub fn remove_host_path(&self, path: &str) {
        self.lock().missing_paths.insert(path.to_string());
    }

    /// Makes the next matching call fail with `error`.
    pub fn fail_next(&self, call: Call, error: RuntimeError) {
        self.lock().failures.insert(call, error);
    }

    /// Every call that changed something, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// A container's current details, by name.
    pub fn container(&self, name: &str) -> Option<ContainerDetails> {
        self.lock()
            .containers
            .iter()
            .find(|c| c.name == name)
            .cloned()
    }

    /// Changes a container in place, as someone with shell access might.
    pub fn tamper(&self, name: &str, change: impl FnOnce(&mut ContainerDetails)) {
        if let Some(c) = self.lock().containers.iter_mut().find(|c| c.name == name) {
            change(c);
        }
    }

    /// Delivers `event` to every stream [`Runtime::events`] handed out so
    /// far, as the engine reports what happened to a container. The fake
    /// never emits events on its own, so a test emits the ones it needs.
    pub fn emit(&self, event: Event) {
        // Nobody watching is fine: the engine does not wait for listeners.
        let _ = self.events.send(event);
    }

    /// How many event streams are open, so a test can wait until the agent
    /// watches before it emits (events before subscribing are not replayed).
    pub fn watchers(&self) -> usize {
        self.events.receiver_count()
    }

    fn record(&self, call: Call) -> Result<()> {
        let mut state = self.lock();
        if let Some(e) = state.failures.remove(&call) {
            return Err(e);
        }
        if !state.unrecorded {
            state.calls.push(call);
        }
        Ok(())
    }

    fn with_container<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerDetails) -> Result<T>,
    ) -> Result<T> {
        let mut state = self.lock();
        match state
            .containers
            .iter_mut()
            .find(|c| c.id == id || c.name == id)
        {
            Some(c) => f(c),
            None => Err(RuntimeError::not_found(Missing::Container, id)),
        }
    }
}

/// The network modes that name no user network.
fn is_builtin_network(mode: &str) -> bool {
    matches!(mode, "" | "default" | "bridge" | "host" | "none") || mode.starts_with("container:")
}

/// Why the engine would refuse to start `c` now, as the engine words it.
fn start_refusal(state: &State, c: &ContainerDetails) -> Option<RuntimeError> {
    if let Some(target) = c.network_mode.strip_prefix("container:") {
        let found = state
            .containers
            .iter()
            .find(|o| o.id == target || o.name == target);
        return match found.map(|o| o.state.status) {
            None => Some(RuntimeError::not_found(Missing::Container, target)),
            Some(Status::Running | Status::Paused) => None,
            Some(Status::Restarting) => Some(RuntimeError::Conflict {
                message: format!(
                    "Container {target} is restarting, wait until the container is running"
                ),
            }),
            Some(_) => Some(RuntimeError::Conflict {
                message: format!("cannot join network of a non running container: {target}"),
            }),
        };
    }
    let user = (!is_builtin_network(&c.network_mode)).then_some(c.network_mode.as_str());
    user.into_iter()
        .chain(c.networks.keys().map(String::as_str))
        .find(|n| !is_builtin_network(n) && !state.networks.iter().any(|known| known == n))
        .map(|n| RuntimeError::not_found(Missing::Network, n))
}

/// The engine's own words for an error, as it records them in the
/// container's state.
fn engine_words(e: &RuntimeError) -> String {
    match e {
        RuntimeError::NotFound {
            kind: Missing::Container,
            what,
        } => format!("No such container: {what}"),
        RuntimeError::NotFound {
            kind: Missing::Network,
            what,
        } => format!("network {what} not found"),
        RuntimeError::Conflict { message } => message.clone(),
        other => other.to_string(),
    }
}

/// The engine's words for a name taken by another container.
fn name_in_use(name: &str, holder: &str) -> String {
    format!(
        "Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". \
         You have to remove (or rename) that container to be able to reuse that name."
    )
}

fn merge_health(
    container: Option<RawHealthcheck>,
    image: Option<&RawHealthcheck>,
) -> Option<RawHealthcheck> {
    match (container, image) {
        (None, image) => image.cloned(),
        (Some(c), None) => Some(c),
        (Some(mut c), Some(i)) => {
            if c.test.is_empty() {
                c.test = i.test.clone();
            }
            for (mine, theirs) in [
                (&mut c.interval_ns, i.interval_ns),
                (&mut c.timeout_ns, i.timeout_ns),
                (&mut c.start_period_ns, i.start_period_ns),
                (&mut c.retries, i.retries),
            ] {
                if *mine == 0 {
                    *mine = theirs;
                }
            }
            Some(c)
        }
    }
}

/// A local image by reference as the engine finds one: by the tag it was
/// pulled under, by one of its registry digests (`name@sha256:…`, a tag
/// beside the digest ignored), or by its id.
fn local_image<'a>(
    images: &'a BTreeMap<String, ImageDetails>,
    reference: &str,
) -> Option<&'a ImageDetails> {
    if let Some(image) = images.get(reference) {
        return Some(image);
    }
    if let Some((name, digest)) = reference.split_once('@') {
        let name = name
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map_or(name, |(n, _)| n);
        let wanted = format!("{name}@{digest}");
        return images.values().find(|i| i.repo_digests.contains(&wanted));
    }
    images.values().find(|i| i.id == reference)
}

impl Runtime for FakeRuntime {
    async fn info(&self) -> Result<EngineInfo> {
        Ok(EngineInfo {
            version: "fake".into(),
            api_version: "1.41".into(),
        })
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ContainerDetails>> {
        Ok(self.lock().containers.clone())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerDetails>> {
        // As the engine resolves a reference: a full id, then a name, then
        // a unique id prefix (Docker's GetContainer).
        let state = self.lock();
        let exact = state
            .containers
            .iter()
            .find(|c| c.id == id)
            .or_else(|| state.containers.iter().find(|c| c.name == id));
        if let Some(c) = exact {
            return Ok(Some(c.clone()));
        }
        let by_prefix: Vec<&ContainerDetails> = state
            .containers
            .iter()
            .filter(|c| !id.is_empty() && c.id.starts_with(id))
            .collect();
        Ok(match by_prefix.as_slice() {
            [one] => Some((*one).clone()),
            _ => None,
        })
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageDetails>> {
        Ok(local_image(&self.lock().images, reference).cloned())
    }

    async fn registry_digest(&self, reference: &str) -> Result<String> {
        self.lock()
            .registry
            .get(reference)
            .and_then(|i| i.repo_digests.first())
            .and_then(|d| d.split_once('@').map(|(_, d)| d.to_string()))
            .ok_or_else(|| RuntimeError::not_found(Missing::Image, reference))
    }

    async fn networks(&self) -> Result<Vec<String>> {
        Ok(self.lock().networks.clone())
    }

    async fn pull(
        &self,
        reference: &str,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<()> {
        self.record(Call::Pull(reference.to_string()))?;
        let image = self.lock().registry.get(reference).cloned();
        match image {
            Some(image) => {
                progress(PullProgress {
                    current: 50,
                    total: 100,
                });
                progress(PullProgress {
                    current: 100,
                    total: 100,
                });
                self.lock().images.insert(reference.to_string(), image);
                Ok(())
            }
            None => Err(RuntimeError::not_found(Missing::Image, reference)),
        }
    }

    async fn create(&self, request: &CreateRequest) -> Result<String> {
        self.record(Call::Create(request.name.clone()))?;
        let body = create_body(request);
        let mut state = self.lock();
        let reference = body.image.clone().unwrap_or_default();
        let Some(image) = local_image(&state.images, &reference).cloned() else {
            return Err(RuntimeError::not_found(Missing::Image, reference));
        };
        if let Some(other) = state.containers.iter().find(|c| c.name == request.name) {
            return Err(RuntimeError::Conflict {
                message: name_in_use(&request.name, &other.id),
            });
        }
        state.next_id += 1;
        let id = format!("{:064x}", state.next_id);
        let mut host = body.host_config.clone().unwrap_or_default();
        // The engine pins `container:<name>` to the target's id when the
        // target exists; otherwise it keeps the name and looks it up at start.
        if let Some(target) = host
            .network_mode
            .as_deref()
            .and_then(|m| m.strip_prefix("container:"))
        {
            if let Some(t) = state
                .containers
                .iter()
                .find(|c| c.id == target || c.name == target)
            {
                host.network_mode = Some(format!("container:{}", t.id));
            }
        }

        // The engine merges the image's environment under the container's;
        // an entry without '=' removes the image's variable.
        let mut env: Vec<String> = image.env.clone();
        for entry in body.env.clone().unwrap_or_default() {
            let name = entry.split('=').next().unwrap_or_default().to_string();
            env.retain(|e| e.split('=').next() != Some(name.as_str()));
            if entry.contains('=') {
                env.push(entry);
            }
        }
        let entrypoint = body.entrypoint.clone().or_else(|| image.entrypoint.clone());
        let cmd = match (&body.cmd, &body.entrypoint) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(_)) => None,
            (None, None) => image.cmd.clone(),
        };
        let mut labels = image.labels.clone();
        labels.extend(body.labels.clone().unwrap_or_default());
        let mut mounts = Vec::new();
        for bind in host.binds.clone().unwrap_or_default() {
            let parts: Vec<&str> = bind.split(':').collect();
            let options: Vec<&str> = parts
                .get(2)
                .map(|o| o.split(',').collect())
                .unwrap_or_default();
            let is_bind = parts[0].starts_with('/');
            mounts.push(RawMount {
                kind: if is_bind { "bind" } else { "volume" }.into(),
                name: (!is_bind).then(|| parts[0].to_string()),
                source: parts[0].into(),
                destination: parts.get(1).copied().unwrap_or_default().into(),
                rw: !options.contains(&"ro"),
                propagation: if is_bind {
                    options
                        .iter()
                        .find(|o| **o != "ro" && **o != "rw")
                        .copied()
                        .unwrap_or("rprivate")
                        .into()
                } else {
                    String::new()
                },
            });
        }
        for path in &image.volumes {
            if !mounts.iter().any(|m| &m.destination == path) {
                mounts.push(RawMount {
                    kind: "volume".into(),
                    name: Some(format!(
                        "{:064x}",
                        state.next_id * 1000 + mounts.len() as u64
                    )),
                    source: String::new(),
                    destination: path.clone(),
                    rw: true,
                    propagation: String::new(),
                });
            }
        }
        let mut port_bindings = Vec::new();
        for (key, bindings) in host.port_bindings.clone().unwrap_or_default() {
            let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            for b in bindings.unwrap_or_default() {
                port_bindings.push(RawPortBinding {
                    container_port: port.parse().unwrap_or(0),
                    protocol: protocol.into(),
                    host_ip: b.host_ip.unwrap_or_default(),
                    host_port: b.host_port.unwrap_or_default(),
                });
            }
        }
        let memory = host.memory.unwrap_or(0);
        let memory_swap = match host.memory_swap.unwrap_or(0) {
            0 if memory > 0 => memory * 2,
            s => s,
        };
        let restart = host.restart_policy.clone().unwrap_or_default();
        let log = host.log_config.clone().unwrap_or_default();
        let details = ContainerDetails {
            id: id.clone(),
            name: request.name.clone(),
            image_ref: reference,
            image_id: image.id.clone(),
            created: "2026-11-24T00:00:00Z".into(),
            labels,
            state: ContainerState::default(),
            env,
            cmd,
            entrypoint,
            workdir: body
                .working_dir
                .clone()
                .filter(|w| !w.is_empty())
                .unwrap_or(image.workdir.clone()),
            user: body
                .user
                .clone()
                .filter(|u| !u.is_empty())
                .unwrap_or(image.user.clone()),
            hostname: body
                .hostname
                .clone()
                .unwrap_or_else(|| id[..12].to_string()),
            domainname: body.domainname.clone().unwrap_or_default(),
            port_bindings,
            mounts,
            devices: raw_devices(host.devices.clone()),
            extra_hosts: host.extra_hosts.clone().unwrap_or_default(),
            network_mode: host.network_mode.clone().unwrap_or_default(),
            networks: request.networks.iter().cloned().collect(),
            // Sharing another container's network stack (or the host's, or
            // none) gives a container no address of its own.
            ips: match host.network_mode.as_deref().unwrap_or_default() {
                m if m.starts_with("container:") || m == "host" || m == "none" => BTreeMap::new(),
                _ => BTreeMap::from([(
                    "bridge".to_string(),
                    format!("172.17.0.{}", state.next_id % 250 + 2),
                )]),
            },
            privileged: host.privileged.unwrap_or(false),
            tty: body.tty.unwrap_or(false),
            open_stdin: body.open_stdin.unwrap_or(false),
            restart_policy: restart.name.map(|n| n.to_string()).unwrap_or_default(),
            restart_max_retries: restart.maximum_retry_count.unwrap_or(0),
            log_driver: log.typ.unwrap_or_default(),
            log_options: log.config.unwrap_or_default().into_iter().collect(),
            memory,
            memory_reservation: host.memory_reservation.unwrap_or(0),
            memory_swap,
            nano_cpus: host.nano_cpus.unwrap_or(0),
            stop_timeout: body.stop_timeout,
            stop_signal: body.stop_signal.clone().or(image.stop_signal.clone()),
            healthcheck: merge_health(
                body.healthcheck.clone().map(raw_health),
                image.healthcheck.as_ref(),
            ),
        };
        state.containers.push(details);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.record(Call::Start(id.to_string()))?;
        let mut state = self.lock();
        let Some(index) = state
            .containers
            .iter()
            .position(|c| c.id == id || c.name == id)
        else {
            return Err(RuntimeError::not_found(Missing::Container, id));
        };
        if state.containers[index].state.status == Status::Running {
            // 304: already started, which is what was asked for.
            return Ok(());
        }
        if let Some(e) = start_refusal(&state, &state.containers[index]) {
            state.containers[index].state.error = Some(engine_words(&e));
            return Err(e);
        }
        let line = state.containers[index]
            .cmd
            .clone()
            .unwrap_or_default()
            .join(" ");
        let scripted = state
            .scripts
            .iter()
            .find(|(needle, _, _)| line.contains(needle.as_str()))
            .map(|(_, code, out)| (*code, out.clone()));
        if let Some((_, out)) = &scripted {
            let id = state.containers[index].id.clone();
            state.output.insert(id, out.clone());
        }
        let c = &mut state.containers[index];
        // A label lets a test build an image-less "crashing" container.
        let exit = c
            .labels
            .get(EXIT_LABEL)
            .and_then(|v| v.parse().ok())
            .or(scripted.map(|(code, _)| code));
        match exit {
            Some(code) => {
                c.state.status = Status::Exited;
                c.state.exit_code = code;
            }
            None => c.state.status = Status::Running,
        }
        c.state.error = None;
        c.state.started_at = Some("2026-11-24T00:00:01Z".into());
        Ok(())
    }

    async fn stop(&self, id: &str, _timeout: Duration) -> Result<()> {
        self.record(Call::Stop(id.to_string()))?;
        self.with_container(id, |c| {
            if c.state.status == Status::Running {
                c.state.status = Status::Exited;
                c.state.exit_code = 0;
            }
            Ok(())
        })
    }

    async fn kill(&self, id: &str, _signal: &str) -> Result<()> {
        self.record(Call::Kill(id.to_string()))?;
        self.with_container(id, |c| {
            c.state.status = Status::Exited;
            c.state.exit_code = 137;
            Ok(())
        })
    }

    async fn unpause(&self, id: &str) -> Result<()> {
        self.record(Call::Unpause(id.to_string()))?;
        self.with_container(id, |c| {
            c.state.status = Status::Running;
            Ok(())
        })
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<()> {
        self.record(Call::Rename(id.to_string(), new_name.to_string()))?;
        let new_name = new_name.trim_start_matches('/');
        let mut state = self.lock();
        let Some(index) = state
            .containers
            .iter()
            .position(|c| c.id == id || c.name == id)
        else {
            return Err(RuntimeError::not_found(Missing::Container, id));
        };
        if state.containers[index].name == new_name {
            return Err(RuntimeError::Refused {
                status: 400,
                message: "Renaming a container with the same name as its current name".into(),
            });
        }
        if let Some(other) = state.containers.iter().find(|c| c.name == new_name) {
            return Err(RuntimeError::Conflict {
                message: format!(
                    "Error when allocating new name: {}",
                    name_in_use(new_name, &other.id)
                ),
            });
        }
        state.containers[index].name = new_name.to_string();
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.record(Call::Remove(id.to_string()))?;
        let mut state = self.lock();
        let before = state.containers.len();
        state.containers.retain(|c| c.id != id && c.name != id);
        if state.containers.len() == before {
            return Err(RuntimeError::not_found(Missing::Container, id));
        }
        Ok(())
    }

    async fn update(&self, id: &str, config: &ContainerConfig) -> Result<()> {
        self.record(Call::Update(id.to_string()))?;
        let request = CreateRequest {
            name: String::new(),
            config: config.clone(),
            labels: BTreeMap::new(),
            extra_hosts: Vec::new(),
            inherited_volumes: Vec::new(),
            networks: Vec::new(),
        };
        let host = create_body(&request).host_config.unwrap_or_default();
        self.with_container(id, |c| {
            if let Some(m) = host.memory {
                c.memory = m;
                c.memory_swap = host.memory_swap.unwrap_or(m * 2);
            }
            if let Some(r) = host.memory_reservation {
                c.memory_reservation = r;
            }
            if let Some(s) = host.memory_swap {
                c.memory_swap = s;
            }
            if let Some(n) = host.nano_cpus {
                c.nano_cpus = n;
            }
            let restart = host.restart_policy.unwrap_or_default();
            c.restart_policy = restart.name.map(|n| n.to_string()).unwrap_or_default();
            c.restart_max_retries = restart.maximum_retry_count.unwrap_or(0);
            Ok(())
        })
    }

    async fn logs(&self, id: &str) -> Result<String> {
        let state = self.lock();
        let c = state
            .containers
            .iter()
            .find(|c| c.id == id || c.name == id)
            .ok_or_else(|| RuntimeError::not_found(Missing::Container, id))?;
        Ok(state.output.get(&c.id).cloned().unwrap_or_default())
    }

    async fn exec(&self, id: &str, cmd: &[String]) -> Result<ExecOutput> {
        self.record(Call::Exec(id.to_string(), cmd.to_vec()))?;
        let state = self.lock();
        let c = state
            .containers
            .iter()
            .find(|c| c.id == id || c.name == id)
            .ok_or_else(|| RuntimeError::not_found(Missing::Container, id))?;
        if c.state.status != Status::Running {
            return Err(RuntimeError::Conflict {
                message: format!("container {} is not running", c.id),
            });
        }
        let line = cmd.join(" ");
        Ok(state
            .scripts
            .iter()
            .find(|(needle, _, _)| line.contains(needle.as_str()))
            .map(|(_, code, out)| ExecOutput {
                exit_code: *code,
                output: out.clone(),
            })
            .unwrap_or_default())
    }

    async fn host_path_exists(&self, path: &str) -> Option<bool> {
        Some(!self.lock().missing_paths.contains(path))
    }

    fn events(&self) -> EventStream {
        // Like the engine's stream: what happens from now on, never ending.
        let rx = self.events.subscribe();
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((Ok(event), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{block_on, desired, service_image};

    const IMAGE: &str = "127.0.0.1:5000/berth-test/service:1";

    fn engine() -> FakeRuntime {
        let fake = FakeRuntime::new();
        fake.add_image(IMAGE, service_image("1"));
        fake
    }

    fn request(name: &str, config: &[(&str, &str)]) -> CreateRequest {
        let mut config: Vec<(&str, &str)> = config.to_vec();
        config.insert(0, ("image", IMAGE));
        let d = desired("fake-test", &[(name, &config)]);
        CreateRequest {
            name: name.to_string(),
            config: d.containers[0].config.clone(),
            labels: BTreeMap::new(),
            extra_hosts: Vec::new(),
            inherited_volumes: Vec::new(),
            networks: Vec::new(),
        }
    }

    fn create(fake: &FakeRuntime, name: &str, config: &[(&str, &str)]) -> String {
        block_on(fake.create(&request(name, config))).expect("create")
    }

    #[test]
    fn create_pins_a_network_container_to_its_id() {
        let fake = engine();
        let web = create(&fake, "web", &[]);
        create(&fake, "sidecar", &[("network", "container:web")]);
        let sidecar = fake.container("sidecar").unwrap();
        assert_eq!(sidecar.network_mode, format!("container:{web}"));
    }

    #[test]
    fn start_joins_the_network_container_created_against_even_after_a_rename() {
        let fake = engine();
        let old = create(&fake, "web", &[]);
        create(&fake, "sidecar", &[("network", "container:web")]);
        block_on(async {
            fake.start("web").await.unwrap();
            fake.rename("web", "web.berth-old").await.unwrap();
            fake.create(&request("web", &[])).await.unwrap();
            fake.start("web").await.unwrap();
            fake.stop("web.berth-old", Duration::ZERO).await.unwrap();
            let err = fake.start("sidecar").await.unwrap_err();
            assert_eq!(
                err,
                RuntimeError::Conflict {
                    message: format!("cannot join network of a non running container: {old}")
                }
            );
        });
    }

    #[test]
    fn starting_with_a_network_container_that_is_not_running_is_a_conflict() {
        let fake = engine();
        let web = create(&fake, "web", &[]);
        create(&fake, "sidecar", &[("network", "container:web")]);
        let err = block_on(fake.start("sidecar")).unwrap_err();
        assert!(matches!(&err, RuntimeError::Conflict { message }
            if *message == format!("cannot join network of a non running container: {web}")));
        let sidecar = fake.container("sidecar").unwrap();
        assert_eq!(sidecar.state.status, Status::Created);
        assert_eq!(
            sidecar.state.error.as_deref(),
            Some(err.to_string().trim_start_matches("conflict: "))
        );
        block_on(fake.start("web")).unwrap();
        block_on(fake.start("sidecar")).expect("starts once web runs");
        assert_eq!(fake.container("sidecar").unwrap().state.error, None);
    }

    #[test]
    fn starting_with_a_removed_network_container_reports_that_container_missing() {
        let fake = engine();
        let web = create(&fake, "web", &[]);
        create(&fake, "sidecar", &[("network", "container:web")]);
        block_on(async {
            fake.remove("web").await.unwrap();
            let err = fake.start("sidecar").await.unwrap_err();
            assert_eq!(
                err,
                RuntimeError::not_found(Missing::Container, web.clone())
            );
            assert_eq!(err.to_string(), format!("container {web} not found"));
            // A new "web" does not help: the sidecar is pinned to the old id.
            fake.create(&request("web", &[])).await.unwrap();
            fake.start("web").await.unwrap();
            assert!(fake
                .start("sidecar")
                .await
                .unwrap_err()
                .is_missing(Missing::Container));
        });
    }

    #[test]
    fn a_network_container_missing_at_create_is_looked_up_by_name_at_start() {
        let fake = engine();
        create(&fake, "sidecar", &[("network", "container:web")]);
        assert_eq!(
            fake.container("sidecar").unwrap().network_mode,
            "container:web"
        );
        block_on(async {
            let err = fake.start("sidecar").await.unwrap_err();
            assert_eq!(err, RuntimeError::not_found(Missing::Container, "web"));
            fake.create(&request("web", &[])).await.unwrap();
            assert!(matches!(
                fake.start("sidecar").await,
                Err(RuntimeError::Conflict { .. })
            ));
            fake.start("web").await.unwrap();
            fake.start("sidecar").await.expect("web runs now");
        });
        assert_eq!(
            fake.container("sidecar").unwrap().network_mode,
            "container:web"
        );
    }

    #[test]
    fn a_missing_user_network_is_accepted_at_create_and_refused_at_start() {
        let fake = engine();
        create(&fake, "web", &[("network", "nosuch")]);
        let err = block_on(fake.start("web")).unwrap_err();
        assert!(err.is_missing(Missing::Network), "{err:?}");
        assert_eq!(err.to_string(), "network \"nosuch\" not found");
        assert_eq!(
            fake.container("web").unwrap().state.error.as_deref(),
            Some("network nosuch not found")
        );
        fake.add_network("nosuch");
        block_on(fake.start("web")).expect("the network exists now");
    }

    #[test]
    fn a_missing_extra_network_is_refused_at_start() {
        let fake = engine();
        fake.add_network("front");
        let mut req = request("web", &[("network", "front")]);
        req.networks = vec![("front".into(), vec![]), ("back".into(), vec!["db".into()])];
        block_on(fake.create(&req)).expect("create connects without checking");
        let err = block_on(fake.start("web")).unwrap_err();
        assert_eq!(err, RuntimeError::not_found(Missing::Network, "back"));
    }

    #[test]
    fn creating_from_a_missing_image_reports_the_image() {
        let fake = FakeRuntime::new();
        let err = block_on(fake.create(&request("web", &[]))).unwrap_err();
        assert_eq!(err, RuntimeError::not_found(Missing::Image, IMAGE));
        assert_eq!(err.to_string(), format!("image {IMAGE} not found"));
    }

    #[test]
    fn pulling_a_missing_image_reports_the_image() {
        let fake = FakeRuntime::new();
        let err = block_on(fake.pull(IMAGE, &|_| {})).unwrap_err();
        assert!(err.is_missing(Missing::Image), "{err:?}");
        let err = block_on(fake.registry_digest(IMAGE)).unwrap_err();
        assert!(err.is_missing(Missing::Image), "{err:?}");
    }

    #[test]
    fn calls_on_a_missing_container_report_the_container() {
        let fake = engine();
        block_on(async {
            assert!(fake.inspect("nosuch").await.unwrap().is_none());
            let errors = [
                fake.start("nosuch").await.unwrap_err(),
                fake.stop("nosuch", Duration::ZERO).await.unwrap_err(),
                fake.kill("nosuch", "SIGKILL").await.unwrap_err(),
                fake.rename("nosuch", "other").await.unwrap_err(),
                fake.remove("nosuch").await.unwrap_err(),
            ];
            for err in errors {
                assert_eq!(err, RuntimeError::not_found(Missing::Container, "nosuch"));
            }
        });
    }

    #[test]
    fn renaming_to_the_current_name_is_refused() {
        let fake = engine();
        let id = create(&fake, "web", &[]);
        for target in ["web", id.as_str()] {
            let err = block_on(fake.rename(target, "web")).unwrap_err();
            assert_eq!(
                err,
                RuntimeError::Refused {
                    status: 400,
                    message: "Renaming a container with the same name as its current name".into()
                }
            );
        }
        assert!(fake.container("web").is_some());
    }

    #[test]
    fn renaming_to_a_name_in_use_is_a_conflict() {
        let fake = engine();
        create(&fake, "web", &[]);
        let db = create(&fake, "db", &[]);
        let err = block_on(fake.rename("web", "db")).unwrap_err();
        match &err {
            RuntimeError::Conflict { message } => {
                assert!(message.starts_with("Error when allocating new name: Conflict."));
                assert!(
                    message.contains(&format!("\"/db\" is already in use by container \"{db}\""))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(fake.container("web").is_some());
    }

    #[test]
    fn creating_under_a_name_in_use_is_a_conflict() {
        let fake = engine();
        create(&fake, "web", &[]);
        let err = block_on(fake.create(&request("web", &[]))).unwrap_err();
        assert!(matches!(err, RuntimeError::Conflict { .. }), "{err:?}");
    }

    #[test]
    fn stopping_a_stopped_container_succeeds() {
        let fake = engine();
        create(&fake, "web", &[]);
        block_on(async {
            fake.stop("web", Duration::ZERO)
                .await
                .expect("never started");
            fake.start("web").await.unwrap();
            fake.stop("web", Duration::ZERO).await.unwrap();
            fake.stop("web", Duration::ZERO)
                .await
                .expect("already stopped");
        });
        assert_eq!(fake.container("web").unwrap().state.status, Status::Exited);
    }
}
