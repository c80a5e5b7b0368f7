//! `berth apply` against the real engine: convergence, idempotence, in-place
//! updates, data across recreates, download failures, rollback, recovery
//! after a kill, the state-directory lock, dry runs, scope and feedback.
//!
//! Every test is a small "device": its own container-name prefix, its own
//! state directory, its own berth instance (`BERTH_INSTANCE`, so berths of
//! other runs leave its containers alone) and its own [`EngineView`], so the
//! berth it runs lists (and therefore plans, removes and recovers) only that
//! test's containers. Without the view, `--scope all` would remove every
//! unmanaged container of concurrent tests. Everything else berth does goes
//! to the real engine unchanged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::util::{
    berth, desired_state, docker, image, repo_path, run, temp_file, text, unique, Background,
    Component, EngineView,
};

/// One test's device: a name prefix, a state directory, a place for
/// documents and a view of the engine with only its containers. Dropping it
/// removes every container with the prefix (including `.berth-old` and
/// `.berth-new` ones, with their anonymous volumes), then the named volumes
/// it handed out.
pub(crate) struct Device {
    prefix: String,
    view: EngineView,
    state: TempDir,
    files: TempDir,
    volumes: Vec<String>,
}

impl Device {
    pub(crate) fn new(tag: &str) -> Self {
        let prefix = unique(&format!("apply-{tag}-"));
        Self {
            view: EngineView::new(&prefix),
            prefix,
            state: tempfile::tempdir().expect("state dir"),
            files: tempfile::tempdir().expect("documents dir"),
            volumes: Vec::new(),
        }
    }

    /// A container name of this device.
    pub(crate) fn name(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// A named volume of this device, removed when it drops.
    pub(crate) fn volume(&mut self, short: &str) -> String {
        let name = self.name(short);
        self.volumes.push(name.clone());
        name
    }

    /// Writes a document (activity `<prefix><file>`) and returns its path.
    pub(crate) fn doc(&self, file: &str, components: &[Component]) -> PathBuf {
        let activity = format!("{}{file}", self.prefix);
        temp_file(
            self.files.path(),
            &format!("{file}.json"),
            &desired_state(&activity, components),
        )
    }

    /// `berth apply --json --min-ready 1s --state-dir <mine> EXTRA... DOC`,
    /// seeing only this device's containers.
    pub(crate) fn apply_cmd(&self, doc: &Path, extra: &[&str]) -> Command {
        self.apply_cmd_in(self.state.path(), doc, extra)
    }

    /// [`Self::apply_cmd`] with another state directory.
    pub(crate) fn apply_cmd_in(&self, state: &Path, doc: &Path, extra: &[&str]) -> Command {
        let mut cmd = berth();
        cmd.env("DOCKER_HOST", self.view.host())
            .env("BERTH_INSTANCE", &self.prefix)
            .env_remove("BERTH_TEST_PAUSE_AT")
            .env_remove("BERTH_TEST_FAULTS")
            .args(["apply", "--json", "--min-ready", "1s", "--state-dir"])
            .arg(state)
            .args(extra)
            .arg(doc);
        cmd
    }

    /// `berth ARGS...` as this device: its engine view, instance and state
    /// directory (`--state-dir` is added after the subcommand).
    pub(crate) fn berth_cmd(&self, subcommand: &str, args: &[&str]) -> Command {
        let mut cmd = berth();
        cmd.env("DOCKER_HOST", self.view.host())
            .env("BERTH_INSTANCE", &self.prefix)
            .env_remove("BERTH_TEST_PAUSE_AT")
            .env_remove("BERTH_TEST_FAULTS")
            .arg(subcommand);
        if subcommand != "plan" {
            cmd.arg("--state-dir").arg(self.state.path());
        }
        cmd.args(args);
        cmd
    }

    /// The state directory.
    pub(crate) fn state_dir(&self) -> &Path {
        self.state.path()
    }

    pub(crate) fn apply(&self, doc: &Path, extra: &[&str]) -> Applied {
        Applied::from(run(&mut self.apply_cmd(doc, extra)))
    }

    /// An apply that must complete.
    pub(crate) fn apply_ok(&self, doc: &Path, extra: &[&str]) -> Applied {
        let a = self.apply(doc, extra);
        assert_eq!(a.code(), Some(0), "apply failed\n{a}");
        assert_eq!(a.last_status(), "COMPLETED", "{a}");
        a
    }

    /// Every container on the engine with this device's prefix.
    pub(crate) fn containers(&self) -> Vec<String> {
        let mut names: Vec<String> = docker(&["ps", "-a", "--format", "{{.Names}}"])
            .lines()
            .filter(|n| n.starts_with(&self.prefix))
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// Containers left under an activity's temporary names.
    pub(crate) fn leftovers(&self) -> Vec<String> {
        self.containers()
            .into_iter()
            .filter(|n| n.contains(".berth-old") || n.contains(".berth-new"))
            .collect()
    }

    /// `docker run -d` of an unlabelled container of this device.
    pub(crate) fn hand_made(&self, short: &str, image_ref: &str) -> String {
        let name = self.name(short);
        docker(&["run", "-d", "--name", &name, image_ref]);
        name
    }

    /// Files and directories in the state directory.
    pub(crate) fn state_files(&self) -> Vec<String> {
        std::fs::read_dir(self.state.path())
            .expect("state dir readable")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // Never a panic here: one while a failed test unwinds aborts the
        // whole test binary (seen when dockerd stalled under load).
        let names: Vec<String> = Command::new("docker")
            .args(["ps", "-a", "--format", "{{.Names}}"])
            .output()
            .map(|o| {
                text(&o.stdout)
                    .lines()
                    .filter(|n| n.starts_with(&self.prefix))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        // A recreated container mounts the anonymous volume it inherited by
        // name, so `rm -v` leaves it: remove every anonymous volume the
        // device's containers use, after the containers.
        let mut anonymous = Vec::new();
        for name in &names {
            if let Some(mounts) = try_inspect(name).and_then(|c| c["Mounts"].as_array().cloned()) {
                anonymous.extend(mounts.iter().filter_map(|m| {
                    m["Name"]
                        .as_str()
                        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                        .map(str::to_string)
                }));
            }
        }
        if !names.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(names.iter().map(String::as_str));
            let _ = Command::new("docker").args(&args).output();
        }
        for v in anonymous.iter().chain(&self.volumes) {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
    }
}

/// What one apply printed: its feedback messages and its exit.
pub(crate) struct Applied {
    out: Output,
    feedback: Vec<Value>,
}

impl From<Output> for Applied {
    fn from(out: Output) -> Self {
        let feedback = text(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!(
                        "a stdout line is not JSON ({e}): {l}\nstdout: {}\nstderr: {}",
                        text(&out.stdout),
                        text(&out.stderr)
                    )
                })
            })
            .collect();
        Self { out, feedback }
    }
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\nstatuses: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.out.status.code(),
            self.statuses(),
            text(&self.out.stdout),
            text(&self.out.stderr)
        )
    }
}

impl Applied {
    pub(crate) fn code(&self) -> Option<i32> {
        self.out.status.code()
    }

    pub(crate) fn stderr(&self) -> String {
        text(&self.out.stderr)
    }

    /// The overall status of every message, in order.
    pub(crate) fn statuses(&self) -> Vec<String> {
        self.feedback
            .iter()
            .map(|f| f["payload"]["status"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    pub(crate) fn last_status(&self) -> String {
        self.statuses().last().cloned().unwrap_or_default()
    }

    /// The first message with this overall status.
    pub(crate) fn message(&self, status: &str) -> &Value {
        self.feedback
            .iter()
            .find(|f| f["payload"]["status"] == status)
            .unwrap_or_else(|| panic!("no {status} message\n{self}"))
    }

    /// Asserts that these statuses occur in this order (others may come between).
    pub(crate) fn assert_sequence(&self, wanted: &[&str]) {
        let statuses = self.statuses();
        let mut rest = statuses.iter();
        for w in wanted {
            assert!(
                rest.any(|s| s == w),
                "{w} missing or out of order in {wanted:?}\n{self}"
            );
        }
    }

    /// Whether some message reports this container's action with this status.
    pub(crate) fn action_reached(&self, name: &str, status: &str) -> bool {
        let id = format!("containers:{name}");
        self.feedback.iter().any(|f| {
            f["payload"]["actions"].as_array().is_some_and(|actions| {
                actions
                    .iter()
                    .any(|a| a["component"]["id"] == id.as_str() && a["status"] == status)
            })
        })
    }
}

/// `docker inspect` of one container, if it exists.
pub(crate) fn try_inspect(name: &str) -> Option<Value> {
    let out = Command::new("docker")
        .args(["inspect", name])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    out.status.success().then(|| v[0].clone())
}

/// `docker inspect` of one container.
pub(crate) fn inspect(name: &str) -> Value {
    let v: Value = serde_json::from_str(&docker(&["inspect", name])).expect("inspect is JSON");
    v[0].clone()
}

/// A container's identity for "untouched" checks: id and StartedAt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) id: String,
    started_at: String,
}

pub(crate) fn identity(name: &str) -> Identity {
    let c = inspect(name);
    Identity {
        id: c["Id"].as_str().expect("Id").to_string(),
        started_at: c["State"]["StartedAt"]
            .as_str()
            .expect("StartedAt")
            .to_string(),
    }
}

pub(crate) fn running(name: &str) -> bool {
    inspect(name)["State"]["Running"] == true
}

/// Asserts the container still has this identity and runs.
pub(crate) fn assert_untouched(name: &str, before: &Identity, context: &dyn std::fmt::Display) {
    assert_eq!(&identity(name), before, "{name} was touched\n{context}");
    assert!(running(name), "{name} is not running\n{context}");
}

/// The reference a container was made from (see [`crate::util::created_from`]).
pub(crate) fn config_image(name: &str) -> String {
    crate::util::created_from(&inspect(name))
}

pub(crate) fn env_of(name: &str) -> Vec<String> {
    inspect(name)["Config"]["Env"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `docker exec NAME sh -c SCRIPT`, its stdout.
pub(crate) fn exec(name: &str, script: &str) -> String {
    docker(&["exec", name, "sh", "-c", script])
}

/// The name of the volume mounted at `destination`.
pub(crate) fn volume_at(name: &str, destination: &str) -> String {
    inspect(name)["Mounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["Destination"] == destination))
        .and_then(|m| m["Name"].as_str())
        .unwrap_or_else(|| panic!("{name} has no volume at {destination}"))
        .to_string()
}

pub(crate) fn volume_exists(volume: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", volume])
        .output()
        .expect("docker runs")
        .status
        .success()
}

/// Starts an apply that pauses at `point` (BERTH_TEST_PAUSE_AT) and waits
/// until it says so.
pub(crate) fn paused_apply(device: &Device, doc: &Path, point: &str) -> Background {
    let mut cmd = device.apply_cmd(doc, &[]);
    cmd.env("BERTH_TEST_PAUSE_AT", point);
    let mut bg = Background::spawn(cmd);
    bg.wait_for(&format!("pausing during {point}"), Duration::from_secs(60));
    bg
}

#[test]
fn fresh_device_gets_every_container_and_a_second_apply_changes_nothing() {
    let device = Device::new("fresh");
    let names = [device.name("a"), device.name("b"), device.name("c")];
    let service_1 = image("service", "1");
    let doc = device.doc(
        "fresh",
        &[
            (&names[0], "1", &[("image", &service_1), ("env", "WHO=a")]),
            (&names[1], "1", &[("image", &service_1), ("env", "WHO=b")]),
            (&names[2], "1", &[("image", &service_1), ("env", "WHO=c")]),
        ],
    );
    let first = device.apply_ok(&doc, &[]);
    for (name, who) in names.iter().zip(["a", "b", "c"]) {
        assert!(running(name), "{name} is not running\n{first}");
        assert!(
            env_of(name).contains(&format!("WHO={who}")),
            "{name}: {:?}",
            env_of(name)
        );
    }
    let before: Vec<Identity> = names.iter().map(|n| identity(n)).collect();

    let second = device.apply_ok(&doc, &[]);
    assert_eq!(
        second.statuses(),
        ["IDENTIFYING", "IDENTIFIED", "COMPLETED"],
        "{second}"
    );
    for (name, was) in names.iter().zip(&before) {
        assert_untouched(name, was, &second);
    }
    assert_eq!(device.containers().len(), 3, "{:?}", device.containers());
}

/// Regression (issue 25): a no-op listed the engine three times (recovery's
/// sweep, the observation, the history's "after"); it lists it once.
#[test]
fn a_second_apply_that_changes_nothing_lists_the_engine_once() {
    let device = Device::new("onelist");
    let name = device.name("a");
    let doc = device.doc(
        "onelist",
        &[(&name, "1", &[("image", &image("service", "1"))])],
    );
    device.apply_ok(&doc, &[]);
    let mut cmd = device.apply_cmd(&doc, &[]);
    cmd.env("BERTH_LOG", "berth=debug");
    let again = Applied::from(run(&mut cmd));
    assert_eq!(again.last_status(), "COMPLETED", "{again}");
    let lists = again
        .stderr()
        .matches("listed the engine's containers")
        .count();
    assert_eq!(lists, 1, "{}", again.stderr());
}

#[test]
fn changed_env_and_image_recreate_exactly_those_two_containers() {
    let device = Device::new("change");
    let (env_changed, image_changed, kept) = (
        device.name("env"),
        device.name("image"),
        device.name("kept"),
    );
    let (service_1, service_2) = (image("service", "1"), image("service", "2"));
    let before_doc = device.doc(
        "before",
        &[
            (
                &env_changed,
                "1",
                &[("image", &service_1), ("env", "FOO=1")],
            ),
            (&image_changed, "1", &[("image", &service_1)]),
            (&kept, "1", &[("image", &service_1), ("env", "FOO=1")]),
        ],
    );
    device.apply_ok(&before_doc, &[]);
    let before: Vec<Identity> = [&env_changed, &image_changed, &kept]
        .iter()
        .map(|n| identity(n))
        .collect();

    let after_doc = device.doc(
        "after",
        &[
            (
                &env_changed,
                "1",
                &[("image", &service_1), ("env", "FOO=2")],
            ),
            (&image_changed, "2", &[("image", &service_2)]),
            (&kept, "1", &[("image", &service_1), ("env", "FOO=1")]),
        ],
    );
    let applied = device.apply_ok(&after_doc, &[]);
    assert_ne!(identity(&env_changed).id, before[0].id, "{applied}");
    assert_ne!(identity(&image_changed).id, before[1].id, "{applied}");
    assert_untouched(&kept, &before[2], &applied);

    assert!(
        running(&env_changed) && running(&image_changed),
        "{applied}"
    );
    let env = env_of(&env_changed);
    assert!(
        env.contains(&"FOO=2".to_string()) && !env.contains(&"FOO=1".to_string()),
        "{env:?}"
    );
    assert_eq!(config_image(&image_changed), service_2);
    assert_eq!(exec(&image_changed, "cat /tmp/version"), "2");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
}

#[test]
fn memory_change_is_applied_in_place_without_a_restart() {
    let device = Device::new("memory");
    let name = device.name("svc");
    let service_1 = image("service", "1");
    let small = device.doc(
        "small",
        &[(&name, "1", &[("image", &service_1), ("memory", "64M")])],
    );
    device.apply_ok(&small, &[]);
    assert_eq!(inspect(&name)["HostConfig"]["Memory"], 64 * 1024 * 1024);
    let before = identity(&name);

    let large = device.doc(
        "large",
        &[(&name, "1", &[("image", &service_1), ("memory", "128M")])],
    );
    let applied = device.apply_ok(&large, &[]);
    assert_untouched(&name, &before, &applied);
    assert_eq!(
        inspect(&name)["HostConfig"]["Memory"],
        128 * 1024 * 1024,
        "{applied}"
    );
    assert!(applied.action_reached(&name, "UPDATE_SUCCESS"), "{applied}");
}

#[test]
fn data_in_named_bind_and_anonymous_volumes_survives_a_recreate() {
    let mut device = Device::new("data");
    let name = device.name("store");
    let named = device.volume("vol");
    let bound = tempfile::tempdir().expect("bind dir");
    let volume_1 = image("volume", "1");
    let mount = format!("{}:/bound", bound.path().display());
    let volume = format!("{named}:/named");
    let doc = |file: &str, v: &str| {
        let env = format!("V={v}");
        device.doc(
            file,
            &[(
                &name,
                "1",
                &[
                    ("image", &volume_1),
                    ("volume", &volume),
                    ("mount", &mount),
                    ("env", &env),
                ],
            )],
        )
    };
    let first = doc("first", "1");
    let second = doc("second", "2");
    device.apply_ok(&first, &[]);
    for dir in ["/named", "/bound", "/data"] {
        exec(&name, &format!("echo x > {dir}/f"));
    }
    let anonymous = volume_at(&name, "/data");
    let before = identity(&name);

    let applied = device.apply_ok(&second, &[]);
    assert_ne!(identity(&name).id, before.id, "not recreated\n{applied}");
    assert!(env_of(&name).contains(&"V=2".to_string()));
    for dir in ["/named", "/bound", "/data"] {
        assert_eq!(
            exec(&name, &format!("cat {dir}/f")),
            "x",
            "{dir}/f after the recreate"
        );
    }
    assert_eq!(volume_at(&name, "/named"), named);
    assert_eq!(
        volume_at(&name, "/data"),
        anonymous,
        "the anonymous volume was not inherited"
    );
    assert!(volume_exists(&named), "named volume {named} was removed");
    assert!(
        volume_exists(&anonymous),
        "anonymous volume {anonymous} was removed"
    );
}

#[test]
fn image_that_does_not_exist_fails_the_download_and_changes_nothing() {
    let device = Device::new("nope");
    let (broken, other) = (device.name("broken"), device.name("other"));
    let service_1 = image("service", "1");
    let before_doc = device.doc(
        "before",
        &[
            (&broken, "1", &[("image", &service_1)]),
            (&other, "1", &[("image", &service_1), ("env", "FOO=1")]),
        ],
    );
    device.apply_ok(&before_doc, &[]);
    let before = [identity(&broken), identity(&other)];

    let nope = image("service", "nope");
    let after_doc = device.doc(
        "after",
        &[
            (&broken, "2", &[("image", &nope)]),
            // Would be recreated, but nothing happens before every image is there.
            (&other, "1", &[("image", &service_1), ("env", "FOO=2")]),
        ],
    );
    let applied = device.apply(&after_doc, &[]);
    assert_eq!(applied.code(), Some(1), "{applied}");
    let failure = applied.message("DOWNLOAD_FAILURE");
    let message = failure["payload"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("berth-test/service:nope") && message.contains("not found"),
        "{message}\n{applied}"
    );
    assert_eq!(applied.last_status(), "INCOMPLETE", "{applied}");
    assert_untouched(&broken, &before[0], &applied);
    assert_untouched(&other, &before[1], &applied);
    assert!(env_of(&other).contains(&"FOO=1".to_string()));
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
}

/// Sets up `name` on service:1 with a file in its named volume, replaces it
/// with `replacement`, and checks that the activity rolled back: the old
/// container runs again under its name, with its data, and nothing else of
/// the activity is left.
fn assert_failed_replacement_rolls_back(tag: &str, replacement: &str, extra: &[&str]) {
    let mut device = Device::new(tag);
    let name = device.name("svc");
    let volume = device.volume("vol");
    let mount = format!("{volume}:/named");
    let service_1 = image("service", "1");
    let before_doc = device.doc(
        "before",
        &[(&name, "1", &[("image", &service_1), ("volume", &mount)])],
    );
    device.apply_ok(&before_doc, &[]);
    exec(&name, "echo kept > /named/f");
    let before = identity(&name);

    let after_doc = device.doc(
        "after",
        &[(&name, "2", &[("image", replacement), ("volume", &mount)])],
    );
    let applied = device.apply(&after_doc, extra);
    assert_eq!(applied.code(), Some(1), "{applied}");
    applied.assert_sequence(&[
        "ACTIVATION_FAILURE",
        "ROLLBACK",
        "ROLLBACK_SUCCESS",
        "INCOMPLETE",
    ]);
    assert_eq!(applied.last_status(), "INCOMPLETE", "{applied}");
    assert!(
        applied.action_reached(&name, "ACTIVATION_FAILURE"),
        "{applied}"
    );
    let now = identity(&name);
    assert_eq!(
        now.id, before.id,
        "a different container took the name\n{applied}"
    );
    assert!(running(&name), "{name} is not running again\n{applied}");
    assert_eq!(config_image(&name), service_1);
    assert_eq!(exec(&name, "cat /named/f"), "kept");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert_eq!(device.containers(), [name.as_str()]);
}

#[test]
fn new_version_that_exits_at_once_is_rolled_back() {
    assert_failed_replacement_rolls_back("crash", &image("crash", "1"), &[]);
}

#[test]
fn new_version_that_never_becomes_healthy_is_rolled_back() {
    assert_failed_replacement_rolls_back(
        "unhealthy",
        &image("unhealthy", "1"),
        &["--ready-margin", "2s"],
    );
}

#[test]
fn activity_rollback_also_restores_a_container_that_had_succeeded() {
    let device = Device::new("activity");
    let (first, second) = (device.name("first"), device.name("second"));
    let service_1 = image("service", "1");
    let before_doc = device.doc(
        "before",
        &[
            (&first, "1", &[("image", &service_1), ("env", "FOO=1")]),
            (&second, "1", &[("image", &service_1)]),
        ],
    );
    device.apply_ok(&before_doc, &[]);
    let before = [identity(&first), identity(&second)];

    let service_2 = image("service", "2");
    let crash_1 = image("crash", "1");
    let after_doc = device.doc(
        "after",
        &[
            (&first, "2", &[("image", &service_2), ("env", "FOO=2")]),
            (&second, "2", &[("image", &crash_1)]),
        ],
    );
    let applied = device.apply(&after_doc, &["--rollback", "activity"]);
    assert_eq!(applied.code(), Some(1), "{applied}");
    // The first really was replaced and passed its readiness gate; the
    // activity failed because of the second.
    assert!(
        applied.action_reached(&first, "ACTIVATION_SUCCESS"),
        "{applied}"
    );
    assert!(
        applied.action_reached(&second, "ACTIVATION_FAILURE"),
        "{applied}"
    );
    applied.assert_sequence(&["ROLLBACK", "ROLLBACK_SUCCESS", "INCOMPLETE"]);
    for (name, was) in [&first, &second].iter().zip(&before) {
        assert_eq!(identity(name).id, was.id, "{name} not restored\n{applied}");
        assert!(running(name), "{name} is not running\n{applied}");
        assert_eq!(config_image(name), service_1, "{name}");
    }
    assert!(env_of(&first).contains(&"FOO=1".to_string()));
    assert_eq!(exec(&first, "cat /tmp/version"), "1");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
}

/// Kills an apply of service:1 -> service:2 at `point`, then applies the
/// same document again: it must recover and complete.
fn assert_kill_then_reapply_completes(tag: &str, point: &str) {
    let device = Device::new(tag);
    let name = device.name("svc");
    let (service_1, service_2) = (image("service", "1"), image("service", "2"));
    let v1 = device.doc("v1", &[(&name, "1", &[("image", &service_1)])]);
    device.apply_ok(&v1, &[]);
    let v2 = device.doc("v2", &[(&name, "2", &[("image", &service_2)])]);

    let original = identity(&name);
    let mut paused = paused_apply(&device, &v2, point);
    assert!(
        device.containers().contains(&format!("{name}.berth-old")),
        "no {name}.berth-old while paused during {point}: {:?}",
        device.containers()
    );
    if point == "activating" {
        // The new container has taken the name and runs.
        assert_ne!(identity(&name).id, original.id);
        assert_eq!(config_image(&name), service_2);
    }
    paused.kill();

    let applied = device.apply_ok(&v2, &[]);
    assert!(
        applied.stderr().contains("berth: recovered:"),
        "no recovery reported\n{applied}"
    );
    assert!(running(&name), "{applied}");
    assert_eq!(config_image(&name), service_2, "{applied}");
    assert_eq!(exec(&name, "cat /tmp/version"), "2");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert_eq!(device.containers(), [name.as_str()], "{applied}");
}

#[test]
fn apply_after_a_kill_during_updating_recovers_and_completes() {
    assert_kill_then_reapply_completes("kill-upd", "updating");
}

#[test]
fn apply_after_a_kill_during_activating_recovers_and_completes() {
    assert_kill_then_reapply_completes("kill-act", "activating");
}

/// Kills an apply of service:1 -> service:2 at `point`, then applies the
/// original document: the original container must run again under its name.
fn assert_kill_then_original_restores(tag: &str, point: &str) {
    let device = Device::new(tag);
    let name = device.name("svc");
    let (service_1, service_2) = (image("service", "1"), image("service", "2"));
    let v1 = device.doc("v1", &[(&name, "1", &[("image", &service_1)])]);
    device.apply_ok(&v1, &[]);
    let original = identity(&name);
    let v2 = device.doc("v2", &[(&name, "2", &[("image", &service_2)])]);

    let mut paused = paused_apply(&device, &v2, point);
    paused.kill();
    assert_ne!(
        device
            .containers()
            .contains(&name)
            .then(|| identity(&name).id),
        Some(original.id.clone()),
        "the original still has its name after a kill during {point}: {:?}",
        device.containers()
    );

    let applied = device.apply_ok(&v1, &[]);
    assert_eq!(identity(&name).id, original.id, "{applied}");
    assert!(running(&name), "{applied}");
    assert_eq!(config_image(&name), service_1);
    assert_eq!(exec(&name, "cat /tmp/version"), "1");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert_eq!(device.containers(), [name.as_str()], "{applied}");
}

#[test]
fn original_document_after_a_kill_during_updating_restores_the_original_container() {
    assert_kill_then_original_restores("orig-upd", "updating");
}

#[test]
fn original_document_after_a_kill_during_activating_restores_the_original_container() {
    assert_kill_then_original_restores("orig-act", "activating");
}

#[test]
fn container_rollback_keeps_the_new_version_of_a_container_that_succeeded() {
    let device = Device::new("per-container");
    let (first, second) = (device.name("first"), device.name("second"));
    let service_1 = image("service", "1");
    let before_doc = device.doc(
        "before",
        &[
            (&first, "1", &[("image", &service_1)]),
            (&second, "1", &[("image", &service_1)]),
        ],
    );
    device.apply_ok(&before_doc, &[]);
    let before = [identity(&first), identity(&second)];

    let service_2 = image("service", "2");
    let crash_1 = image("crash", "1");
    let after_doc = device.doc(
        "after",
        &[
            (&first, "2", &[("image", &service_2)]),
            (&second, "2", &[("image", &crash_1)]),
        ],
    );
    let applied = device.apply(&after_doc, &["--rollback", "container"]);
    assert_eq!(applied.code(), Some(1), "{applied}");
    applied.assert_sequence(&["ROLLBACK", "ROLLBACK_SUCCESS", "INCOMPLETE"]);
    assert_ne!(identity(&first).id, before[0].id, "{applied}");
    assert!(running(&first), "{applied}");
    assert_eq!(config_image(&first), service_2);
    assert_eq!(identity(&second).id, before[1].id, "{applied}");
    assert!(running(&second), "{applied}");
    assert_eq!(config_image(&second), service_1);
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert_eq!(device.containers().len(), 2, "{:?}", device.containers());
}

#[test]
fn recreated_container_with_inherited_volumes_is_kept_by_the_next_apply() {
    let mut device = Device::new("volumes-keep");
    let name = device.name("store");
    let named = format!("{}:/named", device.volume("vol"));
    let bound = tempfile::tempdir().expect("bind dir");
    let mount = format!("{}:/bound", bound.path().display());
    let volume_1 = image("volume", "1");
    let doc = |file: &str, env: &str| {
        device.doc(
            file,
            &[(
                &name,
                "1",
                &[
                    ("image", &volume_1),
                    ("volume", &named),
                    ("mount", &mount),
                    ("env", env),
                ],
            )],
        )
    };
    let (first, second) = (doc("first", "V=1"), doc("second", "V=2"));
    device.apply_ok(&first, &[]);
    device.apply_ok(&second, &[]);
    let recreated = identity(&name);

    let again = device.apply_ok(&second, &[]);
    assert_eq!(
        again.statuses(),
        ["IDENTIFYING", "IDENTIFIED", "COMPLETED"],
        "{again}"
    );
    assert_untouched(&name, &recreated, &again);
}

#[test]
fn unmanaged_and_system_containers_are_untouched_by_success_and_by_rollback() {
    let device = Device::new("bystanders");
    let (service_1, service_2) = (image("service", "1"), image("service", "2"));
    let unmanaged = device.hand_made("unmanaged", &service_1);
    let system = device.hand_made("system", &service_1);
    let managed = device.name("managed");
    let before = [identity(&unmanaged), identity(&system)];
    let flags = ["--system-containers", system.as_str()];
    let check = |context: &Applied| {
        assert_untouched(&unmanaged, &before[0], context);
        assert_untouched(&system, &before[1], context);
        assert_eq!(config_image(&system), service_1);
    };

    // The document wants the system container on another image: ignored.
    let create = device.doc(
        "create",
        &[
            (&managed, "1", &[("image", &service_1), ("env", "FOO=1")]),
            (&system, "2", &[("image", &service_2)]),
        ],
    );
    check(&device.apply_ok(&create, &flags));
    let change = device.doc(
        "change",
        &[
            (&managed, "1", &[("image", &service_1), ("env", "FOO=2")]),
            (&system, "2", &[("image", &service_2)]),
        ],
    );
    let changed = device.apply_ok(&change, &flags);
    check(&changed);
    assert!(env_of(&managed).contains(&"FOO=2".to_string()), "{changed}");

    let managed_before = identity(&managed);
    let crash = image("crash", "1");
    let fail = device.doc(
        "fail",
        &[
            (&managed, "2", &[("image", &crash)]),
            (&system, "2", &[("image", &service_2)]),
        ],
    );
    let failed = device.apply(&fail, &flags);
    assert_eq!(failed.code(), Some(1), "{failed}");
    failed.assert_sequence(&["ROLLBACK", "ROLLBACK_SUCCESS", "INCOMPLETE"]);
    check(&failed);
    assert_eq!(identity(&managed).id, managed_before.id, "{failed}");
    assert!(running(&managed), "{failed}");
}

#[test]
fn invalid_document_reports_identification_failed_and_creates_nothing() {
    let device = Device::new("invalid");
    let (good, bad) = (device.name("good"), device.name("bad"));
    let service_1 = image("service", "1");
    let doc = device.doc(
        "invalid",
        &[
            (&good, "1", &[("image", &service_1)]),
            (&bad, "1", &[("image", &service_1), ("privileged", "YES")]),
        ],
    );
    let applied = device.apply(&doc, &[]);
    assert_eq!(applied.code(), Some(1), "{applied}");
    assert_eq!(applied.statuses(), ["IDENTIFICATION_FAILED"], "{applied}");
    let failure = &applied.feedback[0];
    assert_eq!(
        failure["activityId"],
        format!("{}invalid", device.prefix),
        "{applied}"
    );
    let message = failure["payload"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&bad) && message.contains("privileged"),
        "{message}"
    );
    assert!(device.containers().is_empty(), "{:?}", device.containers());
    assert!(
        device.state_files().is_empty(),
        "{:?}",
        device.state_files()
    );
}

#[test]
fn second_apply_on_a_locked_state_dir_is_refused() {
    let device = Device::new("lock");
    let name = device.name("svc");
    let v1 = device.doc("v1", &[(&name, "1", &[("image", &image("service", "1"))])]);
    device.apply_ok(&v1, &[]);
    let v2 = device.doc("v2", &[(&name, "2", &[("image", &image("service", "2"))])]);

    let mut paused = paused_apply(&device, &v2, "updating");
    let second = device.apply(&v2, &[]);
    assert_eq!(second.code(), Some(1), "{second}");
    assert!(
        second.stderr().contains("another berth process"),
        "{second}"
    );
    paused.kill();
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let device = Device::new("dry");
    let (existing, absent) = (device.name("existing"), device.name("absent"));
    let service_1 = image("service", "1");
    let v1 = device.doc(
        "v1",
        &[(&existing, "1", &[("image", &service_1), ("env", "FOO=1")])],
    );
    device.apply_ok(&v1, &[]);
    let before = identity(&existing);
    let state_before = device.state_files();

    let v2 = device.doc(
        "v2",
        &[
            (&existing, "1", &[("image", &service_1), ("env", "FOO=2")]),
            (&absent, "1", &[("image", &service_1)]),
        ],
    );
    let mut cmd = berth();
    cmd.env("DOCKER_HOST", device.view.host())
        .env("BERTH_INSTANCE", &device.prefix)
        .args(["apply", "--dry-run", "--state-dir"])
        .arg(device.state.path())
        .arg(&v2);
    let out = run(&mut cmd);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("Plan for activity {}v2", device.prefix)),
        "{stdout}"
    );
    let line = |n: &str| stdout.lines().find(|l| l.contains(n)).map(str::to_string);
    assert!(
        line(&absent).is_some_and(|l| l.contains("create")),
        "{stdout}"
    );
    assert!(
        line(&existing).is_some_and(|l| l.contains("recreate")),
        "{stdout}"
    );
    let context = format!("{stdout}\n{}", text(&out.stderr));
    assert_untouched(&existing, &before, &context);
    assert!(env_of(&existing).contains(&"FOO=1".to_string()));
    assert_eq!(device.containers(), [existing.as_str()]);
    assert_eq!(device.state_files(), state_before);
}

#[test]
fn scope_all_removes_an_unmanaged_container_and_the_default_scope_does_not() {
    let device = Device::new("scope");
    let unmanaged = device.hand_made("unmanaged", &image("service", "1"));
    let managed = device.name("managed");
    let doc = device.doc(
        "doc",
        &[(&managed, "1", &[("image", &image("service", "1"))])],
    );
    let before = identity(&unmanaged);

    let owned = device.apply_ok(&doc, &[]);
    assert_untouched(&unmanaged, &before, &owned);

    let all = device.apply_ok(&doc, &["--scope", "all"]);
    assert!(all.action_reached(&unmanaged, "REMOVAL_SUCCESS"), "{all}");
    assert_eq!(device.containers(), [managed.as_str()], "{all}");
}

#[test]
fn json_feedback_lines_conform_to_the_published_schema() {
    let schema_path = repo_path("schemas/feedback.schema.json");
    if !schema_path.exists() {
        eprintln!("!!! SKIPPED json_feedback_lines_conform_to_the_published_schema: no schemas/feedback.schema.json !!!");
        return;
    }
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(&schema_path).unwrap()).unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");

    let device = Device::new("schema");
    let (pulled, failing) = (device.name("pulled"), device.name("failing"));
    let service_1 = image("service", "1");
    // An image in the registry and not here: a pull, so messages with
    // download progress.
    let absent = format!(
        "{}/berth-test/schema-{}:1",
        crate::util::registry(),
        std::process::id()
    );
    docker(&["tag", &service_1, &absent]);
    docker(&["push", &absent]);
    docker(&["rmi", &absent]);
    let create = device.doc(
        "create",
        &[
            (&pulled, "1", &[("image", &absent)]),
            (&failing, "1", &[("image", &service_1)]),
        ],
    );
    let rollback = device.doc(
        "rollback",
        &[
            (&pulled, "1", &[("image", &absent)]),
            (&failing, "2", &[("image", &image("crash", "1"))]),
        ],
    );
    let download_failure = device.doc(
        "nope",
        &[(&failing, "2", &[("image", &image("service", "nope"))])],
    );
    let invalid = device.doc(
        "invalid",
        &[(
            &failing,
            "1",
            &[("image", &service_1), ("privileged", "YES")],
        )],
    );
    let runs = [
        device.apply(&create, &[]),
        device.apply(&rollback, &[]),
        device.apply(&download_failure, &[]),
        device.apply(&invalid, &[]),
    ];
    assert_eq!(runs[0].last_status(), "COMPLETED", "{}", runs[0]);
    assert!(
        runs[0].feedback.iter().any(|f| f["payload"]["actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a.get("progress").is_some()))),
        "no message with progress\n{}",
        runs[0]
    );
    runs[1].assert_sequence(&["ROLLBACK", "ROLLBACK_SUCCESS", "INCOMPLETE"]);
    runs[2].assert_sequence(&["DOWNLOAD_FAILURE", "INCOMPLETE"]);
    assert_eq!(runs[3].statuses(), ["IDENTIFICATION_FAILED"], "{}", runs[3]);
    let mut errors = Vec::new();
    for applied in &runs {
        for line in &applied.feedback {
            for e in validator.iter_errors(line) {
                errors.push(format!("{e}: {line}"));
            }
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn engine_view_lists_only_the_containers_of_its_prefix() {
    let device = Device::new("view");
    let mine = device.hand_made("mine", &image("service", "1"));
    let outsider = unique("apply-outsider-of-view");
    let _outsider = crate::util::Cleanup(outsider.clone());
    docker(&["create", "--name", &outsider, &image("service", "1")]);
    let host = device.view.host();
    let listed = docker(&["-H", &host, "ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(listed.lines().collect::<Vec<_>>(), [mine.as_str()]);
    // Everything else reaches the engine as is.
    let inspected = docker(&["-H", &host, "inspect", "--format", "{{.Name}}", &outsider]);
    assert_eq!(inspected, format!("/{outsider}"));
}

#[test]
fn activity_rollback_reverts_an_in_place_memory_update() {
    let device = Device::new("revert-update");
    let (resized, failing) = (device.name("resized"), device.name("failing"));
    let service_1 = image("service", "1");
    let before_doc = device.doc(
        "before",
        &[
            (&resized, "1", &[("image", &service_1), ("memory", "64M")]),
            (&failing, "1", &[("image", &service_1)]),
        ],
    );
    device.apply_ok(&before_doc, &[]);
    let before = identity(&resized);

    let crash_1 = image("crash", "1");
    let after_doc = device.doc(
        "after",
        &[
            (&resized, "1", &[("image", &service_1), ("memory", "128M")]),
            (&failing, "2", &[("image", &crash_1)]),
        ],
    );
    let applied = device.apply(&after_doc, &[]);
    assert_eq!(applied.code(), Some(1), "{applied}");
    assert!(
        applied.action_reached(&resized, "UPDATE_SUCCESS"),
        "{applied}"
    );
    applied.assert_sequence(&["ROLLBACK", "ROLLBACK_SUCCESS", "INCOMPLETE"]);
    assert_untouched(&resized, &before, &applied);
    assert_eq!(
        inspect(&resized)["HostConfig"]["Memory"],
        64 * 1024 * 1024,
        "{applied}"
    );
}

/// Regression (issue 25): start-first stopped the old container before the
/// new one had the service's name, so the name pointed at a stopping
/// container for the whole stop. Now the new container starts first, the
/// names change hands while both run, and only then does the old one stop.
#[test]
fn start_first_hands_the_name_to_the_running_new_container_before_the_old_one_stops() {
    let device = Device::new("start-first");
    let name = device.name("web");
    let (one, two) = (image("service", "1"), image("service", "2"));
    let strategy = ("updateStrategy", "start-first");
    let v1 = device.doc("v1", &[(&name, "1", &[("image", &one), strategy])]);
    device.apply_ok(&v1, &[]);
    let old = identity(&name).id;
    let since = docker(&["system", "info", "--format", "{{.SystemTime}}"]);
    let v2 = device.doc("v2", &[(&name, "2", &[("image", &two), strategy])]);
    let applied = device.apply_ok(&v2, &[]);
    let new = identity(&name).id;
    assert_ne!(new, old, "{applied}");
    assert_eq!(config_image(&name), two);
    let until = docker(&["system", "info", "--format", "{{.SystemTime}}"]);
    let events = docker(&[
        "events",
        "--since",
        since.trim(),
        "--until",
        until.trim(),
        "--filter",
        &format!("container={old}"),
        "--filter",
        &format!("container={new}"),
        "--format",
        "{{.Actor.ID}} {{.Action}} {{.Actor.Attributes.name}}",
    ]);
    let at = |id: &str, action: &str| {
        events
            .lines()
            .position(|l| l.starts_with(id) && l.split(' ').nth(1) == Some(action))
            .unwrap_or_else(|| panic!("no {action} of {id} in:\n{events}"))
    };
    let renamed_to_name = events
        .lines()
        .position(|l| {
            l.starts_with(&new) && l.contains(" rename ") && l.ends_with(&format!(" {name}"))
        })
        .unwrap_or_else(|| panic!("the new container never took {name}:\n{events}"));
    assert!(at(&new, "start") < at(&old, "kill"), "{events}");
    assert!(renamed_to_name < at(&old, "kill"), "{events}");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
}
