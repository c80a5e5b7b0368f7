//! The local API from the command line: `berth run`'s part (bind where
//! `[api]` says, then serve beside the loop) and the connection options
//! of the commands that talk to a running agent (`berth status`, `berth
//! events`). The API itself is [`berth::api`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use berth::agent::{AgentOptions, Input, Outbound};
use berth::api::{self, ApiConfig, Hub};
use berth::config::Config;

use super::hooks::Engine;

/// Where the running agent's API is and which token to present.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// The API: a socket path or 127.0.0.1:PORT (default: [api] listen of
    /// --config, else /run/berth/api.sock).
    #[arg(long, env = "BERTH_API", value_name = "PATH|ADDR")]
    api: Option<String>,

    /// The agent's configuration, to find [api] listen.
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,

    /// A file holding the token (its first line).
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,

    /// The token (prefer --token-file: the environment is visible to root).
    #[arg(
        long,
        env = "BERTH_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
}

impl ApiArgs {
    /// A client for the agent these options name.
    pub fn client(&self) -> anyhow::Result<api::client::Client> {
        let listen = match (&self.api, &self.config) {
            (Some(a), _) => a.clone(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the configuration {}", path.display()))?;
                let config = Config::parse(&text)
                    .with_context(|| format!("configuration {}", path.display()))?;
                config
                    .api
                    .map(|a| a.listen)
                    .with_context(|| format!("{} has no [api]", path.display()))?
            }
            (None, None) => api::config::DEFAULT_SOCKET.to_string(),
        };
        // The client may reach whatever the operator names.
        let at = api::config::parse_listen(&listen, true).context("--api")?;
        let token = match (&self.token_file, &self.token) {
            (Some(path), _) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the token file {}", path.display()))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            ),
            (None, t) => t.clone(),
        };
        Ok(api::client::Client::new(at, token))
    }
}

/// How long the loop may take to persist a document the API hands it (it
/// keeps inputs while it recovers at start).
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);

/// A bound API, not serving yet.
pub struct Serving {
    bound: api::Bound,
    hub: Arc<Hub>,
    tokens: Vec<api::config::Token>,
    config: ApiConfig,
}

impl Serving {
    /// Reads the tokens and binds.
    pub async fn bind(config: &ApiConfig) -> anyhow::Result<Self> {
        let tokens = config.load_tokens().context("the configuration's [api]")?;
        if tokens.is_empty() {
            tracing::warn!(
                "[api] has no [[api.tokens]]: every request but /healthz and /metrics is refused"
            );
        }
        let bound = api::bind(config).await?;
        let at = api::config::parse_listen(&config.listen, config.allow_remote)?;
        tracing::info!(listen = %at, "the API listens");
        Ok(Self {
            bound,
            hub: Arc::new(Hub::new(config.event_buffer)),
            tokens,
            config: config.clone(),
        })
    }

    /// The sources' sender, counted for the metrics.
    pub fn count_inputs(
        &self,
        to_loop: mpsc::UnboundedSender<Input>,
    ) -> mpsc::UnboundedSender<Input> {
        api::counted_inputs(self.hub.clone(), to_loop)
    }

    /// Starts serving; returns the loop's outbound sender (fanned out to
    /// the API and to `mqtt`) and the server task.
    pub fn start(
        self,
        config: &Config,
        options: &AgentOptions,
        rt: Arc<Engine>,
        inputs: &mpsc::UnboundedSender<Input>,
        ready: watch::Receiver<bool>,
        mqtt: Option<mpsc::UnboundedSender<Outbound>>,
    ) -> (mpsc::UnboundedSender<Outbound>, tokio::task::JoinHandle<()>) {
        let (out, from_loop) = mpsc::unbounded_channel();
        tokio::spawn(api::fan_out(from_loop, self.hub.clone(), mqtt));
        let wait = options.execute.activity_timeout * 2 + Duration::from_secs(60);
        let ctx = Arc::new(api::Context {
            rt,
            registry: berth::registry::client::OciRegistry::new(config.credentials()),
            tokens: self.tokens,
            hub: self.hub,
            inputs: inputs.clone(),
            state_dir: config.state_dir.clone(),
            spec: config.spec_options(),
            policy: options.policy.clone(),
            system_containers: config.system_containers.clone(),
            redactor: options.plan.redactor.clone(),
            instance: config.instance.clone(),
            files: config.files.as_ref().map(|f| f.path.clone()),
            ready,
            mutation: tokio::sync::Mutex::new(()),
            accept_timeout: ACCEPT_TIMEOUT,
            wait_timeout: wait,
        });
        let router = api::router(ctx, &self.config);
        (out, tokio::spawn(self.bound.serve(router)))
    }
}
