//! Hooks around a create or recreate (issue 22): `preStart` in a one-shot
//! container of the new image, `postStart` by exec in the started new
//! container, `onRollback` in a one-shot container of the old image when the
//! activity goes back after `preStart` (or a migration) ran.
//!
//! # Guarantees
//! - Hooks run only for a unit the plan creates or recreates, never for a
//!   kept, started or updated one (a no-op re-apply, a drift repair of an
//!   unchanged spec).
//! - Every one-shot container is journaled ([`Effect::OneShot`]) before it
//!   is created and removed as soon as it ended, timed out or failed; a
//!   kill of berth in between is undone by recovery like any other effect.
//! - A failing hook's last 4 KiB of output, redacted, are in the error
//!   (feedback) and in the log.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::rollout::Run;
use super::{output, ExecuteError, ExecuteOptions};
use crate::feedback::{ActionStatus, Status};
use crate::journal::Effect;
use crate::labels;
use crate::plan::Action;
use crate::runtime::{self, CreateRequest, Runtime};
use crate::spec::model::{ContainerConfig, ContainerSpec, HealthTest, RestartPolicy};

/// The suffix of a one-shot container's name: `<component>.berth-hook`.
pub const ONE_SHOT_SUFFIX: &str = ".berth-hook";

/// How often a one-shot container is looked at while it runs.
const POLL: Duration = Duration::from_millis(200);

/// The `postStart` command of a unit, when it has one and its hooks run.
pub(super) fn post_start_of(hooks: bool, spec: Option<&ContainerSpec>) -> Option<String> {
    if !hooks {
        return None;
    }
    spec.and_then(|s| s.rollout.hooks.post_start.clone())
}

/// Whether the plan's action for a unit runs its hooks.
pub(super) fn runs_hooks(action: Action) -> bool {
    matches!(action, Action::Create | Action::Recreate)
}

/// Whether a unit's hooks run: only on a create or recreate, and during a
/// drift repair (`drift`) only when the container is replaced by one of
/// another spec than the one it was created from; a container that died,
/// was removed or was changed by hand is put back without its hooks, as
/// nothing about the component changed.
pub(super) fn hooks_run(
    action: Action,
    spec: Option<&ContainerSpec>,
    old_hash: Option<&str>,
    drift: bool,
) -> bool {
    if !runs_hooks(action) {
        return false;
    }
    if !drift {
        return true;
    }
    match (spec, old_hash) {
        (Some(spec), Some(old)) => crate::spec::hash::spec_hash(&spec.config) != old,
        _ => false,
    }
}

/// The argv a hook's command runs as.
fn shell(cmd: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), cmd.to_string()]
}

/// The configuration of a one-shot container for `cmd`: the service's own
/// (env, mounts, named volumes, network, user, working directory), with
/// `/bin/sh -c` as entrypoint, no restart, no published ports (the old
/// container may still hold them) and no health check.
pub(super) fn one_shot_config(base: &ContainerConfig, cmd: &str) -> ContainerConfig {
    let mut config = base.clone();
    config.entrypoint = Some(vec!["/bin/sh".into(), "-c".into()]);
    config.cmd = Some(vec![cmd.to_string()]);
    config.restart = RestartPolicy::No;
    config.ports.clear();
    config.health = Default::default();
    config.health.test = Some(HealthTest::Disabled);
    config
}

/// The labels of a one-shot container: berth's and this instance's, so that
/// recovery knows it, but no component, so nothing takes it for one.
fn one_shot_labels(instance: &str, purpose: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::INSTANCE.to_string(), instance.to_string()),
        (labels::ONE_SHOT.to_string(), purpose.to_string()),
    ])
}

/// Runs `cmd` by exec in the started container `id`, bounded by the hook
/// timeout; `Err` says how it failed, with its output.
pub(super) async fn post_start<R: Runtime>(
    rt: &R,
    options: &ExecuteOptions,
    id: &str,
    spec: Option<&ContainerSpec>,
    cmd: &str,
) -> Result<(), String> {
    let limit = spec.map_or(crate::spec::model::DEFAULT_HOOK_TIMEOUT, |s| {
        s.rollout.hooks.timeout()
    });
    let ran = tokio::time::timeout(limit, rt.exec(id, &shell(cmd))).await;
    match ran {
        Err(_) => Err(format!(
            "postStart did not finish within hookTimeout {}",
            humantime::format_duration(limit)
        )),
        Ok(Err(e)) => Err(format!("cannot run postStart: {e}")),
        Ok(Ok(out)) if out.exit_code == 0 => Ok(()),
        Ok(Ok(out)) => {
            let said = output::last_words(&out.output, spec, &options.redactor);
            let reason = format!("postStart exited with code {}", out.exit_code);
            tracing::warn!(container = %id, "{reason}; its last output:\n{said}");
            Err(output::with_output(reason, &said))
        }
    }
}

/// What one one-shot container is: its purpose, image settings and the
/// volumes it shares with the service.
pub(super) struct OneShot<'a> {
    /// `preStart`, `onRollback`, `migration v1.2.0`, for words and labels.
    pub purpose: String,
    /// The service's configuration it borrows its settings from.
    pub base: &'a ContainerConfig,
    /// The service's anonymous volumes: (volume name, container path).
    pub anonymous: Vec<(String, String)>,
    /// The service's extra networks.
    pub networks: Vec<(String, Vec<String>)>,
    /// The shell command.
    pub cmd: String,
    /// How long it may run.
    pub limit: Duration,
}

impl<R: Runtime> Run<'_, R> {
    /// Runs one one-shot container for unit `i` to its end and removes it.
    /// `Err` says why it failed (non-zero exit, timeout, engine error),
    /// with the end of its output, redacted.
    /// On success, what it printed (the end of it, unredacted: for berth
    /// to read, like a migration listing, never to show).
    pub(super) async fn one_shot(&mut self, i: usize, job: OneShot<'_>) -> Result<String, String> {
        let name = self.units[i].entry.id.clone();
        let spec = self.units[i].spec;
        let temp = format!("{name}{ONE_SHOT_SUFFIX}");
        let request = CreateRequest {
            name: temp.clone(),
            config: one_shot_config(job.base, &job.cmd),
            labels: one_shot_labels(&self.options.instance, &job.purpose),
            extra_hosts: Vec::new(),
            inherited_volumes: job.anonymous,
            networks: job.networks,
        };
        // A one-shot of ours left on the name (its removal failed and no
        // recovery ran since) would block this one: it goes first.
        if let Ok(Some(left)) = self.rt.inspect(&temp).await {
            let ours = left.name == temp
                && left.labels.contains_key(labels::ONE_SHOT)
                && labels::ownership(&left.labels)
                    .is_some_and(|o| o.instance == self.options.instance);
            if ours {
                if let Err(e) = self.rt.remove(&left.id).await {
                    tracing::warn!(error = %e, "cannot remove the leftover {temp}");
                }
            }
        }
        let at = self
            .record(Effect::OneShot {
                name: name.clone(),
                purpose: job.purpose.clone(),
                temp: temp.clone(),
                id: None,
                image: job.base.image.to_string(),
            })
            .await
            .map_err(|e| e.to_string())?;
        let id = self
            .rt
            .create(&request)
            .await
            .map_err(|e| format!("cannot create the container for {}: {e}", job.purpose))?;
        if let Effect::OneShot { id: known, .. } = &mut self.journal.records[at].effect {
            *known = Some(id.clone());
        }
        let ran = match self.write().await {
            Ok(()) => self.watch(&id, &job.purpose, job.limit, spec).await,
            Err(e) => Err(e.to_string()),
        };
        // Always removed, whatever happened; a failure to remove is left to
        // recovery (the journal still has it).
        match self.rt.remove(&id).await {
            Ok(()) | Err(runtime::RuntimeError::NotFound { .. }) => {
                self.journal.records[at].undone = true;
                if let Err(e) = self.write().await {
                    tracing::warn!(error = %e, "cannot record the removal of {temp}");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot remove {temp}; recovery removes it"),
        }
        ran
    }

    /// Starts the one-shot container `id` and waits for its end, at most
    /// `limit` (and never past the activity's deadline).
    async fn watch(
        &self,
        id: &str,
        purpose: &str,
        limit: Duration,
        spec: Option<&ContainerSpec>,
    ) -> Result<String, String> {
        self.rt
            .start(id)
            .await
            .map_err(|e| format!("cannot start {purpose}: {e}"))?;
        let until = Instant::now()
            .checked_add(limit)
            .map_or(self.deadline, |t| t.min(self.deadline));
        let code = loop {
            let d = self
                .rt
                .inspect(id)
                .await
                .map_err(|e| format!("cannot follow {purpose}: {e}"))?
                .ok_or_else(|| format!("the container of {purpose} disappeared"))?;
            if !matches!(
                d.state.status,
                runtime::Status::Running | runtime::Status::Created | runtime::Status::Restarting
            ) {
                break d.state.exit_code;
            }
            if Instant::now() >= until {
                let why = if until >= self.deadline {
                    "the activity's time ran out".to_string()
                } else {
                    format!("hookTimeout {}", humantime::format_duration(limit))
                };
                let said = self.said(id, spec).await;
                let reason = format!("{purpose} did not finish within {why}; it was stopped");
                tracing::warn!("{reason}; its last output:\n{said}");
                return Err(output::with_output(reason, &said));
            }
            tokio::time::sleep(POLL).await;
        };
        if code == 0 {
            return self
                .rt
                .logs(id)
                .await
                .map_err(|e| format!("cannot read the output of {purpose}: {e}"));
        }
        let said = self.said(id, spec).await;
        let reason = format!("{purpose} exited with code {code}");
        tracing::warn!("{reason}; its last output:\n{said}");
        Err(output::with_output(reason, &said))
    }

    /// The end of what container `id` printed, redacted.
    async fn said(&self, id: &str, spec: Option<&ContainerSpec>) -> String {
        match self.rt.logs(id).await {
            Ok(raw) => output::last_words(&raw, spec, &self.options.redactor),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the output of {id}");
                String::new()
            }
        }
    }

    /// The anonymous volumes of unit `i`'s new container, so that its
    /// one-shot containers see the very data it will.
    pub(super) async fn new_volumes(&self, i: usize) -> Vec<(String, String)> {
        let Some(id) = &self.units[i].new_id else {
            return self.units[i].entry.execution.inherited_volumes.clone();
        };
        match self.rt.inspect(id).await {
            Ok(Some(d)) => crate::observe::container(d, &Default::default()).anonymous_volumes,
            _ => self.units[i].entry.execution.inherited_volumes.clone(),
        }
    }

    /// `preStart` of unit `i`, in a one-shot container of the new image,
    /// once its old container is stopped and before the new one starts.
    pub(super) async fn pre_start(&mut self, i: usize) -> Result<(), ExecuteError> {
        let u = &self.units[i];
        let (Some(spec), true) = (u.spec, u.hooks) else {
            return Ok(());
        };
        let Some(cmd) = spec.rollout.hooks.pre_start.clone() else {
            return Ok(());
        };
        let name = u.name().to_string();
        self.set(&name, ActionStatus::Activating, "Running preStart.");
        self.emit(Status::Activating, None);
        let anonymous = self.new_volumes(i).await;
        let job = OneShot {
            purpose: "preStart".into(),
            base: &spec.config,
            anonymous,
            networks: self.units[i].entry.execution.networks.clone(),
            cmd,
            limit: spec.rollout.hooks.timeout(),
        };
        // Set before it runs: a preStart that failed half-way may have
        // changed data as much as one that finished.
        self.units[i].hooks_ran = true;
        self.one_shot(i, job)
            .await
            .map(|_| ())
            .map_err(|reason| ExecuteError::Hook { name, reason })
    }

    /// Before the activity's containers go back: for each unit to roll
    /// back whose hooks or migrations ran, its new container is stopped (so
    /// nothing works on the data meanwhile), the down scripts of its
    /// migrations run newest first, then its `onRollback` in a one-shot
    /// container of the old image. Returns one line per step, for the
    /// outcome.
    pub(super) async fn before_undo(&mut self, only: Option<&BTreeSet<String>>) -> Vec<String> {
        let mut notes = Vec::new();
        for i in 0..self.units.len() {
            let u = &self.units[i];
            let in_scope = only.is_none_or(|o| o.contains(u.name()))
                && !self.journal.committed.contains(u.name());
            if !in_scope || !u.hooks_ran {
                continue;
            }
            let name = u.name().to_string();
            if let Some(id) = u.new_id.clone() {
                if let Err(e) = self
                    .rt
                    .stop(&id, self.stop_timeout(self.units[i].spec))
                    .await
                {
                    tracing::warn!(error = %e, "cannot stop the new {name} before undoing its hooks");
                }
            }
            for note in self.migrate_down(i).await {
                self.emit(Status::Rollback, Some(note.clone()));
                notes.push(note);
            }
            let u = &self.units[i];
            let Some(cmd) = u.spec.and_then(|s| s.rollout.hooks.on_rollback.clone()) else {
                continue;
            };
            let Some(old) = u.old else {
                notes.push(format!(
                    "{name}: onRollback not run: there is no previous version to run it in"
                ));
                continue;
            };
            let limit = u
                .spec
                .map_or(crate::spec::model::DEFAULT_HOOK_TIMEOUT, |s| {
                    s.rollout.hooks.timeout()
                });
            let job = OneShot {
                purpose: "onRollback".into(),
                base: &old.config,
                anonymous: old.anonymous_volumes.clone(),
                networks: Vec::new(),
                cmd,
                limit,
            };
            let note = match self.one_shot(i, job).await {
                Ok(_) => format!("{name}: onRollback ran (exit 0)"),
                Err(reason) => format!("{name}: {reason}"),
            };
            tracing::info!("{note}");
            self.emit(Status::Rollback, Some(note.clone()));
            notes.push(note);
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ContainerConfig {
        let image = crate::spec::ImageRef::parse("127.0.0.1:5000/app:2").expect("a reference");
        let mut c = ContainerConfig::placeholder(image);
        c.env.insert("MODE".into(), Some("fast".into()));
        c.user = Some("nobody".into());
        c.restart = RestartPolicy::Always;
        c
    }

    #[test]
    fn a_one_shot_runs_the_command_with_sh_c_and_keeps_the_services_env_and_user() {
        let c = one_shot_config(&base(), "echo hi >> /data/log");
        assert_eq!(
            c.entrypoint,
            Some(vec!["/bin/sh".to_string(), "-c".to_string()])
        );
        assert_eq!(c.cmd, Some(vec!["echo hi >> /data/log".to_string()]));
        assert_eq!(c.env.get("MODE"), Some(&Some("fast".to_string())));
        assert_eq!(c.user.as_deref(), Some("nobody"));
        assert_eq!(c.image, base().image);
    }

    #[test]
    fn a_one_shot_never_restarts_publishes_ports_or_runs_a_health_check() {
        let mut b = base();
        b.ports
            .extend(crate::spec::values::parse_port("8080:80").expect("a port"));
        let c = one_shot_config(&b, "true");
        assert_eq!(c.restart, RestartPolicy::No);
        assert!(c.ports.is_empty());
        assert_eq!(c.health.test, Some(HealthTest::Disabled));
    }

    #[test]
    fn hooks_run_only_on_create_and_recreate() {
        for action in [
            Action::Keep,
            Action::Start,
            Action::Update,
            Action::Remove,
            Action::Ignore,
        ] {
            assert!(!runs_hooks(action), "{action:?}");
        }
        assert!(runs_hooks(Action::Create));
        assert!(runs_hooks(Action::Recreate));
    }

    #[test]
    fn a_drift_repair_runs_hooks_only_when_the_spec_changed() {
        let spec = super::super::output::spec_with_env(&[]);
        let same = crate::spec::hash::spec_hash(&spec.config);
        let s = Some(&spec);
        assert!(hooks_run(Action::Recreate, s, Some("other"), true));
        assert!(!hooks_run(Action::Recreate, s, Some(&same), true));
        // Removed by hand: put back as it was.
        assert!(!hooks_run(Action::Create, s, None, true));
        // Not a drift repair: every create and recreate runs them.
        assert!(hooks_run(Action::Create, s, None, false));
        assert!(hooks_run(Action::Recreate, s, Some(&same), false));
        assert!(!hooks_run(Action::Start, s, Some("other"), false));
    }

    #[test]
    fn a_one_shot_is_labelled_berths_but_as_no_component() {
        let l = one_shot_labels("dev1", "preStart");
        assert_eq!(
            l.get(labels::ONE_SHOT).map(String::as_str),
            Some("preStart")
        );
        let owner = labels::ownership(&l).expect("berth's");
        assert_eq!(owner.instance, "dev1");
        assert_eq!(owner.component, None);
    }
}
