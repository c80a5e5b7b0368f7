//! One recorded activity from the command line, shared by `apply`,
//! `upgrade` and `rollback`: the execution flags, running a document with
//! its history record, and delivering a new state file, either applied here
//! (the file restored when the activity fails) or handed to the agent that
//! reads it, following the agent's history until the activity ends.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use berth::execute::{self, Activity, ExecuteOptions, RollbackMode};
use berth::feedback::{Feedback, Status, Tracker};
use berth::history::{self, History, Record, Recorder, Source};
use berth::instance::{Claim, ClaimError};
use berth::journal::{StateDir, DEFAULT_STATE_DIR};
use berth::observe;
use berth::spec::validate::DEFAULT_DOMAIN;
use berth::spec::DesiredState;

use super::apply::RollbackArg;
use super::engine::{Device, EngineArgs, PolicyArgs};

/// The engine's inspects kept between runs in the state directory.
const INSPECT_CACHE: &str = "inspect-cache.json";

/// How an activity runs: the flags `apply`, `upgrade` and `rollback` share.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Images pulled at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,

    /// Where the lock, the journal, the last accepted document and the
    /// activity history live.
    #[arg(long, default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,

    /// What a failure undoes: the whole activity, or only the failed container.
    #[arg(long, value_enum, default_value_t = RollbackArg::Activity)]
    pub rollback: RollbackArg,

    /// How long a container without a health check must keep running to count as ready.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub min_ready: Duration,

    /// Added to a health check's worst case (start period + interval x retries).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub ready_margin: Duration,

    /// Stop grace period for containers whose document sets no stopTimeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub stop_timeout: Duration,

    /// Longest time one image pull may take.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub pull_timeout: Duration,

    /// Longest time the whole activity may take before it rolls back.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub activity_timeout: Duration,
}

impl ExecArgs {
    /// The executor's options for this berth instance, hiding secrets in
    /// hook and job output with `redactor`.
    pub fn options(&self, instance: &str, redactor: &berth::redact::Redactor) -> ExecuteOptions {
        ExecuteOptions {
            parallel: usize::from(self.parallel),
            pull_timeout: self.pull_timeout,
            stop_timeout: self.stop_timeout,
            min_ready: self.min_ready,
            ready_margin: self.ready_margin,
            activity_timeout: self.activity_timeout,
            rollback: RollbackMode::from(self.rollback),
            instance: instance.to_string(),
            pause_at: super::hooks::pause_at(),
            redactor: redactor.clone(),
            drift_repair: false,
        }
    }
}

/// Everything one activity needs from the command line.
pub struct Runner<'a> {
    /// Execution flags.
    pub exec: &'a ExecArgs,
    /// The engine.
    pub engine: &'a EngineArgs,
    /// Instance and configuration.
    pub policy: &'a PolicyArgs,
    /// The device's rules.
    pub device: &'a Device,
}

/// How a document's activity went.
pub enum Ran {
    /// The policy refused the document: nothing changed.
    Refused(berth::policy::Refusal),
    /// It ran; the record is in the history.
    Done(Record),
}

impl Runner<'_> {
    /// Runs `desired` (whose text is `text`) as one activity: the policy
    /// first, then the state directory (lock, persisted document), recovery
    /// of what an earlier activity left, plan and rollout, and its record in
    /// the history. The instance claim is taken after the state directory's
    /// lock, unless the caller holds it already (`claimed`).
    ///
    /// # Errors
    /// When the engine cannot be reached or the state directory used.
    pub fn run(
        &self,
        text: &str,
        desired: &DesiredState,
        source: Source,
        claimed: bool,
        sink: &mut dyn FnMut(&Feedback),
    ) -> anyhow::Result<Ran> {
        let runtime = tokio::runtime::Runtime::new()?;
        let docker = runtime.block_on(async {
            anyhow::Ok(
                self.engine
                    .connect()
                    .await?
                    .with_credentials(self.device.credentials.clone()),
            )
        })?;
        let rt = super::hooks::engine(docker.clone())?;
        // The policy is checked before anything is persisted, recovered,
        // pulled, created or planned: a refused document changes nothing.
        if let Err(refusal) = runtime.block_on(self.device.check(&rt, desired))? {
            return Ok(Ran::Refused(refusal));
        }
        let state = StateDir::open(&self.exec.state_dir)?;
        let _claim = match claimed {
            true => None,
            false => Some(Claim::take(&self.policy.instance, &self.exec.state_dir)?),
        };
        state.save_desired(text)?;
        runtime.block_on(docker.keep_inspect_cache_in(
            self.exec.state_dir.join(INSPECT_CACHE),
            self.device.plan.redactor.clone(),
        ));
        let options = self
            .exec
            .options(&self.policy.instance, &self.device.plan.redactor);
        let instance = self.policy.instance.clone();
        let record = runtime.block_on(async {
            let recovered = execute::recover_with_verdict(&rt, &state, &instance, DEFAULT_DOMAIN)
                .await
                .map_err(|e| anyhow::anyhow!("recovering what an earlier activity left: {e}"))?;
            for line in recovered.lines {
                eprintln!("berth: recovered: {line}");
            }
            if let Some(f) = recovered.verdict {
                sink(&f);
            }
            let mut tracker = Tracker::new(&desired.activity_id, DEFAULT_DOMAIN);
            sink(&tracker.message(Status::Identifying, None));
            let observed = match observe::gather_for_listed(&rt, desired, recovered.listed).await {
                Ok(o) => o,
                Err(e) => {
                    let f = tracker.message(Status::IdentificationFailed, Some(e.to_string()));
                    sink(&f);
                    let mut record =
                        Record::start(&desired.activity_id, source, Some(text.to_string()));
                    record.finish(Status::IdentificationFailed, Some(e.to_string()));
                    history::append_logged(state.path(), record.clone()).await;
                    return anyhow::Ok(record);
                }
            };
            let recorder = Recorder::start(
                state.path(),
                &desired.activity_id,
                source,
                Some(text.to_string()),
                &observed,
                desired,
                &instance,
            )
            .await;
            let plan = berth::plan::compute(desired, &observed, &self.device.plan);
            let activity = Activity {
                desired,
                plan: &plan,
                observed: &observed,
            };
            let mut send = |f: Feedback| sink(&f);
            let outcome =
                execute::carry_out(&rt, &state, activity, &options, &mut tracker, &mut send)
                    .await?;
            let record = recorder
                .finish(&rt, desired, &outcome, plan.has_changes())
                .await;
            anyhow::Ok(record)
        })?;
        Ok(Ran::Done(record))
    }

    /// Delivers `new` as the content of the state file `file` (whose
    /// content now is `old`) and runs it. With no other berth on this
    /// instance, the file is written and the activity run here; when it
    /// does not complete, or cannot run at all (a refusal, a state
    /// directory another berth holds, an engine away), the file gets its
    /// old bytes back. When the agent
    /// runs and reads `file`, the file is written for it and its history
    /// followed until the activity ends (the agent rolls back a failure;
    /// the file is restored then too).
    ///
    /// # Errors
    /// Another berth that does not read the file, files that cannot be
    /// written, an engine that cannot be reached.
    pub fn deliver(
        &self,
        file: Option<&Path>,
        old: Option<&[u8]>,
        new: &str,
        desired: &DesiredState,
        source: Source,
        sink: &mut dyn FnMut(&Feedback),
    ) -> anyhow::Result<Delivered> {
        if let (Some(f), Some(files)) = (file, &self.device.files) {
            if self.agent_reads(f) && new.len() as u64 > files.max_file_size {
                anyhow::bail!(
                    "the new document is {} bytes, above the file source's max_file_size of {}: the agent would refuse it; nothing was changed",
                    new.len(),
                    files.max_file_size
                );
            }
        }
        match Claim::take(&self.policy.instance, &self.exec.state_dir) {
            Ok(_claim) => {
                if let Some(f) = file {
                    rewrite(f, new.as_bytes())
                        .with_context(|| format!("writing {}", f.display()))?;
                }
                let ran = self.run(new, desired, source, true, sink);
                let failed = !matches!(&ran, Ok(Ran::Done(r)) if r.completed());
                if failed {
                    if let (Some(f), Some(old)) = (file, old) {
                        rewrite(f, old).with_context(|| {
                            format!("restoring {} after the failed activity", f.display())
                        })?;
                    }
                }
                Ok(Delivered::Here(ran?))
            }
            Err(ClaimError::Held { instance, holder }) => {
                let (Some(f), Some(old)) = (file, old) else {
                    anyhow::bail!(ClaimError::Held { instance, holder });
                };
                if !self.agent_reads(f) {
                    let why = match &self.device.files {
                        None => "pass the agent's --config so that berth can hand it the document when its [files] path is this file".to_string(),
                        Some(files) => format!(
                            "its [files] path is {}, not {}, so berth cannot hand it the document",
                            files.path.display(),
                            f.display()
                        ),
                    };
                    anyhow::bail!("{}; {why}", ClaimError::Held { instance, holder });
                }
                let dir = holder_state_dir(&holder).unwrap_or_else(|| self.exec.state_dir.clone());
                eprintln!(
                    "berth: the agent ({holder}) reads {}: handing the document to it",
                    f.display()
                );
                rewrite(f, new.as_bytes()).with_context(|| format!("writing {}", f.display()))?;
                let waits = Waits {
                    take: self.poll_interval() * 3 + Duration::from_secs(15),
                    finish: self.exec.activity_timeout
                        + self.poll_interval() * 2
                        + Duration::from_secs(30),
                };
                match follow(&dir, &desired.activity_id, new, &waits) {
                    Followed::Ended(record) => {
                        if !record.completed() {
                            rewrite(f, old).with_context(|| {
                                format!("restoring {} after the failed activity", f.display())
                            })?;
                        }
                        Ok(Delivered::Agent(record))
                    }
                    Followed::NotTaken => {
                        rewrite(f, old).with_context(|| {
                            format!("restoring {} after the agent did not take it", f.display())
                        })?;
                        anyhow::bail!(
                            "the agent did not take the document within {} (a document it refuses is answered IDENTIFICATION_FAILED: see its log); {} has its previous content",
                            humantime::format_duration(waits.take),
                            f.display()
                        )
                    }
                    Followed::NotEnded => anyhow::bail!(
                        "the agent did not finish activity {} within {}; {} is left as written (berth history shows the activity when it ends)",
                        desired.activity_id,
                        humantime::format_duration(waits.finish),
                        f.display()
                    ),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the configured agent's file source is `file` itself.
    fn agent_reads(&self, file: &Path) -> bool {
        let Some(files) = &self.device.files else {
            return false;
        };
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        canon(&files.path) == canon(file)
    }

    fn poll_interval(&self) -> Duration {
        self.device
            .files
            .as_ref()
            .map_or(Duration::from_secs(2), |f| f.poll_interval)
    }
}

/// Where a document's activity ran.
pub enum Delivered {
    /// Here, by this command.
    Here(Ran),
    /// By the running agent, as its history records it.
    Agent(Record),
}

/// The state directory a claim's holder names (`pid N, state directory D`).
fn holder_state_dir(holder: &str) -> Option<PathBuf> {
    holder
        .split_once("state directory ")
        .map(|(_, d)| PathBuf::from(d.trim()))
}

/// How long a hand-over waits: for the agent to take the document (it
/// polls the file), then for its activity to end.
struct Waits {
    take: Duration,
    finish: Duration,
}

/// What following the agent found.
enum Followed {
    /// The activity ended, as its record says.
    Ended(Record),
    /// The agent never accepted the document (it refused it, or does not
    /// read the file after all).
    NotTaken,
    /// Accepted, but not ended in time.
    NotEnded,
}

/// Follows the agent whose state directory is `dir`: it has taken the
/// document once it persisted `text` as its last accepted document (or its
/// history names `activity`), and the activity has ended once the history
/// records its end (the agent takes a state file's `activityId` as its
/// activity's). Both are read every quarter second.
fn follow(dir: &Path, activity: &str, text: &str, waits: &Waits) -> Followed {
    let started = Instant::now();
    let mut taken = false;
    let mut said = false;
    loop {
        let record = match History::load(dir) {
            Ok(h) => h.find(activity).cloned(),
            Err(e) => {
                tracing::debug!(error = %e, "the agent's history cannot be read yet");
                None
            }
        };
        if let Some(r) = record {
            if r.ended.is_some() {
                return Followed::Ended(r);
            }
            taken = true;
            if !said {
                eprintln!("berth: the agent is applying activity {}", r.id);
                said = true;
            }
        }
        if !taken {
            taken = std::fs::read_to_string(dir.join(berth::journal::DESIRED))
                .is_ok_and(|persisted| persisted == text);
        }
        let waited = started.elapsed();
        if !taken && waited >= waits.take {
            return Followed::NotTaken;
        }
        if waited >= waits.take + waits.finish {
            return Followed::NotEnded;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Replaces `path`'s content atomically (a temporary file next to it,
/// fsync, rename, fsync of the directory), keeping its mode and owner, so
/// that the agent's checks on state files still hold. A symlink is
/// followed: its target is rewritten.
///
/// # Errors
/// When the file cannot be read, written, or given its owner back.
pub fn rewrite(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let target = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&target)?;
    let dir = target
        .parent()
        .ok_or_else(|| std::io::Error::other("the file has no directory"))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Hidden and not `.json`: a directory source never reads it half-written.
    let temp = dir.join(format!(".{name}.berth-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)?;
        file.write_all(bytes)?;
        // Only a privileged berth can give the file to another owner; one
        // that owns it already has nothing to do.
        let mine = file.metadata()?;
        if mine.uid() != meta.uid() || mine.gid() != meta.gid() {
            std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_rewritten_file_keeps_its_mode_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.json");
        std::fs::write(&file, "old").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        rewrite(&file, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new");
        assert_eq!(mode(&file), 0o640);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_rewritten_symlink_stays_a_link_and_its_target_gets_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.json");
        let link = dir.path().join("state.json");
        std::fs::write(&target, "old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        rewrite(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
    }

    #[test]
    fn a_missing_file_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.json");
        assert!(rewrite(&file, b"new").is_err());
        assert!(!file.exists());
    }

    #[test]
    fn the_claim_holder_names_its_state_directory() {
        assert_eq!(
            holder_state_dir("pid 42, state directory /var/lib/berth"),
            Some(PathBuf::from("/var/lib/berth"))
        );
        assert_eq!(holder_state_dir("a process that does not answer"), None);
    }
}
