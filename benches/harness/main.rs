//! The measuring tools `scripts/bench.sh` drives (issue 25). berth is the
//! thing measured; these are the instruments and the peers it is measured
//! against, so they live beside the benchmarks, not in the library:
//!
//! - `proxy`: a counting proxy on a unix socket in front of the engine, so
//!   berth's engine calls per scenario are counted by method and path, with
//!   a timestamp each (the agent's "file written -> first engine call");
//! - `floor`: the engine floor, a minimal client that issues exactly the
//!   create, start, stop and remove calls a scenario needs, one container
//!   after another or with berth's parallelism: what no reconciler can beat;
//! - `probe`: a TCP client that connects to a service every 5 ms and reports
//!   how long it could not (the downtime a client sees during an update);
//! - `mqtt-reaction`: an MQTT desired state published -> its IDENTIFYING
//!   feedback received;
//! - `repair`: a container removed or killed -> running again.
//!
//! Built by `cargo bench --bench harness --no-run`; run without arguments
//! (as `cargo test --all-targets` does) it checks its own parsing and
//! arithmetic and says what it is.

mod agent;
mod floor;
mod probe;
mod proxy;

use clap::{Parser, Subcommand};

/// The instruments of `scripts/bench.sh`.
#[derive(Debug, Parser)]
#[command(name = "harness")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Passed by `cargo bench`/`cargo test`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    Proxy(proxy::ProxyArgs),
    Floor(floor::FloorArgs),
    Probe(probe::ProbeArgs),
    MqttReaction(agent::MqttArgs),
    Repair(agent::RepairArgs),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(command) = args.command else {
        proxy::self_check();
        probe::self_check();
        println!("bench harness: self-check passed (instruments for scripts/bench.sh: proxy, floor, probe, mqtt-reaction, repair)");
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Proxy(a) => proxy::run(a).await,
            Command::Floor(a) => floor::run(a).await,
            Command::Probe(a) => probe::run(a).await,
            Command::MqttReaction(a) => agent::mqtt_reaction(a).await,
            Command::Repair(a) => agent::repair(a).await,
        }
    })
}
