//! `berth run --kanto-config`: a Kanto device's own
//! `/etc/container-management/config.json` starts berth on the same broker,
//! domain and system containers, in Kanto's orchestrated mode.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::broker::{publish, Broker, Subscriber};
use crate::util::{berth, image, repo_path, run, temp_file, text, unique, Background, Cleanup};

const WAIT: Duration = Duration::from_secs(90);

fn example() -> Value {
    let text = std::fs::read_to_string(repo_path("tests/fixtures/kanto/config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_example_kanto_config_gives_its_broker_domain_and_system_containers() {
    let out = run(berth()
        .args(["run", "--print-config", "--kanto-config"])
        .arg(repo_path("tests/fixtures/kanto/config.json")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config: toml::Table = text(&out.stdout).parse().expect("TOML");
    assert_eq!(config["mode"].as_str(), Some("orchestrated"));
    assert_eq!(
        config["system_containers"].as_array().unwrap()[0].as_str(),
        Some("self-update-agent")
    );
    let mqtt = config["mqtt"].as_table().expect("[mqtt]");
    assert_eq!(mqtt["url"].as_str(), Some("tcp://localhost:1883"));
    assert_eq!(mqtt["domain"].as_str(), Some("containers"));
    assert_eq!(mqtt["keep_alive"].as_str(), Some("20s"));
    assert_eq!(mqtt["connect_timeout"].as_str(), Some("30s"));
    let log = text(&out.stderr);
    assert_eq!(
        log.matches("ignored Kanto settings: containers, deployment, grpc_server, log, manager, network, things").count(),
        1,
        "{log}"
    );
}

#[test]
fn berths_own_configuration_wins_over_kantos() {
    let dir = TempDir::new().unwrap();
    let own = temp_file(dir.path(), "berth.toml", "system_containers = [\"mine\"]\n");
    let out = run(berth()
        .args(["run", "--print-config", "--config"])
        .arg(&own)
        .arg("--kanto-config")
        .arg(repo_path("tests/fixtures/kanto/config.json")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config: toml::Table = text(&out.stdout).parse().expect("TOML");
    assert_eq!(
        config["system_containers"].as_array().unwrap()[0].as_str(),
        Some("mine")
    );
    assert!(
        text(&out.stderr).contains("system_containers: berth's configuration wins over Kanto's")
    );
}

#[test]
fn a_kanto_device_config_starts_berth_on_its_broker_domain_and_system_containers() {
    let system = unique("kanto-sys");
    let _c = Cleanup(system.clone());
    // A container Kanto's config names as a system container, already running.
    crate::util::docker(&["run", "-d", "--name", &system, &image("service", "1")]);
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "#");
    let mut kanto = example();
    kanto["update_agent"]["domain"] = json!("apps");
    kanto["update_agent"]["system_containers"] = json!([system]);
    kanto["connection"]["broker_url"] = json!(format!("tcp://127.0.0.1:{}", broker.port()));
    let dir = TempDir::new().unwrap();
    let file = temp_file(dir.path(), "config.json", &kanto.to_string());
    let state = TempDir::new().unwrap();
    let mut cmd = berth();
    cmd.args(["run", "--state-dir"])
        .arg(state.path())
        .args(["--log-level", "berth=debug", "--kanto-config"])
        .arg(&file);
    let mut b = Background::spawn(cmd);
    b.wait_for("connected to the MQTT broker", WAIT);
    // The domain's topics: the current state under appsupdate/ (heard
    // live: a retained-only read races berth's first publication).
    let current = first_on(&sub, "appsupdate/currentstate");
    assert!(current.contains("apps-update-agent"), "{current}");
    // A document naming the system container changes nothing of it.
    let doc = json!({"activityId": "kanto-1", "payload": {"domains": [{"id": "apps", "components": [
        {"id": system, "version": "2", "config": [{"key": "image", "value": image("service", "2")}]}
    ]}]}});
    publish(&broker, "appsupdate/desiredstate", &doc.to_string());
    let deadline = Instant::now() + WAIT;
    loop {
        let done = sub
            .json("appsupdate/desiredstatefeedback")
            .into_iter()
            .any(|f| f["activityId"] == "kanto-1" && f["payload"]["status"] == "COMPLETED");
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "no COMPLETED:\n{}", b.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let image_now = crate::util::docker(&["inspect", "--format", "{{.Config.Image}}", &system]);
    assert_eq!(image_now.trim(), image("service", "1"));
}

/// The parameters of container `name` in a current-state message.
fn parameters_of(current: &str, name: &str) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(current).expect("JSON");
    let id = format!("containers:{name}");
    let node = v["payload"]["softwareNodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no node {id} in {current}"))
        .clone();
    node["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap_or("").to_string(),
                p["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The first message on `topic` the subscriber heard.
fn first_on(sub: &Subscriber, topic: &str) -> String {
    let messages = sub.wait_for(topic, WAIT, |m| m.iter().any(|(t, _)| t == topic));
    messages
        .into_iter()
        .find(|(t, _)| t == topic)
        .map(|(_, p)| p)
        .unwrap_or_default()
}

fn current_state_with(verbose: bool, name: &str) -> Vec<(String, String)> {
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "#");
    let mut kanto = example();
    kanto["update_agent"]["verbose_inventory_report"] = json!(verbose);
    kanto["connection"]["broker_url"] = json!(format!("tcp://127.0.0.1:{}", broker.port()));
    let dir = TempDir::new().unwrap();
    let file = temp_file(dir.path(), "config.json", &kanto.to_string());
    let state = TempDir::new().unwrap();
    let mut cmd = berth();
    cmd.args(["run", "--state-dir"])
        .arg(state.path())
        .arg("--kanto-config")
        .arg(&file);
    let mut b = Background::spawn(cmd);
    b.wait_for("connected to the MQTT broker", WAIT);
    let current = first_on(&sub, "containersupdate/currentstate");
    parameters_of(&current, name)
}

#[test]
fn verbose_inventory_report_reports_every_parameter_as_kanto_does() {
    let name = unique("kanto-verbose");
    let _c = Cleanup(name.clone());
    crate::util::docker(&["run", "-d", "--name", &name, &image("service", "1")]);
    let brief = current_state_with(false, &name);
    let verbose = current_state_with(true, &name);
    let keys =
        |p: &[(String, String)]| -> Vec<String> { p.iter().map(|(k, _)| k.clone()).collect() };
    for key in [
        "privileged",
        "network",
        "logDriver",
        "logMode",
        "exitCode",
        "restartCount",
    ] {
        assert!(
            keys(&verbose).contains(&key.to_string()),
            "{key} missing in {verbose:?}"
        );
        assert!(
            !keys(&brief).contains(&key.to_string()),
            "{key} in the brief one {brief:?}"
        );
    }
    assert!(verbose.contains(&("privileged".to_string(), "false".to_string())));
    assert!(verbose.contains(&("network".to_string(), "bridge".to_string())));
    assert!(brief.len() < verbose.len());
}

#[test]
fn kantos_connect_timeout_gives_up_on_a_broker_that_never_answers_and_retries() {
    // Accepts TCP, never answers CONNECT.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    let mut kanto = example();
    kanto["connection"]["broker_url"] = json!(format!("tcp://127.0.0.1:{port}"));
    kanto["connection"]["connect_timeout"] = json!("1s");
    let dir = TempDir::new().unwrap();
    let file = temp_file(dir.path(), "config.json", &kanto.to_string());
    let state = TempDir::new().unwrap();
    let mut cmd = berth();
    cmd.args(["run", "--state-dir"])
        .arg(state.path())
        .args(["--log-level", "berth=debug", "--kanto-config"])
        .arg(&file);
    let started = Instant::now();
    let b = Background::spawn(cmd);
    let needle = "the MQTT broker did not answer within mqtt.connect_timeout";
    // rumqttc's own 5s would put the second timeout past 10s.
    while b.stderr().matches(needle).count() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "no two connect timeouts within 8s:\n{}",
            b.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(b.stderr().contains("connect_timeout=1s"), "{}", b.stderr());
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "berth connects again after each timeout"
    );
}
