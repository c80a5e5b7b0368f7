//! The fault campaign against the real engine and registry (issue 19), one
//! run of each fault here; `scripts/faults.sh N` runs the lot N times and
//! tabulates the `FAULT-RESULT` lines they print into docs/RELIABILITY.md.
//!
//! Every fault hits the same device: `a` is recreated (its data sits in a
//! named volume, marked before the fault), `b` changes its memory limit in
//! place, `c` is removed and `d` created. After the fault the device gets its
//! next start (`berth recover`), then it is judged: every container on the
//! new version and ready (`berth plan` finds nothing to do), or every one on
//! the old version, running, with the same id; the marker intact; no
//! `.berth-*` leftover; and the final feedback (the activity's last message,
//! or the verdict `berth recover` gives under the activity's id after a
//! kill) saying which.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::cli_apply::{exec, identity, inspect, running, Applied, Device};
use crate::util::{docker, image, registry, run, text, Background};

/// How the device ended after a fault and the next start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    New,
    Old,
    Other,
}

impl Ended {
    fn word(self) -> &'static str {
        match self {
            Ended::New => "new",
            Ended::Old => "old",
            Ended::Other => "other",
        }
    }
}

/// The device of every fault, and what it looked like before.
struct Scenario {
    device: Device,
    names: [String; 4],
    v2: PathBuf,
    before: Vec<String>,
    activity: String,
}

const MARKER: &str = "written before the fault";

impl Scenario {
    /// Applies the first version and marks `a`'s data. `a_v2` is the
    /// configuration `a` gets in the second version (the fault's subject).
    fn new(tag: &str, a_v2: &[(&str, &str)]) -> Self {
        let mut device = Device::new(&format!("f-{tag}"));
        let names = ["a", "b", "c", "d"].map(|n| device.name(n));
        let volume = device.volume("data");
        let mount = format!("{volume}:/data");
        let (s1, s2) = (image("service", "1"), image("service", "2"));
        let v1 = device.doc(
            "v1",
            &[
                (
                    &names[0],
                    "1",
                    &[("image", &s1), ("volume", &mount), ("env", "X=1")],
                ),
                (&names[1], "1", &[("image", &s1), ("memory", "64m")]),
                (&names[2], "1", &[("image", &s1)]),
            ],
        );
        let mut a: Vec<(&str, &str)> = vec![("volume", &mount)];
        a.extend_from_slice(a_v2);
        let v2 = device.doc(
            "v2",
            &[
                (&names[0], "2", &a),
                (&names[1], "2", &[("image", &s1), ("memory", "128m")]),
                (&names[3], "2", &[("image", &s2)]),
            ],
        );
        device.apply_ok(&v1, &[]);
        exec(&names[0], &format!("echo '{MARKER}' > /data/marker"));
        let before = names[..3].iter().map(|n| identity(n).id).collect();
        let activity = format!("{}v2", device.name(""));
        Self {
            device,
            names,
            v2,
            before,
            activity,
        }
    }

    /// The usual second version: `a` moves to service:2.
    fn standard(tag: &str) -> Self {
        Self::new(tag, &[("image", &image("service", "2")), ("env", "X=2")])
    }

    fn apply_v2(&self, faults: &str, extra: &[&str]) -> Applied {
        let mut cmd = self.device.apply_cmd(&self.v2, extra);
        cmd.env("BERTH_TEST_FAULTS", faults);
        Applied::from(run(&mut cmd))
    }

    /// Starts the second version with berth paused before the engine call
    /// `at` (`rename#2`), and kills it there.
    fn kill_before(&self, at: &str) {
        let mut cmd = self.device.apply_cmd(&self.v2, &[]);
        cmd.env("BERTH_TEST_FAULTS", format!("{at}:pause"));
        let mut bg = Background::spawn(cmd);
        bg.wait_for(&format!("paused before {at}"), Duration::from_secs(90));
        bg.kill();
    }

    /// The next start: `berth recover --json`; its verdict, if it gave one.
    fn next_start(&self) -> Option<Value> {
        let out = run(&mut self.device.berth_cmd("recover", &["--json"]));
        assert!(
            out.status.success(),
            "recovery failed: {}\n{}",
            text(&out.stderr),
            text(&out.stdout)
        );
        text(&out.stdout)
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
    }

    fn is_new(&self) -> bool {
        let mut plan = self.device.berth_cmd("plan", &["--detailed-exitcode"]);
        let out = run(plan.arg(&self.v2));
        out.status.code() == Some(0)
            && [&self.names[0], &self.names[1], &self.names[3]]
                .iter()
                .all(|n| running(n))
            && !self.device.containers().contains(&self.names[2])
    }

    fn is_old(&self) -> bool {
        let kept = self.names[..3]
            .iter()
            .zip(&self.before)
            .all(|(n, id)| exists(n) && identity(n).id == *id && running(n));
        kept && !exists(&self.names[3])
            && inspect(&self.names[1])["HostConfig"]["Memory"].as_i64() == Some(64 << 20)
    }

    fn data_intact(&self) -> bool {
        exists(&self.names[0])
            && run(std::process::Command::new("docker").args([
                "exec",
                &self.names[0],
                "cat",
                "/data/marker",
            ]))
            .stdout
            .starts_with(MARKER.as_bytes())
    }

    /// Judges the device after the fault and its next start, prints the
    /// campaign's result line, and fails the test on anything but a clean
    /// old-or-new end with the feedback to match.
    fn judge(&self, fault: &str, run_end: Option<&Applied>, verdict: Option<Value>) {
        let ended = if self.is_new() {
            Ended::New
        } else if self.is_old() {
            Ended::Old
        } else {
            Ended::Other
        };
        // The answer: the last word under the activity's id. That is the
        // verdict recovery gave at the next start when the activity left a
        // journal (berth was killed, a rollback or a cleanup did not hold),
        // else the activity's own final message.
        let own = run_end.map(Applied::last_status);
        let final_status = match &verdict {
            Some(v) => {
                assert_eq!(v["activityId"], self.activity.as_str(), "{v}");
                v["payload"]["status"].as_str().map(str::to_string)
            }
            None => own,
        };
        let feedback_right = matches!(
            (ended, final_status.as_deref()),
            (Ended::New, Some("COMPLETED")) | (Ended::Old, Some("INCOMPLETE"))
        );
        let data = self.data_intact();
        let leftovers = self.device.leftovers();
        result(&format!(
            "FAULT-RESULT fault={fault} ended={} data={} leftovers={} feedback={} final={}",
            ended.word(),
            if data { "ok" } else { "lost" },
            leftovers.len(),
            if feedback_right { "right" } else { "wrong" },
            final_status.as_deref().unwrap_or("none"),
        ));
        let context = run_end.map(|a| a.to_string()).unwrap_or_default();
        assert_ne!(
            ended,
            Ended::Other,
            "{fault}: neither old nor new: {:?}\n{context}",
            self.device.containers()
        );
        assert!(data, "{fault}: the marker in a's volume is gone\n{context}");
        assert!(
            leftovers.is_empty(),
            "{fault}: leftovers {leftovers:?}\n{context}"
        );
        assert!(
            feedback_right,
            "{fault}: ended {ended:?} but the final feedback says {final_status:?}\n{context}"
        );
    }
}

/// One campaign result: on standard error, and appended (one write, so
/// parallel tests do not interleave) to `$BERTH_FAULT_RESULTS` when set.
fn result(line: &str) {
    eprintln!("{line}");
    if let Ok(path) = std::env::var("BERTH_FAULT_RESULTS") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("the results file opens");
        file.write_all(format!("{line}\n").as_bytes())
            .expect("the result is written");
    }
}

fn exists(name: &str) -> bool {
    run(std::process::Command::new("docker").args(["inspect", name]))
        .status
        .success()
}

/// An engine error at one call of the activity, then the next start.
fn engine_error(tag: &str, at: &str, fault: &str) {
    let s = Scenario::standard(tag);
    let applied = s.apply_v2(&format!("{at}:{fault}"), &[]);
    let verdict = s.next_start();
    s.judge(&format!("{fault}-{at}"), Some(&applied), verdict);
}

/// berth killed before one engine call of the activity, then the next start.
fn killed(tag: &str, at: &str) {
    let s = Scenario::standard(tag);
    s.kill_before(at);
    let verdict = s.next_start();
    s.judge(&format!("kill-before-{at}"), None, verdict);
}

macro_rules! at_every_call {
    ($($name:ident => $at:literal),* $(,)?) => {
        mod engine_error {
            $(#[test] fn $name() { super::engine_error(concat!("e-", stringify!($name)), $at, "fail"); })*
        }
        mod engine_gone {
            $(#[test] fn $name() { super::engine_error(concat!("u-", stringify!($name)), $at, "unavailable"); })*
        }
        mod killed {
            $(#[test] fn $name() { super::killed(concat!("k-", stringify!($name)), $at); })*
        }
    };
}

// Every engine call of the activity, in the order it makes them: the two
// creates (a and d), the in-place update (b), the two stops (a and c), the
// renames (old a away, new a and d into place), the starts, the removals
// (old a, c).
at_every_call! {
    create_1 => "create#1",
    create_2 => "create#2",
    update_1 => "update#1",
    stop_1 => "stop#1",
    stop_2 => "stop#2",
    rename_1 => "rename#1",
    rename_2 => "rename#2",
    rename_3 => "rename#3",
    start_1 => "start#1",
    start_2 => "start#2",
    remove_1 => "remove#1",
    remove_2 => "remove#2",
}

/// The new version of `a` fails to become ready; everything goes back.
fn bad_version(tag: &str, a_v2: &[(&str, &str)], extra: &[&str]) {
    let s = Scenario::new(tag, a_v2);
    let applied = s.apply_v2("", extra);
    let verdict = s.next_start();
    s.judge(tag, Some(&applied), verdict);
    assert!(s.is_old(), "{applied}");
}

#[test]
fn new_version_exits_at_once() {
    bad_version("exits", &[("image", &image("crash", "1"))], &[]);
}

#[test]
fn new_version_never_becomes_healthy() {
    bad_version(
        "unhealthy",
        &[("image", &image("unhealthy", "1"))],
        &["--ready-margin", "2s"],
    );
}

#[test]
fn new_version_crash_loops() {
    bad_version(
        "crashloop",
        &[("image", &image("crash", "1")), ("restartPolicy", "always")],
        &[],
    );
}

#[test]
fn new_version_is_oom_killed() {
    // tail holds a line in memory; /dev/zero never ends one.
    bad_version(
        "oom",
        &[
            ("image", &image("service", "2")),
            ("memory", "16m"),
            ("memorySwap", "16m"),
            ("cmd", "sh"),
            ("cmd", "-c"),
            ("cmd", "tail /dev/zero"),
        ],
        &[],
    );
}

/// A registry problem during DOWNLOADING: nothing that runs is touched.
fn registry_fault(tag: &str, reference: &str, extra: &[&str], check: impl Fn(&Applied)) {
    let s = Scenario::new(tag, &[("image", reference)]);
    let applied = s.apply_v2("", extra);
    assert!(
        applied.statuses().contains(&"DOWNLOAD_FAILURE".to_string()),
        "{applied}"
    );
    assert!(
        !applied.statuses().contains(&"UPDATING".to_string()),
        "{applied}"
    );
    check(&applied);
    let verdict = s.next_start();
    s.judge(tag, Some(&applied), verdict);
    assert!(s.is_old());
}

fn download_message(a: &Applied) -> String {
    a.message("DOWNLOAD_FAILURE")["payload"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn registry_tag_is_missing() {
    let reference = format!("{}/berth-test/service:no-such-tag", registry());
    registry_fault("tag", &reference.clone(), &[], |a| {
        assert!(download_message(a).contains("not found"), "{a}")
    });
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    port
}

#[test]
fn registry_is_down() {
    let reference = format!("127.0.0.1:{}/berth-test/service:2", closed_port());
    registry_fault("down", &reference, &[], |a| {
        assert!(download_message(a).contains("cannot pull"), "{a}")
    });
}

/// A registry that accepts connections and never answers them.
struct Silent {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Silent {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { port, stop }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn registry_never_answers() {
    let silent = Silent::start();
    let reference = format!("127.0.0.1:{}/berth-test/service:2", silent.port);
    registry_fault("silent", &reference, &["--pull-timeout", "3s"], |a| {
        assert!(download_message(a).contains("took longer than 3s"), "{a}")
    });
}

/// A proxy in front of the test registry that passes `limit` bytes of
/// answers, slowly, then cuts every connection: the registry dies mid-pull.
struct Cutting {
    port: u16,
    passed: Arc<AtomicUsize>,
}

impl Cutting {
    fn start(limit: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let passed = Arc::new(AtomicUsize::new(0));
        let counter = passed.clone();
        let upstream = registry();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (counter, upstream) = (counter.clone(), upstream.clone());
                std::thread::spawn(move || relay(client, &upstream, &counter, limit));
            }
        });
        Self { port, passed }
    }
}

fn relay(mut client: TcpStream, upstream: &str, passed: &AtomicUsize, limit: usize) {
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(mut client_reader), Ok(mut server_writer)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_reader, &mut server_writer);
    });
    let mut buf = [0u8; 16 * 1024];
    loop {
        if passed.load(Ordering::Relaxed) >= limit {
            let _ = client.shutdown(std::net::Shutdown::Both);
            let _ = server.shutdown(std::net::Shutdown::Both);
            return;
        }
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if client.write_all(&buf[..n]).is_err() {
            return;
        }
        passed.fetch_add(n, Ordering::Relaxed);
        // About 2 MB/s: slow enough to be cut mid-layer.
        std::thread::sleep(Duration::from_millis(8));
    }
}

/// An image with one large layer of random bytes, pushed to the test
/// registry under a tag of its own, absent from the engine's store.
fn large_image(tag: &str) -> String {
    let reference = format!("{}/berth-test/large:{tag}", registry());
    let dir = tempfile::tempdir().expect("temp dir");
    // Random bytes: the registry stores layers compressed.
    let mut blob = vec![0u8; 24 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut r| r.read_exact(&mut blob))
        .expect("random bytes");
    std::fs::write(dir.path().join("blob"), blob).expect("blob");
    let tar = dir.path().join("layer.tar");
    let out = run(std::process::Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .arg("-cf")
        .arg(&tar)
        .arg("blob"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    docker(&["import", tar.to_str().expect("utf-8 path"), &reference]);
    docker(&["push", &reference]);
    docker(&["rmi", &reference]);
    reference
}

#[test]
fn registry_dies_mid_pull() {
    let tag = format!("{}", std::process::id());
    let pushed = large_image(&tag);
    let proxy = Cutting::start(4 << 20);
    let reference = pushed.replace(&registry(), &format!("127.0.0.1:{}", proxy.port));
    registry_fault("mid-pull", &reference, &["--pull-timeout", "60s"], |a| {
        assert!(download_message(a).contains(&reference), "{a}")
    });
    assert!(
        proxy.passed.load(Ordering::Relaxed) >= 4 << 20,
        "the pull was cut after it had begun"
    );
}

/// Runs `berth apply` with its state directory on a full filesystem.
#[test]
fn a_full_state_directory_changes_nothing_and_recovers_once_space_returns() {
    let s = Scenario::standard("full");
    let full = tempfile::tempdir().expect("mount point");
    let mount = run(std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(full.path()));
    assert!(mount.status.success(), "mount: {}", text(&mount.stderr));
    let _unmount = Unmount(full.path().to_path_buf());
    // Fill it, leaving no room for the journal.
    let _ = run(std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", full.path().join("filler").display())));
    // A directory of berth's own on it: a fresh tmpfs is 1777, which berth
    // refuses as a shared directory (it keeps secrets there).
    let state = full.path().join("state");
    let applied = Applied::from(run(&mut s.device.apply_cmd_in(&state, &s.v2, &[])));
    assert_eq!(applied.code(), Some(1), "{applied}");
    assert!(applied.stderr().contains("No space left"), "{applied}");
    assert!(s.is_old(), "nothing changed\n{applied}");
    // Space returns: the same apply goes through.
    std::fs::remove_file(full.path().join("filler")).expect("free space");
    let after = Applied::from(run(&mut s.device.apply_cmd_in(&state, &s.v2, &[])));
    assert_eq!(after.last_status(), "COMPLETED", "{after}");
    assert!(s.is_new());
    assert!(s.data_intact());
    result("FAULT-RESULT fault=state-dir-full ended=old data=ok leftovers=0 feedback=right final=INCOMPLETE");
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn a_second_berth_with_the_same_instance_name_refuses_to_start_and_names_the_first() {
    let s = Scenario::standard("twins");
    let mut first = s.device.apply_cmd(&s.v2, &[]);
    first.env("BERTH_TEST_FAULTS", "rename#1:pause");
    let mut first = Background::spawn(first);
    first.wait_for("paused before rename#1", Duration::from_secs(90));
    let containers = s.device.containers();

    // Same instance, its own state directory: it would take the first's
    // temporaries for leftovers and undo them.
    let other_state = tempfile::tempdir().expect("state dir");
    let second = Applied::from(run(&mut s.device.apply_cmd_in(
        other_state.path(),
        &s.v2,
        &[],
    )));
    assert_eq!(second.code(), Some(1), "{second}");
    let words = second.stderr();
    assert!(words.contains("is already running"), "{second}");
    assert!(words.contains(&format!("pid {}", first.pid())), "{second}");
    assert_eq!(
        s.device.containers(),
        containers,
        "the second touched nothing"
    );

    first.kill();
    let verdict = s.next_start();
    s.judge("twin-instance", None, verdict);
}

#[test]
fn a_second_berth_on_the_same_state_directory_refuses_and_names_the_first() {
    let s = Scenario::standard("twin-dir");
    let mut first = s.device.apply_cmd(&s.v2, &[]);
    first.env("BERTH_TEST_FAULTS", "start#1:delay=3s");
    let mut first = Background::spawn(first);
    first.wait_for("delaying start#1", Duration::from_secs(90));
    let containers = s.device.containers();

    // Another instance name, the same state directory: the lock answers.
    let mut second = s.device.apply_cmd(&s.v2, &[]);
    second.env("BERTH_INSTANCE", format!("{}other", s.device.name("")));
    let second = Applied::from(run(&mut second));
    assert_eq!(second.code(), Some(1), "{second}");
    let words = second.stderr();
    assert!(words.contains("holds the state directory"), "{second}");
    assert!(words.contains(&first.pid().to_string()), "{second}");
    assert_eq!(
        s.device.containers(),
        containers,
        "the second touched nothing"
    );

    // The first is not disturbed: it finishes, and its answer is the last.
    let out = first.wait_exit(Duration::from_secs(120));
    assert!(out.success(), "{}", first.stderr());
    let last = first
        .stdout()
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok());
    let verdict = s.next_start();
    s.judge("twin-state-dir", None, verdict.or(last));
}

/// Stops the shared dockerd and starts it again (scripts/test-env.sh).
fn restart_dockerd() {
    let _ = std::process::Command::new("pkill")
        .args(["-TERM", "-x", "dockerd"])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // Until the process is gone, not only its socket: a dockerd still
    // exiting holds the pid file the next one needs.
    while run(std::process::Command::new("pgrep").args(["-x", "dockerd"]))
        .status
        .success()
    {
        assert!(std::time::Instant::now() < deadline, "dockerd did not stop");
        std::thread::sleep(Duration::from_millis(200));
    }
    let up =
        run(std::process::Command::new("bash").arg(crate::util::repo_path("scripts/test-env.sh")));
    assert!(
        up.status.success(),
        "restarting the engine failed: {}",
        text(&up.stderr)
    );
}

/// Restarts the shared dockerd, so it must run alone: `scripts/test.sh` runs
/// it after the rest of the suite (`cargo test -- --ignored serial_`).
#[test]
#[ignore = "restarts the shared engine; scripts/test.sh runs it alone, after the suite"]
fn serial_dockerd_restarts_during_an_activity() {
    let s = Scenario::standard("dockerd");
    let mut cmd = s.device.apply_cmd(&s.v2, &[]);
    // The new a waits to start while the engine restarts under it.
    cmd.env("BERTH_TEST_FAULTS", "start#1:delay=8s");
    let apply = std::thread::spawn(move || Applied::from(run(&mut cmd)));
    // The new a has taken its name (it is started after the delay).
    let new_image = image("service", "2");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    // One look that may find no container: between the renames the name is
    // briefly free (looking twice, exists then inspect, raced it).
    let image_of = |name: &str| {
        let out = run(std::process::Command::new("docker").args([
            "inspect",
            "-f",
            "{{index .Config.Labels \"berth.image\"}}",
            name,
        ]));
        out.status
            .success()
            .then(|| text(&out.stdout).trim().to_string())
    };
    while image_of(&s.names[0]).as_deref() != Some(new_image.as_str()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the activity never reached ACTIVATING"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    restart_dockerd();
    let applied = apply.join().expect("the apply thread");
    let verdict = s.next_start();
    s.judge("dockerd-restart", Some(&applied), verdict);
}

#[test]
fn a_corrupt_journal_under_apply_is_set_aside_and_the_apply_goes_through() {
    let s = Scenario::standard("corrupt");
    // berth died during an activity and the disk kept half a journal.
    s.kill_before("rename#1");
    let journal = s.device.state_dir().join("journal.json");
    std::fs::write(&journal, "{\"version\":2,\"activityId\":").expect("corrupt the journal");
    let applied = s.device.apply_ok(&s.v2, &[]);
    assert!(applied.stderr().contains("berth: recovered:"), "{applied}");
    assert!(!journal.exists());
    assert!(s.is_new(), "{applied}");
    assert!(s.data_intact());
    assert!(
        s.device.leftovers().is_empty(),
        "{:?}",
        s.device.leftovers()
    );
}

/// The agent on the device, on a broker of its own: v2 arrives over MQTT.
struct OnBroker {
    broker: crate::broker::Broker,
    sub: crate::broker::Subscriber,
    agent: Background,
}

impl OnBroker {
    fn start(s: &Scenario) -> Self {
        let broker = crate::broker::Broker::start();
        let sub = crate::broker::Subscriber::start(&broker, "#");
        let url = broker.url();
        let mut agent = Background::spawn(s.device.berth_cmd(
            "run",
            &[
                "--mqtt-url",
                &url,
                "--min-ready",
                "3s",
                "--reconcile-interval",
                "0",
            ],
        ));
        agent.wait_for("connected to the MQTT broker", Duration::from_secs(90));
        Self { broker, sub, agent }
    }

    fn publish_v2(&self, s: &Scenario) {
        let text = std::fs::read_to_string(&s.v2).expect("v2");
        crate::broker::publish(&self.broker, "containersupdate/desiredstate", &text);
    }

    /// Waits for feedback of the activity with one of `statuses`.
    fn feedback(&self, activity: &str, statuses: &[&str]) -> Value {
        let log = format!("berth log:\n{}", self.agent.stderr());
        self.sub
            .feedback(activity, statuses, Duration::from_secs(120), &log)
    }

    /// Stops the agent and returns the activity's final feedback.
    fn finish(mut self, activity: &str) -> Value {
        let last = self.feedback(activity, &["COMPLETED", "INCOMPLETE"]);
        assert!(self.agent.terminate().success(), "{}", self.agent.stderr());
        last
    }
}

#[test]
fn mosquitto_restarts_during_an_activity() {
    let s = Scenario::standard("mq-act");
    let mut on = OnBroker::start(&s);
    on.publish_v2(&s);
    on.feedback(&s.activity, &["ACTIVATING"]);
    on.broker.stop();
    std::thread::sleep(Duration::from_secs(1));
    on.broker.restart();
    let last = on.finish(&s.activity);
    s.judge("mosquitto-restart-activity", None, Some(last));
}

#[test]
fn mosquitto_restarts_while_idle() {
    let s = Scenario::standard("mq-idle");
    let mut on = OnBroker::start(&s);
    on.broker.stop();
    on.agent
        .wait_for("lost the MQTT connection", Duration::from_secs(90));
    on.broker.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while on
        .agent
        .stderr()
        .matches("connected to the MQTT broker")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            on.agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    on.publish_v2(&s);
    let last = on.finish(&s.activity);
    s.judge("mosquitto-restart-idle", None, Some(last));
}

/// berth killed right before each journal write of the activity in turn
/// (between an engine call and its record), then the next start; until an
/// apply runs through without reaching the next write.
#[test]
fn killed_before_every_journal_write() {
    let mut n = 1;
    loop {
        let s = Scenario::standard(&format!("kj{n}"));
        let cmd = s.device.apply_cmd(&s.v2, &[]);
        let Some(mut bg) = Background::paused_at_journal_write(cmd, n) else {
            // The activity has fewer writes: every one was covered.
            assert!(n > 5, "only {} journal writes", n - 1);
            break;
        };
        bg.kill();
        let verdict = s.next_start();
        if n == 1 {
            // Killed before the activity's first record: it never began,
            // so nothing changed and there is nothing to answer for.
            assert!(verdict.is_none(), "{verdict:?}");
            assert!(s.is_old() && s.data_intact(), "{:?}", s.device.containers());
            assert!(s.device.leftovers().is_empty());
            result("FAULT-RESULT fault=kill-before-journal#1 ended=old data=ok leftovers=0 feedback=right final=none");
        } else {
            s.judge(&format!("kill-before-journal#{n}"), None, verdict);
        }
        n += 1;
    }
}
