//! The malformed corpus (`tests/corpus/`): every document is refused by
//! `berth validate` with exit 1 and a message holding the words its index
//! entry expects, never with a panic (exit 101), and within a bounded time.
//!
//! `tests/corpus/index.toml` is the machine-readable manifest; other
//! sources' tests (MQTT, state files) read the same cases through
//! [`cases`]. `tests/corpus/README.md` is generated from it; regenerate with
//! `BERTH_BLESS=1 cargo test --features test-hooks --test integration corpus`.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::util::{berth, repo_path};

/// How long one `berth validate` of one case may take, in a debug build on
/// a loaded two-core machine; the largest cases take well under a second.
const DEADLINE: Duration = Duration::from_secs(30);

/// One malformed document and what refusing it must say.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file name (or, for generated cases, the generator's name).
    pub name: String,
    /// What mistake the case makes, in words.
    pub tests: String,
    /// Fragments the refusal must contain, each somewhere in its lines.
    pub expect: Vec<String>,
    /// The document, exactly as a source would deliver it.
    pub bytes: Vec<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    case: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    file: Option<String>,
    generate: Option<String>,
    tests: String,
    expect: Vec<String>,
}

fn corpus_dir() -> PathBuf {
    repo_path("tests/corpus")
}

fn index() -> Index {
    let path = corpus_dir().join("index.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Every case of the corpus, generated ones built here.
pub fn cases() -> Vec<Case> {
    index()
        .case
        .into_iter()
        .map(|e| {
            let (name, bytes) = match (e.file, e.generate) {
                (Some(file), None) => {
                    let path = corpus_dir().join(&file);
                    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                    (file, bytes)
                }
                (None, Some(name)) => {
                    let bytes = generate(&name);
                    (name, bytes)
                }
                other => panic!("a case needs exactly one of file and generate: {other:?}"),
            };
            Case {
                name,
                tests: e.tests,
                expect: e.expect,
                bytes,
            }
        })
        .collect()
}

fn component(id: &str, config: &[(&str, &str)]) -> Value {
    let config: Vec<Value> = config
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    json!({"id": id, "version": "1", "config": config})
}

fn document(components: Vec<Value>) -> Vec<u8> {
    json!({
        "activityId": "corpus",
        "payload": {"domains": [{"id": "containers", "components": components}]}
    })
    .to_string()
    .into_bytes()
}

const IMAGE: (&str, &str) = ("image", "127.0.0.1:5000/app:1");

/// The cases too large to commit, by the name their index entry gives.
pub fn generate(name: &str) -> Vec<u8> {
    let numbered = |n: usize, config: &[(&str, &str)]| -> Vec<Value> {
        (0..n)
            .map(|i| component(&format!("c{i}"), config))
            .collect()
    };
    match name {
        "10000-components-one-port" => document(numbered(10_000, &[IMAGE, ("port", "8080:80")])),
        "12000-components" => document(numbered(12_000, &[IMAGE])),
        "deep-nesting-100000" => {
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes()
        }
        "dependency-ring-10000" => document(
            (0..10_000)
                .map(|i| {
                    let next = format!("c{}", (i + 1) % 10_000);
                    component(&format!("c{i}"), &[IMAGE, ("dependsOn", &next)])
                })
                .collect(),
        ),
        "10000-duplicate-ids" => document(vec![component("web", &[IMAGE]); 10_000]),
        "megabyte-unknown-key" => {
            let key = "x".repeat(1 << 20);
            document(vec![component("web", &[IMAGE, (&key, "1")])])
        }
        "megabyte-first-value-repeated" => {
            let first = format!("/{}", "a".repeat(1 << 20));
            let mut config = vec![IMAGE, ("workdir", first.as_str())];
            config.extend(std::iter::repeat_n(("workdir", "/b"), 10_000));
            document(vec![component("web", &config)])
        }
        "5000-mistakes-one-component" => {
            let mut config = vec![IMAGE];
            config.extend(std::iter::repeat_n(("env", "1BAD=x"), 5_000));
            document(vec![component("web", &config)])
        }
        other => panic!("no generator named {other:?}"),
    }
}

/// What one `berth validate` run said.
struct Verdict {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `cmd`, killing it at `deadline`: a hang fails the case instead of
/// the whole suite.
fn run_bounded(mut cmd: Command, deadline: Duration) -> Verdict {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for berth") {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = start.elapsed();
    Verdict {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        took,
    }
}

/// The case as a file named like it, in `dir`.
fn materialise(dir: &Path, case: &Case) -> PathBuf {
    let path = dir.join(&case.name);
    std::fs::write(&path, &case.bytes).expect("write case");
    path
}

/// What is wrong with berth's answer to `case`, if anything.
fn problems_with_answer(case: &Case, v: &Verdict) -> Vec<String> {
    let mut wrong = Vec::new();
    if v.status.code() == Some(101) || v.stderr.contains("panicked") {
        wrong.push(format!("panicked: {}", v.stderr));
    }
    if v.status.code() != Some(1) {
        wrong.push(format!("exit {:?}, expected 1", v.status.code()));
    }
    // Every line starts with the file's name; the expected words must be in
    // what follows it, not in the name itself.
    let prefix = format!("{}: ", case.name);
    let lines: Vec<&str> = v
        .stderr
        .lines()
        .map(|l| l.strip_prefix(&prefix).unwrap_or(l))
        .collect();
    if lines.is_empty() || lines.iter().any(|l| l.trim().is_empty()) {
        wrong.push("an empty answer or an empty line".into());
    }
    let said = lines.join("\n");
    for word in &case.expect {
        if !said.contains(word.as_str()) {
            wrong.push(format!("does not say {word:?}"));
        }
    }
    let errors = lines.iter().filter(|l| !l.contains("warning: ")).count();
    if errors > berth::spec::limits::MAX_LISTED + 1 {
        wrong.push(format!("{errors} error lines, more than the bound"));
    }
    if v.stdout.contains(": valid (") {
        wrong.push("said valid".into());
    }
    wrong
}

#[test]
fn the_corpus_has_at_least_150_cases_each_expecting_some_words() {
    let cases = cases();
    assert!(cases.len() >= 150, "{} cases", cases.len());
    for case in &cases {
        assert!(!case.expect.is_empty(), "{} expects nothing", case.name);
        assert!(!case.tests.trim().is_empty(), "{} says nothing", case.name);
    }
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "two cases share a name");
}

#[test]
fn every_file_in_the_corpus_is_in_the_index_and_every_indexed_file_exists() {
    let indexed: BTreeSet<String> = index().case.into_iter().filter_map(|e| e.file).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "index.toml" && n != "README.md" && !n.starts_with('.'))
        .collect();
    assert_eq!(indexed, on_disk);
}

#[test]
fn every_case_is_refused_naming_its_problem_without_a_panic_in_bounded_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for case in cases() {
        let path = materialise(dir.path(), &case);
        let mut cmd = berth();
        cmd.current_dir(dir.path())
            .arg("validate")
            .arg(path.file_name().expect("name"));
        let verdict = run_bounded(cmd, DEADLINE);
        if verdict.took > slowest.0 {
            slowest = (verdict.took, case.name.clone());
        }
        let wrong = problems_with_answer(&case, &verdict);
        if !wrong.is_empty() {
            failures.push(format!(
                "{} ({}): {}\n{}",
                case.name,
                case.tests,
                wrong.join("; "),
                verdict.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!("slowest case: {} in {:?}", slowest.1, slowest.0);
}

#[test]
fn every_case_is_refused_in_json_with_bounded_non_empty_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths: Vec<PathBuf> = cases().iter().map(|c| materialise(dir.path(), c)).collect();
    let mut cmd = berth();
    cmd.current_dir(dir.path())
        .args(["validate", "--json"])
        .args(&paths);
    let verdict = run_bounded(cmd, DEADLINE * 4);
    assert_eq!(verdict.status.code(), Some(1), "{}", verdict.stderr);
    let lines: Vec<&str> = verdict.stdout.lines().collect();
    assert_eq!(lines.len(), paths.len());
    for line in lines {
        let v: Value = serde_json::from_str(line).expect("one JSON verdict per line");
        assert_eq!(v["valid"], false, "{}", v["file"]);
        let errors = v["errors"].as_array().expect("errors");
        let problems = v["problems"].as_u64().expect("problems") as usize;
        let listed = berth::spec::limits::MAX_LISTED;
        assert_eq!(errors.len(), problems.min(listed + 1), "{}", v["file"]);
        assert!(problems >= 1, "{}", v["file"]);
        for e in errors {
            assert!(
                !e["message"].as_str().unwrap_or("").trim().is_empty(),
                "{e}"
            );
        }
    }
}

#[test]
fn the_component_limit_can_be_raised_on_the_command_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let case = Case {
        name: "12000-components".into(),
        tests: String::new(),
        expect: Vec::new(),
        bytes: generate("12000-components"),
    };
    let path = materialise(dir.path(), &case);
    let mut cmd = berth();
    cmd.args(["validate", "--max-components", "12000"])
        .arg(&path);
    let verdict = run_bounded(cmd, DEADLINE);
    assert!(verdict.status.success(), "{}", verdict.stderr);
    assert!(
        verdict.stdout.contains("valid (12000 containers)"),
        "{}",
        verdict.stdout
    );
}

#[test]
fn a_depth_limit_outside_its_bounds_is_refused_naming_the_flag() {
    let verdict = run_bounded(
        {
            let mut cmd = berth();
            cmd.args(["validate", "--max-depth", "128", "examples/minimal.json"]);
            cmd
        },
        DEADLINE,
    );
    assert_ne!(verdict.status.code(), Some(0));
    assert!(
        verdict
            .stderr
            .contains("--max-depth: 128 is not between 8 and 127"),
        "{}",
        verdict.stderr
    );
}

/// The README's table, from the index.
fn readme() -> String {
    let mut out = String::from(
        "# The malformed corpus\n\n\
         Every document here is one mistake; `berth validate` must refuse each with\n\
         exit 1 and a message holding the expected words, never panic, and finish in\n\
         bounded time (`tests/corpus.rs`). The machine-readable manifest is\n\
         [`index.toml`](index.toml); cases marked *generated* are built at test time\n\
         (`tests/corpus.rs`, `generate`) because they are megabytes. Other sources'\n\
         tests read the same cases with `crate::corpus::cases()`.\n\n\
         This file is generated from the index: after editing it, run\n\
         `BERTH_BLESS=1 cargo test --features test-hooks --test integration corpus`.\n\n\
         | case | what it tests | expected words |\n\
         | --- | --- | --- |\n",
    );
    for e in index().case {
        let name = match (&e.file, &e.generate) {
            (Some(file), _) => format!("[`{file}`]({file})"),
            (None, Some(name)) => format!("`{name}` (generated)"),
            (None, None) => "?".into(),
        };
        let words: Vec<String> = e
            .expect
            .iter()
            .map(|w| format!("`{}`", w.replace('|', "\\|").replace('`', "'")))
            .collect();
        out.push_str(&format!(
            "| {name} | {} | {} |\n",
            e.tests.replace('|', "\\|"),
            words.join(", ")
        ));
    }
    out
}

#[test]
fn the_readme_lists_every_case_of_the_index() {
    let path = corpus_dir().join("README.md");
    let generated = readme();
    if std::env::var("BERTH_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write README");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "tests/corpus/README.md is stale; regenerate it with `BERTH_BLESS=1 cargo test --features test-hooks --test integration corpus`"
    );
}
