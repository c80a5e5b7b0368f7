//! An in-memory engine for fast tests of the planner and executor.
//!
//! It takes the very create body the Docker implementation would send
//! ([`super::docker::create_body`]) and applies the engine's rules to it
//! (image defaults merged in, swap defaulting to twice the memory, anonymous
//! volumes for image `VOLUME`s), so what it reports back is what a real
//! engine would. It records every call and can fail one on demand, and it
//! delivers the engine events a test emits (it makes up none itself, so a
//! test decides exactly what the agent hears).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;

use super::docker::{create_body, raw_devices, raw_health};
use super::{
    ContainerDetails, ContainerState, CreateRequest, EngineInfo, Event, EventStream, ImageDetails,
    PullProgress, RawHealthcheck, RawMount, RawPortBinding, Result, Runtime, RuntimeError, Status,
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
}

#[derive(Default)]
struct State {
    containers: Vec<ContainerDetails>,
    images: BTreeMap<String, ImageDetails>,
    registry: BTreeMap<String, ImageDetails>,
    networks: Vec<String>,
    calls: Vec<Call>,
    failures: HashMap<Call, RuntimeError>,
    next_id: u64,
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
    /// An empty engine with the default networks.
    pub fn new() -> Self {
        let fake = Self::default();
        fake.lock().networks = vec!["bridge".into(), "host".into(), "none".into()];
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
        state.calls.push(call);
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
            None => Err(RuntimeError::NotFound {
                what: format!("container {id}"),
            }),
        }
    }
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

impl Runtime for FakeRuntime {
    async fn info(&self) -> Result<EngineInfo> {
        Ok(EngineInfo {
            version: "fake".into(),
            api_version: "1.41".into(),
        })
    }

    async fn list(&self) -> Result<Vec<ContainerDetails>> {
        Ok(self.lock().containers.clone())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerDetails>> {
        Ok(self
            .lock()
            .containers
            .iter()
            .find(|c| c.id == id || c.name == id)
            .cloned())
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageDetails>> {
        Ok(self.lock().images.get(reference).cloned())
    }

    async fn registry_digest(&self, reference: &str) -> Result<String> {
        self.lock()
            .registry
            .get(reference)
            .and_then(|i| i.repo_digests.first())
            .and_then(|d| d.split_once('@').map(|(_, d)| d.to_string()))
            .ok_or_else(|| RuntimeError::NotFound {
                what: format!("image {reference} in its registry"),
            })
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
            None => Err(RuntimeError::NotFound {
                what: format!("image {reference}"),
            }),
        }
    }

    async fn create(&self, request: &CreateRequest) -> Result<String> {
        self.record(Call::Create(request.name.clone()))?;
        let body = create_body(request);
        let mut state = self.lock();
        let reference = body.image.clone().unwrap_or_default();
        let Some(image) = state.images.get(&reference).cloned() else {
            return Err(RuntimeError::NotFound {
                what: format!("image {reference}"),
            });
        };
        if state.containers.iter().any(|c| c.name == request.name) {
            return Err(RuntimeError::Conflict {
                message: format!("the name {} is already in use", request.name),
            });
        }
        state.next_id += 1;
        let id = format!("{:064x}", state.next_id);
        let host = body.host_config.clone().unwrap_or_default();

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
            ips: BTreeMap::from([(
                "bridge".to_string(),
                format!("172.17.0.{}", state.next_id % 250 + 2),
            )]),
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
        self.with_container(id, |c| {
            // A label lets a test build an image-less "crashing" container.
            match c.labels.get(EXIT_LABEL).and_then(|v| v.parse().ok()) {
                Some(code) => {
                    c.state.status = Status::Exited;
                    c.state.exit_code = code;
                }
                None => c.state.status = Status::Running,
            }
            c.state.started_at = Some("2026-11-24T00:00:01Z".into());
            Ok(())
        })
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
        if self.lock().containers.iter().any(|c| c.name == new_name) {
            return Err(RuntimeError::Conflict {
                message: format!("the name {new_name} is already in use"),
            });
        }
        self.with_container(id, |c| {
            c.name = new_name.to_string();
            Ok(())
        })
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.record(Call::Remove(id.to_string()))?;
        let mut state = self.lock();
        let before = state.containers.len();
        state.containers.retain(|c| c.id != id && c.name != id);
        if state.containers.len() == before {
            return Err(RuntimeError::NotFound {
                what: format!("container {id}"),
            });
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
