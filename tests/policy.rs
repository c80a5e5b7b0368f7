//! The device's `[policy]` against the real engine, through the binary:
//! for every rule, a document `berth apply --config` refuses (exit 1,
//! nothing pulled, nothing created, nothing saved) and one it lets through;
//! `berth plan --config` and `berth policy check`; and a document that tries
//! to shrink the device's system containers.
//!
//! A refused document names an image tag pushed to the registry for the
//! test and then removed locally, so "nothing pulled" is exactly "that tag
//! is still not on the engine".

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::cli_apply::{inspect, Device};
use crate::util::{berth, docker, image, json_stdout, registry, run, temp_file, text};

/// A tag of the service image that exists in the registry but not on the
/// engine; removed from the engine again when dropped.
struct RemoteOnly(String);

impl RemoteOnly {
    fn new(short: &str) -> Self {
        let reference = format!(
            "{}/berth-test/service:policy-{}-{short}",
            registry(),
            std::process::id()
        );
        docker(&["tag", &image("service", "1"), &reference]);
        docker(&["push", &reference]);
        docker(&["rmi", &reference]);
        Self(reference)
    }

    /// Whether the engine has the tag now (someone pulled it).
    fn pulled(&self) -> bool {
        Command::new("docker")
            .args(["image", "inspect", &self.0])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for RemoteOnly {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

/// The service image pinned by the digest the registry serves.
fn pinned() -> String {
    docker(&[
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        &image("service", "1"),
    ])
}

/// A document with components given as JSON config arrays, and optionally
/// the domain's `systemContainers`.
fn document(activity: &str, system: Option<&str>, components: &[(&str, Value)]) -> String {
    let components: Vec<Value> = components
        .iter()
        .map(|(id, config)| json!({"id": id, "version": "1", "config": config}))
        .collect();
    let mut domain = json!({"id": "containers", "components": components});
    if let Some(s) = system {
        domain["config"] = json!([{"key": "systemContainers", "value": s}]);
    }
    json!({"activityId": activity, "payload": {"domains": [domain]}}).to_string()
}

/// `[{key, value}]` from pairs.
fn config(pairs: &[(&str, &str)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect(),
    )
}

/// One test's device with a configuration file and a data directory the
/// strict policy allows mounts from.
struct Setup {
    device: Device,
    dir: tempfile::TempDir,
    config: PathBuf,
    data: PathBuf,
}

impl Setup {
    fn new(tag: &str, policy: &str) -> Self {
        let device = Device::new(&format!("policy-{tag}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let data = std::fs::canonicalize(dir.path())
            .expect("temp dir resolves")
            .join("data");
        std::fs::create_dir_all(data.join("sub")).expect("data dir");
        let policy = policy.replace("@DATA@", &data.display().to_string());
        let config = temp_file(dir.path(), "config.toml", &policy);
        Self {
            device,
            dir,
            config,
            data,
        }
    }

    fn doc(&self, file: &str, text: &str) -> PathBuf {
        temp_file(self.dir.path(), &format!("{file}.json"), text)
    }

    fn apply(&self, doc: &Path) -> crate::cli_apply::Applied {
        let config = self.config.display().to_string();
        self.device.apply(doc, &["--config", &config])
    }

    /// An apply the policy must refuse: exit 1, IDENTIFICATION_FAILED,
    /// every line in `expected` on stderr, and nothing created or saved.
    #[track_caller]
    fn refused(&self, doc: &Path, expected: &[&str]) {
        let before = self.device.containers();
        let a = self.apply(doc);
        assert_eq!(a.code(), Some(1), "{a}");
        assert_eq!(a.statuses(), ["IDENTIFICATION_FAILED"], "{a}");
        for e in expected {
            assert!(a.stderr().contains(e), "missing {e:?}\n{a}");
        }
        assert_eq!(self.device.containers(), before, "{a}");
        assert!(
            !self
                .device
                .state_files()
                .iter()
                .any(|f| f.contains("desired")),
            "the refused document was saved: {:?}",
            self.device.state_files()
        );
    }
}

const STRICT: &str = r#"
[policy]
allowed_images = ["127.0.0.1:5000/berth-test/*"]
allow_privileged = false
allow_host_network = false
allowed_devices = ["/dev/null"]
allowed_mount_sources = ["@DATA@"]
allow_env_change = ["free-*"]
allowed_users = ["nobody", "65534"]
allowed_volumes = ["berth-it-*"]
allowed_host_ports = ["18000-18999"]
"#;

/// A host port in the strict policy's range that is free now.
fn free_allowed_port() -> u16 {
    (18000..19000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 18000-18999")
}

/// A component the strict policy lets through, apart from `extra`.
fn strict_component(image_ref: &str, extra: &[(&str, &str)]) -> Value {
    let mut pairs = vec![("image", image_ref)];
    if !extra.iter().any(|(k, _)| *k == "user") {
        pairs.push(("user", "nobody"));
    }
    pairs.extend_from_slice(extra);
    config(&pairs)
}

#[test]
fn a_document_passing_every_rule_is_applied() {
    let mut s = Setup::new("pass", STRICT);
    let mount = format!("{}/sub:/data", s.data.display());
    let volume = format!("{}:/state", s.device.volume("state"));
    let port = format!("127.0.0.1:{}:8080", free_allowed_port());
    let web = s.device.name("web");
    let doc = s.doc(
        "pass",
        &document(
            "policy-pass",
            None,
            &[(
                &web,
                strict_component(
                    &image("service", "1"),
                    &[
                        ("privileged", "false"),
                        ("network", "bridge"),
                        ("device", "/dev/null:/dev/berth-null"),
                        ("mount", &mount),
                        ("volume", &volume),
                        ("port", &port),
                        ("env", "A=1"),
                    ],
                ),
            )],
        ),
    );
    let a = s.apply(&doc);
    assert_eq!(a.code(), Some(0), "{a}");
    assert_eq!(inspect(&web)["Config"]["User"], "nobody");
}

#[test]
fn an_image_outside_allowed_images_is_refused_and_not_pulled() {
    let s = Setup::new(
        "images",
        "[policy]\nallowed_images = [\"127.0.0.1:5000/berth-test/healthy\"]\n",
    );
    let remote = RemoteOnly::new("images");
    let web = s.device.name("web");
    let doc = s.doc(
        "images",
        &document(
            "policy-images",
            None,
            &[(&web, config(&[("image", &remote.0)]))],
        ),
    );
    s.refused(
        &doc,
        &[&format!(
            "container \"{web}\": key \"image\" value \"{}\" is refused by policy allowed_images = [\"127.0.0.1:5000/berth-test/healthy\"]: matches none of the patterns",
            remote.0
        )],
    );
    assert!(!remote.pulled());
    let ok = s.doc(
        "images-ok",
        &document(
            "policy-images-ok",
            None,
            &[(&web, config(&[("image", &image("healthy", "1"))]))],
        ),
    );
    assert_eq!(s.apply(&ok).code(), Some(0));
}

#[test]
fn a_tag_without_a_digest_is_refused_when_digests_are_required_and_a_pinned_image_passes() {
    let s = Setup::new("digest", "[policy]\nrequire_digest = true\n");
    let remote = RemoteOnly::new("digest");
    let web = s.device.name("web");
    let doc = s.doc(
        "digest",
        &document(
            "policy-digest",
            None,
            &[(&web, config(&[("image", &remote.0)]))],
        ),
    );
    s.refused(&doc, &["is refused by policy require_digest = true"]);
    assert!(!remote.pulled());
    let ok = s.doc(
        "digest-ok",
        &document(
            "policy-digest-ok",
            None,
            &[(&web, config(&[("image", &pinned())]))],
        ),
    );
    let a = s.apply(&ok);
    assert_eq!(a.code(), Some(0), "{a}");
}

/// A strict-policy refusal of one component with `extra` settings, on an
/// image that must stay unpulled.
fn refused_strict(tag: &str, extra: &[(&str, &str)], expected: &str) {
    let s = Setup::new(tag, STRICT);
    let remote = RemoteOnly::new(tag);
    let web = s.device.name("web");
    let extra: Vec<(&str, String)> = extra
        .iter()
        .map(|(k, v)| (*k, v.replace("@DATA@", &s.data.display().to_string())))
        .collect();
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let doc = s.doc(
        tag,
        &document(
            &format!("policy-{tag}"),
            None,
            &[(&web, strict_component(&remote.0, &extra))],
        ),
    );
    s.refused(&doc, &[&format!("container \"{web}\": "), expected]);
    assert!(!remote.pulled(), "{} was pulled", remote.0);
}

#[test]
fn a_named_volume_outside_allowed_volumes_is_refused() {
    refused_strict(
        "volume",
        &[("volume", "someone-elses-data:/data")],
        "key \"volume\" value \"someone-elses-data:/data\" is refused by policy allowed_volumes = [\"berth-it-*\"]: matches none of the patterns",
    );
}

#[test]
fn a_host_port_outside_allowed_host_ports_is_refused() {
    refused_strict(
        "port",
        &[("port", "2222:8080")],
        "key \"port\" value \"2222:8080/tcp\" is refused by policy allowed_host_ports = [\"18000-18999\"]: the host port is in none of the ranges",
    );
}

#[test]
fn a_privileged_container_is_refused() {
    refused_strict(
        "privileged",
        &[("privileged", "true")],
        "key \"privileged\" value \"true\" is refused by policy allow_privileged = false",
    );
}

#[test]
fn the_host_network_is_refused() {
    refused_strict(
        "host-net",
        &[("network", "host")],
        "key \"network\" value \"host\" is refused by policy allow_host_network = false",
    );
}

#[test]
fn a_device_outside_allowed_devices_is_refused() {
    refused_strict(
        "device",
        &[("device", "/dev/zero:/dev/zero")],
        "key \"device\" value \"/dev/zero:/dev/zero:rwm\" is refused by policy allowed_devices = [\"/dev/null\"]: matches none of the patterns",
    );
}

#[test]
fn a_mount_outside_allowed_mount_sources_is_refused() {
    refused_strict(
        "mount",
        &[("mount", "/etc:/host-etc")],
        "the source is under none of the allowed paths",
    );
}

#[test]
fn the_docker_socket_is_refused_unless_listed() {
    refused_strict(
        "socket",
        &[("mount", "/var/run/docker.sock:/var/run/docker.sock")],
        "the source is the Docker socket",
    );
}

#[test]
fn a_symlink_escaping_an_allowed_mount_source_is_refused() {
    let s = Setup::new("symlink", STRICT);
    std::os::unix::fs::symlink("/etc", s.data.join("escape")).expect("symlink");
    let web = s.device.name("web");
    let remote = RemoteOnly::new("symlink");
    let mount = format!("{}/escape:/host-etc", s.data.display());
    let doc = s.doc(
        "symlink",
        &document(
            "policy-symlink",
            None,
            &[(&web, strict_component(&remote.0, &[("mount", &mount)]))],
        ),
    );
    s.refused(
        &doc,
        &["the source resolves (through a symbolic link) to /etc, which is under none of the allowed paths"],
    );
    assert!(!remote.pulled());
}

#[test]
fn a_root_user_and_an_unset_user_are_refused() {
    refused_strict(
        "root",
        &[("user", "0:0")],
        "key \"user\" value \"0:0\" is refused by policy allowed_users = [\"nobody\", \"65534\"]",
    );
    let s = Setup::new("unset-user", STRICT);
    let remote = RemoteOnly::new("unset-user");
    let web = s.device.name("web");
    let doc = s.doc(
        "unset",
        &document(
            "policy-unset",
            None,
            &[(&web, config(&[("image", &remote.0)]))],
        ),
    );
    s.refused(&doc, &["key \"user\" value \"(unset)\"", "checked as root"]);
    assert!(!remote.pulled());
}

#[test]
fn a_protected_components_env_change_is_refused_naming_the_variable_not_the_value() {
    let s = Setup::new("env", STRICT);
    let web = s.device.name("web");
    let first = s.doc(
        "env-1",
        &document(
            "policy-env-1",
            None,
            &[(
                &web,
                strict_component(&image("service", "1"), &[("env", "URL=http://a")]),
            )],
        ),
    );
    let a = s.apply(&first);
    assert_eq!(a.code(), Some(0), "{a}");
    let id = inspect(&web)["Id"].clone();
    let second = s.doc(
        "env-2",
        &document(
            "policy-env-2",
            None,
            &[(
                &web,
                strict_component(&image("service", "2"), &[("env", "URL=http://evil-value")]),
            )],
        ),
    );
    let config = s.config.display().to_string();
    let a = s.device.apply(&second, &["--config", &config]);
    assert_eq!(a.code(), Some(1), "{a}");
    assert!(
        a.stderr().contains(&format!(
            "container \"{web}\": key \"env\" value \"URL\" is refused by policy allow_env_change = [\"free-*\"]"
        )),
        "{a}"
    );
    assert!(!format!("{a}").contains("evil-value"), "{a}");
    assert_eq!(inspect(&web)["Id"], id, "the container was touched");
    // The same env with a new image version is no env change.
    let third = s.doc(
        "env-3",
        &document(
            "policy-env-3",
            None,
            &[(
                &web,
                strict_component(&image("service", "2"), &[("env", "URL=http://a")]),
            )],
        ),
    );
    let a = s.apply(&third);
    assert_eq!(a.code(), Some(0), "{a}");
}

#[test]
fn a_document_cannot_shrink_join_adopt_or_remove_a_configured_system_container() {
    let s = Setup::new("system", "");
    let sys = s.device.hand_made("sys", &image("service", "1"));
    let id = inspect(&sys)["Id"].clone();
    let config = temp_file(
        s.dir.path(),
        "system.toml",
        &format!("system_containers = [\"{sys}\"]\n"),
    );
    let config = config.display().to_string();
    let web = s.device.name("web");
    // Joining its network: refused, whatever the policy.
    let join = s.doc(
        "join",
        &document(
            "policy-join",
            Some(""),
            &[(
                &web,
                config_pairs(&[
                    ("image", &image("service", "1")),
                    ("network", &format!("container:{sys}")),
                ]),
            )],
        ),
    );
    let a = s
        .device
        .apply(&join, &["--config", &config, "--scope", "all"]);
    assert_eq!(a.code(), Some(1), "{a}");
    assert!(
        a.stderr()
            .contains("is refused by policy system_containers"),
        "{a}"
    );
    // Nor by an id prefix, which the engine resolves as well.
    let short = id.as_str().unwrap_or_default()[..12].to_string();
    let join = s.doc(
        "join-id",
        &document(
            "policy-join-id",
            None,
            &[(
                &web,
                config_pairs(&[
                    ("image", &image("service", "1")),
                    ("network", &format!("container:{short}")),
                ]),
            )],
        ),
    );
    let a = s.device.apply(&join, &["--config", &config]);
    assert_eq!(a.code(), Some(1), "{a}");
    assert!(
        a.stderr()
            .contains("is refused by policy system_containers"),
        "{a}"
    );
    assert!(s.device.containers().iter().all(|c| *c == sys), "{a}");
    // An empty systemContainers with scope all: the configured one stays.
    let shrink = s.doc(
        "shrink",
        &document(
            "policy-shrink",
            Some(""),
            &[
                (&web, config_pairs(&[("image", &image("service", "1"))])),
                (&sys, config_pairs(&[("image", &image("service", "2"))])),
            ],
        ),
    );
    let a = s
        .device
        .apply(&shrink, &["--config", &config, "--scope", "all"]);
    assert_eq!(a.code(), Some(0), "{a}");
    let after = inspect(&sys);
    assert_eq!(after["Id"], id, "the system container was replaced\n{a}");
    assert_eq!(after["State"]["Running"], true);
    assert_eq!(after["Config"]["Image"], image("service", "1"));
    // The plan says why the component is left alone.
    let out = run(s
        .device
        .berth_cmd("plan", &["--config", &config, "--scope", "all"])
        .arg(&shrink));
    assert!(
        text(&out.stdout).contains(&format!("{sys}: a system container; berth leaves it alone")),
        "{}",
        text(&out.stdout)
    );
}

fn config_pairs(pairs: &[(&str, &str)]) -> Value {
    config(pairs)
}

#[test]
fn plan_with_a_config_refuses_what_the_policy_refuses() {
    let s = Setup::new("plan", STRICT);
    let web = s.device.name("web");
    let doc = s.doc(
        "plan",
        &document(
            "policy-plan",
            None,
            &[(
                &web,
                strict_component(&image("service", "1"), &[("privileged", "true")]),
            )],
        ),
    );
    let config = s.config.display().to_string();
    let out = run(s.device.berth_cmd("plan", &["--config", &config]).arg(&doc));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is refused by policy allow_privileged = false"));
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
    // Without --config the same document plans.
    let out = run(s.device.berth_cmd("plan", &[]).arg(&doc));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn policy_check_explains_every_decision_and_exits_1_on_a_refusal() {
    let s = Setup::new("check", STRICT);
    let doc = s.doc(
        "check",
        &document(
            "policy-check",
            None,
            &[
                ("good", strict_component(&image("service", "1"), &[])),
                (
                    "bad",
                    strict_component(&image("service", "1"), &[("network", "host")]),
                ),
            ],
        ),
    );
    let config = s.config.display().to_string();
    let out = run(berth()
        .args(["policy", "check", "--config", &config])
        .arg(&doc));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("REFUSED  bad   network    \"host\"  allow_host_network = false"),
        "{stdout}"
    );
    assert!(stdout.contains("allowed  good  user       \"nobody\"  allowed_users = [\"nobody\", \"65534\"]: matches \"nobody\""), "{stdout}");
    assert!(
        stdout.ends_with("Policy: 12 decisions, 1 refused\n"),
        "{stdout}"
    );

    let out = run(berth()
        .args(["policy", "check", "--json", "--config", &config])
        .arg(&doc));
    let report = json_stdout(&out);
    assert_eq!(report["allowed"], false);
    assert_eq!(report["refused"], 1);
    let refused: Vec<&Value> = report["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["verdict"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["component"], "bad");
    assert_eq!(refused[0]["key"], "network");

    let good = s.doc(
        "good",
        &document(
            "policy-good",
            None,
            &[("good", strict_component(&image("service", "1"), &[]))],
        ),
    );
    let out = run(berth()
        .args(["policy", "check", "--config", &config])
        .arg(&good));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn policy_check_compares_env_with_a_baseline_document() {
    let s = Setup::new("check-env", STRICT);
    let now = s.doc(
        "now",
        &document(
            "now",
            None,
            &[(
                "svc",
                strict_component(&image("service", "1"), &[("env", "TOKEN=old")]),
            )],
        ),
    );
    let next = s.doc(
        "next",
        &document(
            "next",
            None,
            &[(
                "svc",
                strict_component(&image("service", "1"), &[("env", "TOKEN=new-secret")]),
            )],
        ),
    );
    let config = s.config.display().to_string();
    let out = run(berth()
        .args(["policy", "check", "--config", &config, "--baseline"])
        .arg(&now)
        .arg(&next));
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("REFUSED  svc  env        \"TOKEN\""),
        "{stdout}"
    );
    assert!(!stdout.contains("new-secret"));
}

#[test]
fn a_bad_policy_pattern_is_a_configuration_error_naming_the_entry() {
    let s = Setup::new(
        "bad-glob",
        "[policy]\nallowed_images = [\"a.io/x\", \"b.io/y\", \"c.io/[z\"]\n",
    );
    let doc = s.doc("bad", &document("bad", None, &[]));
    let config = s.config.display().to_string();
    let out = run(berth()
        .args(["policy", "check", "--config", &config])
        .arg(&doc));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("policy.allowed_images[2]: \"c.io/[z\" is not a valid pattern"),
        "{}",
        text(&out.stderr)
    );
}

/// The agent enforces the same policy on every source: a privileged
/// document over MQTT and a root one in a state file are refused naming
/// the rule, nothing is pulled or created, and a permitted one applies.
#[test]
fn the_agent_refuses_over_mqtt_and_from_files_what_the_policy_refuses() {
    use crate::broker::{publish, Broker, Subscriber};
    let s = Setup::new("agent", STRICT);
    let remote = RemoteOnly::new("agent");
    let name = s.device.name("web");
    let files = tempfile::tempdir().expect("files dir");
    let file = files.path().join("state.json");
    let broker = Broker::start();
    let sub = Subscriber::start(&broker, "#");
    let url = broker.url();
    let config = s.config.display().to_string();
    let path = file.display().to_string();
    let mut agent = crate::util::Background::spawn(s.device.berth_cmd(
        "run",
        &[
            "--config",
            &config,
            "--mqtt-url",
            &url,
            "--files",
            &path,
            "--files-poll-interval",
            "100ms",
            "--min-ready",
            "500ms",
        ],
    ));
    agent.wait_for(
        "connected to the MQTT broker",
        std::time::Duration::from_secs(90),
    );
    assert!(
        !agent.stderr().contains("no [policy]"),
        "warned although a policy is set:\n{}",
        agent.stderr()
    );
    let answer = |activity: &str| -> Value {
        let finals = ["COMPLETED", "INCOMPLETE", "IDENTIFICATION_FAILED"];
        let log = format!("berth log:\n{}", agent.stderr());
        sub.feedback(activity, &finals, std::time::Duration::from_secs(90), &log)
    };

    let privileged = document(
        &format!("{name}-priv"),
        None,
        &[(
            &name,
            strict_component(&remote.0, &[("privileged", "true")]),
        )],
    );
    publish(&broker, "containersupdate/desiredstate", &privileged);
    let f = answer(&format!("{name}-priv"));
    assert_eq!(f["payload"]["status"], "IDENTIFICATION_FAILED", "{f}");
    let m = f["payload"]["message"].as_str().unwrap_or("");
    assert!(m.contains("allow_privileged = false"), "{m}");

    let root = document(
        &format!("{name}-root"),
        None,
        &[(&name, strict_component(&remote.0, &[("user", "root")]))],
    );
    std::fs::write(&file, &root).expect("state file");
    let f = answer(&format!("{name}-root"));
    assert_eq!(f["payload"]["status"], "IDENTIFICATION_FAILED", "{f}");
    assert!(
        f["payload"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("allowed_users"),
        "{f}"
    );
    assert!(!remote.pulled(), "a refused image was pulled");
    assert!(
        s.device.containers().is_empty(),
        "a refused container was created: {:?}",
        s.device.containers()
    );

    let allowed = document(
        &format!("{name}-ok"),
        None,
        &[(&name, strict_component(&remote.0, &[]))],
    );
    publish(&broker, "containersupdate/desiredstate", &allowed);
    assert_eq!(
        answer(&format!("{name}-ok"))["payload"]["status"],
        "COMPLETED"
    );
    assert!(agent.terminate().success());
}

#[test]
fn the_agent_warns_once_at_start_when_mqtt_runs_without_a_policy() {
    let device = Device::new("policy-warn");
    let broker = crate::broker::Broker::start();
    let url = broker.url();
    let mut agent = crate::util::Background::spawn(device.berth_cmd("run", &["--mqtt-url", &url]));
    agent.wait_for(
        "connected to the MQTT broker",
        std::time::Duration::from_secs(90),
    );
    assert_eq!(
        agent.stderr().matches("no [policy]").count(),
        1,
        "{}",
        agent.stderr()
    );
    assert!(agent.terminate().success());
}
