//! Recovery: what an interrupted activity left, finished. Committed
//! containers keep their new version and lose their old one; everything
//! else is undone through the same log replay a rollback uses. Then the
//! temporary names are swept, for what no journal describes.

use crate::execute::hooks::{Context, Ledger};
use crate::execute::{compensate, undo};
use crate::feedback::{Feedback, Status, Tracker};
use crate::journal::{Journal, StateDir, StateError};
use crate::labels;
use crate::plan::{temporary, Temporary};
use crate::runtime::{self, Runtime};

/// The journal recovery replays, as the one-shots of its compensations
/// record themselves in it.
struct Recovery<'a> {
    state: &'a StateDir,
    journal: &'a mut Journal,
}

impl Ledger for Recovery<'_> {
    fn journal(&mut self) -> &mut Journal {
        self.journal
    }

    fn state(&self) -> &StateDir {
        self.state
    }

    async fn write(&mut self) -> Result<(), String> {
        self.state
            .store_journal(self.journal)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What recovery did, one line each.
pub type Recovered = Vec<String>;

/// Finishes whatever an interrupted activity left: committed containers'
/// cleanup, then the undo of every other effect in the journal (old
/// containers back under their names, running if they were; new ones
/// gone). Then our own temporaries that no journal names: unfinished new
/// containers go, an old container whose name is free comes back.
///
/// # Errors
/// When the engine cannot be read or a step fails; the journal is then
/// kept, with the steps done so far marked, and the next call goes on.
pub async fn recover<R: Runtime>(
    rt: &R,
    state: &StateDir,
    instance: &str,
) -> Result<Recovered, String> {
    recover_listing(rt, state, instance)
        .await
        .map(|(done, _)| done)
}

/// [`recover`], and the engine's containers as its sweep listed them when
/// recovery changed nothing (no journal, no temporary left): what the
/// engine holds now, so the activity that follows plans from that list
/// instead of asking the engine again (issue 25: a no-op lists once).
async fn recover_listing<R: Runtime>(
    rt: &R,
    state: &StateDir,
    instance: &str,
) -> Result<(Recovered, Option<Vec<runtime::ContainerDetails>>), String> {
    let journal = match state.read_journal() {
        Ok(j) => j,
        Err(e @ StateError::Corrupt { .. }) => {
            tracing::error!(error = %e, "the journal is unreadable; recovering from container names alone");
            None
        }
        Err(e) => return Err(e.to_string()),
    };
    let mut done = Vec::new();
    let journaled = journal.is_some();
    if let Some(mut journal) = journal {
        let mut left = Vec::new();
        let committed: Vec<String> = journal.committed.iter().cloned().collect();
        for name in committed {
            match undo::finish(rt, &journal, &name).await {
                Ok(true) => done.push(format!(
                    "kept the new {name} (it had passed its readiness gate) and removed the old one"
                )),
                Ok(false) => {}
                Err(e) => left.push(e),
            }
        }
        // Data before containers, as a rollback does: the down migrations
        // and onRollback run while the new container is still there.
        let ctx = Context {
            instance,
            redactor: crate::redact::default_rule(),
            deadline: None,
        };
        let mut ledger = Recovery {
            state,
            journal: &mut journal,
        };
        done.extend(compensate::compensate(rt, &mut ledger, &ctx, None).await);
        let settled = undo::undo(rt, &mut journal, None).await;
        done.extend(settled.done);
        left.extend(settled.left);
        if !left.is_empty() {
            if let Err(e) = state.store_journal(&journal).await {
                tracing::error!(error = %e, "cannot write the journal");
            }
            return Err(left.join("; "));
        }
    }
    let (swept, listed) = sweep(rt, instance).await?;
    let untouched = !journaled && swept.is_empty();
    done.extend(swept);
    state.discard_journal().await.map_err(|e| e.to_string())?;
    Ok((done, untouched.then_some(listed)))
}

/// [`recover`], and the final word on the activity the journal named (if
/// any) as a Kanto feedback message under that activity's own id, so the
/// answer reaches its sender also when it comes after a restart.
///
/// # Errors
/// As [`recover`].
pub async fn recover_with_verdict<R: Runtime>(
    rt: &R,
    state: &StateDir,
    instance: &str,
    domain: &str,
) -> Result<AfterRecovery, String> {
    let journal = state.read_journal().ok().flatten();
    let (lines, listed) = recover_listing(rt, state, instance).await?;
    let verdict = journal.and_then(|j| final_word(&j, &lines, domain));
    Ok(AfterRecovery {
        lines,
        verdict,
        listed,
    })
}

/// What [`recover_with_verdict`] did and found.
#[derive(Debug)]
pub struct AfterRecovery {
    /// What recovery did, one line each.
    pub lines: Recovered,
    /// The final word on the interrupted activity, if the journal named one.
    pub verdict: Option<Feedback>,
    /// The engine's containers as recovery last listed them, when it changed
    /// nothing; `None` when it did (the engine must be read again).
    pub listed: Option<Vec<runtime::ContainerDetails>>,
}

/// The feedback that ends the activity `journal` named, once recovery did
/// `lines`: its verdict under its own id, saying why it was interrupted.
/// `None` for a journal of no activity.
pub fn final_word(journal: &Journal, lines: &[String], domain: &str) -> Option<Feedback> {
    if journal.activity_id.is_empty() {
        return None;
    }
    let (status, words) = verdict(journal, lines);
    let message = if journal.phase == ROLLBACK_FAILED {
        words
    } else {
        format!(
            "berth stopped during {} and restarted; {words}",
            journal.phase
        )
    };
    Some(Tracker::new(&journal.activity_id, domain).message(status, Some(message)))
}

/// The journal phase of an activity that ended with work left for recovery:
/// a rollback, or the cleanup after a commit, that did not hold. (Any other
/// phase means berth was interrupted there.)
pub const ROLLBACK_FAILED: &str = "rollback-failed";

/// The final word on an activity that recovery finished, under its own
/// activity id: `COMPLETED` when every container had been committed (the
/// new version stays, only its cleanup was left), else `INCOMPLETE`. The
/// words say what became of it; the caller says why it was interrupted.
pub fn verdict(journal: &Journal, lines: &[String]) -> (Status, String) {
    let what = if lines.is_empty() {
        "nothing had changed".to_string()
    } else {
        lines.join("; ")
    };
    let committed: Vec<&str> = journal
        .intents
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| journal.committed.contains(*n))
        .collect();
    let all_committed = !journal.intents.is_empty() && committed.len() == journal.intents.len();
    if journal.phase == ROLLBACK_FAILED && all_committed {
        (
            Status::Completed,
            format!("the cleanup that had failed is finished: {what}"),
        )
    } else if journal.phase == ROLLBACK_FAILED {
        (
            Status::Incomplete,
            format!("the rollback that had failed is finished: {what}"),
        )
    } else if !journal.intents.is_empty() && committed.len() == journal.intents.len() {
        (
            Status::Completed,
            format!("the new version stays and its cleanup is finished: {what}"),
        )
    } else if committed.is_empty() {
        (
            Status::Incomplete,
            format!("the activity was undone: {what}"),
        )
    } else {
        (
            Status::Incomplete,
            format!(
                "{} keep their new version, the rest was undone: {what}",
                committed.join(", ")
            ),
        )
    }
}

/// Our temporaries that no journal accounts for.
async fn sweep<R: Runtime>(
    rt: &R,
    instance: &str,
) -> Result<(Recovered, Vec<runtime::ContainerDetails>), String> {
    let containers = rt.list().await.map_err(|e| e.to_string())?;
    let ours = |c: &runtime::ContainerDetails| {
        labels::ownership(&c.labels).is_some_and(|o| o.instance == instance)
    };
    let mut names: std::collections::HashSet<&str> =
        containers.iter().map(|c| c.name.as_str()).collect();
    let mut done = Vec::new();
    for c in containers.iter().filter(|c| ours(c)) {
        let Some((base, kind)) = temporary(&c.name) else {
            continue;
        };
        match kind {
            Temporary::New => {
                rt.remove(&c.id)
                    .await
                    .map_err(|e| format!("removing {}: {e}", c.name))?;
                done.push(format!(
                    "removed the unfinished new container {} of {base}",
                    c.name
                ));
            }
            Temporary::Old if !names.contains(base) => {
                names.insert(base);
                rt.rename(&c.id, base)
                    .await
                    .map_err(|e| format!("renaming {} back: {e}", c.name))?;
                rt.start(&c.id)
                    .await
                    .map_err(|e| format!("starting {base}: {e}"))?;
                done.push(format!("restored the previous {base} and started it"));
            }
            // Its name is taken: the planner keeps it and says so.
            Temporary::Old => {}
        }
    }
    Ok((done, containers))
}
