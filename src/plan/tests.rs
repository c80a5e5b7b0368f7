//! Planner specification: every action and every kind of reason, against the
//! in-memory engine.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;
use crate::labels;
use crate::observe;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::{ContainerDetails, CreateRequest, ImageDetails, Runtime, Status};
use crate::spec::{self, DesiredState};
use crate::test_support::{block_on, desired};

const SERVICE_1: &str = "127.0.0.1:5000/berth-test/service:1";
const SERVICE_2: &str = "127.0.0.1:5000/berth-test/service:2";

fn image(id: &str) -> ImageDetails {
    ImageDetails {
        id: format!("sha256:{id:0>64}"),
        env: vec!["PATH=/bin".into(), "IMAGE_DEFAULT=from-image".into()],
        cmd: Some(vec!["/bin/service".into()]),
        labels: BTreeMap::from([("org.example.from-image".into(), "yes".into())]),
        volumes: vec!["/data".into()],
        ..Default::default()
    }
}

/// An engine with both test images present.
fn engine() -> FakeRuntime {
    let fake = FakeRuntime::new();
    fake.add_image(SERVICE_1, image("1"));
    fake.add_image(SERVICE_2, image("2"));
    fake
}

fn doc(components: &[(&str, &[(&str, &str)])]) -> DesiredState {
    desired("plan-test", components)
}

fn with_system(mut d: DesiredState, names: &[&str]) -> DesiredState {
    d.system_containers = Some(names.iter().map(|s| s.to_string()).collect());
    d
}

/// Creates and starts every container of `desired` the way berth does.
fn apply(fake: &FakeRuntime, desired: &DesiredState) {
    block_on(async {
        for spec in &desired.containers {
            let image_id = fake
                .image(&spec.config.image.to_string())
                .await
                .unwrap()
                .map(|i| i.id);
            let request = CreateRequest {
                name: spec.name.clone(),
                config: spec.config.clone(),
                labels: labels::for_spec(spec, image_id.as_deref(), labels::DEFAULT_INSTANCE),
                extra_hosts: Vec::new(),
                inherited_volumes: Vec::new(),
                networks: Vec::new(),
            };
            fake.create(&request).await.unwrap();
            fake.start(&spec.name).await.unwrap();
        }
    });
}

fn observe(fake: &FakeRuntime, desired: &DesiredState) -> Observed {
    block_on(observe::gather_for(fake, desired)).unwrap()
}

fn plan_with(fake: &FakeRuntime, desired: &DesiredState, options: &PlanOptions) -> Plan {
    compute(desired, &observe(fake, desired), options)
}

fn plan(fake: &FakeRuntime, desired: &DesiredState) -> Plan {
    plan_with(fake, desired, &PlanOptions::default())
}

fn action(plan: &Plan, name: &str) -> Action {
    plan.entry(name)
        .unwrap_or_else(|| panic!("no entry for {name}: {plan:#?}"))
        .action
}

fn reasons(plan: &Plan, name: &str) -> Vec<String> {
    plan.entry(name)
        .map(|e| e.reasons.clone())
        .unwrap_or_default()
}

/// A container started by hand with `docker run`, not by berth.
fn by_hand(fake: &FakeRuntime, name: &str, image_ref: &str, env: &[&str]) {
    let img = block_on(fake.image(image_ref)).unwrap().unwrap();
    let mut all_env = img.env.clone();
    all_env.extend(env.iter().map(|e| e.to_string()));
    fake.add_container(ContainerDetails {
        id: format!("{name}-by-hand"),
        name: name.into(),
        image_ref: image_ref.into(),
        image_id: img.id,
        env: all_env,
        cmd: img.cmd,
        labels: img.labels,
        restart_policy: "no".into(),
        state: crate::runtime::ContainerState {
            status: Status::Running,
            ..Default::default()
        },
        ..Default::default()
    });
}

#[test]
fn absent_container_is_created() {
    let fake = engine();
    let d = doc(&[("web", &[("image", SERVICE_1)])]);
    let p = plan(&fake, &d);
    assert_eq!(action(&p, "web"), Action::Create);
    assert!(reasons(&p, "web")[0].contains("absent"));
}

#[test]
fn applied_container_is_kept() {
    let fake = engine();
    let d = doc(&[(
        "web",
        &[("image", SERVICE_1), ("env", "A=1"), ("port", "8080:80")],
    )]);
    apply(&fake, &d);
    let p = plan(&fake, &d);
    assert_eq!(action(&p, "web"), Action::Keep, "{p:#?}");
    assert!(!p.has_changes());
}

#[test]
fn env_reorder_is_keep() {
    let fake = engine();
    apply(
        &fake,
        &doc(&[(
            "web",
            &[("image", SERVICE_1), ("env", "A=1"), ("env", "B=2")],
        )]),
    );
    let reordered = doc(&[(
        "web",
        &[("image", SERVICE_1), ("env", "B=2"), ("env", "A=1")],
    )]);
    assert_eq!(action(&plan(&fake, &reordered), "web"), Action::Keep);
}

#[test]
fn image_default_env_on_a_managed_container_is_keep() {
    let fake = engine();
    let d = doc(&[("web", &[("image", SERVICE_1), ("env", "A=1")])]);
    apply(&fake, &d);
    assert!(fake
        .container("web")
        .unwrap()
        .env
        .contains(&"IMAGE_DEFAULT=from-image".to_string()));
    assert_eq!(action(&plan(&fake, &d), "web"), Action::Keep);
}

#[test]
fn image_default_env_on_an_adopted_container_is_keep() {
    let fake = engine();
    by_hand(&fake, "web", SERVICE_1, &["A=1"]);
    let d = doc(&[(
        "web",
        &[
            ("image", SERVICE_1),
            ("env", "A=1"),
            ("restartPolicy", "no"),
        ],
    )]);
    assert_eq!(
        action(&plan(&fake, &d), "web"),
        Action::Keep,
        "{:#?}",
        plan(&fake, &d)
    );
}

#[test]
fn adopted_container_is_compared_only_on_keys_the_document_sets() {
    let fake = engine();
    by_hand(&fake, "web", SERVICE_1, &[]);
    // restartPolicy differs from the default unless-stopped, but the document
    // does not set it, so it is not a difference.
    let d = doc(&[("web", &[("image", SERVICE_1)])]);
    assert_eq!(action(&plan(&fake, &d), "web"), Action::Keep);
}

#[test]
fn adopted_container_with_a_different_env_value_is_recreated() {
    let fake = engine();
    by_hand(&fake, "web", SERVICE_1, &["A=1"]);
    let d = doc(&[("web", &[("image", SERVICE_1), ("env", "A=2")])]);
    let p = plan(&fake, &d);
    assert_eq!(action(&p, "web"), Action::Recreate);
    assert!(
        reasons(&p, "web").contains(&"env A changed".to_string()),
        "{p:#?}"
    );
}

#[test]
fn env_change_is_recreate_with_a_specific_reason() {
    let fake = engine();
    apply(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("env", "FOO=1")])]),
    );
    let p = plan(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("env", "FOO=2")])]),
    );
    assert_eq!(action(&p, "web"), Action::Recreate);
    assert_eq!(reasons(&p, "web"), ["env FOO changed"]);
}

#[test]
fn removed_env_is_named() {
    let fake = engine();
    apply(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("env", "FOO=1")])]),
    );
    let p = plan(&fake, &doc(&[("web", &[("image", SERVICE_1)])]));
    assert_eq!(reasons(&p, "web"), ["env FOO removed"]);
}

#[test]
fn image_tag_change_is_recreate_with_a_short_reason() {
    let fake = engine();
    apply(&fake, &doc(&[("web", &[("image", SERVICE_1)])]));
    let p = plan(&fake, &doc(&[("web", &[("image", SERVICE_2)])]));
    assert_eq!(action(&p, "web"), Action::Recreate);
    assert_eq!(reasons(&p, "web"), [format!("image {SERVICE_1} -> :2")]);
}

#[test]
fn a_change_to_a_tag_pinned_by_digest_names_both_in_the_reason() {
    let fake = engine();
    apply(&fake, &doc(&[("web", &[("image", SERVICE_1)])]));
    let d = format!("sha256:{}", "e".repeat(64));
    let pinned = format!("{SERVICE_2}@{d}");
    let p = plan(&fake, &doc(&[("web", &[("image", pinned.as_str())])]));
    assert_eq!(reasons(&p, "web"), [format!("image {SERVICE_1} -> :2@{d}")]);
}

#[test]
fn added_port_is_recreate_with_the_port_named() {
    let fake = engine();
    apply(&fake, &doc(&[("web", &[("image", SERVICE_1)])]));
    let p = plan(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("port", "8080:80")])]),
    );
    assert_eq!(action(&p, "web"), Action::Recreate);
    assert_eq!(reasons(&p, "web"), ["port 8080:80/tcp added"]);
}

#[test]
fn recreate_carries_a_unified_diff() {
    let fake = engine();
    apply(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("env", "FOO=1")])]),
    );
    let p = plan(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("env", "FOO=2")])]),
    );
    let diff = p.entry("web").unwrap().diff.clone().unwrap();
    assert!(
        diff.contains("-env: FOO=1") && diff.contains("+env: FOO=2"),
        "{diff}"
    );
    assert!(
        !diff.contains("IMAGE_DEFAULT"),
        "image env leaked into the diff: {diff}"
    );
}

#[test]
fn memory_change_is_update_not_recreate() {
    let fake = engine();
    apply(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("memory", "64M")])]),
    );
    let p = plan(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("memory", "128M")])]),
    );
    assert_eq!(action(&p, "web"), Action::Update);
    assert_eq!(reasons(&p, "web"), ["memory 64M -> 128M (in place)"]);
}

#[test]
fn adding_a_memory_limit_is_update() {
    let fake = engine();
    apply(&fake, &doc(&[("web", &[("image", SERVICE_1)])]));
    let p = plan(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("memory", "128M")])]),
    );
    assert_eq!(action(&p, "web"), Action::Update);
}

#[test]
fn removing_a_memory_limit_needs_a_new_container() {
    let fake = engine();
    apply(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("memory", "64M")])]),
    );
    let p = plan(&fake, &doc(&[("web", &[("image", SERVICE_1)])]));
    assert_eq!(action(&p, "web"), Action::Recreate);
    assert!(reasons(&p, "web")[0].contains("memory limit 64M removed"));
}

#[test]
fn restart_policy_change_is_update_with_the_reason() {
    let fake = engine();
    apply(&fake, &doc(&[("web", &[("image", SERVICE_1)])]));
    let p = plan(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("restartPolicy", "always")])]),
    );
    assert_eq!(action(&p, "web"), Action::Update);
    assert_eq!(
        reasons(&p, "web"),
        ["restart policy unless-stopped -> always (in place)"]
    );
}

#[test]
fn update_then_plan_again_is_keep() {
    let fake = engine();
    apply(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("memory", "64M")])]),
    );
    let d = doc(&[(
        "web",
        &[
            ("image", SERVICE_1),
            ("memory", "128M"),
            ("restartPolicy", "always"),
        ],
    )]);
    block_on(fake.update("web", &d.containers[0].config)).unwrap();
    assert_eq!(
        action(&plan(&fake, &d), "web"),
        Action::Keep,
        "{:#?}",
        plan(&fake, &d)
    );
}

#[test]
fn in_place_drift_made_by_hand_is_update() {
    let fake = engine();
    let d = doc(&[("web", &[("image", SERVICE_1), ("memory", "64M")])]);
    apply(&fake, &d);
    fake.tamper("web", |c| c.memory = 256 << 20);
    assert_eq!(action(&plan(&fake, &d), "web"), Action::Update);
}

#[test]
fn stopped_container_is_started() {
    let fake = engine();
    let d = doc(&[("web", &[("image", SERVICE_1)])]);
    apply(&fake, &d);
    fake.tamper("web", |c| {
        c.state.status = Status::Exited;
        c.state.exit_code = 1;
    });
    let p = plan(&fake, &d);
    assert_eq!(action(&p, "web"), Action::Start);
    assert!(reasons(&p, "web")[0].contains("exited (code 1)"));
}

#[test]
fn one_shot_that_exited_zero_with_restart_no_is_not_started() {
    let fake = engine();
    let d = doc(&[("job", &[("image", SERVICE_1), ("restartPolicy", "no")])]);
    apply(&fake, &d);
    fake.tamper("job", |c| {
        c.state.status = Status::Exited;
        c.state.exit_code = 0;
    });
    assert_eq!(action(&plan(&fake, &d), "job"), Action::Keep);
}

#[test]
fn a_completed_job_is_kept_and_says_it_completed() {
    let fake = engine();
    let d = doc(&[("job", &[("image", SERVICE_1), ("restartPolicy", "no")])]);
    apply(&fake, &d);
    fake.tamper("job", |c| {
        c.state.status = Status::Exited;
        c.state.exit_code = 0;
    });
    let p = plan(&fake, &d);
    assert_eq!(action(&p, "job"), Action::Keep);
    assert!(reasons(&p, "job")[0].starts_with("completed"), "{p:?}");
}

#[test]
fn a_completed_job_whose_spec_changed_is_recreated() {
    let fake = engine();
    let d = doc(&[("job", &[("image", SERVICE_1), ("restartPolicy", "no")])]);
    apply(&fake, &d);
    fake.tamper("job", |c| {
        c.state.status = Status::Exited;
        c.state.exit_code = 0;
    });
    let changed = doc(&[(
        "job",
        &[
            ("image", SERVICE_1),
            ("restartPolicy", "no"),
            ("env", "RUN=2"),
        ],
    )]);
    assert_eq!(action(&plan(&fake, &changed), "job"), Action::Recreate);
}

#[test]
fn a_service_that_exited_0_is_started_again() {
    let fake = engine();
    let d = doc(&[("web", &[("image", SERVICE_1)])]);
    apply(&fake, &d);
    fake.tamper("web", |c| {
        c.state.status = Status::Exited;
        c.state.exit_code = 0;
    });
    assert_eq!(action(&plan(&fake, &d), "web"), Action::Start);
}

#[test]
fn one_shot_that_failed_is_started() {
    let fake = engine();
    let d = doc(&[("job", &[("image", SERVICE_1), ("restartPolicy", "no")])]);
    apply(&fake, &d);
    fake.tamper("job", |c| {
        c.state.status = Status::Exited;
        c.state.exit_code = 3;
    });
    assert_eq!(action(&plan(&fake, &d), "job"), Action::Start);
}

#[test]
fn paused_container_is_started() {
    let fake = engine();
    let d = doc(&[("web", &[("image", SERVICE_1)])]);
    apply(&fake, &d);
    fake.tamper("web", |c| c.state.status = Status::Paused);
    assert_eq!(action(&plan(&fake, &d), "web"), Action::Start);
}

#[test]
fn dead_container_is_recreated() {
    let fake = engine();
    let d = doc(&[("web", &[("image", SERVICE_1)])]);
    apply(&fake, &d);
    fake.tamper("web", |c| c.state.status = Status::Dead);
    assert_eq!(action(&plan(&fake, &d), "web"), Action::Recreate);
}

#[test]
fn system_container_listed_in_the_document_is_ignored() {
    let fake = engine();
    by_hand(&fake, "agent", SERVICE_1, &[]);
    let d = with_system(doc(&[("agent", &[("image", SERVICE_2)])]), &["agent"]);
    let p = plan(&fake, &d);
    assert_eq!(action(&p, "agent"), Action::Ignore);
    assert!(reasons(&p, "agent")[0].contains("system container"));
}

#[test]
fn configured_system_containers_are_ignored_when_not_desired() {
    let fake = engine();
    by_hand(&fake, "agent", SERVICE_1, &[]);
    let d = doc(&[]);
    let options = PlanOptions {
        scope: Scope::All,
        system_containers: vec!["agent".into()],
        ..Default::default()
    };
    assert_eq!(
        action(&plan_with(&fake, &d, &options), "agent"),
        Action::Ignore
    );
}

#[test]
fn an_empty_document_system_containers_cannot_remove_a_configured_one() {
    let fake = engine();
    by_hand(&fake, "agent", SERVICE_1, &[]);
    let d = with_system(doc(&[]), &[]);
    let options = PlanOptions {
        scope: Scope::All,
        system_containers: vec!["agent".into()],
        ..Default::default()
    };
    let p = plan_with(&fake, &d, &options);
    assert_eq!(action(&p, "agent"), Action::Ignore);
    assert_eq!(reasons(&p, "agent"), ["system container"]);
}

#[test]
fn document_system_containers_add_to_the_configured_list() {
    let fake = engine();
    by_hand(&fake, "agent", SERVICE_1, &[]);
    by_hand(&fake, "connector", SERVICE_1, &[]);
    let d = with_system(doc(&[]), &["connector"]);
    let options = PlanOptions {
        scope: Scope::All,
        system_containers: vec!["agent".into()],
        ..Default::default()
    };
    let p = plan_with(&fake, &d, &options);
    assert_eq!(action(&p, "agent"), Action::Ignore);
    assert_eq!(action(&p, "connector"), Action::Ignore);
}

#[test]
fn a_component_named_like_a_configured_system_container_is_left_alone_with_a_warning() {
    let fake = engine();
    by_hand(&fake, "agent", SERVICE_1, &[]);
    let d = with_system(doc(&[("agent", &[("image", SERVICE_2)])]), &[]);
    let options = PlanOptions {
        system_containers: vec!["agent".into()],
        ..Default::default()
    };
    let p = plan_with(&fake, &d, &options);
    assert_eq!(action(&p, "agent"), Action::Ignore);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.starts_with("agent: a system container; berth leaves it alone")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn unmanaged_container_absent_from_the_document_is_ignored_under_owned() {
    let fake = engine();
    by_hand(&fake, "other", SERVICE_1, &[]);
    let p = plan(&fake, &doc(&[]));
    assert_eq!(action(&p, "other"), Action::Ignore);
    assert!(reasons(&p, "other")[0].contains("not managed by berth"));
}

#[test]
fn unmanaged_container_absent_from_the_document_is_removed_under_all() {
    let fake = engine();
    by_hand(&fake, "other", SERVICE_1, &[]);
    let options = PlanOptions {
        scope: Scope::All,
        ..Default::default()
    };
    assert_eq!(
        action(&plan_with(&fake, &doc(&[]), &options), "other"),
        Action::Remove
    );
}

#[test]
fn managed_container_no_longer_desired_is_removed() {
    let fake = engine();
    apply(&fake, &doc(&[("old", &[("image", SERVICE_1)])]));
    let p = plan(&fake, &doc(&[]));
    assert_eq!(action(&p, "old"), Action::Remove);
    assert_eq!(reasons(&p, "old"), ["no longer in the desired state"]);
}

#[test]
fn moved_local_tag_is_recreate() {
    let fake = engine();
    let d = doc(&[("web", &[("image", SERVICE_1)])]);
    apply(&fake, &d);
    fake.add_image(SERVICE_1, image("1b"));
    let p = plan(&fake, &d);
    assert_eq!(action(&p, "web"), Action::Recreate);
    assert!(
        reasons(&p, "web")[0].contains("now points to a different image"),
        "{p:#?}"
    );
}

#[test]
fn registry_digest_change_with_pull_always_is_recreate() {
    let fake = engine();
    let d = doc(&[("web", &[("image", SERVICE_1), ("pullPolicy", "always")])]);
    apply(&fake, &d);
    let newer = ImageDetails {
        repo_digests: vec![format!("x@sha256:{}", "f".repeat(64))],
        ..image("9")
    };
    fake.add_registry_image(SERVICE_1, newer);
    let p = plan(&fake, &d);
    assert_eq!(action(&p, "web"), Action::Recreate);
    assert!(reasons(&p, "web")[0].contains("moved in the registry"));
}

#[test]
fn registry_digest_change_with_pull_missing_is_keep() {
    let fake = engine();
    let d = doc(&[("web", &[("image", SERVICE_1)])]);
    apply(&fake, &d);
    let newer = ImageDetails {
        repo_digests: vec![format!("x@sha256:{}", "f".repeat(64))],
        ..image("9")
    };
    fake.add_registry_image(SERVICE_1, newer);
    assert_eq!(action(&plan(&fake, &d), "web"), Action::Keep);
}

#[test]
fn depends_on_orders_actions() {
    let fake = engine();
    let d = doc(&[
        ("web", &[("image", SERVICE_1), ("dependsOn", "db")]),
        ("db", &[("image", SERVICE_1), ("dependsOn", "cache")]),
        ("cache", &[("image", SERVICE_1)]),
    ]);
    let p = plan(&fake, &d);
    let names: Vec<&str> = p.actions.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(names, ["cache", "db", "web"]);
}

#[test]
fn container_sharing_a_network_is_recreated_with_its_parent() {
    let fake = engine();
    apply(
        &fake,
        &doc(&[
            ("web", &[("image", SERVICE_1)]),
            (
                "sidecar",
                &[("image", SERVICE_1), ("network", "container:web")],
            ),
        ]),
    );
    let p = plan(
        &fake,
        &doc(&[
            ("web", &[("image", SERVICE_2)]),
            (
                "sidecar",
                &[("image", SERVICE_1), ("network", "container:web")],
            ),
        ]),
    );
    assert_eq!(action(&p, "sidecar"), Action::Recreate, "{p:#?}");
    assert!(reasons(&p, "sidecar")
        .iter()
        .any(|r| r.contains("shares the network of web")));
}

#[test]
fn older_hash_scheme_falls_back_to_fields_and_keeps_an_equal_container() {
    let fake = engine();
    let d = doc(&[("web", &[("image", SERVICE_1), ("env", "A=1")])]);
    apply(&fake, &d);
    fake.tamper("web", |c| {
        c.labels
            .insert(labels::SPEC_HASH.into(), "v0:sha256:old".into());
    });
    assert_eq!(
        action(&plan(&fake, &d), "web"),
        Action::Keep,
        "{:#?}",
        plan(&fake, &d)
    );
}

#[test]
fn older_hash_scheme_still_notices_a_real_change() {
    let fake = engine();
    apply(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("env", "A=1")])]),
    );
    fake.tamper("web", |c| {
        c.labels
            .insert(labels::SPEC_HASH.into(), "v0:sha256:old".into());
    });
    let p = plan(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("env", "A=2")])]),
    );
    assert_eq!(action(&p, "web"), Action::Recreate);
}

#[test]
fn missing_user_network_is_warned_about() {
    let fake = engine();
    let p = plan(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("network", "backend")])]),
    );
    assert!(p.warnings[0].contains("network \"backend\" does not exist"));
}

#[test]
fn summary_counts_every_kind() {
    let fake = engine();
    apply(
        &fake,
        &doc(&[
            ("keep", &[("image", SERVICE_1)]),
            ("old", &[("image", SERVICE_1)]),
        ]),
    );
    by_hand(&fake, "other", SERVICE_1, &[]);
    let p = plan(
        &fake,
        &doc(&[
            ("keep", &[("image", SERVICE_1)]),
            ("new", &[("image", SERVICE_1)]),
        ]),
    );
    assert_eq!(
        p.summary(),
        "1 to create, 0 to recreate, 0 to update in place, 1 to remove, 1 unchanged, 1 ignored"
    );
}

#[test]
fn labels_record_owned_env_keys() {
    let d = doc(&[(
        "web",
        &[("image", SERVICE_1), ("env", "A=1"), ("env", "B=2")],
    )]);
    let l = labels::for_spec(&d.containers[0], None, labels::DEFAULT_INSTANCE);
    assert_eq!(l.get(labels::ENV_KEYS).map(String::as_str), Some("A,B"));
    assert_eq!(
        l.get(labels::SPEC_HASH),
        Some(&spec::spec_hash(&d.containers[0].config))
    );
}

// ---------------------------------------------------------------------------
// Idempotence: planning against what applying a plan produces is all `keep`.
// ---------------------------------------------------------------------------

fn key_value() -> impl Strategy<Value = Vec<(String, String)>> {
    let env = "[A-Z]{1,3}=[a-z0-9]{0,4}".prop_map(|v| ("env".to_string(), v));
    let port =
        (1024u16..1100, 1u16..100).prop_map(|(h, c)| ("port".to_string(), format!("{h}:{c}")));
    let memory = (6u32..512).prop_map(|m| ("memory".to_string(), format!("{m}M")));
    let restart = prop::sample::select(vec!["no", "always", "unless-stopped", "on-failure"])
        .prop_map(|r| ("restartPolicy".to_string(), r.to_string()));
    let cmd = "[a-z]{1,5}".prop_map(|c| ("cmd".to_string(), c));
    let mount = "[a-z]{1,5}".prop_map(|p| ("mount".to_string(), format!("/srv/{p}:/mnt/{p}:ro")));
    let label = "[a-z]{1,5}".prop_map(|l| ("label".to_string(), format!("org.test.{l}=x")));
    let cpus = (1u32..40).prop_map(|c| ("cpus".to_string(), format!("0.{c:02}")));
    let health = (1u64..60).prop_map(|s| ("healthInterval".to_string(), format!("{s}s")));
    let flag = prop::sample::select(vec!["terminal", "interactive", "privileged"])
        .prop_map(|k| (k.to_string(), "true".to_string()));
    prop::collection::vec(
        prop_oneof![env, port, memory, restart, cmd, mount, label, cpus, health, flag],
        0..8,
    )
}

/// Drops entries a valid document could not hold together.
fn coherent(entries: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut seen_single = std::collections::BTreeSet::new();
    let mut env_names = std::collections::BTreeSet::new();
    let mut host_ports = std::collections::BTreeSet::new();
    let mut mounts = std::collections::BTreeSet::new();
    let mut labels_seen = std::collections::BTreeSet::new();
    entries
        .into_iter()
        .filter(|(k, v)| match k.as_str() {
            "env" => env_names.insert(v.split('=').next().unwrap_or_default().to_string()),
            "port" => host_ports.insert(v.split(':').next().unwrap_or_default().to_string()),
            "mount" => mounts.insert(v.clone()),
            "label" => labels_seen.insert(v.split('=').next().unwrap_or_default().to_string()),
            "cmd" => true,
            other => seen_single.insert(other.to_string()),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn planning_after_applying_is_all_keep(
        containers in prop::collection::vec(key_value(), 1..4),
        tags in prop::collection::vec(prop::bool::ANY, 4),
    ) {
        let fake = engine();
        let mut used_ports = std::collections::BTreeSet::new();
        let components: Vec<(String, Vec<(String, String)>)> = containers
            .into_iter()
            .enumerate()
            .map(|(i, entries)| {
                let image = if tags[i] { SERVICE_2 } else { SERVICE_1 };
                let mut config = vec![("image".to_string(), image.to_string())];
                config.extend(coherent(entries).into_iter().filter(|(k, v)| {
                    k != "port" || used_ports.insert(v.split(':').next().unwrap_or_default().to_string())
                }));
                (format!("c{i}"), config)
            })
            .collect();
        let borrowed: Vec<Vec<(&str, &str)>> = components
            .iter()
            .map(|(_, c)| c.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect())
            .collect();
        let list: Vec<(&str, &[(&str, &str)])> = components
            .iter()
            .zip(&borrowed)
            .map(|((name, _), c)| (name.as_str(), c.as_slice()))
            .collect();
        let desired = doc(&list);
        let first = plan(&fake, &desired);
        prop_assert!(first.actions.iter().all(|e| e.action == Action::Create));
        apply(&fake, &desired);
        let second = plan(&fake, &desired);
        for entry in &second.actions {
            prop_assert_eq!(entry.action, Action::Keep, "{:#?}", entry);
        }
    }
}

#[test]
fn observed_id_to_name_map_is_not_needed_for_plain_containers() {
    // Guards the helper used above: normalising without any id map works.
    let d = ContainerDetails {
        name: "x".into(),
        image_ref: SERVICE_1.into(),
        ..Default::default()
    };
    let o = observe::container(d, &HashMap::new());
    assert_eq!(o.name(), "x");
}

#[test]
fn another_instances_container_absent_from_the_document_is_ignored() {
    let fake = engine();
    apply(&fake, &doc(&[("theirs", &[("image", SERVICE_1)])]));
    let mine = PlanOptions {
        instance: "mine".into(),
        scope: Scope::All,
        ..Default::default()
    };
    let p = plan_with(&fake, &doc(&[]), &mine);
    assert_eq!(action(&p, "theirs"), Action::Ignore);
    assert!(reasons(&p, "theirs")[0].contains("another berth instance (default)"));
}

#[test]
fn another_instances_container_named_in_the_document_is_ignored() {
    let fake = engine();
    apply(&fake, &doc(&[("web", &[("image", SERVICE_1)])]));
    let mine = PlanOptions {
        instance: "mine".into(),
        ..Default::default()
    };
    let p = plan_with(&fake, &doc(&[("web", &[("image", SERVICE_2)])]), &mine);
    assert_eq!(action(&p, "web"), Action::Ignore);
}

// Issue 20: plans are printed, logged and published, so a secret that
// changed is said to have changed, never to what.
#[test]
fn plan_diff_and_reasons_never_show_a_changed_secret_env_value() {
    let fake = engine();
    apply(
        &fake,
        &doc(&[(
            "web",
            &[
                ("image", SERVICE_1),
                ("env", "DB_PASSWORD=hunter2-old"),
                ("env", "API_TOKEN=same-t0k3n"),
                ("env", "LOG_LEVEL=info"),
            ],
        )]),
    );
    let p = plan(
        &fake,
        &doc(&[(
            "web",
            &[
                ("image", SERVICE_1),
                ("env", "DB_PASSWORD=hunter2-new"),
                ("env", "API_TOKEN=same-t0k3n"),
                ("env", "LOG_LEVEL=debug"),
            ],
        )]),
    );
    let entry = p.entry("web").unwrap();
    let diff = entry.diff.clone().unwrap();
    let json = serde_json::to_string(&p).unwrap();
    for text in [&diff.to_string(), &json, &format!("{p:?}")] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("t0k3n"), "{text}");
    }
    assert!(
        diff.contains("-env: DB_PASSWORD=(sensitive value)\n")
            && diff.contains("+env: DB_PASSWORD=(sensitive value changed)"),
        "{diff}"
    );
    assert!(diff.contains(" env: API_TOKEN=(sensitive value)"), "{diff}");
    assert!(diff.contains("+env: LOG_LEVEL=debug"), "{diff}");
    assert!(
        entry
            .reasons
            .contains(&"env DB_PASSWORD changed".to_string()),
        "{:?}",
        entry.reasons
    );
}

#[test]
fn plan_reasons_and_diff_never_show_a_url_password_in_a_command() {
    let fake = engine();
    apply(
        &fake,
        &doc(&[(
            "web",
            &[
                ("image", SERVICE_1),
                ("cmd", "postgres://u:s3cr3t-old@db/x"),
            ],
        )]),
    );
    let p = plan(
        &fake,
        &doc(&[(
            "web",
            &[
                ("image", SERVICE_1),
                ("cmd", "postgres://u:s3cr3t-new@db/x"),
            ],
        )]),
    );
    let entry = p.entry("web").unwrap();
    let text = format!("{:?} {}", entry.reasons, entry.diff.clone().unwrap());
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(
        entry
            .reasons
            .contains(&"command changed (sensitive value)".to_string()),
        "{text}"
    );
    assert!(text.contains("(sensitive value changed)"), "{text}");
}

#[test]
fn configured_redact_patterns_reach_the_plan() {
    let fake = engine();
    apply(
        &fake,
        &doc(&[("web", &[("image", SERVICE_1), ("env", "SIM_PIN=1234")])]),
    );
    let desired = doc(&[("web", &[("image", SERVICE_1), ("env", "SIM_PIN=9876")])]);
    let observed = block_on(observe::gather_for(&fake, &desired)).unwrap();
    let options = PlanOptions {
        redactor: crate::redact::Redactor::new(&["*PIN*"]).unwrap(),
        ..PlanOptions::default()
    };
    let p = compute(&desired, &observed, &options);
    let diff = p.entry("web").unwrap().diff.clone().unwrap();
    assert!(!diff.contains("1234") && !diff.contains("9876"), "{diff}");
}

// Issue 22: `berth plan` (and `berth upgrade`'s plan) says which hooks
// will touch data.
#[test]
fn a_create_names_the_hooks_it_runs_in_their_order() {
    let fake = engine();
    let d = doc(&[(
        "db",
        &[
            ("image", SERVICE_1),
            ("preStart", "true"),
            ("migrations", "/migrations"),
            ("postStart", "true"),
            ("onRollback", "true"),
        ],
    )]);
    let p = plan(&fake, &d);
    assert!(
        p.actions[0].reasons.iter().any(|r| r
            == "runs preStart, then the pending migrations in /migrations, then postStart; onRollback if it rolls back"),
        "{:?}",
        p.actions[0].reasons
    );
}

#[test]
fn a_kept_container_names_no_hooks() {
    let fake = engine();
    let d = doc(&[("db", &[("image", SERVICE_1), ("preStart", "true")])]);
    apply(&fake, &d);
    let p = plan(&fake, &d);
    assert_eq!(p.actions[0].action, Action::Keep);
    assert!(
        !p.actions[0].reasons.iter().any(|r| r.contains("preStart")),
        "{:?}",
        p.actions[0].reasons
    );
}
