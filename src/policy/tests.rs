//! Policy specification: every rule refusing and allowing, pattern and path
//! normalisation, the env baseline, and the shape of a refusal.

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::observe;
use crate::runtime::{ContainerDetails, ImageDetails};
use crate::test_support::desired;

const SERVICE: &str = "127.0.0.1:5000/berth-test/service:1";
const DIGEST: &str = "sha256:0123456789012345678901234567890123456789012345678901234567890123";

/// A host with symbolic links (`from` -> absolute `to`), resolved
/// component by component as the kernel does.
#[derive(Default)]
struct FakeHost {
    links: BTreeMap<String, String>,
}

impl FakeHost {
    fn with(links: &[(&str, &str)]) -> Self {
        Self {
            links: links
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }
}

impl HostPaths for FakeHost {
    fn resolve(&self, path: &str) -> String {
        let mut out = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            out.push('/');
            out.push_str(part);
            // Bounded: a link cycle stops after a few hops.
            for _ in 0..8 {
                match self.links.get(&out) {
                    Some(to) => out = to.clone(),
                    None => break,
                }
            }
        }
        if out.is_empty() {
            "/".into()
        } else {
            out
        }
    }
}

fn policy(toml_text: &str) -> Policy {
    let config: PolicyConfig = toml::from_str(toml_text).expect("policy parses");
    config.compile().expect("policy compiles")
}

fn config_error(toml_text: &str) -> String {
    let config: PolicyConfig = toml::from_str(toml_text).expect("policy parses");
    config.compile().expect_err("policy is refused").to_string()
}

fn one(config: &[(&str, &str)]) -> DesiredState {
    let mut all = vec![("image", SERVICE)];
    all.extend_from_slice(config);
    desired("policy-test", &[("web", &all)])
}

fn check_on(p: &Policy, d: &DesiredState, host: &FakeHost) -> Result<(), Refusal> {
    p.check(d, &EnvBaseline::none(), &[], host)
}

fn check(p: &Policy, d: &DesiredState) -> Result<(), Refusal> {
    check_on(p, d, &FakeHost::default())
}

#[track_caller]
fn refused(p: &Policy, d: &DesiredState) -> Vec<String> {
    match check(p, d) {
        Ok(()) => panic!("expected a refusal"),
        Err(r) => r.lines(),
    }
}

#[track_caller]
fn allowed(p: &Policy, d: &DesiredState) {
    if let Err(r) = check(p, d) {
        panic!("expected the document to pass: {r}");
    }
}

fn image_allowed(patterns: &[&str], image: &str) -> bool {
    let list: Vec<String> = patterns.iter().map(|p| format!("{p:?}")).collect();
    let p = policy(&format!("allowed_images = [{}]", list.join(", ")));
    let d = desired("policy-test", &[("web", &[("image", image)])]);
    check(&p, &d).is_ok()
}

// --- defaults ---------------------------------------------------------------

#[test]
fn the_default_policy_allows_everything_kanto_allows() {
    let p = Policy::default();
    assert!(p.is_permissive());
    assert!(!p.needs_env_baseline());
    let d = desired(
        "permissive",
        &[
            (
                "web",
                &[
                    ("image", "anything.example/x/y:z"),
                    ("privileged", "true"),
                    ("network", "host"),
                    ("mount", "/:/host"),
                    ("mount", "/var/run/docker.sock:/var/run/docker.sock"),
                    ("user", "root"),
                    ("env", "A=1"),
                ],
            ),
            (
                "dev",
                &[("image", SERVICE), ("device", "/dev/sda:/dev/sda")],
            ),
        ],
    );
    let base = desired("before", &[("web", &[("image", SERVICE), ("env", "A=2")])]);
    assert_eq!(
        p.check(
            &d,
            &EnvBaseline::from_desired(&base),
            &[],
            &FakeHost::default()
        ),
        Ok(())
    );
}

#[test]
fn an_empty_policy_table_is_the_default() {
    assert_eq!(
        toml::from_str::<PolicyConfig>("").unwrap(),
        PolicyConfig::default()
    );
}

#[test]
fn any_restriction_makes_the_policy_not_permissive() {
    for t in [
        "allow_privileged = false",
        "allow_host_network = false",
        "require_digest = true",
        "allowed_images = [\"**\"]",
        "allowed_devices = []",
        "allowed_mount_sources = [\"/data\"]",
        "allow_env_change = []",
        "allowed_users = [\"*\"]",
    ] {
        assert!(!policy(t).is_permissive(), "{t}");
    }
}

#[test]
fn an_unknown_policy_option_is_refused() {
    let e = toml::from_str::<PolicyConfig>("allow_priviledged = false").unwrap_err();
    assert!(e.to_string().contains("allow_priviledged"), "{e}");
}

// --- refusal shape ----------------------------------------------------------

#[test]
fn a_refusal_names_the_component_the_key_the_value_and_the_rule() {
    let p = policy("allow_privileged = false");
    assert_eq!(
        refused(&p, &one(&[("privileged", "true")])),
        ["container \"web\": key \"privileged\" value \"true\" is refused by policy allow_privileged = false"]
    );
}

#[test]
fn thousands_of_violations_list_the_first_100_then_count_the_rest() {
    let p = policy("allow_privileged = false");
    let names: Vec<String> = (0..1500).map(|i| format!("c{i}")).collect();
    let config: &[(&str, &str)] = &[("image", SERVICE), ("privileged", "true")];
    let components: Vec<(&str, &[(&str, &str)])> =
        names.iter().map(|n| (n.as_str(), config)).collect();
    let d = desired("many", &components);
    let r = check(&p, &d).unwrap_err();
    assert_eq!((r.violations.len(), r.total), (100, 1500));
    let lines = r.lines();
    assert_eq!(lines.len(), 101);
    assert_eq!(lines[100], "and 1400 more violations");
    assert!(r.to_string().ends_with("; and 1400 more violations"));
}

#[test]
fn control_characters_in_a_value_are_escaped_in_the_message() {
    let p = policy("allowed_mount_sources = [\"/data\"]");
    let lines = refused(&p, &one(&[("mount", "/etc/\u{1b}[31m:/x")]));
    assert!(lines[0].contains("\\u{1b}[31m"), "{lines:?}");
    assert!(!lines[0].contains('\u{1b}'));
}

// --- allowed_images ---------------------------------------------------------

#[test]
fn an_image_outside_allowed_images_is_refused() {
    let p = policy("allowed_images = [\"127.0.0.1:5000/acme/*\"]");
    assert_eq!(
        refused(&p, &one(&[])),
        ["container \"web\": key \"image\" value \"127.0.0.1:5000/berth-test/service:1\" is refused by policy allowed_images = [\"127.0.0.1:5000/acme/*\"]: matches none of the patterns"]
    );
}

#[test]
fn an_image_inside_allowed_images_passes() {
    allowed(
        &policy("allowed_images = [\"127.0.0.1:5000/berth-test/*\"]"),
        &one(&[]),
    );
}

#[test]
fn a_pattern_without_a_tag_matches_any_tag_and_any_digest() {
    let pat = ["127.0.0.1:5000/acme/*"];
    assert!(image_allowed(&pat, "127.0.0.1:5000/acme/app:1"));
    assert!(image_allowed(&pat, "127.0.0.1:5000/acme/app"));
    assert!(image_allowed(
        &pat,
        &format!("127.0.0.1:5000/acme/app@{DIGEST}")
    ));
    assert!(image_allowed(
        &pat,
        &format!("127.0.0.1:5000/acme/app:1@{DIGEST}")
    ));
}

#[test]
fn a_star_does_not_cross_a_slash_and_a_double_star_does() {
    assert!(!image_allowed(
        &["127.0.0.1:5000/acme/*"],
        "127.0.0.1:5000/acme/team/app:1"
    ));
    assert!(image_allowed(
        &["127.0.0.1:5000/acme/**"],
        "127.0.0.1:5000/acme/team/app:1"
    ));
    assert!(!image_allowed(
        &["127.0.0.1:5000/*"],
        "127.0.0.1:5000/acme/app:1"
    ));
}

#[test]
fn a_pattern_does_not_match_a_longer_name_or_another_registry() {
    let pat = ["127.0.0.1:5000/acme/app"];
    assert!(image_allowed(&pat, "127.0.0.1:5000/acme/app:7"));
    assert!(!image_allowed(&pat, "127.0.0.1:5000/acme/app2:7"));
    assert!(!image_allowed(&pat, "127.0.0.1:5001/acme/app:7"));
    assert!(!image_allowed(&pat, "127.0.0.1:5000/acme/app/x:7"));
}

#[test]
fn a_tag_pattern_matches_only_those_tags() {
    let pat = ["ghcr.io/acme/*:v*"];
    assert!(image_allowed(&pat, "ghcr.io/acme/app:v1.2"));
    assert!(image_allowed(
        &pat,
        &format!("ghcr.io/acme/app:v1@{DIGEST}")
    ));
    assert!(!image_allowed(&pat, "ghcr.io/acme/app:latest"));
    assert!(!image_allowed(&pat, &format!("ghcr.io/acme/app@{DIGEST}")));
}

#[test]
fn a_digest_pattern_matches_only_that_digest() {
    let pat = [format!("ghcr.io/acme/app@{DIGEST}")];
    let pat: Vec<&str> = pat.iter().map(String::as_str).collect();
    assert!(image_allowed(&pat, &format!("ghcr.io/acme/app@{DIGEST}")));
    assert!(!image_allowed(&pat, "ghcr.io/acme/app:1"));
}

#[test]
fn short_patterns_are_normalised_like_references() {
    assert!(image_allowed(
        &["busybox"],
        "docker.io/library/busybox:latest"
    ));
    assert!(image_allowed(&["busybox:1.36"], "busybox:1.36"));
    assert!(!image_allowed(&["busybox:1.36"], "busybox"));
    assert!(image_allowed(&["acme/*"], "acme/app:1"));
    assert!(image_allowed(
        &["index.docker.io/acme/*"],
        "docker.io/acme/app:1"
    ));
    assert!(!image_allowed(&["busybox"], "127.0.0.1:5000/busybox:1"));
}

#[test]
fn a_double_star_alone_allows_every_image_and_a_wildcard_registry_is_kept() {
    assert!(image_allowed(&["**"], "127.0.0.1:5000/a/b/c:1"));
    assert!(image_allowed(&["**"], "busybox"));
    assert!(image_allowed(&["*/acme/*"], "ghcr.io/acme/app:1"));
    assert!(!image_allowed(&["*/acme/*"], "ghcr.io/other/app:1"));
}

#[test]
fn an_empty_allowed_images_allows_no_image() {
    assert!(!image_allowed(&[], SERVICE));
}

#[test]
fn a_bad_image_glob_is_a_config_error_naming_its_index() {
    let e = config_error("allowed_images = [\"a.io/x\", \"b.io/y\", \"c.io/[z\"]");
    assert!(
        e.starts_with("policy.allowed_images[2]: \"c.io/[z\" is not a valid pattern"),
        "{e}"
    );
    let e = config_error("allowed_images = [\"\"]");
    assert_eq!(e, "policy.allowed_images[0]: the pattern is empty");
    let e = config_error("allowed_images = [\"a.io/x:\"]");
    assert!(
        e.starts_with("policy.allowed_images[0]: \"a.io/x:\" is not an image pattern"),
        "{e}"
    );
}

// --- require_digest ---------------------------------------------------------

#[test]
fn a_long_value_is_quoted_in_full() {
    let image = format!("127.0.0.1:5000/berth-test/service:1@{DIGEST}");
    let p = policy("allowed_images = [\"127.0.0.1:5000/acme/*\"]");
    let lines = refused(&p, &desired("p", &[("web", &[("image", image.as_str())])]));
    assert!(
        lines[0].contains(&format!("value \"{image}\"")),
        "{lines:?}"
    );
}

#[test]
fn a_tag_without_a_digest_is_refused_when_digests_are_required() {
    let lines = refused(&policy("require_digest = true"), &one(&[]));
    assert_eq!(
        lines,
        ["container \"web\": key \"image\" value \"127.0.0.1:5000/berth-test/service:1\" is refused by policy require_digest = true: the image is not pinned by digest (write name@sha256:…)"]
    );
}

#[test]
fn an_image_pinned_by_digest_passes_when_digests_are_required() {
    let image = format!("127.0.0.1:5000/berth-test/service@{DIGEST}");
    let d = desired("p", &[("web", &[("image", image.as_str())])]);
    allowed(&policy("require_digest = true"), &d);
    let image = format!("127.0.0.1:5000/berth-test/service:1@{DIGEST}");
    let d = desired("p", &[("web", &[("image", image.as_str())])]);
    allowed(&policy("require_digest = true"), &d);
}

// --- allow_privileged -------------------------------------------------------

#[test]
fn an_unprivileged_container_passes_when_privileged_is_refused() {
    allowed(
        &policy("allow_privileged = false"),
        &one(&[("privileged", "false")]),
    );
    allowed(&policy("allow_privileged = false"), &one(&[]));
}

// --- allow_host_network and system containers -------------------------------

#[test]
fn the_host_network_is_refused_when_not_allowed() {
    assert_eq!(
        refused(&policy("allow_host_network = false"), &one(&[("network", "host")])),
        ["container \"web\": key \"network\" value \"host\" is refused by policy allow_host_network = false"]
    );
}

#[test]
fn other_networks_pass_when_the_host_network_is_refused() {
    let p = policy("allow_host_network = false");
    for n in ["bridge", "none", "my-net", "container:db"] {
        allowed(&p, &one(&[("network", n)]));
    }
}

#[test]
fn joining_a_configured_system_containers_network_is_refused_whatever_the_policy() {
    let p = Policy::default();
    let d = one(&[("network", "container:agent")]);
    let r = p
        .check(
            &d,
            &EnvBaseline::none(),
            &["agent".into()],
            &FakeHost::default(),
        )
        .unwrap_err();
    assert_eq!(
        r.lines(),
        ["container \"web\": key \"network\" value \"container:agent\" is refused by policy system_containers: \"agent\" is a system container, whose network no document may join (whatever the policy)"]
    );
}

#[test]
fn joining_a_system_container_the_document_itself_names_is_refused() {
    let mut d = one(&[("network", "container:connector")]);
    d.system_containers = Some(vec!["connector".into()]);
    assert!(check(&Policy::default(), &d).is_err());
}

#[test]
fn joining_a_system_container_by_an_id_prefix_is_refused() {
    let id = "3f4e5d6c7b8a90123456789abcdef0123456789abcdef0123456789abcdef012";
    let system = ["agent".to_string(), id.to_string()];
    for target in ["3f4e5d", "3F4E5D6C7B8A", id] {
        let d = one(&[("network", &format!("container:{target}"))]);
        assert!(
            Policy::default()
                .check(&d, &EnvBaseline::none(), &system, &FakeHost::default())
                .is_err(),
            "{target}"
        );
    }
    let d = one(&[("network", "container:3f4e5e")]);
    assert_eq!(
        Policy::default().check(&d, &EnvBaseline::none(), &system, &FakeHost::default()),
        Ok(())
    );
}

#[test]
fn joining_an_ordinary_containers_network_passes() {
    let d = one(&[("network", "container:db")]);
    assert_eq!(
        Policy::default().check(
            &d,
            &EnvBaseline::none(),
            &["agent".into()],
            &FakeHost::default()
        ),
        Ok(())
    );
}

// --- allowed_devices --------------------------------------------------------

#[test]
fn a_device_outside_allowed_devices_is_refused() {
    let p = policy("allowed_devices = [\"/dev/ttyUSB*\"]");
    assert_eq!(
        refused(&p, &one(&[("device", "/dev/sda:/dev/sda")])),
        ["container \"web\": key \"device\" value \"/dev/sda:/dev/sda:rwm\" is refused by policy allowed_devices = [\"/dev/ttyUSB*\"]: matches none of the patterns"]
    );
}

#[test]
fn a_device_inside_allowed_devices_passes() {
    let p = policy("allowed_devices = [\"/dev/ttyUSB*\", \"/dev/serial/by-id/*\"]");
    allowed(&p, &one(&[("device", "/dev/ttyUSB0:/dev/ttyUSB0")]));
    allowed(&p, &one(&[("device", "/dev/serial/by-id/usb-1:/dev/gps")]));
}

#[test]
fn a_device_star_does_not_cross_a_slash_and_dot_dot_is_refused() {
    let p = policy("allowed_devices = [\"/dev/tty*\"]");
    assert!(check(&p, &one(&[("device", "/dev/tty/../sda:/dev/x")])).is_err());
    assert!(check(&p, &one(&[("device", "/dev/ttyX/../../etc:/dev/x")])).is_err());
    let p = policy("allowed_devices = [\"/dev/*\"]");
    assert!(check(&p, &one(&[("device", "/dev/bus/usb/001:/dev/x")])).is_err());
}

#[test]
fn a_relative_device_pattern_is_a_config_error() {
    assert_eq!(
        config_error("allowed_devices = [\"/dev/ttyUSB0\", \"ttyUSB*\"]"),
        "policy.allowed_devices[1]: \"ttyUSB*\" is not an absolute path pattern"
    );
}

// --- allowed_mount_sources --------------------------------------------------

fn mount(p: &Policy, source: &str, host: &FakeHost) -> Result<(), Vec<String>> {
    check_on(p, &one(&[("mount", &format!("{source}:/in"))]), host).map_err(|r| r.lines())
}

fn data_policy() -> Policy {
    policy("allowed_mount_sources = [\"/data\", \"/var/lib/berth-data/\"]")
}

#[test]
fn a_mount_under_an_allowed_source_passes() {
    let h = FakeHost::default();
    for s in [
        "/data",
        "/data/x",
        "/data/x/y",
        "/var/lib/berth-data/app",
        "/data/./x",
        "//data//x/",
    ] {
        assert_eq!(mount(&data_policy(), s, &h), Ok(()), "{s}");
    }
}

#[test]
fn a_mount_outside_the_allowed_sources_is_refused() {
    let h = FakeHost::default();
    for s in ["/etc", "/database", "/dat", "/var/lib"] {
        let e = mount(&data_policy(), s, &h).unwrap_err();
        assert!(
            e[0].ends_with("is refused by policy allowed_mount_sources = [\"/data\", \"/var/lib/berth-data\"]: the source is under none of the allowed paths"),
            "{s}: {e:?}"
        );
    }
}

#[test]
fn a_mount_source_with_dot_dot_is_refused_even_when_it_stays_inside() {
    let h = FakeHost::default();
    for s in ["/data/../etc", "/data/x/../y", "/data/.."] {
        let e = mount(&data_policy(), s, &h).unwrap_err();
        assert!(e[0].ends_with("the source contains \"..\""), "{s}: {e:?}");
    }
}

#[test]
fn a_symlink_escaping_an_allowed_source_is_refused() {
    let h = FakeHost::with(&[("/data/etc", "/etc")]);
    let e = mount(&data_policy(), "/data/etc/shadow", &h).unwrap_err();
    assert!(
        e[0].ends_with("the source resolves (through a symbolic link) to /etc/shadow, which is under none of the allowed paths"),
        "{e:?}"
    );
}

#[test]
fn a_symlink_staying_inside_the_allowed_sources_passes() {
    let h = FakeHost::with(&[
        ("/data/current", "/data/v2"),
        ("/data/lib", "/var/lib/berth-data/x"),
    ]);
    assert_eq!(mount(&data_policy(), "/data/current/db", &h), Ok(()));
    assert_eq!(mount(&data_policy(), "/data/lib", &h), Ok(()));
}

#[test]
fn an_allowed_prefix_that_is_itself_a_symlink_is_compared_resolved() {
    let p = policy("allowed_mount_sources = [\"/var/run/app\"]");
    let h = FakeHost::with(&[("/var/run", "/run")]);
    assert_eq!(mount(&p, "/var/run/app/sock", &h), Ok(()));
}

#[test]
fn the_docker_socket_is_refused_unless_listed_by_its_exact_path() {
    let h = FakeHost::with(&[("/var/run", "/run")]);
    let p = policy("allowed_mount_sources = [\"/var/run\", \"/run\"]");
    for s in ["/var/run/docker.sock", "/run/docker.sock"] {
        let e = mount(&p, s, &h).unwrap_err();
        assert!(e[0].contains("the Docker socket"), "{s}: {e:?}");
    }
    let p = policy("allowed_mount_sources = [\"/data\", \"/var/run/docker.sock\"]");
    assert_eq!(mount(&p, "/var/run/docker.sock", &h), Ok(()));
}

#[test]
fn a_path_that_resolves_to_the_docker_socket_is_the_socket() {
    let h = FakeHost::with(&[("/data/d.sock", "/run/docker.sock")]);
    let e = mount(&data_policy(), "/data/d.sock", &h).unwrap_err();
    assert!(
        e[0].contains("the source is the Docker socket (it resolves to /run/docker.sock)"),
        "{e:?}"
    );
    // Listing the socket does not make another path to it acceptable.
    let p = policy("allowed_mount_sources = [\"/data\", \"/run/docker.sock\"]");
    assert!(mount(&p, "/data/d.sock", &h).is_err());
}

#[test]
fn an_ancestor_of_the_docker_socket_is_refused_unless_the_socket_is_listed() {
    let h = FakeHost::with(&[("/var/run", "/run")]);
    let p = policy("allowed_mount_sources = [\"/\"]");
    for s in ["/", "/run", "/var/run", "/var"] {
        let e = mount(&p, s, &h).unwrap_err();
        assert!(e[0].ends_with("the source contains the Docker socket; list the socket by its exact path to allow that"), "{s}: {e:?}");
    }
    assert_eq!(mount(&p, "/etc", &h), Ok(()));
    let p = policy("allowed_mount_sources = [\"/\", \"/run/docker.sock\"]");
    assert_eq!(mount(&p, "/run", &h), Ok(()));
}

#[test]
fn a_mount_source_entry_with_dot_dot_or_a_glob_is_a_config_error() {
    assert_eq!(
        config_error("allowed_mount_sources = [\"/data/../etc\"]"),
        "policy.allowed_mount_sources[0]: \"/data/../etc\" contains \"..\""
    );
    assert_eq!(
        config_error("allowed_mount_sources = [\"/data\", \"data\"]"),
        "policy.allowed_mount_sources[1]: \"data\" is not an absolute path"
    );
    assert!(config_error("allowed_mount_sources = [\"/data/*\"]").contains("is a path prefix"));
}

#[test]
fn path_normalisation_is_component_wise() {
    assert_eq!(paths::normalise("//data//x/./"), Ok("/data/x".into()));
    assert_eq!(paths::normalise("/"), Ok("/".into()));
    assert_eq!(paths::normalise("/data/"), Ok("/data".into()));
    assert!(paths::normalise("/data/../etc").is_err());
    assert!(paths::normalise("data").is_err());
    assert!(paths::is_under("/data/x", "/data"));
    assert!(paths::is_under("/data", "/data"));
    assert!(!paths::is_under("/database", "/data"));
    assert!(paths::is_under("/anything", "/"));
}

#[test]
fn the_real_host_resolves_the_existing_part_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::canonicalize(dir.path()).unwrap();
    std::os::unix::fs::symlink("/etc", real.join("link")).unwrap();
    let link = format!("{}/link/not-there/x", real.display());
    assert_eq!(RealHostPaths.resolve(&link), "/etc/not-there/x");
    let plain = format!("{}/missing/y", real.display());
    assert_eq!(RealHostPaths.resolve(&plain), plain);
}

// --- allow_env_change -------------------------------------------------------

fn before(env: &[&str]) -> EnvBaseline {
    let mut config = vec![("image", SERVICE)];
    config.extend(env.iter().map(|e| ("env", *e)));
    EnvBaseline::from_desired(&desired("before", &[("web", &config)]))
}

fn env_check(p: &Policy, baseline: &EnvBaseline, env: &[&str]) -> Result<(), Vec<String>> {
    let config: Vec<(&str, &str)> = env.iter().map(|e| ("env", *e)).collect();
    p.check(&one(&config), baseline, &[], &FakeHost::default())
        .map_err(|r| r.lines())
}

#[test]
fn changing_a_protected_components_env_is_refused_naming_variables_not_values() {
    let p = policy("allow_env_change = [\"dev-*\"]");
    let e = env_check(
        &p,
        &before(&["URL=http://a", "TOKEN=old-secret"]),
        &["URL=http://evil", "TOKEN=old-secret", "NEW=new-secret"],
    )
    .unwrap_err();
    assert_eq!(
        e,
        ["container \"web\": key \"env\" value \"NEW,URL\" is refused by policy allow_env_change = [\"dev-*\"]: changes these variables relative to what the component has now (values not shown)"]
    );
    assert!(!e[0].contains("secret") && !e[0].contains("evil"));
}

#[test]
fn removing_a_protected_components_variable_is_a_change() {
    let p = policy("allow_env_change = []");
    let e = env_check(&p, &before(&["URL=http://a", "KEY=k"]), &["URL=http://a"]).unwrap_err();
    assert!(e[0].contains("value \"KEY\""), "{e:?}");
}

#[test]
fn an_unchanged_env_of_a_protected_component_passes() {
    let p = policy("allow_env_change = []");
    assert!(p.needs_env_baseline());
    assert_eq!(
        env_check(&p, &before(&["B=2", "A=1"]), &["A=1", "B=2"]),
        Ok(())
    );
}

#[test]
fn a_component_matching_allow_env_change_may_change_its_env() {
    let p = policy("allow_env_change = [\"w*\"]");
    assert_eq!(env_check(&p, &before(&["A=1"]), &["A=2"]), Ok(()));
}

#[test]
fn a_new_component_may_set_any_env() {
    let p = policy("allow_env_change = []");
    assert_eq!(env_check(&p, &EnvBaseline::none(), &["A=2"]), Ok(()));
}

fn running(env: &[&str], image_env: &[&str]) -> EnvBaseline {
    let details = ContainerDetails {
        id: "c1".into(),
        name: "web".into(),
        image_id: "sha256:img".into(),
        env: env.iter().map(|e| e.to_string()).collect(),
        ..Default::default()
    };
    let observed = observe::Observed {
        containers: vec![observe::container(details, &HashMap::new())],
        ..Default::default()
    };
    let images = BTreeMap::from([(
        "sha256:img".to_string(),
        ImageDetails {
            id: "sha256:img".into(),
            env: image_env.iter().map(|e| e.to_string()).collect(),
            ..Default::default()
        },
    )]);
    EnvBaseline::from_observed(&observed, &images)
}

#[test]
fn image_default_env_of_a_running_container_is_not_a_change() {
    let p = policy("allow_env_change = []");
    let b = running(&["PATH=/bin", "URL=http://a"], &["PATH=/bin"]);
    assert_eq!(env_check(&p, &b, &["URL=http://a"]), Ok(()));
    // Setting the image's own value explicitly is no change either.
    assert_eq!(env_check(&p, &b, &["URL=http://a", "PATH=/bin"]), Ok(()));
}

#[test]
fn a_component_left_under_its_old_temporary_name_is_not_new() {
    let details = ContainerDetails {
        id: "c1".into(),
        name: "web.berth-old".into(),
        env: vec!["URL=http://a".into()],
        ..Default::default()
    };
    let observed = observe::Observed {
        containers: vec![observe::container(details, &HashMap::new())],
        ..Default::default()
    };
    let b = EnvBaseline::from_observed(&observed, &BTreeMap::new());
    assert!(b.knows("web"));
    let p = policy("allow_env_change = []");
    assert!(env_check(&p, &b, &["URL=http://evil"]).is_err());
}

#[test]
fn a_running_containers_env_changed_or_dropped_is_a_change() {
    let p = policy("allow_env_change = []");
    let b = running(&["PATH=/bin", "URL=http://a", "KEY=k"], &["PATH=/bin"]);
    let e = env_check(&p, &b, &["URL=http://b", "PATH"]).unwrap_err();
    assert!(e[0].contains("value \"KEY,PATH,URL\""), "{e:?}");
}

// --- allowed_users ----------------------------------------------------------

fn users() -> Policy {
    policy("allowed_users = [\"1000\", \"app*\", \"65534:65534\"]")
}

#[test]
fn root_in_every_spelling_is_refused_when_not_allowed() {
    for u in ["root", "0", "00", "0:0", "root:root", "root:1000", "0:1000"] {
        let e = refused(&users(), &one(&[("user", u)]));
        assert!(
            e[0].starts_with(&format!("container \"web\": key \"user\" value \"{u}\" is refused by policy allowed_users = [\"1000\", \"app*\", \"65534:65534\"]")),
            "{u}: {e:?}"
        );
    }
}

#[test]
fn an_unset_user_is_checked_as_root() {
    let e = refused(&users(), &one(&[]));
    assert!(
        e[0].contains("value \"(unset)\"") && e[0].ends_with("checked as root"),
        "{e:?}"
    );
    allowed(&policy("allowed_users = [\"root\"]"), &one(&[]));
    allowed(
        &policy("allowed_users = [\"0\"]"),
        &one(&[("user", "root")]),
    );
}

#[test]
fn allowed_users_in_every_spelling_pass() {
    for u in [
        "1000",
        "01000",
        "1000:1000",
        "1000:0",
        "app",
        "appuser:app",
        "65534:65534",
    ] {
        allowed(&users(), &one(&[("user", u)]));
    }
}

#[test]
fn a_user_group_pattern_pins_the_group() {
    for u in ["65534", "65534:0", "nobody"] {
        assert!(check(&users(), &one(&[("user", u)])).is_err(), "{u}");
    }
}

#[test]
fn a_blank_user_pattern_is_a_config_error() {
    assert!(config_error("allowed_users = [\"a b\"]").starts_with("policy.allowed_users[0]:"));
}

// --- named volumes and host ports --------------------------------------------

#[test]
fn a_named_volume_outside_allowed_volumes_is_refused_naming_it() {
    let p = policy("allowed_volumes = [\"web-*\"]");
    allowed(&p, &one(&[("volume", "web-data:/data")]));
    let e = refused(&p, &one(&[("volume", "db-data:/data")]));
    assert_eq!(
        e,
        ["container \"web\": key \"volume\" value \"db-data:/data\" is refused by policy allowed_volumes = [\"web-*\"]: matches none of the patterns"]
    );
}

#[test]
fn an_empty_allowed_volumes_allows_no_named_volume() {
    assert!(check(&policy("allowed_volumes = []"), &one(&[("volume", "x:/x")])).is_err());
    allowed(&policy("allowed_volumes = []"), &one(&[]));
}

#[test]
fn a_host_port_outside_allowed_host_ports_is_refused_naming_it() {
    let p = policy("allowed_host_ports = [\"8000-8999\", \"443\"]");
    allowed(&p, &one(&[("port", "8080:80")]));
    allowed(&p, &one(&[("port", "443:443")]));
    let e = refused(&p, &one(&[("port", "22:22")]));
    assert!(
        e[0].starts_with("container \"web\": key \"port\" value \"22:22/tcp\"")
            && e[0].ends_with("allowed_host_ports = [\"8000-8999\", \"443\"]: the host port is in none of the ranges"),
        "{e:?}"
    );
}

#[test]
fn a_host_port_range_the_engine_picks_from_must_lie_inside_one_allowed_range() {
    let p = policy("allowed_host_ports = [\"8000-8099\", \"8100-8199\"]");
    allowed(&p, &one(&[("port", "8000-8010:80")]));
    let e = refused(&p, &one(&[("port", "8090-8110:80")]));
    assert!(
        e[0].ends_with("the host port range is not inside one of the ranges"),
        "{e:?}"
    );
}

#[test]
fn each_port_of_a_mapped_range_may_fall_in_another_allowed_range() {
    let p = policy("allowed_host_ports = [\"8000-8099\", \"8100-8199\"]");
    allowed(&p, &one(&[("port", "8090-8110:90-110")]));
}

#[test]
fn a_bad_host_port_entry_is_a_config_error_naming_it() {
    for (entry, problem) in [
        ("0", "is not a host port or range"),
        ("http", "is not a host port or range"),
        ("9000-8000", "ends before it starts"),
        ("70000", "is not a host port or range"),
    ] {
        let e = config_error(&format!("allowed_host_ports = [\"80\", \"{entry}\"]"));
        assert!(
            e.starts_with(&format!("policy.allowed_host_ports[1]: \"{entry}\" "))
                && e.contains(problem),
            "{entry}: {e}"
        );
    }
}

#[test]
fn volume_and_port_rules_make_a_policy_not_permissive() {
    assert!(!policy("allowed_volumes = [\"*\"]").is_permissive());
    assert!(!policy("allowed_host_ports = [\"1-65535\"]").is_permissive());
}

// --- explain ----------------------------------------------------------------

#[test]
fn explain_lists_every_rule_per_component_allowed_or_refused() {
    let p = policy("allow_privileged = false\nallowed_images = [\"127.0.0.1:5000/**\"]");
    let d = one(&[("privileged", "true"), ("mount", "/data:/d")]);
    let decisions = p.explain(&d, &EnvBaseline::none(), &[], &FakeHost::default());
    let keys: Vec<(&str, Verdict)> = decisions.iter().map(|d| (d.key, d.verdict)).collect();
    assert_eq!(
        keys,
        [
            ("image", Verdict::Allowed),
            ("image", Verdict::Allowed),
            ("privileged", Verdict::Refused),
            ("network", Verdict::Allowed),
            ("mount", Verdict::Allowed),
            ("env", Verdict::Allowed),
            ("user", Verdict::Allowed),
        ]
    );
    assert_eq!(decisions[0].reason, "matches \"127.0.0.1:5000/**\"");
    assert!(decisions.iter().all(|d| d.component == "web"));
}

#[test]
fn the_example_configuration_policy_passes_the_demo_documents() {
    let config = crate::config::Config::parse(include_str!("../../examples/demo/config.toml"))
        .expect("demo config");
    let p = config.policy.compile().unwrap();
    assert!(!p.is_permissive());
    let text = include_str!("../../examples/demo/desired-state.json");
    let d = crate::spec::parse(text, &Default::default())
        .unwrap()
        .desired;
    assert_eq!(
        p.check(
            &d,
            &EnvBaseline::none(),
            &config.system_containers,
            &FakeHost::default()
        ),
        Ok(())
    );
}

// --- in the agent's configuration --------------------------------------------

#[test]
fn a_bad_pattern_in_the_configuration_file_is_refused_naming_the_entry() {
    let e = crate::config::Config::parse(
        "[policy]\nallowed_images = [\"a.io/x\", \"b.io/y\", \"c.io/[z\"]",
    )
    .unwrap_err()
    .0;
    assert!(
        e.starts_with("policy.allowed_images[2]: \"c.io/[z\" is not a valid pattern"),
        "{e}"
    );
}

#[test]
fn the_example_configuration_has_a_strict_policy() {
    let config = crate::config::Config::parse(include_str!("../../examples/config.toml")).unwrap();
    let p = config.policy.compile().unwrap();
    assert!(!p.is_permissive());
    assert!(!config.policy.allow_privileged && !config.policy.allow_host_network);
}

#[test]
fn print_config_shows_the_policy_and_reads_back() {
    let config = crate::config::Config::parse(include_str!("../../examples/config.toml")).unwrap();
    let text = config.redacted_toml();
    assert!(text.contains("[policy]"), "{text}");
    assert_eq!(
        crate::config::Config::parse(&text).unwrap().policy,
        config.policy
    );
    let defaults = crate::config::Config::default().redacted_toml();
    assert_eq!(
        crate::config::Config::parse(&defaults).unwrap().policy,
        PolicyConfig::default()
    );
}
