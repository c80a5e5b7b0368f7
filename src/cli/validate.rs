//! `berth validate FILE...`: every problem of every document, one per line.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use berth::spec::{self, Diagnostic};

use super::engine::read;

const VALIDATE_EXAMPLES: &str = "\
Exit status: 0 when every document is valid, 1 otherwise.

Examples:
  berth validate examples/*.json
  berth validate --json state.json | jq .errors
  mosquitto_sub -t containersupdate/desiredstate -C 1 | berth validate -";

/// Arguments of `berth validate`.
#[derive(Debug, Args)]
#[command(after_help = VALIDATE_EXAMPLES)]
pub struct ValidateArgs {
    /// Documents to check; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Print one JSON object per file: {"file", "valid", "errors", "warnings"}.
    #[arg(long)]
    json: bool,
}

/// One file's verdict, as `--json` prints it.
#[derive(Serialize)]
struct Verdict<'a> {
    file: &'a str,
    valid: bool,
    errors: &'a [Diagnostic],
    warnings: &'a [Diagnostic],
}

impl ValidateArgs {
    /// Checks every file, keeps going past bad ones, and fails if any was bad.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let options = spec::Options::default();
        let stdout = io::stdout();
        let mut out = stdout.lock();
        let mut all_valid = true;
        for path in &self.files {
            let name = path.display().to_string();
            let (containers, errors, warnings) = match read(path) {
                Err(e) => (
                    0,
                    vec![Diagnostic {
                        path: "document".into(),
                        message: format!("cannot be read: {e}"),
                    }],
                    Vec::new(),
                ),
                Ok(text) => match spec::parse(&text, &options) {
                    Ok(accepted) => (
                        accepted.desired.containers.len(),
                        Vec::new(),
                        accepted.warnings,
                    ),
                    Err(rejection) => (0, rejection.errors, rejection.warnings),
                },
            };
            let valid = errors.is_empty();
            all_valid &= valid;
            if self.json {
                let verdict = Verdict {
                    file: &name,
                    valid,
                    errors: &errors,
                    warnings: &warnings,
                };
                serde_json::to_writer(&mut out, &verdict).context("writing JSON")?;
                writeln!(out)?;
                continue;
            }
            for w in &warnings {
                eprintln!("{name}: warning: {w}");
            }
            for e in &errors {
                eprintln!("{name}: {e}");
            }
            if valid {
                let plural = if containers == 1 { "" } else { "s" };
                writeln!(out, "{name}: valid ({containers} container{plural})")?;
            }
        }
        out.flush()?;
        Ok(if all_valid {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}
