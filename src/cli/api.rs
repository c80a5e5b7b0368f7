//! `berth run`'s part of the local API: bind where `[api]` says, then
//! serve beside the loop. The API itself is [`berth::api`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use berth::agent::{AgentOptions, Input, Outbound};
use berth::api::{self, ApiConfig, Hub};
use berth::config::Config;

use super::hooks::Engine;

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
