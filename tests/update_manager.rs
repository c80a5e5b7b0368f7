//! `mode = "orchestrated"` against mosquitto and the real engine, driven by
//! a small Update Manager simulator that sends the command sequences of
//! Kanto's update manager (`updatem/orchestration`): each command only
//! after the previous phase's `*_SUCCESS`, CLEANUP at once after any
//! `*_FAILURE`, ROLLBACK only when owner consent is refused.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::agent::Names;
use crate::broker::{publish, Broker, Subscriber};
use crate::util::{berth, desired_state, docker, image, Background, Component};

const WAIT: Duration = Duration::from_secs(90);
const FEEDBACK: &str = "containersupdate/desiredstatefeedback";
const DESIRED: &str = "containersupdate/desiredstate";
const COMMAND: &str = "containersupdate/desiredstate/command";

/// A device: a private broker, a subscriber from its first message, and an
/// orchestrated `berth run` on it.
struct Device {
    broker: Broker,
    sub: Subscriber,
    state: TempDir,
    berth: Background,
}

fn start_berth(state: &Path, url: &str, extra: &[&str]) -> Background {
    let mut cmd = berth();
    cmd.args(["run", "--state-dir"])
        .arg(state)
        .args(["--log-level", "berth=debug", "--min-ready", "500ms"])
        .args(["--mqtt-url", url, "--mode", "orchestrated"]);
    if !extra.contains(&"--reconcile-interval") {
        cmd.args(["--reconcile-interval", "0"]);
    }
    cmd.args(extra);
    let mut b = Background::spawn(cmd);
    b.wait_for("connected to the MQTT broker", WAIT);
    b
}

impl Device {
    fn new(extra: &[&str]) -> Self {
        let broker = Broker::start();
        let sub = Subscriber::start(&broker, "#");
        let state = TempDir::new().unwrap();
        let berth = start_berth(state.path(), &broker.url(), extra);
        Self {
            broker,
            sub,
            state,
            berth,
        }
    }

    fn log(&self) -> String {
        self.berth.stderr()
    }
}

/// The Update Manager's side of one activity.
struct Um<'a> {
    device: &'a Device,
    activity: String,
}

impl<'a> Um<'a> {
    /// Sends the desired state and waits for IDENTIFIED (or a final word).
    fn start(device: &'a Device, activity: &str, components: &[Component]) -> Self {
        let um = Self {
            device,
            activity: activity.to_string(),
        };
        publish(
            &device.broker,
            DESIRED,
            &desired_state(activity, components),
        );
        um.wait(&["IDENTIFIED", "IDENTIFICATION_FAILED"]);
        um
    }

    fn command_for(&self, activity: &str, command: &str, baseline: Option<&str>) {
        let mut payload = json!({"command": command});
        if let Some(b) = baseline {
            payload["baseline"] = json!(b);
        }
        let m = json!({"activityId": activity, "timestamp": 1, "payload": payload});
        publish(&self.device.broker, COMMAND, &m.to_string());
    }

    /// Sends a command as the Update Manager does (no baseline) and waits
    /// for one of `answers`.
    fn command(&self, command: &str, answers: &[&str]) -> Value {
        let before = self.feedback().len();
        self.command_for(&self.activity, command, None);
        self.wait_after(before, answers)
    }

    fn feedback(&self) -> Vec<Value> {
        self.device
            .sub
            .json(FEEDBACK)
            .into_iter()
            .filter(|f| f["activityId"] == self.activity.as_str())
            .collect()
    }

    fn wait(&self, statuses: &[&str]) -> Value {
        self.wait_after(0, statuses)
    }

    /// Waits for a feedback message, after the first `skip`, whose status
    /// is one of `statuses`.
    fn wait_after(&self, skip: usize, statuses: &[&str]) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(f) = self
                .feedback()
                .into_iter()
                .skip(skip)
                .find(|f| statuses.contains(&f["payload"]["status"].as_str().unwrap_or("")))
            {
                return f;
            }
            assert!(
                Instant::now() < deadline,
                "no {statuses:?} for {}: {:?}\nberth log:\n{}",
                self.activity,
                self.statuses(),
                self.device.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The statuses reported so far, message by message.
    fn statuses(&self) -> Vec<String> {
        self.feedback()
            .iter()
            .map(|f| f["payload"]["status"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// The statuses, repeats of the same status in a row counted once
    /// (one per container in progress).
    fn phases(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.statuses() {
            if out.last() != Some(&s) {
                out.push(s);
            }
        }
        out
    }

    /// The whole successful sequence.
    fn run_to_completion(&self) {
        self.command("DOWNLOAD", &["DOWNLOAD_SUCCESS"]);
        self.command("UPDATE", &["UPDATE_SUCCESS"]);
        self.command("ACTIVATE", &["ACTIVATION_SUCCESS"]);
        self.command("CLEANUP", &["COMPLETED"]);
    }
}

/// The action of `name` in a feedback message: (status, message).
fn action(f: &Value, name: &str) -> (String, String) {
    let a = f["payload"]["actions"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|a| a["component"]["id"] == format!("containers:{name}").as_str())
        })
        .unwrap_or_else(|| panic!("no action for {name} in {f}"));
    (
        a["status"].as_str().unwrap_or("").into(),
        a["message"].as_str().unwrap_or("").into(),
    )
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `(running, image)` of a container, if it exists; the image as the
/// document named it (see [`crate::util::created_from`]).
fn state_of(name: &str) -> Option<(bool, String)> {
    let out = std::process::Command::new("docker")
        .args(["inspect", "--type", "container", name])
        .output()
        .expect("docker runs");
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let c = v.get(0)?;
    Some((c["State"]["Running"] == true, crate::util::created_from(c)))
}

fn service(tag: &str) -> String {
    image("service", tag)
}

const FULL: &[&str] = &[
    "IDENTIFYING",
    "IDENTIFIED",
    "DOWNLOADING",
    "DOWNLOAD_SUCCESS",
    "UPDATING",
    "UPDATE_SUCCESS",
    "ACTIVATING",
    "ACTIVATION_SUCCESS",
    "CLEANUP",
    "CLEANUP_SUCCESS",
    "COMPLETED",
];

#[test]
fn a_full_update_manager_sequence_replaces_the_container_phase_by_phase() {
    let names = Names::new(&["um-web"]);
    let web = names.names[0].as_str();
    let device = Device::new(&[]);
    let s1 = service("1");
    Um::start(&device, "um-full-1", &[(web, "1", &[("image", &s1)])]).run_to_completion();
    assert_eq!(state_of(web), Some((true, s1.clone())));

    let s2 = service("2");
    let um = Um::start(&device, "um-full-2", &[(web, "2", &[("image", &s2)])]);
    let identified = um.wait(&["IDENTIFIED"]);
    assert_eq!(action(&identified, web).0, "IDENTIFIED");

    let downloaded = um.command("DOWNLOAD", &["DOWNLOAD_SUCCESS"]);
    assert_eq!(action(&downloaded, web).0, "DOWNLOAD_SUCCESS");
    // Nothing that runs is touched before UPDATE.
    assert_eq!(state_of(web), Some((true, s1.clone())));

    let updated = um.command("UPDATE", &["UPDATE_SUCCESS"]);
    assert_eq!(
        action(&updated, web),
        (
            "UPDATE_SUCCESS".into(),
            "Old container instance is stopped.".into()
        )
    );
    assert_eq!(
        state_of(&format!("{web}.berth-old")),
        Some((false, s1.clone()))
    );

    let activated = um.command("ACTIVATE", &["ACTIVATION_SUCCESS"]);
    assert_eq!(
        action(&activated, web),
        (
            "ACTIVATION_SUCCESS".into(),
            "New container instance is started.".into()
        )
    );
    let completed = um.command("CLEANUP", &["COMPLETED"]);
    assert_eq!(action(&completed, web).0, "ACTIVATION_SUCCESS");
    assert_eq!(um.phases(), words(FULL));
    assert_eq!(state_of(web), Some((true, s2)));
    assert_eq!(state_of(&format!("{web}.berth-old")), None);
}

#[test]
fn identified_with_nothing_to_do_completes_without_commands() {
    let names = Names::new(&["um-same"]);
    let web = names.names[0].as_str();
    let device = Device::new(&[]);
    let s1 = service("1");
    Um::start(&device, "um-same-1", &[(web, "1", &[("image", &s1)])]).run_to_completion();
    let um = Um::start(&device, "um-same-2", &[(web, "1", &[("image", &s1)])]);
    um.wait(&["COMPLETED"]);
    assert_eq!(
        um.phases(),
        words(&["IDENTIFYING", "IDENTIFIED", "COMPLETED"])
    );
}

#[test]
fn a_download_failure_then_cleanup_ends_incomplete_with_nothing_changed() {
    let names = Names::new(&["um-dl"]);
    let web = names.names[0].as_str();
    let device = Device::new(&[]);
    let s1 = service("1");
    Um::start(&device, "um-dl-1", &[(web, "1", &[("image", &s1)])]).run_to_completion();
    let missing = service("no-such-tag");
    let um = Um::start(&device, "um-dl-2", &[(web, "9", &[("image", &missing)])]);
    let failed = um.command("DOWNLOAD", &["DOWNLOAD_FAILURE", "DOWNLOAD_SUCCESS"]);
    assert_eq!(failed["payload"]["status"], "DOWNLOAD_FAILURE");
    // The Update Manager's answer to any failure: CLEANUP at once.
    um.command("CLEANUP", &["INCOMPLETE", "COMPLETED"]);
    assert_eq!(
        um.phases(),
        words(&[
            "IDENTIFYING",
            "IDENTIFIED",
            "DOWNLOADING",
            "DOWNLOAD_FAILURE",
            "CLEANUP_SUCCESS",
            "INCOMPLETE"
        ])
    );
    assert_eq!(state_of(web), Some((true, s1)));
    assert_eq!(state_of(&format!("{web}.berth-new")), None);
}

#[test]
fn an_activation_failure_then_cleanup_restores_the_old_container() {
    let names = Names::new(&["um-act"]);
    let web = names.names[0].as_str();
    let device = Device::new(&[]);
    let s1 = service("1");
    Um::start(&device, "um-act-1", &[(web, "1", &[("image", &s1)])]).run_to_completion();
    let crash = image("crash", "1");
    let um = Um::start(&device, "um-act-2", &[(web, "2", &[("image", &crash)])]);
    um.command("DOWNLOAD", &["DOWNLOAD_SUCCESS"]);
    um.command("UPDATE", &["UPDATE_SUCCESS"]);
    let failed = um.command("ACTIVATE", &["ACTIVATION_FAILURE", "ACTIVATION_SUCCESS"]);
    assert_eq!(failed["payload"]["status"], "ACTIVATION_FAILURE");
    assert_eq!(action(&failed, web).0, "ACTIVATION_FAILURE");
    um.command("CLEANUP", &["INCOMPLETE", "COMPLETED"]);
    assert_eq!(
        um.phases(),
        words(&[
            "IDENTIFYING",
            "IDENTIFIED",
            "DOWNLOADING",
            "DOWNLOAD_SUCCESS",
            "UPDATING",
            "UPDATE_SUCCESS",
            "ACTIVATING",
            "ACTIVATION_FAILURE",
            "ROLLBACK",
            "ROLLBACK_SUCCESS",
            "CLEANUP_SUCCESS",
            "INCOMPLETE"
        ])
    );
    assert_eq!(state_of(web), Some((true, s1)));
    assert_eq!(state_of(&format!("{web}.berth-new")), None);
    assert_eq!(state_of(&format!("{web}.berth-old")), None);
}

#[test]
fn owner_consent_refused_after_update_rolls_back_and_restarts_the_removed_container() {
    let names = Names::new(&["um-own-web", "um-own-old"]);
    let (web, old) = (names.names[0].as_str(), names.names[1].as_str());
    let device = Device::new(&[]);
    let s1 = service("1");
    Um::start(
        &device,
        "um-own-1",
        &[(web, "1", &[("image", &s1)]), (old, "1", &[("image", &s1)])],
    )
    .run_to_completion();
    let s2 = service("2");
    // `old` is no longer wanted: UPDATE stops it for removal.
    let um = Um::start(&device, "um-own-2", &[(web, "2", &[("image", &s2)])]);
    um.command("DOWNLOAD", &["DOWNLOAD_SUCCESS"]);
    um.command("UPDATE", &["UPDATE_SUCCESS"]);
    assert_eq!(state_of(old).map(|s| s.0), Some(false));
    // Owner consent for ACTIVATE refused: the Update Manager sends ROLLBACK.
    let rolled = um.command("ROLLBACK", &["ROLLBACK_SUCCESS", "ROLLBACK_FAILURE"]);
    assert_eq!(rolled["payload"]["status"], "ROLLBACK_SUCCESS");
    assert_eq!(state_of(web), Some((true, s1.clone())));
    assert_eq!(state_of(old), Some((true, s1)));
    um.command("CLEANUP", &["INCOMPLETE", "COMPLETED"]);
    assert_eq!(
        um.phases(),
        words(&[
            "IDENTIFYING",
            "IDENTIFIED",
            "DOWNLOADING",
            "DOWNLOAD_SUCCESS",
            "UPDATING",
            "UPDATE_SUCCESS",
            "ROLLBACK",
            "ROLLBACK_SUCCESS",
            "CLEANUP_SUCCESS",
            "INCOMPLETE"
        ])
    );
}

#[test]
fn with_two_domains_berth_waits_for_update_until_the_other_domain_has_downloaded() {
    let names = Names::new(&["um-two"]);
    let web = names.names[0].as_str();
    let device = Device::new(&[]);
    let s1 = service("1");
    Um::start(&device, "um-two-1", &[(web, "1", &[("image", &s1)])]).run_to_completion();
    let s2 = service("2");
    let um = Um::start(&device, "um-two-2", &[(web, "2", &[("image", &s2)])]);
    // The Update Manager sends DOWNLOAD to both domains; the other one
    // (played here) takes its time.
    publish(
        &device.broker,
        "appsupdate/desiredstate/command",
        &json!({"activityId": "um-two-2", "payload": {"command": "DOWNLOAD"}}).to_string(),
    );
    um.command("DOWNLOAD", &["DOWNLOAD_SUCCESS"]);
    std::thread::sleep(Duration::from_secs(3));
    // berth goes no further on its own: the old container serves.
    assert_eq!(
        um.phases().last().map(String::as_str),
        Some("DOWNLOAD_SUCCESS")
    );
    assert_eq!(state_of(web), Some((true, s1)));
    // The other domain reports DOWNLOAD_SUCCESS: now UPDATE goes to both.
    publish(
        &device.broker,
        "appsupdate/desiredstatefeedback",
        &json!({"activityId": "um-two-2", "payload": {"status": "DOWNLOAD_SUCCESS"}}).to_string(),
    );
    um.command("UPDATE", &["UPDATE_SUCCESS"]);
    um.command("ACTIVATE", &["ACTIVATION_SUCCESS"]);
    um.command("CLEANUP", &["COMPLETED"]);
    assert_eq!(um.phases(), words(FULL));
    assert_eq!(state_of(web), Some((true, s2)));
}

#[test]
fn out_of_order_unknown_baseline_foreign_and_unknown_commands_are_answered_as_kanto_does() {
    let names = Names::new(&["um-ooo"]);
    let web = names.names[0].as_str();
    let device = Device::new(&[]);
    let s1 = service("1");
    let um = Um::start(&device, "um-ooo-1", &[(web, "1", &[("image", &s1)])]);

    let refused = um.command("UPDATE", &["UPDATE_FAILURE"]);
    assert_eq!(
        refused["payload"]["message"],
        "UPDATE is possible only after status DOWNLOAD_SUCCESS is reported"
    );
    let before = um.feedback().len();
    um.command_for("um-ooo-1", "DOWNLOAD", Some("monitoring"));
    let unknown = um.wait_after(before, &["DOWNLOAD_FAILURE"]);
    assert_eq!(unknown["payload"]["message"], "Unknown baseline monitoring");
    assert_eq!(unknown["payload"]["baseline"], "monitoring");
    assert_eq!(
        refused["payload"].get("baseline"),
        None,
        "no baseline named, none sent"
    );

    // Another activity's command and an unknown command: a log line each,
    // no feedback, and the activity goes on.
    um.command_for("someone-else", "DOWNLOAD", None);
    um.command_for("um-ooo-1", "REBOOT", None);
    let deadline = Instant::now() + WAIT;
    while !(device
        .log()
        .contains("ignoring a command for another activity")
        && device.log().contains("ignoring an unknown command"))
    {
        assert!(Instant::now() < deadline, "no log lines:\n{}", device.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The implicit baseline of a container in none selects it.
    let before = um.feedback().len();
    um.command_for("um-ooo-1", "DOWNLOAD", Some(&format!("containers:{web}")));
    let scoped = um.wait_after(before, &["DOWNLOAD_SUCCESS"]);
    assert_eq!(
        scoped["payload"]["baseline"],
        format!("containers:{web}").as_str()
    );
    um.command("UPDATE", &["UPDATE_SUCCESS"]);
    um.command("ACTIVATE", &["ACTIVATION_SUCCESS"]);
    um.command("CLEANUP", &["COMPLETED"]);
    assert_eq!(
        um.phases(),
        words(&[
            "IDENTIFYING",
            "IDENTIFIED",
            "UPDATE_FAILURE",
            "DOWNLOAD_FAILURE",
            "DOWNLOADING",
            "DOWNLOAD_SUCCESS",
            "UPDATING",
            "UPDATE_SUCCESS",
            "ACTIVATING",
            "ACTIVATION_SUCCESS",
            "CLEANUP",
            "CLEANUP_SUCCESS",
            "COMPLETED"
        ])
    );
    assert_eq!(state_of(web), Some((true, s1)));
}

#[test]
fn a_phase_without_a_next_command_within_phase_timeout_is_undone_incomplete() {
    let names = Names::new(&["um-tmo"]);
    let web = names.names[0].as_str();
    let device = Device::new(&["--phase-timeout", "3s"]);
    let s1 = service("1");
    Um::start(&device, "um-tmo-1", &[(web, "1", &[("image", &s1)])]).run_to_completion();
    let s2 = service("2");
    let um = Um::start(&device, "um-tmo-2", &[(web, "2", &[("image", &s2)])]);
    um.command("DOWNLOAD", &["DOWNLOAD_SUCCESS"]);
    um.command("UPDATE", &["UPDATE_SUCCESS"]);
    let end = um.wait(&["INCOMPLETE", "COMPLETED"]);
    assert_eq!(end["payload"]["status"], "INCOMPLETE");
    let message = end["payload"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("no command came within phase_timeout (3s) after UPDATE_SUCCESS"),
        "{message}"
    );
    assert_eq!(state_of(web), Some((true, s1)));
    assert_eq!(state_of(&format!("{web}.berth-new")), None);
}

#[test]
fn berth_killed_between_update_and_activate_restores_the_old_container_at_the_next_start() {
    let names = Names::new(&["um-kill"]);
    let web = names.names[0].as_str();
    let mut device = Device::new(&[]);
    let s1 = service("1");
    Um::start(&device, "um-kill-1", &[(web, "1", &[("image", &s1)])]).run_to_completion();
    let s2 = service("2");
    let um = Um::start(&device, "um-kill-2", &[(web, "2", &[("image", &s2)])]);
    um.command("DOWNLOAD", &["DOWNLOAD_SUCCESS"]);
    um.command("UPDATE", &["UPDATE_SUCCESS"]);
    drop(um);
    device.berth.kill();
    // Killed half-way: the old container stopped aside, the new one not started.
    assert_eq!(state_of(web), None, "{}", docker(&["ps", "-a"]));
    assert_eq!(
        state_of(&format!("{web}.berth-old")),
        Some((false, s1.clone()))
    );
    let url = device.broker.url();
    device.berth = start_berth(device.state.path(), &url, &[]);
    let um = Um {
        device: &device,
        activity: "um-kill-2".into(),
    };
    let end = um.wait(&["INCOMPLETE", "INCOMPLETE_INCONSISTENT", "COMPLETED"]);
    assert_eq!(end["payload"]["status"], "INCOMPLETE", "{end}");
    assert_eq!(state_of(web), Some((true, s1)));
    assert_eq!(state_of(&format!("{web}.berth-old")), None);
    assert_eq!(state_of(&format!("{web}.berth-new")), None);
}

#[test]
fn currentstate_get_is_answered_while_the_activity_waits_for_a_command() {
    let names = Names::new(&["um-get"]);
    let web = names.names[0].as_str();
    let device = Device::new(&[]);
    let s1 = service("1");
    let um = Um::start(&device, "um-get-1", &[(web, "1", &[("image", &s1)])]);
    um.command("DOWNLOAD", &["DOWNLOAD_SUCCESS"]);
    publish(
        &device.broker,
        "containersupdate/currentstate/get",
        r#"{"activityId":"um-get-req","payload":null}"#,
    );
    device
        .sub
        .wait_for("the current state for um-get-req", WAIT, |msgs| {
            msgs.iter().any(|(t, p)| {
                t == "containersupdate/currentstate" && p.contains(r#""activityId":"um-get-req""#)
            })
        });
    // The activity is untouched by it and goes on.
    um.command("UPDATE", &["UPDATE_SUCCESS"]);
    um.command("ACTIVATE", &["ACTIVATION_SUCCESS"]);
    um.command("CLEANUP", &["COMPLETED"]);
    assert_eq!(state_of(web), Some((true, s1)));
}

#[test]
fn a_newer_document_ends_the_waiting_activity_undone_and_runs_under_its_own_commands() {
    let names = Names::new(&["um-sup"]);
    let web = names.names[0].as_str();
    let device = Device::new(&[]);
    let s1 = service("1");
    Um::start(&device, "um-sup-1", &[(web, "1", &[("image", &s1)])]).run_to_completion();
    let s2 = service("2");
    let first = Um::start(&device, "um-sup-2", &[(web, "2", &[("image", &s2)])]);
    first.command("DOWNLOAD", &["DOWNLOAD_SUCCESS"]);
    first.command("UPDATE", &["UPDATE_SUCCESS"]);
    let second = Um::start(
        &device,
        "um-sup-3",
        &[(web, "3", &[("image", &s1), ("env", "RELEASE=3")])],
    );
    let end = first.wait(&["INCOMPLETE", "COMPLETED"]);
    assert_eq!(end["payload"]["status"], "INCOMPLETE");
    assert!(
        end["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("superseded by um-sup-3")),
        "{end}"
    );
    // The plan of the newer one starts from the restored device.
    let identified = second.wait(&["IDENTIFIED"]);
    assert_eq!(action(&identified, web).0, "IDENTIFIED");
    second.run_to_completion();
    assert_eq!(state_of(web), Some((true, s1)));
    assert!(docker(&["inspect", "--format", "{{.Config.Env}}", web]).contains("RELEASE=3"));
}

#[test]
fn an_orchestrated_activity_that_did_not_complete_is_not_enforced_after_a_restart() {
    let names = Names::new(&["um-keep"]);
    let web = names.names[0].as_str();
    let mut device = Device::new(&[]);
    let s1 = service("1");
    Um::start(&device, "um-keep-1", &[(web, "1", &[("image", &s1)])]).run_to_completion();
    let s2 = service("2");
    let um = Um::start(&device, "um-keep-2", &[(web, "2", &[("image", &s2)])]);
    um.command("DOWNLOAD", &["DOWNLOAD_SUCCESS"]);
    um.command("CLEANUP", &["INCOMPLETE", "COMPLETED"]);
    drop(um);
    device.berth.terminate();
    let url = device.broker.url();
    device.berth = start_berth(device.state.path(), &url, &[]);
    device.berth.wait_for("ready", WAIT);
    // The start-up enforcement is of the last completed document.
    assert_eq!(state_of(web), Some((true, s1)));
}

#[test]
fn a_state_file_is_carried_out_on_its_own_even_in_orchestrated_mode() {
    let names = Names::new(&["um-file"]);
    let web = names.names[0].as_str();
    let files = TempDir::new().unwrap();
    let file = files.path().join("state.json");
    let s1 = service("1");
    std::fs::write(
        &file,
        desired_state("um-file-1", &[(web, "1", &[("image", &s1)])]),
    )
    .unwrap();
    let device = Device::new(&["--files", file.to_str().unwrap()]);
    // The Update Manager knows nothing of state files: no command comes.
    let deadline = Instant::now() + WAIT;
    while state_of(web) != Some((true, s1.clone())) {
        assert!(Instant::now() < deadline, "not applied:\n{}", device.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn owner_consent_refused_for_update_rolls_back_the_download_and_answers_rollback_success() {
    let names = Names::new(&["um-own-dl"]);
    let web = names.names[0].as_str();
    let device = Device::new(&[]);
    let s1 = service("1");
    Um::start(&device, "um-own-dl-1", &[(web, "1", &[("image", &s1)])]).run_to_completion();
    let s2 = service("2");
    let um = Um::start(&device, "um-own-dl-2", &[(web, "2", &[("image", &s2)])]);
    um.command("DOWNLOAD", &["DOWNLOAD_SUCCESS"]);
    assert!(state_of(&format!("{web}.berth-new")).is_some());
    // The Update Manager waits for ROLLBACK_SUCCESS before it sends CLEANUP.
    let rolled = um.command("ROLLBACK", &["ROLLBACK_SUCCESS", "ROLLBACK_FAILURE"]);
    assert_eq!(rolled["payload"]["status"], "ROLLBACK_SUCCESS");
    assert_eq!(state_of(&format!("{web}.berth-new")), None);
    um.command("CLEANUP", &["INCOMPLETE", "COMPLETED"]);
    assert_eq!(
        um.phases(),
        words(&[
            "IDENTIFYING",
            "IDENTIFIED",
            "DOWNLOADING",
            "DOWNLOAD_SUCCESS",
            "ROLLBACK",
            "ROLLBACK_SUCCESS",
            "CLEANUP_SUCCESS",
            "INCOMPLETE"
        ])
    );
    assert_eq!(state_of(web), Some((true, s1)));
}

// Per-baseline commands, as Leda's test tools send them: each phase for
// the containers of the baseline named only, each baseline with its own
// status, the activity ending when the last one is cleaned up.

impl Um<'_> {
    /// Sends a command for one baseline and waits for one of `answers`.
    fn command_baseline(&self, command: &str, baseline: &str, answers: &[&str]) -> Value {
        let before = self.feedback().len();
        self.command_for(&self.activity, command, Some(baseline));
        self.wait_after(before, answers)
    }

    /// The statuses with the baseline each answers (empty for none),
    /// repeats in a row counted once.
    fn phases_by_baseline(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for f in self.feedback() {
            let p = &f["payload"];
            let s = (
                p["status"].as_str().unwrap_or("").to_string(),
                p["baseline"].as_str().unwrap_or("").to_string(),
            );
            if out.last() != Some(&s) {
                out.push(s);
            }
        }
        out
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(s, b)| (s.to_string(), b.to_string()))
        .collect()
}

/// Two containers at version 1, each in its implicit baseline.
fn two_baselines(device: &Device, a: &str, b: &str, tag: &str) -> (String, String) {
    let s1 = service("1");
    Um::start(
        device,
        &format!("{tag}-1"),
        &[(a, "1", &[("image", &s1)]), (b, "1", &[("image", &s1)])],
    )
    .run_to_completion();
    (format!("containers:{a}"), format!("containers:{b}"))
}

#[test]
fn per_baseline_commands_run_each_phase_for_the_named_baseline_only() {
    let names = Names::new(&["um-pb-a", "um-pb-b"]);
    let (a, b) = (names.names[0].as_str(), names.names[1].as_str());
    let device = Device::new(&[]);
    let (ba, bb) = two_baselines(&device, a, b, "um-pb");
    let (s1, s2) = (service("1"), service("2"));
    let um = Um::start(
        &device,
        "um-pb-2",
        &[(a, "2", &[("image", &s2)]), (b, "2", &[("image", &s2)])],
    );
    let downloaded =
        um.command_baseline("DOWNLOAD", &ba, &["DOWNLOAD_SUCCESS", "DOWNLOAD_FAILURE"]);
    assert_eq!(downloaded["payload"]["status"], "DOWNLOAD_SUCCESS");
    assert_eq!(action(&downloaded, a).0, "DOWNLOAD_SUCCESS");
    assert_eq!(action(&downloaded, b).0, "IDENTIFIED");
    assert_eq!(state_of(&format!("{b}.berth-new")), None);

    um.command_baseline("UPDATE", &ba, &["UPDATE_SUCCESS"]);
    assert_eq!(
        state_of(&format!("{a}.berth-old")),
        Some((false, s1.clone()))
    );
    assert_eq!(state_of(b), Some((true, s1.clone())), "b is untouched");

    um.command_baseline("ACTIVATE", &ba, &["ACTIVATION_SUCCESS"]);
    assert_eq!(state_of(a), Some((true, s2.clone())));
    assert_eq!(state_of(b), Some((true, s1.clone())));

    let cleaned = um.command_baseline("CLEANUP", &ba, &["CLEANUP_SUCCESS"]);
    assert_eq!(cleaned["payload"]["baseline"], ba.as_str());
    assert_eq!(state_of(&format!("{a}.berth-old")), None);

    um.command_baseline("DOWNLOAD", &bb, &["DOWNLOAD_SUCCESS"]);
    um.command_baseline("UPDATE", &bb, &["UPDATE_SUCCESS"]);
    um.command_baseline("ACTIVATE", &bb, &["ACTIVATION_SUCCESS"]);
    let completed = um.command_baseline("CLEANUP", &bb, &["COMPLETED", "INCOMPLETE"]);
    assert_eq!(completed["payload"]["status"], "COMPLETED");
    assert_eq!(
        completed["payload"].get("baseline"),
        None,
        "the activity's own status"
    );
    let mut expected = vec![("IDENTIFYING", ""), ("IDENTIFIED", "")];
    for bl in [ba.as_str(), bb.as_str()] {
        expected.extend([
            ("DOWNLOADING", bl),
            ("DOWNLOAD_SUCCESS", bl),
            ("UPDATING", bl),
            ("UPDATE_SUCCESS", bl),
            ("ACTIVATING", bl),
            ("ACTIVATION_SUCCESS", bl),
            ("CLEANUP", bl),
            ("CLEANUP_SUCCESS", bl),
        ]);
    }
    expected.push(("COMPLETED", ""));
    assert_eq!(um.phases_by_baseline(), pairs(&expected));
    assert_eq!(state_of(a), Some((true, s2.clone())));
    assert_eq!(state_of(b), Some((true, s2)));
    assert_eq!(state_of(&format!("{b}.berth-old")), None);
}

#[test]
fn an_out_of_order_command_for_one_baseline_is_refused_while_another_is_further() {
    let names = Names::new(&["um-pbo-a", "um-pbo-b"]);
    let (a, b) = (names.names[0].as_str(), names.names[1].as_str());
    let device = Device::new(&[]);
    let (ba, bb) = two_baselines(&device, a, b, "um-pbo");
    let (s1, s2) = (service("1"), service("2"));
    let um = Um::start(
        &device,
        "um-pbo-2",
        &[(a, "2", &[("image", &s2)]), (b, "2", &[("image", &s2)])],
    );
    um.command_baseline("DOWNLOAD", &ba, &["DOWNLOAD_SUCCESS"]);
    um.command_baseline("UPDATE", &ba, &["UPDATE_SUCCESS"]);
    let refused = um.command_baseline(
        "ACTIVATE",
        &bb,
        &["ACTIVATION_FAILURE", "ACTIVATION_SUCCESS"],
    );
    assert_eq!(
        refused["payload"]["message"],
        "ACTIVATE is possible only after status UPDATE_SUCCESS is reported"
    );
    assert_eq!(refused["payload"]["baseline"], bb.as_str());
    // Every baseline at once while they are at different statuses: no.
    let before = um.feedback().len();
    um.command_for("um-pbo-2", "ACTIVATE", Some("*"));
    let mixed = um.wait_after(before, &["ACTIVATION_FAILURE", "ACTIVATION_SUCCESS"]);
    let words_ = mixed["payload"]["message"].as_str().unwrap_or("");
    assert!(words_.contains("different statuses"), "{mixed}");
    // Neither refusal touched anything.
    assert_eq!(
        state_of(&format!("{a}.berth-old")),
        Some((false, s1.clone()))
    );
    assert_eq!(state_of(b), Some((true, s1)));
    // Once b caught up, the Update Manager's own commands move both.
    um.command_baseline("DOWNLOAD", &bb, &["DOWNLOAD_SUCCESS"]);
    um.command_baseline("UPDATE", &bb, &["UPDATE_SUCCESS"]);
    um.command("ACTIVATE", &["ACTIVATION_SUCCESS"]);
    let end = um.command("CLEANUP", &["COMPLETED", "INCOMPLETE"]);
    assert_eq!(end["payload"]["status"], "COMPLETED", "{end}");
    assert_eq!(state_of(a), Some((true, s2.clone())));
    assert_eq!(state_of(b), Some((true, s2)));
}

#[test]
fn a_failure_in_one_baseline_then_cleanup_restores_every_baseline() {
    let names = Names::new(&["um-pbf-a", "um-pbf-b"]);
    let (a, b) = (names.names[0].as_str(), names.names[1].as_str());
    let device = Device::new(&[]);
    let (ba, bb) = two_baselines(&device, a, b, "um-pbf");
    let (s1, s2) = (service("1"), service("2"));
    let missing = service("no-such-tag");
    let um = Um::start(
        &device,
        "um-pbf-2",
        &[
            (a, "2", &[("image", &s2)]),
            (b, "9", &[("image", &missing)]),
        ],
    );
    um.command_baseline("DOWNLOAD", &ba, &["DOWNLOAD_SUCCESS"]);
    um.command_baseline("UPDATE", &ba, &["UPDATE_SUCCESS"]);
    um.command_baseline("ACTIVATE", &ba, &["ACTIVATION_SUCCESS"]);
    assert_eq!(state_of(a), Some((true, s2)));
    let failed = um.command_baseline("DOWNLOAD", &bb, &["DOWNLOAD_FAILURE", "DOWNLOAD_SUCCESS"]);
    assert_eq!(failed["payload"]["status"], "DOWNLOAD_FAILURE");
    let end = um.command_baseline("CLEANUP", &bb, &["INCOMPLETE", "COMPLETED"]);
    assert_eq!(end["payload"]["status"], "INCOMPLETE", "{end}");
    let tail: Vec<(String, String)> = um
        .phases_by_baseline()
        .into_iter()
        .skip_while(|(s, _)| s != "DOWNLOAD_FAILURE")
        .collect();
    assert_eq!(
        tail,
        pairs(&[
            ("DOWNLOAD_FAILURE", &bb),
            ("ROLLBACK", &bb),
            ("ROLLBACK_SUCCESS", &bb),
            ("CLEANUP_SUCCESS", &bb),
            ("INCOMPLETE", ""),
        ])
    );
    // The activated baseline went back too: the activity is one undo.
    assert_eq!(state_of(a), Some((true, s1.clone())));
    assert_eq!(state_of(b), Some((true, s1)));
    for n in [a, b] {
        assert_eq!(state_of(&format!("{n}.berth-old")), None);
        assert_eq!(state_of(&format!("{n}.berth-new")), None);
    }
}

#[test]
fn berth_killed_between_two_baselines_commands_recovers_at_the_next_start() {
    let names = Names::new(&["um-pbk-a", "um-pbk-b"]);
    let (a, b) = (names.names[0].as_str(), names.names[1].as_str());
    let mut device = Device::new(&[]);
    let (ba, bb) = two_baselines(&device, a, b, "um-pbk");
    let (s1, s2) = (service("1"), service("2"));
    let um = Um::start(
        &device,
        "um-pbk-2",
        &[(a, "2", &[("image", &s2)]), (b, "2", &[("image", &s2)])],
    );
    for (cmd, answer) in [
        ("DOWNLOAD", "DOWNLOAD_SUCCESS"),
        ("UPDATE", "UPDATE_SUCCESS"),
        ("ACTIVATE", "ACTIVATION_SUCCESS"),
        ("CLEANUP", "CLEANUP_SUCCESS"),
    ] {
        um.command_baseline(cmd, &ba, &[answer]);
    }
    um.command_baseline("DOWNLOAD", &bb, &["DOWNLOAD_SUCCESS"]);
    um.command_baseline("UPDATE", &bb, &["UPDATE_SUCCESS"]);
    drop(um);
    device.berth.kill();
    assert_eq!(state_of(b), None, "b's old container is aside");
    let url = device.broker.url();
    device.berth = start_berth(device.state.path(), &url, &[]);
    let um = Um {
        device: &device,
        activity: "um-pbk-2".into(),
    };
    let end = um.wait(&["INCOMPLETE", "INCOMPLETE_INCONSISTENT", "COMPLETED"]);
    assert_eq!(end["payload"]["status"], "INCOMPLETE", "{end}");
    let message = end["payload"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&format!("{a} keep their new version, the rest was undone")),
        "{message}"
    );
    device.berth.wait_for("ready", WAIT);
    // Then the start-up enforcement of the last completed document.
    assert_eq!(state_of(b), Some((true, s1.clone())));
    assert_eq!(state_of(a), Some((true, s1)));
    for n in [a, b] {
        assert_eq!(state_of(&format!("{n}.berth-old")), None);
        assert_eq!(state_of(&format!("{n}.berth-new")), None);
    }
}

#[test]
fn drift_beside_a_waiting_activity_repairs_what_it_does_not_change_and_leaves_its_own_alone() {
    let names = Names::new(&["um-drift-web", "um-drift-keep"]);
    let (web, keep) = (names.names[0].as_str(), names.names[1].as_str());
    let device = Device::new(&["--reconcile-interval", "1h"]);
    let s1 = service("1");
    let keep_config: &[(&str, &str)] = &[("image", &s1), ("restartPolicy", "no")];
    Um::start(
        &device,
        "um-drift-1",
        &[(web, "1", &[("image", &s1)]), (keep, "1", keep_config)],
    )
    .run_to_completion();
    let s2 = service("2");
    // The activity changes web only.
    let um = Um::start(
        &device,
        "um-drift-2",
        &[(web, "2", &[("image", &s2)]), (keep, "1", keep_config)],
    );
    um.command("DOWNLOAD", &["DOWNLOAD_SUCCESS"]);
    um.command("UPDATE", &["UPDATE_SUCCESS"]);
    let before = docker(&["inspect", "--format", "{{.State.StartedAt}}", keep]);
    docker(&["kill", keep]);
    // Repaired while the activity waits for ACTIVATE.
    let deadline = Instant::now() + WAIT;
    while state_of(keep).map(|s| s.0) != Some(true) {
        assert!(
            Instant::now() < deadline,
            "the killed container is not repaired:\n{}",
            device.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(
        docker(&["inspect", "--format", "{{.State.StartedAt}}", keep]),
        before,
        "started again"
    );
    assert!(device
        .log()
        .contains("correcting drift beside the orchestrated activity"));
    // The activity's own container stays as UPDATE left it.
    assert_eq!(state_of(web), None);
    assert_eq!(
        state_of(&format!("{web}.berth-old")),
        Some((false, s1.clone()))
    );
    // And currentstate/get is answered meanwhile.
    publish(
        &device.broker,
        "containersupdate/currentstate/get",
        r#"{"activityId":"um-drift-get"}"#,
    );
    device
        .sub
        .wait_for("the current state for um-drift-get", WAIT, |msgs| {
            msgs.iter().any(|(t, p)| {
                t == "containersupdate/currentstate" && p.contains(r#""activityId":"um-drift-get""#)
            })
        });
    // The activity goes on, untouched.
    um.command("ACTIVATE", &["ACTIVATION_SUCCESS"]);
    um.command("CLEANUP", &["COMPLETED"]);
    assert_eq!(um.phases(), words(FULL));
    assert_eq!(state_of(web), Some((true, s2)));
    assert_eq!(state_of(keep), Some((true, s1)));
}
