//! `berth apply FILE`: converge the engine to a document, with feedback.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use berth::execute::RollbackMode;
use berth::feedback::{Feedback, Status, Tracker};
use berth::history::Source;
use berth::spec::validate::DEFAULT_DOMAIN;

use super::activity::{ExecArgs, Ran, Runner};
use super::engine::{load, print_refusal, EngineArgs, Paint, PolicyArgs};

const APPLY_EXAMPLES: &str = "\
Exit status: 0 when the activity COMPLETED, 1 otherwise (the device then runs
the previous containers: a failed apply rolls back). A document the --config
policy refuses changes nothing: nothing is pulled, created or saved.

Examples:
  berth apply examples/multi.json
  berth apply --json state.json          one Kanto feedback message per line
  berth apply --dry-run state.json       the plan, nothing changed
  berth apply --config /etc/berth/config.toml state.json   under the device's [policy]
  berth apply --parallel 2 --min-ready 5s --state-dir /var/lib/berth state.json";

/// Arguments of `berth apply`.
#[derive(Debug, Args)]
#[command(after_help = APPLY_EXAMPLES)]
pub struct ApplyArgs {
    /// The desired-state document; `-` reads standard input.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Print each feedback message as one line of JSON (schemas/feedback.schema.json).
    #[arg(long)]
    json: bool,

    /// Show the plan and change nothing (same as `berth plan`).
    #[arg(long)]
    dry_run: bool,

    #[command(flatten)]
    exec: ExecArgs,

    #[command(flatten)]
    engine: EngineArgs,

    #[command(flatten)]
    policy: PolicyArgs,
}

/// `--rollback` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RollbackArg {
    /// Every container of the activity goes back.
    Activity,
    /// Only the failed container goes back.
    Container,
}

impl From<RollbackArg> for RollbackMode {
    fn from(r: RollbackArg) -> Self {
        match r {
            RollbackArg::Activity => RollbackMode::Activity,
            RollbackArg::Container => RollbackMode::Container,
        }
    }
}

/// Prints feedback: JSON lines, or a line per change for people.
pub(super) struct Printer {
    json: bool,
    paint: Paint,
    last: BTreeMap<String, String>,
}

impl Printer {
    /// A printer for standard output.
    pub(super) fn stdout(json: bool) -> Self {
        Self {
            json,
            paint: Paint::stdout(),
            last: BTreeMap::new(),
        }
    }

    pub(super) fn print(&mut self, f: &Feedback) {
        let mut out = io::stdout().lock();
        if self.json {
            let _ = serde_json::to_writer(&mut out, f);
            let _ = writeln!(out);
            return;
        }
        let status = serde_json::to_value(f.payload.status).unwrap_or_default();
        let status = status.as_str().unwrap_or_default().to_string();
        let colour = match f.payload.status {
            Status::Completed | Status::RollbackSuccess => "32",
            Status::Incomplete
            | Status::DownloadFailure
            | Status::UpdateFailure
            | Status::ActivationFailure
            | Status::RollbackFailure => "31",
            Status::Rollback => "33",
            _ => "1",
        };
        if self.last.get("").map(String::as_str) != Some(status.as_str())
            || f.payload.message.is_some()
        {
            let message = f
                .payload
                .message
                .as_deref()
                .map(|m| format!("  {m}"))
                .unwrap_or_default();
            let _ = writeln!(out, "{}{message}", self.paint.paint(colour, &status));
            self.last.insert(String::new(), status);
        }
        for a in &f.payload.actions {
            let name = a
                .component
                .id
                .split_once(':')
                .map_or(a.component.id.as_str(), |(_, n)| n);
            let action_status = serde_json::to_value(a.status).unwrap_or_default();
            let mut line = action_status.as_str().unwrap_or_default().to_string();
            if let Some(p) = a.progress {
                line.push_str(&format!(" {p:>3}%"));
            }
            if let Some(m) = &a.message {
                line.push_str("  ");
                line.push_str(m);
            }
            if self.last.get(name) != Some(&line) {
                let _ = writeln!(out, "  {name:<20} {line}");
                self.last.insert(name.to_string(), line);
            }
        }
    }
}

/// Prints, with `--json`, the one feedback message a refused document gets
/// (IDENTIFICATION_FAILED), the activity id taken from the text when it has one.
fn print_identification_failed(text: &str, message: String) -> anyhow::Result<()> {
    let activity = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| {
            v.get("activityId")
                .and_then(|a| a.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let f = Tracker::new(&activity, DEFAULT_DOMAIN)
        .message(Status::IdentificationFailed, Some(message));
    println!("{}", serde_json::to_string(&f)?);
    Ok(())
}

impl ApplyArgs {
    /// Validates, checks the policy, recovers, plans and executes.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let device = self.policy.device()?;
        let (text, verdict) = load(&self.file, &device.spec)?;
        let accepted = match verdict {
            Ok(a) => a,
            Err(rejection) => {
                if self.json {
                    let message = rejection
                        .errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ");
                    print_identification_failed(&text, message)?;
                }
                return Ok(ExitCode::FAILURE);
            }
        };
        let desired = accepted.desired;
        if self.dry_run {
            let shown = super::plan::show(&self.engine, &device, &self.file, &desired, self.json)?;
            return Ok(match shown {
                Some(_) => ExitCode::SUCCESS,
                None => ExitCode::FAILURE,
            });
        }
        let runner = Runner {
            exec: &self.exec,
            engine: &self.engine,
            policy: &self.policy,
            device: &device,
        };
        let mut printer = Printer::stdout(self.json);
        let ran = runner.run(&text, &desired, Source::Cli, false, &mut |f| {
            printer.print(f)
        })?;
        let outcome = match ran {
            Ran::Refused(refusal) => {
                print_refusal(&self.file, &refusal);
                if self.json {
                    print_identification_failed(&text, refusal.to_string())?;
                }
                return Ok(ExitCode::FAILURE);
            }
            Ran::Done(record) => record.outcome,
        };
        Ok(if outcome == Some(Status::Completed) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}
