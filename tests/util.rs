//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root, for fixtures and examples.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path below the repository root.
pub fn repo_path(rel: &str) -> PathBuf {
    root().join(rel)
}

/// The berth binary built for this test run.
///
/// Each test gets its own berth instance (named after the test), so the
/// containers one test's berth creates are never planned, removed or
/// recovered by another test's berth running at the same time.
pub fn berth() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.current_dir(root());
    cmd.env_remove("BERTH_LOG");
    cmd.env("BERTH_INSTANCE", instance());
    cmd
}

/// The berth instance name of the current test.
pub fn instance() -> String {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("main");
    let name: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("it-{}-{}", std::process::id(), name.trim_matches('-'))
}

/// Runs a command and captures what it printed.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("command starts")
}

/// Text of a captured stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether integration tests that need the engine were switched off on
/// purpose. Anything else that stops them is a failure, never a silent pass.
pub fn skip_docker(test: &str) -> bool {
    let skip = std::env::var("BERTH_SKIP_DOCKER").is_ok_and(|v| v == "1");
    if skip {
        eprintln!(
            "!!! SKIPPED {test}: BERTH_SKIP_DOCKER=1 is set, the real engine is not used !!!"
        );
    }
    skip
}

/// Runs the docker CLI and returns its stdout, panicking with its stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs");
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// The registry the test environment serves images from.
pub fn registry() -> String {
    std::env::var("BERTH_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

/// Writes a file into a fresh temporary directory.
pub fn temp_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

/// A container name unique to this test process: tests of one run share an
/// engine with each other and with any other run going on at the same time.
pub fn unique(name: &str) -> String {
    format!("berth-it-{}-{name}", std::process::id())
}

/// Removes a container, and its anonymous volumes, when the test ends,
/// however it ends.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.0])
            .output();
    }
}

/// A test image in the local registry: `image("service", "1")`.
pub fn image(name: &str, tag: &str) -> String {
    format!("{}/berth-test/{name}:{tag}", registry())
}

/// One component of a document: its id, its version and its config.
pub type Component<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// A desired-state document with one component per `(id, version, config)`.
pub fn desired_state(activity: &str, components: &[Component]) -> String {
    let components: Vec<serde_json::Value> = components
        .iter()
        .map(|(id, version, config)| {
            let config: Vec<serde_json::Value> = config
                .iter()
                .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
                .collect();
            serde_json::json!({"id": id, "version": version, "config": config})
        })
        .collect();
    serde_json::json!({
        "activityId": activity,
        "payload": {"domains": [{"id": "containers", "components": components}]}
    })
    .to_string()
}

/// Parses a command's standard output as JSON, failing with everything it
/// printed when that is not possible.
pub fn json_stdout(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}); status {:?}\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

/// A TCP port nothing on 127.0.0.1 listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}
