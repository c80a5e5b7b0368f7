//! `berth apply FILE`: converge the engine to a document, with feedback.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use berth::execute::{self, ExecuteOptions, RollbackMode};
use berth::feedback::{Feedback, Status, Tracker};
use berth::journal::{StateDir, DEFAULT_STATE_DIR};
use berth::spec::validate::DEFAULT_DOMAIN;

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

    /// Images pulled at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,

    /// Where the lock, the journal and the last accepted document live.
    #[arg(long, default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    state_dir: PathBuf,

    /// What a failure undoes: the whole activity, or only the failed container.
    #[arg(long, value_enum, default_value_t = RollbackArg::Activity)]
    rollback: RollbackArg,

    /// How long a container without a health check must keep running to count as ready.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    min_ready: Duration,

    /// Added to a health check's worst case (start period + interval x retries).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    ready_margin: Duration,

    /// Stop grace period for containers whose document sets no stopTimeout.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    stop_timeout: Duration,

    /// Longest time one image pull may take.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pull_timeout: Duration,

    /// Longest time the whole activity may take before it rolls back.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    activity_timeout: Duration,

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
        let runtime = tokio::runtime::Runtime::new()?;
        // The policy is checked before anything is persisted, recovered,
        // pulled, created or planned: a refused document changes nothing.
        let rt = runtime.block_on(async {
            super::hooks::engine(
                self.engine
                    .connect()
                    .await?
                    .with_credentials(device.credentials.clone()),
            )
        })?;
        if let Err(refusal) = runtime.block_on(device.check(&rt, &desired))? {
            print_refusal(&self.file, &refusal);
            if self.json {
                print_identification_failed(&text, refusal.to_string())?;
            }
            return Ok(ExitCode::FAILURE);
        }
        let state = StateDir::open(&self.state_dir)?;
        let _claim = berth::instance::Claim::take(&self.policy.instance, &self.state_dir)?;
        state.save_desired(&text)?;
        let options = ExecuteOptions {
            parallel: usize::from(self.parallel),
            pull_timeout: self.pull_timeout,
            stop_timeout: self.stop_timeout,
            min_ready: self.min_ready,
            ready_margin: self.ready_margin,
            activity_timeout: self.activity_timeout,
            rollback: self.rollback.into(),
            instance: self.policy.instance.clone(),
            pause_at: super::hooks::pause_at(),
            redactor: device.plan.redactor.clone(),
            drift_repair: false,
        };
        let mut printer = Printer::stdout(self.json);
        let outcome = runtime.block_on(async {
            let (lines, verdict) =
                execute::recover_with_verdict(&rt, &state, &self.policy.instance, DEFAULT_DOMAIN)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("recovering what an earlier activity left: {e}")
                    })?;
            for line in lines {
                eprintln!("berth: recovered: {line}");
            }
            if let Some(f) = verdict {
                printer.print(&f);
            }
            let mut sink = |f: Feedback| printer.print(&f);
            let status =
                execute::apply(&rt, &state, &desired, &device.plan, &options, &mut sink).await?;
            anyhow::Ok(status)
        })?;
        Ok(if outcome == Status::Completed {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}
