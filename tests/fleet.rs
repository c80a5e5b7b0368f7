//! Fleets (issue 26): `berth fleet-sim` (complete agents on hollow engines,
//! one MQTT connection each) and `berth fleet rollout` (the controller)
//! against a real mosquitto. The short form CI runs; `scripts/fleet.sh`
//! runs the thousand-device campaign.

use std::collections::BTreeSet;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::broker::{Broker, Subscriber};
use crate::util::{berth, run, text, Background};

const WAIT: Duration = Duration::from_secs(120);

/// `berth fleet-sim` with `agents` agents on `broker`, quick gates.
fn sim(broker: &Broker, agents: usize, extra: &[&str]) -> Background {
    let mut cmd = berth();
    cmd.args(["fleet-sim", "--agents", &agents.to_string()])
        .args(["--broker", &broker.url(), "--prefix", "devices/"])
        .args(["--min-ready", "200ms"])
        .args(extra);
    Background::spawn(cmd)
}

/// Waits until `n` devices published their current state.
fn wait_connected(broker: &Broker, n: usize, sim: &Background) {
    let sub = Subscriber::start(broker, "devices/+/containersupdate/currentstate");
    sub.wait_for(
        &format!("{n} current states\n{}", sim.stderr()),
        WAIT,
        |m| {
            m.iter()
                .map(|(t, _)| t.clone())
                .collect::<BTreeSet<_>>()
                .len()
                >= n
        },
    );
}

pub(crate) fn release(dir: &std::path::Path, activity: &str, version: &str) -> std::path::PathBuf {
    let doc = serde_json::json!({
        "activityId": activity,
        "payload": {"domains": [{"id": "containers", "components": [{
            "id": "app", "version": version,
            "config": [{"key": "image", "value": format!("127.0.0.1:5000/fleet/app:{version}")}]
        }]}]}
    });
    let path = dir.join(format!("{activity}.json"));
    std::fs::write(&path, doc.to_string()).expect("write the release");
    path
}

pub(crate) fn devices(n: usize) -> String {
    (0..n)
        .map(|i| format!("sim-{i:04}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn rollout(broker: &Broker, file: &std::path::Path, extra: &[&str]) -> (Output, Value) {
    let mut cmd = berth();
    cmd.args(["fleet", "rollout"])
        .arg(file)
        .args(["--broker", &broker.url(), "--prefix", "devices/", "--json"])
        .args(["--timeout", "60s"])
        .args(extra);
    let out = run(&mut cmd);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, report)
}

pub(crate) fn show(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[test]
fn a_rollout_to_50_hollow_agents_completes_on_every_one_and_a_rerun_resumes() {
    let broker = Broker::start();
    let files = tempfile::tempdir().unwrap();
    let mut fleet = sim(&broker, 50, &[]);
    wait_connected(&broker, 50, &fleet);
    let file = release(files.path(), "fleet-rel-2", "2");

    let (out, report) = rollout(
        &broker,
        &file,
        &["--devices", &devices(50), "--waves", "10%,100%"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let s = &report["summary"];
    assert_eq!(s["ended"]["COMPLETED"], 50, "{}", show(&out));
    assert_eq!(
        report["waves"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert_eq!(report["stopped"], false);
    assert!(s["p99_ms"].as_u64().is_some_and(|v| v > 0), "{report}");
    assert!(s["p50_ms"].as_u64() <= s["p99_ms"].as_u64(), "{report}");

    // A rerun finds every device on the target and asks none of them.
    let (again, report) = rollout(&broker, &file, &["--discover", "--discover-wait", "3s"]);
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    assert_eq!(report["summary"]["devices"], 50, "{}", show(&again));
    assert_eq!(
        report["summary"]["ended"]["ALREADY_ON_TARGET"],
        50,
        "{}",
        show(&again)
    );
    fleet.terminate();
}

#[test]
fn a_wave_with_failures_stops_the_rollout_and_names_the_failed_devices() {
    let broker = Broker::start();
    let files = tempfile::tempdir().unwrap();
    // Every pull fails: each device goes back and says INCOMPLETE.
    let mut fleet = sim(&broker, 10, &["--failure-rate", "1"]);
    wait_connected(&broker, 10, &fleet);
    let file = release(files.path(), "fleet-bad", "3");

    let (out, report) = rollout(
        &broker,
        &file,
        &["--devices", &devices(10), "--waves", "2,100%"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(report["stopped"], true, "{report}");
    assert_eq!(
        report["waves"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    let failed: Vec<&str> = report["summary"]["failed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["device"].as_str())
        .collect();
    assert_eq!(failed, ["sim-0000", "sim-0001"], "{report}");
    assert_eq!(
        report["summary"]["pending"], 8,
        "the second wave was never sent"
    );
    let why = report["summary"]["failed"][0]["message"]
        .as_str()
        .unwrap_or("");
    assert!(why.contains("injected failure"), "{report}");
    assert!(text(&out.stderr).contains("sim-0000"), "{}", show(&out));
    fleet.terminate();
}

#[test]
fn a_rollout_with_no_device_found_says_so() {
    let broker = Broker::start();
    let files = tempfile::tempdir().unwrap();
    let file = release(files.path(), "fleet-none", "2");
    let (out, _) = rollout(&broker, &file, &["--discover", "--discover-wait", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("no devices"), "{}", show(&out));
}

#[test]
fn bad_waves_are_refused_naming_the_flag() {
    let broker = Broker::start();
    let files = tempfile::tempdir().unwrap();
    let file = release(files.path(), "fleet-waves", "2");
    let (out, _) = rollout(&broker, &file, &["--devices", "a", "--waves", "10%,50%"]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text(&out.stderr).contains("--waves"), "{}", show(&out));
}

/// A device whose broker dies connects to the next of its list and goes
/// on: its current state reaches the survivor, and a desired state sent
/// there runs to COMPLETED.
#[test]
fn an_agent_fails_over_to_the_next_broker_when_its_broker_dies() {
    let mut a = Broker::start();
    let b = Broker::start();
    let on_b = Subscriber::start(&b, "devices/d1/#");
    let state = tempfile::tempdir().unwrap();
    let mut cmd = berth();
    cmd.args(["run", "--state-dir"])
        .arg(state.path())
        .args(["--mqtt-url", &format!("{},{}", a.url(), b.url())])
        .args(["--mqtt-topic-prefix", "devices/d1/", "--min-ready", "200ms"])
        .args(["--log-level", "berth=debug", "--reconcile-interval", "0"]);
    let mut agent = Background::spawn(cmd);
    agent.wait_for("connected to the MQTT broker", WAIT);
    assert!(
        on_b.messages().is_empty(),
        "it connected to the second broker first"
    );
    a.kill();
    let current = "devices/d1/containersupdate/currentstate";
    on_b.wait_for(
        &format!("the current state on the survivor\n{}", agent.stderr()),
        WAIT,
        |m| m.iter().any(|(t, _)| t == current),
    );
    let doc = r#"{"activityId":"failover-1","payload":{"domains":[{"id":"containers","components":[]}]}}"#;
    crate::broker::publish(&b, "devices/d1/containersupdate/desiredstate", doc);
    on_b.feedback("failover-1", &["COMPLETED"], WAIT, &agent.stderr());
    assert!(
        agent.stderr().contains("trying the next MQTT broker"),
        "{}",
        agent.stderr()
    );
    agent.terminate();
}

/// Regression (issue 26): a broker that accepts the connection and then
/// drops it at once (as RabbitMQ does when it refuses a subscription)
/// made berth reconnect about five times a second for ever, since every
/// accepted connection reset the back-off. Now only a connection that
/// lasted resets it.
#[test]
fn a_broker_that_drops_every_connection_at_once_is_retried_with_a_growing_wait() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            // CONNACK, session not present, accepted; then hang up.
            let _ = s.write_all(&[0x20, 0x02, 0x00, 0x00]);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let state = tempfile::tempdir().unwrap();
    let mut cmd = berth();
    cmd.args(["run", "--state-dir"])
        .arg(state.path())
        .args(["--mqtt-url", &format!("mqtt://127.0.0.1:{port}")])
        .args(["--log-level", "berth=debug", "--reconcile-interval", "0"]);
    let mut agent = Background::spawn(cmd);
    agent.wait_for("connected to the MQTT broker", WAIT);
    let first = accepted.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(6));
    let in_six_seconds = accepted.load(Ordering::SeqCst) - first;
    agent.terminate();
    // Doubling from 250 ms: about 5 in 6 s; without the fix about 30.
    assert!(
        in_six_seconds <= 8,
        "{in_six_seconds} connections in 6 s\n{}",
        agent.stderr()
    );
    assert!(in_six_seconds >= 2, "it gave up: {in_six_seconds}");
}
