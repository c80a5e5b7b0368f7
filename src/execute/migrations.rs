//! Migrations (issue 22): scripts in a directory of the new image, one per
//! version (`v1.2.0.sh`, `0003_add_index.sh`), with optional down
//! counterparts (`v1.2.0.down.sh`). On a create or recreate berth runs, in
//! version order, each script newer than the last one applied and not newer
//! than the component's version, each in a one-shot container of the new
//! image, and records the last applied in the state directory
//! (`migrations.json`, written atomically, 0600, like every state file).
//!
//! # Guarantees
//! - The record always says what the data has: it is written after each
//!   script that succeeded, and put back when a rollback undid them.
//! - A failure stops there. The rollback runs the down scripts of the
//!   migrations applied by this activity, in reverse, as far as the image
//!   ships them: at the first one without a down script it stops (running
//!   an older down over a newer schema would do harm), and the record then
//!   names that migration as the last applied, which is the truth.
//! - Each migration is an effect in the undo log (its one-shot, marked
//!   applied before the container goes), so a rollback and a recovery
//!   after a kill undo it the same way ([`super::compensate`]). A script
//!   still running when berth was killed is waited for (at most
//!   `hookTimeout`) and counts as applied only if it exited 0.
//! - A down script may run twice when berth is killed while it runs and
//!   recovery runs it again: down scripts must be idempotent, as the up
//!   scripts of any migration tool are expected to be.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::hooks::OneShot;
use super::rollout::Run;
use super::ExecuteError;
use crate::feedback::{ActionStatus, Status};
use crate::journal::{Effect, Journal, Migration, StateDir};
use crate::runtime::Runtime;
use crate::spec::model::ContainerSpec;

/// The state file with the last applied migration per component.
pub const RECORD: &str = "migrations.json";
const RECORD_VERSION: u32 = 1;

/// A migration's version, from its file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    /// `v1.2.0`, `1.2.0`, `v1.2` (missing parts are 0).
    Semver(semver::Version),
    /// `0003_add_index`, `12-cleanup`: the leading number.
    Number(u64),
}

impl Version {
    /// Reads the version in a script's name without `.sh` / `.down.sh`.
    pub fn parse(stem: &str) -> Option<Self> {
        let bare = stem.strip_prefix(['v', 'V']).unwrap_or(stem);
        if let Some(v) = semver_lenient(bare) {
            return Some(Version::Semver(v));
        }
        let digits: String = stem.chars().take_while(char::is_ascii_digit).collect();
        let rest = &stem[digits.len()..];
        if digits.is_empty() || !(rest.is_empty() || rest.starts_with(['_', '-'])) {
            return None;
        }
        digits.parse().ok().map(Version::Number)
    }

    fn scheme(&self) -> &'static str {
        match self {
            Version::Semver(_) => "semantic versions (v1.2.0.sh)",
            Version::Number(_) => "numbers (0003_name.sh)",
        }
    }

    /// Order within one scheme; `None` across schemes.
    fn compare(&self, other: &Version) -> Option<Ordering> {
        match (self, other) {
            (Version::Semver(a), Version::Semver(b)) => Some(a.cmp(b)),
            (Version::Number(a), Version::Number(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

/// `1.2.0`, `1.2`, `1` and `1.2.0-rc.1` as semantic versions.
fn semver_lenient(text: &str) -> Option<semver::Version> {
    if let Ok(v) = semver::Version::parse(text) {
        return Some(v);
    }
    let (core, pre) = match text.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (text, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    // A bare number is a numbered script (`0003`), not version 3.0.0.
    if parts.len() == 1 {
        return None;
    }
    let mut padded = parts.join(".");
    for _ in parts.len()..3 {
        padded.push_str(".0");
    }
    if let Some(p) = pre {
        padded = format!("{padded}-{p}");
    }
    semver::Version::parse(&padded).ok()
}

/// One migration in the image's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Its name without `.sh`: what the record and the feedback say.
    pub name: String,
    /// Its version.
    pub version: Version,
    /// The down counterpart's file name, when the image ships one.
    pub down: Option<String>,
}

impl Script {
    /// The file to run.
    pub fn file(&self) -> String {
        format!("{}.sh", self.name)
    }
}

/// The scripts among a directory's file names, in version order. Files not
/// ending in `.sh` are ignored; a script whose name has no version, two
/// scripts of one version, or a mix of the two schemes are refused, naming
/// the files (a guess here could run migrations out of order).
pub fn catalogue(files: &[String]) -> Result<Vec<Script>, String> {
    let mut ups: Vec<Script> = Vec::new();
    let mut downs: Vec<String> = Vec::new();
    for file in files {
        let Some(stem) = file.strip_suffix(".sh") else {
            continue;
        };
        if let Some(up) = stem.strip_suffix(".down") {
            downs.push(up.to_string());
            continue;
        }
        let version = Version::parse(stem).ok_or_else(|| {
            format!(
                "migration script {file} has no version in its name (expected v1.2.0.sh or 0003_name.sh)"
            )
        })?;
        ups.push(Script {
            name: stem.to_string(),
            version,
            down: None,
        });
    }
    if let Some(first) = ups.first() {
        if let Some(other) = ups
            .iter()
            .find(|s| first.version.compare(&s.version).is_none())
        {
            return Err(format!(
                "migration scripts mix {} ({}) and {} ({}); use one scheme",
                first.version.scheme(),
                first.file(),
                other.version.scheme(),
                other.file()
            ));
        }
    }
    ups.sort_by(|a, b| {
        a.version
            .compare(&b.version)
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.name.cmp(&b.name))
    });
    if let Some(pair) = ups
        .windows(2)
        .find(|w| w[0].version.compare(&w[1].version) == Some(Ordering::Equal))
    {
        return Err(format!(
            "migration scripts {} and {} have the same version",
            pair[0].file(),
            pair[1].file()
        ));
    }
    for s in &mut ups {
        if downs.contains(&s.name) {
            s.down = Some(format!("{}.down.sh", s.name));
        }
    }
    Ok(ups)
}

/// The scripts to run: newer than `last` (the recorded last applied; all
/// when `None`) and, for semantic versions, not newer than `target` (the
/// component's version; no bound when it is not a version).
pub fn pending<'a>(
    scripts: &'a [Script],
    last: Option<&str>,
    target: Option<&str>,
) -> Result<Vec<&'a Script>, String> {
    let last = match last {
        None => None,
        Some(text) => Some(Version::parse(text).ok_or_else(|| {
            format!("the recorded last migration {text:?} has no version in its name")
        })?),
    };
    let target = target
        .map(|t| t.strip_prefix(['v', 'V']).unwrap_or(t))
        .and_then(semver_lenient)
        .map(Version::Semver);
    let mut out = Vec::new();
    for s in scripts {
        if let Some(l) = &last {
            match s.version.compare(l) {
                Some(Ordering::Greater) => {}
                Some(_) => continue,
                None => {
                    return Err(format!(
                        "the recorded last migration is numbered in another scheme than {}",
                        s.file()
                    ))
                }
            }
        }
        if let Some(t) = &target {
            if s.version.compare(t) == Some(Ordering::Greater) {
                continue;
            }
        }
        out.push(s);
    }
    Ok(out)
}

/// `migrations.json`: the last applied migration per component.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    version: u32,
    /// Component name to the last applied script's name (`v1.1.0`).
    pub last: BTreeMap<String, String>,
}

/// Reads the record; none yet is an empty one.
///
/// # Errors
/// When the file cannot be read or is not a record, in words naming it.
pub async fn load(state: &StateDir) -> Result<Record, String> {
    let path = state.path().join(RECORD);
    match tokio::fs::read(&path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a migration record: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Sets (or, with `None`, clears) a component's last applied migration.
///
/// # Errors
/// When the record cannot be read or written.
pub async fn store(state: &StateDir, name: &str, last: Option<&str>) -> Result<(), String> {
    let mut record = load(state).await?;
    record.version = RECORD_VERSION;
    match last {
        Some(l) => record.last.insert(name.to_string(), l.to_string()),
        None => record.last.remove(name),
    };
    let bytes = serde_json::to_vec_pretty(&record).map_err(|e| e.to_string())?;
    let dir = state.path().to_path_buf();
    tokio::task::spawn_blocking(move || write(&dir, &bytes))
        .await
        .map_err(|e| e.to_string())?
}

fn write(dir: &Path, bytes: &[u8]) -> Result<(), String> {
    crate::journal::write_atomic(dir, RECORD, bytes).map_err(|e| e.to_string())
}

/// Single quotes for `/bin/sh`.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The component's target version: its `version`, else its image's tag.
fn target(spec: &ContainerSpec) -> Option<String> {
    spec.version
        .clone()
        .or_else(|| spec.config.image.tag.clone())
}

impl<R: Runtime> Run<'_, R> {
    /// Runs unit `i`'s pending migrations, each in a one-shot container of
    /// the new image, recording each that succeeded.
    pub(super) async fn migrate(&mut self, i: usize) -> Result<(), ExecuteError> {
        let u = &self.units[i];
        let (Some(spec), true) = (u.spec, u.hooks) else {
            return Ok(());
        };
        let Some(dir) = spec.rollout.hooks.migrations.clone() else {
            return Ok(());
        };
        let name = u.name().to_string();
        let fail = |reason: String| ExecuteError::Hook {
            name: name.clone(),
            reason,
        };
        self.set(&name, ActionStatus::Activating, "Reading its migrations.");
        self.emit(Status::Activating, None);
        let listing = format!(
            "cd {q} 2>/dev/null || {{ echo \"the image has no directory \"{q} >&2; exit 2; }}; for f in *; do [ -f \"$f\" ] && echo \"$f\"; done; exit 0",
            q = quoted(&dir)
        );
        let files = self
            .run_for(i, spec, "the migration listing", &listing, None)
            .await
            .map_err(&fail)?;
        let files: Vec<String> = files.lines().map(|l| l.trim().to_string()).collect();
        let scripts = catalogue(&files).map_err(&fail)?;
        let record = load(self.state).await.map_err(&fail)?;
        let before = record.last.get(&name).cloned();
        let todo: Vec<Script> = pending(&scripts, before.as_deref(), target(spec).as_deref())
            .map_err(&fail)?
            .into_iter()
            .cloned()
            .collect();
        let mut last = before;
        for script in todo {
            let purpose = format!("migration {}", script.name);
            self.set(
                &name,
                ActionStatus::Activating,
                format!("Running {purpose}."),
            );
            self.emit(Status::Activating, None);
            let cmd = script_command(&dir, &script.file());
            // Journaled with its one-shot, and marked applied there before
            // the container goes: a rollback or a recovery runs its down
            // script from the journal.
            let step = Migration {
                script: script.name.clone(),
                down: script.down.clone(),
                before: last.clone(),
                applied: false,
                reverted: false,
            };
            self.run_for(i, spec, &purpose, &cmd, Some(step))
                .await
                .map_err(&fail)?;
            tracing::info!(component = %name, "applied {purpose}");
            store(self.state, &name, Some(&script.name))
                .await
                .map_err(|e| fail(format!("cannot record {purpose}: {e}")))?;
            last = Some(script.name.clone());
        }
        Ok(())
    }

    /// A one-shot container of unit `i`'s new image running `cmd`.
    async fn run_for(
        &mut self,
        i: usize,
        spec: &ContainerSpec,
        purpose: &str,
        cmd: &str,
        migration: Option<Migration>,
    ) -> Result<String, String> {
        let (anonymous, extra_hosts) = self.new_settings(i).await;
        let job = OneShot {
            purpose: purpose.to_string(),
            base: &spec.config,
            anonymous,
            extra_hosts,
            networks: self.units[i].entry.execution.networks.clone(),
            cmd: cmd.to_string(),
            limit: spec.rollout.hooks.timeout(),
            migration,
        };
        self.one_shot(i, job).await
    }

    /// The migrations applied and kept, per component, for the outcome:
    /// the journal's, so that what a rollback undid is not among them.
    pub(super) fn applied_migrations(&self) -> BTreeMap<String, Vec<String>> {
        kept(&self.journal)
    }
}

/// The migrations a journal says are applied and not undone, per
/// component, in the order they ran.
pub(super) fn kept(journal: &Journal) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in &journal.records {
        if let Effect::OneShot {
            name,
            migration: Some(m),
            ..
        } = &record.effect
        {
            if m.applied && !m.reverted {
                out.entry(name.clone()).or_default().push(m.script.clone());
            }
        }
    }
    out
}

/// The command that runs a migration's script file `file` in `dir`.
pub(super) fn script_command(dir: &str, file: &str) -> String {
    format!("exec /bin/sh {}", quoted(&format!("{dir}/{file}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn names(scripts: &[&Script]) -> Vec<String> {
        scripts.iter().map(|s| s.name.clone()).collect()
    }

    #[test]
    fn semantic_versions_sort_as_versions_not_as_text() {
        let all = catalogue(&files(&["v1.10.0.sh", "v1.2.0.sh", "v1.9.1.sh"])).expect("valid");
        let order: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["v1.2.0", "v1.9.1", "v1.10.0"]);
    }

    #[test]
    fn numbered_scripts_sort_by_their_number() {
        let all = catalogue(&files(&["10_b.sh", "0003_add_index.sh", "2-a.sh"])).expect("valid");
        let order: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(order, ["2-a", "0003_add_index", "10_b"]);
    }

    #[test]
    fn down_scripts_pair_with_their_up_and_other_files_are_ignored() {
        let all = catalogue(&files(&[
            "v1.1.0.sh",
            "v1.1.0.down.sh",
            "v1.2.0.sh",
            "README",
        ]))
        .expect("valid");
        assert_eq!(all[0].down.as_deref(), Some("v1.1.0.down.sh"));
        assert_eq!(all[1].down, None);
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn a_script_without_a_version_is_refused_naming_it() {
        let err = catalogue(&files(&["v1.0.0.sh", "setup.sh"])).expect_err("refused");
        assert!(err.contains("setup.sh"), "{err}");
    }

    #[test]
    fn mixed_schemes_are_refused() {
        let err = catalogue(&files(&["v1.0.0.sh", "0002_x.sh"])).expect_err("refused");
        assert!(err.contains("mix"), "{err}");
    }

    #[test]
    fn two_scripts_of_one_version_are_refused() {
        let err = catalogue(&files(&["v1.2.sh", "v1.2.0.sh"])).expect_err("refused");
        assert!(err.contains("same version"), "{err}");
    }

    #[test]
    fn pending_runs_those_newer_than_the_last_and_not_newer_than_the_target() {
        let all = catalogue(&files(&[
            "v1.0.0.sh",
            "v1.1.0.sh",
            "v1.2.0.sh",
            "v1.3.0.sh",
        ]))
        .expect("valid");
        assert_eq!(
            names(&pending(&all, Some("v1.0.0"), Some("1.2.0")).expect("ok")),
            ["v1.1.0", "v1.2.0"]
        );
        assert_eq!(
            names(&pending(&all, Some("v1.1.0"), Some("1.2.0")).expect("ok")),
            ["v1.2.0"]
        );
        assert!(pending(&all, Some("v1.2.0"), Some("1.2.0"))
            .expect("ok")
            .is_empty());
    }

    #[test]
    fn with_nothing_recorded_every_script_up_to_the_target_runs() {
        let all = catalogue(&files(&["v1.0.0.sh", "v1.1.0.sh"])).expect("valid");
        assert_eq!(
            names(&pending(&all, None, Some("v1.0.0")).expect("ok")),
            ["v1.0.0"]
        );
    }

    #[test]
    fn a_target_that_is_not_a_version_bounds_nothing() {
        let all = catalogue(&files(&["0001_a.sh", "0002_b.sh"])).expect("valid");
        assert_eq!(
            names(&pending(&all, Some("0001_a"), Some("latest")).expect("ok")),
            ["0002_b"]
        );
    }

    #[test]
    fn a_pre_release_target_does_not_run_its_release() {
        let all = catalogue(&files(&["v1.1.0.sh", "v1.2.0.sh"])).expect("valid");
        assert_eq!(
            names(&pending(&all, None, Some("1.2.0-rc.1")).expect("ok")),
            ["v1.1.0"]
        );
    }

    #[test]
    fn a_shell_quote_survives_quoting() {
        assert_eq!(quoted("/mig's"), "'/mig'\\''s'");
    }
}
