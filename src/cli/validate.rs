//! `berth validate FILE...`: every problem of every document, one per line.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use berth::config::{
    check_count, MAX_LIMITS_MAX_COMPONENTS, MAX_LIMITS_MAX_DEPTH, MIN_LIMITS_MAX_DEPTH,
};
use berth::spec::limits::{DEFAULT_MAX_COMPONENTS, DEFAULT_MAX_DEPTH};
use berth::spec::{self, Diagnostic, Limits};

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

    /// Print one JSON object per file: {"file", "valid", "problems", "errors",
    /// "warnings"}.
    #[arg(long)]
    json: bool,

    /// The most components a document may have, as the agent's
    /// `limits.max_components` (1 to 100000).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_COMPONENTS)]
    max_components: usize,

    /// The deepest arrays and objects may nest, as the agent's
    /// `limits.max_depth` (8 to 127).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_DEPTH)]
    max_depth: usize,

    /// As the agent's `validation`: `lenient` drops malformed port, mount and
    /// device entries and unknown config keys with a warning each.
    #[arg(long, value_parser = ["strict", "lenient"], default_value = "strict")]
    validation: String,
}

/// One file's verdict, as `--json` prints it. `errors` lists the first
/// problems and, when there were more, ends with one whose path is empty
/// and whose message says how many more; `problems` is the exact count.
#[derive(Serialize)]
struct Verdict<'a> {
    file: &'a str,
    valid: bool,
    problems: usize,
    errors: &'a [Diagnostic],
    warnings: &'a [Diagnostic],
}

impl ValidateArgs {
    /// Checks every file, keeps going past bad ones, and fails if any was bad.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let options = spec::Options {
            limits: Limits {
                max_components: check_count(
                    "--max-components",
                    self.max_components,
                    1,
                    MAX_LIMITS_MAX_COMPONENTS,
                )?,
                max_depth: check_count(
                    "--max-depth",
                    self.max_depth,
                    MIN_LIMITS_MAX_DEPTH,
                    MAX_LIMITS_MAX_DEPTH,
                )?,
            },
            validation: if self.validation == "lenient" {
                spec::validate::Validation::Lenient
            } else {
                spec::validate::Validation::Strict
            },
            ..spec::Options::default()
        };
        let stdout = io::stdout();
        let mut out = stdout.lock();
        let mut all_valid = true;
        for path in &self.files {
            let name = path.display().to_string();
            let (containers, problems, errors, warnings) = match read_bytes(path) {
                Err(e) => (
                    0,
                    1,
                    vec![Diagnostic {
                        path: "document".into(),
                        message: format!("cannot be read: {e}"),
                    }],
                    Vec::new(),
                ),
                Ok(bytes) => match spec::parse_bytes(&bytes, &options) {
                    Ok(accepted) => (
                        accepted.desired.containers.len(),
                        0,
                        Vec::new(),
                        accepted.warnings,
                    ),
                    Err(r) => (0, r.count, r.errors, r.warnings),
                },
            };
            let valid = errors.is_empty();
            all_valid &= valid;
            if self.json {
                let verdict = Verdict {
                    file: &name,
                    valid,
                    problems,
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

/// The document's bytes as they are: whether they are UTF-8 is
/// [`spec::parse_bytes`]'s to say, with the position of the first bad byte.
fn read_bytes(path: &Path) -> io::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        io::stdin().read_to_end(&mut bytes)?;
        Ok(bytes)
    } else {
        std::fs::read(path)
    }
}
