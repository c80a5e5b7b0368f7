//! `berth fleet-sim`: N complete agents in one process, each on a hollow
//! engine ([`crate::runtime::hollow`]) with its own MQTT connection, state
//! directory and prefix (`devices/sim-0000/`, …). Everything but the
//! engine is the real agent: MQTT source and sink, queue, planner,
//! executor, feedback, current state. Load tests only: nothing here ever
//! touches a Docker engine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::agent::{self, mqtt, AgentOptions, Input};
use crate::config::MqttConfig;
use crate::journal::StateDir;
use crate::runtime::hollow::{self, Hollow};

/// How the simulated fleet is made.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many agents.
    pub agents: usize,
    /// The number of the first (`sim-<first>`), so several processes can
    /// share one fleet.
    pub first: usize,
    /// How every agent connects: `url` and `failover_urls` are the
    /// cluster's nodes, which agent `i` tries starting at node `i mod n`,
    /// so a fleet spreads evenly over a cluster and each agent fails over
    /// to the others.
    pub broker: MqttConfig,
    /// The root of the agents' prefixes (`devices/`): agent `sim-0001`
    /// uses `devices/sim-0001/`.
    pub prefix: String,
    /// Where the agents' state directories go (one per agent).
    pub state_root: PathBuf,
    /// The hollow engines' behaviour (each agent draws failures with its
    /// own seed, `seed + i`).
    pub hollow: hollow::Options,
    /// The readiness gate.
    pub min_ready: Duration,
    /// The agents' password, when the broker wants one: the same for all,
    /// each logging in as its own name.
    pub password: Option<String>,
}

/// Why the simulation could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A state directory.
    #[error("agent {agent}: {source}")]
    State {
        /// The agent.
        agent: String,
        /// The cause.
        source: crate::journal::StateError,
    },
    /// The MQTT settings.
    #[error("agent {agent}: {message}")]
    Mqtt {
        /// The agent.
        agent: String,
        /// The cause.
        message: String,
    },
}

/// One running agent: its input channel (to stop it) and its tasks.
struct Running {
    inputs: mpsc::UnboundedSender<Input>,
    agent: tokio::task::JoinHandle<()>,
    mqtt: tokio::task::JoinHandle<()>,
}

/// Runs the fleet until `stop` turns true, then stops every agent. The
/// agents' loops share this thread (an agent's executor is not `Send`);
/// their MQTT connections run on the runtime's workers.
///
/// # Errors
/// When an agent cannot be set up (its state directory, its MQTT
/// settings); the agents started so far are stopped.
pub async fn run(options: Options, stop: watch::Receiver<bool>) -> Result<(), SimError> {
    tokio::task::LocalSet::new()
        .run_until(fleet(options, stop))
        .await
}

async fn fleet(options: Options, mut stop: watch::Receiver<bool>) -> Result<(), SimError> {
    // The state directories and the MQTT settings are files: read off the
    // runtime's threads, all before the first agent starts.
    let prepared = {
        let options = options.clone();
        tokio::task::spawn_blocking(move || {
            (options.first..options.first + options.agents)
                .map(|i| prepare(&options, i))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| SimError::Mqtt {
            agent: "(all)".into(),
            message: format!("setting the agents up failed: {e}"),
        })??
    };
    let (stop_mqtt_tx, stop_mqtt) = watch::channel(false);
    let mut running = Vec::with_capacity(prepared.len());
    for (k, agent) in prepared.into_iter().enumerate() {
        running.push(launch(agent, stop_mqtt.clone()));
        // Spread the first connections a little, as devices booting do.
        if k % 50 == 49 {
            tokio::task::yield_now().await;
        }
    }
    tracing::info!(agents = options.agents, "the simulated fleet is up");
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            break;
        }
    }
    shut(running, &stop_mqtt_tx).await;
    Ok(())
}

/// One agent, set up and not started yet.
struct Prepared {
    name: String,
    state: StateDir,
    settings: mqtt::Settings,
    options: AgentOptions,
    hollow: hollow::Options,
}

/// Agent `i`'s state directory, connection settings and options.
fn prepare(options: &Options, i: usize) -> Result<Prepared, SimError> {
    let name = super::sim_name(i);
    let state =
        StateDir::open(&options.state_root.join(&name)).map_err(|source| SimError::State {
            agent: name.clone(),
            source,
        })?;
    let mut broker = options.broker.clone();
    let mut nodes = vec![broker.url.clone()];
    nodes.append(&mut broker.failover_urls);
    let n = nodes.len();
    nodes.rotate_left(i % n);
    broker.url = nodes.remove(0);
    broker.failover_urls = nodes;
    broker.client_id = Some(name.clone());
    broker.topic_prefix = format!("{}{name}/", options.prefix);
    if let Some(p) = &options.password {
        broker.username = Some(name.clone());
        broker.password = Some(p.clone());
    }
    let settings = mqtt::Settings::new(&broker, &name).map_err(|e| SimError::Mqtt {
        agent: name.clone(),
        message: e.to_string(),
    })?;
    let mut agent_options = AgentOptions::default();
    agent_options.plan.instance = name.clone();
    agent_options.execute.instance = name.clone();
    agent_options.execute.min_ready = options.min_ready;
    agent_options.domain = broker.domain.clone();
    let mut hollow = options.hollow.clone();
    hollow.seed = hollow.seed.wrapping_add(i as u64);
    Ok(Prepared {
        name,
        state,
        settings,
        options: agent_options,
        hollow,
    })
}

/// Starts a prepared agent: its connection on the runtime's workers, its
/// loop on this thread.
fn launch(p: Prepared, stop_mqtt: watch::Receiver<bool>) -> Running {
    let rt = Arc::new(Hollow::new(p.hollow));
    let (inputs_tx, inputs) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let span = tracing::info_span!("agent", id = %p.name);
    let mqtt = tokio::spawn(
        mqtt::run(
            p.settings,
            inputs_tx.clone(),
            out_rx,
            stop_mqtt,
            Duration::from_secs(5),
        )
        .instrument(span.clone()),
    );
    let loop_inputs = inputs_tx.clone();
    let (state, agent_options) = (p.state, p.options);
    let agent = tokio::task::spawn_local(
        async move {
            let result = agent::run(
                rt,
                state,
                agent_options,
                loop_inputs,
                inputs,
                Some(out_tx),
                &agent::Silent,
            )
            .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "the agent stopped");
            }
        }
        .instrument(span),
    );
    Running {
        inputs: inputs_tx,
        agent,
        mqtt,
    }
}

/// Stops every agent, then their connections (which deliver what is
/// queued first).
async fn shut(running: Vec<Running>, stop_mqtt: &watch::Sender<bool>) {
    for r in &running {
        let _ = r.inputs.send(Input::Shutdown);
    }
    let mut connections = Vec::with_capacity(running.len());
    for r in running {
        let _ = r.agent.await;
        connections.push(r.mqtt);
    }
    let _ = stop_mqtt.send(true);
    for c in connections {
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }
}
