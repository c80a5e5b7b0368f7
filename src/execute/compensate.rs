//! Undoing what hooks did to data (issue 22): the down scripts of the
//! migrations an activity applied, newest first, then the component's
//! `onRollback` in a one-shot container of the old image. Containers are
//! put back by the undo log's replay ([`super::undo`]); data is put back
//! here, from the same journal, before that replay, so that a rollback
//! during an activity and a recovery after a kill do the very same steps.
//!
//! # Guarantees
//! - It runs before the replay removes the new container, whose settings
//!   (env, mounts, volumes, networks, user) the down scripts run with.
//! - A migration whose one-shot was still running when berth was killed is
//!   waited for, at most `hookTimeout`; it counts as applied only if it
//!   exited 0. One that never ended is stopped and not undone (nothing
//!   knows how far it got), which the note says.
//! - The record (`migrations.json`) follows each down script that ran, so
//!   it always names the last migration the data has.
//! - A component is compensated once: the journal remembers it
//!   (`compensated`), so a replay after a crash does not run `onRollback`
//!   again; a down script interrupted half-way runs again (down scripts
//!   must be idempotent).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::hooks::{self, Context, Ledger, OneShot};
use super::migrations;
use crate::journal::{Effect, Hooks};
use crate::observe::ObservedContainer;
use crate::runtime::{self, Runtime};

/// How long the new container may take to stop before its data is undone.
const STOP: Duration = Duration::from_secs(10);

/// How often an unfinished migration is looked at while berth waits for it.
const POLL: Duration = Duration::from_millis(200);

/// Undoes the hooks of every component in `only` (all when `None`) that is
/// not committed, not yet compensated, and whose `preStart` or migrations
/// ran. One line per step, for the outcome and the log.
pub(super) async fn compensate<R: Runtime, L: Ledger>(
    rt: &R,
    ledger: &mut L,
    ctx: &Context<'_>,
    only: Option<&BTreeSet<String>>,
) -> Vec<String> {
    let journal = ledger.journal();
    let todo: Vec<(String, Hooks, Option<String>)> = journal
        .intents
        .iter()
        .rev()
        .filter(|i| only.is_none_or(|o| o.contains(&i.name)))
        .filter(|i| !journal.committed.contains(&i.name) && !journal.compensated.contains(&i.name))
        .filter_map(|i| Some((i.name.clone(), i.hooks.clone()?, i.old_id.clone())))
        .filter(|(name, _, _)| hooks_ran(journal, name))
        .collect();
    let mut notes = Vec::new();
    for (name, hooks, old_id) in todo {
        let new = stop_new(rt, ledger, &name).await;
        settle_unfinished(rt, ledger, &name, &hooks, &mut notes).await;
        if let Some(dir) = &hooks.migrations {
            migrate_down(
                rt,
                ledger,
                ctx,
                &name,
                dir,
                &hooks,
                new.as_ref(),
                &mut notes,
            )
            .await;
        }
        if let Some(cmd) = &hooks.on_rollback {
            notes.push(on_rollback(rt, ledger, ctx, &name, cmd, &hooks, old_id.as_deref()).await);
        }
        ledger.journal().compensated.insert(name);
        if let Err(e) = ledger.write().await {
            tracing::warn!(error = %e, "cannot record that the hooks were undone");
        }
    }
    for note in &notes {
        tracing::info!("{note}");
    }
    notes
}

/// Whether `name`'s `preStart` or a migration ran (or began).
fn hooks_ran(journal: &crate::journal::Journal, name: &str) -> bool {
    journal.records.iter().any(|r| match &r.effect {
        Effect::OneShot {
            name: n,
            purpose,
            migration,
            ..
        } => n == name && (purpose == "preStart" || migration.is_some()),
        _ => false,
    })
}

/// The new container of `name`, stopped so that nothing works on the data
/// while it is undone; `None` when there is none (any more).
async fn stop_new<R: Runtime, L: Ledger>(
    rt: &R,
    ledger: &mut L,
    name: &str,
) -> Option<ObservedContainer> {
    let id = ledger
        .journal()
        .records
        .iter()
        .rev()
        .find_map(|r| match &r.effect {
            Effect::Create {
                name: n,
                id: Some(id),
                ..
            } if n == name => Some(id.clone()),
            _ => None,
        })?;
    let details = rt.inspect(&id).await.ok().flatten()?;
    if matches!(
        details.state.status,
        runtime::Status::Running | runtime::Status::Restarting | runtime::Status::Paused
    ) {
        if let Err(e) = rt.stop(&id, STOP).await {
            tracing::warn!(error = %e, "cannot stop the new {name} before undoing its hooks");
        }
    }
    Some(crate::observe::container(details, &Default::default()))
}

/// A migration of `name` whose one-shot is still there unremoved (berth was
/// killed while it ran): waited for, at most `hookTimeout`, and marked
/// applied if it exited 0. The replay removes its container.
async fn settle_unfinished<R: Runtime, L: Ledger>(
    rt: &R,
    ledger: &mut L,
    name: &str,
    hooks: &Hooks,
    notes: &mut Vec<String>,
) {
    let open: Vec<(usize, String, String)> = ledger
        .journal()
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.undone)
        .filter_map(|(at, r)| match &r.effect {
            Effect::OneShot {
                name: n,
                id: Some(id),
                migration: Some(m),
                ..
            } if n == name && !m.applied => Some((at, id.clone(), m.script.clone())),
            _ => None,
        })
        .collect();
    for (at, id, script) in open {
        let until = Instant::now() + hooks.timeout();
        // The exit code once it ended; `None` when it is gone or still runs
        // at the deadline.
        let exit = loop {
            let Ok(Some(d)) = rt.inspect(&id).await else {
                break None;
            };
            let running = matches!(
                d.state.status,
                runtime::Status::Running | runtime::Status::Restarting | runtime::Status::Created
            );
            if !running {
                break Some(d.state.exit_code);
            }
            if Instant::now() >= until {
                break None;
            }
            tokio::time::sleep(POLL).await;
        };
        match exit {
            Some(0) => {
                if let Effect::OneShot {
                    migration: Some(m), ..
                } = &mut ledger.journal().records[at].effect
                {
                    m.applied = true;
                }
                notes.push(format!(
                    "{name}: migration {script} had finished (exit 0) when berth stopped"
                ));
            }
            Some(code) => notes.push(format!(
                "{name}: migration {script} had failed (exit {code}) when berth stopped; it is not undone"
            )),
            None => {
                if let Err(e) = rt.stop(&id, STOP).await {
                    tracing::debug!(error = %e, "cannot stop the unfinished migration {script}");
                }
                notes.push(format!(
                    "{name}: migration {script} did not end when berth stopped; it was stopped and is not undone"
                ));
            }
        }
    }
}

/// The down scripts of `name`'s applied migrations, newest first, in
/// one-shot containers of the new image with the new container's settings.
/// At the first migration without a down script, or whose down fails, the
/// rest stay applied (an older down over a newer schema would do harm).
#[allow(clippy::too_many_arguments)]
async fn migrate_down<R: Runtime, L: Ledger>(
    rt: &R,
    ledger: &mut L,
    ctx: &Context<'_>,
    name: &str,
    dir: &str,
    hooks: &Hooks,
    new: Option<&ObservedContainer>,
    notes: &mut Vec<String>,
) {
    let applied: Vec<usize> = ledger
        .journal()
        .records
        .iter()
        .enumerate()
        .rev()
        .filter_map(|(at, r)| match &r.effect {
            Effect::OneShot {
                name: n,
                migration: Some(m),
                ..
            } if n == name && m.applied && !m.reverted => Some(at),
            _ => None,
        })
        .collect();
    for (k, &at) in applied.iter().enumerate() {
        let Effect::OneShot {
            migration: Some(m), ..
        } = ledger.journal().records[at].effect.clone()
        else {
            continue;
        };
        let stays = |why: String| {
            format!(
                "{name}: migration {} {why}; it and the ones before it stay applied",
                m.script
            )
        };
        let outcome = match (&m.down, new) {
            (None, _) => Err(stays("has no down script".into())),
            (Some(_), None) => Err(stays(
                "cannot be undone: the new container to run its down script with is gone".into(),
            )),
            (Some(down), Some(new)) => {
                let purpose = format!("down migration {}", m.script);
                let base = as_created(new);
                let job = OneShot {
                    purpose: purpose.clone(),
                    base: &base,
                    anonymous: new.anonymous_volumes.clone(),
                    extra_hosts: new.details.extra_hosts.clone(),
                    networks: crate::plan::execution::inherited_networks(Some(new)),
                    cmd: migrations::script_command(dir, down),
                    limit: hooks.timeout(),
                    migration: None,
                };
                hooks::one_shot(rt, ledger, ctx, name, job)
                    .await
                    .map(|_| format!("{name}: {purpose} ran"))
                    .map_err(|reason| format!("{name}: {reason}"))
            }
        };
        match outcome {
            Ok(note) => {
                set_reverted(ledger, &[at]);
                if let Err(e) = migrations::store(ledger.state(), name, m.before.as_deref()).await {
                    notes.push(format!("{name}: cannot record the migrations left: {e}"));
                }
                if let Err(e) = ledger.write().await {
                    tracing::warn!(error = %e, "cannot record the down migration");
                }
                notes.push(note);
            }
            Err(note) => {
                // This one and every older one stay: the record already
                // names this one, which is the truth.
                set_reverted(ledger, &applied[k..]);
                notes.push(note);
                break;
            }
        }
    }
}

/// A container's settings with the image it really was created from (the
/// digest it was pinned to, not the tag its label names): a one-shot runs
/// the very code of the version it undoes for.
fn as_created(c: &ObservedContainer) -> crate::spec::model::ContainerConfig {
    let mut config = c.config.clone();
    if let Ok(image) = crate::spec::ImageRef::parse(&c.details.image_ref) {
        config.image = image;
    }
    config
}

fn set_reverted<L: Ledger>(ledger: &mut L, records: &[usize]) {
    for &at in records {
        if let Effect::OneShot {
            migration: Some(m), ..
        } = &mut ledger.journal().records[at].effect
        {
            m.reverted = true;
        }
    }
}

/// `onRollback` of `name` in a one-shot container of the old image, with
/// the old container's settings (every network it was on).
async fn on_rollback<R: Runtime, L: Ledger>(
    rt: &R,
    ledger: &mut L,
    ctx: &Context<'_>,
    name: &str,
    cmd: &str,
    hooks: &Hooks,
    old_id: Option<&str>,
) -> String {
    let old = match old_id {
        Some(id) => rt.inspect(id).await.ok().flatten(),
        None => None,
    };
    let Some(old) = old.map(|d| crate::observe::container(d, &Default::default())) else {
        return format!("{name}: onRollback not run: there is no previous version to run it in");
    };
    let base = as_created(&old);
    let job = OneShot {
        purpose: "onRollback".into(),
        base: &base,
        anonymous: old.anonymous_volumes.clone(),
        extra_hosts: old.details.extra_hosts.clone(),
        networks: crate::plan::execution::inherited_networks(Some(&old)),
        cmd: cmd.to_string(),
        limit: hooks.timeout(),
        migration: None,
    };
    match hooks::one_shot(rt, ledger, ctx, name, job).await {
        Ok(_) => format!("{name}: onRollback ran (exit 0)"),
        Err(reason) => format!("{name}: {reason}"),
    }
}
