//! Command-line arguments and dispatch, one file per subcommand.

mod apply;
mod engine;
mod plan;
mod state;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  berth validate examples/*.json        check documents, one line per problem
  berth validate --json state.json      machine-readable verdicts
  cat state.json | berth validate -     read a document from standard input
  berth plan examples/multi.json        what an apply would change, and why
  berth state --json                    the inventory as Kanto's current state";

/// berth: drives Docker containers toward a desired-state document
/// (Eclipse Kanto container-update-agent format).
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, after_help = EXAMPLES)]
pub struct Args {
    /// Log filter for diagnostics on stderr (e.g. `info`, `berth=debug`).
    #[arg(long, global = true, env = "BERTH_LOG", default_value = "warn")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

/// berth's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check desired-state documents without touching the engine.
    Validate(validate::ValidateArgs),
    /// Show what applying a document would change, and why.
    Plan(plan::PlanArgs),
    /// Show the containers on the engine (Kanto current-state with --json).
    State(state::StateArgs),
    /// Converge the engine to a document: download first, roll back on failure.
    Apply(apply::ApplyArgs),
}

/// Sends `tracing` output to stderr, filtered by `--log-level`.
pub fn init_logging(args: &Args) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the chosen subcommand and says which exit code it earned.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Validate(cmd) => cmd.exec(),
        Command::Plan(cmd) => cmd.exec(),
        Command::State(cmd) => cmd.exec(),
        Command::Apply(cmd) => cmd.exec(),
    }
}
