//! `berth check` against the local registries: upgrade candidates within a
//! major and across majors, env drift with secrets hidden, a moved tag, a
//! deleted tag, an unreachable registry, and the registry with basic auth
//! with and without credentials; `--write` pins the candidate.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::broker::{retained, Broker};
use crate::cli_apply::{assert_untouched, env_of, identity, inspect, running, Device};
use crate::credentials::{auth_password, auth_registry, docker_login, push_private, AUTH_USER};
use crate::util::{created_from, image, json_stdout, registry, run, temp_file, text, Background};

/// Where the agent's periodic check is published.
const UPGRADES: &str = "containersupdate/upgrades";

/// Builds `reference` from service:1 with these `ENV` lines and pushes it.
fn build_push(reference: &str, env: &[&str], config: Option<&Path>) {
    let lines: Vec<String> = env.iter().map(|e| format!("ENV {e}")).collect();
    build_push_lines(reference, &lines, config);
}

/// Builds `reference` from service:1 with these Dockerfile lines and pushes it.
fn build_push_lines(reference: &str, lines: &[String], config: Option<&Path>) {
    let dir = tempfile::tempdir().expect("build dir");
    let mut dockerfile = format!("FROM {}\n", image("service", "1"));
    for l in lines {
        dockerfile.push_str(l);
        dockerfile.push('\n');
    }
    temp_file(dir.path(), "Dockerfile", &dockerfile);
    let out = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", reference])
        .arg(dir.path())
        .output()
        .expect("docker build runs");
    assert!(out.status.success(), "docker build: {}", text(&out.stderr));
    let mut push = Command::new("docker");
    if let Some(c) = config {
        push.arg("--config").arg(c);
    }
    let out = push
        .args(["push", reference])
        .output()
        .expect("docker push runs");
    assert!(out.status.success(), "docker push: {}", text(&out.stderr));
}

/// `berth check --json EXTRA...` as `device`, with docker's logins in
/// `docker_config`.
fn check(device: &Device, docker_config: &Path, extra: &[&str]) -> (Option<i32>, Value, Output) {
    let mut cmd = device.berth_cmd("check", &["--json"]);
    cmd.args(extra).env("DOCKER_CONFIG", docker_config);
    let out = run(&mut cmd);
    let v = json_stdout(&out);
    (out.status.code(), v, out)
}

fn finding<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["containers"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["name"] == name))
        .unwrap_or_else(|| panic!("no finding for {name}: {v:#}"))
}

/// A TCP forwarder to the local registry on its own port, so a registry
/// can be "stopped" without stopping the shared one.
struct Forwarder {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
            while !flag.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(&target) else {
                            continue;
                        };
                        for (mut a, mut b) in [
                            (
                                client.try_clone().expect("clone"),
                                server.try_clone().expect("clone"),
                            ),
                            (server, client),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut a, &mut b);
                                let _ = b.shutdown(std::net::Shutdown::Write);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        Self { port, stop }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn manifest_digest(registry: &str, repo: &str, tag: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-fsSI",
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
        ])
        .arg(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .output()
        .expect("curl runs");
    text(&out.stdout)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("docker-content-digest")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no digest for {repo}:{tag}: {}", text(&out.stderr)))
}

#[test]
fn check_finds_upgrades_drift_moved_and_deleted_tags_and_says_why_it_cannot_tell() {
    let device = Device::new("checkmain");
    let none = tempfile::tempdir().expect("empty docker config");
    let repo = format!("berth-test/check-{}-app", std::process::id());
    let at = |tag: &str| format!("{}/{repo}:{tag}", registry());
    build_push(&at("1.0.0"), &["MODE=one"], None);
    let name = device.name("app");
    let doc = device.doc("app", &[(&name, "1.0.0", &[("image", &at("1.0.0"))])]);
    device.apply_ok(&doc, &[]);

    let (code, v, _) = check(&device, none.path(), &[]);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(finding(&v, &name)["status"], "up-to-date", "{v:#}");

    build_push(
        &at("1.1.0"),
        &["MODE=two", "NEW_FLAG=on", "API_TOKEN=t0p-s3cr3t-value"],
        None,
    );
    build_push(&at("2.0.0"), &["MODE=three"], None);
    let (code, v, out) = check(&device, none.path(), &[]);
    assert_eq!(code, Some(2), "{v:#}");
    let f = finding(&v, &name);
    assert_eq!(f["status"], "upgrade-available", "{v:#}");
    assert_eq!(f["candidate"]["reference"], at("1.1.0"), "{v:#}");
    assert_eq!(
        f["candidate"]["digest"],
        manifest_digest(&registry(), &repo, "1.1.0"),
        "{v:#}"
    );
    let added = f["drift"]["env_added"].as_array().expect("env_added");
    assert!(
        added
            .iter()
            .any(|e| e["name"] == "NEW_FLAG" && e["value"] == "on"),
        "{v:#}"
    );
    assert!(
        added
            .iter()
            .any(|e| e["name"] == "API_TOKEN" && e["value"] == "<redacted>"),
        "{v:#}"
    );
    assert!(!text(&out.stdout).contains("t0p-s3cr3t-value"));
    assert!(!text(&out.stderr).contains("t0p-s3cr3t-value"));

    let (_, v, _) = check(&device, none.path(), &["--any-major"]);
    assert_eq!(
        finding(&v, &name)["candidate"]["reference"],
        at("2.0.0"),
        "{v:#}"
    );

    // --write: the document with the candidate pinned by digest.
    let written = device.state_dir().join("next.json");
    let (code, _, _) = check(
        &device,
        none.path(),
        &[
            "--write",
            written.to_str().expect("utf-8"),
            "--from",
            doc.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code, Some(2));
    let next = std::fs::read_to_string(&written).expect("written document");
    assert!(
        next.contains(&format!(
            "{}@{}",
            at("1.1.0"),
            manifest_digest(&registry(), &repo, "1.1.0")
        )),
        "{next}"
    );

    // The same tag, new content.
    build_push(&at("1.0.0"), &["MODE=moved"], None);
    let (code, v, _) = check(&device, none.path(), &[]);
    assert_eq!(code, Some(2), "{v:#}");
    let f = finding(&v, &name);
    assert_eq!(f["status"], "tag-moved", "{v:#}");
    assert_eq!(
        f["candidate"]["digest"],
        manifest_digest(&registry(), &repo, "1.0.0")
    );

    // The tag deleted (the registry allows deletes: tests/fixtures/registry.yml).
    let digest = manifest_digest(&registry(), &repo, "1.0.0");
    let out = Command::new("curl")
        .args(["-fsS", "-X", "DELETE"])
        .arg(format!(
            "http://{}/v2/{repo}/manifests/{digest}",
            registry()
        ))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    let (code, v, _) = check(&device, none.path(), &[]);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(finding(&v, &name)["status"], "not-found", "{v:#}");
}

#[test]
fn check_of_an_unreachable_registry_is_unknown_with_the_reason() {
    let device = Device::new("checkdown");
    let none = tempfile::tempdir().expect("empty docker config");
    let forwarder = Forwarder::start(registry());
    let reference = format!(
        "127.0.0.1:{}/berth-test/check-{}-down:1.0.0",
        forwarder.port,
        std::process::id()
    );
    build_push(&reference, &["MODE=one"], None);
    let name = device.name("down");
    let doc = device.doc("down", &[(&name, "1.0.0", &[("image", &reference)])]);
    device.apply_ok(&doc, &[]);
    drop(forwarder);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (code, v, _) = check(&device, none.path(), &[]);
    assert_eq!(code, Some(0), "{v:#}");
    let f = finding(&v, &name);
    assert_eq!(f["status"], "unknown", "{v:#}");
    let reason = f["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("unreachable") || reason.contains("refused"),
        "{v:#}"
    );
    let _ = Command::new("docker").args(["rmi", &reference]).output();
}

#[test]
fn check_of_a_registry_with_basic_auth_works_with_credentials_and_is_unauthorized_without() {
    let device = Device::new("checkauth");
    let none = tempfile::tempdir().expect("empty docker config");
    let login = tempfile::tempdir().expect("docker config");
    docker_login(login.path());
    let reference = format!(
        "{}/berth-test/check-{}-private:1.0.0",
        auth_registry(),
        std::process::id()
    );
    push_private(login.path(), &image("service", "1"), &reference);
    let name = device.name("private");
    let doc = device.doc("private", &[(&name, "1.0.0", &[("image", &reference)])]);
    let mut cmd = device.apply_cmd(&doc, &[]);
    cmd.env("DOCKER_CONFIG", login.path());
    let applied = crate::cli_apply::Applied::from(run(&mut cmd));
    assert_eq!(applied.last_status(), "COMPLETED", "{applied}");

    let (_, v, _) = check(&device, none.path(), &[]);
    let f = finding(&v, &name);
    assert_eq!(f["status"], "unknown", "{v:#}");
    assert!(
        f["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("unauthorized"),
        "{v:#}"
    );

    let (code, v, out) = check(&device, login.path(), &[]);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(finding(&v, &name)["status"], "up-to-date", "{v:#}");
    assert!(!text(&out.stdout).contains(&auth_password()));

    let dir = tempfile::tempdir().expect("config dir");
    let pw = temp_file(dir.path(), "pw", &auth_password());
    let config = temp_file(
        dir.path(),
        "berth.toml",
        &format!(
            "[[registries]]\nhost = \"{}\"\nusername = \"{AUTH_USER}\"\npassword_file = \"{}\"\n",
            auth_registry(),
            pw.display()
        ),
    );
    let (code, v, _) = check(
        &device,
        none.path(),
        &["--config", config.to_str().expect("utf-8")],
    );
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(finding(&v, &name)["status"], "up-to-date", "{v:#}");
    let _ = Command::new("docker").args(["rmi", &reference]).output();
}

/// `berth check --apply NAME` as `device`, with no docker logins.
fn check_apply(device: &Device, name: &str) -> Output {
    let none = tempfile::tempdir().expect("empty docker config");
    let mut cmd = device.berth_cmd("check", &["--apply", name]);
    cmd.env("DOCKER_CONFIG", none.path());
    run(&mut cmd)
}

#[test]
fn check_apply_rolls_the_candidate_out_pinned_to_the_digest_it_checked() {
    let device = Device::new("checkapply");
    let repo = format!("berth-test/check-{}-apply", std::process::id());
    let at = |tag: &str| format!("{}/{repo}:{tag}", registry());
    build_push(&at("1.0.0"), &["MODE=one"], None);
    let name = device.name("app");
    let doc = device.doc("app", &[(&name, "1.0.0", &[("image", &at("1.0.0"))])]);
    device.apply_ok(&doc, &[]);
    build_push(&at("1.1.0"), &["MODE=two"], None);
    let digest = manifest_digest(&registry(), &repo, "1.1.0");

    let out = check_apply(&device, &name);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("COMPLETED"),
        "{}",
        text(&out.stdout)
    );
    let c = inspect(&name);
    assert_eq!(
        c["Config"]["Image"],
        format!("{}/{repo}@{digest}", registry())
    );
    assert_eq!(created_from(&c), format!("{}@{digest}", at("1.1.0")));
    assert!(env_of(&name).contains(&"MODE=two".to_string()));
    let persisted =
        std::fs::read_to_string(device.state_dir().join("desired.json")).expect("persisted");
    assert!(
        persisted.contains(&format!("{}@{digest}", at("1.1.0"))),
        "{persisted}"
    );
    let _ = Command::new("docker")
        .args(["rmi", &at("1.0.0"), &at("1.1.0")])
        .output();
}

#[test]
fn check_apply_with_nothing_newer_touches_nothing() {
    let device = Device::new("checknoop");
    let repo = format!("berth-test/check-{}-noop", std::process::id());
    let reference = format!("{}/{repo}:1.0.0", registry());
    build_push(&reference, &["MODE=one"], None);
    let name = device.name("app");
    let doc = device.doc("app", &[(&name, "1.0.0", &[("image", &reference)])]);
    device.apply_ok(&doc, &[]);
    let before = identity(&name);
    let out = check_apply(&device, &name);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("up-to-date; nothing to apply"),
        "{}",
        text(&out.stderr)
    );
    assert_untouched(&name, &before, &text(&out.stderr));
    let _ = Command::new("docker").args(["rmi", &reference]).output();
}

#[test]
fn check_apply_of_a_candidate_that_does_not_start_rolls_back_to_the_running_version() {
    let device = Device::new("checkfail");
    let repo = format!("berth-test/check-{}-fail", std::process::id());
    let at = |tag: &str| format!("{}/{repo}:{tag}", registry());
    build_push(&at("1.0.0"), &["MODE=one"], None);
    let name = device.name("app");
    let doc = device.doc("app", &[(&name, "1.0.0", &[("image", &at("1.0.0"))])]);
    device.apply_ok(&doc, &[]);
    let id = identity(&name).id;
    build_push_lines(
        &at("1.0.1"),
        &[r#"CMD ["/bin/sh", "-c", "echo broken >&2; exit 1"]"#.to_string()],
        None,
    );
    let out = check_apply(&device, &name);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("INCOMPLETE"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(identity(&name).id, id, "{}", text(&out.stdout));
    assert!(running(&name), "{}", text(&out.stdout));
    assert_eq!(created_from(&inspect(&name)), at("1.0.0"));
    assert_eq!(device.leftovers(), Vec::<String>::new());
    let _ = Command::new("docker")
        .args(["rmi", &at("1.0.0"), &at("1.0.1")])
        .output();
}

#[test]
fn check_apply_of_a_container_berth_does_not_manage_is_refused_naming_it() {
    let device = Device::new("checkforeign");
    let name = device.name("nosuch");
    let doc = device.doc(
        "app",
        &[(&name, "1.0.0", &[("image", &image("service", "1"))])],
    );
    let none = tempfile::tempdir().expect("empty docker config");
    let mut cmd = device.berth_cmd(
        "check",
        &["--apply", &name, "--from", doc.to_str().expect("utf-8")],
    );
    let out = run(cmd.env("DOCKER_CONFIG", none.path()));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&name) && err.contains("no container or component of that name"),
        "{err}"
    );
}

#[test]
fn the_agent_publishes_its_periodic_check_retained_on_the_upgrades_topic() {
    let device = Device::new("checkagent");
    let none = tempfile::tempdir().expect("empty docker config");
    let repo = format!("berth-test/check-{}-agent", std::process::id());
    let at = |tag: &str| format!("{}/{repo}:{tag}", registry());
    build_push(&at("1.0.0"), &["MODE=one"], None);
    let name = device.name("app");
    let doc = device.doc("app", &[(&name, "1.0.0", &[("image", &at("1.0.0"))])]);
    device.apply_ok(&doc, &[]);
    build_push(
        &at("1.1.0"),
        &["NEW_FLAG=on", "API_TOKEN=t0p-s3cr3t-agent"],
        None,
    );
    let broker = Broker::start();
    let url = broker.url();
    let mut cmd = device.berth_cmd(
        "run",
        &[
            "--mqtt-url",
            &url,
            "--check-interval",
            "1m",
            "--min-ready",
            "500ms",
        ],
    );
    cmd.env("DOCKER_CONFIG", none.path());
    let mut agent = Background::spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(60);
    let payload = loop {
        if let Some(p) = retained(&broker, UPGRADES, Duration::from_secs(1)) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no retained message on {UPGRADES}\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(!payload.contains("t0p-s3cr3t-agent"), "{payload}");
    let v: Value = serde_json::from_str(&payload).unwrap_or_else(|e| {
        panic!(
            "the report is not JSON ({e}): {payload:?}\n{}",
            agent.stderr()
        )
    });
    assert!(v["timestamp"].as_u64().is_some(), "{v:#}");
    assert_eq!(v["available"], 1, "{v:#}");
    let f = finding(&v, &name);
    assert_eq!(f["status"], "upgrade-available", "{v:#}");
    assert_eq!(f["candidate"]["reference"], at("1.1.0"), "{v:#}");
    let added = f["drift"]["env_added"].as_array().expect("env_added");
    assert!(
        added
            .iter()
            .any(|e| e["name"] == "API_TOKEN" && e["value"] == "<redacted>"),
        "{v:#}"
    );
    assert!(agent.terminate().success(), "{}", agent.stderr());
    let _ = Command::new("docker")
        .args(["rmi", &at("1.0.0"), &at("1.1.0")])
        .output();
}
