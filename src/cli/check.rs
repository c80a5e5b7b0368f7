//! `berth check`: which managed containers have a newer image in their
//! registry, which tags moved, and what each candidate changes; with
//! `--write`, the document with the candidates applied (the GitOps flow).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;

use berth::check::{self, Finding, Options, Status};
use berth::journal::DEFAULT_STATE_DIR;
use berth::registry::client::OciRegistry;

use super::engine::{EngineArgs, PolicyArgs};

const CHECK_EXAMPLES: &str = "\
Exit status: 0 no upgrade available, 2 some (upgrade-available or tag-moved),
1 error. A registry that cannot tell is a result (unknown, with the reason).

Examples:
  berth check
  berth check --json | jq '.containers[] | select(.status == \"upgrade-available\")'
  berth check --any-major --write next.json && berth plan next.json
  berth check --config /etc/berth/config.toml   [[registries]] credentials";

/// Arguments of `berth check`.
#[derive(Debug, Args)]
#[command(after_help = CHECK_EXAMPLES)]
pub struct CheckArgs {
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,

    /// Any newer major version is a candidate, not only the current major.
    #[arg(long)]
    any_major: bool,

    /// Write a desired-state document with the candidates applied (pinned
    /// by digest), ready for `berth plan` or `berth apply`.
    #[arg(long, value_name = "FILE")]
    write: Option<PathBuf>,

    /// The document `--write` starts from; the last accepted one in
    /// `--state-dir` when not given.
    #[arg(long, value_name = "DOC", requires = "write")]
    from: Option<PathBuf>,

    /// Where the last accepted document lives (read only).
    #[arg(long, default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    state_dir: PathBuf,

    #[command(flatten)]
    engine: EngineArgs,

    #[command(flatten)]
    policy: PolicyArgs,
}

impl CheckArgs {
    /// Reads the engine, asks the registries, prints, and writes.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let device = self.policy.device()?;
        let options = Options {
            any_major: self.any_major,
            redactor: device.plan.redactor.clone(),
        };
        // Read before anything is asked: a missing document is an error
        // worth knowing before the network is.
        let source = match (&self.write, &self.from) {
            (None, _) => None,
            (Some(_), Some(from)) => Some(
                std::fs::read_to_string(from)
                    .with_context(|| format!("reading {}", from.display()))?,
            ),
            (Some(_), None) => {
                let path = self.state_dir.join("desired.json");
                Some(std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "reading the last accepted document {} (give --from DOC)",
                        path.display()
                    )
                })?)
            }
        };
        let runtime = tokio::runtime::Runtime::new()?;
        let findings = runtime.block_on(async {
            let rt = self.engine.connect().await?;
            let targets = check::targets(&rt, &device.plan.instance).await?;
            let registry = OciRegistry::new(device.credentials.clone());
            anyhow::Ok(check::run(&registry, targets, &options).await)
        })?;
        let mut out = io::stdout().lock();
        if self.json {
            let available = findings.iter().filter(|f| f.status.is_available()).count();
            let doc = serde_json::json!({ "containers": findings, "available": available });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        } else {
            print_table(&mut out, &findings)?;
        }
        if let (Some(path), Some(text)) = (&self.write, source) {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let (doc, changed) = check::write_candidates(&text, &findings, &format!("check-{ms}"))
                .map_err(anyhow::Error::msg)
                .context("the document for --write")?;
            std::fs::write(path, doc + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "berth: wrote {} ({changed} image(s) changed)",
                path.display()
            );
        }
        Ok(if findings.iter().any(|f| f.status.is_available()) {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// One line per container, then its drift indented below it.
fn print_table<W: Write>(w: &mut W, findings: &[Finding]) -> io::Result<()> {
    if findings.is_empty() {
        return writeln!(w, "no managed containers");
    }
    for f in findings {
        let current = f.current.as_ref().map_or("-", |c| c.reference.as_str());
        write!(w, "{}  {}  {current}", f.name, f.status.as_str())?;
        if let Some(c) = &f.candidate {
            write!(w, " -> {}", c.reference)?;
            if let Some(d) = &c.digest {
                write!(w, "@{d}")?;
            }
        }
        if let (Some(r), true) = (&f.reason, f.status != Status::UpToDate) {
            write!(w, "  ({r})")?;
        }
        writeln!(w)?;
        if let Some(d) = &f.drift {
            for e in &d.env_added {
                writeln!(w, "    env + {}={}", e.name, e.value)?;
            }
            for e in &d.env_removed {
                writeln!(w, "    env - {e}")?;
            }
            for e in &d.env_changed {
                writeln!(w, "    env ~ {}: {} -> {}", e.name, e.from, e.to)?;
            }
            for p in &d.ports_added {
                writeln!(w, "    port + {p}")?;
            }
            for p in &d.ports_removed {
                writeln!(w, "    port - {p}")?;
            }
            for v in &d.volumes_added {
                writeln!(w, "    volume + {v}")?;
            }
            for v in &d.volumes_removed {
                writeln!(w, "    volume - {v}")?;
            }
            if let Some(u) = &d.user {
                writeln!(w, "    user: {:?} -> {:?}", u.from, u.to)?;
            }
            if let Some(e) = &d.entrypoint {
                writeln!(w, "    entrypoint: {:?} -> {:?}", e.from, e.to)?;
            }
        }
    }
    Ok(())
}
