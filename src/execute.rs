//! Runs a plan: download first, then a per-container rollout with a
//! readiness gate, automatic rollback, and a journal that lets the next start
//! undo whatever a crash interrupted.
//!
//! # Guarantees
//! - Nothing running is touched until every image is present and every new
//!   container has been created (under a temporary name).
//! - After the first destructive step, any failure restores the old
//!   containers under their names, running if they were, with their data.
//! - Volumes are never removed; a recreated container inherits the old one's
//!   anonymous volumes and user networks (with their aliases).
//!
//! Names during an activity: the new container is created as
//! `<name>.berth-new`, the old one is renamed `<name>.berth-old` before the
//! new one takes the name. Recovery reads those names and the journal.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::feedback::{ActionStatus, Feedback, Status, Tracker};
use crate::journal::{Journal, StateDir, StateError};
use crate::labels;
use crate::observe::{Observed, ObservedContainer};
use crate::plan::{Action, Plan, PlanEntry};
use crate::runtime::{self, CreateRequest, Health, Runtime, RuntimeError};
use crate::spec::model::{
    ContainerSpec, DesiredState, HealthTest, HostTarget, PullPolicy, UpdateStrategy,
};

/// Suffix of a new container before it takes its name.
pub const NEW_SUFFIX: &str = ".berth-new";
/// Suffix of an old container kept for rollback.
pub const OLD_SUFFIX: &str = ".berth-old";
/// The engine's default grace period between stop signal and kill.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the readiness gate looks at a container.
const POLL: Duration = Duration::from_millis(200);

/// How much of an activity a failure undoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RollbackMode {
    /// Every container of the activity goes back (the default).
    #[default]
    Activity,
    /// Only the container that failed goes back; the others keep their new version.
    Container,
}

/// How a prepared container is set going.
#[derive(Debug, Clone)]
enum Launch {
    Start(String),
    Unpause(String),
}

impl Launch {
    fn id(&self) -> &str {
        match self {
            Launch::Start(id) | Launch::Unpause(id) => id,
        }
    }
}

/// A point where a test can make berth wait, to kill it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PausePoint {
    /// After the old containers are stopped and renamed.
    Updating,
    /// After the first new container took its name and started.
    Activating,
}

/// Limits and choices for one activity.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// Pulls (and creates) at once.
    pub parallel: usize,
    /// Longest time one image may take to pull.
    pub pull_timeout: Duration,
    /// Stop grace period for containers whose document sets none.
    pub stop_timeout: Duration,
    /// Time a container without a health check must keep running.
    pub min_ready: Duration,
    /// Added to a health check's own worst case before giving up on it.
    pub ready_margin: Duration,
    /// Longest time the whole activity may take; past it, the current step
    /// fails and the activity rolls back.
    pub activity_timeout: Duration,
    /// What a failure undoes.
    pub rollback: RollbackMode,
    /// Test hook: wait here (for an hour) so a test can kill berth.
    pub pause_at: Option<PausePoint>,
    /// This berth's instance name, recorded on every container it creates.
    pub instance: String,
}

impl Default for ExecuteOptions {
    fn default() -> Self {
        Self {
            parallel: 4,
            pull_timeout: Duration::from_secs(600),
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            min_ready: Duration::from_secs(2),
            ready_margin: Duration::from_secs(10),
            activity_timeout: Duration::from_secs(1800),
            rollback: RollbackMode::Activity,
            pause_at: None,
            instance: labels::DEFAULT_INSTANCE.to_string(),
        }
    }
}

/// How an activity ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `COMPLETED` or `INCOMPLETE`.
    pub status: Status,
    /// What went wrong, in words.
    pub message: Option<String>,
}

/// Sends feedback messages as the activity goes.
pub trait Sink {
    /// One message.
    fn send(&mut self, feedback: Feedback);
}

impl<F: FnMut(Feedback)> Sink for F {
    fn send(&mut self, feedback: Feedback) {
        self(feedback)
    }
}

/// What was done to one container, so it can be undone.
#[derive(Debug, Clone)]
struct Step<'a> {
    entry: &'a PlanEntry,
    spec: Option<&'a ContainerSpec>,
    old: Option<&'a ObservedContainer>,
    new_id: Option<String>,
    old_stopped: bool,
    old_renamed: bool,
    new_named: bool,
    updated: bool,
    started: bool,
    done: bool,
}

impl Step<'_> {
    fn name(&self) -> &str {
        &self.entry.id
    }

    fn old_running(&self) -> bool {
        self.old.is_some_and(|o| {
            matches!(
                o.details.state.status,
                runtime::Status::Running | runtime::Status::Restarting
            )
        })
    }
}

struct Run<'a, R: Runtime> {
    rt: &'a R,
    state: &'a StateDir,
    options: &'a ExecuteOptions,
    tracker: &'a mut Tracker,
    sink: &'a mut dyn Sink,
    journal: Journal,
    deadline: Instant,
}

/// What an activity is about: the document, its plan, and the engine
/// snapshot the plan was computed from.
#[derive(Debug, Clone, Copy)]
pub struct Activity<'a> {
    /// The accepted document.
    pub desired: &'a DesiredState,
    /// The plan for it.
    pub plan: &'a Plan,
    /// What the engine looked like when planning.
    pub observed: &'a Observed,
}

/// Carries out a plan. The plan must have been computed from `observed`.
///
/// # Errors
/// Only state-directory failures before anything was touched; everything
/// else ends as an [`Outcome`] with feedback.
pub async fn execute<R: Runtime>(
    rt: &R,
    state: &StateDir,
    activity: Activity<'_>,
    options: &ExecuteOptions,
    tracker: &mut Tracker,
    sink: &mut dyn Sink,
) -> Result<Outcome, StateError> {
    let Activity {
        desired,
        plan,
        observed,
    } = activity;
    let mut steps: Vec<Step> = plan
        .actions
        .iter()
        .filter(|e| e.action.changes())
        .map(|entry| Step {
            entry,
            spec: desired.container(&entry.id),
            old: observed.container(&entry.id),
            new_id: None,
            old_stopped: false,
            old_renamed: false,
            new_named: false,
            updated: false,
            started: false,
            done: false,
        })
        .collect();
    let mut journal = Journal {
        activity_id: desired.activity_id.clone(),
        phase: "downloading".into(),
        entries: Vec::new(),
    };
    for step in &steps {
        let e = journal.entry(step.name());
        e.old_id = step.old.map(|o| o.details.id.clone());
        e.old_running = step.old_running();
    }
    state.write_journal(&journal)?;
    let mut run = Run {
        rt,
        state,
        options,
        tracker,
        sink,
        journal,
        deadline: Instant::now() + options.activity_timeout,
    };
    let outcome = run.go(&mut steps, observed).await;
    run.state.clear_journal()?;
    run.emit(outcome.status, outcome.message.clone());
    Ok(outcome)
}

fn failed(message: String) -> Outcome {
    Outcome {
        status: Status::Incomplete,
        message: Some(message),
    }
}

impl<R: Runtime> Run<'_, R> {
    fn emit(&mut self, status: Status, message: Option<String>) {
        let m = self.tracker.message(status, message);
        self.sink.send(m);
    }

    fn set(&mut self, name: &str, status: ActionStatus, message: impl Into<String>) {
        self.tracker.set(name, status, message);
    }

    fn journal(&mut self) -> Result<(), String> {
        self.state
            .write_journal(&self.journal)
            .map_err(|e| format!("cannot write the journal: {e}"))
    }

    fn check_deadline(&self) -> Result<(), String> {
        if Instant::now() > self.deadline {
            Err(format!(
                "the activity took longer than {}",
                humantime::format_duration(self.options.activity_timeout)
            ))
        } else {
            Ok(())
        }
    }

    async fn go<'s>(&mut self, steps: &mut [Step<'s>], observed: &Observed) -> Outcome {
        // DOWNLOADING: images, then new containers under temporary names.
        self.emit(Status::Downloading, None);
        if let Err(message) = self.download(steps).await {
            self.discard_new(steps).await;
            self.emit(Status::DownloadFailure, Some(message.clone()));
            return failed(message);
        }
        if let Err(message) = self.create_all(steps, observed).await {
            self.discard_new(steps).await;
            self.emit(Status::DownloadFailure, Some(message.clone()));
            return failed(message);
        }
        self.emit(Status::DownloadSuccess, None);

        // UPDATING: old containers out of the way, in-place changes.
        self.journal.phase = "updating".into();
        let updating = async {
            self.journal()?;
            self.emit(Status::Updating, None);
            self.check_deadline()?;
            self.update_all(steps).await?;
            if self.options.pause_at == Some(PausePoint::Updating) {
                pause("updating").await;
            }
            Ok::<(), String>(())
        };
        if let Err(message) = updating.await {
            self.emit(Status::UpdateFailure, Some(message.clone()));
            return self.roll_back(steps, message).await;
        }
        self.emit(Status::UpdateSuccess, None);

        // ACTIVATING: new containers take their names and must prove ready.
        self.journal.phase = "activating".into();
        if let Err(message) = self.journal() {
            return self.roll_back(steps, message).await;
        }
        self.emit(Status::Activating, None);
        let mut failures = Vec::new();
        let mut first = true;
        for wave in waves(steps) {
            // Name the wave's containers one by one (cheap), start them and
            // let them prove ready at the same time, then record in order.
            let mut failed_now: Vec<(usize, String)> = Vec::new();
            let mut gating = Vec::new();
            for &i in &wave {
                let prepared = match self.check_deadline() {
                    Ok(()) => self.prepare(&mut steps[i]).await,
                    Err(e) => Err(e),
                };
                match prepared {
                    Ok(Some(launch)) => {
                        steps[i].started = true;
                        gating.push((i, launch, steps[i].spec));
                    }
                    Ok(None) => {}
                    Err(message) => failed_now.push((i, message)),
                }
            }
            let (rt, options) = (self.rt, self.options);
            let gated: Vec<(usize, Result<(), String>)> = futures_util::stream::iter(gating)
                .map(|(i, launch, spec)| async move {
                    let started = match &launch {
                        Launch::Start(id) => rt.start(id).await,
                        Launch::Unpause(id) => rt.unpause(id).await,
                    };
                    let result = match started {
                        Ok(()) => gate(rt, options, launch.id(), spec).await,
                        Err(e) => Err(format!("cannot start: {e}")),
                    };
                    (i, result)
                })
                .buffer_unordered(options.parallel.max(1))
                .collect()
                .await;
            if first && !gated.is_empty() && self.options.pause_at == Some(PausePoint::Activating) {
                pause("activating").await;
            }
            first = false;
            for (i, result) in gated {
                let result = match result {
                    Ok(()) => self.finish(&mut steps[i]).await,
                    Err(e) => Err(e),
                };
                if let Err(message) = result {
                    failed_now.push((i, message));
                }
            }
            failed_now.sort();
            for (i, message) in failed_now {
                let name = steps[i].name().to_string();
                self.set(&name, ActionStatus::ActivationFailure, message.clone());
                self.emit(
                    Status::ActivationFailure,
                    Some(format!("{name}: {message}")),
                );
                match self.options.rollback {
                    RollbackMode::Activity => {
                        return self.roll_back(steps, format!("{name}: {message}")).await;
                    }
                    RollbackMode::Container => {
                        self.emit(Status::Rollback, Some(format!("rolling back {name}")));
                        if let Err(e) = self.undo(&mut steps[i]).await {
                            self.emit(Status::RollbackFailure, Some(e.clone()));
                            failures.push(format!("{name}: {message}; rollback failed: {e}"));
                        } else {
                            self.emit(Status::RollbackSuccess, None);
                            failures.push(format!("{name}: {message} (rolled back)"));
                        }
                    }
                }
            }
        }
        if failures.is_empty() {
            self.emit(Status::ActivationSuccess, None);
        }

        // CLEANUP: old containers and removals go; volumes stay.
        self.journal.phase = "cleanup".into();
        self.emit(Status::Cleanup, None);
        let mut cleanup_errors = Vec::new();
        for step in steps.iter() {
            if let Err(e) = self.cleanup_step(step).await {
                cleanup_errors.push(e);
            }
        }
        if cleanup_errors.is_empty() {
            self.emit(Status::CleanupSuccess, None);
        } else {
            self.emit(Status::CleanupFailure, Some(cleanup_errors.join("; ")));
        }
        if failures.is_empty() && cleanup_errors.is_empty() {
            Outcome {
                status: Status::Completed,
                message: None,
            }
        } else {
            failed(
                failures
                    .into_iter()
                    .chain(cleanup_errors)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        }
    }

    async fn download(&mut self, steps: &[Step<'_>]) -> Result<(), String> {
        // One pull per image, reported on every container that needs it.
        let mut wanted: BTreeMap<String, (PullPolicy, Vec<String>)> = BTreeMap::new();
        for step in steps {
            let (Some(spec), Action::Create | Action::Recreate) = (step.spec, step.entry.action)
            else {
                continue;
            };
            let entry = wanted
                .entry(spec.config.image.to_string())
                .or_insert((spec.rollout.pull_policy, Vec::new()));
            if spec.rollout.pull_policy == PullPolicy::Always {
                entry.0 = PullPolicy::Always;
            }
            entry.1.push(spec.name.clone());
        }
        let mut to_pull = Vec::new();
        for (image, (policy, names)) in wanted {
            let present = self
                .rt
                .image(&image)
                .await
                .map_err(|e| format!("cannot inspect image {image}: {e}"))?
                .is_some();
            match (policy, present) {
                (PullPolicy::Never, false) => {
                    for n in &names {
                        self.set(n, ActionStatus::DownloadFailure, format!("image {image} is not present and pullPolicy is never; nothing was changed"));
                    }
                    return Err(format!(
                        "image {image} is not present and pullPolicy is never; nothing was changed"
                    ));
                }
                (PullPolicy::Missing, true) | (PullPolicy::Never, true) => {
                    for n in &names {
                        self.set(
                            n,
                            ActionStatus::DownloadSuccess,
                            format!("image {image} is already present"),
                        );
                    }
                }
                _ => to_pull.push((image, names, present)),
            }
        }
        if to_pull.is_empty() {
            return Ok(());
        }
        for (_, names, _) in &to_pull {
            for n in names {
                self.tracker.progress(n, 0);
            }
        }
        self.emit(Status::Downloading, None);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u8)>();
        let rt = self.rt;
        let timeout = self.options.pull_timeout;
        let pulls = futures_util::stream::iter(to_pull.iter().enumerate())
            .map(move |(i, (image, _, _))| {
                let tx = tx.clone();
                async move {
                    let progress = move |p: runtime::PullProgress| {
                        let _ = tx.send((i, p.percent()));
                    };
                    let result =
                        match tokio::time::timeout(timeout, rt.pull(image, &progress)).await {
                            Ok(r) => r.map_err(|e| pull_error(image, &e)),
                            Err(_) => Err(format!(
                                "pulling image {image} took longer than {}; nothing was changed",
                                humantime::format_duration(timeout)
                            )),
                        };
                    (i, result)
                }
            })
            .buffer_unordered(self.options.parallel.max(1));
        tokio::pin!(pulls);
        let mut last: BTreeMap<usize, u8> = BTreeMap::new();
        let mut results: Vec<(usize, Result<(), String>)> = Vec::new();
        let mut progress_open = true;
        loop {
            tokio::select! {
                Some(done) = pulls.next() => results.push(done),
                update = rx.recv(), if progress_open => match update {
                    Some((i, percent)) => {
                        let previous = last.get(&i).copied().unwrap_or(0);
                        if percent >= previous.saturating_add(10) || (percent == 100 && previous < 100) {
                            last.insert(i, percent);
                            for n in &to_pull[i].1 {
                                self.tracker.progress(n, percent);
                            }
                            self.emit(Status::Downloading, None);
                        }
                    }
                    None => progress_open = false,
                },
                else => break,
            }
            if results.len() == to_pull.len() {
                break;
            }
        }
        // Progress sent just before a pull finished still counts.
        while let Ok((i, percent)) = rx.try_recv() {
            if last.get(&i).copied().unwrap_or(0) < percent {
                last.insert(i, percent);
                for n in &to_pull[i].1 {
                    self.tracker.progress(n, percent);
                }
            }
        }
        if !last.is_empty() {
            self.emit(Status::Downloading, None);
        }
        let mut errors = Vec::new();
        for (i, result) in results {
            let (image, names, present) = &to_pull[i];
            match result {
                Ok(()) => {
                    for n in names {
                        self.set(
                            n,
                            ActionStatus::DownloadSuccess,
                            format!("image {image} downloaded"),
                        );
                    }
                }
                // `always` with the image at hand: a registry outage is no
                // reason to stop the device from converging.
                Err(e) if *present => {
                    tracing::warn!(image = %image, error = %e, "pull failed; using the local image");
                    for n in names {
                        self.set(
                            n,
                            ActionStatus::DownloadSuccess,
                            format!("registry unavailable ({e}); using the local image {image}"),
                        );
                    }
                }
                Err(e) => {
                    for n in names {
                        self.set(n, ActionStatus::DownloadFailure, e.clone());
                    }
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    async fn create_all<'s>(
        &mut self,
        steps: &mut [Step<'s>],
        observed: &Observed,
    ) -> Result<(), String> {
        // Requests are prepared one by one (cheap), created at once.
        let mut requests = Vec::new();
        let mut image_ids: BTreeMap<String, Option<String>> = BTreeMap::new();
        for (i, step) in steps.iter().enumerate() {
            let (Some(spec), Action::Create | Action::Recreate) = (step.spec, step.entry.action)
            else {
                continue;
            };
            let temp = format!("{}{NEW_SUFFIX}", spec.name);
            // A leftover from an interrupted activity would block the name.
            if let Some(stale) = observed.container(&temp) {
                self.rt
                    .remove(&stale.details.id)
                    .await
                    .map_err(|e| format!("cannot remove the leftover {temp}: {e}"))?;
            }
            // Containers sharing an image inspect it once.
            let reference = spec.config.image.to_string();
            let image_id = match image_ids.get(&reference) {
                Some(id) => id.clone(),
                None => {
                    let id = self
                        .rt
                        .image(&reference)
                        .await
                        .map_err(|e| format!("cannot inspect image {reference}: {e}"))?
                        .map(|i| i.id);
                    image_ids.insert(reference, id.clone());
                    id
                }
            };
            requests.push((
                i,
                CreateRequest {
                    name: temp,
                    config: spec.config.clone(),
                    labels: labels::for_spec(spec, image_id.as_deref(), &self.options.instance),
                    extra_hosts: self.resolve_hosts(spec, observed).await?,
                    inherited_volumes: inherited_volumes(spec, step.old),
                    networks: inherited_networks(step.old),
                },
            ));
        }
        let rt = self.rt;
        let mut created: Vec<(usize, runtime::Result<String>)> =
            futures_util::stream::iter(requests)
                .map(|(i, request)| async move { (i, rt.create(&request).await) })
                .buffer_unordered(self.options.parallel.max(1))
                .collect()
                .await;
        created.sort_by_key(|(i, _)| *i);
        let mut errors = Vec::new();
        for (i, result) in created {
            let name = steps[i].name().to_string();
            match result {
                Ok(id) => {
                    steps[i].new_id = Some(id.clone());
                    self.journal.entry(&name).new_id = Some(id);
                    self.set(
                        &name,
                        ActionStatus::DownloadSuccess,
                        "New container created.",
                    );
                }
                Err(e) => {
                    let message = format!("cannot create {name}: {e}; nothing was changed");
                    self.set(&name, ActionStatus::DownloadFailure, message.clone());
                    errors.push(message);
                }
            }
        }
        self.journal()?;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// `container_<hostname>` and `host_ip_<iface>` targets become addresses.
    async fn resolve_hosts(
        &self,
        spec: &ContainerSpec,
        observed: &Observed,
    ) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for h in &spec.config.extra_hosts {
            let target = match &h.target {
                HostTarget::Ip(ip) => ip.to_string(),
                HostTarget::HostGateway => "host-gateway".to_string(),
                HostTarget::HostInterface(iface) => interface_address(iface).await?,
                HostTarget::Container(hostname) => observed
                    .containers
                    .iter()
                    .find(|c| c.details.hostname == *hostname || c.details.name == *hostname)
                    .and_then(|c| c.details.ips.values().next().cloned())
                    .ok_or_else(|| {
                        format!("host {h}: no running container has host name {hostname}")
                    })?,
            };
            out.push(format!("{}:{target}", h.name));
        }
        Ok(out)
    }

    /// In-place updates, then every old container that must go stopped at
    /// once (bounded), then the renames that keep them for rollback.
    async fn update_all(&mut self, steps: &mut [Step<'_>]) -> Result<(), String> {
        let mut stops = Vec::new();
        for (i, step) in steps.iter_mut().enumerate() {
            let name = step.name().to_string();
            match (step.entry.action, step.old, step.spec) {
                (Action::Update, Some(old), Some(spec)) => {
                    self.set(
                        &name,
                        ActionStatus::Updating,
                        "Updating restart policy and resources in place.",
                    );
                    self.emit(Status::Updating, None);
                    self.rt
                        .update(&old.details.id, &spec.config)
                        .await
                        .map_err(|e| format!("{name}: in-place update failed: {e}"))?;
                    step.updated = true;
                    self.set(
                        &name,
                        ActionStatus::UpdateSuccess,
                        "Container instance is updated with new configuration.",
                    );
                }
                (Action::Recreate, Some(old), _) if !start_first(step) => {
                    self.set(&name, ActionStatus::Updating, "Stopping the old container.");
                    stops.push((i, old.details.id.clone(), self.stop_timeout(step.spec)));
                }
                (Action::Remove, Some(old), _) => {
                    self.set(&name, ActionStatus::Removing, "Stopping the container.");
                    stops.push((i, old.details.id.clone(), self.stop_timeout(None)));
                }
                _ => {}
            }
        }
        if stops.is_empty() {
            return Ok(());
        }
        self.emit(Status::Updating, None);
        let rt = self.rt;
        let mut stopped: Vec<(usize, runtime::Result<()>)> = futures_util::stream::iter(stops)
            .map(|(i, id, timeout)| async move { (i, rt.stop(&id, timeout).await) })
            .buffer_unordered(self.options.parallel.max(1))
            .collect()
            .await;
        stopped.sort_by_key(|(i, _)| *i);
        let mut errors = Vec::new();
        for (i, result) in stopped {
            let step = &mut steps[i];
            let name = step.name().to_string();
            match result {
                Ok(()) => step.old_stopped = true,
                Err(e) => {
                    errors.push(format!("{name}: cannot stop the old container: {e}"));
                    continue;
                }
            }
            if step.entry.action == Action::Recreate {
                let Some(old) = step.old else { continue };
                self.rt
                    .rename(&old.details.id, &format!("{name}{OLD_SUFFIX}"))
                    .await
                    .map_err(|e| format!("{name}: cannot rename the old container: {e}"))?;
                step.old_renamed = true;
                self.set(
                    &name,
                    ActionStatus::UpdateSuccess,
                    "Old container instance is stopped.",
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    fn stop_timeout(&self, spec: Option<&ContainerSpec>) -> Duration {
        spec.and_then(|s| s.config.stop_timeout)
            .unwrap_or(self.options.stop_timeout)
    }

    /// Stops the old container and renames it out of the way.
    async fn retire_old(&mut self, step: &mut Step<'_>) -> Result<(), String> {
        let Some(old) = step.old else { return Ok(()) };
        let name = step.name().to_string();
        self.rt
            .stop(&old.details.id, self.stop_timeout(step.spec))
            .await
            .map_err(|e| format!("{name}: cannot stop the old container: {e}"))?;
        step.old_stopped = true;
        self.rt
            .rename(&old.details.id, &format!("{name}{OLD_SUFFIX}"))
            .await
            .map_err(|e| format!("{name}: cannot rename the old container: {e}"))?;
        step.old_renamed = true;
        Ok(())
    }

    /// Puts a container in place; returns how to start it, when its
    /// readiness is to be proven.
    async fn prepare(&mut self, step: &mut Step<'_>) -> Result<Option<Launch>, String> {
        let name = step.name().to_string();
        match step.entry.action {
            Action::Create | Action::Recreate => {
                let Some(id) = step.new_id.clone() else {
                    return Ok(None);
                };
                self.set(
                    &name,
                    ActionStatus::Activating,
                    "Starting the new container.",
                );
                self.emit(Status::Activating, None);
                // start-first: the new one starts under its temporary name
                // while the old one keeps serving until the new one is ready.
                if !start_first(step) {
                    self.rt
                        .rename(&id, &name)
                        .await
                        .map_err(|e| format!("cannot rename the new container: {e}"))?;
                    step.new_named = true;
                }
                Ok(Some(Launch::Start(id)))
            }
            Action::Start => {
                let Some(old) = step.old else { return Ok(None) };
                self.set(&name, ActionStatus::Activating, "Starting the container.");
                self.emit(Status::Activating, None);
                let id = old.details.id.clone();
                Ok(Some(
                    if old.details.state.status == runtime::Status::Paused {
                        Launch::Unpause(id)
                    } else {
                        Launch::Start(id)
                    },
                ))
            }
            Action::Update => {
                self.set(
                    &name,
                    ActionStatus::ActivationSuccess,
                    "Container instance is updated with new configuration.",
                );
                step.done = true;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Completes a container that passed its gate.
    async fn finish(&mut self, step: &mut Step<'_>) -> Result<(), String> {
        let name = step.name().to_string();
        match step.entry.action {
            Action::Create | Action::Recreate => {
                if let (true, Some(id)) = (start_first(step), step.new_id.clone()) {
                    self.retire_old(step).await?;
                    self.rt
                        .rename(&id, &name)
                        .await
                        .map_err(|e| format!("cannot rename the new container: {e}"))?;
                    step.new_named = true;
                }
                self.journal.entry(&name).activated = true;
                self.journal()?;
                self.set(
                    &name,
                    ActionStatus::ActivationSuccess,
                    "New container instance is started.",
                );
            }
            Action::Start => {
                self.set(
                    &name,
                    ActionStatus::ActivationSuccess,
                    "Existing container instance is running.",
                );
            }
            _ => {}
        }
        step.done = true;
        Ok(())
    }

    async fn cleanup_step(&mut self, step: &Step<'_>) -> Result<(), String> {
        let name = step.name().to_string();
        match step.entry.action {
            Action::Recreate if step.done && step.old_renamed => {
                if let Some(old) = step.old {
                    self.rt
                        .remove(&old.details.id)
                        .await
                        .map_err(|e| format!("{name}: cannot remove the old container: {e}"))?;
                }
            }
            Action::Remove if step.old_stopped => {
                if let Some(old) = step.old {
                    match self.rt.remove(&old.details.id).await {
                        Ok(()) => self.set(
                            &name,
                            ActionStatus::RemovalSuccess,
                            "Old container instance is removed.",
                        ),
                        Err(e) => {
                            let message = format!("cannot remove: {e}");
                            self.set(&name, ActionStatus::RemovalFailure, message.clone());
                            return Err(format!("{name}: {message}"));
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn discard_new(&mut self, steps: &mut [Step<'_>]) {
        for step in steps.iter_mut() {
            if let Some(id) = step.new_id.take() {
                if let Err(e) = self.rt.remove(&id).await {
                    tracing::warn!(container = %step.name(), error = %e, "cannot remove a temporary container");
                }
            }
        }
    }

    async fn roll_back(&mut self, steps: &mut [Step<'_>], cause: String) -> Outcome {
        self.emit(Status::Rollback, Some(cause.clone()));
        let mut errors = Vec::new();
        for step in steps.iter_mut().rev() {
            if let Err(e) = self.undo(step).await {
                errors.push(format!("{}: {e}", step.name()));
            }
        }
        if errors.is_empty() {
            self.emit(
                Status::RollbackSuccess,
                Some(format!("{cause}; the previous containers are restored")),
            );
            failed(format!(
                "{cause}; rolled back, the previous containers run again"
            ))
        } else {
            let left = errors.join("; ");
            self.emit(Status::RollbackFailure, Some(left.clone()));
            failed(format!("{cause}; rollback failed: {left}"))
        }
    }

    /// Puts one container back as it was before the activity.
    async fn undo(&mut self, step: &mut Step<'_>) -> Result<(), String> {
        let name = step.name().to_string();
        if let Some(id) = step.new_id.take() {
            let _ = self.rt.stop(&id, Duration::from_secs(5)).await;
            self.rt
                .remove(&id)
                .await
                .map_err(|e| format!("cannot remove the new container: {e}"))?;
        }
        let Some(old) = step.old else { return Ok(()) };
        if step.old_renamed {
            self.rt
                .rename(&old.details.id, &name)
                .await
                .map_err(|e| format!("cannot rename the old container back: {e}"))?;
            step.old_renamed = false;
        }
        if step.updated {
            self.rt
                .update(&old.details.id, &old.config)
                .await
                .map_err(|e| format!("cannot revert the in-place update: {e}"))?;
            step.updated = false;
        }
        let was_running = step.old_running();
        if step.entry.action == Action::Start && step.started && !was_running {
            let _ = self
                .rt
                .stop(&old.details.id, self.stop_timeout(step.spec))
                .await;
        }
        if step.old_stopped && was_running {
            self.rt
                .start(&old.details.id)
                .await
                .map_err(|e| format!("cannot restart the old container: {e}"))?;
            step.old_stopped = false;
        }
        let status = match step.entry.action {
            Action::Update => ActionStatus::UpdateFailure,
            Action::Remove => ActionStatus::RemovalFailure,
            _ => ActionStatus::ActivationFailure,
        };
        let message = match step.entry.action {
            Action::Create => "Rolled back: the new container was removed.".to_string(),
            Action::Remove => "Rolled back: the container runs again.".to_string(),
            _ => "Rolled back: the previous container instance is restored.".to_string(),
        };
        if self.tracker.status_of(&name) != Some(ActionStatus::ActivationFailure) {
            self.set(&name, status, message);
        }
        Ok(())
    }
}

/// The readiness gate: healthy within the health check's own worst case
/// (plus a margin) when the container has one; otherwise running, without
/// restarts, for `min_ready`.
async fn gate<R: Runtime>(
    rt: &R,
    options: &ExecuteOptions,
    id: &str,
    spec: Option<&ContainerSpec>,
) -> Result<(), String> {
    let details = rt
        .inspect(id)
        .await
        .map_err(|e| format!("cannot inspect: {e}"))?
        .ok_or("the container disappeared")?;
    let check = details
        .healthcheck
        .as_ref()
        .filter(|h| !h.test.is_empty() && h.test.first().map(String::as_str) != Some("NONE"));
    let disabled = spec.is_some_and(|s| s.config.health.test == Some(HealthTest::Disabled));
    let restarts = details.state.restart_count;
    match check {
        Some(h) if !disabled => {
            let ns = |v: i64, default: Duration| {
                u64::try_from(v)
                    .ok()
                    .filter(|v| *v > 0)
                    .map_or(default, Duration::from_nanos)
            };
            let interval = ns(h.interval_ns, Duration::from_secs(30));
            let start = ns(h.start_period_ns, Duration::ZERO);
            let retries = u32::try_from(h.retries)
                .ok()
                .filter(|r| *r > 0)
                .unwrap_or(3);
            let within = start + interval * retries + options.ready_margin;
            let deadline = Instant::now() + within;
            loop {
                let d = rt
                    .inspect(id)
                    .await
                    .map_err(|e| format!("cannot inspect: {e}"))?
                    .ok_or("the container disappeared")?;
                if d.state.status != runtime::Status::Running
                    && d.state.status != runtime::Status::Restarting
                {
                    return Err(format!(
                        "exited with code {} before becoming healthy",
                        d.state.exit_code
                    ));
                }
                match d.state.health {
                    Some(Health::Healthy) => return Ok(()),
                    Some(Health::Unhealthy) => return Err("became unhealthy".into()),
                    _ => {}
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "not healthy within {}",
                        humantime::format_duration(within)
                    ));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        _ => {
            let deadline = Instant::now() + options.min_ready;
            loop {
                let d = rt
                    .inspect(id)
                    .await
                    .map_err(|e| format!("cannot inspect: {e}"))?
                    .ok_or("the container disappeared")?;
                if d.state.status != runtime::Status::Running {
                    return Err(format!(
                        "exited with code {} within {} of starting",
                        d.state.exit_code,
                        humantime::format_duration(options.min_ready)
                    ));
                }
                if d.state.restart_count > restarts {
                    return Err("restarted while it had to prove it stays up".into());
                }
                if Instant::now() >= deadline {
                    return Ok(());
                }
                tokio::time::sleep(POLL.min(options.min_ready)).await;
            }
        }
    }
}

/// Container indices grouped so every container comes after the ones it
/// depends on (`dependsOn`, `container:` networks); a group runs at once.
fn waves(steps: &[Step<'_>]) -> Vec<Vec<usize>> {
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out: Vec<Vec<usize>> = Vec::new();
    // Steps come in plan order, dependencies first.
    for (i, step) in steps.iter().enumerate() {
        let deps = step.spec.into_iter().flat_map(|s| {
            let parent = match &s.config.network {
                crate::spec::model::NetworkMode::Container(p) => Some(p),
                _ => None,
            };
            s.rollout.depends_on.iter().chain(parent)
        });
        let l = deps
            .filter_map(|d| level.get(d.as_str()))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        level.insert(step.name(), l);
        if out.len() <= l {
            out.resize_with(l + 1, Vec::new);
        }
        out[l].push(i);
    }
    out
}

/// Whether a recreate starts the new container before stopping the old:
/// only when asked and when they do not both bind the same host port.
fn start_first(step: &Step<'_>) -> bool {
    let (Some(spec), Some(old)) = (step.spec, step.old) else {
        return false;
    };
    spec.rollout.update_strategy == UpdateStrategy::StartFirst
        && step.entry.action == Action::Recreate
        && !spec
            .config
            .ports
            .iter()
            .any(|p| old.config.ports.iter().any(|o| o.conflicts_with(p)))
}

/// The old container's anonymous volumes that no desired mount covers.
fn inherited_volumes(
    spec: &ContainerSpec,
    old: Option<&ObservedContainer>,
) -> Vec<(String, String)> {
    let covered: BTreeSet<&str> = spec
        .config
        .mounts
        .iter()
        .map(|m| m.destination.as_str())
        .chain(spec.config.volumes.iter().map(|v| v.destination.as_str()))
        .collect();
    old.map(|o| {
        o.anonymous_volumes
            .iter()
            .filter(|(_, path)| !covered.contains(path.as_str()))
            .cloned()
            .collect()
    })
    .unwrap_or_default()
}

/// The old container's user networks with the aliases someone gave it (not
/// the ones the engine adds: its id and name).
fn inherited_networks(old: Option<&ObservedContainer>) -> Vec<(String, Vec<String>)> {
    let Some(old) = old else { return Vec::new() };
    let short_id = &old.details.id[..old.details.id.len().min(12)];
    old.details
        .networks
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), "bridge" | "host" | "none"))
        .map(|(n, aliases)| {
            let aliases = aliases
                .iter()
                .filter(|a| a.as_str() != short_id && a.as_str() != old.details.name)
                .cloned()
                .collect();
            (n.clone(), aliases)
        })
        .collect()
}

fn pull_error(image: &str, e: &RuntimeError) -> String {
    match e {
        RuntimeError::NotFound { .. } => {
            format!("image {image} not found in registry; nothing was changed")
        }
        RuntimeError::Refused { message, .. }
            if message.contains("not found") || message.contains("manifest unknown") =>
        {
            format!("image {image} not found in registry; nothing was changed")
        }
        other => format!("cannot pull image {image}: {other}; nothing was changed"),
    }
}

/// The IPv4 address of a host interface (`host_ip_<iface>`), via iproute2.
async fn interface_address(iface: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", iface])
        .output()
        .await
        .map_err(|e| format!("cannot run ip to find interface {iface}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_string)
        .ok_or_else(|| format!("host interface {iface} has no IPv4 address"))
}

/// Waits (an hour) so a test can kill berth at this point.
async fn pause(at: &str) {
    eprintln!("berth: test hook: pausing during {at}");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

/// One whole activity for an accepted document: IDENTIFYING (observe and
/// plan), IDENTIFIED, then the rollout when anything changes, with every
/// feedback message sent to `sink`. Recovery is the caller's to run first.
///
/// # Errors
/// Only state-directory failures; engine failures end as feedback and an
/// `INCOMPLETE` or `IDENTIFICATION_FAILED` status.
pub async fn apply<R: Runtime>(
    rt: &R,
    state: &StateDir,
    desired: &DesiredState,
    plan_options: &crate::plan::PlanOptions,
    options: &ExecuteOptions,
    sink: &mut dyn Sink,
) -> Result<Status, StateError> {
    let mut tracker = Tracker::new(&desired.activity_id, crate::spec::validate::DEFAULT_DOMAIN);
    sink.send(tracker.message(Status::Identifying, None));
    let observed = match crate::observe::gather_for(rt, desired).await {
        Ok(o) => o,
        Err(e) => {
            sink.send(tracker.message(Status::IdentificationFailed, Some(e.to_string())));
            return Ok(Status::IdentificationFailed);
        }
    };
    let plan = crate::plan::compute(desired, &observed, plan_options);
    let activity = Activity {
        desired,
        plan: &plan,
        observed: &observed,
    };
    let outcome = carry_out(rt, state, activity, options, &mut tracker, sink).await?;
    Ok(outcome.status)
}

/// The part of an activity after planning: IDENTIFIED with every action,
/// then `COMPLETED` at once when nothing changes, else the rollout.
///
/// # Errors
/// As [`execute`].
pub async fn carry_out<R: Runtime>(
    rt: &R,
    state: &StateDir,
    activity: Activity<'_>,
    options: &ExecuteOptions,
    tracker: &mut Tracker,
    sink: &mut dyn Sink,
) -> Result<Outcome, StateError> {
    let plan = activity.plan;
    tracker.identified(plan);
    for w in &plan.warnings {
        tracing::warn!(activity = %plan.activity_id, "{w}");
    }
    sink.send(tracker.message(Status::Identified, Some(plan.summary())));
    if !plan.has_changes() {
        let message = Some("nothing to change".to_string());
        sink.send(tracker.message(Status::Completed, message.clone()));
        return Ok(Outcome {
            status: Status::Completed,
            message,
        });
    }
    execute(rt, state, activity, options, tracker, sink).await
}

/// What recovery did, one line each.
pub type Recovered = Vec<String>;

/// Undoes whatever an interrupted activity left: old containers renamed away
/// come back under their names (running if they were), unfinished new and
/// temporary containers go, and containers stopped for the activity run
/// again. Activated new containers are kept and their old ones removed.
///
/// # Errors
/// When the engine cannot be read or a repair step fails.
pub async fn recover<R: Runtime>(
    rt: &R,
    state: &StateDir,
    instance: &str,
) -> Result<Recovered, String> {
    let journal = state.read_journal().map_err(|e| e.to_string())?;
    let containers = rt.list().await.map_err(|e| e.to_string())?;
    let mut done = Vec::new();
    let exists = |name: &str| containers.iter().find(|c| c.name == name);
    let ours = |c: &runtime::ContainerDetails| {
        labels::ownership(&c.labels).is_some_and(|o| o.instance == instance)
    };
    for c in &containers {
        if let (Some(base), true) = (c.name.strip_suffix(NEW_SUFFIX), ours(c)) {
            rt.remove(&c.id)
                .await
                .map_err(|e| format!("removing {}: {e}", c.name))?;
            done.push(format!(
                "removed the unfinished new container {} of {base}",
                c.name
            ));
        }
    }
    for c in &containers {
        let Some(base) = c.name.strip_suffix(OLD_SUFFIX) else {
            continue;
        };
        let entry = journal.as_ref().and_then(|j| j.get(base));
        // Another instance's; an adopted container of ours carries no
        // labels, but it is in our journal.
        if entry.is_none() && !ours(c) {
            continue;
        }
        let current = exists(base);
        if let (Some(current), Some(e)) = (current, entry) {
            if e.activated && e.new_id.as_deref() == Some(current.id.as_str()) {
                rt.remove(&c.id)
                    .await
                    .map_err(|e| format!("removing {}: {e}", c.name))?;
                done.push(format!("kept the new {base} (it had passed its readiness gate) and removed the old one"));
                continue;
            }
        }
        if let Some(current) = current {
            let _ = rt.stop(&current.id, Duration::from_secs(5)).await;
            rt.remove(&current.id)
                .await
                .map_err(|e| format!("removing the unfinished {base}: {e}"))?;
        }
        rt.rename(&c.id, base)
            .await
            .map_err(|e| format!("renaming {} back: {e}", c.name))?;
        let was_running = entry.is_none_or(|e| e.old_running);
        if was_running {
            rt.start(&c.id)
                .await
                .map_err(|e| format!("starting {base}: {e}"))?;
        }
        done.push(format!(
            "restored the previous {base}{}",
            if was_running { " and started it" } else { "" }
        ));
    }
    // Containers the activity stopped but had not renamed yet.
    if let Some(journal) = &journal {
        let now = rt.list().await.map_err(|e| e.to_string())?;
        for e in &journal.entries {
            let (Some(old_id), true) = (&e.old_id, e.old_running) else {
                continue;
            };
            if let Some(c) = now.iter().find(|c| &c.id == old_id && c.name == e.name) {
                if !matches!(
                    c.state.status,
                    runtime::Status::Running
                        | runtime::Status::Restarting
                        | runtime::Status::Paused
                ) {
                    rt.start(&c.id)
                        .await
                        .map_err(|err| format!("starting {}: {err}", e.name))?;
                    done.push(format!(
                        "started {} again (the interrupted activity had stopped it)",
                        e.name
                    ));
                }
            }
        }
    }
    state.clear_journal().map_err(|e| e.to_string())?;
    Ok(done)
}

#[cfg(test)]
#[path = "execute_tests.rs"]
mod tests;
