//! Per-device isolation on a fleet's broker (issue 26), with the very
//! configuration `examples/mosquitto/` ships: every client logs in, the
//! controller reaches every device, and a device only the topics under its
//! own prefix. Checked with Debian's `mosquitto_sub`/`mosquitto_pub`, clients
//! independent of berth's, and with a real `berth run` as one device.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::broker::{Broker, Subscriber};
use crate::util::{berth, text, Background};

const CONTROLLER: (&str, &str) = ("controller", "controller-secret");
const DEV1: (&str, &str) = ("sim-0001", "secret-0001");
const DEV2: (&str, &str) = ("sim-0002", "secret-0002");

/// A mosquitto with `examples/mosquitto/berth-fleet.conf` and its `acl`,
/// the password file made with `mosquitto_passwd` for the controller and
/// two devices.
struct Fleet {
    broker: Broker,
    _files: tempfile::TempDir,
}

fn fleet() -> Fleet {
    let files = tempfile::tempdir().expect("a directory for the broker's files");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mosquitto");
    std::fs::copy(examples.join("acl"), files.path().join("acl")).expect("copy the acl");
    let passwd = files.path().join("passwd");
    for (i, (user, password)) in [CONTROLLER, DEV1, DEV2].iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd
            .arg("-b")
            .arg(&passwd)
            .args([user, password])
            .output()
            .expect("mosquitto_passwd runs");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let conf = std::fs::read_to_string(examples.join("berth-fleet.conf"))
        .expect("the example config")
        .replace(
            "/etc/mosquitto/berth-fleet/",
            &format!("{}/", files.path().display()),
        );
    Fleet {
        broker: Broker::start_with(&conf),
        _files: files,
    }
}

/// `mosquitto_pub` as `who`, QoS 1; its exit status.
fn publish_as(
    broker: &Broker,
    who: (&str, &str),
    topic: &str,
    payload: &str,
    retain: bool,
) -> bool {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args([
            "-u", who.0, "-P", who.1, "-q", "1", "-t", topic, "-m", payload,
        ]);
    if retain {
        cmd.arg("-r");
    }
    cmd.stdin(Stdio::null())
        .output()
        .expect("mosquitto_pub runs")
        .status
        .success()
}

/// What `who` receives on `filter` within `secs` (retained messages
/// included): payloads.
fn receive_as(
    broker: &Broker,
    who: (&str, &str),
    filter: &str,
    secs: u32,
) -> (Option<i32>, String) {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-u", who.0, "-P", who.1, "-t", filter, "-v"])
        .args(["-W", &secs.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_sub runs");
    (
        out.status.code(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[test]
fn a_client_without_credentials_is_refused() {
    let f = fleet();
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &f.broker.port().to_string()])
        .args(["-t", "devices/#", "-W", "2"])
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_sub runs");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("not authorised")
            || text(&out.stderr).contains("Connection Refused"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_device_cannot_read_another_devices_topics() {
    let f = fleet();
    let theirs = "devices/sim-0002/containersupdate/currentstate";
    assert!(publish_as(
        &f.broker,
        CONTROLLER,
        theirs,
        "{\"secret\":1}",
        true
    ));
    // The controller sees it: the message is there to be read.
    let (_, seen) = receive_as(&f.broker, CONTROLLER, theirs, 2);
    assert!(seen.contains("\"secret\""), "{seen}");
    // sim-0001 asks for it by name, and for everything.
    let (_, named) = receive_as(&f.broker, DEV1, theirs, 2);
    assert!(!named.contains("secret"), "{named}");
    let (_, all) = receive_as(&f.broker, DEV1, "#", 2);
    assert!(!all.contains("secret"), "{all}");
    // Its own prefix it reads.
    let mine = "devices/sim-0001/containersupdate/currentstate";
    assert!(publish_as(&f.broker, CONTROLLER, mine, "{\"own\":1}", true));
    let (_, own) = receive_as(&f.broker, DEV1, "devices/sim-0001/#", 2);
    assert!(own.contains("\"own\""), "{own}");
}

#[test]
fn a_device_cannot_publish_a_desired_state_for_another_device() {
    let f = fleet();
    let watch = Subscriber::start_as(&f.broker, "devices/#", CONTROLLER.0, CONTROLLER.1);
    let theirs = "devices/sim-0002/containersupdate/desiredstate";
    // mosquitto drops a publish it does not allow (MQTT 3.1.1 cannot say
    // no); the client's exit status cannot tell, so what arrives does.
    publish_as(&f.broker, DEV1, theirs, "{\"forged\":true}", false);
    let mine = "devices/sim-0001/containersupdate/desiredstatefeedback";
    assert!(publish_as(
        &f.broker,
        DEV1,
        mine,
        "{\"marker\":true}",
        false
    ));
    let msgs = watch.wait_for("sim-0001's own message", Duration::from_secs(10), |m| {
        m.iter().any(|(t, _)| t == mine)
    });
    assert!(
        !msgs.iter().any(|(t, _)| t == theirs),
        "a forged desired state reached sim-0002's topic: {msgs:?}"
    );
}

/// `berth run` as `device` (its user name and password, its prefix
/// `devices/<user>/`) on the broker at `url`, with `extra` lines in its
/// `[mqtt]` section; its state and config in `state`.
pub(crate) fn berth_as_device(
    state: &tempfile::TempDir,
    url: &str,
    device: (&str, &str),
    extra: &str,
) -> Background {
    let secret = state.path().join("mqtt-password");
    std::fs::write(&secret, device.1).expect("write the password");
    let config = state.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nurl = \"{url}\"\nusername = \"{}\"\npassword_file = \"{}\"\nallow_insecure = true\ntopic_prefix = \"devices/{}/\"\n{extra}",
            device.0,
            secret.display(),
            device.0,
        ),
    )
    .expect("write the config");
    let mut cmd = berth();
    cmd.args(["run", "--state-dir"])
        .arg(state.path().join("state"))
        .arg("--config")
        .arg(&config)
        .args(["--log-level", "berth=debug"]);
    Background::spawn(cmd)
}

/// A `berth run` as device sim-0001 under the ACL: it gets its desired
/// state and its feedback and current state reach the controller, so
/// every topic berth uses lies under its prefix.
#[test]
fn berth_as_a_device_works_within_its_own_prefix_only() {
    let f = fleet();
    let state = tempfile::tempdir().expect("a state directory");
    let watch = Subscriber::start_as(&f.broker, "devices/#", CONTROLLER.0, CONTROLLER.1);
    let mut agent = berth_as_device(&state, &f.broker.url(), DEV1, "");
    agent.wait_for("connected to the MQTT broker", Duration::from_secs(60));
    let current = "devices/sim-0001/containersupdate/currentstate";
    watch.wait_for("sim-0001's current state", Duration::from_secs(60), |m| {
        m.iter().any(|(t, _)| t == current)
    });
    let doc =
        r#"{"activityId":"iso-1","payload":{"domains":[{"id":"containers","components":[]}]}}"#;
    assert!(publish_as(
        &f.broker,
        CONTROLLER,
        "devices/sim-0001/containersupdate/desiredstate",
        doc,
        false
    ));
    let done = watch.feedback(
        "iso-1",
        &["COMPLETED"],
        Duration::from_secs(60),
        &agent.stderr(),
    );
    assert_eq!(done["activityId"], "iso-1");
    // Nothing of sim-0001 ever appeared under another device.
    assert!(
        watch
            .messages()
            .iter()
            .all(|(t, _)| t.starts_with("devices/sim-0001/")),
        "{:?}",
        watch.messages()
    );
    assert!(
        !f.broker.log().contains("Denied PUBLISH from sim-0001"),
        "berth published outside its prefix:\n{}",
        f.broker.log()
    );
}
