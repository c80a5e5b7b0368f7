//! `berth validate`: exit codes, one line per problem, JSON verdicts.

use crate::util::{berth, repo_path, run, temp_file, text};

const TEN_MISTAKES: &str = "tests/fixtures/documents/ten-mistakes.json";

fn examples() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo_path("examples"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| format!("examples/{}", e.file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".json"))
        .collect();
    v.sort();
    v
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.contains(": warning: "))
        .collect()
}

#[test]
fn every_example_is_valid_and_exits_zero() {
    let out = run(berth().arg("validate").args(examples()));
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for example in examples() {
        assert!(stdout.contains(&format!("{example}: valid (")), "{stdout}");
    }
}

#[test]
fn ten_mistakes_give_ten_lines_each_naming_component_and_key() {
    let out = run(berth().args(["validate", TEN_MISTAKES]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 10, "{stderr}");
    for line in lines {
        assert!(
            line.starts_with(&format!("{TEN_MISTAKES}: domains[0].components[")),
            "{line}"
        );
        assert!(
            line.contains("(influxdb) config") || line.contains("(telegraf) config"),
            "{line}"
        );
    }
}

#[test]
fn each_line_quotes_the_offending_value() {
    let stderr = text(&run(berth().args(["validate", TEN_MISTAKES])).stderr);
    for value in [
        "\"loopback:55555:30555-30555/tcp\"",
        "\"YES\"",
        "\"512\"",
        "\"sometimes\"",
        "\"-3\"",
    ] {
        assert!(stderr.contains(value), "missing {value} in {stderr}");
    }
}

#[test]
fn a_misspelt_key_gets_a_suggestion() {
    let stderr = text(&run(berth().args(["validate", TEN_MISTAKES])).stderr);
    assert!(
        stderr.contains("\"imgae\": is not a known key; did you mean \"image\"?"),
        "{stderr}"
    );
}

#[test]
fn a_valid_and_an_invalid_file_exit_one_and_report_both() {
    let out = run(berth().args(["validate", "examples/minimal.json", TEN_MISTAKES]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("examples/minimal.json: valid (1 container)"));
    assert!(text(&out.stderr).contains(TEN_MISTAKES));
}

#[test]
fn dash_reads_standard_input() {
    let doc = std::fs::read(repo_path("examples/minimal.json")).unwrap();
    let mut child = berth()
        .args(["validate", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&doc).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "-: valid (1 container)");
}

#[test]
fn json_prints_one_verdict_per_file() {
    let out = run(berth().args(["validate", "--json", "examples/minimal.json", TEN_MISTAKES]));
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let verdicts: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(verdicts.len(), 2);
    assert_eq!(verdicts[0]["file"], "examples/minimal.json");
    assert_eq!(verdicts[0]["valid"], true);
    assert_eq!(verdicts[0]["errors"], serde_json::json!([]));
    assert_eq!(verdicts[1]["valid"], false);
    let errors = verdicts[1]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 10);
    assert_eq!(
        errors[0]["path"],
        "domains[0].components[0] (influxdb) config \"port\""
    );
    assert!(errors[0]["message"].as_str().unwrap().contains("loopback"));
}

#[test]
fn warnings_do_not_fail_validation() {
    let dir = tempfile::tempdir().unwrap();
    let doc = r#"{"activityId":"w","payload":{"domains":[{"id":"containers","components":[
        {"id":"web","config":[{"key":"image","value":"nginx"},{"key":"status","value":"Running"}]}]}]}}"#;
    let file = temp_file(dir.path(), "w.json", doc);
    let out = run(berth().arg("validate").arg(&file));
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("warning: domains[0].components[0] (web) config \"status\""));
}

#[test]
fn non_json_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = temp_file(
        dir.path(),
        "bad.json",
        "{\n  \"activityId\": \"x\",\n  oops\n}",
    );
    let out = run(berth().arg("validate").arg(&file));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("is not valid JSON"), "{stderr}");
    assert!(stderr.contains("(line 3, column 3)"), "{stderr}");
}

#[test]
fn wrong_typed_json_names_the_path_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let doc = "{\"activityId\":\"a\",\"payload\":{\"domains\":[{\"id\":\"containers\",\"components\":[\n{\"id\":\"web\",\"config\":[{\"key\":\"privileged\",\"value\":true}]}]}]}}";
    let file = temp_file(dir.path(), "typed.json", doc);
    let stderr = text(&run(berth().arg("validate").arg(&file)).stderr);
    assert!(stderr.contains("payload.domains[0].components[0].config[0].value: invalid type: boolean `true`, expected a string"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
}

#[test]
fn a_missing_file_is_reported_and_fails() {
    let out = run(berth().args(["validate", "no/such/file.json"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no/such/file.json: document: cannot be read"));
}

#[test]
fn validate_needs_no_engine() {
    // Pointing at an engine that does not exist proves validate never calls one.
    let mut cmd = berth();
    cmd.env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["validate", "examples/full.json"]);
    assert!(run(&mut cmd).status.success());
}

#[test]
fn help_shows_examples() {
    let out = run(berth().arg("--help"));
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("berth validate examples/*.json"));
}

#[test]
fn version_prints_the_crate_version() {
    let out = run(berth().arg("--version"));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("berth {}", env!("CARGO_PKG_VERSION"))
    );
}
