//! `berth check` against the local registries: upgrade candidates within a
//! major and across majors, env drift with secrets hidden, a moved tag, a
//! deleted tag, an unreachable registry, and the registry with basic auth
//! with and without credentials; `--write` pins the candidate.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::cli_apply::Device;
use crate::credentials::{auth_password, auth_registry, docker_login, push_private, AUTH_USER};
use crate::util::{image, json_stdout, registry, run, temp_file, text};

/// Builds `reference` from service:1 with these `ENV` lines and pushes it.
fn build_push(reference: &str, env: &[&str], config: Option<&Path>) {
    let dir = tempfile::tempdir().expect("build dir");
    let mut dockerfile = format!("FROM {}\n", image("service", "1"));
    for e in env {
        dockerfile.push_str(&format!("ENV {e}\n"));
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
