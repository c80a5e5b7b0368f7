//! The engine floor: exactly the engine calls a scenario needs and nothing
//! else (no pull, no inspect, no journal, no readiness wait), sequentially
//! or with `--parallel K` containers in flight, as berth bounds its own.
//! The containers are listed in `--specs`, one a line,
//! `<name> <image> [KEY=VALUE ...]`, exactly as berth's document and the
//! other peers describe them.

use std::time::Instant;

use anyhow::Context;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::{stream, StreamExt, TryStreamExt};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Step {
    /// create + start each container.
    Cold,
    /// stop + remove + create + start each container (a recreate).
    Update,
    /// one list call: all an up-to-date client needs to know nothing changed.
    Noop,
    /// remove (forced) each container.
    Remove,
}

#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    #[arg(value_enum)]
    step: Step,
    /// `<name> <image> [KEY=VALUE ...]` per line.
    #[arg(long)]
    specs: std::path::PathBuf,
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Argv of the command, repeatable (default: the image's).
    #[arg(long)]
    cmd: Vec<String>,
    /// User network to join.
    #[arg(long)]
    network: Option<String>,
    /// Stop timeout in seconds.
    #[arg(long, default_value_t = 10)]
    stop_timeout: i32,
}

pub async fn run(args: FloorArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    // DOCKER_HOST (the counting proxy) or the local socket; the version is
    // agreed as berth does (one /_ping), since Debian's engine refuses
    // bollard's newer default.
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let docker = match host.strip_prefix("unix://") {
        Some(path) => match berth::runtime::docker::ping_api_version(path).await {
            Some(version) => Docker::connect_with_unix(path, 120, &version)?,
            None => anyhow::bail!("the engine at {host} does not answer its /_ping"),
        },
        None => Docker::connect_with_defaults()?.negotiate_version().await?,
    };
    let text = std::fs::read_to_string(&args.specs)
        .with_context(|| format!("reading {}", args.specs.display()))?;
    let specs: Vec<Spec> = text.lines().filter_map(Spec::parse).collect();
    if let Step::Noop = args.step {
        let options = ListContainersOptionsBuilder::default().all(true).build();
        docker.list_containers(Some(options)).await?;
    } else {
        stream::iter(specs.iter().map(|spec| one(&docker, &args, spec)))
            .buffer_unordered(args.parallel.max(1))
            .try_collect::<Vec<()>>()
            .await?;
    }
    eprintln!(
        "floor {:?} {}: {:?}",
        args.step,
        specs.len(),
        start.elapsed()
    );
    Ok(())
}

/// One container of `--specs`.
struct Spec {
    name: String,
    image: String,
    env: Vec<String>,
}

impl Spec {
    fn parse(line: &str) -> Option<Spec> {
        let mut words = line.split_whitespace();
        Some(Spec {
            name: words.next()?.to_string(),
            image: words.next()?.to_string(),
            env: words.map(str::to_string).collect(),
        })
    }
}

/// Milliseconds since `t`, for the per-call timings on stderr.
fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

async fn one(docker: &Docker, args: &FloorArgs, spec: &Spec) -> anyhow::Result<()> {
    let name = spec.name.as_str();
    match args.step {
        Step::Cold => create_start(docker, args, spec).await,
        Step::Update => {
            let stop = StopContainerOptionsBuilder::default()
                .t(args.stop_timeout)
                .build();
            let t = Instant::now();
            docker
                .stop_container(name, Some(stop))
                .await
                .with_context(|| format!("stopping {name}"))?;
            eprintln!("{name} stop_ms={:.1}", ms(t));
            let t = Instant::now();
            docker
                .remove_container(name, None)
                .await
                .with_context(|| format!("removing {name}"))?;
            eprintln!("{name} remove_ms={:.1}", ms(t));
            create_start(docker, args, spec).await
        }
        Step::Remove => {
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            match docker.remove_container(name, Some(options)).await {
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(()),
                other => other.with_context(|| format!("removing {name}")),
            }
        }
        Step::Noop => Ok(()),
    }
}

async fn create_start(docker: &Docker, args: &FloorArgs, spec: &Spec) -> anyhow::Result<()> {
    let name = spec.name.as_str();
    let t = Instant::now();
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(spec.env.clone()),
        cmd: (!args.cmd.is_empty()).then(|| args.cmd.clone()),
        host_config: args.network.as_ref().map(|n| bollard::models::HostConfig {
            network_mode: Some(n.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(options), body)
        .await
        .with_context(|| format!("creating {name}"))?;
    eprintln!("{name} create_ms={:.1}", ms(t));
    let t = Instant::now();
    docker
        .start_container(&created.id, None)
        .await
        .with_context(|| format!("starting {name}"))?;
    eprintln!("{name} start_ms={:.1}", ms(t));
    Ok(())
}
