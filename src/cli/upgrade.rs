//! `berth upgrade VERSION --file STATE`: move components to a release by
//! their image tags, checked in the registry first, applied with rollback,
//! and the state file restored byte for byte when it fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use berth::feedback::Feedback;
use berth::history::{self, Source};
use berth::plan::Plan;
use berth::registry::client::{OciRegistry, Registry, RegistryError};
use berth::upgrade::{self, Move, Selection};

use super::activity::{Delivered, ExecArgs, Ran, Runner};
use super::apply::Printer;
use super::engine::{load, print_refusal, EngineArgs, PolicyArgs};

const UPGRADE_EXAMPLES: &str = "\
Steps: select the components (--components, or every component on the tag
most of them share), check every new reference in its registry (a missing
tag is refused and nothing changes), show the plan (--dry-run stops there),
write the file atomically and apply it. When the activity fails, the device
is rolled back, the file gets its previous bytes back, and berth exits 1.
Only the image tags and the components' versions change in the file (and
its activityId, so the new document is a new activity).

When the agent (berth run --config FILE) holds this instance and its [files]
path is STATE, the new file is handed to it and its activity followed in
its history, instead of applying beside it (pass the same --config).

Examples:
  berth upgrade 2.4.1 --file /etc/berth/state.json
  berth upgrade 2.4.1 --file state.json --components api,worker
  berth upgrade 2.4.1 --file state.json --dry-run    the selection and the plan only
  berth upgrade 2.4.1 --file state.json --json       one JSON result on stdout
  berth upgrade 2.4.1 --file /etc/berth/state.json --config /etc/berth/config.toml";

/// Arguments of `berth upgrade`.
#[derive(Debug, Args)]
#[command(after_help = UPGRADE_EXAMPLES)]
pub struct UpgradeArgs {
    /// The release: the image tag the components move to (and their version).
    #[arg(value_name = "VERSION")]
    version: String,

    /// The state file to upgrade (a desired-state document).
    #[arg(long, value_name = "STATE")]
    file: PathBuf,

    /// The components to move (comma-separated); by default every
    /// component whose tag is the one most of them share.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    components: Vec<String>,

    /// Show the selection and the plan; write and apply nothing.
    #[arg(long)]
    dry_run: bool,

    /// Print one JSON object with the selection, the plan and the result
    /// (progress goes to standard error).
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    exec: ExecArgs,

    #[command(flatten)]
    engine: EngineArgs,

    #[command(flatten)]
    policy: PolicyArgs,
}

/// `--json`'s result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    file: &'a Path,
    version: &'a str,
    activity_id: &'a str,
    /// `tag <t>` when chosen by the shared tag, `names` for --components.
    selected_by: String,
    components: Vec<Moved>,
    unchanged: &'a [String],
    already: &'a [String],
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a Plan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    applied_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u128>,
}

/// A new reference the registry does not have (or could not be asked about).
#[derive(Debug, Serialize)]
struct Unavailable {
    component: String,
    reference: String,
    error: String,
}

#[derive(Debug, Serialize)]
struct Moved {
    component: String,
    from: String,
    to: String,
}

fn moved(moves: &[Move]) -> Vec<Moved> {
    moves
        .iter()
        .map(|m| Moved {
            component: m.component.clone(),
            from: m.from.to_string(),
            to: m.to.to_string(),
        })
        .collect()
}

impl UpgradeArgs {
    /// Selects, checks, plans, writes and applies.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        if self.file.as_os_str() == "-" {
            anyhow::bail!("--file: berth upgrade rewrites the state file, so it must be a file, not standard input");
        }
        let device = self.policy.device()?;
        let (text, verdict) = load(&self.file, &device.spec)?;
        let Ok(accepted) = verdict else {
            eprintln!(
                "berth: {} is not a valid document: nothing was changed",
                self.file.display()
            );
            return Ok(ExitCode::FAILURE);
        };
        let selection = upgrade::select(&accepted.desired, &self.components, &self.version)?;
        if !self.json {
            print_selection(&selection, &self.version);
        }
        if selection.moves.is_empty() {
            eprintln!(
                "berth: nothing to upgrade: the selected components are on {} already",
                self.version
            );
            return Ok(ExitCode::SUCCESS);
        }
        let missing = check_registry(&device.credentials, &selection.moves);
        if !missing.is_empty() {
            for (m, e) in &missing {
                match e {
                    RegistryError::NotFound(_) => eprintln!("berth: {}: {e}", m.component),
                    _ => eprintln!("berth: {}: cannot check {}: {e}", m.component, m.to),
                }
            }
            eprintln!(
                "berth: upgrade to {} refused: {} and the containers are untouched",
                self.version,
                self.file.display()
            );
            if self.json {
                let refused: Vec<Unavailable> = missing
                    .iter()
                    .map(|(m, e)| Unavailable {
                        component: m.component.clone(),
                        reference: m.to.to_string(),
                        error: e.to_string(),
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "file": self.file,
                        "version": self.version,
                        "outcome": "REFUSED",
                        "components": moved(&selection.moves),
                        "unavailable": refused,
                    })
                );
            }
            return Ok(ExitCode::FAILURE);
        }
        let activity_id = format!("upgrade-{}-{}", self.version, history::now_ms());
        let new_text = upgrade::rewrite(&text, &selection.moves, &self.version, &activity_id)?;
        let desired = match berth::spec::parse(&new_text, &device.spec) {
            Ok(a) => a.desired,
            Err(rejection) => {
                for e in &rejection.errors {
                    eprintln!("{}: after the upgrade: {e}", self.file.display());
                }
                anyhow::bail!("the upgraded document is not valid; nothing was changed");
            }
        };
        let plan = match super::plan::compute(&self.engine, &device, &desired)? {
            Ok(p) => p,
            Err(refusal) => {
                print_refusal(&self.file, &refusal);
                eprintln!("berth: the policy refuses the upgraded document: nothing was changed");
                return Ok(ExitCode::FAILURE);
            }
        };
        let mut report = Report {
            file: &self.file,
            version: &self.version,
            activity_id: &activity_id,
            selected_by: selection
                .by_tag
                .as_ref()
                .map_or_else(|| "names".to_string(), |t| format!("tag {t}")),
            components: moved(&selection.moves),
            unchanged: &selection.others,
            already: &selection.current,
            dry_run: self.dry_run,
            plan: Some(&plan),
            outcome: None,
            message: None,
            applied_by: None,
            duration_ms: None,
        };
        if !self.json {
            super::plan::print(
                &mut std::io::stdout().lock(),
                &plan,
                super::engine::Paint::stdout(),
            )?;
        }
        if self.dry_run {
            if self.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "Dry run: {} not written, nothing applied.",
                    self.file.display()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        let runner = Runner {
            exec: &self.exec,
            engine: &self.engine,
            policy: &self.policy,
            device: &device,
        };
        let started = Instant::now();
        let mut printer = Printer::stdout(false);
        let json = self.json;
        let mut sink = |f: &Feedback| {
            if !json {
                printer.print(f);
            }
        };
        let delivered = runner
            .deliver(
                Some(&self.file),
                Some(text.as_bytes()),
                &new_text,
                &desired,
                Source::Upgrade,
                &mut sink,
            )
            .with_context(|| format!("upgrading {} to {}", self.file.display(), self.version))?;
        let took = started.elapsed();
        let record = match &delivered {
            Delivered::Here(Ran::Refused(refusal)) => {
                print_refusal(&self.file, refusal);
                eprintln!("berth: the policy refuses the upgraded document: nothing was changed");
                return Ok(ExitCode::FAILURE);
            }
            Delivered::Here(Ran::Done(r)) | Delivered::Agent(r) => r,
        };
        report.applied_by = Some(match delivered {
            Delivered::Here(_) => "berth",
            Delivered::Agent(_) => "agent",
        });
        report.outcome = record.outcome.map(history::status_word);
        report.message = record.message.clone();
        report.duration_ms = Some(took.as_millis());
        let ok = record.completed();
        if self.json {
            println!("{}", serde_json::to_string(&report)?);
        } else if ok {
            println!(
                "Upgraded to {} in {}:",
                self.version,
                humantime::format_duration(round(took))
            );
            for m in &selection.moves {
                println!("  {:<20} {} -> {}", m.component, m.from, m.to);
            }
            println!("Activity {activity_id}; berth rollback returns to the previous release.");
        }
        if !ok {
            eprintln!(
                "berth: the upgrade to {} failed ({}): {}; the device is on the previous release and {} has its previous content",
                self.version,
                record.outcome.map(history::status_word).unwrap_or_default(),
                record.message.as_deref().unwrap_or("no reason given"),
                self.file.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A duration to the tenth of a second, for people.
fn round(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}

fn print_selection(selection: &Selection, version: &str) {
    let names: Vec<&str> = selection
        .moves
        .iter()
        .map(|m| m.component.as_str())
        .collect();
    match &selection.by_tag {
        Some(tag) => println!(
            "Upgrading {} to {version}: the components on tag {tag}, the tag most of them share.",
            names.join(", ")
        ),
        None => println!("Upgrading {} to {version}.", names.join(", ")),
    }
    if !selection.current.is_empty() {
        println!("Already on {version}: {}.", selection.current.join(", "));
    }
    if !selection.others.is_empty() {
        println!("Left as they are: {}.", selection.others.join(", "));
    }
}

/// Asks each new reference's registry for its manifest, all at once;
/// returns the ones that are missing or could not be checked.
fn check_registry(
    credentials: &berth::registry::Credentials,
    moves: &[Move],
) -> Vec<(Move, RegistryError)> {
    let registry = OciRegistry::new(credentials.clone());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            return moves
                .iter()
                .map(|m| (m.clone(), RegistryError::Other(e.to_string())))
                .collect()
        }
    };
    runtime.block_on(async {
        let checks = moves.iter().map(|m| {
            let registry = &registry;
            async move { (m, registry.manifest(&m.to).await) }
        });
        futures_util::future::join_all(checks)
            .await
            .into_iter()
            .filter_map(|(m, r)| r.err().map(|e| (m.clone(), e)))
            .collect()
    })
}
