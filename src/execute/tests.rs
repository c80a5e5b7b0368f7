//! Executor specification against the in-memory engine.

use super::*;
use crate::feedback::{Feedback, Status, Tracker};
use crate::journal::{Effect, Intent, Journal, StateDir};
use crate::labels;
use crate::observe;
use crate::observe::Observed;
use crate::plan::{self, PlanOptions};
use crate::runtime::fake::{Call, FakeRuntime, EXIT_LABEL};
use crate::runtime::{self, Runtime, RuntimeError};
use crate::spec::DesiredState;
use crate::test_support::{block_on, desired, service_image as image};
use std::time::Duration;

const ONE: &str = "127.0.0.1:5000/berth-test/service:1";
const TWO: &str = "127.0.0.1:5000/berth-test/service:2";

/// An engine whose registry has both images; `ONE` is already local.
fn engine() -> FakeRuntime {
    let fake = FakeRuntime::new();
    fake.add_image(ONE, image("1"));
    fake.add_registry_image(ONE, image("1"));
    fake.add_registry_image(TWO, image("2"));
    fake
}

fn doc(activity: &str, components: &[(&str, &[(&str, &str)])]) -> DesiredState {
    desired(activity, components)
}

fn options() -> ExecuteOptions {
    ExecuteOptions {
        min_ready: Duration::from_millis(1),
        ..Default::default()
    }
}

struct Applied {
    outcome: Outcome,
    feedback: Vec<Feedback>,
}

impl Applied {
    fn statuses(&self) -> Vec<Status> {
        self.feedback.iter().map(|f| f.payload.status).collect()
    }
}

fn apply_with(
    fake: &FakeRuntime,
    dir: &std::path::Path,
    desired: &DesiredState,
    opts: &ExecuteOptions,
) -> Applied {
    block_on(async {
        let state = StateDir::open(dir).unwrap();
        recover(fake, &state, labels::DEFAULT_INSTANCE)
            .await
            .unwrap();
    });
    apply_as_is(fake, dir, desired, opts)
}

/// Plans and executes without running recovery first: what the planner
/// and executor do with whatever is on the engine.
fn apply_as_is(
    fake: &FakeRuntime,
    dir: &std::path::Path,
    desired: &DesiredState,
    opts: &ExecuteOptions,
) -> Applied {
    block_on(async {
        let state = StateDir::open(dir).unwrap();
        let observed = observe::gather_for(fake, desired).await.unwrap();
        let plan = plan::compute(desired, &observed, &PlanOptions::default());
        let mut tracker = Tracker::new(&desired.activity_id, "containers");
        tracker.identified(&plan);
        let mut feedback = Vec::new();
        if !plan.has_changes() {
            return Applied {
                outcome: Outcome {
                    status: Status::Completed,
                    message: None,
                    failed: Default::default(),
                    migrations: Default::default(),
                },
                feedback,
            };
        }
        let mut sink = |f: Feedback| feedback.push(f);
        let activity = Activity {
            desired,
            plan: &plan,
            observed: &observed,
        };
        let outcome = execute(fake, &state, activity, opts, &mut tracker, &mut sink)
            .await
            .unwrap();
        Applied { outcome, feedback }
    })
}

fn apply(fake: &FakeRuntime, dir: &std::path::Path, desired: &DesiredState) -> Applied {
    apply_with(fake, dir, desired, &options())
}

fn id_of(fake: &FakeRuntime, name: &str) -> String {
    fake.container(name)
        .unwrap_or_else(|| panic!("no container {name}"))
        .id
}

fn running(fake: &FakeRuntime, name: &str) -> bool {
    fake.container(name)
        .is_some_and(|c| c.state.status == runtime::Status::Running)
}

fn names(fake: &FakeRuntime) -> Vec<String> {
    let mut n: Vec<String> = block_on(fake.list())
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    n.sort();
    n
}

fn changing_calls(fake: &FakeRuntime) -> usize {
    fake.calls().len()
}

#[test]
fn a_fresh_document_creates_and_starts_every_container() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let d = doc(
        "a1",
        &[
            ("a", &[("image", ONE)]),
            ("b", &[("image", ONE)]),
            ("c", &[("image", TWO)]),
        ],
    );
    let r = apply(&fake, dir.path(), &d);
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.outcome);
    assert_eq!(names(&fake), ["a", "b", "c"]);
    assert!(["a", "b", "c"].iter().all(|n| running(&fake, n)));
    assert_eq!(r.statuses().last(), Some(&Status::Completed));
}

#[test]
fn reapplying_the_same_document_makes_no_changing_call() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let d = doc("a1", &[("a", &[("image", ONE), ("env", "X=1")])]);
    apply(&fake, dir.path(), &d);
    let before = changing_calls(&fake);
    let r = apply(&fake, dir.path(), &d);
    assert_eq!(r.outcome.status, Status::Completed);
    assert_eq!(changing_calls(&fake), before);
}

#[test]
fn feedback_walks_through_the_kanto_phases() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let r = apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", TWO)])]));
    let s = r.statuses();
    let order = [
        Status::Downloading,
        Status::DownloadSuccess,
        Status::Updating,
        Status::UpdateSuccess,
        Status::Activating,
        Status::ActivationSuccess,
        Status::Cleanup,
        Status::CleanupSuccess,
        Status::Completed,
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|st| {
            s.iter()
                .position(|x| x == st)
                .unwrap_or_else(|| panic!("{st:?} missing in {s:?}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{s:?}");
}

#[test]
fn pull_progress_is_reported() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let r = apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", TWO)])]));
    let progress: Vec<u8> = r
        .feedback
        .iter()
        .filter_map(|f| f.payload.actions.first().and_then(|a| a.progress))
        .collect();
    assert!(progress.contains(&100), "{progress:?}");
}

#[test]
fn a_failed_pull_changes_nothing_and_reports_download_failure() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    let id = id_of(&fake, "a");
    let before = fake.calls().len();
    let missing = "127.0.0.1:5000/berth-test/service:nope";
    let r = apply(
        &fake,
        dir.path(),
        &doc("a2", &[("a", &[("image", missing)])]),
    );
    assert_eq!(r.outcome.status, Status::Incomplete);
    assert!(r.statuses().contains(&Status::DownloadFailure));
    let message = r.outcome.message.unwrap();
    assert!(
        message.contains("not found in registry; nothing was changed"),
        "{message}"
    );
    assert_eq!(id_of(&fake, "a"), id);
    assert!(running(&fake, "a"));
    assert_eq!(names(&fake), ["a"]);
    assert!(!fake.calls()[before..]
        .iter()
        .any(|c| matches!(c, Call::Stop(_) | Call::Rename(..))));
}

#[test]
fn a_failed_create_removes_the_temporaries_already_made() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    fake.fail_next(
        Call::Create("b.berth-new".into()),
        RuntimeError::Conflict {
            message: "boom".into(),
        },
    );
    let r = apply(
        &fake,
        dir.path(),
        &doc("a1", &[("a", &[("image", ONE)]), ("b", &[("image", ONE)])]),
    );
    assert_eq!(r.outcome.status, Status::Incomplete);
    assert!(r.statuses().contains(&Status::DownloadFailure));
    assert!(names(&fake).is_empty(), "{:?}", names(&fake));
}

#[test]
fn a_registry_outage_does_not_matter_when_the_image_is_present() {
    let fake = FakeRuntime::new();
    fake.add_image(ONE, image("1"));
    let dir = tempfile::tempdir().unwrap();
    let r = apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    assert_eq!(r.outcome.status, Status::Completed);
    assert!(!fake.calls().iter().any(|c| matches!(c, Call::Pull(_))));
}

#[test]
fn pull_policy_always_pulls_a_present_image_and_survives_an_outage() {
    let fake = FakeRuntime::new();
    fake.add_image(ONE, image("1"));
    let dir = tempfile::tempdir().unwrap();
    let r = apply(
        &fake,
        dir.path(),
        &doc("a1", &[("a", &[("image", ONE), ("pullPolicy", "always")])]),
    );
    assert_eq!(r.outcome.status, Status::Completed);
    assert!(fake.calls().contains(&Call::Pull(ONE.into())));
}

#[test]
fn pull_policy_never_with_a_missing_image_is_a_download_failure() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let r = apply(
        &fake,
        dir.path(),
        &doc("a1", &[("a", &[("image", TWO), ("pullPolicy", "never")])]),
    );
    assert_eq!(r.outcome.status, Status::Incomplete);
    assert!(r.outcome.message.unwrap().contains("pullPolicy is never"));
    assert!(!fake.calls().iter().any(|c| matches!(c, Call::Pull(_))));
}

/// `image` as the registry serves it: pulled, it lists `digest` under
/// the service repository.
fn pulled_as(id: &str, digest: char) -> runtime::ImageDetails {
    runtime::ImageDetails {
        repo_digests: vec![format!(
            "127.0.0.1:5000/berth-test/service@sha256:{}",
            digest.to_string().repeat(64)
        )],
        ..image(id)
    }
}

#[test]
fn a_container_is_created_from_the_digest_its_image_was_pulled_as() {
    let fake = FakeRuntime::new();
    fake.add_registry_image(TWO, pulled_as("2", 'b'));
    let dir = tempfile::tempdir().unwrap();
    let d = doc("a1", &[("a", &[("image", TWO)])]);
    assert_eq!(
        apply(&fake, dir.path(), &d).outcome.status,
        Status::Completed
    );
    let c = fake.container("a").unwrap();
    assert_eq!(
        c.image_ref,
        format!(
            "127.0.0.1:5000/berth-test/service@sha256:{}",
            "b".repeat(64)
        )
    );
    assert_eq!(c.labels[labels::IMAGE], TWO);
}

#[test]
fn a_container_created_from_a_digest_is_in_sync_with_its_tagged_document() {
    let fake = FakeRuntime::new();
    fake.add_registry_image(TWO, pulled_as("2", 'b'));
    let dir = tempfile::tempdir().unwrap();
    let d = doc("a1", &[("a", &[("image", TWO)])]);
    apply(&fake, dir.path(), &d);
    let before = changing_calls(&fake);
    let again = apply(&fake, dir.path(), &doc("a2", &[("a", &[("image", TWO)])]));
    assert_eq!(again.outcome.status, Status::Completed);
    assert_eq!(changing_calls(&fake), before, "{:?}", fake.calls());
}

#[test]
fn a_local_image_from_no_registry_is_created_from_its_tag() {
    let fake = FakeRuntime::new();
    fake.add_image(ONE, image("1"));
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    assert_eq!(fake.container("a").unwrap().image_ref, ONE);
}

#[test]
fn pull_policy_always_does_not_pull_when_the_registry_names_the_local_digest() {
    let fake = FakeRuntime::new();
    fake.add_image(ONE, pulled_as("1", 'a'));
    fake.add_registry_image(ONE, pulled_as("1", 'a'));
    let dir = tempfile::tempdir().unwrap();
    let d = doc("a1", &[("a", &[("image", ONE), ("pullPolicy", "always")])]);
    assert_eq!(
        apply(&fake, dir.path(), &d).outcome.status,
        Status::Completed
    );
    assert!(
        !fake.calls().iter().any(|c| matches!(c, Call::Pull(_))),
        "{:?}",
        fake.calls()
    );
}

#[test]
fn pull_policy_always_pulls_when_the_registry_names_another_digest() {
    let fake = FakeRuntime::new();
    fake.add_image(ONE, pulled_as("1", 'a'));
    fake.add_registry_image(ONE, pulled_as("9", 'c'));
    let dir = tempfile::tempdir().unwrap();
    let d = doc("a1", &[("a", &[("image", ONE), ("pullPolicy", "always")])]);
    assert_eq!(
        apply(&fake, dir.path(), &d).outcome.status,
        Status::Completed
    );
    assert!(fake.calls().contains(&Call::Pull(ONE.into())));
    assert!(fake
        .container("a")
        .unwrap()
        .image_ref
        .ends_with(&"c".repeat(64)));
}

#[test]
fn a_recreate_replaces_the_container_and_removes_the_old_one() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(
        &fake,
        dir.path(),
        &doc("a1", &[("a", &[("image", ONE), ("env", "X=1")])]),
    );
    let old = id_of(&fake, "a");
    let r = apply(
        &fake,
        dir.path(),
        &doc("a2", &[("a", &[("image", ONE), ("env", "X=2")])]),
    );
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.outcome);
    assert_ne!(id_of(&fake, "a"), old);
    assert_eq!(names(&fake), ["a"]);
    assert!(fake
        .container("a")
        .unwrap()
        .env
        .contains(&"X=2".to_string()));
}

#[test]
fn a_recreate_keeps_the_anonymous_volumes() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(
        &fake,
        dir.path(),
        &doc("a1", &[("a", &[("image", ONE), ("env", "X=1")])]),
    );
    let anon = |fake: &FakeRuntime| {
        fake.container("a")
            .unwrap()
            .mounts
            .iter()
            .find(|m| m.destination == "/data")
            .and_then(|m| m.name.clone())
    };
    let before = anon(&fake);
    assert!(before.is_some());
    apply(
        &fake,
        dir.path(),
        &doc("a2", &[("a", &[("image", ONE), ("env", "X=2")])]),
    );
    assert_eq!(anon(&fake), before);
}

#[test]
fn a_new_container_that_exits_at_once_is_rolled_back() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    let old = id_of(&fake, "a");
    let crash = format!("{EXIT_LABEL}=1");
    let r = apply(
        &fake,
        dir.path(),
        &doc("a2", &[("a", &[("image", ONE), ("label", &crash)])]),
    );
    assert_eq!(r.outcome.status, Status::Incomplete);
    let s = r.statuses();
    for st in [
        Status::ActivationFailure,
        Status::Rollback,
        Status::RollbackSuccess,
        Status::Incomplete,
    ] {
        assert!(s.contains(&st), "{st:?} missing in {s:?}");
    }
    assert_eq!(id_of(&fake, "a"), old);
    assert!(running(&fake, "a"));
    assert_eq!(names(&fake), ["a"]);
    assert!(r.outcome.message.unwrap().contains("exited with code 1"));
}

#[test]
fn rollback_of_the_activity_restores_containers_already_replaced() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(
        &fake,
        dir.path(),
        &doc("a1", &[("a", &[("image", ONE)]), ("b", &[("image", ONE)])]),
    );
    let (a, b) = (id_of(&fake, "a"), id_of(&fake, "b"));
    let crash = format!("{EXIT_LABEL}=1");
    let r = apply(
        &fake,
        dir.path(),
        &doc(
            "a2",
            &[
                ("a", &[("image", TWO)]),
                ("b", &[("image", ONE), ("label", &crash)]),
            ],
        ),
    );
    assert_eq!(r.outcome.status, Status::Incomplete);
    assert_eq!((id_of(&fake, "a"), id_of(&fake, "b")), (a, b));
    assert!(running(&fake, "a") && running(&fake, "b"));
    assert_eq!(names(&fake), ["a", "b"]);
}

#[test]
fn rollback_of_one_container_keeps_the_others_new() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(
        &fake,
        dir.path(),
        &doc("a1", &[("a", &[("image", ONE)]), ("b", &[("image", ONE)])]),
    );
    let (a, b) = (id_of(&fake, "a"), id_of(&fake, "b"));
    let crash = format!("{EXIT_LABEL}=1");
    let opts = ExecuteOptions {
        rollback: RollbackMode::Container,
        ..options()
    };
    let r = apply_with(
        &fake,
        dir.path(),
        &doc(
            "a2",
            &[
                ("a", &[("image", TWO)]),
                ("b", &[("image", ONE), ("label", &crash)]),
            ],
        ),
        &opts,
    );
    assert_eq!(r.outcome.status, Status::Incomplete);
    assert_ne!(id_of(&fake, "a"), a, "a keeps its new version");
    assert_eq!(id_of(&fake, "b"), b, "b is rolled back");
    assert_eq!(names(&fake), ["a", "b"]);
}

#[test]
fn an_in_place_update_neither_stops_nor_recreates() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(
        &fake,
        dir.path(),
        &doc("a1", &[("a", &[("image", ONE), ("memory", "64M")])]),
    );
    let id = id_of(&fake, "a");
    let before = fake.calls().len();
    let r = apply(
        &fake,
        dir.path(),
        &doc("a2", &[("a", &[("image", ONE), ("memory", "128M")])]),
    );
    assert_eq!(r.outcome.status, Status::Completed);
    assert_eq!(id_of(&fake, "a"), id);
    assert_eq!(fake.container("a").unwrap().memory, 128 << 20);
    assert_eq!(fake.calls()[before..], [Call::Update(id)]);
}

#[test]
fn a_container_no_longer_desired_is_stopped_then_removed() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(
        &fake,
        dir.path(),
        &doc(
            "a1",
            &[("a", &[("image", ONE)]), ("old", &[("image", ONE)])],
        ),
    );
    let id = id_of(&fake, "old");
    let r = apply(&fake, dir.path(), &doc("a2", &[("a", &[("image", ONE)])]));
    assert_eq!(r.outcome.status, Status::Completed);
    assert_eq!(names(&fake), ["a"]);
    let calls = fake.calls();
    let stop = calls
        .iter()
        .position(|c| *c == Call::Stop(id.clone()))
        .unwrap();
    let remove = calls
        .iter()
        .position(|c| *c == Call::Remove(id.clone()))
        .unwrap();
    assert!(stop < remove);
}

#[test]
fn start_first_starts_the_new_container_before_stopping_the_old() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(
        &fake,
        dir.path(),
        &doc(
            "a1",
            &[("a", &[("image", ONE), ("updateStrategy", "start-first")])],
        ),
    );
    let old = id_of(&fake, "a");
    let r = apply(
        &fake,
        dir.path(),
        &doc(
            "a2",
            &[("a", &[("image", TWO), ("updateStrategy", "start-first")])],
        ),
    );
    assert_eq!(r.outcome.status, Status::Completed);
    let new = id_of(&fake, "a");
    let calls = fake.calls();
    let start_new = calls
        .iter()
        .position(|c| *c == Call::Start(new.clone()))
        .unwrap();
    let stop_old = calls
        .iter()
        .position(|c| *c == Call::Stop(old.clone()))
        .unwrap();
    assert!(start_new < stop_old, "{calls:?}");
}

#[test]
fn start_first_with_a_shared_host_port_stops_the_old_first() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let cfg = |img: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            ("image", img),
            ("updateStrategy", "start-first"),
            ("port", "8080:80"),
        ]
    };
    apply(&fake, dir.path(), &doc("a1", &[("a", &cfg(ONE))]));
    let old = id_of(&fake, "a");
    apply(&fake, dir.path(), &doc("a2", &[("a", &cfg(TWO))]));
    let new = id_of(&fake, "a");
    let calls = fake.calls();
    let start_new = calls
        .iter()
        .position(|c| *c == Call::Start(new.clone()))
        .unwrap();
    let stop_old = calls
        .iter()
        .position(|c| *c == Call::Stop(old.clone()))
        .unwrap();
    assert!(stop_old < start_new, "{calls:?}");
}

#[test]
fn the_journal_is_cleared_when_the_activity_ends() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    let state = StateDir::open(dir.path()).unwrap();
    assert_eq!(state.read_journal().unwrap(), None);
}

/// Leaves the engine, and the journal, as a crash in the middle of
/// replacing `a` would: the new `a` took the name and started; `committed`
/// when it had passed its gate and the activity was committed.
fn interrupted(fake: &FakeRuntime, dir: &std::path::Path, committed: bool) -> (String, String) {
    apply(fake, dir, &doc("a1", &[("a", &[("image", ONE)])]));
    let old = id_of(fake, "a");
    let d = doc("a2", &[("a", &[("image", TWO)])]);
    block_on(async {
        fake.pull(TWO, &|_| {}).await.unwrap();
        let new = fake.create(&new_a(&d)).await.unwrap();
        fake.stop(&old, Duration::from_secs(1)).await.unwrap();
        fake.rename(&old, "a.berth-old").await.unwrap();
        fake.rename(&new, "a").await.unwrap();
        fake.start(&new).await.unwrap();
        let state = StateDir::open(dir).unwrap();
        let mut journal = Journal::new("a2", labels::DEFAULT_INSTANCE);
        journal.phase = "activating".into();
        journal.intents = vec![Intent {
            name: "a".into(),
            action: "recreate".into(),
            old_id: Some(old.clone()),
            old_name: None,
            old_running: true,
            hooks: None,
        }];
        let a = || "a".to_string();
        journal.push(Effect::Create {
            name: a(),
            temp: "a.berth-new".into(),
            id: Some(new.clone()),
            image: None,
        });
        journal.push(Effect::Stop {
            name: a(),
            id: old.clone(),
            was_running: true,
        });
        journal.push(Effect::Rename {
            name: a(),
            id: old.clone(),
            from: a(),
            to: "a.berth-old".into(),
        });
        journal.push(Effect::Rename {
            name: a(),
            id: new.clone(),
            from: "a.berth-new".into(),
            to: a(),
        });
        journal.push(Effect::Start {
            name: a(),
            id: new.clone(),
            was_running: false,
        });
        if committed {
            journal.committed.insert(a());
        }
        state.write_journal(&journal).unwrap();
        (old, new)
    })
}

#[test]
fn recovery_restores_the_old_container_of_an_unfinished_activation() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = interrupted(&fake, dir.path(), false);
    let done = block_on(async {
        recover(
            &fake,
            &StateDir::open(dir.path()).unwrap(),
            labels::DEFAULT_INSTANCE,
        )
        .await
    })
    .unwrap();
    assert!(!done.is_empty());
    assert_eq!(names(&fake), ["a"]);
    assert_eq!(id_of(&fake, "a"), old);
    assert!(running(&fake, "a"));
}

#[test]
fn recovery_keeps_a_committed_new_container_and_removes_the_old() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let (_, new) = interrupted(&fake, dir.path(), true);
    block_on(async {
        recover(
            &fake,
            &StateDir::open(dir.path()).unwrap(),
            labels::DEFAULT_INSTANCE,
        )
        .await
    })
    .unwrap();
    assert_eq!(names(&fake), ["a"]);
    assert_eq!(id_of(&fake, "a"), new);
}

#[test]
fn recovery_removes_leftover_temporary_containers() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    leave_an_unfinished_new_a(&fake);
    block_on(recover(
        &fake,
        &StateDir::open(dir.path()).unwrap(),
        labels::DEFAULT_INSTANCE,
    ))
    .unwrap();
    assert_eq!(names(&fake), ["a"]);
}

/// What a berth killed after creating `a`'s new container and before any
/// journal named it leaves: `a.berth-new`, ours, not started.
fn leave_an_unfinished_new_a(fake: &FakeRuntime) {
    let d = doc("a2", &[("a", &[("image", ONE)])]);
    block_on(fake.create(&new_a(&d))).unwrap();
}

/// The create of `a`'s new container under its temporary name, as `d`
/// (whose first container is `a`) describes it.
fn new_a(d: &DesiredState) -> runtime::CreateRequest {
    runtime::CreateRequest {
        name: "a.berth-new".into(),
        config: d.containers[0].config.clone(),
        labels: labels::for_spec(&d.containers[0], None, labels::DEFAULT_INSTANCE),
        extra_hosts: vec![],
        inherited_volumes: vec![],
        networks: vec![],
    }
}

/// Issue 25: the activity after a recovery that found nothing plans from
/// recovery's own listing instead of listing the engine again.
#[test]
fn recovery_that_changes_nothing_hands_on_what_it_listed() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    let after = block_on(recover_with_verdict(
        &fake,
        &StateDir::open(dir.path()).unwrap(),
        labels::DEFAULT_INSTANCE,
        "containers",
    ))
    .unwrap();
    assert!(after.lines.is_empty(), "{:?}", after.lines);
    let mut listed: Vec<String> = after
        .listed
        .expect("a listing handed on")
        .into_iter()
        .map(|c| c.name)
        .collect();
    listed.sort();
    assert_eq!(listed, names(&fake));
}

/// The listing of a recovery that changed the engine is stale: the next
/// activity must read the engine again.
#[test]
fn recovery_that_removed_a_temporary_hands_on_no_listing() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    leave_an_unfinished_new_a(&fake);
    let after = block_on(recover_with_verdict(
        &fake,
        &StateDir::open(dir.path()).unwrap(),
        labels::DEFAULT_INSTANCE,
        "containers",
    ))
    .unwrap();
    assert_eq!(after.lines.len(), 1, "{:?}", after.lines);
    assert!(after.listed.is_none());
}

/// A journal killed right after it recorded the create of `a.berth-new`,
/// before the engine answered with an id.
fn create_without_id(dir: &std::path::Path) {
    let state = StateDir::open(dir).unwrap();
    let mut journal = Journal::new("a1", labels::DEFAULT_INSTANCE);
    journal.phase = "downloading".into();
    journal.intents = vec![Intent {
        name: "a".into(),
        action: "create".into(),
        old_id: None,
        old_name: None,
        old_running: false,
        hooks: None,
    }];
    journal.push(Effect::Create {
        name: "a".into(),
        temp: "a.berth-new".into(),
        id: None,
        image: Some(ONE.into()),
    });
    state.write_journal(&journal).unwrap();
}

/// Regression (fault campaign, kill-before-create#1): a create still in
/// flight on the engine when berth was killed finished after recovery had
/// looked for it, and left `.berth-new` behind. Recovery now holds the name
/// with a placeholder to learn that no create can still finish under it.
#[test]
fn recovery_of_a_create_without_an_id_holds_the_name_with_a_placeholder_and_removes_it() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    create_without_id(dir.path());
    block_on(async {
        recover(
            &fake,
            &StateDir::open(dir.path()).unwrap(),
            labels::DEFAULT_INSTANCE,
        )
        .await
        .unwrap()
    });
    assert_eq!(names(&fake), Vec::<String>::new());
    let calls = fake.calls();
    assert!(
        calls.contains(&Call::Create("a.berth-new".into()))
            && calls.iter().any(|c| matches!(c, Call::Remove(_))),
        "{calls:?}"
    );
    assert!(StateDir::open(dir.path())
        .unwrap()
        .read_journal()
        .unwrap()
        .is_none());
}

#[test]
fn recovery_of_a_create_without_an_id_leaves_a_foreign_container_on_the_name_alone() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    create_without_id(dir.path());
    let d = doc("x", &[("a.berth-new", &[("image", ONE)])]);
    let foreign = block_on(async {
        let request = runtime::CreateRequest {
            name: "a.berth-new".into(),
            config: d.containers[0].config.clone(),
            labels: d.containers[0].config.labels.clone(),
            extra_hosts: vec![],
            inherited_volumes: vec![],
            networks: vec![],
        };
        let id = fake.create(&request).await.unwrap();
        recover(
            &fake,
            &StateDir::open(dir.path()).unwrap(),
            labels::DEFAULT_INSTANCE,
        )
        .await
        .unwrap();
        id
    });
    assert_eq!(id_of(&fake, "a.berth-new"), foreign);
}

#[test]
fn recovery_starts_a_container_stopped_before_it_was_renamed() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    let old = id_of(&fake, "a");
    block_on(async {
        fake.stop(&old, Duration::from_secs(1)).await.unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let mut journal = Journal::new("a2", labels::DEFAULT_INSTANCE);
        journal.phase = "updating".into();
        journal.intents = vec![Intent {
            name: "a".into(),
            action: "recreate".into(),
            old_id: Some(old.clone()),
            old_name: None,
            old_running: true,
            hooks: None,
        }];
        journal.push(Effect::Stop {
            name: "a".into(),
            id: old.clone(),
            was_running: true,
        });
        state.write_journal(&journal).unwrap();
        recover(&fake, &state, labels::DEFAULT_INSTANCE)
            .await
            .unwrap();
    });
    assert!(running(&fake, "a"));
}

#[test]
fn after_recovery_the_next_apply_converges() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    interrupted(&fake, dir.path(), false);
    let r = apply(&fake, dir.path(), &doc("a3", &[("a", &[("image", TWO)])]));
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.outcome);
    assert_eq!(names(&fake), ["a"]);
    assert_eq!(fake.container("a").unwrap().image_ref, TWO);
}

#[test]
fn recovery_leaves_another_instances_temporaries_alone() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let d = doc("a1", &[("a", &[("image", ONE)])]);
    block_on(async {
        let request = runtime::CreateRequest {
            name: "a.berth-new".into(),
            config: d.containers[0].config.clone(),
            labels: labels::for_spec(&d.containers[0], None, "other"),
            extra_hosts: vec![],
            inherited_volumes: vec![],
            networks: vec![],
        };
        fake.create(&request).await.unwrap();
        recover(
            &fake,
            &StateDir::open(dir.path()).unwrap(),
            labels::DEFAULT_INSTANCE,
        )
        .await
        .unwrap();
    });
    assert_eq!(names(&fake), ["a.berth-new"]);
}

#[test]
fn a_dependency_is_started_before_its_dependents() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let d = doc(
        "a1",
        &[
            ("web", &[("image", ONE), ("dependsOn", "db")]),
            ("db", &[("image", ONE)]),
            ("cache", &[("image", ONE)]),
        ],
    );
    let r = apply(&fake, dir.path(), &d);
    assert_eq!(r.outcome.status, Status::Completed);
    let (db, web) = (id_of(&fake, "db"), id_of(&fake, "web"));
    let calls = fake.calls();
    let at = |c: Call| calls.iter().position(|x| *x == c).unwrap();
    assert!(at(Call::Start(db)) < at(Call::Start(web)));
}

#[test]
fn independent_containers_form_one_wave() {
    let d = doc(
        "a1",
        &[
            ("a", &[("image", ONE)]),
            ("b", &[("image", ONE), ("dependsOn", "a")]),
            ("c", &[("image", ONE)]),
        ],
    );
    let plan = plan::compute(&d, &Observed::default(), &PlanOptions::default());
    let mut waves: Vec<(&str, usize)> = plan
        .actions
        .iter()
        .map(|e| (e.id.as_str(), e.execution.wave))
        .collect();
    waves.sort_by_key(|(_, w)| *w);
    assert_eq!(waves, vec![("a", 0), ("c", 0), ("b", 1)]);
}

// ---- Issue 18: an executor that cannot lie ----

fn journal_left(dir: &std::path::Path) -> Option<Journal> {
    StateDir::open(dir).unwrap().read_journal().unwrap()
}

fn injected(what: &str) -> RuntimeError {
    RuntimeError::Refused {
        status: 500,
        message: format!("injected: {what}"),
    }
}

#[test]
fn r18_a_failed_rename_after_parallel_stops_restarts_every_stopped_container() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let v = |x: &'static str| -> Vec<(&'static str, &'static [(&'static str, &'static str)])> {
        let env: &'static [(&str, &str)] = match x {
            "1" => &[("image", ONE), ("env", "X=1")],
            _ => &[("image", ONE), ("env", "X=2")],
        };
        vec![("a", env), ("b", env), ("c", env)]
    };
    apply(&fake, dir.path(), &doc("a1", &v("1")));
    let before: Vec<String> = ["a", "b", "c"].iter().map(|n| id_of(&fake, n)).collect();
    fake.fail_next(
        Call::Rename(before[1].clone(), "b.berth-old".into()),
        injected("rename"),
    );
    let r = apply(&fake, dir.path(), &doc("a2", &v("2")));
    assert_eq!(r.outcome.status, Status::Incomplete, "{:?}", r.outcome);
    assert!(r.statuses().contains(&Status::RollbackSuccess));
    let after: Vec<String> = ["a", "b", "c"].iter().map(|n| id_of(&fake, n)).collect();
    assert_eq!(after, before, "every container is the old one");
    for n in ["a", "b", "c"] {
        assert!(running(&fake, n), "{n} runs again");
    }
    assert_eq!(names(&fake), ["a", "b", "c"]);
    assert_eq!(journal_left(dir.path()), None);
}

/// `a` on ONE, then an update to a crashing `a` whose rollback cannot
/// rename the old container back.
fn failed_rollback(fake: &FakeRuntime, dir: &std::path::Path) -> (String, Applied) {
    apply(fake, dir, &doc("a1", &[("a", &[("image", ONE)])]));
    let old = id_of(fake, "a");
    let crash = format!("{EXIT_LABEL}=1");
    fake.fail_next(
        Call::Rename(old.clone(), "a".into()),
        injected("rename back"),
    );
    let r = apply(
        fake,
        dir,
        &doc("a2", &[("a", &[("image", TWO), ("label", &crash)])]),
    );
    (old, r)
}

#[test]
fn r18_a_rollback_that_fails_says_so_and_keeps_the_journal() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = failed_rollback(&fake, dir.path());
    assert_eq!(
        r.outcome.status,
        Status::IncompleteInconsistent,
        "{:?}",
        r.outcome
    );
    let s = r.statuses();
    assert!(s.contains(&Status::RollbackFailure), "{s:?}");
    assert!(!s.contains(&Status::RollbackSuccess), "{s:?}");
    assert!(r.outcome.message.unwrap().contains("rollback failed"));
    assert!(journal_left(dir.path()).is_some(), "kept for recovery");
}

#[test]
fn r18_recovery_finishes_a_rollback_that_failed() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = failed_rollback(&fake, dir.path());
    let done = block_on(recover(
        &fake,
        &StateDir::open(dir.path()).unwrap(),
        labels::DEFAULT_INSTANCE,
    ))
    .unwrap();
    assert!(
        done.iter().any(|l| l.contains("restored the previous a")),
        "{done:?}"
    );
    assert_eq!(names(&fake), ["a"]);
    assert_eq!(id_of(&fake, "a"), old);
    assert!(running(&fake, "a"));
    assert_eq!(journal_left(dir.path()), None);
}

#[test]
fn r18_after_a_failed_rollback_the_next_activity_keeps_the_old_version_and_its_volumes() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = failed_rollback(&fake, dir.path());
    let volume = |fake: &FakeRuntime, name: &str| {
        fake.container(name)
            .unwrap()
            .mounts
            .iter()
            .find(|m| m.destination == "/data")
            .and_then(|m| m.name.clone())
    };
    let data = volume(&fake, "a.berth-old");
    // The next activity (a drift reconcile of the old document) recovers
    // first; it neither removes the old container nor starts from scratch.
    let r = apply(&fake, dir.path(), &doc("a3", &[("a", &[("image", ONE)])]));
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.outcome);
    assert_eq!(id_of(&fake, "a"), old);
    assert_eq!(volume(&fake, "a"), data);
    assert_eq!(names(&fake), ["a"]);
}

#[test]
fn r18_a_missing_container_is_restored_from_its_old_copy_when_recovery_could_not() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    let old = id_of(&fake, "a");
    block_on(async {
        fake.stop(&old, Duration::from_secs(1)).await.unwrap();
        fake.rename(&old, "a.berth-old").await.unwrap();
    });
    // No recovery: the planner alone must not treat the copy as a stranger.
    let r = apply_as_is(
        &fake,
        dir.path(),
        &doc("a2", &[("a", &[("image", ONE)])]),
        &options(),
    );
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.outcome);
    assert_eq!(id_of(&fake, "a"), old, "the same container, not a new one");
    assert!(running(&fake, "a"));
    assert_eq!(names(&fake), ["a"]);
}

#[test]
fn r18_a_foreign_container_on_the_old_name_does_not_block_a_recreate() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    fake.add_container(runtime::ContainerDetails {
        id: "f".repeat(64),
        name: "a.berth-old".into(),
        image_ref: ONE.into(),
        ..Default::default()
    });
    let r = apply(&fake, dir.path(), &doc("a2", &[("a", &[("image", TWO)])]));
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.outcome);
    assert_eq!(fake.container("a").unwrap().image_ref, TWO);
    assert_eq!(
        fake.container("a.berth-old").unwrap().id,
        "f".repeat(64),
        "the foreign container is left alone"
    );
    assert_eq!(names(&fake), ["a", "a.berth-old"]);
}

#[test]
fn r18_a_missing_network_fails_downloading_naming_it_and_changes_nothing() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    let old = id_of(&fake, "a");
    let before = changing_calls(&fake);
    let r = apply(
        &fake,
        dir.path(),
        &doc("a2", &[("a", &[("image", ONE), ("network", "nosuch")])]),
    );
    assert_eq!(r.outcome.status, Status::Incomplete);
    assert!(r.statuses().contains(&Status::DownloadFailure));
    let message = r.outcome.message.unwrap();
    assert!(
        message.contains("network \"nosuch\" does not exist"),
        "{message}"
    );
    assert_eq!(changing_calls(&fake), before, "nothing was touched");
    assert_eq!(id_of(&fake, "a"), old);
}

#[test]
fn r18_a_host_port_held_outside_the_plan_fails_downloading_naming_the_holder() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(
        &fake,
        dir.path(),
        &doc(
            "a1",
            &[("squatter", &[("image", ONE), ("port", "8080:80")])],
        ),
    );
    // squatter is another instance's: outside this plan, never touched.
    let other = doc("b1", &[("web", &[("image", ONE), ("port", "8080:80")])]);
    let r = apply(&fake, dir.path(), &with_scope_of_other(other));
    assert_eq!(r.outcome.status, Status::Incomplete);
    let message = r.outcome.message.unwrap();
    assert!(
        message.contains("8080") && message.contains("squatter"),
        "{message}"
    );
    assert!(fake.container("web").is_none());
    assert!(running(&fake, "squatter"));
}

/// A document whose plan leaves `squatter` alone (it keeps it as a system
/// container), so the port check sees a holder outside the plan.
fn with_scope_of_other(mut d: DesiredState) -> DesiredState {
    d.system_containers = Some(vec!["squatter".into()]);
    d
}

#[test]
fn r18_an_in_place_update_is_undone_by_an_activity_rollback() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(
        &fake,
        dir.path(),
        &doc(
            "a1",
            &[
                ("a", &[("image", ONE), ("memory", "64m")]),
                ("b", &[("image", ONE)]),
            ],
        ),
    );
    let crash = format!("{EXIT_LABEL}=1");
    let r = apply(
        &fake,
        dir.path(),
        &doc(
            "a2",
            &[
                ("a", &[("image", ONE), ("memory", "128m")]),
                ("b", &[("image", ONE), ("label", &crash)]),
            ],
        ),
    );
    assert_eq!(r.outcome.status, Status::Incomplete);
    assert_eq!(fake.container("a").unwrap().memory, 64 * 1024 * 1024);
}

#[test]
fn r18_a_sidecar_on_a_container_network_follows_its_recreated_target() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let v = |x: &'static str| {
        doc(
            "a",
            &[
                ("a", &[("image", ONE), ("env", x)]),
                ("sidecar", &[("image", ONE), ("network", "container:a")]),
            ],
        )
    };
    let cold = apply(&fake, dir.path(), &v("X=1"));
    assert_eq!(cold.outcome.status, Status::Completed, "{:?}", cold.outcome);
    let r = apply(&fake, dir.path(), &v("X=2"));
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.outcome);
    let a = id_of(&fake, "a");
    assert_eq!(
        fake.container("sidecar").unwrap().network_mode,
        format!("container:{a}"),
        "the new sidecar joins the new a"
    );
    assert!(running(&fake, "a") && running(&fake, "sidecar"));
}

#[test]
fn r18_host_entries_resolve_to_a_target_deployed_in_the_same_document() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let d = doc(
        "a1",
        &[
            (
                "client",
                &[("image", ONE), ("host", "db.local:container_db-host")],
            ),
            ("db", &[("image", ONE)]),
        ],
    );
    let r = apply(&fake, dir.path(), &d);
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.outcome);
    let db_ip = fake.container("db").unwrap().ips["bridge"].clone();
    assert!(
        fake.container("client")
            .unwrap()
            .extra_hosts
            .contains(&format!("db.local:{db_ip}")),
        "{:?}",
        fake.container("client").unwrap().extra_hosts
    );
}

#[test]
fn r18_a_recreated_host_target_recreates_the_containers_that_hold_its_address() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let v = |x: &'static str| {
        doc(
            "a",
            &[
                ("db", &[("image", ONE), ("env", x)]),
                (
                    "client",
                    &[("image", ONE), ("host", "db.local:container_db-host")],
                ),
            ],
        )
    };
    apply(&fake, dir.path(), &v("X=1"));
    let r = apply(&fake, dir.path(), &v("X=2"));
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.outcome);
    let db_ip = fake.container("db").unwrap().ips["bridge"].clone();
    assert!(fake
        .container("client")
        .unwrap()
        .extra_hosts
        .contains(&format!("db.local:{db_ip}")));
}

#[test]
fn r18_a_committed_container_survives_a_later_failure_in_container_mode_recovery() {
    // Container mode: a passed its gate and was committed; a crash before
    // cleanup leaves both; recovery keeps the new a and removes the old.
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let (_, new) = interrupted(&fake, dir.path(), true);
    block_on(recover(
        &fake,
        &StateDir::open(dir.path()).unwrap(),
        labels::DEFAULT_INSTANCE,
    ))
    .unwrap();
    assert_eq!(names(&fake), ["a"]);
    assert_eq!(id_of(&fake, "a"), new);
}

// ---- Property: a fault anywhere, or a crash anywhere, ends all-old or all-new ----

mod property {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::runtime::faults::{CallKind, Fault, Faulty, Rule};

    /// What the second document does to one container of the first: a
    /// recreate through one of several keys, an in-place change, a new
    /// version that fails, a removal, or nothing.
    #[derive(Debug, Clone, Copy)]
    enum Change {
        Same,
        Env,
        Memory,
        Restart,
        Port,
        Label,
        Cmd,
        User,
        Crash,
        Remove,
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            Just(Change::Same),
            Just(Change::Env),
            Just(Change::Memory),
            Just(Change::Restart),
            Just(Change::Port),
            Just(Change::Label),
            Just(Change::Cmd),
            Just(Change::User),
            Just(Change::Crash),
            Just(Change::Remove),
        ]
    }

    fn kind() -> impl Strategy<Value = CallKind> {
        prop_oneof![
            Just(CallKind::Create),
            Just(CallKind::Stop),
            Just(CallKind::Rename),
            Just(CallKind::Start),
            Just(CallKind::Update),
            Just(CallKind::Remove),
            Just(CallKind::Inspect),
        ]
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            Just(Fault::Fail),
            Just(Fault::Unavailable),
            Just(Fault::Pause)
        ]
    }

    fn mode() -> impl Strategy<Value = RollbackMode> {
        prop_oneof![Just(RollbackMode::Activity), Just(RollbackMode::Container)]
    }

    const NAMES: [&str; 3] = ["a", "b", "c"];

    fn first() -> DesiredState {
        let one: &[(&str, &str)] = &[("image", ONE), ("env", "X=1"), ("memory", "64m")];
        doc("p1", &[("a", one), ("b", one), ("c", one)])
    }

    fn second(changes: &[Change], add: bool) -> DesiredState {
        let crash = format!("{EXIT_LABEL}=1");
        let ports = ["18001:8080", "18002:8080", "18003:8080"];
        let mut configs: Vec<(&str, Vec<(&str, &str)>)> = Vec::new();
        for (i, (name, c)) in NAMES.iter().zip(changes).enumerate() {
            let mut config = vec![("image", ONE), ("env", "X=1"), ("memory", "64m")];
            match c {
                Change::Same => {}
                Change::Env => config = vec![("image", TWO), ("env", "X=2"), ("memory", "64m")],
                Change::Memory => config[2] = ("memory", "128m"),
                Change::Restart => config.push(("restartPolicy", "always")),
                Change::Port => config.push(("port", ports[i])),
                Change::Label => config.push(("label", "tier=2")),
                Change::Cmd => config.extend([("cmd", "/bin/service"), ("cmd", "--v2")]),
                Change::User => config.push(("user", "nobody")),
                Change::Crash => config.extend([("env", "Y=2"), ("label", crash.as_str())]),
                Change::Remove => continue,
            }
            configs.push((name, config));
        }
        if add {
            configs.push(("d", vec![("image", TWO), ("port", "18004:8080")]));
        }
        let components: Vec<(&str, &[(&str, &str)])> =
            configs.iter().map(|(n, c)| (*n, c.as_slice())).collect();
        doc("p2", &components)
    }

    /// Runs `f` on a single-threaded runtime whose clock is paused, so a
    /// pause hook (an hour) and the test's crash timeout cost no real time.
    fn paused<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// Whether `name` is exactly the first document's container, running.
    fn is_old(fake: &FakeRuntime, before: &BTreeMap<String, String>, name: &str) -> bool {
        match (fake.container(name), before.get(name)) {
            (Some(c), Some(id)) => c.id == *id && c.state.status == runtime::Status::Running,
            (None, None) => true,
            _ => false,
        }
    }

    /// Whether `name` is as the second document wants it (nothing to plan).
    fn is_new(fake: &FakeRuntime, desired: &DesiredState, name: &str) -> bool {
        let observed = block_on(observe::gather_for(fake, desired)).unwrap();
        let plan = plan::compute(desired, &observed, &PlanOptions::default());
        plan.entry(name)
            .is_none_or(|e| matches!(e.action, plan::Action::Keep | plan::Action::Ignore))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn a_fault_or_a_crash_anywhere_ends_all_old_or_all_new(
            changes in proptest::collection::vec(change(), 3),
            add in any::<bool>(),
            kind in kind(),
            nth in 1usize..6,
            fault in fault(),
            mode in mode(),
        ) {
            let fake = engine();
            let dir = tempfile::tempdir().unwrap();
            let v1 = first();
            prop_assert_eq!(apply(&fake, dir.path(), &v1).outcome.status, Status::Completed);
            let before: BTreeMap<String, String> =
                NAMES.iter().map(|n| (n.to_string(), id_of(&fake, n))).collect();
            let v2 = second(&changes, add);
            let faulty = Faulty::new(fake, vec![Rule::nth(kind, nth, fault)]);
            let opts = ExecuteOptions { rollback: mode, ..options() };

            let ended = paused(async {
                let state = StateDir::open(dir.path()).unwrap();
                let observed = observe::gather_for(faulty.inner(), &v2).await.unwrap();
                let plan = plan::compute(&v2, &observed, &PlanOptions::default());
                let mut tracker = Tracker::new(&v2.activity_id, "containers");
                tracker.identified(&plan);
                let mut feedback = Vec::new();
                let mut sink = |f: Feedback| feedback.push(f.payload.status);
                let activity = Activity { desired: &v2, plan: &plan, observed: &observed };
                // A crash: the activity's future dropped at the pause.
                let run = execute(&faulty, &state, activity, &opts, &mut tracker, &mut sink);
                let outcome = tokio::time::timeout(Duration::from_secs(600), run).await;
                (outcome.map(|o| o.unwrap()), feedback)
            });
            let (outcome, feedback) = ended;
            faulty.clear_rules();
            // The next start: recovery, always.
            let recovered = paused(async {
                let state = StateDir::open(dir.path()).unwrap();
                recover(&faulty, &state, labels::DEFAULT_INSTANCE).await
            });
            prop_assert!(recovered.is_ok(), "recovery failed: {:?}", recovered);
            let fake = faulty.inner();
            prop_assert_eq!(journal_left(dir.path()), None);
            let leftovers: Vec<String> = names(fake)
                .into_iter()
                .filter(|n| crate::plan::temporary(n).is_some())
                .collect();
            prop_assert!(leftovers.is_empty(), "{:?}", leftovers);

            let all: Vec<&str> = NAMES.iter().copied().chain(add.then_some("d")).collect();
            let old = |n: &str| is_old(fake, &before, n);
            let new = |n: &str| is_new(fake, &v2, n);
            match (&outcome, mode) {
                (Ok(o), _) if o.status == Status::Completed => {
                    prop_assert!(all.iter().all(|n| new(n)), "completed but not new: {:?}", names(fake));
                    prop_assert!(!feedback.contains(&Status::Rollback));
                }
                // Committed, then a cleanup step failed: the new version
                // stays, and recovery finished the cleanup.
                (Ok(o), RollbackMode::Activity) if feedback.contains(&Status::Cleanup) => {
                    prop_assert!(feedback.contains(&Status::CleanupFailure), "{:?}", o);
                    prop_assert!(all.iter().all(|n| new(n)), "committed but not new: {:?}", names(fake));
                }
                (Ok(o), RollbackMode::Activity) => {
                    prop_assert!(
                        all.iter().all(|n| old(n)),
                        "{:?} ended {:?} but not all old: {:?}", o.message, o.status, names(fake)
                    );
                    if o.status == Status::Incomplete && feedback.contains(&Status::Rollback) {
                        prop_assert!(feedback.contains(&Status::RollbackSuccess));
                    }
                }
                (Ok(_), RollbackMode::Container) => {
                    for n in &all {
                        prop_assert!(old(n) || new(n), "{} is neither old nor new", n);
                    }
                }
                (Err(_), RollbackMode::Activity) => {
                    let all_old = all.iter().all(|n| old(n));
                    let all_new = all.iter().all(|n| new(n));
                    prop_assert!(all_old || all_new, "after a crash: {:?}", names(fake));
                }
                (Err(_), RollbackMode::Container) => {
                    for n in &all {
                        prop_assert!(old(n) || new(n), "{} is neither old nor new after a crash", n);
                    }
                }
            }
        }
    }
}

#[test]
fn r18_a_device_missing_on_the_host_fails_downloading_naming_it() {
    let fake = engine();
    fake.remove_host_path("/dev/ttyACM9");
    let dir = tempfile::tempdir().unwrap();
    let r = apply(
        &fake,
        dir.path(),
        &doc(
            "a1",
            &[(
                "a",
                &[("image", ONE), ("device", "/dev/ttyACM9:/dev/ttyUSB0:rw")],
            )],
        ),
    );
    assert_eq!(r.outcome.status, Status::Incomplete);
    let message = r.outcome.message.unwrap();
    assert!(
        message.contains("device /dev/ttyACM9 does not exist"),
        "{message}"
    );
    assert!(
        fake.calls().is_empty(),
        "nothing was touched: {:?}",
        fake.calls()
    );
}

#[test]
fn r18_a_read_only_bind_source_missing_on_the_host_fails_downloading_naming_it() {
    let fake = engine();
    fake.remove_host_path("/etc/app.conf");
    let dir = tempfile::tempdir().unwrap();
    let r = apply(
        &fake,
        dir.path(),
        &doc(
            "a1",
            &[(
                "a",
                &[("image", ONE), ("mount", "/etc/app.conf:/app.conf:ro")],
            )],
        ),
    );
    assert_eq!(r.outcome.status, Status::Incomplete);
    let message = r.outcome.message.unwrap();
    assert!(
        message.contains("/etc/app.conf does not exist"),
        "{message}"
    );
}

#[test]
fn a_writable_bind_source_missing_on_the_host_is_left_to_the_engine_to_create() {
    let fake = engine();
    fake.remove_host_path("/data/influxdb");
    let dir = tempfile::tempdir().unwrap();
    let r = apply(
        &fake,
        dir.path(),
        &doc(
            "a1",
            &[(
                "a",
                &[
                    ("image", ONE),
                    ("mount", "/data/influxdb:/var/lib/influxdb"),
                ],
            )],
        ),
    );
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.outcome);
}

// ---- Issue 19: every failure branch is reached ----

/// Runs plan and execute for `desired` through `rt`, on paused time, while
/// `meanwhile` runs beside it.
fn apply_beside<R: Runtime>(
    rt: &R,
    observe_with: &FakeRuntime,
    dir: &std::path::Path,
    desired: &DesiredState,
    opts: &ExecuteOptions,
    meanwhile: impl std::future::Future<Output = ()>,
) -> Applied {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(async {
            let state = StateDir::open(dir).unwrap();
            let observed = observe::gather_for(observe_with, desired).await.unwrap();
            let plan = plan::compute(desired, &observed, &PlanOptions::default());
            let mut tracker = Tracker::new(&desired.activity_id, "containers");
            tracker.identified(&plan);
            let mut feedback = Vec::new();
            let mut sink = |f: Feedback| feedback.push(f);
            let activity = Activity {
                desired,
                plan: &plan,
                observed: &observed,
            };
            let run = execute(rt, &state, activity, opts, &mut tracker, &mut sink);
            let (outcome, ()) = tokio::join!(run, meanwhile);
            Applied {
                outcome: outcome.unwrap(),
                feedback,
            }
        })
}

#[test]
fn r19_a_journal_write_that_fails_mid_activity_stops_the_step_and_rolls_back() {
    use crate::runtime::faults::Faulty;
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    apply(&fake, &state_dir, &doc("a1", &[("a", &[("image", ONE)])]));
    let old = id_of(&fake, "a");
    let faulty = Faulty::from_spec(fake, "stop#1:delay=10s").unwrap();
    // While the old a is being stopped, the state directory goes away: the
    // next journal write (the rename that would follow) cannot be made.
    let gone = state_dir.clone();
    let r = apply_beside(
        &faulty,
        faulty.inner(),
        &state_dir,
        &doc("a2", &[("a", &[("image", TWO)])]),
        &options(),
        async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            std::fs::remove_dir_all(&gone).unwrap();
            std::fs::write(&gone, "not a directory").unwrap();
        },
    );
    let fake = faulty.inner();
    assert_eq!(r.outcome.status, Status::Incomplete, "{:?}", r.outcome);
    assert!(
        r.outcome
            .message
            .as_deref()
            .unwrap_or("")
            .contains("cannot write the journal"),
        "{:?}",
        r.outcome
    );
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Rename(id, to) if *id == old && to.contains(".berth-old"))),
        "the rename was not issued without its record"
    );
    assert_eq!(id_of(fake, "a"), old);
    assert!(running(fake, "a"));
    assert_eq!(names(fake), ["a"]);
}

#[test]
fn r19_the_activity_timeout_cuts_a_readiness_wait_short_and_rolls_back() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    let old = id_of(&fake, "a");
    // A health check that could take a day; the activity may take a minute.
    let opts = ExecuteOptions {
        activity_timeout: Duration::from_secs(60),
        ..options()
    };
    let d = doc(
        "a2",
        &[(
            "a",
            &[
                ("image", TWO),
                ("healthCmd", "true"),
                ("healthInterval", "24h"),
                ("healthRetries", "1"),
            ],
        )],
    );
    let r = apply_beside(&fake, &fake, dir.path(), &d, &opts, async {});
    assert_eq!(r.outcome.status, Status::Incomplete, "{:?}", r.outcome);
    let message = r.outcome.message.clone().unwrap_or_default();
    assert!(message.contains("activity_timeout 1m"), "{message}");
    assert!(r.statuses().contains(&Status::RollbackSuccess));
    assert_eq!(id_of(&fake, "a"), old);
    assert!(running(&fake, "a"));
}

// ---- Review: failure paths ----

#[test]
fn review_rollback_restarts_a_sidecar_only_after_its_network_parent() {
    // a and sidecar (network container:a); a new a that crashes. The
    // activity rolls back: the old sidecar can only start once the old a
    // runs again.
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let crash = format!("{EXIT_LABEL}=1");
    let v1 = doc(
        "a1",
        &[
            ("a", &[("image", ONE)]),
            ("sidecar", &[("image", ONE), ("network", "container:a")]),
        ],
    );
    assert_eq!(
        apply(&fake, dir.path(), &v1).outcome.status,
        Status::Completed
    );
    let (a, s) = (id_of(&fake, "a"), id_of(&fake, "sidecar"));
    let v2 = doc(
        "a2",
        &[
            ("a", &[("image", ONE), ("label", &crash)]),
            ("sidecar", &[("image", ONE), ("network", "container:a")]),
        ],
    );
    let r = apply(&fake, dir.path(), &v2);
    assert_eq!(r.outcome.status, Status::Incomplete, "{:?}", r.outcome);
    assert!(
        r.statuses().contains(&Status::RollbackSuccess),
        "{:?}",
        r.statuses()
    );
    assert_eq!((id_of(&fake, "a"), id_of(&fake, "sidecar")), (a, s));
    assert!(running(&fake, "a") && running(&fake, "sidecar"));
    assert_eq!(journal_left(dir.path()), None);
}

#[test]
fn review_a_failed_stop_blames_the_container_whose_stop_failed() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(
        &fake,
        dir.path(),
        &doc(
            "a1",
            &[
                ("a", &[("image", ONE), ("env", "X=1")]),
                ("b", &[("image", ONE)]),
            ],
        ),
    );
    let old = id_of(&fake, "a");
    fake.fail_next(Call::Stop(old.clone()), injected("stop"));
    let r = apply(
        &fake,
        dir.path(),
        &doc(
            "a2",
            &[
                ("a", &[("image", ONE), ("env", "X=2")]),
                ("b", &[("image", TWO)]),
            ],
        ),
    );
    assert_eq!(r.outcome.status, Status::Incomplete, "{:?}", r.outcome);
    assert!(r.statuses().contains(&Status::UpdateFailure));
    assert_eq!(
        r.outcome.failed,
        std::collections::BTreeSet::from(["a".to_string()]),
        "{:?}",
        r.outcome
    );
}

#[test]
fn review_a_failed_in_place_update_blames_its_container() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(
        &fake,
        dir.path(),
        &doc("a1", &[("a", &[("image", ONE), ("memory", "64M")])]),
    );
    let id = id_of(&fake, "a");
    fake.fail_next(Call::Update(id), injected("update"));
    let r = apply(
        &fake,
        dir.path(),
        &doc("a2", &[("a", &[("image", ONE), ("memory", "128M")])]),
    );
    assert_eq!(r.outcome.status, Status::Incomplete, "{:?}", r.outcome);
    assert_eq!(
        r.outcome.failed,
        std::collections::BTreeSet::from(["a".to_string()]),
        "{:?}",
        r.outcome
    );
}

#[test]
fn review_container_mode_a_failed_final_commit_write_does_not_strand_a_committed_old_container() {
    use crate::runtime::faults::Faulty;
    // Container mode: a (wave 0) passes and is committed on disk; b (wave
    // 1, dependsOn a) passes too; then the final commit write fails (a
    // full disk, say: the journal on disk stays as it was).
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let v = |x: &'static str| {
        let env: &'static str = if x == "1" { "X=1" } else { "X=2" };
        doc(
            "a",
            &[
                ("a", &[("image", ONE), ("env", env)]),
                ("b", &[("image", ONE), ("env", env), ("dependsOn", "a")]),
            ],
        )
    };
    apply(&fake, &state_dir, &v("1"));
    let (old_a, old_b) = (id_of(&fake, "a"), id_of(&fake, "b"));
    // Calls of the fresh wrapper: start#1 is a's, start#2 is b's.
    let faulty = Faulty::from_spec(fake, "start#2:delay=10s").unwrap();
    let blocker = state_dir.join(".journal.json.tmp");
    let opts = ExecuteOptions {
        rollback: RollbackMode::Container,
        ..options()
    };
    let b2 = blocker.clone();
    let r = apply_beside(
        &faulty,
        faulty.inner(),
        &state_dir,
        &v("2"),
        &opts,
        async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            // Every journal write fails from now on; journal.json stays.
            std::fs::create_dir(&b2).unwrap();
        },
    );
    std::fs::remove_dir(&blocker).unwrap();
    let fake = faulty.inner();
    // The next start: recovery, as always.
    block_on(recover(
        fake,
        &StateDir::open(&state_dir).unwrap(),
        labels::DEFAULT_INSTANCE,
    ))
    .unwrap();
    let now = (id_of(fake, "a"), id_of(fake, "b"));
    eprintln!("outcome {:?}\nnames {:?}", r.outcome, names(fake));
    assert_eq!(
        names(fake),
        ["a", "b"],
        "no old container stranded on a temporary name"
    );
    if now != (old_a.clone(), old_b.clone()) {
        assert!(
            !r.outcome
                .message
                .as_deref()
                .unwrap_or("")
                .contains("the previous containers run again"),
            "reported rolled back, but {now:?} are not the old {:?}",
            (old_a, old_b)
        );
    }
}

#[test]
fn review_container_mode_a_failing_sidecar_on_a_committed_parent_can_be_settled() {
    // Container mode: a gets a new version and passes; its sidecar (network
    // container:a) gets a new version that crashes and goes back on its own.
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let crash = format!("{EXIT_LABEL}=1");
    let v1 = doc(
        "a1",
        &[
            ("a", &[("image", ONE), ("env", "X=1")]),
            ("sidecar", &[("image", ONE), ("network", "container:a")]),
        ],
    );
    assert_eq!(
        apply(&fake, dir.path(), &v1).outcome.status,
        Status::Completed
    );
    let v2 = doc(
        "a2",
        &[
            ("a", &[("image", ONE), ("env", "X=2")]),
            (
                "sidecar",
                &[
                    ("image", ONE),
                    ("network", "container:a"),
                    ("label", &crash),
                ],
            ),
        ],
    );
    let opts = ExecuteOptions {
        rollback: RollbackMode::Container,
        ..options()
    };
    let (a, s) = (id_of(&fake, "a"), id_of(&fake, "sidecar"));
    let r = apply_with(&fake, dir.path(), &v2, &opts);
    eprintln!("outcome {:?}\nnames {:?}", r.outcome, names(&fake));
    assert_eq!(r.outcome.status, Status::Incomplete, "{:?}", r.outcome);
    assert_eq!(
        r.outcome.failed,
        std::collections::BTreeSet::from(["sidecar".to_string()])
    );
    assert_eq!(
        (id_of(&fake, "a"), id_of(&fake, "sidecar")),
        (a, s),
        "both old"
    );
    assert!(running(&fake, "a") && running(&fake, "sidecar"));
    assert_eq!(journal_left(dir.path()), None);
    // Whatever the activity did, recovery (the agent runs it before every
    // next activity, forever until it succeeds) must be able to finish.
    let recovered = block_on(recover(
        &fake,
        &StateDir::open(dir.path()).unwrap(),
        labels::DEFAULT_INSTANCE,
    ));
    eprintln!("recovered {recovered:?}\nnames {:?}", names(&fake));
    let again = block_on(recover(
        &fake,
        &StateDir::open(dir.path()).unwrap(),
        labels::DEFAULT_INSTANCE,
    ));
    assert!(again.is_ok(), "recovery can never finish: {again:?}");
}

#[test]
fn review_rollback_is_not_blocked_by_a_container_whose_id_starts_with_the_name() {
    // The engine resolves `inspect(name)` to an id prefix when no container
    // has that name: a component called `db` and any container whose id
    // starts with "db".
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    fake.add_container(runtime::ContainerDetails {
        id: format!("db{:062x}", 7),
        name: "someone-else".into(),
        state: runtime::ContainerState {
            status: runtime::Status::Running,
            ..Default::default()
        },
        ..Default::default()
    });
    apply(&fake, dir.path(), &doc("a1", &[("db", &[("image", ONE)])]));
    let old = id_of(&fake, "db");
    let crash = format!("{EXIT_LABEL}=1");
    let r = apply(
        &fake,
        dir.path(),
        &doc("a2", &[("db", &[("image", TWO), ("label", &crash)])]),
    );
    assert_eq!(r.outcome.status, Status::Incomplete, "{:?}", r.outcome);
    assert_eq!(id_of(&fake, "db"), old);
    assert!(running(&fake, "db"));
    assert_eq!(journal_left(dir.path()), None);
}

// Issue 20: feedback goes to the broker and the terminal; its reasons say
// which variable or argument changed, never its value.
#[test]
fn feedback_for_a_changed_secret_never_carries_its_value() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let v1 = doc(
        "secret-1",
        &[(
            "db",
            &[
                ("image", ONE),
                ("env", "DB_PASSWORD=hunter2-one"),
                ("cmd", "/bin/service"),
                ("cmd", "postgres://u:s3cr3t-one@db/x"),
            ],
        )],
    );
    apply(&fake, dir.path(), &v1);
    let v2 = doc(
        "secret-2",
        &[(
            "db",
            &[
                ("image", ONE),
                ("env", "DB_PASSWORD=hunter2-two"),
                ("cmd", "/bin/service"),
                ("cmd", "postgres://u:s3cr3t-two@db/x"),
            ],
        )],
    );
    let applied = apply(&fake, dir.path(), &v2);
    assert_eq!(applied.outcome.status, Status::Completed);
    let text = serde_json::to_string(&applied.feedback).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("s3cr3t"),
        "{text}"
    );
    assert!(text.contains("env DB_PASSWORD changed"), "{text}");
    assert!(text.contains("command changed (sensitive value)"), "{text}");
}

// ---------------------------------------------------------------------------
// Hooks (issue 22).
// ---------------------------------------------------------------------------

fn one_shot_creates(fake: &FakeRuntime) -> usize {
    fake.calls()
        .iter()
        .filter(|c| matches!(c, Call::Create(n) if n.ends_with(".berth-hook")))
        .count()
}

#[test]
fn a_pre_start_runs_in_a_one_shot_container_that_is_removed_after() {
    let fake = engine();
    fake.script("echo prepared", 0, "prepared\n");
    let dir = tempfile::tempdir().unwrap();
    let d = doc(
        "a1",
        &[("a", &[("image", ONE), ("preStart", "echo prepared")])],
    );
    let r = apply(&fake, dir.path(), &d);
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.outcome);
    assert_eq!(one_shot_creates(&fake), 1);
    assert_eq!(names(&fake), ["a"], "the one-shot was left");
}

#[test]
fn a_failing_pre_start_rolls_back_naming_its_code_and_output() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    let old = id_of(&fake, "a");
    fake.script("migrate-now", 3, "schema locked\n");
    let d = doc(
        "a2",
        &[("a", &[("image", TWO), ("preStart", "migrate-now")])],
    );
    let r = apply(&fake, dir.path(), &d);
    assert_eq!(r.outcome.status, Status::Incomplete, "{:?}", r.outcome);
    let message = r.outcome.message.clone().unwrap_or_default();
    assert!(
        message.contains("preStart exited with code 3; output: schema locked"),
        "{message}"
    );
    assert_eq!(id_of(&fake, "a"), old);
    assert!(running(&fake, "a"));
    assert_eq!(names(&fake), ["a"]);
}

#[test]
fn on_rollback_runs_after_a_failed_pre_start_and_its_outcome_is_reported() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    fake.script("migrate-now", 3, "");
    fake.script("restore-backup", 0, "");
    let d = doc(
        "a2",
        &[(
            "a",
            &[
                ("image", TWO),
                ("preStart", "migrate-now"),
                ("onRollback", "restore-backup"),
            ],
        )],
    );
    let r = apply(&fake, dir.path(), &d);
    assert_eq!(one_shot_creates(&fake), 2, "preStart and onRollback");
    let message = r.outcome.message.clone().unwrap_or_default();
    assert!(message.contains("a: onRollback ran (exit 0)"), "{message}");
}

#[test]
fn on_rollback_does_not_run_when_no_hook_ran() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    let d = doc(
        "a2",
        &[(
            "a",
            &[
                ("image", TWO),
                ("onRollback", "restore-backup"),
                ("label", &format!("{EXIT_LABEL}=1")),
            ],
        )],
    );
    let r = apply(&fake, dir.path(), &d);
    assert_eq!(r.outcome.status, Status::Incomplete, "{:?}", r.outcome);
    assert_eq!(one_shot_creates(&fake), 0);
}

#[test]
fn a_failing_post_start_rolls_back_naming_its_output() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    let old = id_of(&fake, "a");
    fake.script("self-check", 4, "port closed\n");
    let d = doc(
        "a2",
        &[("a", &[("image", TWO), ("postStart", "self-check")])],
    );
    let r = apply(&fake, dir.path(), &d);
    assert_eq!(r.outcome.status, Status::Incomplete, "{:?}", r.outcome);
    let message = r.outcome.message.clone().unwrap_or_default();
    assert!(
        message.contains("postStart exited with code 4; output: port closed"),
        "{message}"
    );
    assert!(fake.calls().iter().any(
        |c| matches!(c, Call::Exec(_, argv) if argv.last().is_some_and(|a| a == "self-check"))
    ));
    assert_eq!(id_of(&fake, "a"), old);
}

#[test]
fn a_reapply_runs_no_hook() {
    let fake = engine();
    fake.script("true", 0, "");
    let dir = tempfile::tempdir().unwrap();
    let d = doc(
        "a1",
        &[(
            "a",
            &[("image", ONE), ("preStart", "true"), ("postStart", "true")],
        )],
    );
    apply(&fake, dir.path(), &d);
    let before = fake.calls().len();
    apply(&fake, dir.path(), &d);
    assert_eq!(fake.calls().len(), before);
}

#[test]
fn a_drift_repair_puts_a_removed_container_back_without_its_hooks() {
    let fake = engine();
    fake.script("true", 0, "");
    let dir = tempfile::tempdir().unwrap();
    let d = doc("a1", &[("a", &[("image", ONE), ("preStart", "true")])]);
    apply(&fake, dir.path(), &d);
    assert_eq!(one_shot_creates(&fake), 1);
    block_on(fake.remove("a")).unwrap();
    let drift = ExecuteOptions {
        drift_repair: true,
        ..options()
    };
    let r = apply_with(&fake, dir.path(), &d, &drift);
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.outcome);
    assert!(running(&fake, "a"));
    assert_eq!(one_shot_creates(&fake), 1, "the drift repair ran preStart");
}

#[test]
fn a_drift_repair_that_replaces_a_changed_spec_runs_the_hooks() {
    let fake = engine();
    fake.script("true", 0, "");
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("a1", &[("a", &[("image", ONE)])]));
    let d = doc("a2", &[("a", &[("image", TWO), ("preStart", "true")])]);
    let drift = ExecuteOptions {
        drift_repair: true,
        ..options()
    };
    apply_with(&fake, dir.path(), &d, &drift);
    assert_eq!(one_shot_creates(&fake), 1);
}

/// A one-shot container of `a` that its hook could not remove, recorded
/// (not undone) in the journal `interrupted` left.
fn stranded_one_shot(fake: &FakeRuntime, dir: &std::path::Path) -> String {
    let d = doc("a2", &[("a", &[("image", ONE)])]);
    block_on(async {
        let request = runtime::CreateRequest {
            name: "a.berth-hook".into(),
            config: d.containers[0].config.clone(),
            labels: Default::default(),
            extra_hosts: vec![],
            inherited_volumes: vec![],
            networks: vec![],
        };
        let id = fake.create(&request).await.unwrap();
        let state = StateDir::open(dir).unwrap();
        let mut journal = state.read_journal().unwrap().expect("a journal");
        journal.push(Effect::OneShot {
            name: "a".into(),
            purpose: "preStart".into(),
            temp: "a.berth-hook".into(),
            id: Some(id.clone()),
            image: ONE.into(),
            migration: None,
        });
        state.write_journal(&journal).unwrap();
        id
    })
}

#[test]
fn recovery_of_an_uncommitted_activity_removes_its_one_shot_container() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = interrupted(&fake, dir.path(), false);
    stranded_one_shot(&fake, dir.path());
    block_on(recover(
        &fake,
        &StateDir::open(dir.path()).unwrap(),
        labels::DEFAULT_INSTANCE,
    ))
    .unwrap();
    assert_eq!(names(&fake), ["a"]);
    assert_eq!(id_of(&fake, "a"), old);
}

#[test]
fn recovery_of_a_committed_activity_removes_its_one_shot_container_too() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let (_, new) = interrupted(&fake, dir.path(), true);
    stranded_one_shot(&fake, dir.path());
    block_on(recover(
        &fake,
        &StateDir::open(dir.path()).unwrap(),
        labels::DEFAULT_INSTANCE,
    ))
    .unwrap();
    assert_eq!(names(&fake), ["a"]);
    assert_eq!(id_of(&fake, "a"), new);
}

#[test]
fn a_leftover_one_shot_of_ours_does_not_block_the_next_hook() {
    let fake = engine();
    fake.script("true", 0, "");
    let dir = tempfile::tempdir().unwrap();
    let d = doc("a1", &[("a", &[("image", ONE), ("preStart", "true")])]);
    block_on(async {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert(labels::MANAGED.to_string(), "true".to_string());
        labels.insert(
            labels::INSTANCE.to_string(),
            labels::DEFAULT_INSTANCE.to_string(),
        );
        labels.insert(labels::ONE_SHOT.to_string(), "preStart".to_string());
        let request = runtime::CreateRequest {
            name: "a.berth-hook".into(),
            config: d.containers[0].config.clone(),
            labels,
            extra_hosts: vec![],
            inherited_volumes: vec![],
            networks: vec![],
        };
        fake.create(&request).await.unwrap();
    });
    let r = apply_as_is(&fake, dir.path(), &d, &options());
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.outcome);
    assert_eq!(names(&fake), ["a"]);
}

// --- orchestrated: the same phases, one per command ---

/// Runs `desired` orchestrated with `commands` queued (then the channel
/// closes, as at shutdown).
fn orchestrated(
    fake: &FakeRuntime,
    dir: &std::path::Path,
    desired: &DesiredState,
    commands: &[&str],
) -> Applied {
    let commands: Vec<(&str, &str)> = commands.iter().map(|c| (*c, "")).collect();
    orchestrated_for(fake, dir, desired, &commands)
}

/// As [`orchestrated`], each command for a baseline (`""`: none).
fn orchestrated_for(
    fake: &FakeRuntime,
    dir: &std::path::Path,
    desired: &DesiredState,
    commands: &[(&str, &str)],
) -> Applied {
    block_on(async {
        let state = StateDir::open(dir).unwrap();
        let observed = observe::gather_for(fake, desired).await.unwrap();
        let plan = plan::compute(desired, &observed, &PlanOptions::default());
        let mut tracker = Tracker::new(&desired.activity_id, "containers");
        let mut feedback = Vec::new();
        let mut sink = |f: Feedback| feedback.push(f);
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        for (c, baseline) in commands {
            let text = format!(
                r#"{{"activityId":"{}","payload":{{"command":"{c}","baseline":"{baseline}"}}}}"#,
                desired.activity_id
            );
            tx.send(Order::Command(
                crate::orchestrate::parse(text.as_bytes()).unwrap(),
            ))
            .await
            .unwrap();
        }
        drop(tx);
        let activity = Activity {
            desired,
            plan: &plan,
            observed: &observed,
        };
        let outcome = orchestrate(
            fake,
            &state,
            activity,
            &options(),
            &mut tracker,
            &mut sink,
            &mut rx,
            Duration::from_secs(600),
        )
        .await
        .unwrap();
        Applied { outcome, feedback }
    })
}

#[test]
fn orchestrated_phases_in_order_end_completed_with_the_new_version() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("o0", &[("a", &[("image", ONE)])]));
    let r = orchestrated(
        &fake,
        dir.path(),
        &doc("o1", &[("a", &[("image", TWO)])]),
        &["DOWNLOAD", "UPDATE", "ACTIVATE", "CLEANUP"],
    );
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.statuses());
    assert_eq!(fake.container("a").unwrap().image_ref, TWO);
    assert!(running(&fake, "a"));
    assert_eq!(names(&fake), ["a"]);
    assert!(StateDir::open(dir.path())
        .unwrap()
        .read_journal()
        .unwrap()
        .is_none());
}

#[test]
fn orchestrated_phases_for_one_baseline_touch_only_its_containers() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let both = |id, image| {
        doc(
            id,
            &[("a", &[("image", image)]), ("b", &[("image", image)])],
        )
    };
    apply(&fake, dir.path(), &both("o0", ONE));
    let b_before = id_of(&fake, "b");
    let a = "containers:a";
    let r = orchestrated_for(
        &fake,
        dir.path(),
        &both("o1", TWO),
        &[
            ("DOWNLOAD", a),
            ("UPDATE", a),
            ("ACTIVATE", a),
            ("CLEANUP", a),
        ],
    );
    // b's baseline never got a command: berth stops, a keeps its new version.
    assert_eq!(r.outcome.status, Status::Incomplete, "{:?}", r.statuses());
    let message = r.outcome.message.clone().unwrap_or_default();
    assert!(message.contains("a keep their new version"), "{message}");
    assert_eq!(fake.container("a").unwrap().image_ref, TWO);
    assert_eq!(fake.container("b").unwrap().image_ref, ONE);
    assert_eq!(id_of(&fake, "b"), b_before);
    assert!(running(&fake, "a") && running(&fake, "b"));
    assert_eq!(names(&fake), ["a", "b"]);
}

#[test]
fn orchestrated_completes_once_every_baseline_is_activated_and_cleaned_up() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let both = |id, image| {
        doc(
            id,
            &[("a", &[("image", image)]), ("b", &[("image", image)])],
        )
    };
    apply(&fake, dir.path(), &both("o0", ONE));
    let (a, b) = ("containers:a", "containers:b");
    let r = orchestrated_for(
        &fake,
        dir.path(),
        &both("o1", TWO),
        &[
            ("DOWNLOAD", b),
            ("DOWNLOAD", a),
            ("UPDATE", a),
            ("UPDATE", b),
            ("ACTIVATE", a),
            ("CLEANUP", a),
            ("ACTIVATE", b),
            ("CLEANUP", b),
        ],
    );
    assert_eq!(r.outcome.status, Status::Completed, "{:?}", r.statuses());
    assert_eq!(fake.container("a").unwrap().image_ref, TWO);
    assert_eq!(fake.container("b").unwrap().image_ref, TWO);
    assert_eq!(names(&fake), ["a", "b"]);
    assert!(StateDir::open(dir.path())
        .unwrap()
        .read_journal()
        .unwrap()
        .is_none());
}

#[test]
fn orchestrated_rollback_of_one_baseline_keeps_the_others_log_for_the_cleanup() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    let both = |id, image| {
        doc(
            id,
            &[("a", &[("image", image)]), ("b", &[("image", image)])],
        )
    };
    apply(&fake, dir.path(), &both("o0", ONE));
    let before = (id_of(&fake, "a"), id_of(&fake, "b"));
    let (a, b) = ("containers:a", "containers:b");
    let r = orchestrated_for(
        &fake,
        dir.path(),
        &both("o1", TWO),
        &[
            ("DOWNLOAD", a),
            ("DOWNLOAD", b),
            ("UPDATE", a),
            ("UPDATE", b),
            ("ROLLBACK", a),
            ("ACTIVATE", b),
            ("CLEANUP", b),
        ],
    );
    let refused = r
        .feedback
        .iter()
        .find(|f| f.payload.status == Status::ActivationFailure)
        .and_then(|f| f.payload.message.clone())
        .unwrap_or_default();
    assert!(
        refused.contains("baseline containers:a ended with ROLLBACK_SUCCESS"),
        "{refused}"
    );
    assert_eq!(r.outcome.status, Status::Incomplete, "{:?}", r.statuses());
    // b, stopped by its UPDATE, is restored from the log the rollback of a kept.
    assert_eq!((id_of(&fake, "a"), id_of(&fake, "b")), before);
    assert!(running(&fake, "a") && running(&fake, "b"));
    assert_eq!(names(&fake), ["a", "b"]);
}

#[test]
fn orchestrated_rollback_after_download_removes_the_new_containers_only() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("o0", &[("a", &[("image", ONE)])]));
    let before = id_of(&fake, "a");
    let r = orchestrated(
        &fake,
        dir.path(),
        &doc("o1", &[("a", &[("image", TWO)])]),
        &["DOWNLOAD", "ROLLBACK", "CLEANUP"],
    );
    let s = r.statuses();
    assert!(s.contains(&Status::RollbackSuccess), "{s:?}");
    assert_eq!(
        &s[s.len() - 2..],
        [Status::CleanupSuccess, Status::Incomplete]
    );
    assert_eq!(id_of(&fake, "a"), before);
    assert!(running(&fake, "a"));
    assert_eq!(names(&fake), ["a"]);
}

#[test]
fn an_orchestrated_activity_ended_by_shutdown_after_update_is_undone() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("o0", &[("a", &[("image", ONE)])]));
    let before = id_of(&fake, "a");
    let r = orchestrated(
        &fake,
        dir.path(),
        &doc("o1", &[("a", &[("image", TWO)])]),
        &["DOWNLOAD", "UPDATE"],
    );
    assert_eq!(r.outcome.status, Status::Incomplete);
    assert!(
        r.outcome
            .message
            .as_deref()
            .is_some_and(|m| m.contains("berth is stopping")),
        "{:?}",
        r.outcome
    );
    assert_eq!(id_of(&fake, "a"), before);
    assert!(running(&fake, "a"));
    assert_eq!(names(&fake), ["a"]);
}

#[test]
fn an_orchestrated_command_out_of_order_changes_nothing() {
    let fake = engine();
    let dir = tempfile::tempdir().unwrap();
    apply(&fake, dir.path(), &doc("o0", &[("a", &[("image", ONE)])]));
    let r = orchestrated(
        &fake,
        dir.path(),
        &doc("o1", &[("a", &[("image", TWO)])]),
        &["ACTIVATE"],
    );
    let refused = r
        .feedback
        .iter()
        .find(|f| f.payload.status == Status::ActivationFailure)
        .expect("refused");
    assert_eq!(
        refused.payload.message.as_deref(),
        Some("ACTIVATE is possible only after status UPDATE_SUCCESS is reported")
    );
    assert_eq!(fake.container("a").unwrap().image_ref, ONE);
    assert!(!r.statuses().contains(&Status::Downloading));
}
