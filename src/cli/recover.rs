//! `berth recover`: finish whatever an interrupted activity left (a crash, a
//! power cut, a rollback that could not finish), then exit. The same
//! recovery runs before every `apply` and at every start of `berth run`;
//! this command lets an operator (or a boot script) run it alone.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use berth::execute;
use berth::journal::{StateDir, DEFAULT_STATE_DIR};
use berth::spec::validate::DEFAULT_DOMAIN;

use super::apply::Printer;
use super::engine::{instance_name, EngineArgs};

const RECOVER_EXAMPLES: &str = "\
Exit status: 0 when nothing is left half-way, 1 when a step still fails (the
journal is kept; run it again once the engine answers).

Examples:
  berth recover
  berth recover --json --state-dir /var/lib/berth   the interrupted activity's final feedback";

/// Arguments of `berth recover`.
#[derive(Debug, Args)]
#[command(after_help = RECOVER_EXAMPLES)]
pub struct RecoverArgs {
    /// Print the interrupted activity's final feedback as one line of JSON.
    #[arg(long)]
    json: bool,

    /// Where the lock, the journal and the last accepted document live.
    #[arg(long, default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    state_dir: PathBuf,

    /// This berth's name on the engine: only its containers are touched.
    #[arg(long, env = "BERTH_INSTANCE", default_value = berth::labels::DEFAULT_INSTANCE, value_parser = instance_name)]
    instance: String,

    #[command(flatten)]
    engine: EngineArgs,
}

impl RecoverArgs {
    /// Runs recovery and reports it.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let state = StateDir::open(&self.state_dir)?;
        let _claim = berth::instance::Claim::take(&self.instance, &self.state_dir)?;
        let runtime = tokio::runtime::Runtime::new()?;
        let mut printer = Printer::stdout(self.json);
        runtime.block_on(async {
            let rt = super::hooks::engine(self.engine.connect().await?)?;
            match execute::recover_with_verdict(&rt, &state, &self.instance, DEFAULT_DOMAIN).await {
                Ok(berth::execute::AfterRecovery { lines, verdict, .. }) => {
                    for line in &lines {
                        eprintln!("berth: recovered: {line}");
                    }
                    if lines.is_empty() {
                        eprintln!("berth: nothing to recover");
                    }
                    if let Some(f) = verdict {
                        printer.print(&f);
                    }
                    anyhow::Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("berth: recovery is not finished: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        })
    }
}
