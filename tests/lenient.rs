//! Documents as Kanto's fleets write them, through `berth run` on mosquitto
//! and the real engine: unknown fields (Leda's `blueprintMetadata`) and
//! entries without `value` are read as Kanto's Go decoder reads them, and
//! `validation = "lenient"` drops the malformed entries Kanto drops, naming
//! each in the feedback, and applies the rest.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::broker::{publish, Broker, Subscriber};
use crate::util::{berth, image, run, temp_file, text, unique, Background, Cleanup};

const WAIT: Duration = Duration::from_secs(90);
const FEEDBACK: &str = "containersupdate/desiredstatefeedback";

fn start(state: &Path, broker: &Broker, extra: &[&str]) -> Background {
    let mut cmd = berth();
    cmd.args(["run", "--state-dir"])
        .arg(state)
        .args(["--log-level", "berth=debug", "--min-ready", "500ms"])
        .args(["--mqtt-url", &broker.url(), "--reconcile-interval", "0"])
        .args(extra);
    let mut b = Background::spawn(cmd);
    b.wait_for("connected to the MQTT broker", WAIT);
    b
}

/// The feedback of `activity`, once it reached a final status.
fn finished(sub: &Subscriber, activity: &str, berth: &Background) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let all: Vec<Value> = sub
            .json(FEEDBACK)
            .into_iter()
            .filter(|f| f["activityId"] == activity)
            .collect();
        let done = all.iter().any(|f| {
            matches!(
                f["payload"]["status"].as_str(),
                Some("COMPLETED" | "INCOMPLETE" | "IDENTIFICATION_FAILED")
            )
        });
        if done {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "{activity} did not end:\n{}",
            berth.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn inspect(name: &str, format: &str) -> String {
    let out = run(std::process::Command::new("docker").args(["inspect", "--format", format, name]));
    text(&out.stdout).trim().to_string()
}

fn leda_document(activity: &str, name: &str, config: Value) -> String {
    json!({
        "activityId": activity,
        "payload": {
            "blueprintMetadata": {"name": "leda-blueprint", "version": "1.0"},
            "baselines": [{"title": "apps", "precondition": "", "components": [format!("containers:{name}")]}],
            "domains": [{"id": "containers", "components": [
                {"id": name, "version": "1", "config": config}
            ]}]
        }
    })
    .to_string()
}

#[test]
fn a_leda_blueprint_with_unknown_fields_is_applied_with_one_warning_naming_them() {
    let name = unique("len-leda");
    let _c = Cleanup(name.clone());
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "#");
    let state = TempDir::new().unwrap();
    let berth = start(state.path(), &broker, &[]);
    let config = json!([
        {"key": "image", "value": image("service", "1")},
        {"key": "env", "value": "SERVICE_VERSION=1"}
    ]);
    publish(
        &broker,
        "containersupdate/desiredstate",
        &leda_document("len-leda-1", &name, config),
    );
    let feedback = finished(&sub, "len-leda-1", &berth);
    let last = feedback.last().unwrap();
    assert_eq!(last["payload"]["status"], "COMPLETED", "{feedback:#?}");
    let warnings: Vec<&str> = feedback
        .iter()
        .filter_map(|f| f["payload"]["message"].as_str())
        .filter(|m| m.contains("ignored as Kanto ignores them"))
        .collect();
    assert_eq!(warnings.len(), 1, "{feedback:#?}");
    assert!(
        warnings[0].contains("payload.blueprintMetadata"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[0].contains("payload.baselines[0].precondition"),
        "{}",
        warnings[0]
    );
    assert_eq!(inspect(&name, "{{.State.Running}}"), "true");
}

#[test]
fn lenient_mode_drops_a_malformed_port_naming_it_in_the_feedback_and_applies_the_rest() {
    let name = unique("len-port");
    let _c = Cleanup(name.clone());
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "#");
    let state = TempDir::new().unwrap();
    let berth = start(state.path(), &broker, &["--validation", "lenient"]);
    let config = json!([
        {"key": "image", "value": image("service", "1")},
        {"key": "port", "value": "80:80/quic"},
        {"key": "mount", "value": "relative/path:/data"},
        {"key": "device"},
        {"key": "env", "value": "KEPT=yes"}
    ]);
    publish(
        &broker,
        "containersupdate/desiredstate",
        &leda_document("len-port-1", &name, config),
    );
    let feedback = finished(&sub, "len-port-1", &berth);
    assert_eq!(
        feedback.last().unwrap()["payload"]["status"],
        "COMPLETED",
        "{feedback:#?}"
    );
    let first = &feedback[0];
    assert_eq!(first["payload"]["status"], "IDENTIFYING");
    let words = first["payload"]["message"].as_str().unwrap_or("");
    assert!(words.contains("config \"port\": \"80:80/quic\""), "{words}");
    assert!(
        words.contains("config \"mount\": \"relative/path:/data\""),
        "{words}"
    );
    // An entry without value has the empty value (the Update Manager omits
    // empty values), and is dropped like any malformed device.
    assert!(words.contains("config \"device\": \"\""), "{words}");
    assert!(words.contains("dropped (validation = lenient)"), "{words}");
    assert!(inspect(&name, "{{.Config.Env}}").contains("KEPT=yes"));
    assert_eq!(inspect(&name, "{{len .HostConfig.PortBindings}}"), "0");
}

#[test]
fn strict_mode_refuses_the_same_document_and_changes_nothing() {
    let name = unique("len-strict");
    let _c = Cleanup(name.clone());
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "#");
    let state = TempDir::new().unwrap();
    let berth = start(state.path(), &broker, &[]);
    let config = json!([
        {"key": "image", "value": image("service", "1")},
        {"key": "port", "value": "80:80/quic"}
    ]);
    publish(
        &broker,
        "containersupdate/desiredstate",
        &leda_document("len-strict-1", &name, config),
    );
    let feedback = finished(&sub, "len-strict-1", &berth);
    let last = feedback.last().unwrap();
    assert_eq!(
        last["payload"]["status"], "IDENTIFICATION_FAILED",
        "{feedback:#?}"
    );
    let words = last["payload"]["message"].as_str().unwrap_or("");
    assert!(words.contains("unknown protocol \"quic\""), "{words}");
    assert!(words.contains("payload.blueprintMetadata"), "{words}");
    assert_eq!(inspect(&name, "{{.State.Running}}"), "");
}

#[test]
fn berth_validate_lenient_accepts_what_strict_refuses() {
    let dir = TempDir::new().unwrap();
    let config = json!([
        {"key": "image", "value": image("service", "1")},
        {"key": "device", "value": "/dev/ttyACM0"}
    ]);
    let file = temp_file(dir.path(), "doc.json", &leda_document("v", "web", config));
    let strict = run(berth().arg("validate").arg(&file));
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict.stderr));
    let lenient = run(berth()
        .args(["validate", "--validation", "lenient"])
        .arg(&file));
    assert_eq!(lenient.status.code(), Some(0), "{}", text(&lenient.stderr));
    assert!(text(&lenient.stderr).contains("\"/dev/ttyACM0\" has only a host path"));
}

#[test]
fn localhost_as_a_port_host_ip_binds_127_0_0_1_with_a_warning() {
    let name = unique("len-local");
    let _c = Cleanup(name.clone());
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "#");
    let state = TempDir::new().unwrap();
    let berth = start(state.path(), &broker, &[]);
    let port = crate::util::free_port();
    let config = json!([
        {"key": "image", "value": image("service", "1")},
        {"key": "port", "value": format!("localhost:{port}:80")}
    ]);
    publish(
        &broker,
        "containersupdate/desiredstate",
        &leda_document("len-local-1", &name, config),
    );
    let feedback = finished(&sub, "len-local-1", &berth);
    assert_eq!(
        feedback.last().unwrap()["payload"]["status"],
        "COMPLETED",
        "{feedback:#?}"
    );
    let words = feedback[0]["payload"]["message"].as_str().unwrap_or("");
    assert!(
        words.contains("host IP \"localhost\" is read as 127.0.0.1"),
        "{words}"
    );
    let bound = inspect(&name, "{{range $p, $b := .HostConfig.PortBindings}}{{range $b}}{{.HostIp}}:{{.HostPort}}{{end}}{{end}}");
    assert_eq!(bound, format!("127.0.0.1:{port}"));
}
