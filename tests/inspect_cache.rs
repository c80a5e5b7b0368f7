//! The engine's inspects reused between lists (`runtime::cache`), against
//! the real engine: a list where nothing changed inspects no container
//! whatever their number, and every change made behind berth's back — a
//! `docker update`, a rename, a stop, a network connect, a container
//! recreated by hand under the same name and labels — is still seen by the
//! next list, in the same process and across processes (the CLI's cache in
//! its state directory).
//!
//! Each test lists through its own [`EngineView`], so it sees only its own
//! containers while other tests work on the same engine.

use std::path::Path;

use berth::runtime::docker::DockerRuntime;
use berth::runtime::{ContainerDetails, Runtime, Status};

use crate::cli_apply::{inspect, Device};
use crate::util::{docker, image, unique, Cleanup, EngineView};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// A view with `n` running containers of its own, each with a label and
/// restart policy `unless-stopped`, as berth creates them.
struct Fleet {
    prefix: String,
    names: Vec<String>,
    view: EngineView,
    _cleanup: Vec<Cleanup>,
}

impl Fleet {
    fn new(tag: &str, n: usize) -> Self {
        let prefix = unique(&format!("cache-{tag}-"));
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
        let cleanup = names.iter().map(|n| Cleanup(n.clone())).collect();
        for name in &names {
            run(name);
        }
        Self {
            view: EngineView::new(&prefix),
            prefix,
            names,
            _cleanup: cleanup,
        }
    }

    async fn connect(&self) -> DockerRuntime {
        DockerRuntime::connect(Some(&self.view.host()))
            .await
            .expect("engine answers")
    }
}

/// `docker run -d` of a service container labelled as berth labels its own.
fn run(name: &str) {
    docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--label",
        "berth.test=cache",
        "--restart",
        "unless-stopped",
        &image("service", "1"),
    ]);
}

/// One list, and how many containers it inspected.
async fn list(rt: &DockerRuntime) -> (Vec<ContainerDetails>, u64) {
    let before = rt.inspects_made();
    let listed = rt.list().await.expect("list");
    (listed, rt.inspects_made() - before)
}

fn find<'a>(listed: &'a [ContainerDetails], name: &str) -> &'a ContainerDetails {
    listed
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("{name} not listed: {listed:?}"))
}

#[test]
fn a_list_where_nothing_changed_inspects_no_container_whatever_their_number() {
    for n in [3, 15] {
        let fleet = Fleet::new(&format!("noop{n}"), n);
        block_on(async {
            let rt = fleet.connect().await;
            let (first, inspected) = list(&rt).await;
            assert_eq!(first.len(), n);
            assert_eq!(inspected, n as u64, "the first list inspects each");
            let (second, inspected) = list(&rt).await;
            assert_eq!(inspected, 0, "N = {n}: the second list inspected");
            assert_eq!(second, first, "N = {n}: the cache changed what is seen");
        });
    }
}

#[test]
fn a_docker_update_of_the_restart_policy_is_seen_by_the_next_list() {
    let fleet = Fleet::new("update", 2);
    block_on(async {
        let rt = fleet.connect().await;
        list(&rt).await;
        docker(&["update", "--restart", "no", &fleet.names[0]]);
        let (listed, inspected) = list(&rt).await;
        assert_eq!(find(&listed, &fleet.names[0]).restart_policy, "no");
        assert_eq!(
            find(&listed, &fleet.names[1]).restart_policy,
            "unless-stopped"
        );
        assert_eq!(inspected, 1, "only the updated container is inspected");
    });
}

#[test]
fn a_rename_is_seen_by_the_next_list() {
    let fleet = Fleet::new("rename", 1);
    let renamed = format!("{}renamed", fleet.prefix);
    let _gone = Cleanup(renamed.clone());
    block_on(async {
        let rt = fleet.connect().await;
        list(&rt).await;
        docker(&["rename", &fleet.names[0], &renamed]);
        let (listed, _) = list(&rt).await;
        let names: Vec<&str> = listed.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, [renamed.as_str()]);
    });
}

#[test]
fn a_stopped_container_is_seen_by_the_next_list() {
    let fleet = Fleet::new("stop", 1);
    block_on(async {
        let rt = fleet.connect().await;
        list(&rt).await;
        docker(&["stop", "-t", "1", &fleet.names[0]]);
        let (listed, _) = list(&rt).await;
        let stopped = find(&listed, &fleet.names[0]);
        assert_eq!(stopped.state.status, Status::Exited);
        assert!(stopped.state.finished_at.is_some(), "{stopped:?}");
    });
}

#[test]
fn a_container_recreated_by_hand_with_the_same_name_and_labels_is_seen_by_the_next_list() {
    let fleet = Fleet::new("recreate", 1);
    block_on(async {
        let rt = fleet.connect().await;
        let (before, _) = list(&rt).await;
        let old_id = find(&before, &fleet.names[0]).id.clone();
        docker(&["rm", "-f", &fleet.names[0]]);
        run(&fleet.names[0]);
        let (after, inspected) = list(&rt).await;
        let new = find(&after, &fleet.names[0]);
        assert_ne!(new.id, old_id);
        assert_eq!(
            new.id,
            docker(&["inspect", "-f", "{{.Id}}", &fleet.names[0]])
        );
        assert_eq!(inspected, 1);
    });
}

#[test]
fn a_network_connected_by_hand_is_seen_by_the_next_list() {
    let fleet = Fleet::new("net", 1);
    let network = format!("{}net", fleet.prefix);
    docker(&["network", "create", &network]);
    struct Network(String);
    impl Drop for Network {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", &self.0])
                .output();
        }
    }
    let _network = Network(network.clone());
    block_on(async {
        let rt = fleet.connect().await;
        list(&rt).await;
        docker(&[
            "network",
            "connect",
            "--alias",
            "db",
            &network,
            &fleet.names[0],
        ]);
        let (listed, _) = list(&rt).await;
        let networks = &find(&listed, &fleet.names[0]).networks;
        assert!(
            networks
                .get(&network)
                .is_some_and(|a| a.iter().any(|a| a == "db")),
            "{networks:?}"
        );
        docker(&["network", "disconnect", &network, &fleet.names[0]]);
    });
}

#[test]
fn the_cache_kept_in_a_file_serves_the_next_process_and_still_sees_an_update() {
    let fleet = Fleet::new("file", 3);
    let dir = tempfile::tempdir().expect("state dir");
    let file = dir.path().join("inspect-cache.json");
    block_on(async {
        let rt = fleet.connect().await;
        rt.keep_inspect_cache_in(file.clone(), berth::redact::Redactor::default())
            .await;
        list(&rt).await;
    });
    assert_private(&file);
    docker(&["update", "--restart", "on-failure:3", &fleet.names[2]]);
    block_on(async {
        // A new process: nothing in memory, only the file.
        let rt = fleet.connect().await;
        rt.keep_inspect_cache_in(file.clone(), berth::redact::Redactor::default())
            .await;
        let (listed, inspected) = list(&rt).await;
        let updated = find(&listed, &fleet.names[2]);
        assert_eq!(
            (updated.restart_policy.as_str(), updated.restart_max_retries),
            ("on-failure", 3)
        );
        assert_eq!(inspected, 1, "the two others come from the file");
    });
}

#[test]
fn a_cache_file_from_another_engine_is_not_used() {
    let fleet = Fleet::new("other", 2);
    let dir = tempfile::tempdir().expect("state dir");
    let file = dir.path().join("inspect-cache.json");
    block_on(async {
        let rt = fleet.connect().await;
        rt.keep_inspect_cache_in(file.clone(), berth::redact::Redactor::default())
            .await;
        list(&rt).await;
        // The same containers through another endpoint: another engine for
        // all berth knows.
        let other = EngineView::new(&fleet.prefix);
        let rt = DockerRuntime::connect(Some(&other.host()))
            .await
            .expect("engine answers");
        rt.keep_inspect_cache_in(file.clone(), berth::redact::Redactor::default())
            .await;
        let (_, inspected) = list(&rt).await;
        assert_eq!(inspected, 2);
    });
}

/// The cache holds what inspect shows, environment values included.
fn assert_private(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file)
        .expect("the cache file was written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{file:?} is {mode:o}");
}

#[test]
fn berth_apply_puts_back_a_restart_policy_changed_by_hand_between_two_runs() {
    let device = Device::new("cache-update");
    let name = device.name("a");
    let doc = device.doc("v1", &[(&name, "1", &[("image", &image("service", "1"))])]);
    device.apply_ok(&doc, &[]);
    let policy = || inspect(&name)["HostConfig"]["RestartPolicy"]["Name"].clone();
    let wanted = policy();
    // The second run leaves its inspects in the state directory.
    device.apply_ok(&doc, &[]);
    assert!(
        device
            .state_files()
            .iter()
            .any(|f| f == "inspect-cache.json"),
        "{:?}",
        device.state_files()
    );
    docker(&["update", "--restart", "no", &name]);
    let third = device.apply_ok(&doc, &[]);
    assert!(
        third.action_reached(&name, "UPDATING"),
        "the change was not seen\n{third}"
    );
    assert_eq!(policy(), wanted, "{third}");
}
