//! Registry credentials for pulls: `berth apply` pulls from a registry that
//! needs a login (the second test registry, htpasswd basic auth) with what
//! `docker login` stored or with `[[registries]]`, and without them fails
//! DOWNLOADING naming the registry and the problem, touching nothing. No
//! output ever shows the password.

use std::path::Path;
use std::process::Command;

use crate::cli_apply::Device;
use crate::util::{docker, image, temp_file, text};

/// The registry with basic auth that `scripts/test-env.sh` starts.
pub fn auth_registry() -> String {
    std::env::var("BERTH_TEST_AUTH_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5001".into())
}

/// Its user.
pub const AUTH_USER: &str = "berth-test";

/// Its password, from the fixture test-env.sh made the htpasswd file from.
pub fn auth_password() -> String {
    std::fs::read_to_string(crate::util::repo_path(
        "tests/fixtures/registry-auth.password",
    ))
    .expect("password fixture")
    .trim()
    .to_string()
}

/// `docker --config DIR login` to the auth registry: DIR/config.json then
/// holds the login, as on a device where someone ran `docker login`.
pub fn docker_login(dir: &Path) {
    let mut child = Command::new("docker")
        .arg("--config")
        .arg(dir)
        .args([
            "login",
            "-u",
            AUTH_USER,
            "--password-stdin",
            &auth_registry(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker login starts");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(auth_password().as_bytes())
        .expect("password written");
    let out = child.wait_with_output().expect("docker login ends");
    assert!(out.status.success(), "docker login: {}", text(&out.stderr));
}

/// Pushes the local registry's `source` image to the auth registry as
/// `reference` (logged in with `config`), then removes the local tag, so
/// that an apply must pull it.
pub fn push_private(config: &Path, source: &str, reference: &str) {
    docker(&["pull", source]);
    docker(&["tag", source, reference]);
    let out = Command::new("docker")
        .arg("--config")
        .arg(config)
        .args(["push", reference])
        .output()
        .expect("docker push runs");
    assert!(out.status.success(), "docker push: {}", text(&out.stderr));
    docker(&["rmi", reference]);
}

/// A `[[registries]]` configuration for the auth registry.
fn berth_config(dir: &Path, password: &str) -> std::path::PathBuf {
    let pw = temp_file(dir, "registry-password", &format!("{password}\n"));
    temp_file(
        dir,
        "berth.toml",
        &format!(
            "[[registries]]\nhost = \"{}\"\nusername = \"{AUTH_USER}\"\npassword_file = \"{}\"\n",
            auth_registry(),
            pw.display()
        ),
    )
}

#[test]
fn apply_pulls_from_a_registry_that_needs_a_login_with_docker_login_or_registries_and_fails_downloading_without(
) {
    let device = Device::new("creds");
    let login = tempfile::tempdir().expect("docker config dir");
    docker_login(login.path());
    let reference = format!(
        "{}/berth-test/check-{}-private:1",
        auth_registry(),
        std::process::id()
    );
    push_private(login.path(), &image("service", "1"), &reference);
    let name = device.name("private");
    let doc = device.doc("private", &[(&name, "1", &[("image", &reference)])]);
    let empty = tempfile::tempdir().expect("empty docker config");

    // No credentials anywhere: DOWNLOAD_FAILURE naming the registry and the
    // problem, and no container.
    let mut cmd = device.apply_cmd(&doc, &[]);
    cmd.env("DOCKER_CONFIG", empty.path());
    let failed = crate::cli_apply::Applied::from(crate::util::run(&mut cmd));
    assert_eq!(failed.code(), Some(1), "{failed}");
    let message = failed.message("DOWNLOAD_FAILURE")["payload"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains(&auth_registry())
            && (message.contains("no basic auth credentials") || message.contains("unauthorized")),
        "{message}\n{failed}"
    );
    assert!(device.containers().is_empty(), "{:?}", device.containers());

    // Wrong password in [[registries]]: refused, naming the registry, and
    // the wrong password is printed nowhere.
    let dir = tempfile::tempdir().expect("config dir");
    let wrong = berth_config(dir.path(), "not-the-password-123");
    let mut cmd = device.apply_cmd(&doc, &["--config", wrong.to_str().expect("utf-8 path")]);
    cmd.env("DOCKER_CONFIG", empty.path());
    let refused = crate::cli_apply::Applied::from(crate::util::run(&mut cmd));
    assert_eq!(refused.code(), Some(1), "{refused}");
    let message = refused.message("DOWNLOAD_FAILURE")["payload"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains(&auth_registry()), "{message}");
    assert!(
        !refused.to_string().contains("not-the-password-123"),
        "{refused}"
    );

    // What `docker login` stored.
    let mut cmd = device.apply_cmd(&doc, &[]);
    cmd.env("DOCKER_CONFIG", login.path());
    let applied = crate::cli_apply::Applied::from(crate::util::run(&mut cmd));
    assert_eq!(applied.last_status(), "COMPLETED", "{applied}");
    assert!(!applied.to_string().contains(&auth_password()), "{applied}");

    // [[registries]] alone, with docker's logins out of sight.
    docker(&["rm", "-f", &name]);
    docker(&["rmi", &reference]);
    let good = berth_config(dir.path(), &auth_password());
    let mut cmd = device.apply_cmd(&doc, &["--config", good.to_str().expect("utf-8 path")]);
    cmd.env("DOCKER_CONFIG", empty.path());
    let applied = crate::cli_apply::Applied::from(crate::util::run(&mut cmd));
    assert_eq!(applied.last_status(), "COMPLETED", "{applied}");
    assert!(!applied.to_string().contains(&auth_password()), "{applied}");
    let _ = Command::new("docker").args(["rmi", &reference]).output();
}
