//! `berth plan FILE`: what an apply would do, and why, without doing it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use berth::observe;
use berth::plan::{self, Action, Plan};
use berth::spec::DesiredState;

use super::engine::{load, print_refusal, Device, EngineArgs, Paint, PolicyArgs};

const PLAN_EXAMPLES: &str = "\
Exit status: 0 success, 1 error (an invalid document, or one the --config
policy refuses); with --detailed-exitcode 0 in sync, 2 changes pending.

Examples:
  berth plan examples/multi.json
  berth plan --json state.json | jq '.actions[] | select(.action != \"keep\")'
  berth plan --detailed-exitcode --system-containers agent,cloudconnector state.json
  berth plan --config /etc/berth/config.toml state.json   the device's [policy] first";

/// Arguments of `berth plan`.
#[derive(Debug, Args)]
#[command(after_help = PLAN_EXAMPLES)]
pub struct PlanArgs {
    /// The desired-state document; `-` reads standard input.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Print the plan as JSON (schemas/plan.schema.json).
    #[arg(long)]
    json: bool,

    /// Exit 0 when nothing would change and 2 when something would.
    #[arg(long)]
    detailed_exitcode: bool,

    #[command(flatten)]
    engine: EngineArgs,

    #[command(flatten)]
    policy: PolicyArgs,
}

impl PlanArgs {
    /// Validates and checks the policy (touching nothing when the document
    /// is refused), observes and plans.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let device = self.policy.device()?;
        let (_, Ok(accepted)) = load(&self.file, &device.spec)? else {
            return Ok(ExitCode::FAILURE);
        };
        let Some(plan) = show(
            &self.engine,
            &device,
            &self.file,
            &accepted.desired,
            self.json,
        )?
        else {
            return Ok(ExitCode::FAILURE);
        };
        Ok(match (self.detailed_exitcode, plan.has_changes()) {
            (true, true) => ExitCode::from(2),
            _ => ExitCode::SUCCESS,
        })
    }
}

/// Checks the policy, observes the engine, plans `desired` and prints the
/// plan (JSON or for people); shared by `plan` and `apply --dry-run`.
/// `None` when the policy refuses the document: the violations are printed
/// on standard error (named after `path`) and nothing is planned.
pub fn show(
    engine: &EngineArgs,
    device: &Device,
    path: &Path,
    desired: &DesiredState,
    json: bool,
) -> anyhow::Result<Option<Plan>> {
    let plan = match compute(engine, device, desired)? {
        Ok(plan) => plan,
        Err(refusal) => {
            print_refusal(path, &refusal);
            return Ok(None);
        }
    };
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &plan)?;
        writeln!(out)?;
    } else {
        print(&mut out, &plan, Paint::stdout())?;
    }
    Ok(Some(plan))
}

/// Checks the policy, observes the engine and plans `desired`, printing
/// nothing: the policy's refusal, or the plan.
///
/// # Errors
/// When the engine cannot be reached or read.
pub fn compute(
    engine: &EngineArgs,
    device: &Device,
    desired: &DesiredState,
) -> anyhow::Result<Result<Plan, berth::policy::Refusal>> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let rt = engine
            .connect()
            .await?
            .with_credentials(device.credentials.clone());
        if let Err(refusal) = device.check(&rt, desired).await? {
            return anyhow::Ok(Err(refusal));
        }
        let observed = observe::gather_for(&rt, desired).await?;
        anyhow::Ok(Ok(plan::compute(desired, &observed, &device.plan)))
    })
}

fn marker(action: Action) -> (&'static str, &'static str) {
    match action {
        Action::Create => ("+", "32"),
        Action::Recreate => ("~", "33"),
        Action::Update => ("~", "36"),
        Action::Start => (">", "34"),
        Action::Keep => ("=", "2"),
        Action::Remove => ("-", "31"),
        Action::Ignore => ("!", "2"),
    }
}

/// Prints a plan for people: one aligned line per container, further
/// reasons and the settings diff below it, then the summary.
pub fn print<W: Write>(w: &mut W, plan: &Plan, paint: Paint) -> io::Result<()> {
    let width = plan.actions.iter().map(|e| e.id.len()).max().unwrap_or(0);
    writeln!(w, "Plan for activity {}:", plan.activity_id)?;
    if plan.actions.is_empty() {
        writeln!(w, "  (no containers)")?;
    }
    for entry in &plan.actions {
        let (mark, colour) = marker(entry.action);
        let head = format!("{mark} {:<8}", entry.action.as_str());
        let mut reasons = entry.reasons.iter();
        let first = reasons.next().map(String::as_str).unwrap_or("");
        writeln!(
            w,
            "  {}  {:<width$}  {first}",
            paint.paint(colour, &head),
            entry.id
        )?;
        for reason in reasons {
            writeln!(w, "  {:<10}  {:<width$}  {reason}", "", "")?;
        }
        if let Some(diff) = &entry.diff {
            for line in diff.lines() {
                let colour = match line.chars().next() {
                    Some('+') => "32",
                    Some('-') => "31",
                    Some('@') => "36",
                    _ => "0",
                };
                writeln!(w, "      {}", paint.paint(colour, line))?;
            }
        }
    }
    for warning in &plan.warnings {
        writeln!(w, "{}", paint.paint("33", &format!("warning: {warning}")))?;
    }
    writeln!(w, "Plan: {}", plan.summary())
}
