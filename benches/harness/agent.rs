//! The agent's reaction times that need a precise clock on the client side:
//! an MQTT desired state published -> its IDENTIFYING feedback received, and
//! a container removed or killed -> a container of that name running again.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bollard::query_parameters::{KillContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const FINAL: [&str; 5] = [
    "COMPLETED",
    "INCOMPLETE",
    "INCOMPLETE_INCONSISTENT",
    "IDENTIFICATION_FAILED",
    "SUPERSEDED",
];

#[derive(Debug, clap::Args)]
pub struct MqttArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long)]
    port: u16,
    /// The desired-state envelope to publish (its activityId is replaced).
    #[arg(long)]
    doc: std::path::PathBuf,
    #[arg(long, default_value_t = 1)]
    reps: usize,
    /// Topic prefix berth runs with (`--mqtt-topic-prefix`).
    #[arg(long, default_value = "")]
    prefix: String,
}

/// Prints one line per repetition: milliseconds from publish to IDENTIFYING.
/// Each repetition waits for its activity's final status before the next.
pub async fn mqtt_reaction(args: MqttArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.doc)
        .with_context(|| format!("reading {}", args.doc.display()))?;
    let mut doc: serde_json::Value = serde_json::from_str(&text)?;
    let mut options = MqttOptions::new(
        format!("bench-reaction-{}", std::process::id()),
        &args.host,
        args.port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 64);
    // As berth's own connection: the timer measures berth, not Nagle.
    let mut network = events.network_options();
    network.set_tcp_nodelay(true);
    events.set_network_options(network);
    let feedback = format!("{}containersupdate/desiredstatefeedback", args.prefix);
    let desired = format!("{}containersupdate/desiredstate", args.prefix);
    client.subscribe(&feedback, QoS::AtLeastOnce).await?;
    // Wait for the SUBACK so no feedback is missed.
    loop {
        if let Event::Incoming(Packet::SubAck(_)) =
            tokio::time::timeout(Duration::from_secs(10), events.poll()).await??
        {
            break;
        }
    }
    for rep in 0..args.reps {
        let id = format!("bench-mqtt-{}-{rep}", std::process::id());
        doc["activityId"] = serde_json::Value::String(id.clone());
        let payload = serde_json::to_vec(&doc)?;
        let sent = Instant::now();
        client
            .publish(&desired, QoS::AtLeastOnce, false, payload)
            .await?;
        let mut identifying = None;
        let deadline = sent + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = tokio::time::timeout(left, events.poll())
                .await
                .context("no final feedback within 120 s")??;
            let Event::Incoming(Packet::Publish(p)) = event else {
                continue;
            };
            if p.topic != feedback {
                continue;
            }
            let message: serde_json::Value = serde_json::from_slice(&p.payload)?;
            if message["activityId"] != id.as_str() {
                continue;
            }
            let status = message["payload"]["status"].as_str().unwrap_or_default();
            if status == "IDENTIFYING" && identifying.is_none() {
                identifying = Some(sent.elapsed());
            }
            if FINAL.contains(&status) {
                break;
            }
        }
        let Some(took) = identifying else {
            bail!("{id}: no IDENTIFYING feedback")
        };
        println!("{:.2}", took.as_secs_f64() * 1000.0);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum How {
    /// `docker rm -f`: the container is gone.
    Remove,
    /// SIGKILL: the container exits 137 and stays.
    Kill,
}

#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    #[arg(value_enum)]
    how: How,
    #[arg(long)]
    name: String,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    timeout: Duration,
}

/// Prints the milliseconds from the removal or kill to a container of that
/// name running again (a new one, or the same one started anew).
pub async fn repair(args: RepairArgs) -> anyhow::Result<()> {
    let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
    let before = docker.inspect_container(&args.name, None).await?;
    let old_id = before.id.clone().unwrap_or_default();
    let old_started = before
        .state
        .as_ref()
        .and_then(|s| s.started_at.clone())
        .unwrap_or_default();
    let t0 = Instant::now();
    match args.how {
        How::Remove => {
            let o = RemoveContainerOptionsBuilder::default().force(true).build();
            docker.remove_container(&args.name, Some(o)).await?;
        }
        How::Kill => {
            let o = KillContainerOptionsBuilder::default()
                .signal("KILL")
                .build();
            docker.kill_container(&args.name, Some(o)).await?;
        }
    }
    while t0.elapsed() < args.timeout {
        if let Ok(c) = docker.inspect_container(&args.name, None).await {
            let state = c.state.unwrap_or_default();
            let started = state.started_at.unwrap_or_default();
            let fresh = c.id.unwrap_or_default() != old_id || started != old_started;
            if state.running == Some(true) && fresh {
                println!("{:.1}", t0.elapsed().as_secs_f64() * 1000.0);
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("{} not running again within {:?}", args.name, args.timeout)
}
