//! Executor specification against the in-memory engine.

use super::*;
use crate::feedback::{Feedback, Status, Tracker};
use crate::journal::{Journal, StateDir};
use crate::observe;
use crate::observe::Observed;
use crate::plan::{self, PlanOptions};
use crate::runtime::fake::{Call, FakeRuntime, EXIT_LABEL};
use crate::runtime::{Runtime, RuntimeError};
use crate::spec::DesiredState;
use crate::test_support::{block_on, desired, service_image as image};

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

/// Leaves the engine as a crash in the middle of replacing `a` would.
fn interrupted(fake: &FakeRuntime, dir: &std::path::Path, activated: bool) -> (String, String) {
    apply(fake, dir, &doc("a1", &[("a", &[("image", ONE)])]));
    let old = id_of(fake, "a");
    let d = doc("a2", &[("a", &[("image", TWO)])]);
    block_on(async {
        fake.pull(TWO, &|_| {}).await.unwrap();
        let request = runtime::CreateRequest {
            name: "a.berth-new".into(),
            config: d.containers[0].config.clone(),
            labels: labels::for_spec(&d.containers[0], None, labels::DEFAULT_INSTANCE),
            extra_hosts: vec![],
            inherited_volumes: vec![],
            networks: vec![],
        };
        let new = fake.create(&request).await.unwrap();
        fake.stop(&old, Duration::from_secs(1)).await.unwrap();
        fake.rename(&old, "a.berth-old").await.unwrap();
        fake.rename(&new, "a").await.unwrap();
        fake.start(&new).await.unwrap();
        let state = StateDir::open(dir).unwrap();
        let mut journal = Journal {
            activity_id: "a2".into(),
            phase: "activating".into(),
            entries: vec![],
        };
        let e = journal.entry("a");
        e.old_id = Some(old.clone());
        e.old_running = true;
        e.new_id = Some(new.clone());
        e.activated = activated;
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
fn recovery_keeps_a_new_container_that_passed_its_gate() {
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
    let d = doc("a2", &[("a", &[("image", ONE)])]);
    block_on(async {
        let request = runtime::CreateRequest {
            name: "a.berth-new".into(),
            config: d.containers[0].config.clone(),
            labels: labels::for_spec(&d.containers[0], None, labels::DEFAULT_INSTANCE),
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
    assert_eq!(names(&fake), ["a"]);
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
        let mut journal = Journal {
            activity_id: "a2".into(),
            phase: "updating".into(),
            entries: vec![],
        };
        let e = journal.entry("a");
        e.old_id = Some(old.clone());
        e.old_running = true;
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
    let steps: Vec<Step> = plan
        .actions
        .iter()
        .map(|entry| Step {
            entry,
            spec: d.container(&entry.id),
            old: None,
            new_id: None,
            old_stopped: false,
            old_renamed: false,
            new_named: false,
            updated: false,
            started: false,
            done: false,
        })
        .collect();
    let names: Vec<Vec<&str>> = waves(&steps)
        .into_iter()
        .map(|w| w.into_iter().map(|i| steps[i].name()).collect())
        .collect();
    assert_eq!(names, vec![vec!["a", "c"], vec!["b"]]);
}
