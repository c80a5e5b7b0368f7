//! `berth rollback [--to ACTIVITY]`: apply again a document that was
//! applied successfully before, as a new activity, and rewrite the agent's
//! state file to match so that the agent does not undo it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use berth::feedback::Feedback;
use berth::history::{self, History, Source};

use super::activity::{Delivered, ExecArgs, Ran, Runner};
use super::apply::Printer;
use super::engine::{print_refusal, EngineArgs, PolicyArgs};

const ROLLBACK_EXAMPLES: &str = "\
Without --to, the target is the last document applied successfully before
the current one (the newest that completed), as berth history lists them.
It is applied as a new activity (rollback-<ms>), with the usual download
first, readiness gates and rollback on failure. When --config has a [files]
state file, it is rewritten to the target document (atomically, keeping its
mode and owner) so that the agent does not undo the rollback; a running
agent that reads it is handed the document and followed. When the rollback
fails, the file gets its previous bytes back and berth exits 1.

Examples:
  berth rollback
  berth rollback --to upgrade-2.4.1-1764600000000
  berth rollback --dry-run               the target and the plan only
  berth rollback --config /etc/berth/config.toml --state-dir /var/lib/berth";

/// Arguments of `berth rollback`.
#[derive(Debug, Args)]
#[command(after_help = ROLLBACK_EXAMPLES)]
pub struct RollbackArgs {
    /// The activity whose document is applied again (berth history).
    #[arg(long, value_name = "ACTIVITY")]
    to: Option<String>,

    /// Show the target and the plan; apply nothing.
    #[arg(long)]
    dry_run: bool,

    /// Print each feedback message as one line of JSON.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    exec: ExecArgs,

    #[command(flatten)]
    engine: EngineArgs,

    #[command(flatten)]
    policy: PolicyArgs,
}

impl RollbackArgs {
    /// Finds the target, plans, delivers and applies it.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let device = self.policy.device()?;
        let history = History::load(&self.exec.state_dir)?;
        let target = history.rollback_target(self.to.as_deref())?;
        let Some(old_doc) = target.document.as_deref() else {
            anyhow::bail!("activity {} kept no document", target.id);
        };
        let activity_id = format!("rollback-{}", history::now_ms());
        let text = berth::upgrade::with_activity_id(old_doc, &activity_id)?;
        let desired = match berth::spec::parse(&text, &device.spec) {
            Ok(a) => a.desired,
            Err(rejection) => {
                for e in &rejection.errors {
                    eprintln!("activity {}: {e}", target.id);
                }
                anyhow::bail!(
                    "the document of activity {} is not valid under this berth's rules; nothing was changed",
                    target.id
                );
            }
        };
        let file = self.state_file(&device)?;
        let old = match &file {
            Some(f) => Some(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?),
            None => None,
        };
        let label = PathBuf::from(format!("activity {}", target.id));
        if !self.json {
            println!(
                "Rolling back to activity {} ({}), as activity {activity_id}.",
                target.id,
                target.source.as_str()
            );
        }
        let plan = match super::plan::compute(&self.engine, &device, &desired)? {
            Ok(p) => p,
            Err(refusal) => {
                print_refusal(&label, &refusal);
                eprintln!("berth: the policy refuses the document: nothing was changed");
                return Ok(ExitCode::FAILURE);
            }
        };
        if !self.json {
            super::plan::print(
                &mut std::io::stdout().lock(),
                &plan,
                super::engine::Paint::stdout(),
            )?;
        }
        if self.dry_run {
            return Ok(ExitCode::SUCCESS);
        }
        let runner = Runner {
            exec: &self.exec,
            engine: &self.engine,
            policy: &self.policy,
            device: &device,
        };
        let mut printer = Printer::stdout(self.json);
        let mut sink = |f: &Feedback| printer.print(f);
        let delivered = runner
            .deliver(
                file.as_deref(),
                old.as_deref(),
                &text,
                &desired,
                Source::Rollback,
                &mut sink,
            )
            .with_context(|| format!("rolling back to activity {}", target.id))?;
        let record = match &delivered {
            Delivered::Here(Ran::Refused(refusal)) => {
                print_refusal(&label, refusal);
                eprintln!("berth: the policy refuses the document: nothing was changed");
                return Ok(ExitCode::FAILURE);
            }
            Delivered::Here(Ran::Done(r)) | Delivered::Agent(r) => r,
        };
        if !record.completed() {
            eprintln!(
                "berth: the rollback to activity {} failed ({}): {}; the device runs what it ran before{}",
                target.id,
                record.outcome.map(history::status_word).unwrap_or_default(),
                record.message.as_deref().unwrap_or("no reason given"),
                file.as_ref()
                    .map(|f| format!(" and {} has its previous content", f.display()))
                    .unwrap_or_default()
            );
            return Ok(ExitCode::FAILURE);
        }
        if !self.json {
            println!("Rolled back to activity {}:", target.id);
            for c in record.components.iter().filter(|c| c.changed()) {
                let show = |v: &Option<history::Version>| {
                    v.as_ref().map_or("(none)".to_string(), |v| v.image.clone())
                };
                println!(
                    "  {:<20} {} -> {}",
                    c.component,
                    show(&c.before),
                    show(&c.after)
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// The configured file source's state file, when it is one file; a
    /// directory cannot be rewritten to one document.
    fn state_file(&self, device: &super::engine::Device) -> anyhow::Result<Option<PathBuf>> {
        let Some(files) = device.files.clone() else {
            return Ok(None);
        };
        match std::fs::metadata(&files.path) {
            Ok(m) if m.is_dir() => anyhow::bail!(
                "the file source {} is a directory: berth rollback cannot tell which of its files to rewrite (edit them to the document of the target, or roll back without [files] in --config)",
                files.path.display()
            ),
            Ok(_) => Ok(Some(files.path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", files.path.display())),
        }
    }
}
