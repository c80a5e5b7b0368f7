//! Command-line arguments and dispatch, one file per subcommand.

mod activity;
mod api;
mod apply;
mod check;
mod engine;
mod events;
mod fleet;
mod history;
mod hooks;
mod plan;
mod policy;
mod recover;
mod rollback;
mod run;
mod state;
mod status;
mod upgrade;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  berth validate examples/*.json        check documents, one line per problem
  berth validate --json state.json      machine-readable verdicts
  cat state.json | berth validate -     read a document from standard input
  berth plan examples/multi.json        what an apply would change, and why
  berth policy check --config /etc/berth/config.toml state.json   what the policy allows
  berth state --json                    the inventory as Kanto's current state
  berth check --json                    newer images, moved tags, env drift
  berth recover                         finish what an interrupted activity left
  berth upgrade 2.4.1 --file state.json move the services on the shared tag to 2.4.1
  berth history                         the last activities and what they changed
  berth rollback                        back to the document applied before
  berth run --config /etc/berth/config.toml   the agent (MQTT, state files, drift)
  berth status --token-file ui.token    ask the running agent (its API socket)
  berth events --token-file ui.token    follow its feedback and version updates
  berth fleet rollout release.json --broker mqtt://b:1883 --discover   roll out to a fleet
  berth fleet-sim --agents 1000 --broker mqtt://127.0.0.1:1883        hollow agents for load tests";

/// berth: drives Docker containers toward a desired-state document
/// (Eclipse Kanto container-update-agent format).
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, after_help = EXAMPLES)]
pub struct Args {
    /// Log filter for diagnostics on stderr (e.g. `info`, `berth=debug`);
    /// `warn` by default, `info` for `berth run`.
    #[arg(long, global = true, env = "BERTH_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Log lines for people (`text`) or for journald and log shippers
    /// (`json`: one object per line, with the activity's id).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

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
    /// Which managed containers have newer images, moved tags, and env drift.
    Check(check::CheckArgs),
    /// Show the containers on the engine (Kanto current-state with --json).
    State(state::StateArgs),
    /// Converge the engine to a document: download first, roll back on failure.
    Apply(apply::ApplyArgs),
    /// The device's policy: what documents may ask for (`berth policy check`).
    Policy(policy::PolicyCmd),
    /// Finish what an interrupted activity left (also done before every apply).
    Recover(recover::RecoverArgs),
    /// Move components to a release by image tag, with rollback on failure.
    Upgrade(upgrade::UpgradeArgs),
    /// The last activities: sources, outcomes, versions before and after.
    History(history::HistoryArgs),
    /// Apply again the document applied before the current one.
    Rollback(rollback::RollbackArgs),
    /// The agent: enforce desired states from MQTT and state files, correct drift.
    Run(Box<run::RunArgs>),
    /// Ask the running agent (its API socket) whether it is ready and what it runs.
    Status(status::StatusArgs),
    /// Follow the running agent's events: feedback and per-container updates.
    Events(events::EventsArgs),
    /// Fleets: `berth fleet rollout` publishes a release to devices in waves.
    #[command(subcommand)]
    Fleet(fleet::FleetCmd),
    /// Load tests: N complete agents on hollow (in-memory) engines, one MQTT
    /// connection each. Never touches a Docker engine.
    FleetSim(Box<fleet::FleetSimArgs>),
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// Libraries that log request and response bodies, MQTT packets or TLS
/// details at debug and trace (bollard logs every create body, env and
/// all): they are held at info whatever `--log-level` or `BERTH_LOG` says,
/// so no log level can print a secret. berth's own debug output is free of
/// values.
const QUIET_BELOW_INFO: [&str; 11] = [
    "bollard",
    // The registry client (berth check): request URLs, token exchanges.
    "oci_client",
    "reqwest",
    "docker_credential",
    "hyper",
    "hyper_util",
    "h2",
    "rumqttc",
    "rustls",
    "tower",
    "tokio_util",
];

/// Whether a log line or span from `target` at `level` may be written.
fn loud_enough(target: &str, level: &tracing::Level) -> bool {
    let quiet = QUIET_BELOW_INFO.iter().any(|q| {
        target
            .strip_prefix(q)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    });
    !quiet || *level <= tracing::Level::INFO
}

/// Sends `tracing` output to stderr, filtered by `--log-level`, as text or
/// JSON lines. Log lines inside an activity carry its `activityId`.
pub fn init_logging(args: &Args) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let default = match args.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    let level = args.log_level.as_deref().unwrap_or(default);
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let cap = tracing_subscriber::filter::filter_fn(|m| loud_enough(m.target(), m.level()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .finish()
            .with(cap)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .finish()
            .with(cap)
            .init(),
    }
}

/// Runs the chosen subcommand and says which exit code it earned.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    hooks::panic_if_asked();
    match args.command {
        Command::Validate(cmd) => cmd.exec(),
        Command::Plan(cmd) => cmd.exec(),
        Command::Check(cmd) => cmd.exec(),
        Command::State(cmd) => cmd.exec(),
        Command::Apply(cmd) => cmd.exec(),
        Command::Policy(cmd) => cmd.exec(),
        Command::Recover(cmd) => cmd.exec(),
        Command::Upgrade(cmd) => cmd.exec(),
        Command::History(cmd) => cmd.exec(),
        Command::Rollback(cmd) => cmd.exec(),
        Command::Run(cmd) => cmd.exec(),
        Command::Status(cmd) => cmd.exec(),
        Command::Events(cmd) => cmd.exec(),
        Command::Fleet(cmd) => cmd.exec(),
        Command::FleetSim(cmd) => cmd.exec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_logging_libraries_are_held_at_info_whatever_the_level() {
        use tracing::Level;
        assert!(!loud_enough("bollard::docker", &Level::DEBUG));
        assert!(!loud_enough("bollard", &Level::TRACE));
        assert!(!loud_enough("hyper_util::client", &Level::TRACE));
        assert!(!loud_enough("rumqttc::state", &Level::DEBUG));
        assert!(loud_enough("bollard::docker", &Level::WARN));
        assert!(loud_enough("berth::agent", &Level::TRACE));
        assert!(loud_enough("bollardish", &Level::TRACE));
    }
}
