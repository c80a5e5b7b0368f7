//! `berth state` against the real engine: Kanto's current-state message and
//! the table. Every container on the engine is listed and tests run in
//! parallel, so each test looks only at its own containers.

use std::process::Output;

use serde_json::Value;

use crate::util::{
    berth, desired_state, docker, free_port, image, json_stdout, repo_path, run, temp_file, text,
    unique, Cleanup,
};

/// Starts a hand-made (unlabelled) container; removed when the guard drops.
fn hand_made(short: &str, flags: &[&str]) -> (String, Cleanup) {
    let name = unique(short);
    let cleanup = Cleanup(name.clone());
    let img = image("service", "1");
    let mut args = vec!["run", "-d", "--name", &name];
    args.extend_from_slice(flags);
    args.push(&img);
    docker(&args);
    (name, cleanup)
}

/// `berth state EXTRA...`, which must succeed.
fn state(extra: &[&str]) -> Output {
    let out = run(berth().arg("state").args(extra));
    assert!(
        out.status.success(),
        "state failed: {:?}\nstderr: {}",
        out.status,
        text(&out.stderr)
    );
    out
}

/// `berth state --json EXTRA...`, parsed.
fn state_json(extra: &[&str]) -> Value {
    json_stdout(&state(&[&["--json"], extra].concat()))
}

/// The software node of one container.
fn node<'a>(state: &'a Value, name: &str) -> &'a Value {
    let id = format!("containers:{name}");
    state["payload"]["softwareNodes"]
        .as_array()
        .expect("softwareNodes is an array")
        .iter()
        .find(|n| n["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no node {id} in {state:#}"))
}

/// A node's parameters as (key, value) pairs, in order.
fn parameters(node: &Value) -> Vec<(String, String)> {
    node["parameters"]
        .as_array()
        .expect("parameters is an array")
        .iter()
        .map(|p| {
            (
                p["key"].as_str().expect("key is a string").to_string(),
                p["value"].as_str().expect("value is a string").to_string(),
            )
        })
        .collect()
}

/// The value of a single-valued parameter.
fn parameter(node: &Value, key: &str) -> Option<String> {
    parameters(node)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn env(node: &Value) -> Vec<String> {
    parameters(node)
        .into_iter()
        .filter(|(k, _)| k == "env")
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn hand_made_container_is_a_node_linked_from_the_agent() {
    let (name, _cleanup) = hand_made("node", &[]);
    let state = state_json(&[]);
    let node = node(&state, &name);
    assert_eq!(node["version"], "1", "{node:#}");
    assert_eq!(node["type"], "CONTAINER", "{node:#}");
    assert_eq!(
        parameter(node, "image").as_deref(),
        Some(image("service", "1").as_str()),
        "{node:#}"
    );
    assert_eq!(
        parameter(node, "status").as_deref(),
        Some("Running"),
        "{node:#}"
    );
    let target = format!("containers:{name}");
    let linked = state["payload"]["associations"]
        .as_array()
        .expect("associations is an array")
        .iter()
        .any(|a| a["sourceId"] == "containers-update-agent" && a["targetId"] == target.as_str());
    assert!(linked, "no association to {target}: {state:#}");
}

#[test]
fn secret_env_values_are_redacted_and_image_env_left_out() {
    let (name, _cleanup) = hand_made(
        "redact",
        &["-e", "DB_PASSWORD=hunter2", "-e", "LOG_LEVEL=debug"],
    );
    let out = state(&["--json"]);
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("hunter2"), "secret leaked: {stdout}");
    let state = json_stdout(&out);
    let env = env(node(&state, &name));
    assert!(
        env.contains(&"DB_PASSWORD=<redacted>".to_string()),
        "{env:?}"
    );
    assert!(env.contains(&"LOG_LEVEL=debug".to_string()), "{env:?}");
    assert!(
        !env.iter()
            .any(|e| e.starts_with("IMAGE_DEFAULT=") || e.starts_with("PATH=")),
        "image env listed: {env:?}"
    );
}

#[test]
fn redact_env_patterns_replace_the_defaults() {
    let (name, _cleanup) = hand_made(
        "redact-custom",
        &["-e", "DB_PASSWORD=hunter2", "-e", "LOG_LEVEL=debug"],
    );
    let state = state_json(&["--redact-env", "*LEVEL*"]);
    let env = env(node(&state, &name));
    assert!(env.contains(&"LOG_LEVEL=<redacted>".to_string()), "{env:?}");
    assert!(env.contains(&"DB_PASSWORD=hunter2".to_string()), "{env:?}");
}

#[test]
fn exited_container_reports_exited_and_its_exit_code() {
    let name = unique("exited");
    let _cleanup = Cleanup(name.clone());
    docker(&["create", "--name", &name, &image("crash", "1")]);
    // `start -a` waits for the exit and reports the container's own status.
    let _ = std::process::Command::new("docker")
        .args(["start", "-a", &name])
        .output();
    let state = state_json(&[]);
    let node = node(&state, &name);
    assert_eq!(
        parameter(node, "status").as_deref(),
        Some("Exited"),
        "{node:#}"
    );
    assert_eq!(
        parameter(node, "exitCode").as_deref(),
        Some("1"),
        "{node:#}"
    );
    assert!(parameter(node, "finishedAt").is_some(), "{node:#}");
}

#[test]
fn json_state_conforms_to_the_published_schema() {
    let (name, _cleanup) = hand_made("schema", &["-e", "DB_PASSWORD=hunter2", "--memory", "64m"]);
    let state = state_json(&[]);
    node(&state, &name);
    let schema_text =
        std::fs::read_to_string(repo_path("schemas/current-state.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&schema_text).unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&state)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{state:#}");
}

/// The table's header and the row of one container, split into cells
/// (no cell of a running container holds a space).
fn table_row(stdout: &str, name: &str) -> (Vec<String>, Vec<String>) {
    let mut lines = stdout.lines();
    let header = lines
        .next()
        .expect("a header")
        .split_whitespace()
        .map(String::from)
        .collect();
    let row = lines
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"));
    (header, row)
}

#[test]
fn table_shows_a_hand_made_container_as_unmanaged() {
    let (name, _cleanup) = hand_made("table", &[]);
    let stdout = text(&state(&[]).stdout);
    assert!(!stdout.contains('\x1b'), "colour on a pipe: {stdout:?}");
    let (header, row) = table_row(&stdout, &name);
    assert_eq!(
        header,
        ["NAME", "IMAGE", "VERSION", "STATUS", "OWNER", "UPTIME"]
    );
    assert_eq!(
        row[..5],
        [
            name.clone(),
            image("service", "1"),
            "1".into(),
            "running".into(),
            "unmanaged".into()
        ],
        "{stdout}"
    );
}

#[test]
fn table_marks_system_containers() {
    let (name, _cleanup) = hand_made("table-system", &[]);
    let stdout = text(&state(&["--system-containers", &name]).stdout);
    let (_, row) = table_row(&stdout, &name);
    assert_eq!(row.get(4).map(String::as_str), Some("system"), "{stdout}");
}

#[test]
fn parameters_of_a_hand_made_container_round_trip_to_keep() {
    let port = free_port().to_string();
    let publish = format!("127.0.0.1:{port}:8080");
    let (name, _cleanup) = hand_made(
        "round-trip",
        &[
            "-e",
            "FOO=bar",
            "-p",
            &publish,
            "--memory",
            "64m",
            "--restart",
            "always",
        ],
    );
    let state = state_json(&[]);
    let config: Vec<(String, String)> = parameters(node(&state, &name))
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "status" | "created" | "exitCode" | "finishedAt" | "restartCount"
            )
        })
        .collect();
    for key in ["image", "env", "port", "memory", "restartPolicy"] {
        assert!(
            config.iter().any(|(k, _)| k == key),
            "no {key} in {config:?}"
        );
    }
    let pairs: Vec<(&str, &str)> = config
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = temp_file(
        dir.path(),
        "round-trip.json",
        &desired_state("round-trip", &[(&name, "1", &pairs)]),
    );
    let validate = run(berth().arg("validate").arg(&file));
    assert!(
        validate.status.success(),
        "validate refused {config:?}: {}",
        text(&validate.stderr)
    );
    let out = run(berth().args(["plan", "--json"]).arg(&file));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan = json_stdout(&out);
    let entry = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == name.as_str())
        .unwrap_or_else(|| panic!("no entry for {name}: {plan:#}"));
    assert_eq!(entry["action"], "keep", "{config:?}\n{entry:#}");
}
