//! The rollout: DOWNLOADING, UPDATING, ACTIVATING in dependency waves, the
//! commit, CLEANUP. Every destructive effect goes through [`Run::record`]
//! (journaled, fsynced) before it is issued; every way back goes through
//! [`undo::undo`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::{
    gate, hooks, undo, Activity, ExecuteError, ExecuteOptions, Outcome, PausePoint, RollbackMode,
    Sink,
};
use crate::feedback::{words, ActionStatus, Status, Tracker};
use crate::journal::{Effect, InPlace, Intent, Journal, StateDir};
use crate::observe::{Observed, ObservedContainer};
use crate::plan::{Action, PlanEntry};
use crate::runtime::{self, Runtime};
use crate::spec::model::ContainerSpec;

/// One container of the activity.
pub(super) struct Unit<'a> {
    /// What the plan says.
    pub entry: &'a PlanEntry,
    /// The desired container, unless it is being removed.
    pub spec: Option<&'a ContainerSpec>,
    /// The container that exists now (on its own name, or on the temporary
    /// name it is restored from).
    pub old: Option<&'a ObservedContainer>,
    /// The new container, once created.
    pub new_id: Option<String>,
    /// It failed and was rolled back on its own (container mode).
    pub failed: bool,
    /// The units of this activity it links to (a `container:` network, a
    /// `container_<hostname>` host entry): its old version needs theirs.
    pub links_to: Vec<usize>,
    /// Another component of the document depends on it (`dependsOn`): as
    /// a job, its gate waits for it to complete.
    pub awaited: bool,
    /// Its hooks and migrations run ([`hooks::hooks_run`]).
    pub hooks: bool,
}

impl Unit<'_> {
    pub(super) fn name(&self) -> &str {
        &self.entry.id
    }
}

/// An activity in progress.
pub(super) struct Run<'a, R> {
    pub rt: &'a R,
    pub state: &'a StateDir,
    pub options: &'a ExecuteOptions,
    pub tracker: &'a mut Tracker,
    pub sink: &'a mut dyn Sink,
    /// The undo log, as written.
    pub journal: Journal,
    /// When the activity's time is up.
    pub deadline: Instant,
    pub units: Vec<Unit<'a>>,
    /// Image ids by reference, looked up once per image.
    pub image_ids: BTreeMap<String, Option<super::download::Resolved>>,
    /// Problems a container rollback could not fix (container mode).
    left: Vec<String>,
    /// Rolled back only because a container linked to them failed.
    dragged: BTreeSet<String>,
    /// Journal writes so far (for the test hook).
    writes: u32,
    /// The containers the next phase runs for (one baseline's, when an
    /// Update Manager names it); `None` is every one.
    focus: Option<BTreeSet<String>>,
}

/// How a container is set going.
enum Launch {
    Start(String),
    Unpause(String),
    AlreadyRunning(String),
}

impl Launch {
    fn id(&self) -> &str {
        match self {
            Launch::Start(id) | Launch::Unpause(id) | Launch::AlreadyRunning(id) => id,
        }
    }
}

fn joined(errors: &[ExecuteError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Carries out the activity to its outcome, its phases back to back; the
/// caller sends the final status.
pub(super) async fn run<R: Runtime>(
    rt: &R,
    state: &StateDir,
    activity: Activity<'_>,
    options: &ExecuteOptions,
    tracker: &mut Tracker,
    sink: &mut dyn Sink,
) -> Outcome {
    let mut run = Run::begin(rt, state, activity, options, tracker, sink);
    run.go(activity.observed).await
}

impl<'a, R: Runtime> Run<'a, R> {
    /// The activity's state before its first phase: its units (what each
    /// container is to become), the intents of its journal (not written
    /// yet), its deadline. Kept, between the phases an Update Manager
    /// orders one at a time, by whoever drives them.
    pub(super) fn begin(
        rt: &'a R,
        state: &'a StateDir,
        activity: Activity<'a>,
        options: &'a ExecuteOptions,
        tracker: &'a mut Tracker,
        sink: &'a mut dyn Sink,
    ) -> Self {
        let Activity {
            desired,
            plan,
            observed,
        } = activity;
        let units: Vec<Unit> = plan
            .actions
            .iter()
            .filter(|e| e.action.changes())
            .map(|entry| Unit {
                entry,
                spec: desired.container(&entry.id),
                old: match &entry.execution.restore_from {
                    Some(temp) => observed.container(temp),
                    None => observed.container(&entry.id),
                },
                new_id: None,
                failed: false,
                links_to: Vec::new(),
                awaited: desired
                    .containers
                    .iter()
                    .any(|c| c.rollout.depends_on.contains(&entry.id)),
                hooks: false,
            })
            .collect();
        let mut units = units;
        for u in &mut units {
            let old_hash = u
                .old
                .and_then(|o| o.owner.as_ref())
                .and_then(|o| o.spec_hash.as_deref());
            u.hooks = hooks::hooks_run(u.entry.action, u.spec, old_hash, options.drift_repair);
        }
        for i in 0..units.len() {
            let Some(spec) = units[i].spec else { continue };
            let targets = crate::plan::execution::links(spec, desired);
            units[i].links_to = (0..units.len())
                .filter(|j| *j != i && targets.contains(units[*j].name()))
                .collect();
        }
        let mut journal = Journal::new(&desired.activity_id, &options.instance);
        journal.phase = "downloading".into();
        journal.intents = units
            .iter()
            .map(|u| Intent {
                name: u.name().to_string(),
                action: u.entry.action.as_str().to_string(),
                old_id: u.old.map(|o| o.details.id.clone()),
                old_name: u
                    .old
                    .map(|o| o.details.name.clone())
                    .filter(|n| n != u.name()),
                old_running: u.entry.execution.old_running,
                hooks: hooks::undoable(u.hooks, u.spec),
            })
            .collect();
        let now = Instant::now();
        Run {
            rt,
            state,
            options,
            tracker,
            sink,
            journal,
            deadline: now
                .checked_add(options.activity_timeout)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
            units,
            image_ids: BTreeMap::new(),
            left: Vec::new(),
            dragged: BTreeSet::new(),
            writes: 0,
            focus: None,
        }
    }
}

impl<R: Runtime> Run<'_, R> {
    /// Narrows the phases that follow to these containers (the baseline an
    /// Update Manager's command names), or, with `None`, widens them to
    /// every container of the activity again.
    pub(super) fn focus(&mut self, names: Option<&[String]>) {
        self.focus = names.map(|n| n.iter().cloned().collect());
    }

    /// Whether unit `i` takes part in the phase that runs.
    pub(super) fn focused(&self, i: usize) -> bool {
        match &self.focus {
            None => true,
            Some(names) => names.contains(self.units[i].name()),
        }
    }

    pub(super) fn emit(&mut self, status: Status, message: Option<String>) {
        let m = self.tracker.message(status, message);
        self.sink.send(m);
    }

    pub(super) fn set(&mut self, name: &str, status: ActionStatus, message: impl Into<String>) {
        self.tracker.set(name, status, message);
    }

    /// Writes the journal as it is.
    pub(super) async fn write(&mut self) -> Result<(), ExecuteError> {
        self.writes = self.writes.saturating_add(1);
        if self.options.pause_at == Some(PausePoint::JournalWrite(self.writes)) {
            pause(&format!("journal write #{}", self.writes)).await;
        }
        tracing::debug!(write = self.writes, "writing the journal");
        self.state
            .store_journal(&self.journal)
            .await
            .map_err(|e| ExecuteError::Journal(e.to_string()))
    }

    /// Journals an effect before it is issued; returns its record's index.
    pub(super) async fn record(&mut self, effect: Effect) -> Result<usize, ExecuteError> {
        let at = self.journal.push(effect);
        self.write().await?;
        Ok(at)
    }

    /// Journals several effects (issued at once) with one write.
    pub(super) async fn record_all(
        &mut self,
        effects: Vec<Effect>,
    ) -> Result<Vec<usize>, ExecuteError> {
        let at = effects.into_iter().map(|e| self.journal.push(e)).collect();
        self.write().await?;
        Ok(at)
    }

    fn check_deadline(&self) -> Result<(), ExecuteError> {
        if Instant::now() > self.deadline {
            Err(ExecuteError::Deadline {
                limit: self.options.activity_timeout,
            })
        } else {
            Ok(())
        }
    }

    pub(super) fn stop_timeout(&self, spec: Option<&ContainerSpec>) -> Duration {
        spec.and_then(|s| s.config.stop_timeout)
            .unwrap_or(self.options.stop_timeout)
    }

    /// The autonomous activity: every phase, back to back, and on a
    /// failure the way back at once.
    async fn go(&mut self, observed: &Observed) -> Outcome {
        if let Err(message) = self.download(observed).await {
            return self.discard(message).await;
        }
        if let Err(message) = self.update().await {
            return self.roll_back(None, message).await;
        }
        let failures = match self.activate().await {
            Ok(f) => f,
            Err(message) => return self.roll_back(None, message).await,
        };
        if let Err(outcome) = self.commit().await {
            return outcome;
        }
        if failures.is_empty() {
            self.emit(Status::ActivationSuccess, None);
        }
        self.cleanup(failures).await
    }

    /// Gives the next phase the whole `activity_timeout` (an orchestrated
    /// activity waits for each command in between).
    pub(super) fn restart_clock(&mut self) {
        let now = Instant::now();
        self.deadline = now
            .checked_add(self.options.activity_timeout)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
    }

    /// DOWNLOAD: preflight, pulls, the new containers under temporary
    /// names; nothing that runs is touched. Ends with `DOWNLOAD_SUCCESS`,
    /// or `DOWNLOAD_FAILURE` and the words of the failure (what was made is
    /// left for [`Run::discard`]).
    pub(super) async fn download(&mut self, observed: &Observed) -> Result<(), String> {
        self.journal.phase = "downloading".into();
        self.emit(Status::Downloading, None);
        let downloaded = match self.write().await {
            Err(e) => Err(vec![e]),
            Ok(()) => match self.preflight(observed).await {
                Err(e) => Err(vec![e]),
                Ok(()) => match self.pull_all().await {
                    Err(e) => Err(e),
                    Ok(()) => self.create_early(observed).await,
                },
            },
        };
        if let Err(errors) = downloaded {
            let message = format!("{}; nothing was changed", joined(&errors));
            self.emit(Status::DownloadFailure, Some(message.clone()));
            return Err(message);
        }
        self.emit(Status::DownloadSuccess, None);
        Ok(())
    }

    /// UPDATE: old containers out of the way, in-place changes. Ends with
    /// `UPDATE_SUCCESS`, or `UPDATE_FAILURE` and the words of the failure
    /// (left for [`Run::roll_back`]).
    pub(super) async fn update(&mut self) -> Result<(), String> {
        self.journal.phase = "updating".into();
        self.emit(Status::Updating, None);
        let updated = match self.check_deadline() {
            Ok(()) => self.updating().await,
            Err(e) => Err(vec![e]),
        };
        if let Err(errors) = updated {
            let message = joined(&errors);
            self.emit(Status::UpdateFailure, Some(message.clone()));
            return Err(message);
        }
        if self.options.pause_at == Some(PausePoint::Updating) {
            pause("updating").await;
        }
        self.emit(Status::UpdateSuccess, None);
        Ok(())
    }

    /// ACTIVATE: new containers take their names and prove ready, in
    /// waves. `Ok` lists the containers rolled back on their own
    /// (container mode); `Err` is an activity-wide failure, reported
    /// `ACTIVATION_FAILURE` and left for [`Run::roll_back`]. The success
    /// status is the caller's to send (after the commit, autonomously).
    pub(super) async fn activate(&mut self) -> Result<Vec<String>, String> {
        self.journal.phase = "activating".into();
        self.emit(Status::Activating, None);
        self.activating().await
    }

    /// The commit: from here on the new versions stay, and recovery
    /// finishes the cleanup instead of undoing. `Err` is the outcome of
    /// going back when the commit cannot be written.
    pub(super) async fn commit(&mut self) -> Result<(), Outcome> {
        let keep: Vec<String> = (0..self.units.len())
            .filter(|i| self.focused(*i) && !self.units[*i].failed)
            .map(|i| self.units[i].name().to_string())
            .collect();
        let before = self.journal.committed.clone();
        self.journal.committed.extend(keep);
        self.journal.phase = "cleanup".into();
        if let Err(e) = self.write().await {
            // Unrecorded, a crash during cleanup would be undone with the
            // old containers already gone: go back now instead (all that
            // was not committed on disk before).
            self.journal.committed = before;
            // What was committed on disk (container mode, an earlier wave)
            // stays: its cleanup is finished, or left in the journal.
            let kept: Vec<String> = self.journal.committed.iter().cloned().collect();
            for name in &kept {
                if let Err(problem) = undo::finish(self.rt, &self.journal, name).await {
                    self.left.push(problem);
                }
            }
            return Err(self.roll_back(None, e.to_string()).await);
        }
        Ok(())
    }

    /// CLEANUP after the commit: old containers and removals go; volumes
    /// stay. `failures` are the containers rolled back on their own.
    pub(super) async fn cleanup(&mut self, failures: Vec<String>) -> Outcome {
        let cleanup_errors = self.clean().await;
        self.settle(failures, cleanup_errors).await
    }

    /// CLEANUP of the focused containers after their commit (every one,
    /// unless one baseline's): their old containers and removals go.
    /// Returns what could not be removed.
    pub(super) async fn clean(&mut self) -> Vec<String> {
        self.emit(Status::Cleanup, None);
        let mut cleanup_errors = Vec::new();
        let names: Vec<(String, Action)> = (0..self.units.len())
            .filter(|i| self.focused(*i) && !self.units[*i].failed)
            .map(|i| (self.units[i].name().to_string(), self.units[i].entry.action))
            .collect();
        for (name, action) in names {
            match undo::finish(self.rt, &self.journal, &name).await {
                Ok(_) if action == Action::Remove => self.set(
                    &name,
                    ActionStatus::RemovalSuccess,
                    "Old container instance is removed.",
                ),
                Ok(_) => {}
                Err(e) => {
                    if action == Action::Remove {
                        self.set(&name, ActionStatus::RemovalFailure, e.clone());
                    }
                    cleanup_errors.push(e);
                }
            }
        }
        if cleanup_errors.is_empty() {
            self.emit(Status::CleanupSuccess, None);
        } else {
            self.emit(Status::CleanupFailure, Some(cleanup_errors.join("; ")));
        }
        cleanup_errors
    }

    /// The end of an activity whose containers were all cleaned up: the
    /// journal goes (or stays for recovery, with what is left) and the
    /// final status is decided.
    pub(super) async fn settle(
        &mut self,
        failures: Vec<String>,
        cleanup_errors: Vec<String>,
    ) -> Outcome {
        let settled = cleanup_errors.is_empty() && self.left.is_empty();
        if settled {
            if let Err(e) = self.state.discard_journal().await {
                tracing::warn!(error = %e, "cannot clear the journal; the next recovery finds nothing to do");
            }
        } else {
            // Ended, with work left for recovery (not interrupted).
            self.journal.phase = super::ROLLBACK_FAILED.into();
            if let Err(e) = self.write().await {
                tracing::error!(error = %e, "cannot keep the journal for recovery");
            }
        }
        let status = if !self.left.is_empty() {
            Status::IncompleteInconsistent
        } else if failures.is_empty() && cleanup_errors.is_empty() {
            Status::Completed
        } else {
            Status::Incomplete
        };
        // A container rollback's leftovers are in `failures` already.
        let message = failures
            .into_iter()
            .chain(cleanup_errors)
            .collect::<Vec<_>>();
        Outcome {
            status,
            message: (!message.is_empty()).then(|| message.join("; ")),
            failed: self.blamed(),
            migrations: self.applied_migrations(),
        }
    }

    /// In-place updates, then every old container that must go stopped at
    /// once (bounded), then the renames that keep them for rollback.
    async fn updating(&mut self) -> Result<(), Vec<ExecuteError>> {
        for i in 0..self.units.len() {
            let u = &self.units[i];
            let (Action::Update, Some(old), Some(spec)) = (u.entry.action, u.old, u.spec) else {
                continue;
            };
            if !self.focused(i) {
                continue;
            }
            let name = u.name().to_string();
            self.set(
                &name,
                ActionStatus::Updating,
                "Updating restart policy and resources in place.",
            );
            self.emit(Status::Updating, None);
            self.record(Effect::Update {
                name: name.clone(),
                id: old.details.id.clone(),
                previous: InPlace {
                    restart: old.config.restart,
                    resources: old.config.resources,
                },
            })
            .await
            .map_err(|e| vec![e])?;
            if let Err(e) = self.rt.update(&old.details.id, &spec.config).await {
                let e = ExecuteError::step(&name, "update in place")(e);
                self.set(&name, ActionStatus::UpdateFailure, e.to_string());
                return Err(vec![e]);
            }
            self.set(
                &name,
                ActionStatus::UpdateSuccess,
                "Container instance is updated with new configuration.",
            );
        }
        let mut stops = Vec::new();
        for (i, u) in self.units.iter().enumerate() {
            let Some(old) = u.old.filter(|_| self.focused(i)) else {
                continue;
            };
            let stop = match u.entry.action {
                Action::Recreate => !u.entry.execution.start_first,
                Action::Remove => true,
                _ => false,
            };
            if stop {
                stops.push((i, old.details.id.clone(), self.stop_timeout(u.spec)));
            }
        }
        if stops.is_empty() {
            return Ok(());
        }
        for (i, _, _) in &stops {
            let name = self.units[*i].name().to_string();
            let words = if self.units[*i].entry.action == Action::Remove {
                (ActionStatus::Removing, "Stopping the container.")
            } else {
                (ActionStatus::Updating, words::STOPPING_OLD)
            };
            self.set(&name, words.0, words.1);
        }
        self.emit(Status::Updating, None);
        let effects = stops
            .iter()
            .map(|(i, id, _)| Effect::Stop {
                name: self.units[*i].name().to_string(),
                id: id.clone(),
                was_running: self.units[*i].entry.execution.old_running,
            })
            .collect();
        self.record_all(effects).await.map_err(|e| vec![e])?;
        let rt = self.rt;
        let mut stopped: Vec<(usize, runtime::Result<()>)> = futures_util::stream::iter(stops)
            .map(|(i, id, timeout)| async move { (i, rt.stop(&id, timeout).await) })
            .buffer_unordered(self.options.parallel.max(1))
            .collect()
            .await;
        stopped.sort_by_key(|(i, _)| *i);
        let mut errors = Vec::new();
        for (i, result) in stopped {
            let name = self.units[i].name().to_string();
            let blame = if self.units[i].entry.action == Action::Remove {
                ActionStatus::RemovalFailure
            } else {
                ActionStatus::UpdateFailure
            };
            if let Err(e) = result {
                let e = ExecuteError::step(&name, "stop the old container")(e);
                self.set(&name, blame, e.to_string());
                errors.push(e);
                continue;
            }
            if self.units[i].entry.action == Action::Recreate {
                if let Err(e) = self.retire(i).await {
                    if !matches!(e, ExecuteError::Journal(_)) {
                        self.set(&name, blame, e.to_string());
                    }
                    errors.push(e);
                    continue;
                }
                self.set(&name, ActionStatus::UpdateSuccess, words::OLD_STOPPED);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Journals a rename, then issues it.
    async fn rename(
        &mut self,
        name: &str,
        id: &str,
        from: String,
        to: &str,
        step: &'static str,
    ) -> Result<(), ExecuteError> {
        self.record(Effect::Rename {
            name: name.to_string(),
            id: id.to_string(),
            from,
            to: to.to_string(),
        })
        .await?;
        self.rt
            .rename(id, to)
            .await
            .map_err(ExecuteError::step(name, step))
    }

    /// Renames a stopped old container to its temporary name.
    async fn retire(&mut self, i: usize) -> Result<(), ExecuteError> {
        let u = &self.units[i];
        let Some(old) = u.old else { return Ok(()) };
        let (name, id, from) = (
            u.name().to_string(),
            old.details.id.clone(),
            old.details.name.clone(),
        );
        let to = u.entry.execution.temp_old.clone();
        if from == to {
            return Ok(());
        }
        self.rename(&name, &id, from, &to, "rename the old container")
            .await
    }

    /// Gives unit `i`'s new container its name.
    async fn take_name(&mut self, i: usize) -> Result<(), ExecuteError> {
        let u = &self.units[i];
        let (Some(id), name) = (u.new_id.clone(), u.name().to_string()) else {
            return Ok(());
        };
        let from = u.entry.execution.temp_new.clone();
        self.rename(&name, &id, from, &name, "rename the new container")
            .await
    }

    /// The waves: each container is put in place, started and gated with
    /// the others of its wave. `Err` is an activity-wide failure, for the
    /// caller to roll back; `Ok` lists the containers rolled back on their own.
    async fn activating(&mut self) -> Result<Vec<String>, String> {
        let mut waves: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, u) in self.units.iter().enumerate() {
            if u.entry.action != Action::Remove && self.focused(i) {
                waves.entry(u.entry.execution.wave).or_default().push(i);
            }
        }
        let mut failures = Vec::new();
        let mut first = true;
        for wave in waves.into_values() {
            let mut failed_now: Vec<(usize, ExecuteError)> = Vec::new();
            let mut gating = Vec::new();
            for i in wave {
                let prepared = match self.check_deadline() {
                    Ok(()) => self.prepare(i).await,
                    Err(e) => Err(e),
                };
                match prepared {
                    Ok(Some(launch)) => {
                        let u = &self.units[i];
                        let expect = gate::Expect::of(u.spec, u.awaited);
                        let post = hooks::post_start_of(u.hooks, u.spec);
                        gating.push((i, launch, u.spec, expect, post));
                    }
                    Ok(None) => {}
                    Err(e) => failed_now.push((i, e)),
                }
            }
            let (rt, options, deadline) = (self.rt, self.options, self.deadline);
            let names: Vec<String> = self.units.iter().map(|u| u.name().to_string()).collect();
            let gated: Vec<(usize, Result<(), ExecuteError>)> = futures_util::stream::iter(gating)
                .map(|(i, launch, spec, expect, post)| {
                    let name = names[i].clone();
                    async move {
                        let started = match &launch {
                            Launch::Start(id) => rt.start(id).await,
                            Launch::Unpause(id) => rt.unpause(id).await,
                            Launch::AlreadyRunning(_) => Ok(()),
                        };
                        let result = match started {
                            Ok(()) => {
                                // postStart (issue 22): in the started
                                // container, before its gate can pass.
                                let post = match &post {
                                    Some(cmd) => {
                                        hooks::post_start(rt, options, launch.id(), spec, cmd).await
                                    }
                                    None => Ok(()),
                                };
                                match post {
                                    Ok(()) => gate::wait_ready(
                                        rt,
                                        options,
                                        launch.id(),
                                        spec,
                                        expect,
                                        deadline,
                                    )
                                    .await
                                    .map_err(|reason| ExecuteError::NotReady {
                                        name: name.clone(),
                                        reason,
                                    }),
                                    Err(reason) => Err(ExecuteError::NotReady {
                                        name: name.clone(),
                                        reason,
                                    }),
                                }
                            }
                            Err(e) => Err(ExecuteError::step(&name, "start")(e)),
                        };
                        (i, result)
                    }
                })
                .buffer_unordered(options.parallel.max(1))
                .collect()
                .await;
            if first && !gated.is_empty() && self.options.pause_at == Some(PausePoint::Activating) {
                pause("activating").await;
            }
            first = false;
            let mut passed = Vec::new();
            for (i, result) in gated {
                match result {
                    Ok(()) => match self.finish(i).await {
                        Ok(()) => passed.push(i),
                        Err(e) => failed_now.push((i, e)),
                    },
                    Err(e) => failed_now.push((i, e)),
                }
            }
            failed_now.sort_by_key(|(i, _)| *i);
            for (i, e) in failed_now {
                let name = self.units[i].name().to_string();
                let message = e.to_string();
                let reason = match &e {
                    ExecuteError::NotReady { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                self.set(&name, ActionStatus::ActivationFailure, reason);
                self.emit(Status::ActivationFailure, Some(message.clone()));
                match self.options.rollback {
                    RollbackMode::Activity => return Err(message),
                    RollbackMode::Container => {
                        self.emit(Status::Rollback, Some(format!("rolling back {name}")));
                        // Its old version runs in, or points at, the old
                        // version of what it links to: those go back with it.
                        let mut group = vec![i];
                        let mut at = 0;
                        while at < group.len() {
                            for &j in &self.units[group[at]].links_to {
                                if !group.contains(&j)
                                    && !self.units[j].failed
                                    && !self.journal.committed.contains(self.units[j].name())
                                {
                                    group.push(j);
                                }
                            }
                            at += 1;
                        }
                        let only: BTreeSet<String> = group
                            .iter()
                            .map(|j| self.units[*j].name().to_string())
                            .collect();
                        // Hooks (issue 22): onRollback first.
                        let notes = self.before_undo(Some(&only)).await;
                        let message = if notes.is_empty() {
                            message
                        } else {
                            format!("{message}; {}", notes.join("; "))
                        };
                        let settled = undo::undo(self.rt, &mut self.journal, Some(&only)).await;
                        for &j in &group[1..] {
                            self.units[j].failed = true;
                            let words = format!("Rolled back with {name}, which links to it.");
                            let other = self.units[j].name().to_string();
                            self.set(&other, ActionStatus::ActivationFailure, words);
                            self.dragged.insert(other);
                        }
                        self.units[i].failed = true;
                        if settled.left.is_empty() {
                            self.emit(Status::RollbackSuccess, None);
                            failures.push(format!("{message} (rolled back)"));
                        } else {
                            let left = settled.left.join("; ");
                            self.emit(Status::RollbackFailure, Some(left.clone()));
                            failures.push(format!("{message}; rollback failed: {left}"));
                            self.left.extend(settled.left);
                        }
                        // Undone records are marked; a crash from here on
                        // does not redo them.
                        let _ = self.write().await;
                    }
                }
            }
            if self.options.rollback == RollbackMode::Container && !passed.is_empty() {
                // Each container that proved ready stays, whatever its
                // siblings do.
                let before = self.journal.committed.clone();
                for i in passed {
                    // A container others link to is committed with them, at
                    // the end: until then it may have to go back with them.
                    if self.units.iter().any(|u| u.links_to.contains(&i)) {
                        continue;
                    }
                    self.journal
                        .committed
                        .insert(self.units[i].name().to_string());
                }
                if let Err(e) = self.write().await {
                    // Not on disk, not committed: the final commit tries
                    // again, and a crash undoes them, as the disk says.
                    tracing::warn!(error = %e, "cannot record the commit of this wave yet");
                    self.journal.committed = before;
                }
            }
        }
        Ok(failures)
    }

    /// Puts unit `i` in place; returns how to set it going, when its
    /// readiness is to be proven.
    async fn prepare(&mut self, i: usize) -> Result<Option<Launch>, ExecuteError> {
        let name = self.units[i].name().to_string();
        match self.units[i].entry.action {
            Action::Create | Action::Recreate => {
                if self.units[i].entry.execution.create_late && self.units[i].new_id.is_none() {
                    self.create_late(i).await?;
                }
                let Some(id) = self.units[i].new_id.clone() else {
                    return Ok(None);
                };
                // Hooks (issue 22): preStart, then the migrations, before
                // the new one starts.
                self.pre_start(i).await?;
                self.migrate(i).await?;
                self.set(
                    &name,
                    ActionStatus::Activating,
                    "Starting the new container.",
                );
                self.emit(Status::Activating, None);
                // start-first: the new one starts under its temporary name
                // while the old one keeps serving until the new one is ready.
                if !self.units[i].entry.execution.start_first {
                    self.take_name(i).await?;
                }
                self.record(Effect::Start {
                    name,
                    id: id.clone(),
                    was_running: false,
                })
                .await?;
                Ok(Some(Launch::Start(id)))
            }
            Action::Start => {
                let Some(old) = self.units[i].old else {
                    return Ok(None);
                };
                let id = old.details.id.clone();
                if let Some(from) = self.units[i].entry.execution.restore_from.clone() {
                    let step = "restore the previous container's name";
                    self.rename(&name, &id, from, &name, step).await?;
                }

                self.set(&name, ActionStatus::Activating, "Starting the container.");
                self.emit(Status::Activating, None);
                let status = old.details.state.status;
                self.record(Effect::Start {
                    name,
                    id: id.clone(),
                    was_running: self.units[i].entry.execution.old_running,
                })
                .await?;
                Ok(Some(match status {
                    runtime::Status::Paused => Launch::Unpause(id),
                    runtime::Status::Running => Launch::AlreadyRunning(id),
                    _ => Launch::Start(id),
                }))
            }
            Action::Update => {
                self.set(
                    &name,
                    ActionStatus::ActivationSuccess,
                    "Container instance is updated with new configuration.",
                );
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Completes a container that passed its gate (start-first: only now
    /// does the old one give up its name, then stop).
    async fn finish(&mut self, i: usize) -> Result<(), ExecuteError> {
        let name = self.units[i].name().to_string();
        match self.units[i].entry.action {
            Action::Create | Action::Recreate => {
                if self.units[i].entry.execution.start_first {
                    // The names change hands first, while both run: the
                    // service's name never points at a stopping container,
                    // so a client sees two renames of downtime, not the old
                    // container's stop (issue 25).
                    self.retire(i).await?;
                    self.take_name(i).await?;
                    if let Some(old) = self.units[i].old {
                        let id = old.details.id.clone();
                        self.record(Effect::Stop {
                            name: name.clone(),
                            id: id.clone(),
                            was_running: self.units[i].entry.execution.old_running,
                        })
                        .await?;
                        self.rt
                            .stop(&id, self.stop_timeout(self.units[i].spec))
                            .await
                            .map_err(ExecuteError::step(&name, "stop the old container"))?;
                    }
                }
                self.set(
                    &name,
                    ActionStatus::ActivationSuccess,
                    "New container instance is started.",
                );
            }
            Action::Start => self.set(
                &name,
                ActionStatus::ActivationSuccess,
                "Existing container instance is running.",
            ),
            _ => {}
        }
        Ok(())
    }

    /// DOWNLOADING failed: the temporaries made so far go.
    pub(super) async fn discard(&mut self, message: String) -> Outcome {
        let settled = undo::undo(self.rt, &mut self.journal, None).await;
        if settled.left.is_empty() {
            if let Err(e) = self.state.discard_journal().await {
                tracing::warn!(error = %e, "cannot clear the journal");
            }
            return Outcome {
                status: Status::Incomplete,
                message: Some(message),
                failed: self.blamed(),
                migrations: self.applied_migrations(),
            };
        }
        let _ = self.write().await;
        let left = settled.left.join("; ");
        tracing::warn!(left = %left, "temporary containers are left for recovery");
        Outcome {
            status: Status::Incomplete,
            message: Some(format!("{message}; left for recovery: {left}")),
            failed: self.blamed(),
            migrations: self.applied_migrations(),
        }
    }

    /// Undoes the whole activity (every container not committed) and says
    /// whether that held.
    pub(super) async fn roll_back(
        &mut self,
        only: Option<&BTreeSet<String>>,
        cause: String,
    ) -> Outcome {
        self.emit(Status::Rollback, Some(cause.clone()));
        // Hooks (issue 22): onRollback before the old containers return.
        let notes = self.before_undo(only).await;
        let cause = if notes.is_empty() {
            cause
        } else {
            format!("{cause}; {}", notes.join("; "))
        };
        let settled = undo::undo(self.rt, &mut self.journal, only).await;
        for line in &settled.done {
            tracing::info!("rolled back: {line}");
        }
        let failed = self.blamed();
        let mut settled = settled;
        // What a container rollback or a kept container's cleanup left.
        settled.left.extend(self.left.iter().cloned());
        if settled.left.is_empty() {
            self.mark_rolled_back(only);
            self.emit(
                Status::RollbackSuccess,
                Some(format!("{cause}; the previous containers are restored")),
            );
            if only.is_some() {
                // The others' effects stay in the log, for their own way
                // back; the undone records are marked.
                if let Err(e) = self.write().await {
                    tracing::warn!(error = %e, "cannot record the rollback; a recovery undoes the rest");
                }
            } else if let Err(e) = self.state.discard_journal().await {
                tracing::warn!(error = %e, "cannot clear the journal; the next recovery finds nothing to do");
            }
            let kept: Vec<&str> = self
                .units
                .iter()
                .map(|u| u.name())
                .filter(|n| self.journal.committed.contains(*n))
                .collect();
            let words = if kept.is_empty() {
                "rolled back, the previous containers run again".to_string()
            } else {
                format!(
                    "{} keep their new version, the rest was rolled back",
                    kept.join(", ")
                )
            };
            return Outcome {
                status: Status::Incomplete,
                message: Some(format!("{cause}; {words}")),
                failed,
                migrations: self.applied_migrations(),
            };
        }
        self.journal.phase = super::ROLLBACK_FAILED.into();
        if let Err(e) = self.write().await {
            tracing::error!(error = %e, "cannot keep the journal for recovery");
        }
        let left = settled.left.join("; ");
        self.emit(Status::RollbackFailure, Some(left.clone()));
        Outcome {
            status: Status::IncompleteInconsistent,
            message: Some(format!(
                "{cause}; rollback failed: {left}; berth finishes it before the next activity"
            )),
            failed,
            migrations: self.applied_migrations(),
        }
    }

    /// The containers whose own step failed, by their feedback so far.
    fn blamed(&self) -> BTreeSet<String> {
        self.units
            .iter()
            .map(|u| u.name())
            .filter(|n| !self.dragged.contains(*n))
            .filter(|n| {
                matches!(
                    self.tracker.status_of(n),
                    Some(
                        ActionStatus::DownloadFailure
                            | ActionStatus::UpdateFailure
                            | ActionStatus::ActivationFailure
                            | ActionStatus::RemovalFailure
                    )
                )
            })
            .map(str::to_string)
            .collect()
    }

    /// Per-container feedback after a rollback that held.
    fn mark_rolled_back(&mut self, only: Option<&BTreeSet<String>>) {
        let marks: Vec<(String, ActionStatus, &'static str)> = self
            .units
            .iter()
            .filter(|u| !self.journal.committed.contains(u.name()))
            .filter(|u| only.is_none_or(|o| o.contains(u.name())))
            .map(|u| {
                let status = match u.entry.action {
                    Action::Update => ActionStatus::UpdateFailure,
                    Action::Remove => ActionStatus::RemovalFailure,
                    _ => ActionStatus::ActivationFailure,
                };
                let message = match u.entry.action {
                    Action::Create => "Rolled back: the new container was removed.",
                    Action::Remove => "Rolled back: the container runs again.",
                    _ => "Rolled back: the previous container instance is restored.",
                };
                (u.name().to_string(), status, message)
            })
            .collect();
        for (name, status, message) in marks {
            // The container to blame keeps the words of its own failure.
            if !matches!(
                self.tracker.status_of(&name),
                Some(
                    ActionStatus::ActivationFailure
                        | ActionStatus::UpdateFailure
                        | ActionStatus::RemovalFailure
                )
            ) {
                self.set(&name, status, message);
            }
        }
    }
}

/// Waits (an hour) so a test can kill berth at this point.
async fn pause(at: &str) {
    eprintln!("berth: test hook: pausing during {at}");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}
