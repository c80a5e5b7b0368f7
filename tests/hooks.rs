//! Hooks (issue 22) against the real engine, through `berth apply`:
//! `preStart` in a one-shot container of the new image, `postStart` by exec
//! in the new container, `onRollback` in a one-shot container of the old
//! image, `hookTimeout`, and recovery of a one-shot left by a kill.

use std::time::{Duration, Instant};

use crate::cli_apply::{exec, identity, running, Applied, Device};
use crate::util::{image, Background};

/// The one-shot containers of a device (`<name>.berth-hook`).
fn one_shots(device: &Device) -> Vec<String> {
    device
        .containers()
        .into_iter()
        .filter(|n| n.ends_with(".berth-hook"))
        .collect()
}

/// Everything an apply printed, for "the feedback carries" checks.
fn printed(applied: &Applied) -> String {
    applied.to_string()
}

#[test]
fn pre_start_runs_once_per_upgrade_not_on_reapply_and_sees_the_new_images_env_and_volumes() {
    let mut device = Device::new("pre");
    let name = device.name("svc");
    let named = format!("{}:/named", device.volume("vol"));
    let hook =
        "echo \"pre $SERVICE_VERSION\" >> /named/log; echo \"pre $SERVICE_VERSION\" >> /data/log";
    let doc = |file: &str, tag: &str| {
        let img = image("volume", tag);
        device.doc(
            file,
            &[(
                &name,
                tag,
                &[("image", &img), ("volume", &named), ("preStart", hook)],
            )],
        )
    };
    let (v1, v2) = (doc("v1", "1"), doc("v2", "2"));
    device.apply_ok(&v1, &[]);
    assert_eq!(exec(&name, "cat /named/log"), "pre 1");
    device.apply_ok(&v1, &[]);
    assert_eq!(exec(&name, "cat /named/log"), "pre 1", "re-apply ran it");

    let applied = device.apply_ok(&v2, &[]);
    assert_eq!(exec(&name, "cat /named/log"), "pre 1\npre 2", "{applied}");
    // The one-shot mounted the service's anonymous volume, carried over.
    assert_eq!(exec(&name, "cat /data/log"), "pre 1\npre 2", "{applied}");
    device.apply_ok(&v2, &[]);
    assert_eq!(exec(&name, "cat /named/log"), "pre 1\npre 2");
    assert!(one_shots(&device).is_empty(), "{:?}", one_shots(&device));
}

/// service:1 with a named volume holding a file, then an upgrade to
/// service:2 with `extra` hooks that must fail: the old container runs
/// again, the same one, with its data; `onRollback` ran in the old image.
fn assert_failing_hook_rolls_back(tag: &str, extra: &[(&str, &str)], words: &[&str]) {
    let mut device = Device::new(tag);
    let name = device.name("svc");
    let named = format!("{}:/named", device.volume("vol"));
    let (s1, s2) = (image("service", "1"), image("service", "2"));
    let secret = "DB_PASSWORD=hunter2222";
    let before = device.doc(
        "before",
        &[(
            &name,
            "1",
            &[("image", &s1), ("volume", &named), ("env", secret)],
        )],
    );
    device.apply_ok(&before, &[]);
    exec(&name, "echo kept > /named/f");
    let old = identity(&name);

    let mut config: Vec<(&str, &str)> = vec![
        ("image", &s2),
        ("volume", &named),
        ("env", secret),
        (
            "onRollback",
            "echo \"undone by $SERVICE_VERSION\" >> /named/rollback",
        ),
    ];
    config.extend_from_slice(extra);
    let after = device.doc("after", &[(&name, "2", &config)]);
    let applied = device.apply(&after, &[]);
    assert_eq!(applied.code(), Some(1), "{applied}");
    applied.assert_sequence(&["ROLLBACK", "ROLLBACK_SUCCESS", "INCOMPLETE"]);
    assert_eq!(
        identity(&name).id,
        old.id,
        "not the same container\n{applied}"
    );
    assert!(running(&name), "{applied}");
    assert_eq!(exec(&name, "cat /named/f"), "kept");
    assert_eq!(
        exec(&name, "cat /named/rollback"),
        "undone by 1",
        "onRollback did not run in the old image\n{applied}"
    );
    let out = printed(&applied);
    for w in words {
        assert!(out.contains(w), "the feedback lacks {w:?}\n{applied}");
    }
    assert!(out.contains("onRollback ran"), "{applied}");
    assert!(
        !out.contains("hunter2222"),
        "a secret was printed\n{applied}"
    );
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert!(one_shots(&device).is_empty(), "{:?}", one_shots(&device));
}

#[test]
fn a_failing_pre_start_leaves_the_old_container_running_and_runs_on_rollback() {
    assert_failing_hook_rolls_back(
        "pre-fail",
        &[(
            "preStart",
            "echo \"cannot migrate with $DB_PASSWORD\" >&2; exit 3",
        )],
        &[
            "preStart exited with code 3",
            "cannot migrate with <redacted>",
        ],
    );
}

#[test]
fn a_failing_post_start_leaves_the_old_container_running_and_runs_on_rollback() {
    assert_failing_hook_rolls_back(
        "post-fail",
        &[
            ("preStart", "true"),
            ("postStart", "echo 'self-check failed' >&2; exit 4"),
        ],
        &["postStart exited with code 4", "self-check failed"],
    );
}

#[test]
fn a_hook_that_never_ends_is_stopped_at_hook_timeout_and_its_container_removed() {
    let device = Device::new("hook-timeout");
    let name = device.name("svc");
    let (s1, s2) = (image("service", "1"), image("service", "2"));
    let v1 = device.doc("v1", &[(&name, "1", &[("image", &s1)])]);
    device.apply_ok(&v1, &[]);
    let old = identity(&name);
    let v2 = device.doc(
        "v2",
        &[(
            &name,
            "2",
            &[
                ("image", &s2),
                ("preStart", "echo waiting; sleep 600"),
                ("hookTimeout", "2s"),
            ],
        )],
    );
    let started = Instant::now();
    let applied = device.apply(&v2, &[]);
    assert_eq!(applied.code(), Some(1), "{applied}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    let out = printed(&applied);
    assert!(
        out.contains("preStart did not finish within hookTimeout 2s"),
        "{applied}"
    );
    assert!(out.contains("waiting"), "the output is missing\n{applied}");
    assert_eq!(identity(&name).id, old.id, "{applied}");
    assert!(running(&name));
    assert!(one_shots(&device).is_empty(), "{:?}", one_shots(&device));
}

#[test]
fn a_kill_of_berth_during_a_hook_is_recovered_and_the_one_shot_removed() {
    let device = Device::new("hook-kill");
    let name = device.name("svc");
    let (s1, s2) = (image("service", "1"), image("service", "2"));
    let v1 = device.doc("v1", &[(&name, "1", &[("image", &s1)])]);
    device.apply_ok(&v1, &[]);
    let old = identity(&name);
    let v2 = device.doc(
        "v2",
        &[(&name, "2", &[("image", &s2), ("preStart", "sleep 600")])],
    );
    let mut bg = Background::spawn(device.apply_cmd(&v2, &[]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while one_shots(&device).is_empty() {
        assert!(Instant::now() < deadline, "no one-shot container appeared");
        assert!(bg.is_running(), "berth ended\n{}", bg.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    bg.kill();
    assert_eq!(one_shots(&device).len(), 1);

    let applied = device.apply_ok(&v1, &[]);
    assert!(applied.stderr().contains("berth: recovered:"), "{applied}");
    assert!(one_shots(&device).is_empty(), "{:?}", one_shots(&device));
    assert!(device.leftovers().is_empty(), "{:?}", device.leftovers());
    assert_eq!(identity(&name).id, old.id, "{applied}");
    assert!(running(&name));
}

#[test]
fn hooks_run_in_depends_on_order() {
    let mut device = Device::new("hook-order");
    let (a, b) = (device.name("a"), device.name("b"));
    let named = format!("{}:/named", device.volume("vol"));
    let img = image("service", "1");
    // b's hook runs only once a runs: a's postStart writes after a started.
    let doc = device.doc(
        "v1",
        &[
            (
                &b,
                "1",
                &[
                    ("image", &img),
                    ("volume", &named),
                    ("dependsOn", &a),
                    ("preStart", "echo b-pre >> /named/order"),
                ],
            ),
            (
                &a,
                "1",
                &[
                    ("image", &img),
                    ("volume", &named),
                    ("preStart", "echo a-pre >> /named/order"),
                    ("postStart", "echo a-post >> /named/order"),
                ],
            ),
        ],
    );
    let applied = device.apply_ok(&doc, &[]);
    assert_eq!(
        exec(&b, "cat /named/order"),
        "a-pre\na-post\nb-pre",
        "{applied}"
    );
    assert!(one_shots(&device).is_empty());
}
