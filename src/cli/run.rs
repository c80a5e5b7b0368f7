//! `berth run`: the agent. Reads the configuration (file, then flags),
//! connects to the engine and the broker, and hands over to the reconcile
//! loop in [`berth::agent`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::sync::{mpsc, watch};

use berth::agent::{self, files::FileSource, mqtt, AgentOptions, Input, Notify};
use berth::config::{Config, FilesConfig, MqttConfig};
use berth::execute::ExecuteOptions;
use berth::journal::StateDir;
use berth::plan::PlanOptions;
use berth::runtime::docker::DockerRuntime;

use super::apply::RollbackArg;
use super::engine::ScopeArg;

const RUN_EXAMPLES: &str = "\
Options come from the configuration file, then from flags (a flag wins).
SIGTERM or SIGINT lets the running activity end (or undoes it after
--shutdown-grace), then berth exits 0.

Examples:
  berth run --config /etc/berth/config.toml
  berth run --files examples/demo/desired-state.json --state-dir /tmp/berth
  berth run --mqtt-url mqtt://127.0.0.1:1883 --mqtt-topic-prefix devices/d1/
  berth run --config /etc/berth/config.toml --print-config";

/// Arguments of `berth run`.
#[derive(Debug, Args)]
#[command(after_help = RUN_EXAMPLES)]
pub struct RunArgs {
    /// The configuration file (TOML; examples/config.toml documents every option).
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Kanto's container-management config.json (e.g. /etc/container-management/config.json):
    /// its update agent and connection sections, under berth's own configuration.
    #[arg(long, value_name = "FILE")]
    kanto_config: Option<PathBuf>,

    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,

    /// Docker endpoint (default: $DOCKER_HOST, else the local socket).
    #[arg(long, value_name = "URL")]
    docker_host: Option<String>,

    /// Lock, journal and the last accepted document.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// This berth's name on the engine.
    #[arg(long, env = "BERTH_INSTANCE", value_name = "NAME")]
    instance: Option<String>,

    /// `owned`: remove only containers berth created; `all`: every non-system one.
    #[arg(long, value_enum)]
    scope: Option<ScopeArg>,

    /// Containers berth never touches (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    system_containers: Option<Vec<String>>,

    /// Pulls, creates and starts at once.
    #[arg(long, value_name = "N")]
    parallel: Option<usize>,

    /// How long a container without a health check must keep running.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    min_ready: Option<Duration>,

    /// What a failed document activity undoes.
    #[arg(long, value_enum)]
    rollback: Option<RollbackArg>,

    /// Added to a health check's worst case.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    ready_margin: Option<Duration>,

    /// Stop grace period for containers whose document sets none.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    stop_timeout: Option<Duration>,

    /// Longest time one image pull may take.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pull_timeout: Option<Duration>,

    /// Longest time one activity may take.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    activity_timeout: Option<Duration>,

    /// How long a running activity may take to end at shutdown.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    shutdown_grace: Option<Duration>,

    /// `autonomous` (berth runs every phase) or `orchestrated` (a Kanto Update Manager commands each).
    #[arg(long, value_parser = ["autonomous", "orchestrated"], value_name = "MODE")]
    mode: Option<String>,

    /// Orchestrated: the longest wait for the next command before the activity is undone.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    phase_timeout: Option<Duration>,

    /// `strict` refuses malformed port, mount and device entries; `lenient` drops them with a warning.
    #[arg(long, value_parser = ["strict", "lenient"], value_name = "MODE")]
    validation: Option<String>,

    /// Env names whose values the current state hides (comma-separated globs).
    #[arg(long, value_delimiter = ',', value_name = "PATTERNS")]
    redact_env: Option<Vec<String>>,

    /// Drift correction period (`0` turns it off).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    reconcile_interval: Option<Duration>,

    /// How often to check the registries for newer images and publish the
    /// results on containersupdate/upgrades (`0`, the default, never).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    check_interval: Option<Duration>,

    /// The broker: mqtt://host:port or mqtts://host:port (turns MQTT on);
    /// more, comma-separated, are tried in turn when one fails
    /// (mqtt.failover_urls).
    #[arg(long, value_name = "URL[,URL…]")]
    mqtt_url: Option<String>,

    /// MQTT client id (default berth-<12 hex digits derived from /etc/machine-id>).
    #[arg(long, value_name = "ID")]
    mqtt_client_id: Option<String>,

    /// MQTT user name.
    #[arg(long, value_name = "NAME")]
    mqtt_username: Option<String>,

    /// MQTT password (prefer --mqtt-password-file).
    #[arg(
        long,
        env = "BERTH_MQTT_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    mqtt_password: Option<String>,

    /// File holding the MQTT password.
    #[arg(long, value_name = "FILE")]
    mqtt_password_file: Option<PathBuf>,

    /// CA bundle for mqtts://.
    #[arg(long, value_name = "FILE")]
    mqtt_ca_file: Option<PathBuf>,

    /// Client certificate for mqtts://.
    #[arg(long, value_name = "FILE")]
    mqtt_cert_file: Option<PathBuf>,

    /// Client key for mqtts://.
    #[arg(long, value_name = "FILE")]
    mqtt_key_file: Option<PathBuf>,

    /// Let a password cross plain mqtt:// (refused otherwise): for a broker
    /// on a trusted link only.
    #[arg(long)]
    mqtt_allow_insecure: bool,

    /// MQTT keep-alive period.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    mqtt_keep_alive: Option<Duration>,

    /// Update domain (topics <prefix><domain>update/...).
    #[arg(long, value_name = "DOMAIN")]
    mqtt_domain: Option<String>,

    /// Root put before every topic (e.g. devices/d1/).
    #[arg(long, value_name = "PREFIX")]
    mqtt_topic_prefix: Option<String>,

    /// Largest desired-state message accepted, in bytes.
    #[arg(long, value_name = "BYTES")]
    mqtt_max_message_size: Option<usize>,

    /// A state file, or a directory of them (turns the file source on).
    #[arg(long, value_name = "PATH")]
    files: Option<PathBuf>,

    /// How often the state files are looked at when the kernel's file
    /// notifications (inotify) cannot be set up; otherwise they say when.
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    files_poll_interval: Option<Duration>,

    /// Larger state files are refused unread, in bytes.
    #[arg(long, value_name = "BYTES")]
    files_max_file_size: Option<u64>,
}

/// humantime, plus a bare `0`.
fn duration(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| format!("{e}; write e.g. 30s or 10m"))
}

impl RunArgs {
    /// The file's configuration with the flags laid over it.
    fn effective(&self) -> anyhow::Result<Config> {
        let mut explicit: Option<toml::Table> = None;
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the configuration {}", path.display()))?;
                let c = Config::parse(&text)
                    .with_context(|| format!("configuration {}", path.display()))?;
                // Parsed already, so it is TOML: what it sets wins over Kanto's.
                explicit = text.parse::<toml::Table>().ok();
                c
            }
            None => Config::default(),
        };
        if let Some(path) = &self.kanto_config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading Kanto's configuration {}", path.display()))?;
            let kanto = berth::kanto::parse(&text)
                .with_context(|| format!("Kanto's configuration {}", path.display()))?;
            let berth_file: &dyn berth::kanto::Explicit = match &explicit {
                Some(table) => table,
                None => &(),
            };
            for note in berth::kanto::apply(&kanto, &mut c, berth_file) {
                tracing::info!(kanto_config = %path.display(), "{note}");
            }
        }
        fn set<T: Clone>(target: &mut T, flag: &Option<T>) {
            if let Some(v) = flag {
                *target = v.clone();
            }
        }
        if self.docker_host.is_some() {
            c.docker_host = self.docker_host.clone();
        }
        set(&mut c.state_dir, &self.state_dir);
        set(&mut c.instance, &self.instance);
        if let Some(scope) = self.scope {
            c.scope = scope.into();
        }
        set(&mut c.system_containers, &self.system_containers);
        set(&mut c.parallel, &self.parallel);
        set(&mut c.min_ready, &self.min_ready);
        if let Some(r) = self.rollback {
            c.rollback = r.into();
        }
        set(&mut c.ready_margin, &self.ready_margin);
        set(&mut c.stop_timeout, &self.stop_timeout);
        set(&mut c.pull_timeout, &self.pull_timeout);
        set(&mut c.activity_timeout, &self.activity_timeout);
        set(&mut c.shutdown_grace, &self.shutdown_grace);
        match self.mode.as_deref() {
            Some("orchestrated") => c.mode = berth::orchestrate::Mode::Orchestrated,
            Some("autonomous") => c.mode = berth::orchestrate::Mode::Autonomous,
            _ => {}
        }
        set(&mut c.phase_timeout, &self.phase_timeout);
        match self.validation.as_deref() {
            Some("lenient") => c.validation = berth::spec::validate::Validation::Lenient,
            Some("strict") => c.validation = berth::spec::validate::Validation::Strict,
            _ => {}
        }
        set(&mut c.redact_env, &self.redact_env);
        set(&mut c.reconcile_interval, &self.reconcile_interval);
        set(&mut c.check_interval, &self.check_interval);
        let mqtt_flags = self.mqtt_url.is_some()
            || self.mqtt_client_id.is_some()
            || self.mqtt_username.is_some()
            || self.mqtt_password.is_some()
            || self.mqtt_password_file.is_some()
            || self.mqtt_ca_file.is_some()
            || self.mqtt_cert_file.is_some()
            || self.mqtt_key_file.is_some()
            || self.mqtt_allow_insecure
            || self.mqtt_keep_alive.is_some()
            || self.mqtt_domain.is_some()
            || self.mqtt_topic_prefix.is_some()
            || self.mqtt_max_message_size.is_some();
        if mqtt_flags {
            let m = c.mqtt.get_or_insert_with(MqttConfig::default);
            if let Some(list) = &self.mqtt_url {
                let mut urls = list.split(',').map(str::trim).filter(|u| !u.is_empty());
                if let Some(first) = urls.next() {
                    m.url = first.to_string();
                }
                m.failover_urls = urls.map(str::to_string).collect();
            }
            if self.mqtt_client_id.is_some() {
                m.client_id = self.mqtt_client_id.clone();
            }
            if self.mqtt_username.is_some() {
                m.username = self.mqtt_username.clone();
            }
            if self.mqtt_password.is_some() {
                m.password = self.mqtt_password.clone();
                m.password_file = None;
            }
            if self.mqtt_password_file.is_some() {
                m.password_file = self.mqtt_password_file.clone();
                m.password = None;
            }
            for (target, flag) in [
                (&mut m.ca_file, &self.mqtt_ca_file),
                (&mut m.cert_file, &self.mqtt_cert_file),
                (&mut m.key_file, &self.mqtt_key_file),
            ] {
                if flag.is_some() {
                    *target = flag.clone();
                }
            }
            if self.mqtt_allow_insecure {
                m.allow_insecure = true;
            }
            set(&mut m.keep_alive, &self.mqtt_keep_alive);
            set(&mut m.domain, &self.mqtt_domain);
            set(&mut m.topic_prefix, &self.mqtt_topic_prefix);
            set(&mut m.max_message_size, &self.mqtt_max_message_size);
        }
        if self.files.is_some()
            || self.files_poll_interval.is_some()
            || self.files_max_file_size.is_some()
        {
            let f = c.files.get_or_insert_with(FilesConfig::default);
            set(&mut f.path, &self.files);
            set(&mut f.poll_interval, &self.files_poll_interval);
            set(&mut f.max_file_size, &self.files_max_file_size);
        }
        c.check().context("options")?;
        Ok(c)
    }

    /// Runs the agent until SIGTERM or SIGINT.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        let config = self.effective()?;
        if self.print_config {
            print!("{}", config.redacted_toml());
            return Ok(ExitCode::SUCCESS);
        }
        let mqtt_settings = config
            .mqtt
            .as_ref()
            .map(|m| mqtt::Settings::new(m, &config.instance))
            .transpose()?;
        if let Some(settings) = &mqtt_settings {
            for warning in settings.warnings() {
                tracing::warn!("{warning}");
            }
            tracing::info!(client_id = %settings.client_id(), "MQTT client id");
        }
        if config.mqtt.is_none() && config.files.is_none() {
            tracing::warn!(
                "no source configured ([mqtt] or [files]): enforcing the persisted document only"
            );
        }
        let policy = config
            .policy
            .compile()
            .context("the configuration's [policy]")?;
        if config.mqtt.is_some() && policy.is_permissive() {
            tracing::warn!(
                "no [policy]: whoever can publish on the desired-state topic may run anything on this device, privileged and with any mount (see docs/SECURITY.md and examples/config.toml)"
            );
        }
        let state = StateDir::open(&config.state_dir)
            .with_context(|| format!("state_dir {}", config.state_dir.display()))?;
        let _claim = berth::instance::Claim::take(&config.instance, &config.state_dir)?;
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(agent_main(config, policy, mqtt_settings, state))?;
        Ok(ExitCode::SUCCESS)
    }
}

async fn agent_main(
    config: Config,
    policy: berth::policy::Policy,
    mqtt_settings: Option<mqtt::Settings>,
    state: StateDir,
) -> anyhow::Result<()> {
    let (inputs_tx, inputs) = mpsc::unbounded_channel();
    let (stop_tx, mut stop) = watch::channel(false);
    tokio::spawn(signals(inputs_tx.clone(), stop_tx));
    // The API binds first, so a socket in use fails the start at once.
    let api = match &config.api {
        Some(a) => Some(super::api::Serving::bind(a).await?),
        None => None,
    };
    let sources_tx = api
        .as_ref()
        .map_or_else(|| inputs_tx.clone(), |a| a.count_inputs(inputs_tx.clone()));

    let Some(rt) = connect(config.docker_host.as_deref(), &mut stop).await else {
        return Ok(());
    };
    let rt = std::sync::Arc::new(super::hooks::engine(
        rt.with_credentials(config.credentials()),
    )?);
    let domain = config.mqtt.as_ref().map_or_else(
        || berth::spec::validate::DEFAULT_DOMAIN.to_string(),
        |m| m.domain.clone(),
    );
    let (out, mqtt_task) = match mqtt_settings {
        Some(settings) => {
            let (out_tx, out_rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(mqtt::run(
                settings,
                sources_tx.clone(),
                out_rx,
                stop.clone(),
                Duration::from_secs(5),
            ));
            (Some(out_tx), Some(task))
        }
        None => (None, None),
    };
    let files_task = config.files.as_ref().map(|f| {
        tokio::spawn(agent::files::watch(
            FileSource {
                path: f.path.clone(),
                poll_interval: f.poll_interval,
                spec: config.spec_options(),
                limits: agent::files::FileLimits {
                    max_file_size: f.max_file_size,
                },
            },
            sources_tx.clone(),
        ))
    });
    let options = AgentOptions {
        plan: PlanOptions {
            scope: config.scope,
            system_containers: config.system_containers.clone(),
            instance: config.instance.clone(),
            redactor: berth::redact::Redactor::new(&config.redact_env)?,
        },
        execute: ExecuteOptions {
            parallel: config.parallel,
            pull_timeout: config.pull_timeout,
            stop_timeout: config.stop_timeout,
            min_ready: config.min_ready,
            ready_margin: config.ready_margin,
            activity_timeout: config.activity_timeout,
            rollback: config.rollback,
            instance: config.instance.clone(),
            pause_at: super::hooks::pause_at(),
            redactor: berth::redact::Redactor::new(&config.redact_env)?,
            drift_repair: false,
        },
        domain,
        limits: config.limits,
        policy,
        redact_env: config.redact_env.clone(),
        reconcile_interval: config.reconcile_interval,
        shutdown_grace: config.shutdown_grace,
        mode: config.mode,
        validation: config.validation,
        verbose_inventory: config.verbose_inventory_report,
        phase_timeout: config.phase_timeout,
        ..AgentOptions::default()
    };
    let (ready_tx, ready) = watch::channel(false);
    let notify = berth::api::ReadyNotify::new(Systemd::new(), ready_tx);
    let (out, api_task) = match api {
        Some(api) => {
            let (out, task) = api.start(&config, &options, rt.clone(), &inputs_tx, ready, out);
            (Some(out), Some(task))
        }
        None => (out, None),
    };
    // After the API: its hub sees the reports as MQTT does.
    let check_task = upgrades_check(&config, &options, rt.clone(), out.clone());
    let result = agent::run(rt, state, options, inputs_tx, inputs, out, &notify).await;
    if let Some(task) = api_task {
        task.abort();
    }
    if let Some(task) = files_task {
        task.abort();
    }
    if let Some(task) = check_task {
        task.abort();
    }
    if let Some(task) = mqtt_task {
        // The loop has stopped; the connection delivers what is queued.
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// The periodic registry check (`check_interval`), publishing each round
/// retained on MQTT; `None` when it is off.
fn upgrades_check<R: berth::runtime::Runtime + 'static>(
    config: &Config,
    options: &AgentOptions,
    rt: std::sync::Arc<R>,
    out: Option<mpsc::UnboundedSender<agent::Outbound>>,
) -> Option<tokio::task::JoinHandle<()>> {
    if config.check_interval.is_zero() {
        return None;
    }
    if out.is_none() {
        tracing::warn!(
            "check_interval is set but neither [mqtt] nor [api] is: the results are only logged"
        );
    }
    let registry = berth::registry::client::OciRegistry::new(config.credentials());
    let check_options = berth::check::Options {
        any_major: config.check_any_major,
        redactor: options.plan.redactor.clone(),
    };
    let instance = config.instance.clone();
    let interval = config.check_interval;
    Some(tokio::spawn(async move {
        berth::check::watch::every(
            rt.as_ref(),
            &registry,
            &instance,
            &check_options,
            interval,
            |report| {
                if let Some(out) = &out {
                    let _ = out.send(agent::Outbound::Upgrades(report));
                }
            },
        )
        .await;
    }))
}

/// Connects to the engine, waiting for it as long as it takes (dockerd may
/// start after berth at boot). `None` when a signal came first.
async fn connect(host: Option<&str>, stop: &mut watch::Receiver<bool>) -> Option<DockerRuntime> {
    let mut delay = Duration::from_millis(500);
    let mut said = false;
    loop {
        match DockerRuntime::connect(host).await {
            Ok(rt) => {
                if said {
                    tracing::info!("connected to the Docker engine");
                }
                return Some(rt);
            }
            Err(e) => {
                if !said {
                    tracing::warn!(error = %e, "cannot reach the Docker engine; waiting for it");
                    said = true;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(15));
    }
}

/// The first SIGTERM or SIGINT stops the agent gracefully; a second one
/// exits at once (the next start recovers whatever was in progress).
async fn signals(inputs: mpsc::UnboundedSender<Input>, stop: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals");
        return;
    };
    let mut first = true;
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if !first {
            tracing::warn!("{name} again: exiting now; the next start recovers");
            std::process::exit(1);
        }
        first = false;
        tracing::info!("{name}: stopping");
        let _ = stop.send(true);
        let _ = inputs.send(Input::Shutdown);
    }
}

/// sd_notify, when systemd started berth with `Type=notify`.
struct Systemd {
    watchdog: Option<Duration>,
}

impl Systemd {
    fn new() -> Self {
        Self {
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    fn send(state: &[sd_notify::NotifyState]) {
        if let Err(e) = sd_notify::notify(state) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

impl Notify for Systemd {
    fn ready(&self) {
        Self::send(&[sd_notify::NotifyState::Ready]);
    }

    fn alive(&self) {
        Self::send(&[sd_notify::NotifyState::Watchdog]);
    }

    fn status(&self, text: &str) {
        Self::send(&[sd_notify::NotifyState::Status(text)]);
    }

    fn stopping(&self) {
        Self::send(&[sd_notify::NotifyState::Stopping]);
    }

    fn interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }
}
