//! Where each baseline of an orchestrated activity stands, and what a
//! command may do next: the pure part of per-baseline commands.
//!
//! Kanto's container update agent keeps a status per baseline and runs a
//! phase for the actions of the baseline named only (Leda's test tools send
//! DOWNLOAD for baseline A, then for B, …), while a command without a
//! baseline (`*` or absent, what the Update Manager itself sends) moves
//! every baseline at once. berth does the same, with its own guarantees on
//! top: the activity is one unit of undo, so once a baseline failed (or was
//! cleaned up without being activated) the activity can no longer complete,
//! the phases that change the device are refused for the other baselines,
//! and the next CLEANUP restores everything not yet cleaned up. The
//! activity ends `COMPLETED` only when every baseline holding a change was
//! activated and cleaned up.

use crate::feedback::Status;

use super::{admit, status_word, Phase};

/// One baseline and its progress.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tracked {
    title: String,
    /// Its containers that the activity changes.
    members: Vec<String>,
    /// Its last status, as reported.
    status: Status,
    /// CLEANUP ran for it (Kanto forgets such a baseline).
    cleaned: bool,
}

/// What a command applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every baseline (`*`, absent, or a baseline holding every change).
    All,
    /// One baseline: its title and the containers it changes.
    Baseline {
        /// The baseline's title.
        title: String,
        /// The containers of the activity's changes it holds.
        members: Vec<String>,
    },
}

impl Selection {
    /// The containers a phase runs for; `None` means all of them.
    pub fn names(&self) -> Option<&[String]> {
        match self {
            Selection::All => None,
            Selection::Baseline { members, .. } => Some(members),
        }
    }
}

/// What CLEANUP does for a selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    /// The selection was activated: its new containers stay, its old ones
    /// go; `last` says the activity ends with it (`COMPLETED` when no
    /// cleanup failed).
    Commit {
        /// No baseline holding a change is left.
        last: bool,
    },
    /// The activity cannot complete any more: everything not cleaned up
    /// yet is restored, and the activity ends.
    Restore,
}

/// How far the activity got, for undoing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Nothing was done after IDENTIFIED.
    Nothing,
    /// Only DOWNLOAD ran (temporaries to discard).
    Downloaded,
    /// Something that ran was touched: a rollback restores it.
    Changed,
}

/// The progress of every baseline of one activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    baselines: Vec<Tracked>,
    /// Every container the activity changes.
    changed: Vec<String>,
}

fn failed(s: Status) -> bool {
    matches!(
        s,
        Status::DownloadFailure
            | Status::UpdateFailure
            | Status::ActivationFailure
            | Status::RollbackFailure
            | Status::RollbackSuccess
    )
}

impl Progress {
    /// Every baseline at IDENTIFIED. `baselines` are the activity's
    /// ([`super::baselines`]), `changed` the containers it changes.
    pub fn new(baselines: &[(String, Vec<String>)], changed: &[String]) -> Self {
        Progress {
            baselines: baselines
                .iter()
                .map(|(title, members)| Tracked {
                    title: title.clone(),
                    members: members
                        .iter()
                        .filter(|m| changed.contains(m))
                        .cloned()
                        .collect(),
                    status: Status::Identified,
                    cleaned: false,
                })
                .collect(),
            changed: changed.to_vec(),
        }
    }

    /// The baselines that still count: holding a change, not cleaned up.
    fn live(&self) -> impl Iterator<Item = &Tracked> {
        self.baselines
            .iter()
            .filter(|b| !b.members.is_empty() && !b.cleaned)
    }

    /// The status every live baseline shares, if they agree.
    pub fn status(&self) -> Option<Status> {
        let mut live = self.live().map(|b| b.status);
        let first = live.next()?;
        live.all(|s| s == first).then_some(first)
    }

    /// A baseline that failed, was rolled back or was cleaned up without
    /// being activated: the activity can no longer complete.
    fn doomed(&self) -> Option<&Tracked> {
        self.baselines
            .iter()
            .filter(|b| !b.members.is_empty())
            .find(|b| failed(b.status) || (b.cleaned && b.status != Status::ActivationSuccess))
    }

    /// Whether `phase` may run for `baseline` now, and for which
    /// containers; the refusal is the words of the `*_FAILURE` to report
    /// (Kanto's, where Kanto has some).
    ///
    /// # Errors
    /// `Unknown baseline <x>` (a cleaned-up baseline is unknown, as Kanto
    /// forgets it), Kanto's precondition sentence, or why a phase cannot run
    /// for one baseline while another failed or is elsewhere.
    pub fn admit(&self, phase: Phase, baseline: &str) -> Result<Selection, String> {
        if baseline.is_empty() || baseline == "*" {
            return self.admit_all(phase);
        }
        let Some(b) = self
            .baselines
            .iter()
            .find(|b| b.title == baseline && !b.cleaned)
        else {
            return Err(format!("Unknown baseline {baseline}"));
        };
        let holds_all = !self.changed.is_empty()
            && self.changed.iter().all(|c| b.members.contains(c))
            && self.live().all(|l| l.title == b.title);
        if holds_all {
            return self.admit_all(phase);
        }
        if matches!(phase, Phase::Download | Phase::Update | Phase::Activate) {
            if let Some(d) = self.doomed().filter(|d| d.title != b.title) {
                return Err(format!(
                    "{} is not possible for baseline {baseline}: baseline {} ended with {}, so the activity cannot complete; CLEANUP restores it",
                    phase.as_str(),
                    d.title,
                    status_word(d.status)
                ));
            }
        }
        admit(phase, b.status)?;
        Ok(Selection::Baseline {
            title: b.title.clone(),
            members: b.members.clone(),
        })
    }

    fn admit_all(&self, phase: Phase) -> Result<Selection, String> {
        match self.status() {
            Some(s) => admit(phase, s).map(|()| Selection::All),
            // Nothing is live: every baseline was cleaned up.
            None if self.live().next().is_none() => {
                admit(phase, Status::Identified).map(|()| Selection::All)
            }
            None if phase == Phase::Cleanup => Ok(Selection::All),
            None => {
                let at: Vec<String> = self
                    .live()
                    .map(|b| format!("{} {}", b.title, status_word(b.status)))
                    .collect();
                let allowed: Vec<String> = phase
                    .allowed_after()
                    .iter()
                    .map(|s| status_word(*s))
                    .collect();
                Err(format!(
                    "{} is possible only after status {} is reported, and the baselines are at different statuses ({}); name a baseline",
                    phase.as_str(),
                    allowed.join("|"),
                    at.join(", ")
                ))
            }
        }
    }

    /// A phase for `selection` reported `status`.
    pub fn record(&mut self, selection: &Selection, status: Status) {
        for b in &mut self.baselines {
            let chosen = match selection {
                Selection::All => !b.cleaned,
                Selection::Baseline { title, .. } => *title == b.title,
            };
            if chosen {
                b.status = status;
            }
        }
    }

    /// What CLEANUP does for `selection`; call before [`Progress::cleaned`].
    pub fn cleanup(&self, selection: &Selection) -> Cleanup {
        if self.doomed().is_some() {
            return Cleanup::Restore;
        }
        match selection {
            Selection::All if self.status() == Some(Status::ActivationSuccess) => {
                Cleanup::Commit { last: true }
            }
            Selection::All => Cleanup::Restore,
            Selection::Baseline { title, .. } => {
                let Some(b) = self.baselines.iter().find(|b| b.title == *title) else {
                    return Cleanup::Restore;
                };
                if b.status != Status::ActivationSuccess {
                    // An empty baseline is cleaned up like Kanto's, and
                    // changes nothing.
                    if b.members.is_empty() {
                        return Cleanup::Commit { last: false };
                    }
                    return Cleanup::Restore;
                }
                Cleanup::Commit {
                    last: self.live().all(|l| l.title == b.title),
                }
            }
        }
    }

    /// CLEANUP ran for `selection`: Kanto forgets those baselines.
    pub fn cleaned(&mut self, selection: &Selection) {
        for b in &mut self.baselines {
            if match selection {
                Selection::All => true,
                Selection::Baseline { title, .. } => *title == b.title,
            } {
                b.cleaned = true;
            }
        }
    }

    /// How far the activity got, for the way back.
    pub fn reached(&self) -> Reached {
        let mut reached = Reached::Nothing;
        for b in self.baselines.iter().filter(|b| !b.members.is_empty()) {
            match b.status {
                Status::Identified => {}
                Status::DownloadSuccess | Status::DownloadFailure => reached = Reached::Downloaded,
                _ => return Reached::Changed,
            }
        }
        reached
    }
}

#[cfg(test)]
#[path = "progress_tests.rs"]
mod tests;
