//! Arguments shared by the commands that talk to the engine, and the helpers
//! they share: loading a document, connecting, colouring output.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};

use berth::config::Config;
use berth::observe;
use berth::plan::{PlanOptions, Scope};
use berth::policy::{EnvBaseline, Policy, RealHostPaths, Refusal};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::Runtime;
use berth::spec::model::NetworkMode;
use berth::spec::{self, Accepted, DesiredState, Rejection};

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

/// Which containers berth may touch, and what a document may ask for.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The agent's configuration file (`berth run --config`): its `[policy]`,
    /// `system_containers` and `[limits]` apply to this command too.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Containers berth never creates, changes, starts, stops or removes
    /// (comma-separated), added to the configuration's; a document's
    /// `systemContainers` adds to them, never removes.
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
    /// The device's rules: the configuration file's policy, system
    /// containers and limits (the defaults without `--config`), with
    /// `--system-containers` added.
    pub fn device(&self) -> anyhow::Result<Device> {
        let config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the configuration {}", path.display()))?;
                Config::parse(&text).with_context(|| format!("configuration {}", path.display()))?
            }
            None => Config::default(),
        };
        let policy = config
            .policy
            .compile()
            .context("the configuration's [policy]")?;
        let mut system = config.system_containers.clone();
        for name in &self.system_containers {
            let name = name.trim();
            if !name.is_empty() && !system.iter().any(|s| s == name) {
                system.push(name.to_string());
            }
        }
        Ok(Device {
            files: config.files.clone(),
            credentials: config.credentials(),
            policy,
            plan: PlanOptions {
                scope: self.scope.into(),
                system_containers: system,
                instance: self.instance.clone(),
                redactor: berth::redact::Redactor::or_everything(&config.redact_env),
            },
            spec: spec::Options {
                limits: config.limits,
                ..spec::Options::default()
            },
        })
    }
}

/// The device's rules for one command, from [`PolicyArgs::device`].
#[derive(Debug, Clone)]
pub struct Device {
    /// What a document may ask for.
    pub policy: Policy,
    /// Scope, system containers and instance for the planner.
    pub plan: PlanOptions,
    /// How a document is read (the configured limits).
    pub spec: spec::Options,
    /// Registry credentials for pulls and `berth check`: the
    /// configuration's `[[registries]]`, then docker's stored logins.
    pub credentials: berth::registry::Credentials,
    /// The agent's file source, when the configuration has one: where
    /// `upgrade` and `rollback` hand documents to a running agent.
    pub files: Option<berth::config::FilesConfig>,
}

impl Device {
    /// Checks `desired` against the policy before anything is pulled,
    /// created, persisted or planned. Reads the engine (nothing else) only
    /// when the policy needs it: see [`Device::inputs`].
    ///
    /// # Errors
    /// When the engine cannot be read.
    pub async fn check<R: Runtime>(
        &self,
        rt: &R,
        desired: &DesiredState,
    ) -> anyhow::Result<Result<(), Refusal>> {
        let env = self.policy.needs_env_baseline();
        let (baseline, system) = if self.needs_engine(desired, env) {
            self.inputs(rt, desired, env).await?
        } else {
            (EnvBaseline::none(), self.system(desired))
        };
        Ok(self
            .policy
            .check(desired, &baseline, &system, &RealHostPaths))
    }

    /// The configured system containers and the document's own.
    pub fn system(&self, desired: &DesiredState) -> Vec<String> {
        let mut system = self.plan.system_containers.clone();
        system.extend(desired.system_containers.iter().flatten().cloned());
        system
    }

    /// Whether the policy's inputs need the engine: the env the containers
    /// have now (`env`), or the ids of the system containers when the
    /// document joins some container's network.
    pub fn needs_engine(&self, desired: &DesiredState, env: bool) -> bool {
        let joins = desired
            .containers
            .iter()
            .any(|c| matches!(c.config.network, NetworkMode::Container(_)));
        env || (joins && !self.system(desired).is_empty())
    }

    /// Reads the engine for the policy's inputs: the system containers by
    /// name and by id (the engine resolves `container:<id prefix>` too),
    /// and with `env` the env baseline from the containers as they run.
    ///
    /// # Errors
    /// When the engine cannot be read.
    pub async fn inputs<R: Runtime>(
        &self,
        rt: &R,
        desired: &DesiredState,
        env: bool,
    ) -> anyhow::Result<(EnvBaseline, Vec<String>)> {
        let mut system = self.system(desired);
        let observed = observe::gather(rt, &[], &[])
            .await
            .context("reading the containers on the engine for the policy")?;
        let ids: Vec<String> = observed
            .containers
            .iter()
            .filter(|c| system.iter().any(|s| s == c.name()))
            .map(|c| c.details.id.clone())
            .collect();
        system.extend(ids);
        let baseline = if env {
            let images = observe::images_of(rt, &observed)
                .await
                .context("reading the containers' images for policy allow_env_change")?;
            EnvBaseline::from_observed(&observed, &images)
        } else {
            EnvBaseline::none()
        };
        Ok((baseline, system))
    }
}

/// Prints a policy refusal the way `berth validate` prints problems: one
/// line per violation on standard error, prefixed with the document's name.
pub fn print_refusal(path: &Path, refusal: &Refusal) {
    let name = path.display();
    for line in refusal.lines() {
        eprintln!("{name}: {line}");
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
pub fn load(
    path: &Path,
    options: &spec::Options,
) -> anyhow::Result<(String, Result<Accepted, Rejection>)> {
    let name = path.display().to_string();
    let text = read(path).with_context(|| format!("reading {name}"))?;
    Ok(judge(&name, text, options))
}

/// [`load`] for a document already in hand (`name` says where it came
/// from in the messages).
pub fn judge(
    name: &str,
    text: String,
    options: &spec::Options,
) -> (String, Result<Accepted, Rejection>) {
    let verdict = spec::parse(&text, options);
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
    (text, verdict)
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
