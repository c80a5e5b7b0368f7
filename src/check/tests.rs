use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;

/// An in-memory registry: tag -> (digest, config) per repository, and a
/// count of tag-list requests.
#[derive(Default)]
struct FakeRegistry {
    tags: Mutex<BTreeMap<String, BTreeMap<String, Manifest>>>,
    digests: Mutex<BTreeMap<String, Manifest>>,
    down: bool,
    tag_lists: AtomicUsize,
}

fn config(env: &[(&str, &str)]) -> ImageConfig {
    ImageConfig {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

impl FakeRegistry {
    fn push(&self, repo: &str, tag: &str, digest: &str, c: ImageConfig) {
        let m = Manifest {
            digest: digest.into(),
            config: c,
        };
        self.tags
            .lock()
            .unwrap()
            .entry(repo.into())
            .or_default()
            .insert(tag.into(), m.clone());
        self.digests.lock().unwrap().insert(digest.into(), m);
    }
}

impl Registry for FakeRegistry {
    async fn tags(&self, image: &ImageRef) -> Result<Vec<String>, RegistryError> {
        self.tag_lists.fetch_add(1, Ordering::SeqCst);
        if self.down {
            return Err(RegistryError::Unreachable("connection refused".into()));
        }
        self.tags
            .lock()
            .unwrap()
            .get(&image.name())
            .map(|t| t.keys().cloned().collect())
            .ok_or_else(|| RegistryError::NotFound(image.to_string()))
    }

    async fn manifest(&self, image: &ImageRef) -> Result<Manifest, RegistryError> {
        if self.down {
            return Err(RegistryError::Unreachable("connection refused".into()));
        }
        if let Some(d) = &image.digest {
            return self
                .digests
                .lock()
                .unwrap()
                .get(d)
                .cloned()
                .ok_or_else(|| RegistryError::NotFound(image.to_string()));
        }
        self.tags
            .lock()
            .unwrap()
            .get(&image.name())
            .and_then(|t| t.get(image.tag.as_deref().unwrap_or("latest")).cloned())
            .ok_or_else(|| RegistryError::NotFound(image.to_string()))
    }
}

const REPO: &str = "reg.example/app";

fn target(name: &str, tag: &str, digest: &str) -> Target {
    Target {
        name: name.into(),
        component: Some(name.into()),
        image: Some(ImageRef::parse(&format!("{REPO}:{tag}")).unwrap()),
        digest: Some(digest.into()),
        local_config: ImageConfig::default(),
    }
}

fn check(reg: &FakeRegistry, targets: Vec<Target>, any_major: bool) -> Vec<Finding> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(run(
        reg,
        targets,
        &Options {
            any_major,
            redactor: Redactor::default(),
        },
    ))
}

fn released() -> FakeRegistry {
    let reg = FakeRegistry::default();
    reg.push(REPO, "1.0.0", "sha256:a", config(&[("MODE", "a")]));
    reg.push(
        REPO,
        "1.1.0",
        "sha256:b",
        config(&[
            ("MODE", "b"),
            ("NEW_FLAG", "on"),
            ("API_TOKEN", "t0ps3cret"),
        ]),
    );
    reg.push(REPO, "2.0.0", "sha256:c", config(&[]));
    reg.push(REPO, "latest", "sha256:c", config(&[]));
    reg
}

#[test]
fn a_newer_minor_is_the_candidate_and_a_newer_major_only_with_any_major() {
    let reg = released();
    let f = &check(&reg, vec![target("app", "1.0.0", "sha256:a")], false)[0];
    assert_eq!(f.status, Status::UpgradeAvailable);
    let c = f.candidate.as_ref().unwrap();
    assert_eq!(
        (c.reference.as_str(), c.digest.as_deref()),
        ("reg.example/app:1.1.0", Some("sha256:b"))
    );
    let f = &check(&reg, vec![target("app", "1.0.0", "sha256:a")], true)[0];
    assert_eq!(
        f.candidate.as_ref().unwrap().reference,
        "reg.example/app:2.0.0"
    );
}

#[test]
fn the_drift_names_added_and_changed_env_and_hides_secret_values() {
    let reg = released();
    let f = &check(&reg, vec![target("app", "1.0.0", "sha256:a")], false)[0];
    let d = f.drift.as_ref().unwrap();
    let added: Vec<(&str, &str)> = d
        .env_added
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(added, [("API_TOKEN", "<redacted>"), ("NEW_FLAG", "on")]);
    assert_eq!(d.env_changed[0].name, "MODE");
    assert!(!serde_json::to_string(f).unwrap().contains("t0ps3cret"));
}

#[test]
fn the_newest_version_is_up_to_date() {
    let reg = released();
    let f = &check(&reg, vec![target("app", "2.0.0", "sha256:c")], true)[0];
    assert_eq!((f.status, f.candidate.is_none()), (Status::UpToDate, true));
}

#[test]
fn a_tag_on_another_digest_is_tag_moved_with_the_new_digest_as_candidate() {
    let reg = released();
    let f = &check(&reg, vec![target("app", "1.0.0", "sha256:old")], false)[0];
    assert_eq!(f.status, Status::TagMoved);
    assert_eq!(
        f.candidate.as_ref().unwrap().digest.as_deref(),
        Some("sha256:a")
    );
}

#[test]
fn a_deleted_tag_is_not_found() {
    let reg = released();
    let f = &check(&reg, vec![target("app", "0.9.0", "sha256:z")], false)[0];
    assert_eq!(f.status, Status::NotFound);
}

#[test]
fn an_unreachable_registry_is_unknown_with_the_reason() {
    let reg = FakeRegistry {
        down: true,
        ..Default::default()
    };
    let f = &check(&reg, vec![target("app", "1.0.0", "sha256:a")], false)[0];
    assert_eq!(f.status, Status::Unknown);
    assert!(
        f.reason.as_deref().unwrap().contains("connection refused"),
        "{f:?}"
    );
}

#[test]
fn a_tag_that_is_not_semver_is_unknown_unless_it_moved() {
    let reg = released();
    let f = &check(&reg, vec![target("app", "latest", "sha256:c")], false)[0];
    assert_eq!(f.status, Status::Unknown);
    assert!(
        f.reason.as_deref().unwrap().contains("not a semver"),
        "{f:?}"
    );
    let f = &check(&reg, vec![target("app", "latest", "sha256:a")], false)[0];
    assert_eq!(f.status, Status::TagMoved);
}

#[test]
fn a_local_image_is_not_registry_sourced() {
    let reg = released();
    let mut t = target("app", "1.0.0", "sha256:a");
    t.digest = None;
    let f = &check(&reg, vec![t], false)[0];
    assert_eq!(f.status, Status::NotRegistrySourced);
}

#[test]
fn one_tag_list_per_repository_per_run() {
    let reg = released();
    let targets = (0..5)
        .map(|i| target(&format!("app{i}"), "1.0.0", "sha256:a"))
        .collect();
    let findings = check(&reg, targets, false);
    assert_eq!(findings.len(), 5);
    assert_eq!(findings[3].name, "app3");
    assert_eq!(reg.tag_lists.load(Ordering::SeqCst), 1);
}

#[test]
fn pre_releases_and_non_versions_are_never_candidates() {
    let tags: Vec<String> = ["1.0.0", "1.2.0-rc.1", "latest", "v1.1.0", "1.1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(pick_candidate("1.0.0", &tags, false), Ok(Some("v1.1.0")));
    assert!(pick_candidate("main", &tags, false).is_err());
}

#[test]
fn drift_covers_ports_volumes_user_and_entrypoint() {
    let a = ImageConfig::default();
    let b = ImageConfig {
        exposed_ports: ["80/tcp".to_string()].into(),
        volumes: ["/data".to_string()].into(),
        user: "app".into(),
        entrypoint: vec!["/run".into(), "--password".into(), "hunter2".into()],
        ..Default::default()
    };
    let d = drift(&a, &b, &Redactor::default());
    assert_eq!((d.ports_added.len(), d.volumes_added.len()), (1, 1));
    assert_eq!(d.user.as_ref().unwrap().to, "app");
    assert!(!format!("{d:?}").contains("hunter2"));
    assert!(drift(&a, &a, &Redactor::default()).is_empty());
}

#[test]
fn write_candidates_pins_the_candidate_by_digest_and_leaves_the_rest() {
    let reg = released();
    let findings = check(&reg, vec![target("app", "1.0.0", "sha256:a")], false);
    let doc = r#"{"activityId":"a1","payload":{"domains":[{"id":"containers","components":[
        {"id":"app","version":"1.0.0","config":[{"key":"image","value":"reg.example/app:1.0.0"},{"key":"env","value":"A=1"}]},
        {"id":"other","version":"1","config":[{"key":"image","value":"x:1"}]}]}]}}"#;
    let (text, changed) = write_candidates(doc, &findings, "check-1").unwrap();
    assert_eq!(changed, 1);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let app = &v["payload"]["domains"][0]["components"][0];
    assert_eq!(app["config"][0]["value"], "reg.example/app:1.1.0@sha256:b");
    assert_eq!(app["version"], "1.1.0");
    assert_eq!(
        v["payload"]["domains"][0]["components"][1]["config"][0]["value"],
        "x:1"
    );
    assert_eq!(v["activityId"], "check-1");
}
