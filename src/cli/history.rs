//! `berth history`: the last activities, with their sources, outcomes and
//! the versions each component ran before and after, secrets redacted.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

use berth::history::{self, History, Record};
use berth::journal::DEFAULT_STATE_DIR;

use super::engine::PolicyArgs;

const HISTORY_EXAMPLES: &str = "\
The state directory keeps the last 100 activities (berth apply, upgrade,
rollback, and the agent's MQTT, file and start-up documents), oldest first.
Secrets in documents and messages are shown redacted ([redact] env patterns
of --config); the state directory keeps them as applied.

Examples:
  berth history
  berth history --json                   every record, with its document
  berth history --state-dir /var/lib/berth";

/// Arguments of `berth history`.
#[derive(Debug, Args)]
#[command(after_help = HISTORY_EXAMPLES)]
pub struct HistoryArgs {
    /// Print the records as one JSON array (documents included).
    #[arg(long)]
    json: bool,

    /// Where the activity history lives (the state directory).
    #[arg(long, default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    state_dir: std::path::PathBuf,

    #[command(flatten)]
    policy: PolicyArgs,
}

impl HistoryArgs {
    /// Reads and prints the history. Needs no lock: the history is
    /// replaced atomically, so a running agent never shows half a file.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let device = self.policy.device()?;
        let history = History::load(&self.state_dir)?;
        let redactor = &device.plan.redactor;
        let shown: Vec<Record> = history.records().map(|r| r.redacted(redactor)).collect();
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer(&mut out, &shown)?;
            writeln!(out)?;
        } else {
            print(&mut out, &shown)?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// One block per activity: a head line, then each component that changed.
fn print<W: Write>(w: &mut W, records: &[Record]) -> std::io::Result<()> {
    if records.is_empty() {
        return writeln!(w, "No activities recorded.");
    }
    for r in records {
        let started = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.started),
        );
        let took = r.ended.map_or_else(
            || "running".to_string(),
            |e| {
                let ms = e.saturating_sub(r.started);
                humantime::format_duration(std::time::Duration::from_millis(ms / 100 * 100))
                    .to_string()
            },
        );
        let outcome = r
            .outcome
            .map_or_else(|| "-".to_string(), history::status_word);
        writeln!(
            w,
            "{} {:<8} {started}  {took:<8} {outcome}",
            r.id,
            r.source.as_str()
        )?;
        if let Some(m) = r.message.as_deref().filter(|_| !r.completed()) {
            writeln!(w, "    {m}")?;
        }
        let show = |v: &Option<history::Version>| {
            v.as_ref().map_or_else(
                || "(none)".to_string(),
                |v| match &v.version {
                    Some(version) => format!("{} ({version})", v.image),
                    None => v.image.clone(),
                },
            )
        };
        for c in r.components.iter().filter(|c| c.changed()) {
            writeln!(
                w,
                "    {:<20} {} -> {}",
                c.component,
                show(&c.before),
                show(&c.after)
            )?;
        }
        for m in &r.migrations {
            writeln!(w, "    {:<20} migration {}", m.component, m.name)?;
        }
    }
    Ok(())
}
