//! `berth policy check FILE`: every decision the device's `[policy]` makes
//! about a document, allowed or refused, and why; nothing is changed.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;

use berth::policy::{Decision, EnvBaseline, RealHostPaths, Verdict};

use super::engine::{load, EngineArgs, Paint, PolicyArgs};

const POLICY_EXAMPLES: &str = "\
Exit status: 0 when the policy allows the whole document, 1 when it refuses
anything (or the document is invalid).

Examples:
  berth policy check --config /etc/berth/config.toml state.json
  berth policy check --config config.toml --json state.json | jq '.decisions[] | select(.verdict == \"refused\")'
  berth policy check --config config.toml --baseline current.json next.json";

/// Arguments of `berth policy`.
#[derive(Debug, Args)]
pub struct PolicyCmd {
    #[command(subcommand)]
    command: PolicyCommand,
}

/// `berth policy` subcommands.
#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Explain every policy decision about a document (exit 1 if any is a refusal).
    Check(CheckArgs),
}

/// Arguments of `berth policy check`.
#[derive(Debug, Args)]
#[command(after_help = POLICY_EXAMPLES)]
struct CheckArgs {
    /// The desired-state document; `-` reads standard input.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Print the decisions as JSON.
    #[arg(long)]
    json: bool,

    /// A document to compare env with for `allow_env_change` (the one the
    /// device enforces now); without it the containers on the engine are
    /// read, when the policy restricts env changes at all.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,

    #[command(flatten)]
    engine: EngineArgs,

    #[command(flatten)]
    policy: PolicyArgs,
}

/// `--json` output.
#[derive(Serialize)]
struct Report<'a> {
    allowed: bool,
    refused: usize,
    decisions: &'a [Decision],
}

impl PolicyCmd {
    /// Runs the chosen `policy` subcommand.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        match self.command {
            PolicyCommand::Check(args) => args.exec(),
        }
    }
}

impl CheckArgs {
    fn exec(self) -> anyhow::Result<ExitCode> {
        let device = self.policy.device()?;
        let (_, Ok(accepted)) = load(&self.file, &device.spec)? else {
            return Ok(ExitCode::FAILURE);
        };
        let desired = accepted.desired;
        let given = match &self.baseline {
            Some(path) => {
                let (_, Ok(current)) = load(path, &device.spec)? else {
                    return Ok(ExitCode::FAILURE);
                };
                Some(EnvBaseline::from_desired(&current.desired))
            }
            None => None,
        };
        let env = given.is_none() && device.policy.needs_env_baseline();
        let (observed, system) = if device.needs_engine(&desired, env) {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let rt = self.engine.connect().await?;
                device.inputs(&rt, &desired, env).await
            })?
        } else {
            (EnvBaseline::none(), device.system(&desired))
        };
        let baseline = given.unwrap_or(observed);
        let decisions = device
            .policy
            .explain(&desired, &baseline, &system, &RealHostPaths);
        let refused = decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Refused)
            .count();
        let mut out = io::stdout().lock();
        if self.json {
            let report = Report {
                allowed: refused == 0,
                refused,
                decisions: &decisions,
            };
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        } else {
            print(&mut out, &decisions, refused, Paint::stdout())?;
        }
        Ok(if refused == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}

/// One line per decision: verdict, component, key, value, rule and why.
fn print<W: Write>(
    w: &mut W,
    decisions: &[Decision],
    refused: usize,
    paint: Paint,
) -> io::Result<()> {
    let width = decisions
        .iter()
        .map(|d| d.component.chars().count())
        .max()
        .unwrap_or(0);
    for d in decisions {
        let verdict = match d.verdict {
            Verdict::Allowed => paint.paint("32", "allowed"),
            Verdict::Refused => paint.paint("31", "REFUSED"),
        };
        let reason = if d.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", d.reason)
        };
        writeln!(
            w,
            "{verdict}  {:<width$}  {:<10} \"{}\"  {}{reason}",
            d.component, d.key, d.value, d.rule
        )?;
    }
    writeln!(
        w,
        "Policy: {} decisions, {refused} refused",
        decisions.len()
    )
}
