//! Migrations (issue 22) against the real engine, through `berth apply`,
//! with `berth-test/migrating:<tag>` (tests/images/migrating): each script
//! appends "up vX" or "down vX" to /data/migrations.log.

use std::path::Path;

use crate::cli_apply::{config_image, exec, identity, running, Device};
use crate::util::image;

/// The last applied migration recorded for `name` in the state directory.
fn recorded(state: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(state.join("migrations.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).expect("the record is JSON");
    v["last"][name].as_str().map(str::to_string)
}

/// A document running `name` on migrating:`tag` as component version
/// `version`, its data on a named volume at /data.
fn doc(
    device: &Device,
    file: &str,
    name: &str,
    volume: &str,
    tag: &str,
    version: &str,
) -> std::path::PathBuf {
    let img = image("migrating", tag);
    let data = format!("{volume}:/data");
    device.doc(
        file,
        &[(
            name,
            version,
            &[
                ("image", &img),
                ("volume", &data),
                ("migrations", "/migrations"),
            ],
        )],
    )
}

fn log(name: &str) -> String {
    exec(name, "cat /data/migrations.log")
}

#[test]
fn an_upgrade_from_1_0_0_to_1_2_0_runs_v1_1_0_and_v1_2_0_in_order_and_a_reapply_none() {
    let mut device = Device::new("mig-up");
    let name = device.name("db");
    let volume = device.volume("data");
    let v1 = doc(&device, "v1", &name, &volume, "1.0.0", "1.0.0");
    device.apply_ok(&v1, &[]);
    assert_eq!(log(&name), "up v1.0.0");
    assert_eq!(
        recorded(device.state_dir(), &name).as_deref(),
        Some("v1.0.0")
    );

    let v3 = doc(&device, "v3", &name, &volume, "1.2.0", "1.2.0");
    let applied = device.apply_ok(&v3, &[]);
    assert_eq!(log(&name), "up v1.0.0\nup v1.1.0\nup v1.2.0", "{applied}");
    assert_eq!(
        recorded(device.state_dir(), &name).as_deref(),
        Some("v1.2.0")
    );

    let again = device.apply_ok(&v3, &[]);
    assert_eq!(log(&name), "up v1.0.0\nup v1.1.0\nup v1.2.0", "{again}");
}

#[test]
fn an_upgrade_from_1_1_0_to_1_2_0_runs_only_v1_2_0() {
    let mut device = Device::new("mig-one");
    let name = device.name("db");
    let volume = device.volume("data");
    let v2 = doc(&device, "v2", &name, &volume, "1.1.0", "1.1.0");
    device.apply_ok(&v2, &[]);
    assert_eq!(log(&name), "up v1.0.0\nup v1.1.0");
    let v3 = doc(&device, "v3", &name, &volume, "1.2.0", "1.2.0");
    let applied = device.apply_ok(&v3, &[]);
    assert_eq!(log(&name), "up v1.0.0\nup v1.1.0\nup v1.2.0", "{applied}");
}

#[test]
fn a_failing_migration_rolls_back_running_the_down_scripts_and_keeps_the_record() {
    let mut device = Device::new("mig-fail");
    let name = device.name("db");
    let volume = device.volume("data");
    let v1 = doc(&device, "v1", &name, &volume, "1.0.0", "1.0.0");
    device.apply_ok(&v1, &[]);
    let before = identity(&name);

    let broken = doc(&device, "broken", &name, &volume, "broken-1.2.0", "1.2.0");
    let applied = device.apply(&broken, &[]);
    assert_eq!(applied.code(), Some(1), "{applied}");
    applied.assert_sequence(&["ROLLBACK", "ROLLBACK_SUCCESS", "INCOMPLETE"]);
    assert_eq!(identity(&name).id, before.id, "{applied}");
    assert!(running(&name), "{applied}");
    assert_eq!(config_image(&name), image("migrating", "1.0.0"));
    // v1.2.0 failed, so only v1.1.0 is undone (not v1.2.0's down).
    assert_eq!(log(&name), "up v1.0.0\nup v1.1.0\ndown v1.1.0", "{applied}");
    assert_eq!(
        recorded(device.state_dir(), &name).as_deref(),
        Some("v1.0.0")
    );
    let out = applied.to_string();
    assert!(
        out.contains("migration v1.2.0 exited with code 1"),
        "{applied}"
    );
    assert!(out.contains("cannot add the column"), "{applied}");
    assert!(out.contains("down migration v1.1.0 ran"), "{applied}");
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert_eq!(device.containers(), [name.as_str()], "{applied}");
}

/// What the data has after the log's lines: each `up X` applies X, each
/// `down X` undoes the last applied, which must be X.
fn net(log: &str) -> Vec<String> {
    let mut applied: Vec<String> = Vec::new();
    for line in log.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once(' ') {
            Some(("up", v)) => applied.push(v.to_string()),
            Some(("down", v)) => {
                let top = applied.pop();
                assert_eq!(top.as_deref(), Some(v), "a down out of order in:\n{log}");
            }
            _ => panic!("an unexpected line {line:?} in:\n{log}"),
        }
    }
    applied
}

/// Regression (issue 22): a kill of berth after a migration ran left the
/// old version running on migrated data, since recovery put the old
/// container back without the down scripts. Killed before each journal
/// write of an upgrade from 1.0.0 to 1.2.0 in turn, then recovered, the
/// device is always whole: the old container on data with only v1.0.0
/// applied, or the new one with all three, and the record says which.
#[test]
fn killed_before_every_journal_write_of_a_migrating_upgrade_recovery_leaves_data_and_version_matching(
) {
    use crate::util::{run, text, Background};
    let mut n = 1;
    let mut saw_down = false;
    loop {
        let mut device = Device::new(&format!("mig-kill{n}"));
        let name = device.name("db");
        let volume = device.volume("data");
        let v1 = doc(&device, "v1", &name, &volume, "1.0.0", "1.0.0");
        device.apply_ok(&v1, &[]);
        let before = identity(&name);
        let v3 = doc(&device, "v3", &name, &volume, "1.2.0", "1.2.0");
        let cmd = device.apply_cmd(&v3, &[]);
        let Some(mut bg) = Background::paused_at_journal_write(cmd, n) else {
            // The upgrade has fewer writes: every one was covered. The
            // listing and two migrations alone make ten.
            assert!(n > 10, "only {} journal writes", n - 1);
            break;
        };
        bg.kill();
        let out = run(&mut device.berth_cmd("recover", &["--json"]));
        let said = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "kill before write #{n}: {said}");
        assert!(running(&name), "kill before write #{n}: {said}");
        let applied = net(&log(&name));
        let record = recorded(device.state_dir(), &name);
        if identity(&name).id == before.id {
            assert_eq!(config_image(&name), image("migrating", "1.0.0"));
            assert_eq!(applied, ["v1.0.0"], "kill before write #{n}: {said}");
            assert_eq!(record.as_deref(), Some("v1.0.0"), "write #{n}: {said}");
            saw_down |= log(&name).contains("down v1.1.0");
        } else {
            assert_eq!(config_image(&name), image("migrating", "1.2.0"));
            assert_eq!(applied, ["v1.0.0", "v1.1.0", "v1.2.0"], "write #{n}");
            assert_eq!(record.as_deref(), Some("v1.2.0"), "write #{n}: {said}");
        }
        assert!(
            device.leftovers().is_empty(),
            "write #{n}: {:?}",
            device.leftovers()
        );
        assert_eq!(device.containers(), [name.as_str()], "write #{n}: {said}");
        n += 1;
    }
    assert!(saw_down, "no kill fell after a migration had run");
}
