//! Arguments shared by the commands that talk to the engine, and the helpers
//! they share: loading a document, connecting, colouring output.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;
use clap::{Args, ValueEnum};

use berth::plan::{PlanOptions, Scope};
use berth::runtime::docker::DockerRuntime;
use berth::spec::{self, Accepted, Rejection};

/// Where the engine is.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Docker endpoint, as the docker CLI takes it (unix:///var/run/docker.sock,
    /// tcp://host:2376 with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for TLS).
    #[arg(long, env = "DOCKER_HOST", value_name = "URL")]
    pub docker_host: Option<String>,
}

impl EngineArgs {
    /// Connects and negotiates the API version.
    pub async fn connect(&self) -> anyhow::Result<DockerRuntime> {
        DockerRuntime::connect(self.docker_host.as_deref())
            .await
            .context("connecting to the Docker engine")
    }
}

/// Which containers berth may touch.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Containers berth never creates, changes, starts, stops or removes
    /// (comma-separated); a document's `systemContainers` replaces this list.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub system_containers: Vec<String>,

    /// `owned` removes only containers berth created; `all` removes every
    /// non-system container absent from the document (Kanto's behaviour).
    #[arg(long, value_enum, default_value_t = ScopeArg::Owned)]
    pub scope: ScopeArg,

    /// This berth's name on the engine. Every container it creates records
    /// it, and it never touches containers another instance created, so
    /// several berths (or test runs) can share one engine.
    #[arg(long, env = "BERTH_INSTANCE", default_value = berth::labels::DEFAULT_INSTANCE, value_parser = instance_name)]
    pub instance: String,
}

pub(super) fn instance_name(v: &str) -> Result<String, String> {
    berth::spec::values::check_name(v)
        .map(|()| v.to_string())
        .map_err(|e| format!("instance name {e}"))
}

/// `--scope` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    /// Only containers berth created.
    Owned,
    /// Every non-system container.
    All,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Self {
        match s {
            ScopeArg::Owned => Scope::Owned,
            ScopeArg::All => Scope::All,
        }
    }
}

impl PolicyArgs {
    /// The planner's options.
    pub fn plan_options(&self) -> PlanOptions {
        PlanOptions {
            scope: self.scope.into(),
            system_containers: self
                .system_containers
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            instance: self.instance.clone(),
            ..PlanOptions::default()
        }
    }
}

/// Reads a document from a file or `-` (standard input).
pub fn read(path: &Path) -> std::io::Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
    }
}

/// Loads and validates a document, printing every warning and problem the
/// way `berth validate` does. Returns the text with the verdict.
pub fn load(path: &Path) -> anyhow::Result<(String, Result<Accepted, Rejection>)> {
    let name = path.display().to_string();
    let text = read(path).with_context(|| format!("reading {name}"))?;
    let verdict = spec::parse(&text, &spec::Options::default());
    let (warnings, errors) = match &verdict {
        Ok(accepted) => (&accepted.warnings, &[][..]),
        Err(rejection) => (&rejection.warnings, &rejection.errors[..]),
    };
    for w in warnings {
        eprintln!("{name}: warning: {w}");
    }
    for e in errors {
        eprintln!("{name}: {e}");
    }
    Ok((text, verdict))
}

/// ANSI colours, only on a terminal and only without NO_COLOR.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    on: bool,
}

impl Paint {
    /// Decides for standard output.
    pub fn stdout() -> Self {
        Self {
            on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// Wraps `text` in an SGR colour code.
    pub fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}
