//! `berth state`: the current inventory, as a table or as Kanto's
//! current-state message.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;

use berth::inventory::{self, InventoryOptions, DEFAULT_REDACT};
use berth::observe::{self, Observed};
use berth::runtime::Status;

use super::engine::{EngineArgs, Paint};

const STATE_EXAMPLES: &str = "\
Examples:
  berth state
  berth state --json | jq '.payload.softwareNodes[].id'
  berth state --system-containers agent --redact-env '*PASSWORD*,*PIN*'";

/// Arguments of `berth state`.
#[derive(Debug, Args)]
#[command(after_help = STATE_EXAMPLES)]
pub struct StateArgs {
    /// Print Kanto's current-state message (schemas/current-state.schema.json).
    #[arg(long)]
    json: bool,

    /// Containers shown as system containers (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    system_containers: Vec<String>,

    /// Env names whose values are shown as <redacted> (comma-separated globs).
    #[arg(long, value_delimiter = ',', value_name = "PATTERNS", default_values_t = DEFAULT_REDACT.map(String::from))]
    redact_env: Vec<String>,

    #[command(flatten)]
    engine: EngineArgs,
}

impl StateArgs {
    /// Reads the engine and prints the inventory.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Runtime::new()?;
        let (observed, images) = runtime.block_on(async {
            let rt = self.engine.connect().await?;
            let observed = observe::gather(&rt, &[], &[]).await?;
            let images = observe::images_of(&rt, &observed).await?;
            anyhow::Ok((observed, images))
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut out = io::stdout().lock();
        if self.json {
            let options = InventoryOptions {
                redact: self.redact_env.clone(),
                ..Default::default()
            };
            let ms = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
            let state = inventory::build(
                &observed,
                &images,
                &format!("current-state-{ms}"),
                ms,
                &options,
            );
            serde_json::to_writer_pretty(&mut out, &state)?;
            writeln!(out)?;
        } else {
            table(
                &mut out,
                &observed,
                &self.system_containers,
                now,
                Paint::stdout(),
            )?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn uptime(started_at: Option<&str>, now: Duration) -> Option<String> {
    let started = humantime::parse_rfc3339_weak(started_at?.trim_end_matches('Z')).ok()?;
    let started = started.duration_since(UNIX_EPOCH).ok()?;
    let up = now.checked_sub(started)?;
    Some(humantime::format_duration(Duration::from_secs(up.as_secs())).to_string())
}

fn table<W: Write>(
    w: &mut W,
    observed: &Observed,
    system: &[String],
    now: Duration,
    paint: Paint,
) -> io::Result<()> {
    let mut rows: Vec<[String; 6]> = observed
        .containers
        .iter()
        .map(|c| {
            let running = c.details.state.status == Status::Running;
            [
                c.name().to_string(),
                c.config.image.to_string(),
                inventory::version(c),
                match c.details.state.status {
                    Status::Exited => format!("exited ({})", c.details.state.exit_code),
                    s => s.as_str().to_string(),
                },
                inventory::management(c, system).as_str().to_string(),
                running
                    .then(|| uptime(c.details.state.started_at.as_deref(), now))
                    .flatten()
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    rows.sort();
    let header = ["NAME", "IMAGE", "VERSION", "STATUS", "OWNER", "UPTIME"].map(String::from);
    let mut widths = [0usize; 6];
    for row in rows.iter().chain(std::iter::once(&header)) {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |row: &[String; 6]| {
        row.iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(w, "{}", paint.paint("1", &line(&header)))?;
    for row in &rows {
        writeln!(w, "{}", line(row))?;
    }
    if rows.is_empty() {
        writeln!(w, "(no containers)")?;
    }
    Ok(())
}
