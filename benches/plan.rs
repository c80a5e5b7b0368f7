//! Planner speed: `plan::compute` for 1,000 desired containers against 1,000
//! observed ones (all in sync, so every comparison runs to the end), plus a
//! mixed case with changes. Target: under 5 ms per plan.
//!
//! Run: `cargo bench --bench plan` (prints median and p95 per case).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use berth::labels;
use berth::observe::{self, Observed};
use berth::plan::{self, PlanOptions};
use berth::runtime::{ContainerDetails, ContainerState, ImageDetails, RawPortBinding, Status};
use berth::spec::{self, DesiredState};

const N: usize = 1000;
const ITERATIONS: usize = 200;
const TARGET: Duration = Duration::from_millis(5);

fn document(n: usize, env_value: &str) -> DesiredState {
    let components: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("svc-{i:04}"),
                "version": "1",
                "config": [
                    {"key": "image", "value": "127.0.0.1:5000/berth-test/service:1"},
                    {"key": "env", "value": format!("INDEX={i}")},
                    {"key": "env", "value": format!("MODE={env_value}")},
                    {"key": "port", "value": format!("{}:8080", 20000 + i)},
                    {"key": "memory", "value": "64M"},
                    {"key": "label", "value": "org.example.team=edge"}
                ]
            })
        })
        .collect();
    let text = serde_json::json!({
        "activityId": "bench",
        "payload": {"domains": [{"id": "containers", "components": components}]}
    })
    .to_string();
    spec::parse(&text, &spec::Options::default())
        .expect("bench document is valid")
        .desired
}

/// What the engine would report for containers berth created from `desired`.
fn observed_for(desired: &DesiredState) -> Observed {
    let image = ImageDetails {
        id: format!("sha256:{}", "1".repeat(64)),
        env: vec!["PATH=/bin".into(), "IMAGE_DEFAULT=from-image".into()],
        cmd: Some(vec!["/bin/service".into()]),
        ..Default::default()
    };
    let containers = desired
        .containers
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let mut env = image.env.clone();
            env.extend(
                spec.config
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.clone().unwrap_or_default())),
            );
            let details = ContainerDetails {
                id: format!("{i:064x}"),
                name: spec.name.clone(),
                image_ref: spec.config.image.to_string(),
                image_id: image.id.clone(),
                labels: labels::for_spec(spec, Some(&image.id), labels::DEFAULT_INSTANCE),
                state: ContainerState {
                    status: Status::Running,
                    ..Default::default()
                },
                env,
                cmd: image.cmd.clone(),
                hostname: spec.config.hostname.clone().unwrap_or_default(),
                domainname: spec.config.domainname.clone().unwrap_or_default(),
                port_bindings: spec
                    .config
                    .ports
                    .iter()
                    .map(|p| RawPortBinding {
                        container_port: p.container_port,
                        protocol: p.protocol.to_string(),
                        host_ip: p.host_ip.to_string(),
                        host_port: p.host_port.to_string(),
                    })
                    .collect(),
                network_mode: "bridge".into(),
                restart_policy: "unless-stopped".into(),
                log_driver: "json-file".into(),
                log_options: BTreeMap::from([
                    ("max-file".into(), "2".into()),
                    ("max-size".into(), (100u64 << 20).to_string()),
                ]),
                memory: 64 << 20,
                memory_swap: 128 << 20,
                ..Default::default()
            };
            observe::container(details, &HashMap::new())
        })
        .collect();
    Observed {
        containers,
        images: BTreeMap::from([(desired.containers[0].config.image.to_string(), image)]),
        ..Default::default()
    }
}

fn measure(name: &str, desired: &DesiredState, observed: &Observed, expect: impl Fn(&plan::Plan)) {
    let options = PlanOptions::default();
    expect(&plan::compute(desired, observed, &options));
    let mut times: Vec<Duration> = (0..ITERATIONS)
        .map(|_| {
            let start = Instant::now();
            let p = plan::compute(desired, observed, &options);
            let took = start.elapsed();
            std::hint::black_box(p);
            took
        })
        .collect();
    times.sort();
    let median = times[times.len() / 2];
    let p95 = times[times.len() * 95 / 100];
    let verdict = if median < TARGET { "met" } else { "MISSED" };
    println!("{name}: median {median:?}, p95 {p95:?} over {ITERATIONS} runs (target {TARGET:?}: {verdict})");
}

fn main() {
    // `cargo test --all-targets` runs this file without `--bench`: check that
    // the set-up still holds (a small in-sync plan is all keep) and stop,
    // instead of timing an unoptimised build.
    if !std::env::args().any(|a| a == "--bench") {
        let desired = document(20, "a");
        let p = plan::compute(&desired, &observed_for(&desired), &PlanOptions::default());
        assert_eq!(
            p.count(plan::Action::Keep),
            20,
            "bench setup is not in sync"
        );
        println!("bench plan: set-up checked (run `cargo bench --bench plan` to measure)");
        return;
    }
    let desired = document(N, "a");
    let start = Instant::now();
    for c in &desired.containers {
        std::hint::black_box(spec::spec_hash(&c.config));
    }
    println!("spec hashes alone, {N} specs: {:?}", start.elapsed());
    let start = Instant::now();
    std::hint::black_box(plan::order(&desired));
    println!("dependency order alone, {N} specs: {:?}", start.elapsed());
    let observed = observed_for(&desired);
    measure("plan 1000 in sync", &desired, &observed, |p| {
        assert_eq!(p.count(plan::Action::Keep), N, "bench setup is not in sync");
    });
    let changed = document(N, "b");
    measure("plan 1000 all env changed", &changed, &observed, |p| {
        assert_eq!(p.count(plan::Action::Recreate), N);
    });
    let empty = Observed::default();
    measure("plan 1000 on an empty engine", &desired, &empty, |p| {
        assert_eq!(p.count(plan::Action::Create), N);
    });
}
