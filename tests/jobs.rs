//! Jobs (issue 22) against the real engine, through `berth apply`: a
//! one-shot component (`restartPolicy=no`) that exits 0 has completed.

use serde_json::Value;

use crate::cli_apply::{identity, inspect, Device};
use crate::util::{berth, docker, image, json_stdout, run};

/// `docker run --rm` of busybox's `cat` on a named volume: a file's text.
fn read_volume(volume: &str, path: &str) -> String {
    let img = image("service", "1");
    let mount = format!("{volume}:/v");
    docker(&[
        "run",
        "--rm",
        "-v",
        &mount,
        "--entrypoint",
        "/bin/sh",
        &img,
        "-c",
        &format!("cat /v/{path}"),
    ])
}

fn exit_code(name: &str) -> i64 {
    inspect(name)["State"]["ExitCode"]
        .as_i64()
        .expect("an exit code")
}

/// The inventory's parameter `key` of container `name`, by `berth state`.
fn inventory(name: &str, key: &str) -> Option<String> {
    let state: Value = json_stdout(&run(berth().args(["state", "--json"])));
    let id = format!("containers:{name}");
    let node = state["payload"]["softwareNodes"]
        .as_array()?
        .iter()
        .find(|n| n["id"] == id.as_str())?
        .clone();
    node["parameters"]
        .as_array()?
        .iter()
        .find(|p| p["key"] == key)
        .and_then(|p| p["value"].as_str().map(str::to_string))
}

#[test]
fn a_job_that_exits_0_passes_is_reported_completed_and_is_not_rerun() {
    let mut device = Device::new("job-ok");
    let name = device.name("init");
    let volume = device.volume("vol");
    let mount = format!("{volume}:/named");
    let img = image("service", "1");
    let doc = device.doc(
        "v1",
        &[(
            &name,
            "1",
            &[
                ("image", &img),
                ("restartPolicy", "no"),
                ("volume", &mount),
                ("entrypoint", "/bin/sh"),
                ("cmd", "-c"),
                ("cmd", "echo ran >> /named/runs"),
            ],
        )],
    );
    let applied = device.apply_ok(&doc, &[]);
    assert_eq!(exit_code(&name), 0, "{applied}");
    assert_eq!(read_volume(&volume, "runs"), "ran");
    assert_eq!(inventory(&name, "completed").as_deref(), Some("true"));
    assert_eq!(inventory(&name, "exitCode").as_deref(), Some("0"));
    let before = identity(&name);

    let again = device.apply_ok(&doc, &[]);
    assert_eq!(read_volume(&volume, "runs"), "ran", "rerun\n{again}");
    assert_eq!(identity(&name), before, "touched\n{again}");
}

#[test]
fn a_job_that_exits_non_zero_fails_naming_its_code_and_output() {
    let device = Device::new("job-fail");
    let name = device.name("init");
    let img = image("service", "1");
    let doc = device.doc(
        "v1",
        &[(
            &name,
            "1",
            &[
                ("image", &img),
                ("restartPolicy", "no"),
                ("entrypoint", "/bin/sh"),
                ("cmd", "-c"),
                ("cmd", "echo 'bad input: line 7' >&2; exit 3"),
            ],
        )],
    );
    let applied = device.apply(&doc, &[]);
    assert_eq!(applied.code(), Some(1), "{applied}");
    let out = applied.to_string();
    assert!(
        out.contains("the job exited with code 3; output: bad input: line 7"),
        "{applied}"
    );
}

#[test]
fn depends_on_a_job_waits_for_it_to_complete() {
    let mut device = Device::new("job-dep");
    let (job, app) = (device.name("init"), device.name("app"));
    let volume = device.volume("vol");
    let mount = format!("{volume}:/named");
    let img = image("service", "1");
    let doc = device.doc(
        "v1",
        &[
            (
                &job,
                "1",
                &[
                    ("image", &img),
                    ("restartPolicy", "no"),
                    ("volume", &mount),
                    ("entrypoint", "/bin/sh"),
                    ("cmd", "-c"),
                    ("cmd", "sleep 4; echo ready > /named/ready"),
                ],
            ),
            (
                &app,
                "1",
                &[
                    ("image", &img),
                    ("volume", &mount),
                    ("dependsOn", &job),
                    ("entrypoint", "/bin/sh"),
                    ("cmd", "-c"),
                    // Exits at once (failing its gate) unless the job is done.
                    ("cmd", "test -f /named/ready && exec /bin/service"),
                ],
            ),
        ],
    );
    let applied = device.apply_ok(&doc, &[]);
    assert_eq!(exit_code(&job), 0, "{applied}");
    assert_eq!(inspect(&app)["State"]["Running"], true, "{applied}");
}
