//! Issue 18 against the real engine: the executor cannot lie. Rollbacks
//! that meet a failing engine, rollbacks that fail, leftovers on temporary
//! names, missing networks, and services linked to each other, each checked
//! for: every container on the old version and running (same id) or on the
//! new one and ready; data intact; no temporaries after the next activity;
//! feedback that says which.

use std::path::Path;

use crate::cli_apply::{config_image, exec, identity, inspect, running, Applied, Device};
use crate::util::{berth, image, run, temp_file, text, Component};

/// `apply` with engine faults injected (the test-hooks build's
/// `BERTH_TEST_FAULTS`).
fn apply_with_faults(device: &Device, doc: &Path, faults: &str) -> Applied {
    let mut cmd = device.apply_cmd(doc, &[]);
    cmd.env("BERTH_TEST_FAULTS", faults);
    Applied::from(run(&mut cmd))
}

/// Writes `value` into the named volume of `name` at /data.
fn mark(name: &str, value: &str) {
    exec(name, &format!("echo {value} > /data/marker"));
}

fn marker(name: &str) -> String {
    exec(name, "cat /data/marker").trim().to_string()
}

#[test]
fn a_rename_that_fails_after_parallel_stops_leaves_every_old_container_running() {
    let mut device = Device::new("u-rename");
    let names = [device.name("a"), device.name("b"), device.name("c")];
    let volumes: Vec<String> = ["va", "vb", "vc"]
        .iter()
        .map(|v| device.volume(v))
        .collect();
    let mounts: Vec<String> = volumes.iter().map(|v| format!("{v}:/data")).collect();
    let service_1 = image("service", "1");
    let version = |env: &'static str, tag: &str| {
        let configs: Vec<[(&str, &str); 3]> = mounts
            .iter()
            .map(|m| {
                [
                    ("image", service_1.as_str()),
                    ("env", env),
                    ("volume", m.as_str()),
                ]
            })
            .collect();
        let components: Vec<Component> = names
            .iter()
            .zip(&configs)
            .map(|(n, k)| (n.as_str(), "1", k.as_slice()))
            .collect();
        device.doc(tag, &components)
    };
    device.apply_ok(&version("X=1", "v1"), &[]);
    for n in &names {
        mark(n, "before");
    }
    let before: Vec<_> = names.iter().map(|n| identity(n)).collect();

    // The second of the three renames that follow the parallel stops fails.
    let applied = apply_with_faults(&device, &version("X=2", "v2"), "rename#2:fail");
    assert_eq!(applied.code(), Some(1), "{applied}");
    applied.assert_sequence(&[
        "UPDATE_FAILURE",
        "ROLLBACK",
        "ROLLBACK_SUCCESS",
        "INCOMPLETE",
    ]);
    for (n, was) in names.iter().zip(&before) {
        assert_eq!(
            identity(n).id,
            was.id,
            "{n} is not the old container\n{applied}"
        );
        assert!(running(n), "{n} was left stopped\n{applied}");
        assert_eq!(marker(n), "before", "{n} lost its data");
    }
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert!(!device.state_files().contains(&"journal.json".to_string()));
}

#[test]
fn a_rollback_that_fails_says_so_and_the_next_apply_restores_the_old_version() {
    let device = Device::new("u-failed");
    let name = device.name("svc");
    let (volume_1, crash_1) = (image("volume", "1"), image("crash", "1"));
    let v1 = device.doc("v1", &[(&name, "1", &[("image", &volume_1)])]);
    device.apply_ok(&v1, &[]);
    mark(&name, "old data");
    let original = identity(&name);

    // The new version crashes; every rename from the third on (the undo's
    // rename of the old container back to its name) fails.
    let v2 = device.doc("v2", &[(&name, "2", &[("image", &crash_1)])]);
    let failed = apply_with_faults(&device, &v2, "rename#3+:fail");
    assert_eq!(failed.code(), Some(1), "{failed}");
    assert_eq!(failed.last_status(), "INCOMPLETE_INCONSISTENT", "{failed}");
    assert!(
        failed.statuses().contains(&"ROLLBACK_FAILURE".to_string()),
        "{failed}"
    );
    assert!(
        !failed.statuses().contains(&"ROLLBACK_SUCCESS".to_string()),
        "{failed}"
    );
    assert!(
        device.state_files().contains(&"journal.json".to_string()),
        "the journal is kept for recovery: {:?}",
        device.state_files()
    );

    // The next activity, whatever its document, first finishes the undo:
    // the old container comes back with its anonymous volume and data.
    let again = device.apply_ok(&v1, &[]);
    assert!(again.stderr().contains("berth: recovered:"), "{again}");
    assert_eq!(identity(&name).id, original.id, "{again}");
    assert!(running(&name));
    assert_eq!(config_image(&name), volume_1);
    assert_eq!(marker(&name), "old data");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert_eq!(device.containers(), [name.as_str()]);
}

#[test]
fn a_foreign_container_on_the_old_temporary_name_does_not_block_a_recreate() {
    let device = Device::new("u-foreign");
    let name = device.name("svc");
    let (service_1, service_2) = (image("service", "1"), image("service", "2"));
    device.apply_ok(
        &device.doc("v1", &[(&name, "1", &[("image", &service_1)])]),
        &[],
    );
    let squatter = device.hand_made("svc.berth-old", &service_1);
    let squatter_was = identity(&squatter);

    let v2 = device.doc("v2", &[(&name, "2", &[("image", &service_2)])]);
    let applied = device.apply_ok(&v2, &[]);
    assert_eq!(config_image(&name), service_2, "{applied}");
    assert_eq!(exec(&name, "cat /tmp/version"), "2");
    assert_eq!(
        identity(&squatter),
        squatter_was,
        "the foreign container was touched"
    );
    assert_eq!(device.containers(), [name.clone(), squatter], "{applied}");
}

#[test]
fn a_network_that_does_not_exist_fails_downloading_naming_it() {
    let device = Device::new("u-net");
    let name = device.name("svc");
    let service_1 = image("service", "1");
    device.apply_ok(
        &device.doc("v1", &[(&name, "1", &[("image", &service_1)])]),
        &[],
    );
    let before = identity(&name);
    let network = device.name("no-such-net");
    let v2 = device.doc(
        "v2",
        &[(&name, "2", &[("image", &service_1), ("network", &network)])],
    );
    let applied = device.apply(&v2, &[]);
    assert_eq!(applied.code(), Some(1), "{applied}");
    let failure = applied.message("DOWNLOAD_FAILURE");
    let words = failure["payload"]["message"].as_str().unwrap_or_default();
    assert!(
        words.contains(&format!("network \"{network}\" does not exist")),
        "{applied}"
    );
    assert!(
        !applied.statuses().contains(&"UPDATING".to_string()),
        "{applied}"
    );
    assert_eq!(identity(&name), before, "nothing was touched\n{applied}");
    assert!(running(&name));
}

/// The hosts file of a container.
fn hosts_of(name: &str) -> String {
    exec(name, "cat /etc/hosts")
}

fn ip_of(name: &str) -> String {
    inspect(name)["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn network_mode(name: &str) -> String {
    inspect(name)["HostConfig"]["NetworkMode"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn linked_services_deploy_cold_and_either_side_updates_alone() {
    // The shape of Eclipse Leda's desired state: services that share the
    // databroker's network, and services that reach it by host entry.
    let device = Device::new("u-links");
    let (broker, sidecar, client) = (
        device.name("broker"),
        device.name("sidecar"),
        device.name("client"),
    );
    let service_1 = image("service", "1");
    let shared = format!("container:{broker}");
    let host = format!("databroker:container_{broker}-host");
    let doc = |tag: &str, b: &str, s: &str, c: &str| {
        device.doc(
            tag,
            &[
                (
                    &sidecar,
                    "1",
                    &[("image", &service_1), ("network", &shared), ("env", s)],
                ),
                (
                    &client,
                    "1",
                    &[("image", &service_1), ("host", &host), ("env", c)],
                ),
                (&broker, "1", &[("image", &service_1), ("env", b)]),
            ],
        )
    };
    let cold = device.apply_ok(&doc("cold", "B=1", "S=1", "C=1"), &[]);
    for n in [&broker, &sidecar, &client] {
        assert!(running(n), "{n} is not running\n{cold}");
    }
    assert_eq!(
        network_mode(&sidecar),
        format!("container:{}", identity(&broker).id)
    );
    assert!(
        hosts_of(&client).contains(&ip_of(&broker)),
        "{}",
        hosts_of(&client)
    );

    // The broker alone changes: both linked services follow it.
    let broker_update = device.apply_ok(&doc("b2", "B=2", "S=1", "C=1"), &[]);
    let broker_id = identity(&broker).id;
    assert_eq!(
        network_mode(&sidecar),
        format!("container:{broker_id}"),
        "{broker_update}"
    );
    assert!(running(&sidecar), "{broker_update}");
    assert!(
        hosts_of(&client).contains(&ip_of(&broker)),
        "{}",
        hosts_of(&client)
    );

    // Each dependent alone changes: the broker stays.
    let broker_was = identity(&broker);
    let client_was = identity(&client);
    let sidecar_update = device.apply_ok(&doc("s2", "B=2", "S=2", "C=1"), &[]);
    assert_eq!(identity(&broker), broker_was, "{sidecar_update}");
    assert_eq!(identity(&client), client_was, "{sidecar_update}");
    assert!(running(&sidecar));
    let sidecar_was = identity(&sidecar);
    let client_update = device.apply_ok(&doc("c2", "B=2", "S=2", "C=2"), &[]);
    assert_eq!(identity(&broker), broker_was, "{client_update}");
    assert_eq!(identity(&sidecar), sidecar_was, "{client_update}");
    assert!(running(&client));
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
}

#[test]
fn health_settings_that_would_overflow_are_refused_naming_the_key_and_bound() {
    let dir = tempfile::tempdir().expect("temp dir");
    let doc = temp_file(
        dir.path(),
        "overflow.json",
        &crate::util::desired_state(
            "overflow",
            &[(
                "svc",
                "1",
                &[
                    ("image", "127.0.0.1:5000/berth-test/healthy:1"),
                    ("healthCmd", "true"),
                    ("healthInterval", "1000d"),
                    ("healthRetries", "4000000000"),
                ],
            )],
        ),
    );
    let out = run(berth().args(["validate"]).arg(&doc));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("healthInterval") && err.contains("24h"),
        "{err}"
    );
    assert!(
        err.contains("healthRetries") && err.contains("100"),
        "{err}"
    );
}

/// Starts an apply that pauses before the engine call `at` (e.g. `remove#1`)
/// and waits until it says so.
fn apply_paused_before(device: &Device, doc: &Path, at: &str) -> crate::util::Background {
    let mut cmd = device.apply_cmd(doc, &[]);
    cmd.env("BERTH_TEST_FAULTS", format!("{at}:pause"));
    let mut bg = crate::util::Background::spawn(cmd);
    bg.wait_for(
        &format!("paused before {at}"),
        std::time::Duration::from_secs(60),
    );
    bg
}

#[test]
fn a_kill_during_cleanup_is_finished_not_undone() {
    let device = Device::new("u-cleanup");
    let name = device.name("svc");
    let (service_1, service_2) = (image("service", "1"), image("service", "2"));
    device.apply_ok(
        &device.doc("v1", &[(&name, "1", &[("image", &service_1)])]),
        &[],
    );
    let v2 = device.doc("v2", &[(&name, "2", &[("image", &service_2)])]);
    // The new container passed its gate and the activity was committed; the
    // first removal of cleanup is where berth dies.
    let mut paused = apply_paused_before(&device, &v2, "remove#1");
    let new = identity(&name);
    paused.kill();
    assert!(device.containers().contains(&format!("{name}.berth-old")));

    let again = device.apply_ok(&v2, &[]);
    assert!(again.stderr().contains("kept the new"), "{again}");
    assert_eq!(
        identity(&name),
        new,
        "the committed container stays\n{again}"
    );
    assert_eq!(exec(&name, "cat /tmp/version"), "2");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
}

fn memory_of(name: &str) -> i64 {
    inspect(name)["HostConfig"]["Memory"].as_i64().unwrap_or(-1)
}

#[test]
fn a_kill_after_an_in_place_update_is_undone_by_the_next_start() {
    let device = Device::new("u-inplace");
    let (limited, other) = (device.name("limited"), device.name("other"));
    let service_1 = image("service", "1");
    let v1 = device.doc(
        "v1",
        &[
            (&limited, "1", &[("image", &service_1), ("memory", "64m")]),
            (&other, "1", &[("image", &service_1), ("env", "X=1")]),
        ],
    );
    device.apply_ok(&v1, &[]);
    let before = identity(&limited);
    let v2 = device.doc(
        "v2",
        &[
            (&limited, "2", &[("image", &service_1), ("memory", "128m")]),
            (&other, "2", &[("image", &service_1), ("env", "X=2")]),
        ],
    );
    // UPDATING changes limited in place, then dies before stopping other.
    let mut paused = apply_paused_before(&device, &v2, "stop#1");
    assert_eq!(memory_of(&limited), 128 * 1024 * 1024);
    paused.kill();

    let again = device.apply_ok(&v1, &[]);
    assert!(again.stderr().contains("berth: recovered:"), "{again}");
    assert_eq!(memory_of(&limited), 64 * 1024 * 1024, "{again}");
    assert_eq!(identity(&limited), before, "{again}");
    assert!(running(&other));
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
}
