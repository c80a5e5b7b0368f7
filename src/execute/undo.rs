//! The one way back: replay the journal's effects in reverse, each undone
//! idempotently (an effect whose target is already in the undone state
//! counts as undone), then check on the engine that the containers really
//! are as they were. Rollback during an activity and recovery after a crash
//! both come here.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::journal::{Effect, Journal};
use crate::labels;
use crate::runtime::{self, ContainerDetails, Runtime, RuntimeError};

/// What an undo did and what it could not do.
#[derive(Debug, Default)]
pub(super) struct Settled {
    /// One line per container put back, for people.
    pub done: Vec<String>,
    /// One line per problem left; empty means verified.
    pub left: Vec<String>,
}

/// How long an undo step may wait for a container to stop.
const UNDO_STOP: Duration = Duration::from_secs(10);

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn is_running(c: &ContainerDetails) -> bool {
    matches!(
        c.state.status,
        runtime::Status::Running | runtime::Status::Restarting | runtime::Status::Paused
    )
}

/// Removes a container this activity created; one that is gone already
/// counts as removed.
async fn remove_new<R: Runtime>(rt: &R, id: &str) -> Result<bool, String> {
    match rt.remove(id).await {
        Ok(()) => Ok(true),
        Err(RuntimeError::NotFound { .. }) => Ok(false),
        Err(e) => Err(format!(
            "cannot remove the new container {}: {e}",
            short(id)
        )),
    }
}

async fn inspect<R: Runtime>(rt: &R, id: &str) -> Result<Option<ContainerDetails>, String> {
    rt.inspect(id)
        .await
        .map_err(|e| format!("cannot inspect {}: {e}", short(id)))
}

/// A container of this instance on exactly the name `temp`.
fn ours(c: &ContainerDetails, temp: &str, instance: &str) -> bool {
    c.name == temp && labels::ownership(&c.labels).is_some_and(|o| o.instance == instance)
}

/// The longest wait for a create the engine is still carrying out.
const CREATE_IN_FLIGHT: Duration = Duration::from_secs(60);

/// A create recorded without its id whose container is not there: it was
/// never issued, it failed, or the engine is still carrying it out (berth
/// was killed while the request was in flight, and the engine finishes
/// what it read). Inspecting cannot tell, since the engine makes a
/// container visible only at the end of a create; but it reserves the name
/// at the start. So a placeholder is created under the name: a conflict
/// means the earlier create holds it, and its container is waited for and
/// removed; a placeholder that is created means no earlier create can
/// still finish under that name, and it is removed again. `Ok(true)` when
/// the earlier create's container was removed.
async fn settle_create<R: Runtime>(
    rt: &R,
    temp: &str,
    image: &str,
    instance: &str,
) -> Result<bool, String> {
    let Ok(image_ref) = crate::spec::ImageRef::parse(image) else {
        return Ok(false);
    };
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(labels::MANAGED.to_string(), "true".to_string());
    labels.insert(labels::INSTANCE.to_string(), instance.to_string());
    labels.insert(labels::PLACEHOLDER.to_string(), "true".to_string());
    let request = runtime::CreateRequest {
        name: temp.to_string(),
        config: crate::spec::ContainerConfig::placeholder(image_ref),
        labels,
        extra_hosts: Vec::new(),
        inherited_volumes: Vec::new(),
        networks: Vec::new(),
    };
    match rt.create(&request).await {
        Ok(id) => {
            rt.remove(&id)
                .await
                .map_err(|e| format!("cannot remove the placeholder {temp}: {e}"))?;
            Ok(false)
        }
        Err(RuntimeError::Conflict { .. }) => {
            let deadline = tokio::time::Instant::now() + CREATE_IN_FLIGHT;
            loop {
                match inspect(rt, temp).await? {
                    Some(c) if ours(&c, temp, instance) => return remove_new(rt, &c.id).await,
                    // Not berth's: nothing of this activity to undo.
                    Some(_) => return Ok(false),
                    None if tokio::time::Instant::now() >= deadline => {
                        return Err(format!(
                            "a create of {temp} is still in progress on the engine after {}s",
                            CREATE_IN_FLIGHT.as_secs()
                        ))
                    }
                    None => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        // The image is gone: the earlier create could not have made
        // anything either.
        Err(RuntimeError::NotFound { .. }) => Ok(false),
        Err(e) => Err(format!(
            "cannot tell whether {temp} is still being created: {e}"
        )),
    }
}

/// Undoes one effect. `Ok(true)` when it changed something on the engine.
async fn undo_one<R: Runtime>(
    rt: &R,
    effect: &Effect,
    created: &BTreeSet<String>,
    instance: &str,
) -> Result<bool, String> {
    match effect {
        Effect::Create {
            temp, id, image, ..
        } => {
            let target = match id {
                Some(id) => inspect(rt, id).await?,
                // Created, perhaps, before the id was written: only a
                // container of ours on that very temporary name is it.
                None => inspect(rt, temp).await?.filter(|c| ours(c, temp, instance)),
            };
            match (target, id, image) {
                (Some(c), _, _) => remove_new(rt, &c.id).await,
                (None, None, Some(image)) => settle_create(rt, temp, image, instance).await,
                (None, _, _) => Ok(false),
            }
        }
        Effect::OneShot {
            temp, id, image, ..
        } => {
            let target = match id {
                Some(id) => inspect(rt, id).await?,
                None => inspect(rt, temp).await?.filter(|c| ours(c, temp, instance)),
            };
            match (target, id) {
                (Some(c), _) => remove_new(rt, &c.id).await,
                (None, None) => settle_create(rt, temp, image, instance).await,
                (None, Some(_)) => Ok(false),
            }
        }
        Effect::Start { id, .. } | Effect::Rename { id, .. } if created.contains(id) => {
            remove_new(rt, id).await
        }
        Effect::Start {
            id,
            was_running: false,
            ..
        } => match inspect(rt, id).await? {
            Some(c) if is_running(&c) => rt
                .stop(id, UNDO_STOP)
                .await
                .map(|()| true)
                .map_err(|e| format!("cannot stop {} again: {e}", c.name)),
            _ => Ok(false),
        },
        Effect::Start { .. } | Effect::Remove { .. } => Ok(false),
        Effect::Rename { id, from, to, .. } => {
            let Some(c) = inspect(rt, id).await? else {
                return Err(format!(
                    "the previous container {from} ({}) is gone",
                    short(id)
                ));
            };
            if c.name == *from {
                return Ok(false);
            }
            // The engine resolves a reference that names no container to an
            // id prefix: only a container really named `from` holds it.
            if let Some(holder) = inspect(rt, from)
                .await?
                .filter(|h| h.id != c.id && h.name == *from)
            {
                if created.contains(&holder.id) {
                    remove_new(rt, &holder.id).await?;
                } else {
                    return Err(format!(
                        "cannot rename {to} back to {from}: the name is held by another container ({})",
                        short(&holder.id)
                    ));
                }
            }
            rt.rename(id, from)
                .await
                .map(|()| true)
                .map_err(|e| format!("cannot rename {to} back to {from}: {e}"))
        }
        Effect::Stop {
            id,
            was_running: true,
            name,
        } => {
            let Some(c) = inspect(rt, id).await? else {
                return Err(format!("the previous container of {name} is gone"));
            };
            if is_running(&c) {
                return Ok(false);
            }
            rt.start(id)
                .await
                .map(|()| true)
                .map_err(|e| format!("cannot start the previous {name} again: {e}"))
        }
        Effect::Stop { .. } => Ok(false),
        Effect::Update {
            id, previous, name, ..
        } => {
            let Some(c) = inspect(rt, id).await? else {
                return Err(format!("the container of {name} is gone"));
            };
            let mut config = crate::observe::container(c, &HashMap::new()).config;
            if config.restart == previous.restart && config.resources == previous.resources {
                return Ok(false);
            }
            config.restart = previous.restart;
            config.resources = previous.resources;
            rt.update(id, &config)
                .await
                .map(|()| true)
                .map_err(|e| format!("cannot revert the in-place update of {name}: {e}"))
        }
    }
}

/// Replays, in reverse, the effects not yet undone of the containers in
/// `only` (every uncommitted container when `None`), then verifies them.
/// Records are marked undone as they go, so a later replay (recovery after
/// a failed rollback) starts where this one stopped.
pub(super) async fn undo<R: Runtime>(
    rt: &R,
    journal: &mut Journal,
    only: Option<&BTreeSet<String>>,
) -> Settled {
    let created: BTreeSet<String> = journal.created().into_iter().map(str::to_string).collect();
    let wanted = |name: &str, committed: &BTreeSet<String>| {
        !committed.contains(name) && only.is_none_or(|o| o.contains(name))
    };
    let mut settled = Settled::default();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut broken: BTreeSet<String> = BTreeSet::new();
    let instance = journal.instance.clone();
    // Old containers are started again last, in the order they were
    // stopped (dependencies first): a container on `container:<parent>`
    // can start only once its parent runs, and the parallel stops were
    // journaled in plan order, which the reverse walk would turn around.
    let is_restart = |e: &Effect| {
        matches!(
            e,
            Effect::Stop {
                was_running: true,
                ..
            }
        )
    };
    let backwards = (0..journal.records.len())
        .rev()
        .filter(|i| !is_restart(&journal.records[*i].effect));
    let restarts = (0..journal.records.len()).filter(|i| is_restart(&journal.records[*i].effect));
    let order: Vec<usize> = backwards.chain(restarts).collect();
    for i in order {
        let record = &journal.records[i];
        let name = record.effect.name().to_string();
        if record.undone || !wanted(&name, &journal.committed) || broken.contains(&name) {
            continue;
        }
        match undo_one(rt, &record.effect, &created, &instance).await {
            Ok(changed) => {
                journal.records[i].undone = true;
                if changed {
                    touched.insert(name);
                }
            }
            Err(problem) => {
                // The rest of this container's effects would build on a
                // step that did not happen; the other containers go on.
                settled.left.push(format!("{name}: {problem}"));
                broken.insert(name);
            }
        }
    }
    let names: Vec<String> = journal
        .intents
        .iter()
        .map(|i| i.name.clone())
        .filter(|n| wanted(n, &journal.committed) && !broken.contains(n))
        .collect();
    for name in names {
        match verify(rt, journal, &name).await {
            Ok(()) if touched.contains(&name) => settled.done.push(describe(journal, &name)),
            Ok(()) => {}
            Err(problem) => settled.left.push(format!("{name}: {problem}")),
        }
    }
    settled
}

/// A line for a container that was put back.
fn describe(journal: &Journal, name: &str) -> String {
    match journal.intent(name) {
        Some(i) if i.action == "update" => format!("reverted the in-place update of {name}"),
        Some(i) if i.action == "remove" => {
            format!("started {name} again (the activity was to remove it)")
        }
        Some(i) if i.action == "start" && i.old_name.is_some() => {
            format!("put the previous {name} back on its temporary name")
        }
        Some(i) if i.action == "start" => format!("stopped {name} again"),
        Some(i) if i.old_id.is_some() && i.old_running => {
            format!("restored the previous {name} and started it")
        }
        Some(i) if i.old_id.is_some() => format!("restored the previous {name}"),
        _ => format!("removed the unfinished new container of {name}"),
    }
}

/// Whether `name` is back as it was: the old container under its name,
/// running if it was; the containers the activity created gone.
async fn verify<R: Runtime>(rt: &R, journal: &Journal, name: &str) -> Result<(), String> {
    let Some(intent) = journal.intent(name) else {
        return Ok(());
    };
    if let Some(old_id) = &intent.old_id {
        let c = inspect(rt, old_id)
            .await?
            .ok_or_else(|| format!("the previous container ({}) is gone", short(old_id)))?;
        let was_named = intent.old_name.as_deref().unwrap_or(name);
        if c.name != was_named {
            return Err(format!(
                "the previous container is named {}, not {was_named}",
                c.name
            ));
        }
        if intent.old_running && !is_running(&c) {
            return Err(format!(
                "the previous container is {}, not running",
                c.state.status.as_str()
            ));
        }
    }
    for record in &journal.records {
        match &record.effect {
            Effect::Create {
                name: n,
                id: Some(id),
                ..
            } if n == name && inspect(rt, id).await?.is_some() => {
                return Err(format!("the new container {} is still there", short(id)));
            }
            Effect::Update {
                name: n,
                id,
                previous,
            } if n == name => {
                if let Some(c) = inspect(rt, id).await? {
                    let now = crate::observe::container(c, &HashMap::new()).config;
                    if now.restart != previous.restart || now.resources != previous.resources {
                        return Err("the in-place update was not reverted".into());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Finishes a committed container: its old container (of a recreate or a
/// removal) goes. Idempotent: one already gone counts as removed.
pub(super) async fn finish<R: Runtime>(
    rt: &R,
    journal: &Journal,
    name: &str,
) -> Result<bool, String> {
    // A hook's one-shot container that could not be removed when it ended
    // goes now (issue 22): committed or not, nothing of it may stay.
    for record in journal.records.iter().filter(|r| !r.undone) {
        if let Effect::OneShot {
            name: n,
            id: Some(id),
            ..
        } = &record.effect
        {
            if n == name {
                remove_new(rt, id).await?;
            }
        }
    }
    let Some(intent) = journal.intent(name) else {
        return Ok(false);
    };
    let (Some(old_id), "recreate" | "remove") = (&intent.old_id, intent.action.as_str()) else {
        return Ok(false);
    };
    match rt.remove(old_id).await {
        Ok(()) => Ok(true),
        Err(RuntimeError::NotFound { .. }) => Ok(false),
        Err(e) => Err(format!("cannot remove the old container of {name}: {e}")),
    }
}
