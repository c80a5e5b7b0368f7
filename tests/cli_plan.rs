//! `berth plan` against the real engine: the real-engine counterparts of
//! src/plan_tests.rs. Every plan sees every container on the engine, and
//! tests run in parallel, so each test asserts only on its own entries.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{
    berth, desired_state, docker, image, json_stdout, repo_path, run, temp_file, text, unique,
    Cleanup,
};

/// Starts a hand-made (unlabelled) container; removed when the guard drops.
fn hand_made(short: &str, flags: &[&str], image_tag: &str) -> (String, Cleanup) {
    let name = unique(short);
    let cleanup = Cleanup(name.clone());
    let img = image("service", image_tag);
    let mut args = vec!["run", "-d", "--name", &name];
    args.extend_from_slice(flags);
    args.push(&img);
    docker(&args);
    (name, cleanup)
}

/// Writes a one-component document for `name` into `dir`.
fn document(dir: &Path, name: &str, config: &[(&str, &str)]) -> PathBuf {
    temp_file(
        dir,
        "desired.json",
        &desired_state(&format!("plan-{name}"), &[(name, "1", config)]),
    )
}

/// `berth plan --json FILE EXTRA...`, which must succeed.
fn plan_json(file: &Path, extra: &[&str]) -> Value {
    let out = run(berth().args(["plan", "--json"]).args(extra).arg(file));
    assert!(
        out.status.success(),
        "plan failed: {:?}\nstderr: {}",
        out.status,
        text(&out.stderr)
    );
    json_stdout(&out)
}

/// The plan entry of one container.
fn entry<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["actions"]
        .as_array()
        .expect("actions is an array")
        .iter()
        .find(|e| e["id"] == name)
        .unwrap_or_else(|| panic!("no entry for {name} in {plan:#}"))
}

fn action(plan: &Value, name: &str) -> String {
    entry(plan, name)["action"]
        .as_str()
        .expect("action is a string")
        .to_string()
}

fn reasons(plan: &Value, name: &str) -> Vec<String> {
    entry(plan, name)["reasons"]
        .as_array()
        .expect("reasons is an array")
        .iter()
        .map(|r| r.as_str().expect("reason is a string").to_string())
        .collect()
}

/// Asserts the entry's action and that one of its reasons is exactly `reason`.
fn assert_entry(plan: &Value, name: &str, want_action: &str, reason: &str) {
    let e = entry(plan, name);
    assert_eq!(action(plan, name), want_action, "{e:#}");
    assert!(
        reasons(plan, name).iter().any(|r| r == reason),
        "no reason {reason:?} in {e:#}"
    );
}

#[test]
fn hand_made_container_matching_the_document_is_adopted_and_kept() {
    let (name, _cleanup) = hand_made("adopt-keep", &["-e", "FOO=1"], "1");
    let dir = tempfile::tempdir().unwrap();
    // The image's own IMAGE_DEFAULT (and PATH) are in the container's env but
    // not in the document; they must not count as differences.
    let file = document(
        dir.path(),
        &name,
        &[("image", &image("service", "1")), ("env", "FOO=1")],
    );
    let plan = plan_json(&file, &[]);
    assert_eq!(action(&plan, &name), "keep", "{plan:#}");
    assert!(
        reasons(&plan, &name).iter().any(|r| r.contains("adopted")),
        "{plan:#}"
    );
    assert!(entry(&plan, &name).get("diff").is_none(), "{plan:#}");
}

#[test]
fn hand_made_container_with_a_different_env_value_is_recreated() {
    let (name, _cleanup) = hand_made("env-changed", &["-e", "FOO=1"], "1");
    let dir = tempfile::tempdir().unwrap();
    let file = document(
        dir.path(),
        &name,
        &[("image", &image("service", "1")), ("env", "FOO=2")],
    );
    let plan = plan_json(&file, &[]);
    assert_entry(&plan, &name, "recreate", "env FOO changed");
}

#[test]
fn image_tag_change_is_recreate_with_a_short_reason() {
    let (name, _cleanup) = hand_made("image-tag", &[], "1");
    let dir = tempfile::tempdir().unwrap();
    let file = document(dir.path(), &name, &[("image", &image("service", "2"))]);
    let plan = plan_json(&file, &[]);
    assert_entry(
        &plan,
        &name,
        "recreate",
        &format!("image {} -> :2", image("service", "1")),
    );
}

#[test]
fn memory_change_is_update_in_place() {
    let (name, _cleanup) = hand_made("memory", &["--memory", "64m"], "1");
    let dir = tempfile::tempdir().unwrap();
    let file = document(
        dir.path(),
        &name,
        &[("image", &image("service", "1")), ("memory", "128M")],
    );
    let plan = plan_json(&file, &[]);
    assert_entry(&plan, &name, "update", "memory 64M -> 128M (in place)");
}

#[test]
fn restart_policy_change_is_update_in_place() {
    let (name, _cleanup) = hand_made("restart", &["--restart", "no"], "1");
    let dir = tempfile::tempdir().unwrap();
    let file = document(
        dir.path(),
        &name,
        &[
            ("image", &image("service", "1")),
            ("restartPolicy", "always"),
        ],
    );
    let plan = plan_json(&file, &[]);
    assert_entry(
        &plan,
        &name,
        "update",
        "restart policy no -> always (in place)",
    );
}

#[test]
fn missing_published_port_is_recreate_with_the_port_named() {
    let (name, _cleanup) = hand_made("port", &[], "1");
    let dir = tempfile::tempdir().unwrap();
    // Planning only reads, so nothing needs to be free on this port.
    let file = document(
        dir.path(),
        &name,
        &[("image", &image("service", "1")), ("port", "18080:80")],
    );
    let plan = plan_json(&file, &[]);
    assert_entry(&plan, &name, "recreate", "port 18080:80/tcp added");
}

#[test]
fn absent_container_is_created() {
    let name = unique("absent");
    let _cleanup = Cleanup(name.clone());
    let dir = tempfile::tempdir().unwrap();
    let file = document(dir.path(), &name, &[("image", &image("service", "1"))]);
    let plan = plan_json(&file, &[]);
    assert_eq!(action(&plan, &name), "create", "{plan:#}");
    assert!(
        reasons(&plan, &name)[0].contains("absent"),
        "{:#}",
        entry(&plan, &name)
    );
    assert!(entry(&plan, &name).get("containerId").is_none());
}

/// A document naming only a container that does not exist, so a hand-made
/// container is absent from it.
fn document_without(dir: &Path, name: &str) -> PathBuf {
    document(
        dir,
        &format!("{name}-other"),
        &[("image", &image("service", "1"))],
    )
}

#[test]
fn hand_made_container_absent_from_the_document_is_ignored() {
    let (name, _cleanup) = hand_made("unmanaged", &[], "1");
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_json(&document_without(dir.path(), &name), &[]);
    assert_eq!(action(&plan, &name), "ignore", "{plan:#}");
    assert!(
        reasons(&plan, &name)[0].contains("not managed by berth"),
        "{:#}",
        entry(&plan, &name)
    );
}

#[test]
fn hand_made_container_absent_from_the_document_is_removed_under_scope_all() {
    let (name, _cleanup) = hand_made("scope-all", &[], "1");
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_json(&document_without(dir.path(), &name), &["--scope", "all"]);
    assert_eq!(action(&plan, &name), "remove", "{plan:#}");
}

#[test]
fn system_container_listed_in_the_document_is_ignored() {
    let (name, _cleanup) = hand_made("system", &[], "1");
    let dir = tempfile::tempdir().unwrap();
    let file = document(dir.path(), &name, &[("image", &image("service", "2"))]);
    let plan = plan_json(&file, &["--system-containers", &name]);
    assert_eq!(action(&plan, &name), "ignore", "{plan:#}");
    assert!(
        reasons(&plan, &name)[0].contains("system container"),
        "{:#}",
        entry(&plan, &name)
    );
}

#[test]
fn stopped_container_matching_the_document_is_started() {
    let (name, _cleanup) = hand_made("stopped", &[], "1");
    docker(&["stop", "-t", "60", &name]);
    let dir = tempfile::tempdir().unwrap();
    // The document leaves restartPolicy at its default, unless-stopped: a
    // container that exited 0 should still run.
    let file = document(dir.path(), &name, &[("image", &image("service", "1"))]);
    let plan = plan_json(&file, &[]);
    assert_eq!(action(&plan, &name), "start", "{plan:#}");
    assert!(
        reasons(&plan, &name)[0].contains("exited (code 0)"),
        "{:#}",
        entry(&plan, &name)
    );
}

#[test]
fn detailed_exitcode_is_two_when_something_changes() {
    let name = unique("exitcode-2");
    let _cleanup = Cleanup(name.clone());
    let dir = tempfile::tempdir().unwrap();
    let file = document(dir.path(), &name, &[("image", &image("service", "1"))]);
    let out = run(berth()
        .args(["plan", "--json", "--detailed-exitcode"])
        .arg(&file));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(action(&json_stdout(&out), &name), "create");
}

#[test]
fn detailed_exitcode_is_zero_when_everything_is_kept() {
    let (name, _cleanup) = hand_made("exitcode-0", &["-e", "FOO=1"], "1");
    let dir = tempfile::tempdir().unwrap();
    let file = document(
        dir.path(),
        &name,
        &[("image", &image("service", "1")), ("env", "FOO=1")],
    );
    let out = run(berth()
        .args(["plan", "--json", "--detailed-exitcode"])
        .arg(&file));
    let plan = json_stdout(&out);
    assert_eq!(action(&plan, &name), "keep", "{plan:#}");
    // Other tests' containers are unmanaged, hence `ignore`, which changes
    // nothing. Should a berth-managed container of someone else's sit on the
    // engine, it is `remove` here and the exit code must say so.
    let foreign_changes: Vec<&Value> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !matches!(e["action"].as_str(), Some("keep" | "ignore")))
        .collect();
    let expected = if foreign_changes.is_empty() { 0 } else { 2 };
    assert_eq!(
        out.status.code(),
        Some(expected),
        "changes: {foreign_changes:#?}\nstderr: {}",
        text(&out.stderr)
    );
}

#[test]
fn invalid_document_is_refused_like_validate_without_contacting_the_engine() {
    let name = unique("invalid");
    let dir = tempfile::tempdir().unwrap();
    let file = document(
        dir.path(),
        &name,
        &[("image", &image("service", "1")), ("privileged", "YES")],
    );
    let nowhere = "unix:///nonexistent.sock";
    let plan = run(berth()
        .env("DOCKER_HOST", nowhere)
        .args(["plan", "--json"])
        .arg(&file));
    let validate = run(berth()
        .env("DOCKER_HOST", nowhere)
        .arg("validate")
        .arg(&file));
    let stderr = text(&plan.stderr);
    assert_eq!(plan.status.code(), Some(1), "{stderr}");
    assert_eq!(validate.status.code(), Some(1));
    assert!(
        stderr.contains(&format!(
            "domains[0].components[0] ({name}) config \"privileged\""
        )),
        "{stderr}"
    );
    assert_eq!(stderr, text(&validate.stderr));
    assert!(
        !stderr.contains("cannot reach") && !stderr.contains("connecting"),
        "the engine was contacted: {stderr}"
    );
    assert!(plan.stdout.is_empty(), "{}", text(&plan.stdout));
}

#[test]
fn unreachable_engine_is_a_one_line_error() {
    let name = unique("unreachable");
    let dir = tempfile::tempdir().unwrap();
    let file = document(dir.path(), &name, &[("image", &image("service", "1"))]);
    let out = run(berth()
        .args(["plan", "--docker-host", "unix:///nonexistent.sock"])
        .arg(&file));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("Docker engine"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}

/// The column at which an action line's reason starts: lines are
/// `  <mark> <action padded to 8>  <id padded to the widest id>  <reason>`.
fn reason_column(line: &str) -> Option<usize> {
    let after_id = 14 + line.get(14..)?.find(' ')?;
    let rest = &line[after_id..];
    let spaces = rest.len() - rest.trim_start().len();
    (!rest.trim().is_empty()).then_some(after_id + spaces)
}

#[test]
fn human_output_has_an_aligned_line_per_container_and_a_summary() {
    let (name, _cleanup) = hand_made("human", &["-e", "FOO=1"], "1");
    let dir = tempfile::tempdir().unwrap();
    let file = document(
        dir.path(),
        &name,
        &[("image", &image("service", "1")), ("env", "FOO=1")],
    );
    let out = run(berth().arg("plan").arg(&file));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains('\x1b'), "colour on a pipe: {stdout:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("Plan for activity plan-{name}:"));
    let mine = lines
        .iter()
        .find(|l| l.starts_with(&format!("  = keep      {name} ")))
        .unwrap_or_else(|| panic!("no aligned keep line for {name}:\n{stdout}"));
    assert!(mine.contains("adopted"), "{mine}");
    // Every action line starts its reason in the same column.
    let markers = ["+ ", "~ ", "> ", "= ", "- ", "! "];
    let columns: Vec<usize> = lines
        .iter()
        .filter(|l| markers.iter().any(|m| l.get(2..4) == Some(*m)))
        .filter_map(|l| reason_column(l))
        .collect();
    assert!(!columns.is_empty(), "{stdout}");
    assert!(
        columns.iter().all(|c| *c == columns[0]),
        "reasons not aligned: {columns:?}\n{stdout}"
    );
    let summary = lines.last().unwrap();
    assert!(summary.starts_with("Plan: "), "{stdout}");
    assert!(
        summary.starts_with("Plan: 0 to create, 0 to recreate, 0 to update in place"),
        "{summary}"
    );
    assert!(summary.contains(", 1 unchanged"), "{summary}");
}

/// Validates a plan against schemas/plan.schema.json, listing every error.
fn schema_errors(plan: &Value) -> Vec<String> {
    let schema_text = std::fs::read_to_string(repo_path("schemas/plan.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&schema_text).unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    validator.iter_errors(plan).map(|e| e.to_string()).collect()
}

#[test]
fn json_plan_conforms_to_the_published_schema() {
    // Entries that carry the optional fields: a recreate (diff, containerId)
    // and a create (neither).
    let (name, _cleanup) = hand_made("schema", &["-e", "FOO=1"], "1");
    let absent = unique("schema-absent");
    let _absent_cleanup = Cleanup(absent.clone());
    let dir = tempfile::tempdir().unwrap();
    let service_1 = image("service", "1");
    let file = temp_file(
        dir.path(),
        "desired.json",
        &desired_state(
            "plan-schema",
            &[
                (&name, "1", &[("image", &service_1), ("env", "FOO=2")]),
                (&absent, "1", &[("image", &service_1)]),
            ],
        ),
    );
    let plan = plan_json(&file, &[]);
    assert_eq!(action(&plan, &name), "recreate", "{plan:#}");
    assert!(entry(&plan, &name)["diff"].is_string(), "{plan:#}");
    assert_eq!(action(&plan, &absent), "create", "{plan:#}");
    let errors = schema_errors(&plan);
    assert!(errors.is_empty(), "{errors:#?}\n{plan:#}");
}

#[test]
fn json_plan_with_warnings_conforms_to_the_published_schema() {
    // A network that does not exist gives the plan a warning, so `warnings`
    // is printed; the entries are a recreate (diff, containerId) and a
    // create (neither).
    let (name, _cleanup) = hand_made("schema-warn", &["-e", "FOO=1"], "1");
    let absent = unique("schema-warn-absent");
    let _absent_cleanup = Cleanup(absent.clone());
    let network = unique("no-such-network");
    let dir = tempfile::tempdir().unwrap();
    let service_1 = image("service", "1");
    let file = temp_file(
        dir.path(),
        "desired.json",
        &desired_state(
            "plan-schema-warnings",
            &[
                (&name, "1", &[("image", &service_1), ("env", "FOO=2")]),
                (
                    &absent,
                    "1",
                    &[("image", &service_1), ("network", &network)],
                ),
            ],
        ),
    );
    let plan = plan_json(&file, &[]);
    assert_eq!(action(&plan, &name), "recreate", "{plan:#}");
    assert!(entry(&plan, &name)["diff"].is_string(), "{plan:#}");
    assert_eq!(action(&plan, &absent), "create", "{plan:#}");
    assert!(
        plan["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains(&network)))),
        "{plan:#}"
    );
    let errors = schema_errors(&plan);
    assert!(errors.is_empty(), "{errors:#?}\n{plan:#}");
}
