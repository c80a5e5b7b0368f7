//! The test environment itself: the real engine, the local registry with the
//! test images, and the broker. Every later integration test relies on these
//! facts, so they are checked first-hand here.

use std::time::{Duration, Instant};

use crate::util::{docker, image, unique, Cleanup};

#[test]
fn engine_answers() {
    let version = docker(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert!(
        version.starts_with("1."),
        "unexpected API version {version}"
    );
}

#[test]
fn test_images_pull_from_the_local_registry() {
    for name in ["service", "crash", "unhealthy", "healthy", "volume"] {
        for tag in ["1", "2"] {
            docker(&["pull", "-q", &image(name, tag)]);
        }
    }
}

#[test]
fn the_two_service_versions_are_different_images() {
    let one = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &image("service", "1"),
    ]);
    let two = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &image("service", "2"),
    ]);
    assert_ne!(one, two);
}

#[test]
fn service_exits_zero_on_sigterm() {
    let name = unique("sigterm");
    let _cleanup = Cleanup(name.clone());
    docker(&["run", "-d", "--name", &name, &image("service", "1")]);
    // A stop timeout far above any plausible shutdown: a container that
    // ignored SIGTERM would be killed and report 137, not 0.
    docker(&["stop", "-t", "60", &name]);
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.ExitCode}}", &name]),
        "0"
    );
}

#[test]
fn crash_exits_one() {
    let name = unique("crash");
    let _cleanup = Cleanup(name.clone());
    // `docker run` reports the container's own exit status, so use create+start.
    docker(&["create", "--name", &name, &image("crash", "1")]);
    let _ = std::process::Command::new("docker")
        .args(["start", "-a", &name])
        .output();
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.ExitCode}}", &name]),
        "1"
    );
}

#[test]
fn unhealthy_image_becomes_unhealthy() {
    let name = unique("unhealthy");
    let _cleanup = Cleanup(name.clone());
    docker(&["run", "-d", "--name", &name, &image("unhealthy", "1")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut status = String::new();
    while Instant::now() < deadline {
        status = docker(&["inspect", "--format", "{{.State.Health.Status}}", &name]);
        if status == "unhealthy" {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(status, "unhealthy");
}

#[test]
fn volume_image_declares_an_anonymous_volume() {
    let volumes = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Volumes}}",
        &image("volume", "1"),
    ]);
    assert!(volumes.contains("/data"), "{volumes}");
}

#[test]
fn broker_accepts_a_publish() {
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-t", "berth/test/ping", "-m", "ping"])
        .output()
        .expect("mosquitto_pub runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
