//! `berth fleet rollout` (the rollout controller) and `berth fleet-sim`
//! (hollow agents for load tests), issue 26.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use berth::agent::mqtt;
use berth::config::MqttConfig;
use berth::fleet::controller::{self, Show};
use berth::fleet::rollout::{self, Ending, Rollout, Verdict};
use berth::runtime::hollow;

const ROLLOUT_EXAMPLES: &str = "\
Exit status: 0 when every device completed (or was on the target already), 1 when a
wave failed or a device did not complete, 2 on bad arguments.

Examples:
  berth fleet rollout release.json --broker mqtt://broker:1883 --prefix devices/ --discover
  berth fleet rollout release.json --broker mqtts://a:8883,mqtts://b:8883 --ca-file ca.pem \\
      --devices sim-0000,sim-0001 --waves 1%,10%,100% --max-failures 5% --json";

const SIM_EXAMPLES: &str = "\
Examples:
  berth fleet-sim --agents 1000 --broker mqtt://127.0.0.1:1883 --prefix devices/
  berth fleet-sim --agents 50 --broker mqtt://127.0.0.1:1883 --failure-rate 0.05 --duration 2m";

/// `berth fleet …`.
#[derive(Debug, Subcommand)]
pub enum FleetCmd {
    /// Publish a desired state to many devices in waves and follow them.
    #[command(after_help = ROLLOUT_EXAMPLES)]
    Rollout(Box<RolloutArgs>),
}

impl FleetCmd {
    /// Runs it.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        match self {
            FleetCmd::Rollout(a) => a.exec(),
        }
    }
}

/// The broker and how to log in: shared by the controller and the fleet
/// simulator.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Broker URLs, tried in turn when one fails (`mqtt://…`, `mqtts://…`).
    #[arg(
        long,
        value_name = "URL[,URL…]",
        value_delimiter = ',',
        required = true
    )]
    broker: Vec<String>,

    /// The root of the devices' topic prefixes: device D uses `<prefix>D/`.
    #[arg(long, default_value = "devices/")]
    prefix: String,

    /// User name.
    #[arg(long)]
    username: Option<String>,

    /// File holding the password.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,

    /// CA bundle for mqtts://.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,

    /// Client certificate for mqtts://.
    #[arg(long, value_name = "FILE")]
    cert_file: Option<PathBuf>,

    /// Client key for mqtts://.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,

    /// Let a password go over plain mqtt:// (a trusted link only).
    #[arg(long)]
    allow_insecure: bool,

    /// The update domain.
    #[arg(long, default_value = "containers")]
    domain: String,
}

impl BrokerArgs {
    /// berth's MQTT configuration for `url`.
    fn config(&self, url: &str) -> anyhow::Result<MqttConfig> {
        berth::config::check_topic_prefix(&self.prefix)
            .map_err(|e| anyhow::anyhow!("--prefix {:?} {e}", self.prefix))?;
        Ok(MqttConfig {
            url: url.to_string(),
            username: self.username.clone(),
            password_file: self.password_file.clone(),
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            allow_insecure: self.allow_insecure,
            domain: self.domain.clone(),
            ..MqttConfig::default()
        })
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e}; write e.g. 30s or 10m"))
}

/// Arguments of `berth fleet rollout`.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// The desired-state document to roll out.
    file: PathBuf,

    #[command(flatten)]
    broker: BrokerArgs,

    /// The devices (the last level of their prefix), in rollout order.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "discover",
        required_unless_present = "discover"
    )]
    devices: Option<Vec<String>>,

    /// Take the devices whose current state is under `<prefix>+/`.
    #[arg(long)]
    discover: bool,

    /// How long to collect current states before the first wave.
    #[arg(long, value_parser = duration, default_value = "3s")]
    discover_wait: Duration,

    /// Cumulative waves: shares or counts, the last 100%.
    #[arg(long, default_value = "100%")]
    waves: String,

    /// The failure ratio a wave may have before the rollout stops (`0`,
    /// `5%`, `0.05`).
    #[arg(long, default_value = "0")]
    max_failures: String,

    /// How long a device may take to a final status.
    #[arg(long, value_parser = duration, default_value = "10m")]
    timeout: Duration,

    /// Print the report as JSON on standard output.
    #[arg(long)]
    json: bool,
}

impl RolloutArgs {
    fn exec(self) -> anyhow::Result<ExitCode> {
        let waves =
            rollout::parse_waves(&self.waves).map_err(|e| anyhow::anyhow!("--waves: {e}"))?;
        let max_failures = rollout::parse_ratio(&self.max_failures)
            .map_err(|e| anyhow::anyhow!("--max-failures: {e}"))?;
        let text = std::fs::read_to_string(&self.file)
            .with_context(|| format!("cannot read {}", self.file.display()))?;
        let desired = match berth::spec::parse(&text, &berth::spec::Options::default()) {
            Ok(a) => a.desired,
            Err(rejection) => {
                eprintln!("{}: refused:\n{rejection}", self.file.display());
                return Ok(ExitCode::from(2));
            }
        };
        let mut brokers = Vec::new();
        for url in &self.broker.broker {
            let config = self.broker.config(url)?;
            let id = format!("berth-rollout-{}", std::process::id());
            let settings = mqtt::Settings::new(
                &MqttConfig {
                    client_id: Some(id.clone()),
                    ..config
                },
                &id,
            )
            .with_context(|| format!("--broker {url}"))?;
            brokers.push(settings.options().clone());
        }
        let options = controller::Options {
            brokers,
            prefix: self.broker.prefix.clone(),
            domain: self.broker.domain.clone(),
            devices: self.devices.clone(),
            discover_wait: self.discover_wait,
            waves,
            max_failures,
            timeout: self.timeout,
        };
        let target = rollout::Target::of(&desired);
        let mut show = Terminal::new(!self.json && std::io::stderr().is_terminal());
        let runtime = tokio::runtime::Runtime::new()?;
        let report = runtime.block_on(controller::rollout(&text, target, &options, &mut show))?;
        show.finish();
        let s = &report.summary;
        if self.json {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        } else {
            print_summary(&report);
        }
        let all_done = s.count(Ending::Completed) + s.count(Ending::AlreadyOnTarget) == s.devices;
        Ok(if all_done && !report.stopped {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }
}

fn print_summary(report: &controller::Report) {
    let s = &report.summary;
    let ms = |v: Option<u128>| v.map_or_else(|| "-".to_string(), |v| format!("{v} ms"));
    println!(
        "Rollout of {} to {} devices in {} wave(s), {:.1} s{}",
        report.activity_id,
        s.devices,
        report.waves.len(),
        // Milliseconds far below 2^52.
        {
            #[allow(clippy::cast_precision_loss)]
            let secs = report.took_ms as f64 / 1000.0;
            secs
        },
        if report.stopped {
            ": STOPPED at a failed wave"
        } else {
            ""
        }
    );
    println!(
        "  COMPLETED {}  already on target {}  INCOMPLETE {}  IDENTIFICATION_FAILED {}  no answer {}  not asked {}",
        s.count(Ending::Completed),
        s.count(Ending::AlreadyOnTarget),
        s.count(Ending::Incomplete),
        s.count(Ending::IdentificationFailed),
        s.count(Ending::NoAnswer),
        s.pending + s.running
    );
    println!(
        "  time to COMPLETED: p50 {}, p99 {}",
        ms(s.p50_ms),
        ms(s.p99_ms)
    );
    for f in &s.failed {
        println!(
            "  failed: {}: {}{}",
            f.device,
            rollout::words(f.ending),
            f.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
    }
}

/// The live view on standard error: a progress bar and the counts,
/// redrawn in place on a terminal; a line per wave otherwise.
struct Terminal {
    live: bool,
    drawn: bool,
}

impl Terminal {
    fn new(live: bool) -> Self {
        Self { live, drawn: false }
    }

    fn finish(&mut self) {
        if self.drawn {
            eprintln!();
        }
    }
}

impl Show for Terminal {
    fn progress(&mut self, r: &Rollout, wave: usize, waves: usize) {
        if !self.live {
            return;
        }
        let s = r.summary();
        let done = s.devices - s.pending - s.running;
        let width = 30;
        let filled = done * width / s.devices.max(1);
        eprint!(
            "\r\x1b[2Kwave {}/{} [{}{}] {}/{}  pending {}  running {}  COMPLETED {}  INCOMPLETE {}  IDENTIFICATION_FAILED {}  no answer {}",
            wave + 1,
            waves,
            "#".repeat(filled),
            "-".repeat(width - filled),
            done,
            s.devices,
            s.pending,
            s.running,
            s.count(Ending::Completed) + s.count(Ending::AlreadyOnTarget),
            s.count(Ending::Incomplete),
            s.count(Ending::IdentificationFailed),
            s.count(Ending::NoAnswer),
        );
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    fn wave(&mut self, wave: usize, waves: usize, verdict: &Verdict) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
        match verdict {
            Verdict::Failed(failed) => {
                eprintln!(
                    "wave {}/{waves} failed ({} device(s)); stopping:",
                    wave + 1,
                    failed.len()
                );
                for (d, why) in failed {
                    eprintln!("  {d}: {why}");
                }
            }
            _ => eprintln!("wave {}/{waves} passed", wave + 1),
        }
    }
}

/// Arguments of `berth fleet-sim`.
#[derive(Debug, Args)]
#[command(after_help = SIM_EXAMPLES)]
pub struct FleetSimArgs {
    /// How many agents.
    #[arg(long)]
    agents: usize,

    /// The number of the first agent (`sim-<first>`).
    #[arg(long, default_value_t = 0)]
    first: usize,

    #[command(flatten)]
    broker: BrokerArgs,

    /// Where the agents' state directories go (a fresh temporary one by
    /// default, removed at the end).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Hollow pull latency.
    #[arg(long, value_parser = duration, default_value = "100ms")]
    pull_latency: Duration,

    /// Hollow create latency.
    #[arg(long, value_parser = duration, default_value = "50ms")]
    create_latency: Duration,

    /// Hollow start latency.
    #[arg(long, value_parser = duration, default_value = "50ms")]
    start_latency: Duration,

    /// Hollow stop latency.
    #[arg(long, value_parser = duration, default_value = "50ms")]
    stop_latency: Duration,

    /// The probability that a pull fails (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,

    /// Seed of the failure draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// The agents' readiness gate.
    #[arg(long, value_parser = duration, default_value = "1s")]
    min_ready: Duration,

    /// Stop after this long (until SIGTERM or SIGINT otherwise).
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
}

impl FleetSimArgs {
    /// Runs the fleet.
    pub fn exec(self) -> anyhow::Result<ExitCode> {
        if !(0.0..=1.0).contains(&self.failure_rate) {
            anyhow::bail!(
                "--failure-rate {} must lie between 0 and 1",
                self.failure_rate
            );
        }
        if self.agents == 0 {
            anyhow::bail!("--agents must be at least 1");
        }
        let url = self.broker.broker.first().cloned().unwrap_or_default();
        let mut broker = self.broker.config(&url)?;
        // Agent i starts at node i mod n and fails over to the others.
        broker.failover_urls = self.broker.broker.iter().skip(1).cloned().collect();
        // Each agent logs in as its own name; the file gives the password.
        let password = match &self.broker.password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("--password-file {}", p.display()))?
                    .trim_end()
                    .to_string(),
            ),
            None => None,
        };
        broker.password_file = None;
        broker.username = None;
        let (root, temporary) = match &self.state_dir {
            Some(d) => (d.clone(), false),
            None => (
                std::env::temp_dir().join(format!("berth-fleet-sim-{}", std::process::id())),
                true,
            ),
        };
        let options = berth::fleet::sim::Options {
            agents: self.agents,
            first: self.first,
            broker,
            prefix: self.broker.prefix.clone(),
            state_root: root.clone(),
            hollow: hollow::Options {
                latencies: hollow::Latencies {
                    pull: self.pull_latency,
                    create: self.create_latency,
                    start: self.start_latency,
                    stop: self.stop_latency,
                },
                failure_rate: self.failure_rate,
                seed: self.seed,
            },
            min_ready: self.min_ready,
            password,
        };
        let runtime = tokio::runtime::Runtime::new()?;
        let limit = self.duration;
        let result = runtime.block_on(async move {
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                let forever = Duration::from_secs(u64::from(u32::MAX));
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                    () = tokio::time::sleep(limit.unwrap_or(forever)) => {}
                }
                let _ = stop_tx.send(true);
            });
            berth::fleet::sim::run(options, stop).await
        });
        if temporary {
            let _ = std::fs::remove_dir_all(&root);
        }
        result?;
        Ok(ExitCode::SUCCESS)
    }
}
