//! Specification tests for document validation and normalisation.
//!
//! Every test goes through the public [`parse`] entry point with a small
//! document, and states one behaviour: what is accepted and where it lands in
//! the normalised model, or what is refused, at which path and why.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::keys::{Origin, CONTAINER_KEYS};
use super::model::*;
use super::{parse, spec_hash, Accepted, Diagnostic, Options, Rejection};

const MI: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A document whose one `containers` domain holds `components_json`
/// (component objects, comma-separated).
fn doc(components_json: &str) -> String {
    format!(
        r#"{{"activityId":"test-1","payload":{{"domains":[{{"id":"containers","components":[{components_json}]}}]}}}}"#
    )
}

/// Like [`doc`], with baselines (baseline objects, comma-separated).
fn doc_with_baselines(baselines_json: &str, components_json: &str) -> String {
    format!(
        r#"{{"activityId":"test-1","payload":{{"baselines":[{baselines_json}],"domains":[{{"id":"containers","components":[{components_json}]}}]}}}}"#
    )
}

/// A document with the given payload.
fn envelope(payload: Value) -> String {
    json!({ "activityId": "test-1", "payload": payload }).to_string()
}

/// A component with an optional version and the given config, as JSON.
fn component_v(id: &str, version: Option<&str>, config: &[(&str, &str)]) -> String {
    let config: Vec<Value> = config
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect();
    let mut c = json!({ "id": id, "config": config });
    if let Some(v) = version {
        c["version"] = json!(v);
    }
    c.to_string()
}

/// A component with version "1" (so its image defaults to `<id>:1`).
fn component(id: &str, config: &[(&str, &str)]) -> String {
    component_v(id, Some("1"), config)
}

/// A baseline as JSON.
fn baseline(title: &str, members: &[&str]) -> String {
    json!({ "title": title, "components": members }).to_string()
}

fn accept(text: &str) -> Accepted {
    match parse(text, &Options::default()) {
        Ok(a) => a,
        Err(r) => panic!("expected the document to be accepted, got {r}\n{text}"),
    }
}

fn reject(text: &str) -> Rejection {
    match parse(text, &Options::default()) {
        Ok(a) => panic!("expected a rejection, got {:#?}\n{text}", a.desired),
        Err(r) => r,
    }
}

/// The one component `web` with this config, accepted.
fn web(config: &[(&str, &str)]) -> ContainerSpec {
    accept(&doc(&component("web", config)))
        .desired
        .containers
        .remove(0)
}

/// The warnings of an accepted one-component document.
fn web_warnings(config: &[(&str, &str)]) -> Vec<Diagnostic> {
    accept(&doc(&component("web", config))).warnings
}

/// The rejection of a one-component document.
fn web_rejection(config: &[(&str, &str)]) -> Rejection {
    reject(&doc(&component("web", config)))
}

/// The spec hash of `web` with this config.
fn hash(config: &[(&str, &str)]) -> String {
    spec_hash(&web(config).config)
}

/// The path of a config key of component `i` (`id`).
fn at(i: usize, id: &str, key: &str) -> String {
    format!("domains[0].components[{i}] ({id}) config \"{key}\"")
}

/// The path of a config key of the single component `web`.
fn web_at(key: &str) -> String {
    at(0, "web", key)
}

/// Exactly one error, at `path`, whose message holds every fragment.
#[track_caller]
fn assert_only_error(r: &Rejection, path: &str, fragments: &[&str]) {
    assert_eq!(
        r.errors.len(),
        1,
        "expected exactly one error, got {:#?}",
        r.errors
    );
    let e = &r.errors[0];
    assert_eq!(e.path, path, "error path (message: {:?})", e.message);
    for f in fragments {
        assert!(e.message.contains(f), "message {:?} lacks {f:?}", e.message);
    }
}

/// `web` with this config is refused with one error at `key`.
#[track_caller]
fn assert_web_refuses(config: &[(&str, &str)], key: &str, fragments: &[&str]) {
    assert_only_error(&web_rejection(config), &web_at(key), fragments);
}

/// Some warning at `path` holds `fragment`.
#[track_caller]
fn assert_warned(warnings: &[Diagnostic], path: &str, fragment: &str) {
    assert!(
        warnings
            .iter()
            .any(|w| w.path == path && w.message.contains(fragment)),
        "no warning at {path} containing {fragment:?}; warnings: {warnings:#?}"
    );
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The largest size the engine takes, 2^63 - 1 bytes, in Kanto's size
/// syntax (1023/1024 of a kibibyte is exactly .9990234375k).
const LARGEST_SIZE: &str = "9007199254740991.9990234375k";
/// One byte more than [`LARGEST_SIZE`]: 2^63 bytes.
const ONE_PAST_LARGEST_SIZE: &str = "9007199254740992k";
/// The largest memory limit, 2^62 - 1 bytes (twice it is still 2^63 - 2).
const LARGEST_MEMORY: &str = "4503599627370495.9990234375k";
/// One byte more than [`LARGEST_MEMORY`]: 2^62 bytes.
const ONE_PAST_LARGEST_MEMORY: &str = "4503599627370496k";

// ---------------------------------------------------------------------------
// 1. Every container key: accepted values land in the right field, invalid
//    values are refused at the component's key.
// ---------------------------------------------------------------------------

/// Keys these specification tests cover; a new catalogue key must be added
/// here together with its tests.
const KEYS_WITH_TESTS: &[&str] = &[
    "image",
    "env",
    "cmd",
    "port",
    "mount",
    "device",
    "host",
    "network",
    "privileged",
    "terminal",
    "interactive",
    "restartPolicy",
    "restartMaxRetries",
    "restartTimeout",
    "logDriver",
    "logMaxFiles",
    "logMaxSize",
    "logPath",
    "logMode",
    "logMaxBufferSize",
    "memory",
    "memoryReservation",
    "memorySwap",
    "hostName",
    "domainName",
    "entrypoint",
    "workdir",
    "user",
    "label",
    "volume",
    "cpus",
    "stopTimeout",
    "stopSignal",
    "healthCmd",
    "healthInterval",
    "healthTimeout",
    "healthRetries",
    "healthStartPeriod",
    "updateStrategy",
    "pullPolicy",
    "dependsOn",
    "preStart",
    "postStart",
    "onRollback",
    "hookTimeout",
    "migrations",
    "status",
    "created",
    "finishedAt",
    "completed",
    "exitCode",
    "restartCount",
    "manuallyStopped",
    "startedSuccessfullyBefore",
];

#[test]
fn every_catalogue_key_is_covered_by_these_tests() {
    let catalogue: BTreeSet<&str> = CONTAINER_KEYS.iter().map(|k| k.name).collect();
    let covered: BTreeSet<&str> = KEYS_WITH_TESTS.iter().copied().collect();
    let untested: Vec<_> = catalogue.difference(&covered).collect();
    let stale: Vec<_> = covered.difference(&catalogue).collect();
    assert!(untested.is_empty(), "keys without tests: {untested:?}");
    assert!(
        stale.is_empty(),
        "tested keys not in the catalogue: {stale:?}"
    );
}

// --- image ---

#[test]
fn image_is_stored_fully_qualified() {
    let spec = web(&[("image", "nginx:1.25")]);
    assert_eq!(
        spec.config.image.to_string(),
        "docker.io/library/nginx:1.25"
    );
}

#[test]
fn image_with_a_registry_port_keeps_registry_and_tag() {
    let spec = web(&[("image", "127.0.0.1:5000/berth-test/service:2")]);
    assert_eq!(spec.config.image.registry, "127.0.0.1:5000");
    assert_eq!(spec.config.image.repository, "berth-test/service");
    assert_eq!(spec.config.image.tag.as_deref(), Some("2"));
}

#[test]
fn invalid_image_is_refused_naming_the_bad_part() {
    assert_web_refuses(&[("image", "MyApp")], "image", &["\"MyApp\"", "upper-case"]);
}

#[test]
fn absent_image_defaults_to_id_and_version() {
    let a = accept(&doc(&component_v("web", Some("1.2"), &[])));
    let spec = &a.desired.containers[0];
    assert_eq!(spec.config.image.to_string(), "docker.io/library/web:1.2");
    assert_eq!(spec.version.as_deref(), Some("1.2"));
}

#[test]
fn absent_image_without_version_is_refused() {
    let r = reject(&doc(&component_v("web", None, &[])));
    assert_only_error(&r, &web_at("image"), &["is missing", "<id>:<version>"]);
}

#[test]
fn empty_version_counts_as_no_version() {
    let r = reject(&doc(&component_v("web", Some(""), &[])));
    assert_only_error(&r, &web_at("image"), &["is missing"]);
}

#[test]
fn absent_image_whose_default_is_invalid_is_refused() {
    let r = reject(&doc(&component_v("web", Some("+1"), &[])));
    assert_only_error(&r, &web_at("image"), &["\"web:+1\"", "not a valid image"]);
}

// --- env ---

#[test]
fn env_sets_empties_and_removes_variables() {
    let spec = web(&[
        ("env", "A=1"),
        ("env", "B="),
        ("env", "C"),
        ("env", "D=x=y"),
    ]);
    let env: Vec<_> = spec
        .config
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_deref()))
        .collect();
    assert_eq!(
        env,
        [
            ("A", Some("1")),
            ("B", Some("")),
            ("C", None),
            ("D", Some("x=y"))
        ]
    );
}

#[test]
fn env_with_invalid_name_is_refused() {
    assert_web_refuses(
        &[("env", "1BAD=x")],
        "env",
        &["variable \"1BAD\"", "has an invalid name"],
    );
}

// Issue 20: validation errors go to stderr, logs and feedback; they name a
// variable, never quote its value.
#[test]
fn validation_error_for_a_bad_env_name_never_quotes_the_value() {
    for entry in ["1DB_PASSWORD=hunter2", "=hunter2", "DB PASSWORD hunter2"] {
        let rejection = web_rejection(&[("env", entry)]);
        let text = format!("{rejection:?} {rejection}");
        assert!(!text.contains("hunter2"), "{entry}: {text}");
    }
}

#[test]
fn validation_error_for_a_variable_set_twice_never_quotes_either_value() {
    let rejection = web_rejection(&[
        ("env", "DB_PASSWORD=hunter2"),
        ("env", "DB_PASSWORD=hunter3"),
    ]);
    let text = format!("{rejection:?} {rejection}");
    assert!(!text.contains("hunter"), "{text}");
    assert!(text.contains("sets DB_PASSWORD twice"), "{text}");
}

#[test]
fn validation_error_quoting_a_value_hides_a_url_password() {
    let rejection = web_rejection(&[
        ("restartPolicy", "postgres://u:s3cr3t@db/x"),
        ("user", "a"),
        ("user", "http://u:s3cr3t@h/"),
    ]);
    let text = format!("{rejection:?} {rejection}");
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.contains("postgres://u:<redacted>@db/x"), "{text}");
}

#[test]
fn validation_error_for_a_secret_label_set_twice_never_quotes_either_value() {
    let rejection = web_rejection(&[("label", "app.token=l4bel1"), ("label", "app.token=l4bel2")]);
    let text = format!("{rejection:?} {rejection}");
    assert!(!text.contains("l4bel"), "{text}");
}

#[test]
fn env_set_twice_with_different_values_is_refused() {
    assert_web_refuses(
        &[("env", "A=1"), ("env", "A=2")],
        "env",
        &["sets A twice", "the values are not shown"],
    );
}

#[test]
fn env_set_twice_with_the_same_value_is_accepted() {
    let spec = web(&[("env", "A=1"), ("env", "A=1")]);
    assert_eq!(spec.config.env.len(), 1);
    assert_eq!(spec.config.env["A"].as_deref(), Some("1"));
}

#[test]
fn env_removal_and_setting_of_the_same_name_is_refused() {
    assert_web_refuses(&[("env", "A"), ("env", "A=1")], "env", &["sets A twice"]);
}

// --- cmd ---

#[test]
fn cmd_keeps_document_order() {
    let spec = web(&[
        ("cmd", "telegraf"),
        ("cmd", "--config"),
        ("cmd", "/etc/t.conf"),
    ]);
    assert_eq!(
        spec.config.cmd,
        Some(strings(&["telegraf", "--config", "/etc/t.conf"]))
    );
}

#[test]
fn absent_cmd_keeps_the_images_command() {
    assert_eq!(web(&[]).config.cmd, None);
}

#[test]
fn cmd_takes_any_text_as_one_argument() {
    // No value of cmd is invalid: each is one argv element, verbatim.
    let spec = web(&[("cmd", ""), ("cmd", "a b  c"), ("cmd", "$HOME")]);
    assert_eq!(spec.config.cmd, Some(strings(&["", "a b  c", "$HOME"])));
}

// --- entrypoint ---

#[test]
fn entrypoint_keeps_document_order() {
    let spec = web(&[("entrypoint", "/bin/sh"), ("entrypoint", "-c")]);
    assert_eq!(spec.config.entrypoint, Some(strings(&["/bin/sh", "-c"])));
}

#[test]
fn single_empty_entrypoint_clears_the_images() {
    let spec = web(&[("entrypoint", "")]);
    assert_eq!(spec.config.entrypoint, Some(vec![String::new()]));
}

#[test]
fn absent_entrypoint_keeps_the_images() {
    assert_eq!(web(&[]).config.entrypoint, None);
}

// --- port ---

#[test]
fn port_defaults_to_all_addresses_and_tcp() {
    let spec = web(&[("port", "8080:80")]);
    let expected = PortBinding {
        container_port: 80,
        protocol: Protocol::Tcp,
        host_ip: ip("0.0.0.0"),
        host_port: 8080,
        host_port_end: 8080,
    };
    assert_eq!(
        spec.config.ports.into_iter().collect::<Vec<_>>(),
        [expected]
    );
}

#[test]
fn port_takes_address_and_protocol() {
    let spec = web(&[("port", "127.0.0.1:5353:53/udp")]);
    let p = spec.config.ports.first().unwrap().clone();
    assert_eq!(p.host_ip, ip("127.0.0.1"));
    assert_eq!(p.protocol, Protocol::Udp);
    assert_eq!((p.host_port, p.container_port), (5353, 53));
}

#[test]
fn port_without_host_port_is_refused() {
    assert_web_refuses(&[("port", "80")], "port", &["\"80\"", "no host port"]);
}

// Issue 23 changed this rule: Kanto's own inventories report `localhost`.
#[test]
fn port_with_localhost_means_127_0_0_1_with_a_warning() {
    let config = [("port", "localhost:8080:80")];
    let ports = web(&config).config.ports;
    let p = ports.iter().next().expect("one binding");
    assert_eq!(p.host_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(p.host_port, 8080);
    assert_warned(
        &web_warnings(&config),
        &web_at("port"),
        "host IP \"localhost\" is read as 127.0.0.1",
    );
}

#[test]
fn port_with_unknown_protocol_is_refused() {
    assert_web_refuses(
        &[("port", "8080:80/quic")],
        "port",
        &["unknown protocol \"quic\""],
    );
}

#[test]
fn same_host_port_twice_in_one_component_is_refused() {
    assert_web_refuses(
        &[("port", "8080:80"), ("port", "8080:81")],
        "port",
        &["\"8080:81\"", "binds host port 8080/tcp again"],
    );
}

#[test]
fn same_host_port_for_two_container_ports_in_one_component_is_refused() {
    assert_web_refuses(
        &[("port", "8080:80"), ("port", "8080:81")],
        "port",
        &["binds host port 8080/tcp again"],
    );
}

#[test]
fn the_same_port_entry_twice_is_harmless() {
    let spec = web(&[("port", "8080:80"), ("port", "0.0.0.0:8080:80/tcp")]);
    assert_eq!(spec.config.ports.len(), 1);
}

#[test]
fn the_same_device_entry_twice_is_harmless() {
    let spec = web(&[("device", "/dev/a:/dev/b"), ("device", "/dev/a:/dev/b:rwm")]);
    assert_eq!(spec.config.devices.len(), 1);
}

#[test]
fn dependency_with_a_domain_prefix_gets_a_hint() {
    let text = doc(&format!(
        "{},{}",
        component("db", &[("image", "db:1")]),
        component("web", &[("image", "web:1"), ("dependsOn", "containers:db")])
    ));
    let r = reject(&text);
    assert!(
        r.errors.iter().any(|e| e.message.contains("use \"db\"")),
        "{r}"
    );
}

#[test]
fn same_host_port_with_different_protocols_in_one_component_is_accepted() {
    let spec = web(&[("port", "53:53/tcp"), ("port", "53:53/udp")]);
    assert_eq!(spec.config.ports.len(), 2);
}

// --- mount ---

#[test]
fn mount_takes_read_only_and_propagation_and_cleans_paths() {
    let spec = web(&[("mount", "/etc/app/:/etc/app//conf:ro,rslave")]);
    let expected = BindMount {
        destination: "/etc/app/conf".into(),
        source: "/etc/app".into(),
        read_only: true,
        propagation: Propagation::Rslave,
    };
    assert_eq!(
        spec.config.mounts.into_iter().collect::<Vec<_>>(),
        [expected]
    );
}

#[test]
fn mount_with_relative_source_is_refused() {
    assert_web_refuses(
        &[("mount", "data/influxdb:/var/lib/influxdb")],
        "mount",
        &["source \"data/influxdb\" is not an absolute path"],
    );
}

#[test]
fn mount_with_relative_destination_is_refused() {
    assert_web_refuses(
        &[("mount", "/data:data")],
        "mount",
        &["destination \"data\" is not an absolute path"],
    );
}

#[test]
fn mount_with_unknown_option_is_refused() {
    assert_web_refuses(
        &[("mount", "/a:/b:rx")],
        "mount",
        &["unknown option \"rx\""],
    );
}

#[test]
fn two_mounts_onto_the_same_destination_are_refused() {
    assert_web_refuses(
        &[("mount", "/a:/data"), ("mount", "/b:/data/")],
        "mount",
        &["mounts onto /data again"],
    );
}

#[test]
fn mount_and_volume_onto_the_same_destination_are_refused() {
    assert_web_refuses(
        &[("mount", "/a:/data"), ("volume", "vol:/data")],
        "volume",
        &["\"vol:/data\" mounts onto /data again", "/a:/data:rprivate"],
    );
}

// --- device ---

#[test]
fn device_permissions_are_kept_in_canonical_order() {
    let spec = web(&[("device", "/dev/ttyACM0:/dev/ttyUSB0:wr")]);
    let expected = DeviceMapping {
        container_path: "/dev/ttyUSB0".into(),
        host_path: "/dev/ttyACM0".into(),
        permissions: "rw".into(),
    };
    assert_eq!(
        spec.config.devices.into_iter().collect::<Vec<_>>(),
        [expected]
    );
}

#[test]
fn device_with_only_a_host_path_is_refused() {
    assert_web_refuses(
        &[("device", "/dev/ttyACM0")],
        "device",
        &["\"/dev/ttyACM0\"", "only a host path"],
    );
}

#[test]
fn device_with_invalid_permissions_is_refused() {
    assert_web_refuses(
        &[("device", "/dev/a:/dev/b:rx")],
        "device",
        &["invalid permissions \"rx\""],
    );
}

#[test]
fn two_devices_onto_the_same_container_path_are_refused() {
    assert_web_refuses(
        &[("device", "/dev/a:/dev/x"), ("device", "/dev/b:/dev/x")],
        "device",
        &["maps onto /dev/x again"],
    );
}

#[test]
fn privileged_with_a_device_is_refused() {
    assert_web_refuses(
        &[("privileged", "true"), ("device", "/dev/a:/dev/a")],
        "device",
        &["privileged"],
    );
}

// --- host ---

#[test]
fn host_entries_resolve_to_address_gateway_interface_or_container() {
    let spec = web(&[
        ("host", "ntp:192.0.2.123"),
        ("host", "gw:host_ip"),
        ("host", "lan:host_ip_eth0"),
        ("host", "db.local:container_db-host"),
    ]);
    let got: BTreeSet<_> = spec.config.extra_hosts.into_iter().collect();
    let want: BTreeSet<_> = [
        ("ntp", HostTarget::Ip(ip("192.0.2.123"))),
        ("gw", HostTarget::HostGateway),
        ("lan", HostTarget::HostInterface("eth0".into())),
        ("db.local", HostTarget::Container("db-host".into())),
    ]
    .into_iter()
    .map(|(name, target)| ExtraHost {
        name: name.into(),
        target,
    })
    .collect();
    assert_eq!(got, want);
}

#[test]
fn host_entry_with_unknown_target_is_refused() {
    assert_web_refuses(
        &[("host", "ntp:time-server")],
        "host",
        &["\"time-server\" is not an IP address"],
    );
}

#[test]
fn host_entry_without_target_is_refused() {
    assert_web_refuses(&[("host", "ntp")], "host", &["\"ntp\"", "expected name:IP"]);
}

// --- network ---

#[test]
fn network_defaults_to_bridge() {
    assert_eq!(web(&[]).config.network, NetworkMode::Bridge);
}

#[test]
fn network_words_and_names_are_parsed() {
    for (value, expected) in [
        ("bridge", NetworkMode::Bridge),
        ("default", NetworkMode::Bridge),
        ("host", NetworkMode::Host),
        ("none", NetworkMode::None),
        ("container:db", NetworkMode::Container("db".into())),
        ("edge-net", NetworkMode::User("edge-net".into())),
    ] {
        assert_eq!(
            web(&[("network", value)]).config.network,
            expected,
            "{value}"
        );
    }
}

#[test]
fn invalid_network_name_is_refused() {
    assert_web_refuses(
        &[("network", "my net")],
        "network",
        &["\"my net\"", "network name"],
    );
}

#[test]
fn network_of_the_container_itself_is_refused() {
    assert_web_refuses(
        &[("network", "container:web")],
        "network",
        &["names the container itself"],
    );
}

// --- privileged, terminal, interactive ---

fn bool_field(spec: &ContainerSpec, key: &str) -> bool {
    match key {
        "privileged" => spec.config.privileged,
        "terminal" => spec.config.terminal,
        "interactive" => spec.config.interactive,
        other => panic!("not a boolean key: {other}"),
    }
}

const BOOL_KEYS: [&str; 3] = ["privileged", "terminal", "interactive"];

#[test]
fn booleans_default_to_false() {
    let spec = web(&[]);
    for key in BOOL_KEYS {
        assert!(!bool_field(&spec, key), "{key}");
    }
}

#[test]
fn kanto_booleans_are_accepted_in_any_case() {
    for key in BOOL_KEYS {
        for (value, expected) in [
            ("TRUE", true),
            ("t", true),
            ("1", true),
            ("False", false),
            ("F", false),
            ("0", false),
        ] {
            let spec = web(&[(key, value)]);
            assert_eq!(bool_field(&spec, key), expected, "{key}={value}");
        }
    }
}

#[test]
fn booleans_outside_the_kanto_set_are_refused() {
    for key in BOOL_KEYS {
        for value in ["YES", "on", "yes", ""] {
            let quoted = format!("\"{value}\"");
            assert_web_refuses(&[(key, value)], key, &[&quoted, "is not a boolean"]);
        }
    }
}

// --- restartPolicy, restartMaxRetries, restartTimeout ---

#[test]
fn restart_policy_defaults_to_unless_stopped() {
    assert_eq!(web(&[]).config.restart, RestartPolicy::UnlessStopped);
}

#[test]
fn restart_policy_words_are_parsed() {
    for (value, expected) in [
        ("no", RestartPolicy::No),
        ("always", RestartPolicy::Always),
        ("unless-stopped", RestartPolicy::UnlessStopped),
        ("on-failure", RestartPolicy::OnFailure { max_retries: 0 }),
    ] {
        assert_eq!(
            web(&[("restartPolicy", value)]).config.restart,
            expected,
            "{value}"
        );
    }
}

#[test]
fn on_failure_takes_restart_max_retries() {
    let spec = web(&[("restartPolicy", "on-failure"), ("restartMaxRetries", "5")]);
    assert_eq!(
        spec.config.restart,
        RestartPolicy::OnFailure { max_retries: 5 }
    );
}

#[test]
fn unknown_restart_policy_is_refused() {
    assert_web_refuses(
        &[("restartPolicy", "sometimes")],
        "restartPolicy",
        &[
            "\"sometimes\"",
            "is not one of no, always, unless-stopped, on-failure",
        ],
    );
}

#[test]
fn restart_policy_words_are_case_sensitive() {
    assert_web_refuses(
        &[("restartPolicy", "Always")],
        "restartPolicy",
        &["is not one of"],
    );
}

#[test]
fn restart_max_retries_without_on_failure_is_ignored_with_a_warning() {
    let config = [("restartPolicy", "always"), ("restartMaxRetries", "5")];
    assert_eq!(web(&config).config.restart, RestartPolicy::Always);
    assert_warned(
        &web_warnings(&config),
        &web_at("restartMaxRetries"),
        "only applies with restartPolicy on-failure",
    );
}

#[test]
fn negative_restart_max_retries_is_refused() {
    assert_web_refuses(
        &[("restartPolicy", "on-failure"), ("restartMaxRetries", "-1")],
        "restartMaxRetries",
        &["must not be negative"],
    );
}

#[test]
fn overflowing_restart_max_retries_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[
            ("restartPolicy", "on-failure"),
            ("restartMaxRetries", "4294967296"),
        ],
        "restartMaxRetries",
        &["\"4294967296\" must be at most 1000000"],
    );
}

#[test]
fn restart_max_retries_of_1000000_are_accepted() {
    let spec = web(&[
        ("restartPolicy", "on-failure"),
        ("restartMaxRetries", "1000000"),
    ]);
    assert_eq!(
        spec.config.restart,
        RestartPolicy::OnFailure {
            max_retries: 1_000_000
        }
    );
}

#[test]
fn restart_max_retries_above_1000000_are_refused_naming_the_bound() {
    assert_web_refuses(
        &[
            ("restartPolicy", "on-failure"),
            ("restartMaxRetries", "1000001"),
        ],
        "restartMaxRetries",
        &["\"1000001\" must be at most 1000000"],
    );
}

#[test]
fn restart_max_retries_that_is_not_a_number_is_refused() {
    assert_web_refuses(
        &[
            ("restartPolicy", "on-failure"),
            ("restartMaxRetries", "five"),
        ],
        "restartMaxRetries",
        &["is not a whole number"],
    );
}

#[test]
fn restart_timeout_is_kept_for_reporting_with_a_warning() {
    let config = [("restartPolicy", "on-failure"), ("restartTimeout", "30")];
    assert_eq!(
        web(&config).rollout.restart_timeout,
        Some(Duration::from_secs(30))
    );
    assert_warned(
        &web_warnings(&config),
        &web_at("restartTimeout"),
        "has no effect",
    );
}

#[test]
fn restart_timeout_without_on_failure_warns_it_is_ignored() {
    let config = [("restartTimeout", "30s")];
    assert_warned(
        &web_warnings(&config),
        &web_at("restartTimeout"),
        "only applies with restartPolicy on-failure",
    );
}

#[test]
fn invalid_restart_timeout_is_refused() {
    assert_web_refuses(
        &[("restartTimeout", "soon")],
        "restartTimeout",
        &["\"soon\"", "is not a duration"],
    );
}

#[test]
fn negative_restart_timeout_is_refused() {
    assert_web_refuses(
        &[("restartTimeout", "-30")],
        "restartTimeout",
        &["must not be negative"],
    );
}

#[test]
fn restart_timeout_of_24h_is_accepted() {
    let config = [("restartPolicy", "on-failure"), ("restartTimeout", "24h")];
    assert_eq!(
        web(&config).rollout.restart_timeout,
        Some(Duration::from_secs(24 * 3600))
    );
}

#[test]
fn restart_timeout_above_24h_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[("restartPolicy", "on-failure"), ("restartTimeout", "86401")],
        "restartTimeout",
        &["\"86401\" must be at most 24h"],
    );
}

#[test]
fn restart_timeout_too_large_for_a_duration_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[("restartTimeout", "99999999999999999999")],
        "restartTimeout",
        &["\"99999999999999999999\" must be at most 24h"],
    );
}

// --- log settings ---

#[test]
fn log_defaults_to_json_file_two_files_of_100m_blocking() {
    let expected = LogConfig {
        driver: LogDriver::JsonFile,
        max_files: Some(2),
        max_size: Some(100 * MI),
        non_blocking: false,
        max_buffer_size: None,
    };
    assert_eq!(web(&[]).config.log, expected);
}

#[test]
fn log_drivers_are_parsed() {
    for (value, expected) in [
        ("json-file", LogDriver::JsonFile),
        ("none", LogDriver::None),
        ("local", LogDriver::Local),
        ("journald", LogDriver::Journald),
    ] {
        assert_eq!(
            web(&[("logDriver", value)]).config.log.driver,
            expected,
            "{value}"
        );
    }
}

#[test]
fn non_file_log_drivers_have_no_file_limits() {
    let log = web(&[("logDriver", "journald")]).config.log;
    assert_eq!((log.max_files, log.max_size), (None, None));
}

#[test]
fn unknown_log_driver_is_refused() {
    assert_web_refuses(
        &[("logDriver", "syslog")],
        "logDriver",
        &[
            "\"syslog\"",
            "is not one of json-file, none, local, journald",
        ],
    );
}

#[test]
fn log_max_files_and_size_are_parsed() {
    let log = web(&[("logMaxFiles", "3"), ("logMaxSize", "10M")])
        .config
        .log;
    assert_eq!((log.max_files, log.max_size), (Some(3), Some(10 * MI)));
}

#[test]
fn zero_log_max_files_is_refused() {
    assert_web_refuses(
        &[("logMaxFiles", "0")],
        "logMaxFiles",
        &["must be at least 1"],
    );
}

#[test]
fn negative_log_max_files_is_refused() {
    assert_web_refuses(
        &[("logMaxFiles", "-3")],
        "logMaxFiles",
        &["\"-3\"", "must not be negative"],
    );
}

#[test]
fn zero_log_max_size_is_refused() {
    assert_web_refuses(
        &[("logMaxSize", "0M")],
        "logMaxSize",
        &["must be more than 0"],
    );
}

#[test]
fn log_max_size_without_unit_is_refused() {
    assert_web_refuses(&[("logMaxSize", "100")], "logMaxSize", &["has no unit"]);
}

#[test]
fn log_file_limits_with_a_non_file_driver_are_ignored_with_a_warning() {
    let config = [
        ("logDriver", "none"),
        ("logMaxFiles", "3"),
        ("logMaxSize", "1M"),
    ];
    let warnings = web_warnings(&config);
    assert_warned(
        &warnings,
        &web_at("logMaxFiles"),
        "only applies to the json-file and local log drivers",
    );
    assert_warned(
        &warnings,
        &web_at("logMaxSize"),
        "only applies to the json-file and local log drivers",
    );
}

#[test]
fn log_path_is_kept_for_reporting_with_a_warning() {
    let config = [("logPath", "/var/log/web/")];
    assert_eq!(
        web(&config).rollout.log_path.as_deref(),
        Some("/var/log/web")
    );
    assert_warned(&web_warnings(&config), &web_at("logPath"), "has no effect");
}

#[test]
fn relative_log_path_is_refused() {
    assert_web_refuses(
        &[("logPath", "logs")],
        "logPath",
        &["\"logs\"", "not an absolute path"],
    );
}

#[test]
fn non_blocking_log_mode_defaults_its_buffer_to_1m() {
    let log = web(&[("logMode", "non-blocking")]).config.log;
    assert!(log.non_blocking);
    assert_eq!(log.max_buffer_size, Some(MI));
}

#[test]
fn blocking_log_mode_is_the_default_written_out() {
    assert_eq!(
        web(&[("logMode", "blocking")]).config.log,
        web(&[]).config.log
    );
}

#[test]
fn unknown_log_mode_is_refused() {
    assert_web_refuses(
        &[("logMode", "async")],
        "logMode",
        &["is not one of blocking, non-blocking"],
    );
}

#[test]
fn log_max_buffer_size_is_parsed() {
    let log = web(&[("logMode", "non-blocking"), ("logMaxBufferSize", "2M")])
        .config
        .log;
    assert_eq!(log.max_buffer_size, Some(2 * MI));
}

#[test]
fn invalid_log_max_buffer_size_is_refused() {
    assert_web_refuses(
        &[("logMode", "non-blocking"), ("logMaxBufferSize", "lots")],
        "logMaxBufferSize",
        &["\"lots\"", "expected a number and a unit"],
    );
}

#[test]
fn log_max_buffer_size_in_blocking_mode_is_ignored_with_a_warning() {
    let config = [("logMaxBufferSize", "2M")];
    assert_eq!(web(&config).config.log.max_buffer_size, None);
    assert_warned(
        &web_warnings(&config),
        &web_at("logMaxBufferSize"),
        "only applies with logMode non-blocking",
    );
}

#[test]
fn log_max_files_of_1_are_accepted() {
    assert_eq!(web(&[("logMaxFiles", "1")]).config.log.max_files, Some(1));
}

#[test]
fn log_max_files_of_1000_are_accepted() {
    assert_eq!(
        web(&[("logMaxFiles", "1000")]).config.log.max_files,
        Some(1000)
    );
}

#[test]
fn log_max_files_above_1000_are_refused_naming_the_bound() {
    assert_web_refuses(
        &[("logMaxFiles", "1001")],
        "logMaxFiles",
        &["\"1001\" must be at most 1000"],
    );
}

#[test]
fn log_max_size_of_the_largest_signed_64_bit_byte_count_is_accepted() {
    assert_eq!(
        web(&[("logMaxSize", LARGEST_SIZE)]).config.log.max_size,
        Some(i64::MAX as u64)
    );
}

#[test]
fn log_max_size_above_the_largest_signed_64_bit_byte_count_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[("logMaxSize", ONE_PAST_LARGEST_SIZE)],
        "logMaxSize",
        &[
            ONE_PAST_LARGEST_SIZE,
            "is too large (at most 9223372036854775807 bytes)",
        ],
    );
}

#[test]
fn log_max_buffer_size_of_the_largest_signed_64_bit_byte_count_is_accepted() {
    let log = web(&[
        ("logMode", "non-blocking"),
        ("logMaxBufferSize", LARGEST_SIZE),
    ])
    .config
    .log;
    assert_eq!(log.max_buffer_size, Some(i64::MAX as u64));
}

#[test]
fn log_max_buffer_size_above_the_largest_signed_64_bit_byte_count_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[
            ("logMode", "non-blocking"),
            ("logMaxBufferSize", ONE_PAST_LARGEST_SIZE),
        ],
        "logMaxBufferSize",
        &[
            ONE_PAST_LARGEST_SIZE,
            "is too large (at most 9223372036854775807 bytes)",
        ],
    );
}

// --- memory, memoryReservation, memorySwap ---

#[test]
fn memory_is_parsed_in_binary_units() {
    assert_eq!(
        web(&[("memory", "512M")]).config.resources.memory,
        Some(512 * MI)
    );
    assert_eq!(
        web(&[("memory", "1.5g")]).config.resources.memory,
        Some(1536 * MI)
    );
}

#[test]
fn memory_without_unit_is_refused() {
    assert_web_refuses(&[("memory", "512")], "memory", &["\"512\"", "has no unit"]);
}

#[test]
fn memory_below_6m_is_refused() {
    assert_web_refuses(
        &[("memory", "5M")],
        "memory",
        &["5M is below the engine's minimum of 6M"],
    );
}

#[test]
fn negative_memory_is_refused() {
    assert_web_refuses(&[("memory", "-512M")], "memory", &["must not be negative"]);
}

#[test]
fn overflowing_memory_is_refused() {
    assert_web_refuses(&[("memory", "99999999999G")], "memory", &["too large"]);
}

#[test]
fn memory_reservation_is_parsed() {
    let r = web(&[("memory", "256M"), ("memoryReservation", "128M")])
        .config
        .resources;
    assert_eq!(r.memory_reservation, Some(128 * MI));
}

#[test]
fn memory_reservation_above_memory_is_refused() {
    assert_web_refuses(
        &[("memory", "256M"), ("memoryReservation", "512M")],
        "memoryReservation",
        &["512M is more than memory (256M)"],
    );
}

#[test]
fn memory_reservation_below_6m_is_refused() {
    assert_web_refuses(
        &[("memoryReservation", "1M")],
        "memoryReservation",
        &["below the engine's minimum of 6M"],
    );
}

#[test]
fn invalid_memory_reservation_is_refused() {
    assert_web_refuses(
        &[("memoryReservation", "half")],
        "memoryReservation",
        &["\"half\""],
    );
}

#[test]
fn memory_swap_is_a_limit_or_unlimited() {
    let limit = web(&[("memory", "256M"), ("memorySwap", "512M")])
        .config
        .resources;
    assert_eq!(limit.memory_swap, Some(Swap::Limit(512 * MI)));
    let unlimited = web(&[("memory", "256M"), ("memorySwap", "-1")])
        .config
        .resources;
    assert_eq!(unlimited.memory_swap, Some(Swap::Unlimited));
}

#[test]
fn memory_swap_below_memory_is_refused() {
    assert_web_refuses(
        &[("memory", "512M"), ("memorySwap", "256M")],
        "memorySwap",
        &["256M is less than memory (512M)", "at least 512M"],
    );
}

#[test]
fn memory_swap_without_memory_is_refused() {
    assert_web_refuses(&[("memorySwap", "1G")], "memorySwap", &["needs memory"]);
}

#[test]
fn invalid_memory_swap_is_refused() {
    assert_web_refuses(
        &[("memory", "256M"), ("memorySwap", "-2")],
        "memorySwap",
        &["\"-2\"", "-1 for unlimited swap"],
    );
}

#[test]
fn invalid_memory_with_memory_swap_is_reported_once() {
    // memory *is* set, only malformed: one mistake should give one error.
    assert_web_refuses(
        &[("memory", "512"), ("memorySwap", "1G")],
        "memory",
        &["has no unit"],
    );
}

#[test]
fn memory_of_6m_is_accepted() {
    assert_eq!(
        web(&[("memory", "6M")]).config.resources.memory,
        Some(6 * MI)
    );
}

#[test]
fn memory_of_half_the_largest_signed_64_bit_byte_count_is_accepted() {
    assert_eq!(
        web(&[("memory", LARGEST_MEMORY)]).config.resources.memory,
        Some((i64::MAX / 2) as u64)
    );
}

#[test]
fn memory_above_half_the_largest_signed_64_bit_byte_count_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[("memory", ONE_PAST_LARGEST_MEMORY)],
        "memory",
        &[
            ONE_PAST_LARGEST_MEMORY,
            "is too large (at most 4611686018427387903 bytes",
            "twice the memory",
        ],
    );
}

#[test]
fn memory_reservation_of_the_largest_signed_64_bit_byte_count_is_accepted() {
    assert_eq!(
        web(&[("memoryReservation", LARGEST_SIZE)])
            .config
            .resources
            .memory_reservation,
        Some(i64::MAX as u64)
    );
}

#[test]
fn memory_reservation_above_the_largest_signed_64_bit_byte_count_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[("memoryReservation", ONE_PAST_LARGEST_SIZE)],
        "memoryReservation",
        &[
            ONE_PAST_LARGEST_SIZE,
            "is too large (at most 9223372036854775807 bytes)",
        ],
    );
}

#[test]
fn memory_swap_of_the_largest_signed_64_bit_byte_count_is_accepted() {
    assert_eq!(
        web(&[("memory", "1G"), ("memorySwap", LARGEST_SIZE)])
            .config
            .resources
            .memory_swap,
        Some(Swap::Limit(i64::MAX as u64))
    );
}

#[test]
fn memory_swap_above_the_largest_signed_64_bit_byte_count_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[("memory", "1G"), ("memorySwap", ONE_PAST_LARGEST_SIZE)],
        "memorySwap",
        &[
            ONE_PAST_LARGEST_SIZE,
            "is too large (at most 9223372036854775807 bytes)",
        ],
    );
}

// --- hostName, domainName ---

#[test]
fn host_and_domain_names_default_to_id_host_and_id_domain() {
    let spec = web(&[]);
    assert_eq!(spec.config.hostname.as_deref(), Some("web-host"));
    assert_eq!(spec.config.domainname.as_deref(), Some("web-domain"));
}

#[test]
fn host_and_domain_names_are_taken_from_the_document() {
    let spec = web(&[("hostName", "frontend"), ("domainName", "example.internal")]);
    assert_eq!(spec.config.hostname.as_deref(), Some("frontend"));
    assert_eq!(spec.config.domainname.as_deref(), Some("example.internal"));
}

#[test]
fn host_and_domain_names_are_unset_under_a_container_network() {
    let spec = web(&[("network", "container:db")]);
    assert_eq!(spec.config.hostname, None);
    assert_eq!(spec.config.domainname, None);
}

#[test]
fn host_name_under_a_container_network_is_refused() {
    assert_web_refuses(
        &[("network", "container:db"), ("hostName", "web")],
        "hostName",
        &["cannot be set with network \"container:db\""],
    );
}

#[test]
fn invalid_host_name_is_refused() {
    assert_web_refuses(
        &[("hostName", "-web-")],
        "hostName",
        &["\"-web-\"", "is not a host name"],
    );
}

#[test]
fn invalid_domain_name_is_refused() {
    assert_web_refuses(
        &[("domainName", "example..internal")],
        "domainName",
        &["is not a host name"],
    );
}

// --- workdir, user ---

#[test]
fn workdir_is_a_cleaned_absolute_path() {
    assert_eq!(
        web(&[("workdir", "/srv/app/")]).config.workdir.as_deref(),
        Some("/srv/app")
    );
}

#[test]
fn relative_workdir_is_refused() {
    assert_web_refuses(
        &[("workdir", "srv")],
        "workdir",
        &["\"srv\"", "not an absolute path"],
    );
}

#[test]
fn user_forms_are_accepted() {
    for value in ["nobody", "1000", "app:staff", "1000:1000"] {
        assert_eq!(web(&[("user", value)]).config.user.as_deref(), Some(value));
    }
}

#[test]
fn user_with_two_colons_is_refused() {
    assert_web_refuses(
        &[("user", "a:b:c")],
        "user",
        &["\"a:b:c\"", "expected user, uid"],
    );
}

// --- label ---

#[test]
fn labels_are_parsed_as_key_and_value() {
    let spec = web(&[("label", "org.example.team=edge"), ("label", "empty=")]);
    let labels: Vec<_> = spec
        .config
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(labels, [("empty", ""), ("org.example.team", "edge")]);
}

#[test]
fn label_without_equals_is_refused() {
    assert_web_refuses(&[("label", "team")], "label", &["\"team\"", "no '='"]);
}

#[test]
fn label_with_the_berth_prefix_is_refused() {
    assert_web_refuses(
        &[("label", "berth.hash=x")],
        "label",
        &["reserved prefix \"berth.\""],
    );
}

#[test]
fn label_set_twice_with_different_values_is_refused() {
    assert_web_refuses(
        &[("label", "a=1"), ("label", "a=2")],
        "label",
        &["sets a twice"],
    );
}

// --- volume ---

#[test]
fn volume_is_parsed_with_read_only() {
    let spec = web(&[("volume", "db-data:/var/lib/db/:ro")]);
    let expected = VolumeMount {
        destination: "/var/lib/db".into(),
        name: "db-data".into(),
        read_only: true,
    };
    assert_eq!(
        spec.config.volumes.into_iter().collect::<Vec<_>>(),
        [expected]
    );
}

#[test]
fn volume_naming_a_host_path_is_refused_with_a_hint() {
    assert_web_refuses(
        &[("volume", "/data:/data")],
        "volume",
        &["use the mount key"],
    );
}

#[test]
fn volume_with_unknown_option_is_refused() {
    assert_web_refuses(
        &[("volume", "v:/data:z")],
        "volume",
        &["unknown option \"z\""],
    );
}

// --- cpus ---

#[test]
fn cpus_are_stored_as_nano_cpus() {
    assert_eq!(
        web(&[("cpus", "0.5")]).config.resources.nano_cpus,
        Some(500_000_000)
    );
    assert_eq!(
        web(&[("cpus", "2")]).config.resources.nano_cpus,
        Some(2_000_000_000)
    );
}

#[test]
fn zero_cpus_are_refused() {
    assert_web_refuses(&[("cpus", "0")], "cpus", &["must be more than 0"]);
}

#[test]
fn negative_cpus_are_refused() {
    assert_web_refuses(&[("cpus", "-1")], "cpus", &["must not be negative"]);
}

#[test]
fn cpus_that_are_not_a_number_are_refused() {
    assert_web_refuses(&[("cpus", "two")], "cpus", &["\"two\"", "is not a number"]);
}

#[test]
fn cpus_of_the_largest_signed_64_bit_count_of_nano_cpus_are_accepted() {
    assert_eq!(
        web(&[("cpus", "9223372036.854775807")])
            .config
            .resources
            .nano_cpus,
        Some(i64::MAX as u64)
    );
}

#[test]
fn cpus_above_the_largest_signed_64_bit_count_of_nano_cpus_are_refused_naming_the_bound() {
    assert_web_refuses(
        &[("cpus", "9223372036.854775808")],
        "cpus",
        &["\"9223372036.854775808\" is too large (at most 9223372036.854775807 CPUs)"],
    );
}

// --- stopTimeout, stopSignal ---

#[test]
fn stop_timeout_takes_seconds_or_whole_second_durations() {
    assert_eq!(
        web(&[("stopTimeout", "15")]).config.stop_timeout,
        Some(Duration::from_secs(15))
    );
    assert_eq!(
        web(&[("stopTimeout", "2m")]).config.stop_timeout,
        Some(Duration::from_secs(120))
    );
}

#[test]
fn stop_timeout_not_in_whole_seconds_is_refused() {
    for value in ["1500ms", "1s 500ms"] {
        assert_web_refuses(
            &[("stopTimeout", value)],
            "stopTimeout",
            &["must be a whole number of seconds"],
        );
    }
}

#[test]
fn stop_timeout_of_1h_is_accepted() {
    assert_eq!(
        web(&[("stopTimeout", "1h")]).config.stop_timeout,
        Some(Duration::from_secs(3600))
    );
}

#[test]
fn stop_timeout_above_1h_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[("stopTimeout", "3601")],
        "stopTimeout",
        &["\"3601\" must be at most 1h"],
    );
}

#[test]
fn stop_signal_is_stored_canonically() {
    assert_eq!(
        web(&[("stopSignal", "TERM")]).config.stop_signal.as_deref(),
        Some("SIGTERM")
    );
    assert_eq!(
        web(&[("stopSignal", "sigint")])
            .config
            .stop_signal
            .as_deref(),
        Some("SIGINT")
    );
    assert_eq!(
        web(&[("stopSignal", "9")]).config.stop_signal.as_deref(),
        Some("9")
    );
}

#[test]
fn unknown_stop_signal_is_refused() {
    assert_web_refuses(
        &[("stopSignal", "SIGFOO")],
        "stopSignal",
        &["\"SIGFOO\"", "is not a signal"],
    );
}

#[test]
fn out_of_range_stop_signal_number_is_refused() {
    assert_web_refuses(&[("stopSignal", "65")], "stopSignal", &["1-64"]);
}

// --- health ---

#[test]
fn health_cmd_is_a_shell_command() {
    let health = web(&[("healthCmd", "curl -f http://localhost/")])
        .config
        .health;
    assert_eq!(
        health.test,
        Some(HealthTest::Shell("curl -f http://localhost/".into()))
    );
}

#[test]
fn health_cmd_none_disables_the_images_check() {
    assert_eq!(
        web(&[("healthCmd", "NONE")]).config.health.test,
        Some(HealthTest::Disabled)
    );
}

#[test]
fn empty_health_cmd_is_refused() {
    assert_web_refuses(&[("healthCmd", "  ")], "healthCmd", &["is empty", "NONE"]);
}

#[test]
fn absent_health_settings_keep_the_images() {
    assert_eq!(web(&[]).config.health, HealthConfig::default());
}

#[test]
fn health_durations_and_retries_are_parsed() {
    let health = web(&[
        ("healthInterval", "2s"),
        ("healthTimeout", "500ms"),
        ("healthRetries", "3"),
        ("healthStartPeriod", "1m"),
    ])
    .config
    .health;
    assert_eq!(health.interval, Some(Duration::from_secs(2)));
    assert_eq!(health.timeout, Some(Duration::from_millis(500)));
    assert_eq!(health.retries, Some(3));
    assert_eq!(health.start_period, Some(Duration::from_secs(60)));
}

#[test]
fn zero_health_interval_is_refused() {
    assert_web_refuses(
        &[("healthInterval", "0s")],
        "healthInterval",
        &["must be at least 1ms"],
    );
}

#[test]
fn zero_health_timeout_is_refused() {
    assert_web_refuses(
        &[("healthTimeout", "0")],
        "healthTimeout",
        &["must be at least 1ms"],
    );
}

#[test]
fn negative_health_retries_are_refused() {
    assert_web_refuses(
        &[("healthRetries", "-1")],
        "healthRetries",
        &["must not be negative"],
    );
}

#[test]
fn health_start_period_may_be_zero() {
    assert_eq!(
        web(&[("healthStartPeriod", "0s")])
            .config
            .health
            .start_period,
        Some(Duration::ZERO)
    );
}

#[test]
fn invalid_health_start_period_is_refused() {
    assert_web_refuses(
        &[("healthStartPeriod", "soon")],
        "healthStartPeriod",
        &["is not a duration"],
    );
}

#[test]
fn health_interval_of_1ms_is_accepted() {
    assert_eq!(
        web(&[("healthInterval", "1ms")]).config.health.interval,
        Some(Duration::from_millis(1))
    );
}

#[test]
fn health_interval_below_1ms_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[("healthInterval", "999us")],
        "healthInterval",
        &["\"999us\" must be at least 1ms"],
    );
}

#[test]
fn health_interval_of_24h_is_accepted() {
    assert_eq!(
        web(&[("healthInterval", "24h")]).config.health.interval,
        Some(Duration::from_secs(24 * 3600))
    );
}

#[test]
fn health_interval_above_24h_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[("healthInterval", "24h 1ns")],
        "healthInterval",
        &["\"24h 1ns\" must be at most 24h"],
    );
}

#[test]
fn health_timeout_of_1ms_is_accepted() {
    assert_eq!(
        web(&[("healthTimeout", "1ms")]).config.health.timeout,
        Some(Duration::from_millis(1))
    );
}

#[test]
fn health_timeout_below_1ms_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[("healthTimeout", "999us")],
        "healthTimeout",
        &["\"999us\" must be at least 1ms"],
    );
}

#[test]
fn health_timeout_of_24h_is_accepted() {
    assert_eq!(
        web(&[("healthTimeout", "24h")]).config.health.timeout,
        Some(Duration::from_secs(24 * 3600))
    );
}

#[test]
fn health_timeout_above_24h_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[("healthTimeout", "24h 1ns")],
        "healthTimeout",
        &["\"24h 1ns\" must be at most 24h"],
    );
}

#[test]
fn health_start_period_of_1ms_is_accepted() {
    assert_eq!(
        web(&[("healthStartPeriod", "1ms")])
            .config
            .health
            .start_period,
        Some(Duration::from_millis(1))
    );
}

#[test]
fn health_start_period_between_0_and_1ms_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[("healthStartPeriod", "999us")],
        "healthStartPeriod",
        &["\"999us\" must be 0 or at least 1ms"],
    );
}

#[test]
fn health_start_period_of_24h_is_accepted() {
    assert_eq!(
        web(&[("healthStartPeriod", "24h")])
            .config
            .health
            .start_period,
        Some(Duration::from_secs(24 * 3600))
    );
}

#[test]
fn health_start_period_above_24h_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[("healthStartPeriod", "24h 1ns")],
        "healthStartPeriod",
        &["\"24h 1ns\" must be at most 24h"],
    );
}

#[test]
fn zero_health_retries_leave_the_count_to_the_image() {
    assert_eq!(
        web(&[("healthRetries", "0")]).config.health.retries,
        Some(0)
    );
}

#[test]
fn health_retries_of_100_are_accepted() {
    assert_eq!(
        web(&[("healthRetries", "100")]).config.health.retries,
        Some(100)
    );
}

#[test]
fn health_retries_above_100_are_refused_naming_the_bound() {
    assert_web_refuses(
        &[("healthRetries", "101")],
        "healthRetries",
        &["\"101\" must be at most 100"],
    );
}

#[test]
fn health_retries_beyond_any_integer_are_refused_naming_the_bound() {
    assert_web_refuses(
        &[("healthRetries", "99999999999999999999999")],
        "healthRetries",
        &["must be at most 100"],
    );
}

/// Regression: this document used to be accepted, and the readiness gate's
/// start period + interval x retries + margin then overflowed `Duration`
/// and panicked the apply.
#[test]
fn health_interval_of_1000d_with_4000000000_retries_is_refused_instead_of_panicking_the_readiness_gate(
) {
    let r = web_rejection(&[
        ("healthCmd", "true"),
        ("healthInterval", "1000d"),
        ("healthRetries", "4000000000"),
    ]);
    let found: Vec<(&str, &str)> = r
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    let (interval, retries) = (web_at("healthInterval"), web_at("healthRetries"));
    assert_eq!(
        found,
        [
            (interval.as_str(), "\"1000d\" must be at most 24h"),
            (retries.as_str(), "\"4000000000\" must be at most 100"),
        ]
    );
}

// --- updateStrategy, pullPolicy ---

#[test]
fn rollout_defaults_to_stop_first_and_pull_when_missing() {
    let rollout = web(&[]).rollout;
    assert_eq!(rollout.update_strategy, UpdateStrategy::StopFirst);
    assert_eq!(rollout.pull_policy, PullPolicy::Missing);
    assert!(rollout.depends_on.is_empty());
}

#[test]
fn update_strategy_is_parsed() {
    assert_eq!(
        web(&[("updateStrategy", "start-first")])
            .rollout
            .update_strategy,
        UpdateStrategy::StartFirst
    );
    assert_eq!(
        web(&[("updateStrategy", "stop-first")])
            .rollout
            .update_strategy,
        UpdateStrategy::StopFirst
    );
}

#[test]
fn unknown_update_strategy_is_refused() {
    assert_web_refuses(
        &[("updateStrategy", "rolling")],
        "updateStrategy",
        &["is not one of stop-first, start-first"],
    );
}

#[test]
fn pull_policy_is_parsed() {
    assert_eq!(
        web(&[("pullPolicy", "always")]).rollout.pull_policy,
        PullPolicy::Always
    );
    assert_eq!(
        web(&[("pullPolicy", "never")]).rollout.pull_policy,
        PullPolicy::Never
    );
}

#[test]
fn unknown_pull_policy_is_refused() {
    assert_web_refuses(
        &[("pullPolicy", "sometimes")],
        "pullPolicy",
        &["is not one of missing, always, never"],
    );
}

// --- dependsOn ---

#[test]
fn depends_on_names_other_components() {
    let a = accept(&doc(&[
        component("db", &[]),
        component("cache", &[]),
        component("web", &[("dependsOn", "db"), ("dependsOn", "cache")]),
    ]
    .join(",")));
    let web = a.desired.container("web").unwrap();
    let deps: Vec<_> = web.rollout.depends_on.iter().map(String::as_str).collect();
    assert_eq!(deps, ["cache", "db"]);
}

#[test]
fn depends_on_a_missing_component_is_refused() {
    assert_web_refuses(
        &[("dependsOn", "kapacitor")],
        "dependsOn",
        &["\"kapacitor\" is not a component of this document"],
    );
}

#[test]
fn depends_on_with_an_invalid_name_is_refused() {
    let r = reject(&doc(&[
        component("db", &[]),
        component("web", &[("dependsOn", "containers:db")]),
    ]
    .join(",")));
    assert_only_error(&r, &at(1, "web", "dependsOn"), &["\"containers:db\""]);
}

#[test]
fn depends_on_the_component_itself_is_refused() {
    assert_web_refuses(
        &[("dependsOn", "web")],
        "dependsOn",
        &["names the component itself"],
    );
}

#[test]
fn two_component_dependency_cycle_is_reported_once() {
    let r = reject(&doc(&[
        component("a", &[("dependsOn", "b")]),
        component("b", &[("dependsOn", "a")]),
    ]
    .join(",")));
    assert_only_error(
        &r,
        &at(0, "a", "dependsOn"),
        &["forms a cycle: a -> b -> a"],
    );
}

#[test]
fn three_component_dependency_cycle_is_reported_once() {
    let r = reject(&doc(&[
        component("a", &[("dependsOn", "b")]),
        component("b", &[("dependsOn", "c")]),
        component("c", &[("dependsOn", "a")]),
    ]
    .join(",")));
    assert_only_error(
        &r,
        &at(0, "a", "dependsOn"),
        &["forms a cycle: a -> b -> c -> a"],
    );
}

#[test]
fn component_depending_on_a_cycle_is_not_itself_reported() {
    let r = reject(&doc(&[
        component("x", &[("dependsOn", "a")]),
        component("a", &[("dependsOn", "b")]),
        component("b", &[("dependsOn", "a")]),
    ]
    .join(",")));
    assert_only_error(
        &r,
        &at(1, "a", "dependsOn"),
        &["forms a cycle: a -> b -> a"],
    );
}

#[test]
fn shared_dependency_is_not_a_cycle() {
    let a = accept(&doc(&[
        component("db", &[]),
        component("api", &[("dependsOn", "db")]),
        component("web", &[("dependsOn", "api"), ("dependsOn", "db")]),
    ]
    .join(",")));
    assert_eq!(a.desired.containers.len(), 3);
}

// --- keys Kanto reports in current state ---

#[test]
fn reported_keys_are_accepted_with_a_warning_naming_the_key() {
    let reported: Vec<&str> = CONTAINER_KEYS
        .iter()
        .filter(|k| k.origin == Origin::Reported)
        .map(|k| k.name)
        .collect();
    assert_eq!(reported.len(), 8, "{reported:?}");
    for key in reported {
        let config = [(key, "anything")];
        let (with, without) = (web(&config), web(&[]));
        assert_eq!(
            with.config, without.config,
            "{key} must not change the config"
        );
        assert_eq!(
            with.rollout, without.rollout,
            "{key} must not change the rollout"
        );
        assert_warned(
            &web_warnings(&config),
            &web_at(key),
            "is reported in current state",
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Document-level and cross-key rules.
// ---------------------------------------------------------------------------

#[test]
fn unknown_domain_id_is_refused() {
    let r = reject(&envelope(json!({ "domains": [{ "id": "firmware" }] })));
    assert_only_error(
        &r,
        "domains[0].id",
        &[
            "\"firmware\" is not a domain berth serves",
            "expected \"containers\"",
        ],
    );
}

#[test]
fn domain_id_in_another_case_is_refused_with_a_hint() {
    let r = reject(&envelope(json!({ "domains": [{ "id": "Containers" }] })));
    assert_only_error(&r, "domains[0].id", &["case-sensitive"]);
}

#[test]
fn second_containers_domain_is_refused() {
    let r = reject(&envelope(
        json!({ "domains": [{ "id": "containers" }, { "id": "containers" }] }),
    ));
    assert_only_error(
        &r,
        "domains[1]",
        &["second \"containers\" domain", "domains[0]"],
    );
}

#[test]
fn document_without_domains_is_refused() {
    for payload in [json!({ "domains": [] }), json!({})] {
        let r = reject(&envelope(payload));
        assert_only_error(&r, "domains", &["has no \"containers\" domain"]);
    }
}

#[test]
fn containers_domain_without_components_asks_for_no_containers() {
    let a = accept(&envelope(
        json!({ "domains": [{ "id": "containers", "components": [] }] }),
    ));
    assert!(a.desired.containers.is_empty());
}

#[test]
fn duplicate_component_ids_are_refused() {
    let r = reject(&doc(
        &[component("web", &[]), component("web", &[])].join(",")
    ));
    assert_only_error(
        &r,
        "domains[0].components[1] (web) id",
        &["\"web\" is used twice", "domains[0].components[0]"],
    );
}

#[test]
fn invalid_component_id_is_refused() {
    let r = reject(&doc(&component_v("my app", None, &[("image", "nginx")])));
    assert_only_error(
        &r,
        "domains[0].components[0] (my app) id",
        &["\"my app\"", "container name"],
    );
}

#[test]
fn prefixed_component_id_is_refused_with_a_hint() {
    let r = reject(&doc(&component_v(
        "containers:influxdb",
        None,
        &[("image", "influxdb:1.8")],
    )));
    assert_only_error(
        &r,
        "domains[0].components[0] (containers:influxdb) id",
        &["domain prefix", "use \"influxdb\""],
    );
}

#[test]
fn unknown_key_is_refused_with_a_did_you_mean() {
    let r = web_rejection(&[("memory", "64M"), ("imgae", "nginx")]);
    assert_only_error(
        &r,
        "domains[0].components[0] (web) config[1] \"imgae\"",
        &["is not a known key", "did you mean \"image\"?"],
    );
}

#[test]
fn unknown_key_with_other_case_or_separators_is_refused_with_the_right_name() {
    let r = web_rejection(&[("restart_policy", "always")]);
    assert_only_error(
        &r,
        "domains[0].components[0] (web) config[0] \"restart_policy\"",
        &["did you mean \"restartPolicy\"?"],
    );
}

#[test]
fn unknown_key_without_a_close_match_points_to_the_schema() {
    let r = web_rejection(&[("banana", "yes")]);
    assert_only_error(
        &r,
        "domains[0].components[0] (web) config[0] \"banana\"",
        &["is not a known key", "see the schema"],
    );
}

#[test]
fn repeated_non_repeatable_key_is_refused() {
    assert_web_refuses(
        &[("memory", "64M"), ("memory", "128M")],
        "memory",
        &[
            "is given more than once (\"64M\" and \"128M\")",
            "only one value",
        ],
    );
}

#[test]
fn repeated_non_repeatable_key_is_refused_even_with_the_same_value() {
    assert_web_refuses(
        &[("image", "nginx"), ("image", "nginx")],
        "image",
        &["is given more than once"],
    );
}

#[test]
fn port_with_host_network_is_refused() {
    assert_web_refuses(
        &[("network", "host"), ("port", "8080:80")],
        "port",
        &["cannot publish ports with network \"host\""],
    );
}

#[test]
fn port_with_no_network_is_refused() {
    assert_web_refuses(
        &[("network", "none"), ("port", "8080:80")],
        "port",
        &["cannot publish ports with network \"none\""],
    );
}

#[test]
fn port_with_a_container_network_is_refused() {
    assert_web_refuses(
        &[("network", "container:db"), ("port", "8080:80")],
        "port",
        &["cannot publish ports with network \"container:db\""],
    );
}

#[test]
fn port_with_a_user_network_is_accepted() {
    assert_eq!(
        web(&[("network", "edge"), ("port", "8080:80")])
            .config
            .ports
            .len(),
        1
    );
}

#[test]
fn host_entry_with_a_container_network_is_refused() {
    assert_web_refuses(
        &[("network", "container:db"), ("host", "ntp:192.0.2.1")],
        "host",
        &["cannot add host entries with network \"container:db\""],
    );
}

#[test]
fn host_ip_entry_with_host_network_is_refused() {
    for target in ["gw:host_ip", "lan:host_ip_eth0"] {
        assert_web_refuses(
            &[("network", "host"), ("host", target)],
            "host",
            &["cannot use host_ip with network \"host\""],
        );
    }
}

#[test]
fn literal_host_entry_with_host_network_is_accepted() {
    let spec = web(&[("network", "host"), ("host", "ntp:192.0.2.1")]);
    assert_eq!(spec.config.extra_hosts.len(), 1);
}

#[test]
fn two_components_binding_the_same_host_port_and_protocol_are_refused() {
    let r = reject(&doc(&[
        component("web", &[("port", "8080:80")]),
        component("api", &[("port", "8080:8000")]),
    ]
    .join(",")));
    assert_only_error(
        &r,
        &at(1, "api", "port"),
        &["host port 8080/tcp", "also bound by component \"web\""],
    );
}

#[test]
fn all_addresses_conflict_with_a_specific_address_across_components() {
    let r = reject(&doc(&[
        component("web", &[("port", "127.0.0.1:8080:80")]),
        component("api", &[("port", "8080:8000")]),
    ]
    .join(",")));
    assert_only_error(
        &r,
        &at(1, "api", "port"),
        &["also bound by component \"web\""],
    );
}

#[test]
fn same_host_port_with_different_protocols_does_not_conflict() {
    let a = accept(&doc(&[
        component("web", &[("port", "5353:53/tcp")]),
        component("dns", &[("port", "5353:53/udp")]),
    ]
    .join(",")));
    assert_eq!(a.desired.containers.len(), 2);
}

#[test]
fn same_host_port_on_different_specific_addresses_does_not_conflict() {
    let a = accept(&doc(&[
        component("web", &[("port", "127.0.0.1:8080:80")]),
        component("api", &[("port", "127.0.0.2:8080:80")]),
    ]
    .join(",")));
    assert_eq!(a.desired.containers.len(), 2);
}

#[test]
fn engine_chosen_host_ports_do_not_conflict() {
    let a = accept(&doc(&[
        component("web", &[("port", "0:80")]),
        component("api", &[("port", "0:80")]),
    ]
    .join(",")));
    assert_eq!(a.desired.containers.len(), 2);
}

#[test]
fn empty_activity_id_is_refused() {
    let text = json!({
        "activityId": " ",
        "payload": { "domains": [{ "id": "containers" }] }
    })
    .to_string();
    assert_only_error(&reject(&text), "activityId", &["is empty"]);
}

#[test]
fn activity_id_and_timestamp_are_kept() {
    let text = json!({
        "activityId": "rollout-7",
        "timestamp": 1764000000000_i64,
        "payload": { "domains": [{ "id": "containers" }] }
    })
    .to_string();
    let d = accept(&text).desired;
    assert_eq!(d.activity_id, "rollout-7");
    assert_eq!(d.timestamp, Some(1764000000000));
}

// --- domain config ---

fn domain_config(config: Value) -> String {
    envelope(json!({ "domains": [{ "id": "containers", "config": config }] }))
}

#[test]
fn system_containers_are_split_and_trimmed() {
    let text = domain_config(
        json!([{ "key": "systemContainers", "value": " self-update-agent , cloudconnector,," }]),
    );
    let d = accept(&text).desired;
    assert_eq!(
        d.system_containers,
        Some(strings(&["self-update-agent", "cloudconnector"]))
    );
}

#[test]
fn empty_system_containers_value_means_no_system_containers() {
    let text = domain_config(json!([{ "key": "systemContainers", "value": "" }]));
    assert_eq!(accept(&text).desired.system_containers, Some(vec![]));
}

#[test]
fn absent_system_containers_keeps_the_agents_list() {
    assert_eq!(accept(&doc("")).desired.system_containers, None);
}

#[test]
fn invalid_system_container_name_is_refused() {
    let text = domain_config(json!([{ "key": "systemContainers", "value": "ok, not ok" }]));
    assert_only_error(
        &reject(&text),
        "domains[0] config \"systemContainers\"",
        &["name \"not ok\""],
    );
}

#[test]
fn unknown_domain_config_key_is_refused_with_a_suggestion() {
    let text = domain_config(json!([{ "key": "systemcontainers", "value": "a" }]));
    assert_only_error(
        &reject(&text),
        "domains[0] config[0] \"systemcontainers\"",
        &["is not a known key", "did you mean \"systemContainers\"?"],
    );
}

// --- baselines ---

#[test]
fn baselines_keep_bare_member_names_in_order() {
    let a = accept(&doc_with_baselines(
        &baseline("monitoring", &["containers:db", "containers:web"]),
        &[component("web", &[]), component("db", &[])].join(","),
    ));
    assert_eq!(
        a.desired.baselines,
        [Baseline {
            title: "monitoring".into(),
            containers: strings(&["db", "web"]),
        }]
    );
}

#[test]
fn baseline_naming_an_unknown_container_is_refused() {
    let r = reject(&doc_with_baselines(
        &baseline("monitoring", &["containers:kapacitor"]),
        &component("web", &[]),
    ));
    assert_only_error(
        &r,
        "baselines[0] (monitoring) components[0]",
        &["\"containers:kapacitor\" names no component"],
    );
}

#[test]
fn baseline_member_without_prefix_is_refused_with_a_hint() {
    let r = reject(&doc_with_baselines(
        &baseline("monitoring", &["web"]),
        &component("web", &[]),
    ));
    assert_only_error(
        &r,
        "baselines[0] (monitoring) components[0]",
        &[
            "\"web\" lacks the \"containers:\" prefix",
            "write \"containers:web\"",
        ],
    );
}

#[test]
fn baseline_member_without_prefix_naming_nothing_gets_no_hint() {
    let r = reject(&doc_with_baselines(
        &baseline("monitoring", &["kapacitor"]),
        &component("web", &[]),
    ));
    assert_only_error(
        &r,
        "baselines[0] (monitoring) components[0]",
        &["lacks the \"containers:\" prefix"],
    );
    assert!(
        !r.errors[0].message.contains("write"),
        "{}",
        r.errors[0].message
    );
}

#[test]
fn container_in_two_baselines_is_refused() {
    let r = reject(&doc_with_baselines(
        &[
            baseline("a", &["containers:web"]),
            baseline("b", &["containers:web"]),
        ]
        .join(","),
        &component("web", &[]),
    ));
    assert_only_error(
        &r,
        "baselines[1] (b) components[0]",
        &["already in baseline \"a\""],
    );
}

#[test]
fn duplicate_baseline_titles_are_refused() {
    let r = reject(&doc_with_baselines(
        &[
            baseline("edge", &["containers:web"]),
            baseline("edge", &["containers:db"]),
        ]
        .join(","),
        &[component("web", &[]), component("db", &[])].join(","),
    ));
    assert_only_error(
        &r,
        "baselines[1] (edge) title",
        &["is also the title of baselines[0]"],
    );
}

#[test]
fn empty_baseline_title_is_refused() {
    let r = reject(&doc_with_baselines(
        &baseline(" ", &["containers:web"]),
        &component("web", &[]),
    ));
    assert_only_error(&r, "baselines[0].title", &["is empty"]);
}

// ---------------------------------------------------------------------------
// 3. Text that is not a well-typed document.
// ---------------------------------------------------------------------------

#[test]
fn non_json_is_refused_with_line_and_column() {
    let r = reject("{\n  \"activityId\": \"a\",\n  oops\n}");
    assert_only_error(&r, "document", &["is not valid JSON", "line 3", "column"]);
}

#[test]
fn empty_text_is_refused_as_empty() {
    for text in ["", " \n\t"] {
        let r = reject(text);
        assert_only_error(&r, "document", &["is empty", "expected a JSON object"]);
    }
}

#[test]
fn wrong_typed_value_is_refused_with_its_json_path_line_and_column() {
    let text = "{\"activityId\": \"a\",\n\"payload\": {\"domains\": [{\"id\": \"containers\", \"components\": [\n{\"id\": \"web\", \"config\": [{\"key\": \"privileged\", \"value\": true}]}]}]}}";
    let r = reject(text);
    assert_only_error(
        &r,
        "payload.domains[0].components[0].config[0].value",
        &[
            "invalid type: boolean `true`, expected a string",
            "(line 3, column ",
        ],
    );
}

#[test]
fn missing_activity_id_is_refused() {
    let r = reject(&json!({ "payload": { "domains": [] } }).to_string());
    assert_only_error(&r, "document", &["missing field `activityId`"]);
}

#[test]
fn update_manager_wrapping_is_refused_with_a_hint() {
    let text = envelope(json!({ "desiredState": { "domains": [] } }));
    assert_only_error(
        &reject(&text),
        "payload.desiredState",
        &["Update Manager's wrapping", "directly under payload"],
    );
}

#[test]
fn bare_desired_state_is_refused_with_a_hint() {
    let text = json!({ "domains": [{ "id": "containers" }] }).to_string();
    assert_only_error(
        &reject(&text),
        "document",
        &["is a bare desired state", "wrap it"],
    );
}

// Issue 23 changed this rule: unknown fields are ignored as Kanto's Go
// decoder ignores them, named in one warning.
#[test]
fn parameters_instead_of_config_is_ignored_with_a_warning_naming_the_field() {
    let text = doc(r#"{"id": "web", "version": "1", "parameters": []}"#);
    let a = accept(&text);
    assert_warned(
        &a.warnings,
        "document",
        "payload.domains[0].components[0].parameters",
    );
}

#[test]
fn unknown_fields_get_one_warning_naming_every_one() {
    let text = json!({
        "activityId": "a",
        "payload": {
            "blueprintMetadata": {"name": "leda"},
            "baselines": [{"title": "b", "precondition": "x", "components": ["containers:web"]}],
            "domains": [{"id": "containers", "components": [
                {"id": "web", "version": "1", "config": []}
            ]}]
        }
    })
    .to_string();
    let a = accept(&text);
    let named: Vec<&Diagnostic> = a
        .warnings
        .iter()
        .filter(|w| w.message.contains("ignored as Kanto"))
        .collect();
    assert_eq!(named.len(), 1, "{:#?}", a.warnings);
    assert!(
        named[0].message.contains("payload.blueprintMetadata"),
        "{}",
        named[0].message
    );
    assert!(
        named[0]
            .message
            .contains("payload.baselines[0].precondition"),
        "{}",
        named[0].message
    );
}

#[test]
fn an_unknown_field_does_not_hide_the_documents_real_problems() {
    let text =
        doc(r#"{"id": "web", "extra": 1, "config": [{"key": "privileged", "value": "YES"}]}"#);
    let r = reject(&text);
    assert_eq!(r.errors.len(), 2, "{:#?}", r.errors);
    assert!(r.errors.iter().any(|e| e.path == web_at("image")));
    assert!(r.errors.iter().any(|e| e.path == web_at("privileged")));
    assert_warned(
        &r.warnings,
        "document",
        "payload.domains[0].components[0].extra",
    );
}

#[test]
fn a_config_entry_without_value_has_the_empty_value() {
    let text = doc(
        r#"{"id": "web", "version": "1", "config": [{"key": "cmd"}, {"key": "env", "value": "A=1"}]}"#,
    );
    let a = accept(&text);
    assert_eq!(
        a.desired.containers[0].config.cmd,
        Some(vec![String::new()])
    );
    assert!(
        !a.warnings.iter().any(|w| w.message.contains("ignored")),
        "{:#?}",
        a.warnings
    );
}

#[test]
fn the_ignored_fields_named_are_bounded() {
    let mut payload = serde_json::Map::new();
    payload.insert(
        "domains".into(),
        json!([{"id": "containers", "components": []}]),
    );
    for i in 0..50 {
        payload.insert(format!("x{i:02}"), json!(1));
    }
    let a = accept(&envelope(Value::Object(payload)));
    let w = a
        .warnings
        .iter()
        .find(|w| w.path == "document")
        .expect("the warning");
    assert!(w.message.ends_with("and 40 more"), "{}", w.message);
}

fn lenient() -> Options {
    Options {
        validation: super::validate::Validation::Lenient,
        ..Options::default()
    }
}

#[test]
fn lenient_drops_malformed_ports_mounts_and_devices_naming_each_and_applies_the_rest() {
    let text = doc(&component(
        "web",
        &[
            ("port", "8080:80"),
            ("port", "80:80/quic"),
            ("mount", "relative:/data"),
            ("mount", "/srv:/srv"),
            ("device", "/dev/ttyACM0"),
            ("env", "A=1"),
        ],
    ));
    let a = parse(&text, &lenient()).expect("accepted");
    let c = &a.desired.containers[0].config;
    assert_eq!(c.ports.len(), 1);
    assert_eq!(c.mounts.len(), 1);
    assert!(c.devices.is_empty());
    for (key, value) in [
        ("port", "80:80/quic"),
        ("mount", "relative:/data"),
        ("device", "/dev/ttyACM0"),
    ] {
        assert_warned(&a.warnings, &web_at(key), value);
        assert_warned(&a.warnings, &web_at(key), "dropped (validation = lenient)");
    }
}

#[test]
fn strict_refuses_the_same_malformed_entries() {
    let r = reject(&doc(&component(
        "web",
        &[
            ("port", "80:80/quic"),
            ("mount", "relative:/data"),
            ("device", "/dev/ttyACM0"),
        ],
    )));
    assert_eq!(r.errors.len(), 3, "{:#?}", r.errors);
}

#[test]
fn lenient_warns_about_an_unknown_config_key_and_strict_refuses_it() {
    let text = doc(&component("web", &[("imgae", "x")]));
    let a = parse(&text, &lenient()).expect("accepted");
    assert_warned(
        &a.warnings,
        "domains[0].components[0] (web) config[0] \"imgae\"",
        "is not a known key; ignored",
    );
    let r = reject(&text);
    assert!(
        r.errors[0].message.contains("did you mean \"image\""),
        "{r}"
    );
}

#[test]
fn lenient_still_refuses_what_kanto_does_not_drop() {
    let r = parse(
        &doc(&component("web", &[("privileged", "YES")])),
        &lenient(),
    )
    .unwrap_err();
    assert_only_error(&r, &web_at("privileged"), &["is not a boolean"]);
}

// ---------------------------------------------------------------------------
// 4. Every independent mistake is reported.
// ---------------------------------------------------------------------------

#[test]
fn ten_independent_mistakes_give_exactly_ten_errors() {
    let r = reject(include_str!(
        "../../tests/fixtures/documents/ten-mistakes.json"
    ));
    assert_eq!(r.errors.len(), 10, "{:#?}", r.errors);
    for e in &r.errors {
        assert!(
            e.path.contains("(influxdb) config") || e.path.contains("(telegraf) config"),
            "path does not name a component and key: {}",
            e.path
        );
        assert!(
            e.path.ends_with('"'),
            "path does not end with a quoted key: {}",
            e.path
        );
    }
    let keys: BTreeSet<&str> = r
        .errors
        .iter()
        .map(|e| e.path.rsplit(' ').next().unwrap().trim_matches('"'))
        .collect();
    let expected: BTreeSet<&str> = [
        "port",
        "mount",
        "privileged",
        "memory",
        "restartPolicy",
        "imgae",
        "device",
        "logMaxFiles",
        "dependsOn",
        "env",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected);
}

#[test]
fn mistakes_in_several_components_are_all_reported_in_document_order() {
    let r = reject(&doc(&[
        component("a", &[("memory", "1")]),
        component("b", &[("privileged", "yes")]),
        component("c", &[("port", "80")]),
    ]
    .join(",")));
    let paths: Vec<_> = r.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            at(0, "a", "memory"),
            at(1, "b", "privileged"),
            at(2, "c", "port")
        ]
    );
}

#[test]
fn rejection_keeps_the_warnings_found_so_far() {
    let r = web_rejection(&[("status", "running"), ("memory", "1")]);
    assert_eq!(r.errors.len(), 1);
    assert_warned(
        &r.warnings,
        &web_at("status"),
        "is reported in current state",
    );
}

// ---------------------------------------------------------------------------
// 5. Normalisation and the spec hash.
// ---------------------------------------------------------------------------

#[test]
fn spec_hash_is_v1_sha256_with_64_lowercase_hex_digits() {
    let h = hash(&[]);
    let hex = h
        .strip_prefix("v1:sha256:")
        .unwrap_or_else(|| panic!("{h}"));
    assert_eq!(hex.len(), 64, "{h}");
    assert!(
        hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{h}"
    );
}

#[test]
fn env_order_does_not_change_the_hash() {
    assert_eq!(
        hash(&[("env", "A=1"), ("env", "B=2")]),
        hash(&[("env", "B=2"), ("env", "A=1")])
    );
}

#[test]
fn image_spellings_of_the_same_reference_hash_the_same() {
    let h = hash(&[("image", "nginx")]);
    assert_eq!(h, hash(&[("image", "docker.io/library/nginx:latest")]));
    assert_eq!(h, hash(&[("image", "index.docker.io/library/nginx")]));
}

#[test]
fn size_spellings_of_the_same_amount_normalise_the_same() {
    let memory = |v| web(&[("memory", v)]).config.resources;
    assert_eq!(memory("512M"), memory("0.5G"));
    assert_eq!(memory("512M"), memory("524288k"));
    let h = hash(&[("logMaxSize", "512M")]);
    assert_eq!(h, hash(&[("logMaxSize", "0.5G")]));
    assert_eq!(h, hash(&[("logMaxSize", "524288k")]));
}

#[test]
fn port_order_and_spelling_do_not_change_the_hash() {
    let h = hash(&[("port", "8080:80"), ("port", "9090:90/udp")]);
    assert_eq!(h, hash(&[("port", "9090:90/udp"), ("port", "8080:80")]));
    assert_eq!(
        h,
        hash(&[("port", "0.0.0.0:8080:80/tcp"), ("port", "9090:90/UDP")])
    );
}

#[test]
fn port_range_equals_its_single_ports() {
    let range = web(&[("port", "8080-8081:80-81")]);
    let single = web(&[("port", "8080:80"), ("port", "8081:81")]);
    assert_eq!(range.config.ports, single.config.ports);
    assert_eq!(spec_hash(&range.config), spec_hash(&single.config));
}

#[test]
fn mount_option_defaults_hash_the_same_as_absent() {
    let h = hash(&[("mount", "/a:/b")]);
    assert_eq!(h, hash(&[("mount", "/a:/b:rprivate")]));
    assert_eq!(h, hash(&[("mount", "/a:/b:rw,rprivate")]));
    assert_eq!(h, hash(&[("mount", "/a/:/b/")]));
}

#[test]
fn device_permission_default_hashes_the_same_as_absent() {
    let h = hash(&[("device", "/dev/a:/dev/b")]);
    assert_eq!(h, hash(&[("device", "/dev/a:/dev/b:rwm")]));
    assert_eq!(h, hash(&[("device", "/dev/a:/dev/b:mwr")]));
}

#[test]
fn explicit_defaults_hash_the_same_as_absent() {
    let h = hash(&[]);
    for (key, value) in [
        ("restartPolicy", "unless-stopped"),
        ("network", "bridge"),
        ("logDriver", "json-file"),
        ("logMaxFiles", "2"),
        ("logMaxSize", "100M"),
        ("logMode", "blocking"),
        ("privileged", "false"),
        ("terminal", "0"),
        ("interactive", "F"),
        ("hostName", "web-host"),
        ("domainName", "web-domain"),
    ] {
        assert_eq!(hash(&[(key, value)]), h, "{key}={value}");
    }
    let all = [
        ("restartPolicy", "unless-stopped"),
        ("network", "bridge"),
        ("logDriver", "json-file"),
        ("logMaxFiles", "2"),
        ("logMaxSize", "100M"),
    ];
    assert_eq!(hash(&all), h);
}

#[test]
fn rollout_rules_and_version_do_not_change_the_hash() {
    let base = |version: &str, extra: &[(&str, &str)]| {
        let mut config = vec![("image", "nginx:1")];
        config.extend_from_slice(extra);
        let text = doc(&[
            component("db", &[]),
            component_v("web", Some(version), &config),
        ]
        .join(","));
        spec_hash(&accept(&text).desired.container("web").unwrap().config)
    };
    let h = base("1", &[]);
    assert_eq!(base("2", &[]), h, "version");
    assert_eq!(
        base("1", &[("updateStrategy", "start-first")]),
        h,
        "updateStrategy"
    );
    assert_eq!(base("1", &[("pullPolicy", "always")]), h, "pullPolicy");
    assert_eq!(base("1", &[("dependsOn", "db")]), h, "dependsOn");
}

#[test]
fn container_settings_change_the_hash() {
    let base = [
        ("image", "nginx:1"),
        ("env", "A=1"),
        ("port", "8080:80"),
        ("logMaxSize", "10M"),
        ("cmd", "a"),
        ("cmd", "b"),
    ];
    let h = hash(&base);
    for (what, index, replacement) in [
        ("image tag", 0, ("image", "nginx:2")),
        ("env value", 1, ("env", "A=2")),
        ("port", 2, ("port", "8081:80")),
        ("log size", 3, ("logMaxSize", "20M")),
    ] {
        let mut changed = base;
        changed[index] = replacement;
        assert_ne!(hash(&changed), h, "{what}");
    }
    let mut swapped = base;
    swapped.swap(4, 5);
    assert_ne!(hash(&swapped), h, "cmd order");
}

#[test]
fn in_place_settings_change_the_config_but_not_the_hash() {
    // Memory, CPU and restart policy are changed with `docker update`, so
    // they are compared field by field instead of through the hash label.
    let base = web(&[("memory", "512M"), ("restartPolicy", "always")]);
    for config in [
        [("memory", "256M"), ("restartPolicy", "always")],
        [("memory", "512M"), ("restartPolicy", "no")],
        [("memory", "512M"), ("cpus", "1")],
    ] {
        let other = web(&config);
        assert_ne!(other.config, base.config, "{config:?}");
        assert_eq!(
            spec_hash(&other.config),
            spec_hash(&base.config),
            "{config:?}"
        );
    }
}

#[test]
fn equal_meaning_gives_equal_specs() {
    let a = web(&[
        ("image", "nginx"),
        ("memory", "0.5G"),
        ("env", "B=2"),
        ("env", "A=1"),
        ("port", "8080:80"),
    ]);
    let b = web(&[
        ("port", "0.0.0.0:8080:80/tcp"),
        ("env", "A=1"),
        ("env", "B=2"),
        ("memory", "512M"),
        ("image", "docker.io/library/nginx:latest"),
    ]);
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------
// 6. The shipped examples.
// ---------------------------------------------------------------------------

const EXAMPLES: [(&str, &str); 4] = [
    ("minimal.json", include_str!("../../examples/minimal.json")),
    ("full.json", include_str!("../../examples/full.json")),
    ("multi.json", include_str!("../../examples/multi.json")),
    (
        "kanto-monitoring.json",
        include_str!("../../examples/kanto-monitoring.json"),
    ),
];

#[test]
fn every_example_is_accepted() {
    for (name, text) in EXAMPLES {
        if let Err(r) = parse(text, &Options::default()) {
            panic!("{name} is refused: {r}");
        }
    }
}

#[test]
fn full_example_uses_every_setting_key() {
    let doc: Value = serde_json::from_str(EXAMPLES[1].1).unwrap();
    let mut used = BTreeSet::new();
    for domain in doc["payload"]["domains"].as_array().unwrap() {
        for component in domain["components"].as_array().unwrap() {
            for kv in component["config"].as_array().unwrap() {
                used.insert(kv["key"].as_str().unwrap().to_string());
            }
        }
    }
    let missing: Vec<&str> = CONTAINER_KEYS
        .iter()
        .filter(|k| k.origin != Origin::Reported && !used.contains(k.name))
        .map(|k| k.name)
        .collect();
    assert!(
        missing.is_empty(),
        "examples/full.json does not use: {missing:?}"
    );
}

#[test]
fn kanto_monitoring_example_normalises_as_kanto_would_run_it() {
    let d = accept(EXAMPLES[3].1).desired;
    assert_eq!(
        d.system_containers,
        Some(strings(&["self-update-agent", "cloudconnector"]))
    );
    assert_eq!(
        d.baselines[0].containers,
        strings(&["influxdb", "telegraf"])
    );
    let influx = d.container("influxdb").unwrap();
    assert_eq!(
        influx.config.restart,
        RestartPolicy::OnFailure { max_retries: 5 }
    );
    assert_eq!(influx.config.resources.memory, Some(512 * MI));
    let gateway = d.container("can-gateway").unwrap();
    assert_eq!(gateway.config.network, NetworkMode::Host);
    assert_eq!(gateway.config.log.driver, LogDriver::None);
}

// ---------------------------------------------------------------------------
// 7. No input is expensive: limits, bounded problem lists, linear checks.
// ---------------------------------------------------------------------------

use super::limits::{Limits, MAX_LISTED};
use super::parse_bytes;
use super::values::MAX_PORT_BINDINGS;

/// `n` components `c0`, `c1`, … each with `config`, as one document.
fn many(n: usize, config: impl Fn(usize) -> Vec<(String, String)>) -> String {
    let components: Vec<String> = (0..n)
        .map(|i| {
            let config = config(i);
            let pairs: Vec<(&str, &str)> = config
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            component(&format!("c{i}"), &pairs)
        })
        .collect();
    doc(&components.join(","))
}

fn kv(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

fn with_limits(max_components: usize, max_depth: usize) -> Options {
    Options {
        limits: Limits {
            max_components,
            max_depth,
        },
        ..Options::default()
    }
}

/// `depth` nested arrays holding the number 1.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// What every answer must be, whatever the input: a bounded list of
/// non-empty lines, cut exactly at the bound with an exact count.
#[track_caller]
fn assert_well_formed_answer(verdict: &Result<Accepted, Rejection>) {
    let lines_ok = |lines: &[Diagnostic], what: &str| {
        assert!(lines.len() <= MAX_LISTED + 1, "{} {what}", lines.len());
        for line in lines {
            assert!(!line.message.trim().is_empty(), "an empty {what}: {line:?}");
            assert!(!line.to_string().trim().is_empty(), "an empty {what}");
        }
    };
    match verdict {
        Ok(a) => lines_ok(&a.warnings, "warning"),
        Err(r) => {
            lines_ok(&r.errors, "error");
            lines_ok(&r.warnings, "warning");
            assert!(r.count >= 1, "a rejection without a problem");
            assert_eq!(r.errors.len(), r.count.min(MAX_LISTED + 1), "{r}");
            if r.count > MAX_LISTED {
                let more = r.count - MAX_LISTED;
                let last = &r.errors[MAX_LISTED];
                assert_eq!(last.path, "");
                assert_eq!(
                    last.message,
                    format!(
                        "and {more} more problem{}",
                        if more == 1 { "" } else { "s" }
                    )
                );
            }
        }
    }
}

#[test]
fn ten_thousand_components_on_one_host_port_list_a_hundred_problems_and_count_the_rest() {
    let text = many(10_000, |_| vec![kv("port", "8080:80")]);
    let r = reject(&text);
    assert_eq!(r.count, 9_999);
    assert_eq!(r.errors.len(), MAX_LISTED + 1);
    assert_eq!(r.errors[0].path, at(1, "c1", "port"));
    assert!(
        r.errors[0]
            .message
            .contains("also bound by component \"c0\""),
        "{}",
        r.errors[0]
    );
    assert_eq!(r.errors[MAX_LISTED].to_string(), "and 9899 more problems");
    assert!(r.to_string().starts_with("9999 problems\n"), "{r}");
    assert_well_formed_answer(&Err(r));
}

#[test]
fn ten_thousand_valid_components_with_a_dependency_chain_are_accepted() {
    let text = many(10_000, |i| {
        let mut c = vec![kv("port", format!("{}:80", 10_000 + i))];
        if i > 0 {
            c.push(kv("dependsOn", format!("c{}", i - 1)));
        }
        c
    });
    assert_eq!(accept(&text).desired.containers.len(), 10_000);
}

#[test]
fn a_ring_of_ten_thousand_dependencies_is_one_cycle() {
    let n = 10_000;
    let r = reject(&many(n, |i| {
        vec![kv("dependsOn", format!("c{}", (i + 1) % n))]
    }));
    assert_eq!(r.count, 1, "{r}");
    assert_eq!(r.errors[0].path, at(0, "c0", "dependsOn"));
    assert!(r.errors[0]
        .message
        .starts_with("forms a cycle: c0 -> c1 -> c2 -> "));
    assert!(r.errors[0].message.ends_with(" -> c9999 -> c0"));
}

#[test]
fn two_separate_dependency_cycles_are_reported_once_each_in_document_order() {
    let r = reject(&doc(&[
        component("a", &[("dependsOn", "b")]),
        component("x", &[("dependsOn", "y")]),
        component("b", &[("dependsOn", "a")]),
        component("y", &[("dependsOn", "x")]),
    ]
    .join(",")));
    let messages: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            format!("{}: forms a cycle: a -> b -> a", at(0, "a", "dependsOn")),
            format!("{}: forms a cycle: x -> y -> x", at(1, "x", "dependsOn")),
        ]
    );
}

#[test]
fn a_component_clashing_with_two_earlier_ones_names_the_first_holder() {
    let r = reject(&doc(&[
        component("lo1", &[("port", "127.0.0.1:8080:80")]),
        component("lo2", &[("port", "127.0.0.2:8080:80")]),
        component("any", &[("port", "8080:80")]),
    ]
    .join(",")));
    assert_only_error(
        &r,
        &at(2, "any", "port"),
        &["also bound by component \"lo1\""],
    );
}

#[test]
fn a_component_clashing_with_two_earlier_components_on_two_ports_is_told_about_each() {
    let r = reject(&doc(&[
        component("web", &[("port", "8080:80")]),
        component("api", &[("port", "9090:80")]),
        component("both", &[("port", "8080:80"), ("port", "9090:81")]),
    ]
    .join(",")));
    assert_eq!(r.count, 2, "{r}");
    assert!(r.errors[0].message.contains("\"web\""), "{r}");
    assert!(r.errors[1].message.contains("\"api\""), "{r}");
}

#[test]
fn a_host_port_range_clashing_with_a_later_single_port_is_refused() {
    let r = reject(&doc(&[
        component("range", &[("port", "8000-8100:80")]),
        component("one", &[("port", "8050:80")]),
    ]
    .join(",")));
    assert_only_error(
        &r,
        &at(1, "one", "port"),
        &["host port 8050/tcp", "also bound by component \"range\""],
    );
}

#[test]
fn a_full_port_range_is_within_the_documents_bound() {
    assert_eq!(
        web(&[("port", "1-65535:1-65535")]).config.ports.len(),
        65_535
    );
}

#[test]
fn a_port_range_twice_in_one_component_is_harmless() {
    let spec = web(&[
        ("port", "8000-8999:8000-8999"),
        ("port", "8000-8999:8000-8999"),
    ]);
    assert_eq!(spec.config.ports.len(), 1000);
}

#[test]
fn port_bindings_beyond_the_documents_bound_are_refused_naming_it() {
    let r = web_rejection(&[
        ("port", "1-65535:1-65535"),
        ("port", "1-65535:1-65535/udp"),
        ("port", "not a port"),
    ]);
    assert_only_error(
        &r,
        &web_at("port"),
        &[
            "\"1-65535:1-65535/udp\"",
            "131070 port bindings",
            &format!("at most {MAX_PORT_BINDINGS}"),
        ],
    );
}

#[test]
fn more_components_than_the_limit_are_refused_naming_the_limit() {
    let text = many(4, |_| vec![kv("image", "nginx:1")]);
    let r = parse(&text, &with_limits(3, 64)).unwrap_err();
    assert_eq!(r.errors.len(), 1, "{r}");
    assert_eq!(
        r.errors[0].to_string(),
        "domains[0].components: 4 components; at most 3 (limits.max_components)"
    );
}

#[test]
fn as_many_components_as_the_limit_are_accepted() {
    let text = many(3, |_| vec![kv("image", "nginx:1")]);
    assert!(parse(&text, &with_limits(3, 64)).is_ok());
}

#[test]
fn the_default_component_limit_is_ten_thousand() {
    let r = reject(&many(10_001, |_| vec![]));
    assert_only_error(
        &r,
        "domains[0].components",
        &["10001 components; at most 10000 (limits.max_components)"],
    );
}

#[test]
fn nesting_deeper_than_the_limit_is_refused_naming_the_limit_and_position() {
    let text = format!(r#"{{"activityId":"a","payload":{{"x":{}}}}}"#, nested(100));
    let r = reject(&text);
    assert_only_error(
        &r,
        "document",
        &[
            "more than 64 levels deep",
            "(line 1, column 96)",
            "at most 64 (limits.max_depth)",
        ],
    );
}

#[test]
fn nesting_as_deep_as_the_limit_is_left_to_the_other_checks() {
    let at_limit = format!(r#"{{"activityId":"a","payload":{{"x":{}}}}}"#, nested(18));
    let r = parse(&at_limit, &with_limits(10, 20)).unwrap_err();
    assert_only_error(&r, "domains", &["has no \"containers\" domain"]);
    assert_warned(&r.warnings, "document", "payload.x");
}

#[test]
fn the_deepest_depth_limit_answers_before_serde_jsons_own() {
    let at_limit = parse(&nested(127), &with_limits(10, 127)).unwrap_err();
    assert!(
        !at_limit.errors[0].message.contains("recursion limit"),
        "{at_limit}"
    );
    let past = parse(&nested(128), &with_limits(10, 127)).unwrap_err();
    assert!(
        past.errors[0].message.contains("(limits.max_depth)"),
        "{past}"
    );
}

#[test]
fn brackets_inside_strings_are_not_nesting() {
    let deep_text = "[".repeat(1000);
    let text = doc(&component("web", &[("cmd", &deep_text)]));
    assert_eq!(accept(&text).desired.containers.len(), 1);
}

#[test]
fn a_byte_order_mark_is_refused_naming_it() {
    let text = format!("\u{feff}{}", doc(&component("web", &[])));
    assert_only_error(&reject(&text), "document", &["byte order mark"]);
}

#[test]
fn bytes_that_are_not_utf8_are_refused_naming_the_first_bad_byte() {
    let mut bytes = b"{\"activityId\": \"a\",\n \"payload\": \"".to_vec();
    bytes.extend([0xff, b'"', b'}']);
    let r = parse_bytes(&bytes, &Options::default()).unwrap_err();
    assert_only_error(
        &r,
        "document",
        &["is not UTF-8", "byte 0xff", "(line 2, column 14)"],
    );
}

#[test]
fn utf8_bytes_parse_as_their_text_does() {
    let text = doc(&component("web", &[]));
    assert_eq!(
        parse_bytes(text.as_bytes(), &Options::default())
            .unwrap()
            .desired,
        accept(&text).desired
    );
}

#[test]
fn a_key_repeated_many_times_quotes_an_excerpt_of_the_first_value() {
    let first = format!("/{}", "a".repeat(100_000));
    let mut config = vec![("workdir", first.as_str())];
    config.extend(std::iter::repeat_n(("workdir", "/b"), 1000));
    let r = web_rejection(&config);
    assert_eq!(r.count, 1000);
    for e in r.listed() {
        assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());
    }
}

#[test]
fn a_long_component_id_is_cut_in_paths() {
    let id = "a".repeat(100_000);
    let mut config = vec![("image", "nginx:1")];
    config.extend(std::iter::repeat_n(("cpus", "many"), 200));
    let r = reject(&doc(&component(&id, &config)));
    assert_eq!(r.count, 200);
    for e in r.listed() {
        assert!(e.path.len() < 200, "{} bytes", e.path.len());
        assert!(e.path.contains("aaaa…)"), "{}", e.path);
    }
}

#[test]
fn a_megabyte_long_unknown_key_is_refused_without_a_suggestion() {
    let key = "x".repeat(1 << 20);
    let r = web_rejection(&[(&key, "1")]);
    assert_eq!(r.count, 1);
    assert!(r.errors[0]
        .message
        .contains("is not a known key; see the schema"));
}

#[test]
fn warnings_are_bounded_like_errors() {
    let a = accept(&many(150, |_| vec![kv("status", "running")]));
    assert_eq!(a.warnings.len(), MAX_LISTED + 1);
    assert_eq!(a.warnings[MAX_LISTED].to_string(), "and 50 more warnings");
}

#[test]
fn one_problem_past_the_bound_is_counted_as_one_more_problem() {
    let r = reject(&many(MAX_LISTED + 1, |_| vec![kv("privileged", "YES")]));
    assert_eq!(r.errors[MAX_LISTED].to_string(), "and 1 more problem");
    assert_eq!(r.listed().len(), MAX_LISTED);
}

#[test]
fn exactly_the_bound_of_problems_has_no_counting_line() {
    let r = reject(&many(MAX_LISTED, |_| vec![kv("privileged", "YES")]));
    assert_eq!((r.errors.len(), r.count), (MAX_LISTED, MAX_LISTED));
    assert_eq!(r.listed().len(), MAX_LISTED);
}

/// The depth scan runs before serde_json and must neither underflow on
/// closers nor be fooled by escapes: serde_json still has the last word.
#[test]
fn unbalanced_closing_brackets_are_not_json() {
    assert_only_error(&reject("]]]}}}"), "document", &["is not valid JSON"]);
}

#[test]
fn a_lone_surrogate_escape_is_not_json() {
    let text = doc(&component("web", &[("cmd", "x")])).replace("\"x\"", "\"\\ud800\"");
    assert_only_error(&reject(&text), "document", &["is not valid JSON"]);
}

/// Regression: serde reads a JSON array into a struct field by field, so
/// `"payload": [[], [{"id": "containers", ...}]]` was accepted as a valid
/// document (found by the malformed corpus).
#[test]
fn a_struct_written_as_a_positional_array_is_refused_not_read_field_by_field() {
    let cases = [
        (json!(["a", null, {"domains": []}]), "document"),
        (
            json!({"activityId": "a", "payload": [[], [{"id": "containers", "components": []}]]}),
            "payload",
        ),
        (
            json!({"activityId": "a", "payload": {"domains": [["containers", [], []]]}}),
            "payload.domains[0]",
        ),
        (
            json!({"activityId": "a", "payload": {"domains": [
                {"id": "containers", "components": [["web", "1", []]]}
            ]}}),
            "payload.domains[0].components[0]",
        ),
        (
            json!({"activityId": "a", "payload": {"domains": [
                {"id": "containers", "components": [{"id": "web", "config": [["image", "nginx"]]}]}
            ]}}),
            "payload.domains[0].components[0].config[0]",
        ),
        (
            json!({"activityId": "a", "payload": {"domains": [
                {"id": "containers", "config": [["systemContainers", "a"]], "components": []}
            ]}}),
            "payload.domains[0].config[0]",
        ),
        (
            json!({"activityId": "a", "payload": {"baselines": [["app", []]], "domains": [
                {"id": "containers", "components": []}
            ]}}),
            "payload.baselines[0]",
        ),
    ];
    for (doc, path) in cases {
        assert_only_error(
            &reject(&doc.to_string()),
            path,
            &["is a JSON array where an object belongs"],
        );
    }
}

/// Regression: a value's control characters reached the terminal raw, so a
/// component id could carry an ANSI escape sequence into `berth validate`'s
/// output and the agent's logs.
#[test]
fn control_characters_of_a_value_are_escaped_in_messages() {
    let r = reject(&doc(&component("\u{1b}[2Jweb\u{0}", &[])));
    for e in &r.errors {
        let line = e.to_string();
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }
    assert!(
        r.errors[0].to_string().contains("\\u{1b}[2Jweb\\u{0}"),
        "{r}"
    );
}

mod robustness {
    //! The property behind the malformed corpus and the fuzz target
    //! (fuzz/fuzz_targets/documents.rs): whatever the input, parsing and
    //! validating answers, with a bounded list of non-empty lines.

    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    const WORDS: &[&str] = &[
        "activityId",
        "payload",
        "domains",
        "components",
        "config",
        "key",
        "value",
        "id",
        "version",
        "baselines",
        "title",
        "timestamp",
        "containers",
        "desiredState",
        "systemContainers",
        "image",
        "port",
        "env",
        "dependsOn",
        "network",
        "mount",
        "device",
        "host",
        "privileged",
        "memory",
        "restartPolicy",
    ];

    const VALUES: &[&str] = &[
        "containers",
        "containers:web",
        "web",
        "8080:80",
        "localhost:8080:80",
        "1-65535:1-65535",
        "[::1]:80:80/udp",
        "/a:/b:ro",
        "/dev/null",
        "host",
        "container:web",
        "YES",
        "512M",
        "-1",
        "",
        " ",
        "\u{0}",
        "é",
    ];

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(WORDS).prop_map(str::to_string),
            1 => "[a-zA-Z_:]{0,12}",
        ]
    }

    fn value_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(VALUES).prop_map(str::to_string),
            1 => any::<String>(),
        ]
    }

    /// Any JSON, biased towards the words and values of a document.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            value_text().prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                prop::collection::btree_map(word(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Text made of JSON's tokens in any order, most of it not JSON.
    fn token_soup() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            prop::sample::select(
                &[
                    "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "\\ud800", "null",
                    "1e999", "-0", "\u{feff}", "\n"
                ][..]
            )
            .prop_map(str::to_string),
            word().prop_map(|w| format!("\"{w}\"")),
            value_text().prop_map(|v| format!("{v:?}")),
        ];
        prop::collection::vec(token, 0..64).prop_map(|t| t.concat())
    }

    /// One change to a valid document.
    #[derive(Debug, Clone)]
    enum Mutation {
        /// Replace the node at a (seeded) position with any JSON.
        Replace(usize, Value),
        /// Remove the node at a position from its parent.
        Remove(usize),
        /// Repeat an array element many times.
        Repeat(usize, usize),
        /// Put a document value where a string was.
        Retext(usize, String),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), json_value()).prop_map(|(p, v)| Mutation::Replace(p, v)),
            any::<usize>().prop_map(Mutation::Remove),
            (any::<usize>(), 2..300usize).prop_map(|(p, n)| Mutation::Repeat(p, n)),
            (any::<usize>(), value_text()).prop_map(|(p, v)| Mutation::Retext(p, v)),
        ]
    }

    /// Every node's JSON pointer, parents before children.
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{at}/{i}");
                    out.push(p.clone());
                    pointers(item, p, out);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                    out.push(p.clone());
                    pointers(item, p, out);
                }
            }
            _ => {}
        }
    }

    fn apply(doc: &mut Value, m: &Mutation) {
        let mut all = Vec::new();
        pointers(doc, String::new(), &mut all);
        if all.is_empty() {
            return;
        }
        let pick = |seed: usize| all[seed % all.len()].clone();
        match m {
            Mutation::Replace(seed, with) => {
                if let Some(node) = doc.pointer_mut(&pick(*seed)) {
                    *node = with.clone();
                }
            }
            Mutation::Retext(seed, text) => {
                if let Some(node) = doc.pointer_mut(&pick(*seed)) {
                    if node.is_string() {
                        *node = Value::from(text.clone());
                    }
                }
            }
            Mutation::Remove(seed) => {
                let p = pick(*seed);
                let (parent, last) = p.rsplit_once('/').unwrap_or(("", ""));
                match doc.pointer_mut(parent) {
                    Some(Value::Object(map)) => {
                        map.remove(&last.replace("~1", "/").replace("~0", "~"));
                    }
                    Some(Value::Array(items)) => {
                        if let Ok(i) = last.parse::<usize>() {
                            if i < items.len() {
                                items.remove(i);
                            }
                        }
                    }
                    _ => {}
                }
            }
            Mutation::Repeat(seed, times) => {
                if let Some(Value::Array(items)) = doc.pointer_mut(&pick(*seed)) {
                    if let Some(first) = items.first().cloned() {
                        items.extend(std::iter::repeat_n(first, *times));
                    }
                }
            }
        }
    }

    /// A shipped example with some changes, as text.
    fn mutated_document() -> impl Strategy<Value = String> {
        (0..EXAMPLES.len(), prop::collection::vec(mutation(), 1..6)).prop_map(|(e, ms)| {
            let mut doc: Value = serde_json::from_str(EXAMPLES[e].1).expect("example is JSON");
            for m in &ms {
                apply(&mut doc, m);
            }
            doc.to_string()
        })
    }

    /// A shipped example's bytes with a cut, an insertion or a flipped byte.
    fn damaged_bytes() -> impl Strategy<Value = Vec<u8>> {
        (
            0..EXAMPLES.len(),
            any::<usize>(),
            prop::collection::vec(any::<u8>(), 0..8),
            0..3u8,
        )
            .prop_map(|(e, at, bytes, how)| {
                let mut text = EXAMPLES[e].1.as_bytes().to_vec();
                let at = at % (text.len() + 1);
                match how {
                    0 => text.truncate(at),
                    1 => {
                        text.splice(at..at, bytes);
                    }
                    _ => {
                        if let (Some(b), Some(x)) = (text.get_mut(at), bytes.first()) {
                            *b ^= x | 1;
                        }
                    }
                }
                text
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn any_json_is_answered_with_bounded_non_empty_lines(v in json_value()) {
            assert_well_formed_answer(&parse(&v.to_string(), &Options::default()));
            let wrapped = json!({"activityId": "p", "payload": v});
            assert_well_formed_answer(&parse(&wrapped.to_string(), &Options::default()));
        }

        #[test]
        fn token_soup_is_answered_with_bounded_non_empty_lines(text in token_soup()) {
            assert_well_formed_answer(&parse(&text, &Options::default()));
            assert_well_formed_answer(&parse(&text, &with_limits(1, 8)));
        }

        #[test]
        fn mutated_documents_are_answered_with_bounded_non_empty_lines(text in mutated_document()) {
            assert_well_formed_answer(&parse(&text, &Options::default()));
            assert_well_formed_answer(&parse(&text, &with_limits(2, 8)));
        }

        #[test]
        fn damaged_bytes_are_answered_with_bounded_non_empty_lines(bytes in damaged_bytes()) {
            assert_well_formed_answer(&parse_bytes(&bytes, &Options::default()));
        }
    }
}

// ---------------------------------------------------------------------------
// Hooks (issue 22).
// ---------------------------------------------------------------------------

const HOOK_IMAGE: (&str, &str) = ("image", "127.0.0.1:5000/app:1");

#[test]
fn hook_keys_are_read_into_the_rollout() {
    let spec = web(&[
        HOOK_IMAGE,
        ("preStart", "echo pre >> /data/log"),
        ("postStart", "wget -q localhost:8080/health"),
        ("onRollback", "restore /data"),
        ("migrations", "/migrations/"),
        ("hookTimeout", "90s"),
    ]);
    let h = &spec.rollout.hooks;
    assert_eq!(h.pre_start.as_deref(), Some("echo pre >> /data/log"));
    assert_eq!(
        h.post_start.as_deref(),
        Some("wget -q localhost:8080/health")
    );
    assert_eq!(h.on_rollback.as_deref(), Some("restore /data"));
    assert_eq!(h.migrations.as_deref(), Some("/migrations"));
    assert_eq!(h.timeout(), Duration::from_secs(90));
}

#[test]
fn hook_timeout_defaults_to_five_minutes() {
    let spec = web(&[HOOK_IMAGE, ("preStart", "true")]);
    assert_eq!(spec.rollout.hooks.timeout(), Duration::from_secs(300));
}

#[test]
fn hooks_are_not_part_of_the_spec_hash() {
    assert_eq!(
        hash(&[HOOK_IMAGE]),
        hash(&[HOOK_IMAGE, ("preStart", "true"), ("migrations", "/m")])
    );
}

#[test]
fn an_empty_hook_command_is_refused() {
    assert_web_refuses(&[HOOK_IMAGE, ("preStart", "  ")], "preStart", &["is empty"]);
}

// Regression (issue 22): a postStart on a job failed whenever the job had
// already exited, since exec needs a running container.
#[test]
fn post_start_on_a_job_is_refused_naming_the_way_out() {
    assert_web_refuses(
        &[
            HOOK_IMAGE,
            ("restartPolicy", "no"),
            ("postStart", "echo done"),
        ],
        "postStart",
        &["job", "preStart"],
    );
}

#[test]
fn post_start_on_a_service_that_restarts_is_accepted() {
    assert!(web_warnings(&[
        HOOK_IMAGE,
        ("restartPolicy", "always"),
        ("postStart", "echo up")
    ])
    .is_empty());
}

#[test]
fn a_relative_migrations_directory_is_refused() {
    assert_web_refuses(
        &[HOOK_IMAGE, ("migrations", "migrations")],
        "migrations",
        &["absolute"],
    );
}

#[test]
fn a_hook_timeout_out_of_bounds_is_refused_naming_the_bound() {
    assert_web_refuses(
        &[HOOK_IMAGE, ("hookTimeout", "25h")],
        "hookTimeout",
        &["24h"],
    );
    assert_web_refuses(
        &[HOOK_IMAGE, ("hookTimeout", "500ms")],
        "hookTimeout",
        &["at least 1s"],
    );
}

#[test]
fn on_rollback_without_anything_to_undo_is_accepted_with_a_warning() {
    assert_warned(
        &web_warnings(&[HOOK_IMAGE, ("onRollback", "restore")]),
        &web_at("onRollback"),
        "never runs",
    );
}

#[test]
fn hook_timeout_without_a_hook_is_accepted_with_a_warning() {
    assert_warned(
        &web_warnings(&[HOOK_IMAGE, ("hookTimeout", "1m")]),
        &web_at("hookTimeout"),
        "has no effect",
    );
}
