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
use crate::journal::{Effect, Journal, Migration, StateDir};
use crate::labels;
use crate::plan::Action;
use crate::redact::Redactor;
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

/// What the undo log keeps of a unit's hooks: its migrations' directory
/// and `onRollback`, when its hooks run and it has either (a `preStart`
/// or `postStart` alone leaves nothing to undo).
pub(super) fn undoable(hooks: bool, spec: Option<&ContainerSpec>) -> Option<crate::journal::Hooks> {
    let h = &spec.filter(|_| hooks)?.rollout.hooks;
    if h.migrations.is_none() && h.on_rollback.is_none() {
        return None;
    }
    Some(crate::journal::Hooks {
        migrations: h.migrations.clone(),
        on_rollback: h.on_rollback.clone(),
        timeout_ms: u64::try_from(h.timeout().as_millis()).unwrap_or(u64::MAX),
    })
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
    /// The service's `/etc/hosts` entries, resolved (`name:ip`).
    pub extra_hosts: Vec<String>,
    /// The service's extra networks (joined without the service's aliases,
    /// so that nothing sent to the service reaches the one-shot).
    pub networks: Vec<(String, Vec<String>)>,
    /// The shell command.
    pub cmd: String,
    /// How long it may run.
    pub limit: Duration,
    /// The migration it runs, journaled with it.
    pub migration: Option<Migration>,
}

/// Where one-shot containers are journaled: an activity's run (with its
/// test pause points) or a recovery's journal. One-shots run during an
/// activity and during a recovery's undo alike, so both go through
/// [`one_shot`].
pub(super) trait Ledger {
    /// The undo log.
    fn journal(&mut self) -> &mut Journal;
    /// The state directory (for the migration record).
    fn state(&self) -> &StateDir;
    /// Writes the undo log (fsynced).
    async fn write(&mut self) -> Result<(), String>;
}

/// What a one-shot needs besides its container: whose berth runs it, how
/// to redact its output, when it must have ended.
pub(super) struct Context<'a> {
    /// This berth's instance (for the labels).
    pub instance: &'a str,
    /// How its output is redacted.
    pub redactor: &'a Redactor,
    /// The activity's deadline; none in recovery.
    pub deadline: Option<Instant>,
}

/// Runs one one-shot container of component `name` to its end and removes
/// it. `Err` says why it failed (non-zero exit, timeout, engine error),
/// with the end of its output, redacted. On success, what it printed (the
/// end of it, unredacted: for berth to read, like a migration listing,
/// never to show). A migration is marked applied in the journal before its
/// container is removed.
pub(super) async fn one_shot<R: Runtime, L: Ledger>(
    rt: &R,
    ledger: &mut L,
    ctx: &Context<'_>,
    name: &str,
    job: OneShot<'_>,
) -> Result<String, String> {
    let temp = format!("{name}{ONE_SHOT_SUFFIX}");
    let request = CreateRequest {
        name: temp.clone(),
        config: one_shot_config(job.base, &job.cmd),
        labels: one_shot_labels(ctx.instance, &job.purpose),
        extra_hosts: job.extra_hosts,
        inherited_volumes: job.anonymous,
        networks: job
            .networks
            .into_iter()
            .map(|(n, _)| (n, Vec::new()))
            .collect(),
    };
    // A one-shot of ours left on the name (its removal failed and no
    // recovery ran since) would block this one: it goes first.
    if let Ok(Some(left)) = rt.inspect(&temp).await {
        let ours = left.name == temp
            && left.labels.contains_key(labels::ONE_SHOT)
            && labels::ownership(&left.labels).is_some_and(|o| o.instance == ctx.instance);
        if ours {
            if let Err(e) = rt.remove(&left.id).await {
                tracing::warn!(error = %e, "cannot remove the leftover {temp}");
            }
        }
    }
    let is_migration = job.migration.is_some();
    let at = ledger.journal().push(Effect::OneShot {
        name: name.to_string(),
        purpose: job.purpose.clone(),
        temp: temp.clone(),
        id: None,
        image: job.base.image.to_string(),
        migration: job.migration,
    });
    ledger.write().await?;
    let id = rt
        .create(&request)
        .await
        .map_err(|e| format!("cannot create the container for {}: {e}", job.purpose))?;
    if let Effect::OneShot { id: known, .. } = &mut ledger.journal().records[at].effect {
        *known = Some(id.clone());
    }
    let env = &job.base.env;
    let mut ran = match ledger.write().await {
        Ok(()) => watch(rt, ctx, &id, &job.purpose, job.limit, env).await,
        Err(e) => Err(e),
    };
    if ran.is_ok() && is_migration {
        if let Effect::OneShot {
            migration: Some(m), ..
        } = &mut ledger.journal().records[at].effect
        {
            m.applied = true;
        }
        if let Err(e) = ledger.write().await {
            // Applied all the same: the journal in memory says so, and a
            // rollback of this activity undoes it.
            ran = Err(format!("cannot record {}: {e}", job.purpose));
        }
    }
    // Always removed, whatever happened; a failure to remove is left to
    // recovery (the journal still has it).
    match rt.remove(&id).await {
        Ok(()) | Err(runtime::RuntimeError::NotFound { .. }) => {
            ledger.journal().records[at].undone = true;
            if let Err(e) = ledger.write().await {
                tracing::warn!(error = %e, "cannot record the removal of {temp}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot remove {temp}; recovery removes it"),
    }
    ran
}

/// Starts the one-shot container `id` and waits for its end, at most
/// `limit` (and never past the activity's deadline).
async fn watch<R: Runtime>(
    rt: &R,
    ctx: &Context<'_>,
    id: &str,
    purpose: &str,
    limit: Duration,
    env: &Env,
) -> Result<String, String> {
    rt.start(id)
        .await
        .map_err(|e| format!("cannot start {purpose}: {e}"))?;
    let by_limit = Instant::now().checked_add(limit);
    let until = match (by_limit, ctx.deadline) {
        (Some(t), Some(d)) => Some(t.min(d)),
        (t, d) => t.or(d),
    };
    let code = loop {
        let d = rt
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
        if until.is_some_and(|u| Instant::now() >= u) {
            let why = if ctx.deadline.is_some() && until == ctx.deadline {
                "the activity's time ran out".to_string()
            } else {
                format!("hookTimeout {}", humantime::format_duration(limit))
            };
            let said = said(rt, ctx, id, env).await;
            let reason = format!("{purpose} did not finish within {why}; it was stopped");
            tracing::warn!("{reason}; its last output:\n{said}");
            return Err(output::with_output(reason, &said));
        }
        tokio::time::sleep(POLL).await;
    };
    if code == 0 {
        return rt
            .logs(id)
            .await
            .map_err(|e| format!("cannot read the output of {purpose}: {e}"));
    }
    let said = said(rt, ctx, id, env).await;
    let reason = format!("{purpose} exited with code {code}");
    tracing::warn!("{reason}; its last output:\n{said}");
    Err(output::with_output(reason, &said))
}

/// The end of what container `id` printed, redacted.
async fn said<R: Runtime>(rt: &R, ctx: &Context<'_>, id: &str, env: &Env) -> String {
    match rt.logs(id).await {
        Ok(raw) => output::last_words_env(&raw, Some(env), ctx.redactor),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the output of {id}");
            String::new()
        }
    }
}

/// A component's env as the model keeps it.
type Env = BTreeMap<String, Option<String>>;

impl<R: Runtime> Ledger for Run<'_, R> {
    fn journal(&mut self) -> &mut Journal {
        &mut self.journal
    }

    fn state(&self) -> &StateDir {
        self.state
    }

    async fn write(&mut self) -> Result<(), String> {
        Run::write(self).await.map_err(|e| e.to_string())
    }
}

impl<'a, R: Runtime> Run<'a, R> {
    /// What this activity's one-shots run with: its instance, its
    /// redaction, its deadline (borrowing the options, not the run).
    fn hook_context(&self) -> Context<'a> {
        let options: &'a ExecuteOptions = self.options;
        Context {
            instance: &options.instance,
            redactor: &options.redactor,
            deadline: Some(self.deadline),
        }
    }

    /// Runs one one-shot container for unit `i` (see [`one_shot`]).
    pub(super) async fn one_shot(&mut self, i: usize, job: OneShot<'_>) -> Result<String, String> {
        let name = self.units[i].entry.id.clone();
        let rt = self.rt;
        let ctx = self.hook_context();
        one_shot(rt, self, &ctx, &name, job).await
    }

    /// The anonymous volumes and the resolved host entries of unit `i`'s
    /// new container, so that its one-shot containers see the very data
    /// and names it will.
    pub(super) async fn new_settings(&self, i: usize) -> (Vec<(String, String)>, Vec<String>) {
        let fallback = || {
            (
                self.units[i].entry.execution.inherited_volumes.clone(),
                Vec::new(),
            )
        };
        let Some(id) = &self.units[i].new_id else {
            return fallback();
        };
        match self.rt.inspect(id).await {
            Ok(Some(d)) => {
                let hosts = d.extra_hosts.clone();
                let anonymous = crate::observe::container(d, &Default::default()).anonymous_volumes;
                (anonymous, hosts)
            }
            _ => fallback(),
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
        let (anonymous, extra_hosts) = self.new_settings(i).await;
        let job = OneShot {
            purpose: "preStart".into(),
            base: &spec.config,
            anonymous,
            extra_hosts,
            networks: self.units[i].entry.execution.networks.clone(),
            cmd,
            limit: spec.rollout.hooks.timeout(),
            migration: None,
        };
        self.one_shot(i, job)
            .await
            .map(|_| ())
            .map_err(|reason| ExecuteError::Hook { name, reason })
    }

    /// Before the activity's containers go back: the hooks of the units to
    /// roll back are undone ([`super::compensate`]: down migrations, then
    /// `onRollback`), each step reported. Returns one line per step, for
    /// the outcome.
    pub(super) async fn before_undo(&mut self, only: Option<&BTreeSet<String>>) -> Vec<String> {
        let rt = self.rt;
        let ctx = self.hook_context();
        let notes = super::compensate::compensate(rt, self, &ctx, only).await;
        for note in &notes {
            self.emit(Status::Rollback, Some(note.clone()));
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
