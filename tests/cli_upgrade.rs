//! `berth upgrade`, `berth history` and `berth rollback` against the real
//! engine and the local registry: tags moved for the selected components
//! only, a missing tag refused before anything changes, a failed release
//! rolled back with the state file restored byte for byte, the history of
//! activities, rollbacks (with a file source rewritten), and an upgrade
//! handed to a running agent that reads the file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli_apply::{config_image, identity, running, Device};
use crate::util::{image, run, text, Background};

/// Three services a, b and c on `service:1`.
fn three_on_one(d: &Device) -> (PathBuf, [String; 3]) {
    let img = image("service", "1");
    let names = [d.name("a"), d.name("b"), d.name("c")];
    let doc = d.doc(
        "state",
        &[
            (&names[0], "1", &[("image", &img)]),
            (&names[1], "1", &[("image", &img)]),
            (&names[2], "1", &[("image", &img)]),
        ],
    );
    (doc, names)
}

/// `berth upgrade ARGS...` as this device, with a quick readiness gate.
fn upgrade(d: &Device, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--min-ready", "1s"];
    all.extend_from_slice(args);
    run(&mut d.berth_cmd("upgrade", &all))
}

fn show(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `berth history --json` of this device.
fn history(d: &Device) -> Vec<Value> {
    let out = run(&mut d.berth_cmd("history", &["--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("history is a JSON array")
}

/// The component `name`'s `after` image in a history record.
fn after_image<'a>(record: &'a Value, name: &str) -> &'a str {
    record["components"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["component"] == name))
        .and_then(|c| c["after"]["image"].as_str())
        .unwrap_or("")
}

/// The document `doc` parsed, with `names` moved to tag `to`.
fn moved(doc: &Value, names: &[&str], to: &str) -> Value {
    let mut expected = doc.clone();
    for c in expected["payload"]["domains"][0]["components"]
        .as_array_mut()
        .expect("components")
    {
        if !names.iter().any(|n| c["id"] == *n) {
            continue;
        }
        c["version"] = to.into();
        for kv in c["config"].as_array_mut().expect("config") {
            if kv["key"] == "image" {
                let v = kv["value"].as_str().expect("image").to_string();
                let (repo, _) = v.rsplit_once(':').expect("a tag");
                kv["value"] = format!("{repo}:{to}").into();
            }
        }
    }
    expected
}

#[test]
fn upgrade_moves_the_named_components_to_the_new_tag_and_changes_nothing_else_in_the_file() {
    let d = Device::new("up-named");
    let (doc, [a, b, c]) = three_on_one(&d);
    d.apply_ok(&doc, &[]);
    let c_before = identity(&c);
    let before: Value = serde_json::from_str(&std::fs::read_to_string(&doc).unwrap()).unwrap();

    let components = format!("{a},{b}");
    let out = upgrade(
        &d,
        &["2", "--file", path(&doc), "--components", &components],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    assert_eq!(config_image(&a), image("service", "2"));
    assert_eq!(config_image(&b), image("service", "2"));
    assert_eq!(identity(&c), c_before, "c is untouched");
    let after: Value = serde_json::from_str(&std::fs::read_to_string(&doc).unwrap()).unwrap();
    let id = after["activityId"].as_str().unwrap_or("");
    assert!(id.starts_with("upgrade-2-"), "a new activity: {id}");
    let mut expected = moved(&before, &[&a, &b], "2");
    expected["activityId"] = id.into();
    assert_eq!(
        after, expected,
        "only the tags, versions and activity id change"
    );
    let words = text(&out.stdout);
    assert!(words.contains("Upgraded to 2 in"), "{}", show(&out));
}

#[test]
fn upgrade_without_names_moves_the_components_on_the_most_shared_tag_and_says_which() {
    let d = Device::new("up-shared");
    let one = image("service", "1");
    let two = image("service", "2");
    let (a, b, c) = (d.name("a"), d.name("b"), d.name("c"));
    let doc = d.doc(
        "state",
        &[
            (&a, "1", &[("image", &one)]),
            (&b, "1", &[("image", &one)]),
            (&c, "2", &[("image", &two)]),
        ],
    );
    let out = upgrade(&d, &["2", "--file", path(&doc), "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let words = text(&out.stdout);
    assert!(
        words.contains(&format!(
            "Upgrading {a}, {b} to 2: the components on tag 1, the tag most of them share."
        )),
        "{words}"
    );
    assert!(
        words.contains(&format!("Left as they are: {c}.")),
        "{words}"
    );
}

#[test]
fn upgrade_to_a_tag_missing_from_the_registry_is_refused_before_anything_changes() {
    let d = Device::new("up-404");
    let (doc, names) = three_on_one(&d);
    d.apply_ok(&doc, &[]);
    let bytes = std::fs::read(&doc).unwrap();
    let before: Vec<_> = names.iter().map(|n| identity(n)).collect();

    let out = upgrade(&d, &["404", "--file", path(&doc)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let words = text(&out.stderr);
    assert!(
        words.contains(&image("service", "404")),
        "names the reference: {}",
        show(&out)
    );
    assert!(words.contains("not found"), "{}", show(&out));
    assert_eq!(
        std::fs::read(&doc).unwrap(),
        bytes,
        "the file is byte-identical"
    );
    let after: Vec<_> = names.iter().map(|n| identity(n)).collect();
    assert_eq!(after, before, "no container was touched");
    assert_eq!(history(&d).len(), 1, "no activity ran");

    let out = upgrade(&d, &["404", "--file", path(&doc), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["outcome"], "REFUSED");
    assert_eq!(
        report["unavailable"][0]["reference"],
        image("service", "404")
    );
}

/// Services on `service:1` that are healthy only on version 1: version 2
/// of the image fails their health check.
fn healthy_only_on_one(d: &Device) -> (PathBuf, [String; 2]) {
    let img = image("service", "1");
    let names = [d.name("a"), d.name("b")];
    let health: &[(&str, &str)] = &[
        ("image", &img),
        ("healthCmd", "grep -qx 1 /etc/service-version"),
        ("healthInterval", "1s"),
        ("healthTimeout", "1s"),
        ("healthRetries", "2"),
    ];
    let doc = d.doc(
        "state",
        &[(&names[0], "1", health), (&names[1], "1", health)],
    );
    (doc, names)
}

#[test]
fn upgrade_to_an_unhealthy_release_rolls_back_restores_the_file_and_exits_1() {
    let d = Device::new("up-unhealthy");
    let (doc, names) = healthy_only_on_one(&d);
    d.apply_ok(&doc, &[]);
    let bytes = std::fs::read(&doc).unwrap();
    let before: Vec<_> = names.iter().map(|n| identity(n)).collect();

    let out = upgrade(&d, &["2", "--file", path(&doc)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("the upgrade to 2 failed"),
        "says what failed: {}",
        show(&out)
    );
    assert_eq!(
        std::fs::read(&doc).unwrap(),
        bytes,
        "the file is byte-identical"
    );
    for (name, id) in names.iter().zip(&before) {
        // Stopped for the new one and started again: the same container.
        assert_eq!(identity(name).id, id.id, "{name} is the old container");
        assert!(running(name), "{name} runs");
        assert_eq!(config_image(name), image("service", "1"));
    }
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
    let last = history(&d).pop().expect("a record");
    assert_eq!(last["source"], "upgrade");
    assert_eq!(last["outcome"], "INCOMPLETE", "{last}");
}

#[test]
fn history_lists_each_activity_with_its_source_outcome_and_versions() {
    let d = Device::new("up-history");
    let (doc, [a, b, c]) = three_on_one(&d);
    d.apply_ok(&doc, &[]);
    let components = format!("{a},{b}");
    let out = upgrade(
        &d,
        &["2", "--file", path(&doc), "--components", &components],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let records = history(&d);
    assert_eq!(records.len(), 2, "{records:?}");
    let (applied, upgraded) = (&records[0], &records[1]);
    assert_eq!(applied["source"], "cli");
    assert_eq!(applied["outcome"], "COMPLETED");
    assert_eq!(upgraded["source"], "upgrade");
    assert_eq!(upgraded["outcome"], "COMPLETED");
    assert!(upgraded["ended"].as_u64() >= upgraded["started"].as_u64());
    assert_eq!(after_image(upgraded, &a), image("service", "2"));
    assert_eq!(after_image(upgraded, &c), image("service", "1"));
    let a_change = upgraded["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["component"] == a.as_str())
        .unwrap();
    assert_eq!(a_change["before"]["image"], image("service", "1"));
    assert_eq!(a_change["before"]["version"], "1");
    assert_eq!(a_change["after"]["version"], "2");
    assert_eq!(upgraded["migrations"], serde_json::json!([]));
    let schema = std::fs::read_to_string(crate::util::repo_path("schemas/history.schema.json"))
        .expect("the published schema");
    let schema = jsonschema::draft202012::new(&serde_json::from_str(&schema).unwrap()).unwrap();
    let listed = Value::Array(records.clone());
    if let Err(e) = schema.validate(&listed) {
        panic!("berth history --json does not match schemas/history.schema.json: {e}");
    }

    let people = run(&mut d.berth_cmd("history", &[]));
    let words = text(&people.stdout);
    assert!(
        words.contains(&format!(
            "{} (1) -> {} (2)",
            image("service", "1"),
            image("service", "2")
        )),
        "{words}"
    );
}

#[test]
fn history_shows_secrets_redacted_and_the_state_directory_keeps_them() {
    let d = Device::new("up-secret");
    let img = image("service", "1");
    let a = d.name("a");
    let doc = d.doc(
        "state",
        &[(&a, "1", &[("image", &img), ("env", "DB_PASSWORD=hunter2")])],
    );
    d.apply_ok(&doc, &[]);
    let out = run(&mut d.berth_cmd("history", &["--json"]));
    let shown = text(&out.stdout);
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("DB_PASSWORD=<redacted>"), "{shown}");
    let stored = std::fs::read_to_string(d.state_dir().join("history.json")).unwrap();
    assert!(
        stored.contains("hunter2"),
        "kept as applied, like desired.json"
    );
    let mode = std::fs::metadata(d.state_dir().join("history.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn rollback_returns_the_upgraded_components_to_the_previous_release() {
    let d = Device::new("up-rollback");
    let (doc, [a, b, c]) = three_on_one(&d);
    d.apply_ok(&doc, &[]);
    let components = format!("{a},{b}");
    let out = upgrade(
        &d,
        &["2", "--file", path(&doc), "--components", &components],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let c_before = identity(&c);

    let out = run(&mut d.berth_cmd("rollback", &["--min-ready", "1s"]));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(config_image(&a), image("service", "1"));
    assert_eq!(config_image(&b), image("service", "1"));
    assert_eq!(identity(&c), c_before, "c is untouched");
    let last = history(&d).pop().expect("a record");
    assert_eq!(last["source"], "rollback");
    assert_eq!(last["outcome"], "COMPLETED");
    assert!(last["id"].as_str().unwrap_or("").starts_with("rollback-"));
}

#[test]
fn rollback_to_a_named_activity_that_failed_is_refused_and_changes_nothing() {
    let d = Device::new("up-rb-failed");
    let (doc, names) = healthy_only_on_one(&d);
    d.apply_ok(&doc, &[]);
    let out = upgrade(&d, &["2", "--file", path(&doc)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let failed = history(&d).pop().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before: Vec<_> = names.iter().map(|n| identity(n)).collect();

    let out = run(&mut d.berth_cmd("rollback", &["--to", &failed]));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains(&format!("activity {failed} did not complete")),
        "{}",
        show(&out)
    );
    let after: Vec<_> = names.iter().map(|n| identity(n)).collect();
    assert_eq!(after, before);
}

/// A configuration whose file source is `file`, polled quickly.
fn files_config(file: &Path) -> PathBuf {
    let config = file.with_file_name("config.toml");
    std::fs::write(
        &config,
        format!(
            "[files]\npath = {:?}\npoll_interval = \"300ms\"\n",
            path(file)
        ),
    )
    .unwrap();
    config
}

#[test]
fn rollback_with_a_file_source_rewrites_the_file_keeping_its_mode() {
    let d = Device::new("up-rb-file");
    let (doc, [a, b, _]) = three_on_one(&d);
    std::fs::set_permissions(&doc, std::fs::Permissions::from_mode(0o640)).unwrap();
    let config = files_config(&doc);
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&doc).unwrap()).unwrap();
    d.apply_ok(&doc, &[]);
    let out = upgrade(&d, &["2", "--file", path(&doc), "--config", path(&config)]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let out = run(&mut d.berth_cmd(
        "rollback",
        &["--min-ready", "1s", "--config", path(&config)],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(config_image(&a), image("service", "1"));
    assert_eq!(config_image(&b), image("service", "1"));
    let mut rewritten: Value =
        serde_json::from_str(&std::fs::read_to_string(&doc).unwrap()).unwrap();
    assert!(rewritten["activityId"]
        .as_str()
        .unwrap_or("")
        .starts_with("rollback-"));
    rewritten["activityId"] = original["activityId"].clone();
    assert_eq!(
        rewritten, original,
        "the file holds the document rolled back to"
    );
    let mode = std::fs::metadata(&doc).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "its mode is kept");
}

/// Waits until `done` holds, failing after 90 s with `what`.
fn eventually(what: &str, agent: &Background, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}\nagent:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn upgrade_hands_the_document_to_the_agent_that_reads_the_file_and_follows_it() {
    let d = Device::new("up-agent");
    let (doc, [a, b, c]) = three_on_one(&d);
    let config = files_config(&doc);
    let mut cmd = d.berth_cmd(
        "run",
        &[
            "--config",
            path(&config),
            "--min-ready",
            "1s",
            "--reconcile-interval",
            "0",
        ],
    );
    cmd.args(["--log-level", "berth=info"]);
    let agent = Background::spawn(cmd);
    eventually("the agent applies the file", &agent, || {
        history(&d).iter().any(|r| r["outcome"] == "COMPLETED")
    });
    let c_before = identity(&c);

    let components = format!("{a},{b}");
    let out = upgrade(
        &d,
        &[
            "2",
            "--file",
            path(&doc),
            "--components",
            &components,
            "--config",
            path(&config),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nagent:\n{}",
        show(&out),
        agent.stderr()
    );
    assert!(
        text(&out.stderr).contains("handing the document to it"),
        "{}",
        show(&out)
    );
    assert_eq!(config_image(&a), image("service", "2"));
    assert_eq!(config_image(&b), image("service", "2"));
    assert_eq!(identity(&c), c_before, "c is untouched");
    let last = history(&d).pop().expect("a record");
    assert_eq!(last["source"], "file", "the agent applied it");
    assert!(last["id"].as_str().unwrap_or("").starts_with("upgrade-2-"));
}

#[test]
fn an_upgrade_the_agent_cannot_complete_leaves_the_old_release_and_the_file_byte_identical() {
    let d = Device::new("up-agent-fail");
    let (doc, names) = healthy_only_on_one(&d);
    let config = files_config(&doc);
    let mut cmd = d.berth_cmd(
        "run",
        &[
            "--config",
            path(&config),
            "--min-ready",
            "1s",
            "--reconcile-interval",
            "0",
        ],
    );
    cmd.args(["--log-level", "berth=info"]);
    let agent = Background::spawn(cmd);
    eventually("the agent applies the file", &agent, || {
        history(&d).iter().any(|r| r["outcome"] == "COMPLETED")
    });
    let bytes = std::fs::read(&doc).unwrap();
    let before: Vec<_> = names.iter().map(|n| identity(n)).collect();

    let out = upgrade(&d, &["2", "--file", path(&doc), "--config", path(&config)]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\nagent:\n{}",
        show(&out),
        agent.stderr()
    );
    assert!(
        text(&out.stderr).contains("the upgrade to 2 failed"),
        "{}",
        show(&out)
    );
    assert_eq!(
        std::fs::read(&doc).unwrap(),
        bytes,
        "the file is byte-identical"
    );
    for (name, id) in names.iter().zip(&before) {
        assert_eq!(identity(name).id, id.id, "{name} is the old container");
        assert_eq!(config_image(name), image("service", "1"));
    }
}

#[test]
fn upgrade_json_is_one_object_with_the_selection_the_plan_and_the_outcome() {
    let d = Device::new("up-json");
    let (doc, [a, b, c]) = three_on_one(&d);
    d.apply_ok(&doc, &[]);
    let components = format!("{a},{b}");
    let out = upgrade(
        &d,
        &[
            "2",
            "--file",
            path(&doc),
            "--components",
            &components,
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["outcome"], "COMPLETED", "{report}");
    assert_eq!(report["appliedBy"], "berth");
    assert_eq!(report["selectedBy"], "names");
    assert_eq!(report["components"][0]["component"], a.as_str());
    assert_eq!(report["components"][0]["to"], image("service", "2"));
    assert_eq!(report["unchanged"], serde_json::json!([c]));
    assert!(report["plan"]["actions"].is_array(), "{report}");
    assert!(report["durationMs"].is_u64());
}

/// A `berth apply` of the device that waits before its first journal
/// write (nothing touched yet), holding the state directory and the
/// instance: it would add one more service to `names`.
fn hold(d: &Device, names: &[String]) -> Background {
    let img = image("service", "1");
    let config = [("image", img.as_str())];
    let extra = d.name("extra");
    let mut components: Vec<crate::util::Component> = names
        .iter()
        .map(|n| (n.as_str(), "1", &config[..]))
        .collect();
    components.push((&extra, "1", &config));
    let doc = d.doc("hold", &components);
    let mut cmd = d.apply_cmd(&doc, &[]);
    cmd.env("BERTH_TEST_PAUSE_AT", "journal#1");
    let mut holder = Background::spawn(cmd);
    holder.wait_for("pausing during journal write #1", Duration::from_secs(60));
    holder
}

#[test]
fn an_upgrade_that_cannot_take_the_state_directory_restores_the_file_and_changes_nothing() {
    let d = Device::new("up-locked");
    let (doc, names) = three_on_one(&d);
    d.apply_ok(&doc, &[]);
    let bytes = std::fs::read(&doc).unwrap();
    // Another berth (another instance) holds the state directory.
    let mut holder = hold(&d, &names);
    let before: Vec<_> = names.iter().map(|n| identity(n)).collect();

    let mut cmd = d.berth_cmd("upgrade", &["2", "--file", path(&doc)]);
    cmd.env("BERTH_INSTANCE", d.name("other"));
    let out = run(&mut cmd);
    holder.kill();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("holds the state directory"),
        "{}",
        show(&out)
    );
    assert_eq!(
        std::fs::read(&doc).unwrap(),
        bytes,
        "the file is byte-identical"
    );
    let after: Vec<_> = names.iter().map(|n| identity(n)).collect();
    assert_eq!(after, before);
}

#[test]
fn an_upgrade_while_another_berth_holds_the_instance_asks_for_the_agents_config_and_changes_nothing(
) {
    let d = Device::new("up-other-agent");
    let (doc, names) = three_on_one(&d);
    d.apply_ok(&doc, &[]);
    let bytes = std::fs::read(&doc).unwrap();
    let mut holder = hold(&d, &names);

    let out = run(&mut d.berth_cmd("upgrade", &["2", "--file", path(&doc)]));
    holder.kill();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let words = text(&out.stderr);
    assert!(words.contains("is already running"), "{}", show(&out));
    assert!(
        words.contains("pass the agent's --config"),
        "{}",
        show(&out)
    );
    assert_eq!(
        std::fs::read(&doc).unwrap(),
        bytes,
        "the file is byte-identical"
    );
}

#[test]
fn rollback_beside_the_agent_that_reads_the_file_hands_it_the_previous_document() {
    let d = Device::new("up-agent-rb");
    let (doc, [a, b, _]) = three_on_one(&d);
    let original: Value = serde_json::from_str(&std::fs::read_to_string(&doc).unwrap()).unwrap();
    let config = files_config(&doc);
    let mut cmd = d.berth_cmd(
        "run",
        &[
            "--config",
            path(&config),
            "--min-ready",
            "1s",
            "--reconcile-interval",
            "0",
        ],
    );
    cmd.args(["--log-level", "berth=info"]);
    let agent = Background::spawn(cmd);
    eventually("the agent applies the file", &agent, || {
        history(&d).iter().any(|r| r["outcome"] == "COMPLETED")
    });
    let out = upgrade(&d, &["2", "--file", path(&doc), "--config", path(&config)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nagent:\n{}",
        show(&out),
        agent.stderr()
    );

    let out = run(&mut d.berth_cmd("rollback", &["--config", path(&config)]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nagent:\n{}",
        show(&out),
        agent.stderr()
    );
    assert!(
        text(&out.stderr).contains("handing the document to it"),
        "{}",
        show(&out)
    );
    assert_eq!(config_image(&a), image("service", "1"));
    assert_eq!(config_image(&b), image("service", "1"));
    let mut rewritten: Value =
        serde_json::from_str(&std::fs::read_to_string(&doc).unwrap()).unwrap();
    rewritten["activityId"] = original["activityId"].clone();
    assert_eq!(
        rewritten, original,
        "the file holds the document rolled back to"
    );
}

#[test]
fn an_upgrade_handed_to_an_agent_that_never_takes_it_restores_the_file_and_exits_1() {
    let d = Device::new("up-not-taken");
    let (doc, names) = three_on_one(&d);
    // The configuration says the agent reads `doc`; this agent reads another file.
    let config = files_config(&doc);
    let elsewhere = doc.with_file_name("elsewhere.json");
    std::fs::copy(&doc, &elsewhere).unwrap();
    let mut cmd = d.berth_cmd(
        "run",
        &[
            "--files",
            path(&elsewhere),
            "--min-ready",
            "1s",
            "--reconcile-interval",
            "0",
        ],
    );
    cmd.args(["--log-level", "berth=info"]);
    let agent = Background::spawn(cmd);
    eventually("the agent applies its file", &agent, || {
        history(&d).iter().any(|r| r["outcome"] == "COMPLETED")
    });
    let bytes = std::fs::read(&doc).unwrap();
    let before: Vec<_> = names.iter().map(|n| identity(n)).collect();

    let out = upgrade(&d, &["2", "--file", path(&doc), "--config", path(&config)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("the agent did not take the document"),
        "{}",
        show(&out)
    );
    assert_eq!(
        std::fs::read(&doc).unwrap(),
        bytes,
        "the file is byte-identical"
    );
    let after: Vec<_> = names.iter().map(|n| identity(n)).collect();
    assert_eq!(after, before);
}

#[test]
fn an_upgrade_larger_than_the_agents_file_limit_is_refused_before_the_file_is_written() {
    let d = Device::new("up-too-big");
    let (doc, _) = three_on_one(&d);
    let bytes = std::fs::read(&doc).unwrap();
    // The agent would refuse the upgraded file unread.
    let config = doc.with_file_name("config.toml");
    std::fs::write(
        &config,
        format!(
            "[files]\npath = {:?}\nmax_file_size = {}\n",
            path(&doc),
            bytes.len() / 2
        ),
    )
    .unwrap();
    let out = upgrade(&d, &["2", "--file", path(&doc), "--config", path(&config)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("above the file source's max_file_size"),
        "{}",
        show(&out)
    );
    assert_eq!(
        std::fs::read(&doc).unwrap(),
        bytes,
        "the file is byte-identical"
    );
    assert!(d.containers().is_empty(), "nothing was created");
}
