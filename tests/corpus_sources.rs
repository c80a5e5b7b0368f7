//! The malformed corpus (`tests/corpus/`) through the agent's two live
//! sources, MQTT and state files (`tests/corpus.rs` covers the CLI): every
//! case is answered `IDENTIFICATION_FAILED` with a message holding the
//! words its index entry expects, no container changes, and the agent goes
//! on serving: a valid document afterwards still applies.
//!
//! Cases are delivered one at a time, each after the previous one's answer:
//! documents that wait behind each other are superseded, not refused, and
//! this test is about refusals.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::broker::{publish, publish_bytes, Broker, Subscriber};
use crate::corpus::{cases, Case};
use crate::util::{berth, desired_state, docker, image, unique, Background, Cleanup};

const FEEDBACK: &str = "containersupdate/desiredstatefeedback";
const DESIRED: &str = "containersupdate/desiredstate";
/// How long one answer may take on a loaded two-core machine; the largest
/// cases (10,000 components) take well under a second.
const ANSWER: Duration = Duration::from_secs(60);
/// Large enough for every case, so that each is read and judged rather
/// than refused unread for its size.
const MAX_MESSAGE: &str = "67108864";

/// The final feedback messages of `status`.
fn answers(sub: &Subscriber, status: &str) -> Vec<Value> {
    sub.json(FEEDBACK)
        .into_iter()
        .filter(|f| f["payload"]["status"] == status)
        .collect()
}

/// One running container, from a valid document, whose id must survive.
struct Baseline {
    name: String,
    id: String,
    _cleanup: Vec<Cleanup>,
}

impl Baseline {
    fn names(short: &str) -> (String, Vec<Cleanup>) {
        let name = unique(short);
        let cleanup = ["", ".berth-new", ".berth-old"]
            .iter()
            .map(|s| Cleanup(format!("{name}{s}")))
            .collect();
        (name, cleanup)
    }

    fn document(activity: &str, name: &str, tag: &str) -> String {
        let img = image("service", tag);
        desired_state(activity, &[(name, tag, &[("image", &img)])])
    }

    fn id_of(name: &str) -> String {
        docker(&["inspect", "-f", "{{.Id}} {{.State.Running}}", name])
            .trim()
            .to_string()
    }
}

/// Waits for the `n`th answer of `status`; `None` if it does not come.
fn nth_answer(sub: &Subscriber, status: &str, n: usize) -> Option<Value> {
    let deadline = std::time::Instant::now() + ANSWER;
    loop {
        let all = answers(sub, status);
        if all.len() >= n {
            return all.into_iter().nth(n - 1);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Delivers every case through `deliver`, and returns what went wrong:
/// no answer, or an answer without an expected fragment.
fn run_corpus(
    sub: &Subscriber,
    agent: &Background,
    deliver: impl Fn(&Case),
    skip: impl Fn(&Case) -> bool,
) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut refused = answers(sub, "IDENTIFICATION_FAILED").len();
    let mut delivered = 0;
    for case in cases() {
        if skip(&case) {
            continue;
        }
        deliver(&case);
        delivered += 1;
        let Some(answer) = nth_answer(sub, "IDENTIFICATION_FAILED", refused + 1) else {
            failures.push(format!(
                "{}: no IDENTIFICATION_FAILED within {ANSWER:?}",
                case.name
            ));
            // Whatever it was doing, later answers must not be taken for
            // this case's.
            refused = answers(sub, "IDENTIFICATION_FAILED").len();
            continue;
        };
        refused += 1;
        let message = answer["payload"]["message"].as_str().unwrap_or("");
        let missing: Vec<&String> = case
            .expect
            .iter()
            .filter(|w| !message.contains(w.as_str()))
            .collect();
        if !missing.is_empty() {
            let shown: String = message.chars().take(400).collect();
            failures.push(format!("{}: lacks {missing:?} in {shown:?}", case.name));
        }
    }
    assert!(
        !agent.stderr().contains("panicked"),
        "berth panicked:\n{}",
        agent.stderr()
    );
    (delivered, failures)
}

fn agent(state: &Path, args: &[&str]) -> Background {
    let mut cmd = berth();
    cmd.args(["run", "--state-dir"])
        .arg(state)
        .args([
            "--min-ready",
            "500ms",
            "--mqtt-max-message-size",
            MAX_MESSAGE,
        ])
        .args(["--instance", &crate::util::instance()])
        .args(args);
    Background::spawn(cmd)
}

#[test]
fn every_corpus_case_over_mqtt_is_refused_naming_the_problem_and_changes_nothing() {
    let state = TempDir::new().unwrap();
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "#");
    let url = broker.url();
    let mut berth = agent(state.path(), &["--mqtt-url", &url]);
    berth.wait_for("connected to the MQTT broker", ANSWER);
    let (name, _cleanup) = Baseline::names("corpus-mq");
    publish(
        &broker,
        DESIRED,
        &Baseline::document("corpus-mq-1", &name, "1"),
    );
    let done = nth_answer(&sub, "COMPLETED", 1).expect("the valid document completes");
    assert_eq!(done["activityId"], "corpus-mq-1");
    let base = Baseline {
        id: Baseline::id_of(&name),
        name,
        _cleanup: Vec::new(),
    };

    let (delivered, failures) = run_corpus(
        &sub,
        &berth,
        |case| publish_bytes(&broker, DESIRED, &case.bytes),
        |_| false,
    );

    assert!(delivered >= 150, "only {delivered} cases");
    eprintln!(
        "corpus: {delivered} cases delivered, {} refused as expected",
        delivered - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        Baseline::id_of(&base.name),
        base.id,
        "the container changed"
    );
    assert!(base.id.ends_with(" true"), "not running: {}", base.id);
    publish(
        &broker,
        DESIRED,
        &Baseline::document("corpus-mq-2", &base.name, "2"),
    );
    let done = nth_answer(&sub, "COMPLETED", 2).expect("berth still serves");
    assert_eq!(done["activityId"], "corpus-mq-2");
    assert!(berth.is_running());
    assert!(berth.terminate().success());
}

#[test]
fn every_corpus_case_in_a_state_file_is_refused_naming_the_problem_and_changes_nothing() {
    let state = TempDir::new().unwrap();
    let files = TempDir::new().unwrap();
    let file = files.path().join("state.json");
    let (name, _cleanup) = Baseline::names("corpus-file");
    let write = |bytes: &[u8]| {
        // As a GitOps checkout writes: a new file renamed over the old.
        let tmp = files.path().join(".state.json.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    write(Baseline::document("corpus-file-1", &name, "1").as_bytes());
    // Feedback for file documents goes to the broker too.
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "#");
    let url = broker.url();
    let path = file.to_str().unwrap().to_string();
    let mut berth = agent(
        state.path(),
        &[
            "--mqtt-url",
            &url,
            "--files",
            &path,
            "--files-poll-interval",
            "50ms",
            "--files-max-file-size",
            MAX_MESSAGE,
        ],
    );
    berth.wait_for("connected to the MQTT broker", ANSWER);
    let done = nth_answer(&sub, "COMPLETED", 1).expect("the valid file completes");
    assert_eq!(done["activityId"], "corpus-file-1");
    let base = Baseline {
        id: Baseline::id_of(&name),
        name,
        _cleanup: Vec::new(),
    };

    let previous = std::cell::RefCell::new(Vec::new());
    let (delivered, failures) = run_corpus(
        &sub,
        &berth,
        |case| {
            write(&case.bytes);
            *previous.borrow_mut() = case.bytes.clone();
        },
        // A file that did not change is not read again.
        |case| *previous.borrow() == case.bytes,
    );

    assert!(delivered >= 150, "only {delivered} cases");
    eprintln!(
        "corpus: {delivered} cases delivered, {} refused as expected",
        delivered - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        Baseline::id_of(&base.name),
        base.id,
        "the container changed"
    );
    write(Baseline::document("corpus-file-2", &base.name, "2").as_bytes());
    let done = nth_answer(&sub, "COMPLETED", 2).expect("berth still serves");
    assert_eq!(done["activityId"], "corpus-file-2");
    assert!(berth.is_running());
    assert!(berth.terminate().success());
}
