//! Issue 20: secrets never leak. A document with secret env values and a
//! URL password in a command argument is applied and then changed, with
//! berth's CLI and with the agent on a broker, logs at trace level and a
//! umask of 022; no output, log, message or state file may hold a secret,
//! except the persisted desired-state document, deliberately: the agent
//! needs the values to re-create containers after a power loss, so that
//! file holds them, mode 0600 in a 0700 directory; and the activity history,
//! which keeps the documents applied for `berth rollback` (and shows them
//! redacted).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tempfile::TempDir;

use crate::broker::{publish, Broker, Subscriber};
use crate::cli_apply::Device;
use crate::util::{berth, desired_state, docker, image, run, temp_file, text, unique, Background};

const WAIT: Duration = Duration::from_secs(90);
const FEEDBACK: &str = "containersupdate/desiredstatefeedback";
const CURRENT: &str = "containersupdate/currentstate";
const DESIRED: &str = "containersupdate/desiredstate";
const GET: &str = "containersupdate/currentstate/get";

/// The secret strings of one test, unique to it, and the documents that
/// carry them (version 2 changes every secret).
struct Secrets {
    password: String,
    token: String,
    url_password: String,
}

impl Secrets {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let tag = format!("{}x{nanos}", std::process::id());
        Self {
            password: format!("hunter2-{tag}"),
            token: format!("t0k3n-{tag}"),
            url_password: format!("s3cr3t-{tag}"),
        }
    }

    /// Every secret string; version 2's values start with version 1's.
    fn all(&self) -> [&str; 3] {
        [&self.password, &self.token, &self.url_password]
    }

    /// The config of one component at `version` (1 or 2).
    fn config(&self, version: u32) -> Vec<(String, String)> {
        let suffix = if version == 1 { "" } else { "-v2" };
        vec![
            ("image".into(), image("service", "1")),
            (
                "env".into(),
                format!("DB_PASSWORD={}{suffix}", self.password),
            ),
            ("env".into(), format!("API_TOKEN={}{suffix}", self.token)),
            ("env".into(), format!("LOG_LEVEL=info{suffix}")),
            ("cmd".into(), "/bin/service".into()),
            (
                "cmd".into(),
                format!("postgres://app:{}{suffix}@db/x", self.url_password),
            ),
        ]
    }

    fn document(&self, activity: &str, name: &str, version: u32) -> String {
        let config = self.config(version);
        let config: Vec<(&str, &str)> = config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        desired_state(activity, &[(name, "1", &config)])
    }

    /// Fails naming `what` when `output` holds any secret.
    #[track_caller]
    fn assert_none_in(&self, what: &str, output: &str) {
        for secret in self.all() {
            assert!(!output.contains(secret), "{what} leaks {secret}:\n{output}");
        }
    }

    fn holds_any(&self, bytes: &[u8]) -> bool {
        let text = String::from_utf8_lossy(bytes);
        self.all().iter().any(|s| text.contains(s))
    }
}

/// `cmd` run by `sh` after `umask 022`, as from a root shell: berth must
/// set its own modes.
fn under_umask_022(cmd: &Command) -> Command {
    let mut sh = Command::new("sh");
    sh.args(["-c", "umask 022; exec \"$@\"", "sh"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        sh.current_dir(dir);
    }
    sh
}

/// Logs at trace level, for berth and every library, whichever variable
/// is read.
fn at_trace(cmd: &mut Command) -> &mut Command {
    cmd.env("BERTH_LOG", "trace").env("RUST_LOG", "trace")
}

fn both(out: &Output) -> String {
    format!("{}\n{}", text(&out.stdout), text(&out.stderr))
}

/// The state directory is 0700, each file 0600, and the persisted document
/// and the activity history (which keeps the documents applied, for
/// `berth rollback`) are the only files holding a secret.
#[track_caller]
fn assert_state_dir_private(dir: &Path, secrets: &Secrets) {
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(dir), 0o700, "state directory mode");
    let mut holding = Vec::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(mode(&path), 0o600, "{name} mode");
        if secrets.holds_any(&std::fs::read(&path).unwrap()) {
            holding.push(name.clone());
        }
        files.push(name);
    }
    holding.sort();
    assert_eq!(
        holding,
        ["desired.json", "history.json"],
        "only the persisted document and the history may hold secrets; files: {files:?}"
    );
}

fn env_of(name: &str) -> Vec<String> {
    let out = docker(&["inspect", "--format", "{{json .Config.Env}}", name]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn secrets_never_reach_plan_apply_state_or_trace_logs_and_only_the_persisted_document_on_disk() {
    let secrets = Secrets::new();
    let device = Device::new("secrets");
    let name = device.name("db");
    let files = TempDir::new().unwrap();
    let v1 = temp_file(
        files.path(),
        "v1.json",
        &secrets.document(&format!("{name}-v1"), &name, 1),
    );
    let v2 = temp_file(
        files.path(),
        "v2.json",
        &secrets.document(&format!("{name}-v2"), &name, 2),
    );

    let mut apply = device.apply_cmd(&v1, &[]);
    at_trace(&mut apply);
    let out = run(&mut under_umask_022(&apply));
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    secrets.assert_none_in("apply (v1) at trace level", &both(&out));
    // The values did reach the container: berth hid them, not lost them.
    assert!(env_of(&name).contains(&format!("DB_PASSWORD={}", secrets.password)));

    for (what, args) in [
        ("plan", vec!["plan"]),
        ("plan --json", vec!["plan", "--json"]),
    ] {
        let mut cmd = device.berth_cmd(args[0], &args[1..]);
        cmd.arg(&v2);
        let out = run(at_trace(&mut cmd));
        assert_eq!(out.status.code(), Some(0), "{what}: {}", both(&out));
        secrets.assert_none_in(what, &both(&out));
        assert!(
            text(&out.stdout).contains("(sensitive value changed)"),
            "{what} says a secret changed:\n{}",
            text(&out.stdout)
        );
    }
    let mut dry_text = device.berth_cmd("apply", &["--dry-run"]);
    dry_text.arg(&v2);
    for (what, mut cmd) in [
        (
            "apply --dry-run --json",
            device.apply_cmd(&v2, &["--dry-run"]),
        ),
        ("apply --dry-run", dry_text),
    ] {
        let out = run(at_trace(&mut cmd));
        assert_eq!(out.status.code(), Some(0), "{what}: {}", both(&out));
        secrets.assert_none_in(what, &both(&out));
    }

    let out = run(at_trace(&mut under_umask_022(&device.apply_cmd(&v2, &[]))));
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    secrets.assert_none_in("apply (v2) at trace level", &both(&out));
    assert!(env_of(&name).contains(&format!("DB_PASSWORD={}-v2", secrets.password)));

    // `berth state` takes no --state-dir: only the device's environment.
    let state = device.berth_cmd("state", &[]);
    let mut state_cmd = berth();
    state_cmd
        .args(["state", "--json"])
        .envs(state.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    let out = run(at_trace(&mut state_cmd));
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    secrets.assert_none_in("state --json", &both(&out));
    assert!(text(&out.stdout).contains("DB_PASSWORD=<redacted>"));

    // The history keeps the documents applied; it shows them redacted.
    for json in [true, false] {
        let args: &[&str] = if json { &["--json"] } else { &[] };
        let out = run(at_trace(&mut device.berth_cmd("history", args)));
        assert_eq!(out.status.code(), Some(0), "{}", both(&out));
        secrets.assert_none_in("history", &both(&out));
    }

    assert_state_dir_private(device.state_dir(), &secrets);
}

#[test]
fn a_refused_document_and_a_panic_never_quote_a_secret() {
    let secrets = Secrets::new();
    let files = TempDir::new().unwrap();
    let bad = temp_file(
        files.path(),
        "bad.json",
        &desired_state(
            "bad",
            &[(
                &unique("bad"),
                "1",
                &[
                    ("image", &image("service", "1")),
                    ("env", &format!("1DB_PASSWORD={}", secrets.password)),
                    ("env", &format!("={}", secrets.token)),
                    ("env", &format!("A={}", secrets.url_password)),
                    ("env", &format!("A={}-other", secrets.url_password)),
                ],
            )],
        ),
    );
    let out = run(berth().arg("validate").arg(&bad));
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    secrets.assert_none_in("validate", &both(&out));
    let out = run(berth().args(["validate", "--json"]).arg(&bad));
    secrets.assert_none_in("validate --json", &both(&out));

    let out = run(berth().arg("validate").arg(&bad).env(
        "BERTH_TEST_PANIC",
        format!(
            "boom: DB_PASSWORD={} postgres://u:{}@db/x",
            secrets.password, secrets.url_password
        ),
    ));
    assert_eq!(out.status.code(), Some(101), "{}", both(&out));
    secrets.assert_none_in("a panic", &both(&out));
    assert!(text(&out.stderr).contains("boom: DB_PASSWORD=<redacted>"));
}

/// Waits until a feedback message of `activity` reaches a final status.
fn final_status(sub: &Subscriber, activity: &str, agent: &Background) -> String {
    let finals = ["COMPLETED", "INCOMPLETE", "IDENTIFICATION_FAILED"];
    let what = format!(
        "final feedback of {activity}; berth log:\n{}",
        agent.stderr()
    );
    sub.wait_for(&what, WAIT, |msgs| {
        msgs.iter().any(|(t, p)| {
            t.ends_with(FEEDBACK)
                && serde_json::from_str::<Value>(p).is_ok_and(|f| {
                    f["activityId"] == activity
                        && finals.contains(&f["payload"]["status"].as_str().unwrap_or(""))
                })
        })
    });
    sub.json(FEEDBACK)
        .into_iter()
        .filter(|f| f["activityId"] == activity)
        .filter_map(|f| f["payload"]["status"].as_str().map(str::to_string))
        .rfind(|s| finals.contains(&s.as_str()))
        .unwrap_or_default()
}

#[test]
fn secrets_never_reach_the_broker_or_the_agents_trace_log() {
    let secrets = Secrets::new();
    let state = TempDir::new().unwrap();
    let state_dir = state.path().join("berth");
    let name = unique("secrets-agent");
    let _cleanup = [
        crate::util::Cleanup(name.clone()),
        crate::util::Cleanup(format!("{name}.berth-new")),
        crate::util::Cleanup(format!("{name}.berth-old")),
    ];
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "#");
    let mut cmd = berth();
    cmd.args(["run", "--min-ready", "500ms", "--state-dir"])
        .arg(&state_dir)
        .args(["--mqtt-url", &broker.url(), "--log-level", "trace"]);
    at_trace(&mut cmd);
    let mut agent = Background::spawn(under_umask_022(&cmd));
    agent.wait_for("connected to the MQTT broker", WAIT);

    for version in [1, 2] {
        let activity = format!("{name}-v{version}");
        publish(
            &broker,
            DESIRED,
            &secrets.document(&activity, &name, version),
        );
        assert_eq!(final_status(&sub, &activity, &agent), "COMPLETED");
    }
    let deadline = Instant::now() + WAIT;
    while !env_of(&name).contains(&format!("DB_PASSWORD={}-v2", secrets.password)) {
        assert!(Instant::now() < deadline, "v2 not applied");
        std::thread::sleep(Duration::from_millis(200));
    }
    let get = format!("{name}-get");
    publish(
        &broker,
        GET,
        &format!(r#"{{"activityId":"{get}","payload":null}}"#),
    );
    sub.wait_for("the current state", WAIT, |msgs| {
        msgs.iter()
            .any(|(t, p)| t == CURRENT && p.contains(&get) && p.contains(&name))
    });
    assert!(agent.terminate().success(), "{}", agent.stderr());

    // What berth sent: feedback with reasons (env and cmd changed) and the
    // inventory; the documents published to it hold the secrets, of course.
    let sent: Vec<String> = sub
        .messages()
        .into_iter()
        .filter(|(t, _)| t != DESIRED)
        .map(|(t, p)| format!("{t} {p}"))
        .collect();
    assert!(sent.iter().any(|m| m.contains("env DB_PASSWORD changed")));
    secrets.assert_none_in("messages berth published", &sent.join("\n"));
    secrets.assert_none_in("the agent's trace log", &agent.stderr());
    assert_state_dir_private(&state_dir, &secrets);
}
