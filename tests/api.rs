//! The local HTTP API (`[api]`) of `berth run` on a state file, against
//! the real engine and registry: per-token permissions, image updates that
//! keep volumes and networks, env reads and merge patches, server-sent
//! events with resumption, and the Prometheus metrics.
//!
//! Each test runs its own agent (its own berth instance, socket, volume
//! and network) on a device whose desired state comes from a file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth::api::client::{Answer, Client, SseEvent};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::util::{berth, desired_state, docker, image, unique, Background, Cleanup};

const WAIT: Duration = Duration::from_secs(120);
const FULL: &str = "full-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";
const SECRETS: &str = "secrets-token-0123456789abcdef";

/// A device fed by a state file, its agent serving the API, and what the
/// test owns on the engine (container, named volume, user network).
struct Device {
    dir: TempDir,
    agent: Background,
    web: String,
    volume: String,
    network: String,
    _cleanup: Vec<Cleanup>,
}

fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Device {
    /// One component, `web`, on service:1 with a named volume, a user
    /// network and three env variables (one secret).
    fn start() -> Self {
        Self::start_with("")
    }

    /// With more `[api]` options.
    fn start_with(api_options: &str) -> Self {
        Self::start_full(api_options, &[])
    }

    /// With more `[api]` options and more `berth run` arguments.
    fn start_full(api_options: &str, run_args: &[&str]) -> Self {
        Self::start_config(api_options, run_args, "")
    }

    /// With more `[api]` options, `berth run` arguments, and configuration
    /// sections after the API's (`tail`).
    fn start_config(api_options: &str, run_args: &[&str], tail: &str) -> Self {
        let dir = TempDir::new().unwrap();
        let web = unique(&format!("api-{}", rand_suffix()));
        let volume = format!("{web}-data");
        let network = format!("{web}-net");
        docker(&["network", "create", &network]);
        let image1 = image("service", "1");
        let volume_value = format!("{volume}:/data");
        let doc = desired_state(
            "file-1",
            &[(
                &web,
                "1",
                &[
                    ("image", image1.as_str()),
                    ("volume", volume_value.as_str()),
                    ("network", network.as_str()),
                    ("env", "MODE=prod"),
                    ("env", "DEBUG=1"),
                    ("env", "API_PASSWORD=hunter2"),
                ],
            )],
        );
        std::fs::write(dir.path().join("state.json"), doc).unwrap();
        for (name, token) in [("full", FULL), ("reader", READER), ("secrets", SECRETS)] {
            write_secret(&dir.path().join(format!("{name}.token")), token);
        }
        let d = dir.path().display();
        let config = format!(
            r#"
[api]
listen = "{d}/api.sock"
{api_options}

[[api.tokens]]
name = "full"
token_file = "{d}/full.token"
can_inspect = true
can_update_image = true
allowed_images = ["{registry}/berth-test/service:*", "{registry}/berth-test/crash:*"]
can_update_env = true
can_apply = true

[[api.tokens]]
name = "reader"
token_file = "{d}/reader.token"
can_inspect = true

[[api.tokens]]
name = "secrets"
token_file = "{d}/secrets.token"
can_inspect = true
can_read_secrets = true

{tail}
"#,
            registry = crate::util::registry()
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let mut cmd = berth();
        cmd.args(["run", "--config"])
            .arg(dir.path().join("config.toml"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--files")
            .arg(dir.path().join("state.json"))
            .args(["--min-ready", "500ms", "--reconcile-interval", "0"])
            .args(run_args)
            .args(["--log-level", "berth=debug"]);
        let cleanup = vec![
            Cleanup(web.clone()),
            Cleanup(format!("{web}.berth-new")),
            Cleanup(format!("{web}.berth-old")),
        ];
        let device = Self {
            agent: Background::spawn(cmd),
            dir,
            web,
            volume,
            network,
            _cleanup: cleanup,
        };
        device.wait_ready();
        device.wait_running();
        device
    }

    /// The state file's document is enforced (ready only says the
    /// persisted one is, and a fresh device has none).
    fn wait_running(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = Command::new("docker")
                .args([
                    "inspect",
                    "--type",
                    "container",
                    "-f",
                    "{{.State.Running}}",
                    &self.web,
                ])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).trim() == "true"
                && self.log().contains("COMPLETED")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start within {WAIT:?}\nberth log:\n{}",
                self.web,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    fn client(&self, token: Option<&str>) -> Client {
        Client::unix(self.socket(), token.map(str::to_string))
    }

    fn call(&self, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> Answer {
        let client = self.client(token);
        let body = body.map(|b| b.to_string().into_bytes());
        block_on(client.request(method, path, &[], body))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\nberth log:\n{}", self.agent.stderr()))
    }

    fn raw(&self, token: Option<&str>, method: &str, path: &str, body: &str) -> Answer {
        let client = self.client(token);
        block_on(client.request(method, path, &[], Some(body.as_bytes().to_vec())))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.socket().exists() {
                let client = self.client(None);
                if let Ok(a) = block_on(client.request("GET", "/healthz", &[], None)) {
                    if a.status == 200 {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "the API was not ready within {WAIT:?}\nberth log:\n{}",
                self.agent.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn update_image(&self, token: &str, tag: &str, wait: bool) -> Answer {
        self.update_to(token, "service", tag, wait)
    }

    fn update_to(&self, token: &str, name: &str, tag: &str, wait: bool) -> Answer {
        let path = format!(
            "/api/v1/containers/{}/update-image{}",
            self.web,
            if wait { "" } else { "?wait=false" }
        );
        let repo = format!("{}/berth-test/{name}", crate::util::registry());
        self.call(
            Some(token),
            "POST",
            &path,
            Some(json!({"image": repo, "tag": tag})),
        )
    }

    fn log(&self) -> String {
        self.agent.stderr()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.agent.kill();
        for c in &self._cleanup {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", &c.0])
                .output();
        }
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.volume])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

/// Distinguishes the devices of one test process (thread ids differ).
fn rand_suffix() -> u32 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    (h.finish() % 1_000_000) as u32
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn inspect(name: &str) -> Value {
    let out = docker(&["inspect", "--type", "container", name]);
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

fn env_of(name: &str) -> Vec<String> {
    inspect(name)["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Follows the event stream in a thread until `done` says so.
fn follow(
    device: &Device,
    token: &str,
    last_event_id: Option<String>,
    done: impl Fn(&[SseEvent]) -> bool + Send + 'static,
) -> std::thread::JoinHandle<Vec<SseEvent>> {
    let client = device.client(Some(token));
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let run = client.events(last_event_id.as_deref(), |e| {
            seen.push(e);
            !done(&seen)
        });
        let _ = block_on(async { tokio::time::timeout(WAIT, run).await });
        seen
    })
}

#[test]
fn an_update_to_an_allowed_image_succeeds_and_the_new_version_runs() {
    let device = Device::start();
    let before = inspect(&device.web)["Id"].as_str().unwrap().to_string();
    let a = device.update_image(FULL, "2", true);
    assert_eq!(a.status, 200, "{}\n{}", a.text(), device.log());
    let body = a.json();
    assert_eq!(body["success"], true, "{body}");
    assert!(
        body["activityId"].as_str().unwrap().starts_with("api-"),
        "{body}"
    );
    assert_eq!(body["oldContainerId"], before.as_str());
    let after = inspect(&device.web);
    assert_eq!(body["newContainerId"], after["Id"]);
    assert_ne!(before, after["Id"].as_str().unwrap());
    assert_eq!(after["State"]["Running"], true);
    assert_eq!(crate::util::created_from(&after), image("service", "2"));
    assert_eq!(
        docker(&["exec", &device.web, "cat", "/etc/service-version"]),
        "2"
    );
    assert_eq!(body["image"], image("service", "2"));
    assert!(
        body["note"].as_str().unwrap().contains("state.json"),
        "a file-fed device says the next file change replaces the API change: {body}"
    );
    let log = device.log();
    assert!(
        log.contains("berth::audit") && log.contains("caller=full"),
        "the mutation is audited under the token's name: {log}"
    );
    assert!(!log.contains(FULL), "the token itself is never logged");
}

#[test]
fn an_image_update_keeps_the_volumes() {
    let device = Device::start();
    docker(&["exec", &device.web, "sh", "-c", "echo kept > /data/marker"]);
    let a = device.update_image(FULL, "2", true);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        docker(&["exec", &device.web, "cat", "/data/marker"]),
        "kept"
    );
    let mounts = inspect(&device.web)["Mounts"].to_string();
    assert!(mounts.contains(&device.volume), "{mounts}");
}

#[test]
fn an_image_update_keeps_the_networks() {
    let device = Device::start();
    let a = device.update_image(FULL, "2", true);
    assert_eq!(a.status, 200, "{}", a.text());
    let networks = inspect(&device.web)["NetworkSettings"]["Networks"].clone();
    assert!(
        networks.get(&device.network).is_some(),
        "{networks} lacks {}",
        device.network
    );
}

#[test]
fn an_image_that_is_not_allowed_is_forbidden_naming_the_rule() {
    let device = Device::start();
    let before = inspect(&device.web)["Id"].clone();
    let repo = format!("{}/berth-test/healthy", crate::util::registry());
    let path = format!("/api/v1/containers/{}/update-image", device.web);
    let a = device.call(
        Some(FULL),
        "POST",
        &path,
        Some(json!({"image": repo, "tag": "2"})),
    );
    assert_eq!(a.status, 403, "{}", a.text());
    let message = a.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("allowed_images"), "{message}");
    assert!(message.contains("'full'"), "{message}");
    assert_eq!(inspect(&device.web)["Id"], before);
    assert!(device.log().contains("berth::audit"), "{}", device.log());
}

#[test]
fn a_missing_tag_fails_before_anything_is_touched() {
    let device = Device::start();
    let before = inspect(&device.web)["Id"].clone();
    let a = device.update_image(FULL, "no-such-tag", true);
    assert_eq!(a.status, 422, "{}", a.text());
    assert_eq!(a.json()["error"], "tag_not_found");
    assert_eq!(inspect(&device.web)["Id"], before);
    let persisted = std::fs::read_to_string(device.dir.path().join("state/desired.json")).unwrap();
    assert!(!persisted.contains("no-such-tag"), "{persisted}");
}

#[test]
fn a_component_not_in_the_desired_state_is_not_found_with_the_reason() {
    let device = Device::start();
    let a = device.call(Some(READER), "GET", "/api/v1/containers/nope/env", None);
    assert_eq!(a.status, 404, "{}", a.text());
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .contains("nope is not in the desired state"));
}

#[test]
fn an_sse_event_carries_the_update_result() {
    let device = Device::start();
    let web = device.web.clone();
    let events = follow(&device, READER, None, move |seen| {
        seen.iter().any(|e| {
            e.event == "version-update" && e.data.contains("\"completed\"") && e.data.contains(&web)
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let a = device.update_image(FULL, "2", false);
    assert_eq!(a.status, 202, "{}", a.text());
    let activity = a.json()["activityId"].as_str().unwrap().to_string();
    assert_eq!(
        a.header("location"),
        Some(format!("/api/v1/activities/{activity}").as_str())
    );
    let seen = events.join().unwrap();
    let phases: Vec<String> = seen
        .iter()
        .filter(|e| e.event == "version-update")
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
        .filter(|v| v["activityId"] == activity.as_str())
        .map(|v| v["phase"].as_str().unwrap().to_string())
        .collect();
    // `pulling` comes first only when the image is not on the device yet.
    let without_pull: Vec<&str> = phases
        .iter()
        .map(String::as_str)
        .filter(|p| *p != "pulling")
        .collect();
    assert_eq!(
        without_pull,
        ["creating", "stopping", "starting", "completed"],
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|e| e.event == "feedback"
            && e.data.contains(&activity)
            && e.data.contains("\"COMPLETED\"")),
        "the Kanto feedback is in the stream too: {seen:?}"
    );
    let polled = device.call(
        Some(READER),
        "GET",
        &format!("/api/v1/activities/{activity}"),
        None,
    );
    assert_eq!(polled.json()["status"], "COMPLETED", "{}", polled.text());
}

#[test]
fn the_event_stream_resumes_after_the_last_event_id() {
    let device = Device::start();
    let a = device.update_image(FULL, "2", true);
    assert_eq!(a.status, 200, "{}", a.text());
    let all = follow(&device, READER, Some("0".into()), |seen| {
        seen.iter().any(|e| e.data.contains("\"COMPLETED\""))
    })
    .join()
    .unwrap();
    assert_eq!(
        all[0].event, "reset",
        "an id this run never gave says events were missed: {all:?}"
    );
    let ids: Vec<u64> = all
        .iter()
        .filter_map(|e| e.id.as_ref()?.parse().ok())
        .collect();
    assert!(ids.len() >= 3, "{all:?}");
    let from = ids[1];
    let rest = follow(&device, READER, Some(from.to_string()), |seen| {
        seen.iter().any(|e| e.data.contains("\"COMPLETED\""))
    })
    .join()
    .unwrap();
    let rest_ids: Vec<u64> = rest
        .iter()
        .filter_map(|e| e.id.as_ref()?.parse().ok())
        .collect();
    assert_eq!(rest_ids.first(), Some(&(from + 1)), "{rest:?}");
    assert!(rest_ids.iter().all(|i| *i > from), "{rest_ids:?}");
}

#[test]
fn an_env_read_returns_the_environment() {
    let device = Device::start();
    let a = device.call(
        Some(READER),
        "GET",
        &format!("/api/v1/containers/{}/env", device.web),
        None,
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let env = &a.json()["env"];
    assert_eq!(env["MODE"], "prod");
    assert_eq!(env["DEBUG"], "1");
    assert_eq!(env["IMAGE_DEFAULT"], "from-image");
}

#[test]
fn an_env_read_redacts_secrets_unless_the_token_may_read_them() {
    let device = Device::start();
    let path = format!("/api/v1/containers/{}/env", device.web);
    let hidden = device.call(Some(READER), "GET", &path, None);
    assert_eq!(hidden.json()["env"]["API_PASSWORD"], "<redacted>");
    assert!(!hidden.text().contains("hunter2"), "{}", hidden.text());
    let one = device.call(
        Some(READER),
        "GET",
        &format!("/api/v1/containers/{}", device.web),
        None,
    );
    assert_eq!(one.status, 200, "{}", one.text());
    assert!(!one.text().contains("hunter2"), "{}", one.text());
    let list = device.call(Some(READER), "GET", "/api/v1/containers", None);
    assert_eq!(list.status, 200);
    assert!(!list.text().contains("hunter2"));
    let shown = device.call(Some(SECRETS), "GET", &path, None);
    assert_eq!(shown.json()["env"]["API_PASSWORD"], "hunter2");
    assert!(!device.log().contains("hunter2"));
}

#[test]
fn an_env_update_without_can_update_env_is_forbidden() {
    let device = Device::start();
    let before = inspect(&device.web)["Id"].clone();
    let a = device.call(
        Some(READER),
        "PATCH",
        &format!("/api/v1/containers/{}/env", device.web),
        Some(json!({"MODE": "dev"})),
    );
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .contains("can_update_env"));
    assert_eq!(inspect(&device.web)["Id"], before);
    assert!(
        device.log().contains("refused: no can_update_env"),
        "the refusal is audited: {}",
        device.log()
    );
}

#[test]
fn a_merge_patch_sets_and_removes_variables_and_keeps_the_rest() {
    let device = Device::start();
    docker(&["exec", &device.web, "sh", "-c", "echo kept > /data/marker"]);
    let a = device.call(
        Some(FULL),
        "PATCH",
        &format!("/api/v1/containers/{}/env", device.web),
        Some(json!({"MODE": "dev", "DEBUG": null, "NEW": "x"})),
    );
    assert_eq!(a.status, 200, "{}\n{}", a.text(), device.log());
    assert_eq!(a.json()["success"], true);
    assert_eq!(a.json()["env"]["API_PASSWORD"], "<redacted>");
    let env = env_of(&device.web);
    assert!(env.contains(&"MODE=dev".to_string()), "{env:?}");
    assert!(env.contains(&"NEW=x".to_string()), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("DEBUG=")), "{env:?}");
    assert_eq!(
        crate::util::created_from(&inspect(&device.web)),
        image("service", "1")
    );
    assert_eq!(
        docker(&["exec", &device.web, "cat", "/data/marker"]),
        "kept"
    );
}

#[test]
fn a_request_without_a_valid_token_is_unauthorized() {
    let device = Device::start();
    let none = device.call(None, "GET", "/api/v1/containers", None);
    assert_eq!(none.status, 401);
    assert!(none.header("www-authenticate").is_some());
    let wrong = device.call(
        Some("not-a-token-at-all-xx"),
        "GET",
        "/api/v1/containers",
        None,
    );
    assert_eq!(wrong.status, 401);
    assert!(!device.log().contains("not-a-token-at-all-xx"));
}

#[test]
fn bad_input_is_refused_with_400_naming_the_field() {
    let device = Device::start();
    let path = format!("/api/v1/containers/{}/update-image", device.web);
    let broken = device.raw(Some(FULL), "POST", &path, "{\"image\": ");
    assert_eq!(broken.status, 400);
    assert_eq!(broken.json()["field"], "body");
    let unknown = device.call(
        Some(FULL),
        "POST",
        &path,
        Some(json!({"image": "x", "tag": "1", "colour": "red"})),
    );
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.json()["field"], "colour");
    let tag = device.call(
        Some(FULL),
        "POST",
        &path,
        Some(json!({"image": "x", "tag": "bad tag"})),
    );
    assert_eq!(tag.status, 400);
    assert_eq!(tag.json()["field"], "tag");
    let env = device.call(
        Some(FULL),
        "PATCH",
        &format!("/api/v1/containers/{}/env", device.web),
        Some(json!({"PORT": 80})),
    );
    assert_eq!(env.status, 400);
    assert_eq!(env.json()["field"], "env.PORT");
}

#[test]
fn a_whole_document_needs_can_apply_and_follows_the_document_path() {
    let device = Device::start();
    let image2 = image("service", "2");
    let volume = format!("{}:/data", device.volume);
    let doc: Value = serde_json::from_str(&desired_state(
        "posted-1",
        &[(
            &device.web,
            "2",
            &[
                ("image", image2.as_str()),
                ("volume", volume.as_str()),
                ("network", device.network.as_str()),
            ],
        )],
    ))
    .unwrap();
    let refused = device.call(
        Some(READER),
        "POST",
        "/api/v1/desired-state",
        Some(doc.clone()),
    );
    assert_eq!(refused.status, 403);
    let a = device.call(Some(FULL), "POST", "/api/v1/desired-state", Some(doc));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["activityId"], "posted-1");
    assert_eq!(crate::util::created_from(&inspect(&device.web)), image2);
}

#[test]
fn metrics_are_prometheus_text() {
    let device = Device::start();
    let a = device.update_image(FULL, "2", true);
    assert_eq!(a.status, 200, "{}", a.text());
    let (m, scrape) = scrape(&device);
    let value = |name: &str, label: Option<(&str, &str)>| sample(&scrape, name, label);
    assert!(
        value("berth_activities_total", Some(("outcome", "COMPLETED"))).unwrap_or(0.0) >= 2.0,
        "the file's activity and the update: {}",
        m.text()
    );
    assert_eq!(
        value("berth_containers", Some(("state", "running"))),
        Some(1.0),
        "{}",
        m.text()
    );
    assert_eq!(value("berth_ready", None), Some(1.0));
    assert!(value("berth_last_success_timestamp_seconds", None).unwrap_or(0.0) > 1.0e9);
    assert!(scrape.samples.iter().any(|s| s
        .metric
        .starts_with("berth_activity_phase_duration_seconds")));
}

#[test]
fn berth_status_asks_the_running_agent_through_the_socket() {
    let device = Device::start();
    let mut cmd = berth();
    cmd.args(["status", "--api"])
        .arg(device.socket())
        .arg("--token-file")
        .arg(device.dir.path().join("reader.token"));
    let out = crate::util::run(&mut cmd);
    let stdout = crate::util::text(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        crate::util::text(&out.stderr)
    );
    assert!(stdout.starts_with("berth: ready\n"), "{stdout}");
    assert!(stdout.contains(&device.web), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
}

#[test]
fn berth_status_without_a_token_says_why() {
    let device = Device::start();
    let mut cmd = berth();
    cmd.args(["status", "--api"]).arg(device.socket());
    cmd.env_remove("BERTH_API_TOKEN");
    let out = crate::util::run(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::util::text(&out.stderr).contains("401"),
        "{}",
        crate::util::text(&out.stderr)
    );
}

#[test]
fn berth_events_follows_the_agent_through_the_socket() {
    let device = Device::start();
    let mut cmd = berth();
    cmd.args(["events", "--json", "--api"])
        .arg(device.socket())
        .arg("--token-file")
        .arg(device.dir.path().join("reader.token"));
    let events = Background::spawn(cmd);
    std::thread::sleep(Duration::from_millis(500));
    let a = device.update_image(FULL, "2", true);
    assert_eq!(a.status, 200, "{}", a.text());
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = events.stdout();
        let done = lines.lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_default();
            v["event"] == "version-update" && v["data"]["phase"] == "completed"
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no completed event: {lines}\n{}",
            events.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_live_socket_is_refused_and_a_stale_one_replaced() {
    let device = Device::start();
    let second = TempDir::new().unwrap();
    let config = std::fs::read_to_string(device.dir.path().join("config.toml")).unwrap();
    std::fs::write(second.path().join("config.toml"), &config).unwrap();
    let mut cmd = berth();
    cmd.args(["run", "--config"])
        .arg(second.path().join("config.toml"))
        .arg("--state-dir")
        .arg(second.path().join("state"));
    cmd.env(
        "BERTH_INSTANCE",
        format!("{}-second", crate::util::instance()),
    );
    let out = crate::util::run(&mut cmd);
    assert!(!out.status.success());
    let stderr = crate::util::text(&out.stderr);
    assert!(
        stderr.contains("is in use by a running process"),
        "{stderr}"
    );

    // A socket nobody answers on (left by a killed berth) is replaced.
    let stale_dir = TempDir::new().unwrap();
    let stale = stale_dir.path().join("api.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let config = config.replace(
        &format!("{}/api.sock", device.dir.path().display()),
        &stale.display().to_string(),
    );
    std::fs::write(second.path().join("config.toml"), config).unwrap();
    let mut cmd = berth();
    cmd.args(["run", "--config"])
        .arg(second.path().join("config.toml"))
        .arg("--state-dir")
        .arg(second.path().join("state"));
    cmd.env(
        "BERTH_INSTANCE",
        format!("{}-second", crate::util::instance()),
    );
    let mut agent = Background::spawn(cmd);
    agent.wait_for("the API listens", WAIT);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&stale).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    agent.terminate();
    assert!(!stale.exists(), "the socket is removed at exit");
}

#[test]
fn a_remote_listen_address_is_refused_unless_allowed() {
    let dir = TempDir::new().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[api]\nlisten = \"0.0.0.0:7070\"\n",
    )
    .unwrap();
    let mut cmd = berth();
    cmd.args(["run", "--print-config", "--config"])
        .arg(dir.path().join("config.toml"));
    let out = crate::util::run(&mut cmd);
    assert!(!out.status.success());
    let stderr = crate::util::text(&out.stderr);
    assert!(stderr.contains("api.listen"), "{stderr}");
    assert!(stderr.contains("allow_remote"), "{stderr}");
}

#[test]
fn the_openapi_document_describes_every_route_and_every_answer() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::util::repo_path("schemas/openapi.json")).unwrap(),
    )
    .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/api/v1/containers", "get"),
        ("/api/v1/containers/{id}", "get"),
        ("/api/v1/containers/{id}/env", "get"),
        ("/api/v1/containers/{id}/env", "patch"),
        ("/api/v1/containers/{id}/update-image", "post"),
        ("/api/v1/desired-state", "post"),
        ("/api/v1/activities/{id}", "get"),
        ("/api/v1/events", "get"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        for (code, answer) in op["responses"].as_object().unwrap() {
            assert!(
                answer["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{method} {path} {code} has no description"
            );
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[test]
fn a_body_over_the_size_limit_is_refused_with_413() {
    let device = Device::start_with("max_body_size = 1024");
    let huge = format!("{{\"activityId\": \"{}\"}}", "x".repeat(4096));
    let a = device.raw(Some(FULL), "POST", "/api/v1/desired-state", &huge);
    assert_eq!(a.status, 413, "{}", a.text());
}

#[test]
fn a_failed_update_is_rolled_back_and_reported_failed() {
    let device = Device::start();
    let before = inspect(&device.web)["Id"].clone();
    let web = device.web.clone();
    let events = follow(&device, READER, None, move |seen| {
        seen.iter().any(|e| {
            e.event == "version-update" && e.data.contains("\"failed\"") && e.data.contains(&web)
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let a = device.update_to(FULL, "crash", "1", true);
    assert_eq!(a.status, 409, "{}\n{}", a.text(), device.log());
    let body = a.json();
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["status"], "INCOMPLETE", "{body}");
    let after = inspect(&device.web);
    assert_eq!(after["Id"], before, "the old container runs again");
    assert_eq!(after["State"]["Running"], true);
    let seen = events.join().unwrap();
    assert!(
        seen.iter()
            .any(|e| e.event == "version-update" && e.data.contains("\"failed\"")),
        "{seen:?}"
    );
}

#[test]
fn an_api_change_is_reported_on_mqtt_too() {
    let broker = crate::broker::Broker::start();
    let sub = crate::broker::Subscriber::start(&broker, "#");
    let url = broker.url();
    let device = Device::start_full("", &["--mqtt-url", url.as_str()]);
    let a = device.update_image(FULL, "2", true);
    assert_eq!(a.status, 200, "{}", a.text());
    let activity = a.json()["activityId"].as_str().unwrap().to_string();
    let f = sub.feedback(&activity, &["COMPLETED"], WAIT, &device.log());
    assert_eq!(f["activityId"], activity.as_str());
}

#[test]
fn an_image_the_device_policy_refuses_is_forbidden_naming_the_rule() {
    let policy = format!(
        "[policy]\nallowed_images = [\"{}/berth-test/service:1\"]\n",
        crate::util::registry()
    );
    let device = Device::start_config("", &[], &policy);
    let before = inspect(&device.web)["Id"].clone();
    let a = device.update_image(FULL, "2", true);
    assert_eq!(a.status, 403, "{}", a.text());
    let message = a.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("device policy"), "{message}");
    assert!(message.contains("allowed_images"), "{message}");
    assert_eq!(inspect(&device.web)["Id"], before);
}

#[test]
fn a_change_derives_from_the_one_before_it_even_before_that_one_ran() {
    let device = Device::start();
    let path = format!("/api/v1/containers/{}/env?wait=false", device.web);
    let first = device.call(Some(FULL), "PATCH", &path, Some(json!({"FIRST": "1"})));
    assert_eq!(first.status, 202, "{}", first.text());
    let second = device.call(Some(FULL), "PATCH", &path, Some(json!({"SECOND": "2"})));
    assert_eq!(second.status, 202, "{}", second.text());
    assert_ne!(first.json()["activityId"], second.json()["activityId"]);
    let deadline = Instant::now() + WAIT;
    loop {
        let env = env_of(&device.web);
        if env.contains(&"FIRST=1".to_string()) && env.contains(&"SECOND=2".to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "{env:?}\n{}", device.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_last_periodic_registry_check_is_served_to_a_reader() {
    let device = Device::start_full("", &["--check-interval", "1m"]);
    // The first round may come before the state file's container exists;
    // the next one, a minute later, has it.
    let deadline = Instant::now() + WAIT;
    let (report, web) = loop {
        let a = device.call(Some(READER), "GET", "/api/v1/upgrades", None);
        assert_eq!(a.status, 200, "{}", a.text());
        let report = a.json()["report"].clone();
        let web = report["containers"]
            .as_array()
            .and_then(|c| c.iter().find(|f| f["name"] == device.web.as_str()))
            .cloned();
        if let Some(web) = web {
            break (report, web);
        }
        assert!(
            Instant::now() < deadline,
            "{} never checked: {report:#}\n{}",
            device.web,
            device.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(report["timestamp"].as_u64().is_some(), "{report:#}");
    // service:1's tags are not semver versions: the check says so.
    assert_eq!(web["status"], "unknown", "{report:#}");
    assert!(
        web["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("semver"),
        "{report:#}"
    );
    let anonymous = device.call(None, "GET", "/api/v1/upgrades", None);
    assert_eq!(anonymous.status, 401);
}

/// `/metrics`, answered 200 and parsed as the Prometheus text format.
fn scrape(device: &Device) -> (Answer, prometheus_parse::Scrape) {
    let m = device.call(None, "GET", "/metrics", None);
    assert_eq!(m.status, 200);
    let lines = m
        .text()
        .lines()
        .map(|l| Ok(l.to_string()))
        .collect::<Vec<_>>();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("parses");
    (m, scrape)
}

/// The value of the first sample of `name` (with the `label`, if given).
fn sample(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    label: Option<(&str, &str)>,
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn the_mqtt_connected_gauge_follows_the_broker_going_and_coming_back() {
    let mut broker = crate::broker::Broker::start();
    let url = broker.url();
    let device = Device::start_full("", &["--mqtt-url", url.as_str()]);
    let until = |wanted: f64, what: &str| {
        let deadline = Instant::now() + WAIT;
        while sample(&scrape(&device).1, "berth_mqtt_connected", None) != Some(wanted) {
            assert!(Instant::now() < deadline, "{what}\n{}", device.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    until(1.0, "never connected");
    broker.stop();
    until(0.0, "the lost connection was not seen");
    broker.restart();
    until(1.0, "never connected again");
}
