//! A client of one service: connects to `--target host:port` every
//! `--interval`, resolving the name each time (as a client following a
//! service name does), until SIGTERM. Run inside a container on the
//! service's user network, where the engine's DNS resolves container names.
//! On exit it prints one line:
//! `probes=<n> failed=<n> downtime_ms=<f> longest_failed_probe_ms=<f> max_gap_ms=<f>`
//! where downtime is the longest stretch from the last successful probe
//! before a run of failures to the first successful one after it (0 when
//! nothing failed), and max gap the longest time between two successful
//! probes, failures or not (a slow connect is a stall a client sees too).

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    #[arg(long)]
    target: String,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5ms")]
    interval: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    connect_timeout: Duration,
}

struct Attempt {
    start: Instant,
    took: Duration,
    ok: bool,
}

pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let start = Instant::now();
                let ok = matches!(
                    tokio::time::timeout(args.connect_timeout, TcpStream::connect(args.target.as_str())).await,
                    Ok(Ok(_))
                );
                attempts.push(Attempt { start, took: start.elapsed(), ok });
            }
            _ = term.recv() => break,
        }
    }
    println!("{}", summary(&attempts));
    Ok(())
}

fn summary(attempts: &[Attempt]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let failed = attempts.iter().filter(|a| !a.ok).count();
    let longest_failed = attempts
        .iter()
        .filter(|a| !a.ok)
        .map(|a| a.took)
        .max()
        .unwrap_or_default();
    let mut downtime = Duration::ZERO;
    let mut max_gap = Duration::ZERO;
    let mut last_ok: Option<Instant> = None;
    let mut failed_since_ok = false;
    for a in attempts {
        if a.ok {
            if let Some(prev) = last_ok {
                let gap = a.start - prev;
                max_gap = max_gap.max(gap);
                if failed_since_ok {
                    downtime = downtime.max(gap);
                }
            }
            last_ok = Some(a.start);
            failed_since_ok = false;
        } else {
            failed_since_ok = true;
        }
    }
    format!(
        "probes={} failed={failed} downtime_ms={:.1} longest_failed_probe_ms={:.1} max_gap_ms={:.1}",
        attempts.len(),
        ms(downtime),
        ms(longest_failed),
        ms(max_gap)
    )
}

/// The summary's specification, checked whenever the harness runs without
/// a command (as `cargo test --all-targets` runs it).
pub fn self_check() {
    downtime_spans_from_the_last_success_to_the_next();
    no_failure_is_no_downtime();
}

fn run_of(pattern: &str) -> Vec<Attempt> {
    let t0 = Instant::now();
    pattern
        .chars()
        .enumerate()
        .map(|(i, c)| Attempt {
            start: t0 + Duration::from_millis(10 * i as u64),
            took: Duration::from_millis(1),
            ok: c == 'u',
        })
        .collect()
}

fn downtime_spans_from_the_last_success_to_the_next() {
    let s = summary(&run_of("uuddduu"));
    assert!(s.contains("failed=3 downtime_ms=40.0"), "{s}");
}

fn no_failure_is_no_downtime() {
    let s = summary(&run_of("uuuu"));
    assert!(s.contains("failed=0 downtime_ms=0.0"), "{s}");
    assert!(s.contains("max_gap_ms=10.0"), "{s}");
}
