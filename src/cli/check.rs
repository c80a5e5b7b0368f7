//! `berth check`: which managed containers have a newer image in their
//! registry, which tags moved, and what each candidate changes; with
//! `--write`, the document with the candidates applied (the GitOps flow).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use berth::check::{self, Finding, Options, Status};
use berth::history::Source;
use berth::registry::client::OciRegistry;

use super::activity::{ExecArgs, Ran, Runner};
use super::apply::Printer;
use super::engine::{judge, print_refusal, Device, EngineArgs, PolicyArgs};

const CHECK_EXAMPLES: &str = "\
Exit status: 0 no upgrade available, 2 some (upgrade-available or tag-moved),
1 error. A registry that cannot tell is a result (unknown, with the reason).

Examples:
  berth check
  berth check --json | jq '.containers[] | select(.status == \"upgrade-available\")'
  berth check --any-major --write next.json && berth plan next.json
  berth check --apply web             check web again now, then roll it out
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

    /// Check NAME (a container or component) again now, and roll its
    /// candidate out through a normal activity, pinned by digest, with
    /// the readiness gate and rollback. An earlier result is never trusted.
    #[arg(long, value_name = "NAME", conflicts_with = "write")]
    apply: Option<String>,

    /// The document `--write` and `--apply` start from; the last accepted
    /// one in `--state-dir` when not given.
    #[arg(long, value_name = "DOC")]
    from: Option<PathBuf>,

    /// How `--apply` runs its activity, and where the last accepted
    /// document lives (read only without `--apply`).
    #[command(flatten)]
    exec: ExecArgs,

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
        let wants_document = self.write.is_some() || self.apply.is_some();
        let source = match (wants_document, &self.from) {
            (false, _) => None,
            (true, Some(from)) => Some(
                std::fs::read_to_string(from)
                    .with_context(|| format!("reading {}", from.display()))?,
            ),
            (true, None) => {
                let path = self.exec.state_dir.join("desired.json");
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
            let mut targets = check::targets(&rt, &device.plan.instance).await?;
            if let Some(name) = &self.apply {
                targets.retain(|t| t.name == *name || t.component.as_deref() == Some(name));
                if targets.is_empty() {
                    anyhow::bail!("--apply {name}: no container or component of that name is managed by this berth");
                }
            }
            let registry = OciRegistry::new(device.credentials.clone());
            anyhow::Ok(check::run(&registry, targets, &options).await)
        })?;
        let mut out = io::stdout().lock();
        if self.json {
            let report = check::watch::Report::new(findings.clone(), None);
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        } else {
            print_table(&mut out, &findings)?;
        }
        if let (Some(name), Some(text)) = (self.apply.clone(), &source) {
            drop(out);
            return self.roll_out(&device, &name, text, &findings);
        }
        if let (Some(path), Some(text)) = (&self.write, source) {
            let ms = berth::history::now_ms();
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

impl CheckArgs {
    /// `--apply NAME`: the fresh finding's candidate, pinned by digest in
    /// the document, applied as `berth apply` would. Nothing is touched
    /// unless the check found something to roll out.
    fn roll_out(
        &self,
        device: &Device,
        name: &str,
        text: &str,
        findings: &[Finding],
    ) -> anyhow::Result<ExitCode> {
        let Some(f) = findings.first() else {
            anyhow::bail!("--apply {name}: nothing was checked");
        };
        if !f.status.is_available() {
            let why = f
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            if f.status == Status::UpToDate {
                eprintln!("berth: {name} is up-to-date; nothing to apply");
                return Ok(ExitCode::SUCCESS);
            }
            anyhow::bail!(
                "--apply {name}: nothing can be applied: {}{why}; nothing was changed",
                f.status.as_str()
            );
        }
        let ms = berth::history::now_ms();
        let (doc, changed) =
            check::write_candidates(text, std::slice::from_ref(f), &format!("check-{ms}"))
                .map_err(anyhow::Error::msg)
                .context("the document to apply")?;
        if changed == 0 {
            anyhow::bail!(
                "--apply {name}: the document has no component {} with an image; nothing was changed",
                f.component.as_deref().unwrap_or(&f.name)
            );
        }
        if let Some(c) = &f.candidate {
            eprintln!(
                "berth: applying {name}: {} -> {}@{}",
                f.current.as_ref().map_or("-", |c| c.reference.as_str()),
                c.reference,
                c.digest.as_deref().unwrap_or("?")
            );
        }
        let what = format!("check --apply {name}");
        let (doc, verdict) = judge(&what, doc, &device.spec);
        let Ok(accepted) = verdict else {
            anyhow::bail!(
                "--apply {name}: the document with the candidate is not valid; nothing was changed"
            );
        };
        let runner = Runner {
            exec: &self.exec,
            engine: &self.engine,
            policy: &self.policy,
            device,
        };
        let mut printer = Printer::stdout(self.json);
        let ran = runner.run(&doc, &accepted.desired, Source::Upgrade, false, &mut |f| {
            printer.print(f)
        })?;
        Ok(match ran {
            Ran::Refused(refusal) => {
                print_refusal(std::path::Path::new(&what), &refusal);
                ExitCode::FAILURE
            }
            Ran::Done(record) if record.outcome == Some(berth::feedback::Status::Completed) => {
                ExitCode::SUCCESS
            }
            Ran::Done(_) => ExitCode::FAILURE,
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
