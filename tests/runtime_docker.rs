//! The bollard runtime against the real engine: what berth creates reads back
//! as the same configuration (so a fresh container plans as `keep`), every
//! life-cycle call does what it says, every 404 says what was missing, and
//! the client's request timeout cuts off neither long stops, slow pulls nor
//! the event stream.

use std::time::Duration;

use futures_util::StreamExt;

use berth::labels;
use berth::observe;
use berth::plan::{self, Action, PlanOptions};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::{CreateRequest, Missing, Runtime, RuntimeError, Status};
use berth::spec::model::NetworkMode;
use berth::spec::{self, ContainerSpec, DesiredState};

use crate::util::{desired_state, docker, image, unique, Cleanup};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

fn desired(name: &str, config: &[(&str, &str)]) -> DesiredState {
    let text = desired_state("runtime-test", &[(name, "1", config)]);
    match spec::parse(&text, &Default::default()) {
        Ok(a) => a.desired,
        Err(r) => panic!("{r}"),
    }
}

async fn connect() -> DockerRuntime {
    DockerRuntime::connect(None).await.expect("engine answers")
}

async fn create(rt: &DockerRuntime, spec: &ContainerSpec) -> String {
    create_on(rt, spec, Vec::new()).await.expect("create")
}

/// Creates `spec` (pulling its image when missing), attached to `networks`
/// besides the one its network mode names.
async fn create_on(
    rt: &DockerRuntime,
    spec: &ContainerSpec,
    networks: Vec<(String, Vec<String>)>,
) -> Result<String, RuntimeError> {
    let reference = spec.config.image.to_string();
    let image = rt.image(&reference).await.unwrap();
    if image.is_none() {
        rt.pull(&reference, &|_| {}).await.expect("pull");
    }
    let image_id = rt.image(&reference).await.unwrap().map(|i| i.id);
    let request = CreateRequest {
        name: spec.name.clone(),
        config: spec.config.clone(),
        labels: labels::for_spec(spec, image_id.as_deref(), labels::DEFAULT_INSTANCE),
        extra_hosts: spec
            .config
            .extra_hosts
            .iter()
            .map(|h| match &h.target {
                spec::model::HostTarget::Ip(ip) => format!("{}:{ip}", h.name),
                _ => format!("{}:host-gateway", h.name),
            })
            .collect(),
        inherited_volumes: Vec::new(),
        networks,
    };
    rt.create(&request).await
}

/// One service container's spec, its network mode set to `network`.
fn service_on(name: &str, network: NetworkMode) -> ContainerSpec {
    let img = image("service", "1");
    let network = network.to_string();
    let mut config = vec![("image", img.as_str())];
    if network != "bridge" {
        config.push(("network", network.as_str()));
    }
    desired(name, &config).containers.remove(0)
}

/// A user network that exists for as long as the guard lives.
struct TestNetwork(String);

impl TestNetwork {
    fn new(name: &str) -> Self {
        docker(&["network", "create", name]);
        Self(name.to_string())
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

#[test]
fn a_container_berth_created_plans_as_keep() {
    let name = unique("roundtrip");
    let _cleanup = Cleanup(name.clone());
    let volume = unique("roundtrip-vol");
    let dir = tempfile::tempdir().unwrap();
    let bind = format!("{}:/etc/bound:ro", dir.path().display());
    let port = format!("127.0.0.1:{}:8080", crate::util::free_port());
    let vol = format!("{volume}:/var/lib/app");
    let img = image("service", "1");
    let config: Vec<(&str, &str)> = vec![
        ("image", &img),
        ("env", "MODE=test"),
        ("env", "EMPTY="),
        ("env", "IMAGE_DEFAULT"),
        ("port", &port),
        ("mount", &bind),
        ("volume", &vol),
        ("label", "org.example.team=edge"),
        ("memory", "64M"),
        ("memoryReservation", "32M"),
        ("cpus", "0.5"),
        ("restartPolicy", "on-failure"),
        ("restartMaxRetries", "3"),
        ("logMaxFiles", "3"),
        ("logMaxSize", "10M"),
        ("logMode", "non-blocking"),
        ("healthCmd", "test -f /tmp/version"),
        ("healthInterval", "2s"),
        ("healthRetries", "2"),
        ("stopTimeout", "5s"),
        ("stopSignal", "SIGINT"),
        ("workdir", "/tmp"),
        ("user", "0:0"),
        ("hostName", "roundtrip"),
        ("host", "ntp:192.0.2.123"),
        ("host", "gateway:host_ip"),
        ("entrypoint", "/bin/sh"),
        ("entrypoint", "-c"),
        ("cmd", "exec /bin/service"),
        ("terminal", "true"),
    ];
    let d = desired(&name, &config);
    let plan = block_on(async {
        let rt = connect().await;
        let id = create(&rt, &d.containers[0]).await;
        rt.start(&id).await.expect("start");
        let observed = observe::gather_for(&rt, &d).await.unwrap();
        plan::compute(&d, &observed, &PlanOptions::default())
    });
    // The container goes first: a volume in use cannot be removed.
    drop(_cleanup);
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", "-f", &volume])
        .output();
    let entry = plan.entry(&name).expect("entry");
    assert_eq!(entry.action, Action::Keep, "{entry:#?}");
}

#[test]
fn update_changes_limits_without_a_restart() {
    let name = unique("update");
    let _cleanup = Cleanup(name.clone());
    let img = image("service", "1");
    let before = desired(&name, &[("image", &img), ("memory", "64M")]);
    let after = desired(
        &name,
        &[
            ("image", &img),
            ("memory", "128M"),
            ("restartPolicy", "always"),
        ],
    );
    let (id, plan) = block_on(async {
        let rt = connect().await;
        let id = create(&rt, &before.containers[0]).await;
        rt.start(&id).await.unwrap();
        let started = rt.inspect(&id).await.unwrap().unwrap().state.started_at;
        rt.update(&id, &after.containers[0].config)
            .await
            .expect("update");
        let now = rt.inspect(&id).await.unwrap().unwrap();
        assert_eq!(now.state.started_at, started, "update must not restart");
        assert_eq!(now.memory, 128 << 20);
        assert_eq!(now.restart_policy, "always");
        let observed = observe::gather_for(&rt, &after).await.unwrap();
        (
            id,
            plan::compute(&after, &observed, &PlanOptions::default()),
        )
    });
    let entry = plan.entry(&name).unwrap();
    assert_eq!(entry.action, Action::Keep, "{entry:#?}");
    assert_eq!(entry.container_id.as_deref(), Some(id.as_str()));
}

#[test]
fn stop_rename_and_remove_keep_named_volumes() {
    let name = unique("lifecycle");
    let renamed = unique("lifecycle-old");
    let _cleanup = (Cleanup(name.clone()), Cleanup(renamed.clone()));
    let volume = unique("lifecycle-vol");
    let img = image("service", "1");
    let vol = format!("{volume}:/data");
    let d = desired(&name, &[("image", &img), ("volume", &vol)]);
    block_on(async {
        let rt = connect().await;
        let id = create(&rt, &d.containers[0]).await;
        rt.start(&id).await.unwrap();
        rt.stop(&id, Duration::from_secs(30)).await.expect("stop");
        let stopped = rt.inspect(&id).await.unwrap().unwrap();
        assert_eq!(stopped.state.status, Status::Exited);
        assert_eq!(stopped.state.exit_code, 0, "SIGTERM is trapped, so no kill");
        rt.stop(&id, Duration::from_secs(1))
            .await
            .expect("stopping a stopped container is fine");
        rt.rename(&id, &renamed).await.expect("rename");
        assert!(rt.inspect(&name).await.unwrap().is_none());
        assert_eq!(rt.inspect(&renamed).await.unwrap().unwrap().id, id);
        rt.remove(&id).await.expect("remove");
        assert!(rt.inspect(&id).await.unwrap().is_none());
    });
    assert_eq!(
        docker(&["volume", "inspect", "--format", "{{.Name}}", &volume]),
        volume
    );
    docker(&["volume", "rm", &volume]);
}

#[test]
fn pulling_a_missing_tag_is_an_error_that_names_it() {
    let reference = image("service", "does-not-exist");
    let err = block_on(async { connect().await.pull(&reference, &|_| {}).await.unwrap_err() });
    assert_eq!(
        err,
        RuntimeError::not_found(Missing::Image, reference.clone())
    );
    assert_eq!(err.to_string(), format!("image {reference} not found"));
}

#[test]
fn pulling_reports_progress_and_makes_the_image_present() {
    // A tag of its own, so removing it locally disturbs no other test.
    let tag = format!("pull-{}", std::process::id());
    let reference = image("volume", &tag);
    docker(&["tag", &image("volume", "1"), &reference]);
    docker(&["push", "-q", &reference]);
    docker(&["rmi", &reference]);
    let progress = std::sync::Mutex::new(Vec::new());
    let present = block_on(async {
        let rt = connect().await;
        rt.pull(&reference, &|p| progress.lock().unwrap().push(p.percent()))
            .await
            .expect("pull");
        rt.image(&reference).await.unwrap().is_some()
    });
    let _ = std::process::Command::new("docker")
        .args(["rmi", &reference])
        .output();
    assert!(present);
    assert!(progress.lock().unwrap().iter().all(|p| *p <= 100));
}

#[test]
fn an_unreachable_engine_is_unavailable() {
    let err = block_on(DockerRuntime::connect(Some(
        "unix:///nonexistent/docker.sock",
    )))
    .unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/docker.sock"));
}

#[test]
fn events_report_a_container_start() {
    let name = unique("events");
    let _cleanup = Cleanup(name.clone());
    let img = image("service", "1");
    let d = desired(&name, &[("image", &img)]);
    let seen = block_on(async {
        let rt = connect().await;
        let id = create(&rt, &d.containers[0]).await;
        let mut events = rt.events();
        rt.start(&id).await.unwrap();
        let wait = async {
            while let Some(event) = events.next().await {
                let event = event.expect("event stream");
                if event.id == id && event.action == "start" {
                    return Some(event.name);
                }
            }
            None
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .ok()
            .flatten()
    });
    assert_eq!(seen.as_deref(), Some(name.as_str()));
}

#[test]
fn pulling_a_missing_repository_reports_the_image() {
    let reference = image("no-such-repository", "1");
    let err = block_on(async { connect().await.pull(&reference, &|_| {}).await.unwrap_err() });
    assert_eq!(err, RuntimeError::not_found(Missing::Image, reference));
}

#[test]
fn the_registry_digest_of_a_missing_tag_reports_the_image() {
    let reference = image("service", "does-not-exist");
    let err = block_on(async {
        connect()
            .await
            .registry_digest(&reference)
            .await
            .unwrap_err()
    });
    assert_eq!(err, RuntimeError::not_found(Missing::Image, reference));
}

#[test]
fn creating_from_a_missing_image_reports_the_image() {
    let name = unique("no-image");
    let _cleanup = Cleanup(name.clone());
    let reference = image("service", "never-pulled");
    let d = desired(&name, &[("image", &reference)]);
    let err = block_on(async {
        let rt = connect().await;
        let request = CreateRequest {
            name: name.clone(),
            config: d.containers[0].config.clone(),
            labels: Default::default(),
            extra_hosts: Vec::new(),
            inherited_volumes: Vec::new(),
            networks: Vec::new(),
        };
        rt.create(&request).await.unwrap_err()
    });
    assert_eq!(err, RuntimeError::not_found(Missing::Image, reference));
}

#[test]
fn inspecting_a_missing_container_finds_none() {
    let name = unique("never-created");
    let found = block_on(async { connect().await.inspect(&name).await });
    assert_eq!(found, Ok(None));
}

#[test]
fn removing_a_missing_container_reports_the_container() {
    let name = unique("never-created");
    let err = block_on(async { connect().await.remove(&name).await.unwrap_err() });
    assert_eq!(
        err,
        RuntimeError::not_found(Missing::Container, name.clone())
    );
    assert_eq!(err.to_string(), format!("container {name} not found"));
}

#[test]
fn renaming_a_missing_container_reports_the_container() {
    let name = unique("never-created");
    let err = block_on(async {
        let rt = connect().await;
        rt.rename(&name, &unique("never-renamed"))
            .await
            .unwrap_err()
    });
    assert_eq!(err, RuntimeError::not_found(Missing::Container, name));
}

#[test]
fn stopping_and_killing_a_missing_container_report_the_container() {
    let name = unique("never-created");
    let (stop, kill) = block_on(async {
        let rt = connect().await;
        (
            rt.stop(&name, Duration::from_secs(1)).await.unwrap_err(),
            rt.kill(&name, "SIGKILL").await.unwrap_err(),
        )
    });
    assert_eq!(
        stop,
        RuntimeError::not_found(Missing::Container, name.clone())
    );
    assert_eq!(kill, RuntimeError::not_found(Missing::Container, name));
}

#[test]
fn starting_with_a_missing_user_network_reports_the_network() {
    let name = unique("no-network");
    let _cleanup = Cleanup(name.clone());
    let network = unique("no-such-network");
    let spec = service_on(&name, NetworkMode::User(network.clone()));
    let err = block_on(async {
        let rt = connect().await;
        let id = create_on(&rt, &spec, Vec::new())
            .await
            .expect("the engine creates it anyway");
        rt.start(&id).await.unwrap_err()
    });
    assert_eq!(
        err,
        RuntimeError::not_found(Missing::Network, network.clone())
    );
    assert_eq!(err.to_string(), format!("network \"{network}\" not found"));
}

#[test]
fn a_missing_extra_network_is_accepted_at_create_and_reported_at_start() {
    let name = unique("no-extra-network");
    let _cleanup = Cleanup(name.clone());
    let network = unique("no-such-extra-network");
    let spec = service_on(&name, NetworkMode::Bridge);
    let err = block_on(async {
        let rt = connect().await;
        let id = create_on(&rt, &spec, vec![(network.clone(), vec!["alias".into()])])
            .await
            .expect("connecting a created container does not check the network");
        rt.start(&id).await.unwrap_err()
    });
    assert_eq!(err, RuntimeError::not_found(Missing::Network, network));
}

#[test]
fn a_network_container_is_pinned_to_its_id_at_create() {
    let host = unique("netns-host");
    let sidecar = unique("netns-sidecar");
    let _cleanup = (Cleanup(host.clone()), Cleanup(sidecar.clone()));
    let (host_id, mode) = block_on(async {
        let rt = connect().await;
        let host_id = create(&rt, &service_on(&host, NetworkMode::Bridge)).await;
        let id = create(
            &rt,
            &service_on(&sidecar, NetworkMode::Container(host.clone())),
        )
        .await;
        (
            host_id,
            rt.inspect(&id).await.unwrap().unwrap().network_mode,
        )
    });
    assert_eq!(mode, format!("container:{host_id}"));
}

#[test]
fn a_network_container_missing_at_create_is_looked_up_by_name_at_start() {
    let host = unique("late-host");
    let sidecar = unique("late-sidecar");
    let _cleanup = (Cleanup(host.clone()), Cleanup(sidecar.clone()));
    block_on(async {
        let rt = connect().await;
        let id = create(
            &rt,
            &service_on(&sidecar, NetworkMode::Container(host.clone())),
        )
        .await;
        let mode = rt.inspect(&id).await.unwrap().unwrap().network_mode;
        assert_eq!(mode, format!("container:{host}"), "kept as the name");
        let err = rt.start(&id).await.unwrap_err();
        assert_eq!(
            err,
            RuntimeError::not_found(Missing::Container, host.clone())
        );
        let host_id = create(&rt, &service_on(&host, NetworkMode::Bridge)).await;
        rt.start(&host_id).await.unwrap();
        rt.start(&id).await.expect("the name resolves now");
        let mode = rt.inspect(&id).await.unwrap().unwrap().network_mode;
        assert_eq!(mode, format!("container:{host}"), "still the name");
    });
}

#[test]
fn starting_with_a_stopped_network_container_is_a_conflict() {
    let host = unique("stopped-host");
    let sidecar = unique("stopped-sidecar");
    let _cleanup = (Cleanup(host.clone()), Cleanup(sidecar.clone()));
    let (host_id, err, state) = block_on(async {
        let rt = connect().await;
        let host_id = create(&rt, &service_on(&host, NetworkMode::Bridge)).await;
        let id = create(
            &rt,
            &service_on(&sidecar, NetworkMode::Container(host.clone())),
        )
        .await;
        let err = rt.start(&id).await.unwrap_err();
        (host_id, err, rt.inspect(&id).await.unwrap().unwrap().state)
    });
    let message = format!("cannot join network of a non running container: {host_id}");
    assert_eq!(
        err,
        RuntimeError::Conflict {
            message: message.clone()
        }
    );
    assert_eq!(state.status, Status::Created);
    assert_eq!(state.error.as_deref(), Some(message.as_str()));
}

#[test]
fn starting_with_a_removed_network_container_reports_that_container() {
    let host = unique("gone-host");
    let sidecar = unique("gone-sidecar");
    let _cleanup = (Cleanup(host.clone()), Cleanup(sidecar.clone()));
    let (host_id, err) = block_on(async {
        let rt = connect().await;
        let host_id = create(&rt, &service_on(&host, NetworkMode::Bridge)).await;
        let id = create(
            &rt,
            &service_on(&sidecar, NetworkMode::Container(host.clone())),
        )
        .await;
        rt.remove(&host_id).await.unwrap();
        // A new container under the old name does not help: the sidecar
        // was pinned to the old one's id.
        let again = create(&rt, &service_on(&host, NetworkMode::Bridge)).await;
        rt.start(&again).await.unwrap();
        (host_id, rt.start(&id).await.unwrap_err())
    });
    assert_eq!(err, RuntimeError::not_found(Missing::Container, host_id));
}

#[test]
fn renaming_to_the_current_name_is_refused() {
    let name = unique("same-name");
    let _cleanup = Cleanup(name.clone());
    let err = block_on(async {
        let rt = connect().await;
        let id = create(&rt, &service_on(&name, NetworkMode::Bridge)).await;
        rt.rename(&id, &name).await.unwrap_err()
    });
    assert_eq!(
        err,
        RuntimeError::Refused {
            status: 400,
            message: "Renaming a container with the same name as its current name".into()
        }
    );
}

#[test]
fn renaming_to_a_name_in_use_is_a_conflict() {
    let first = unique("name-taker");
    let second = unique("name-wanter");
    let _cleanup = (Cleanup(first.clone()), Cleanup(second.clone()));
    let (taker, err) = block_on(async {
        let rt = connect().await;
        let taker = create(&rt, &service_on(&first, NetworkMode::Bridge)).await;
        let id = create(&rt, &service_on(&second, NetworkMode::Bridge)).await;
        (taker, rt.rename(&id, &first).await.unwrap_err())
    });
    match err {
        RuntimeError::Conflict { message } => {
            assert!(
                message.contains(&format!(
                    "\"/{first}\" is already in use by container \"{taker}\""
                )),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_stop_longer_than_the_request_timeout_succeeds() {
    let name = unique("stubborn");
    let _cleanup = Cleanup(name.clone());
    let img = image("service", "1");
    let d = desired(
        &name,
        &[
            ("image", &img),
            ("cmd", "/bin/sh"),
            ("cmd", "-c"),
            ("cmd", "trap '' TERM; while true; do sleep 1; done"),
        ],
    );
    let (result, took, state) = block_on(async {
        let rt = connect().await.with_request_timeout(Duration::from_secs(2));
        assert_eq!(rt.request_timeout(), Duration::from_secs(2));
        let id = create(&rt, &d.containers[0]).await;
        rt.start(&id).await.unwrap();
        let started = std::time::Instant::now();
        let result = rt.stop(&id, Duration::from_secs(5)).await;
        let took = started.elapsed();
        (result, took, rt.inspect(&id).await.unwrap().unwrap().state)
    });
    assert_eq!(result, Ok(()));
    assert!(
        took >= Duration::from_secs(5),
        "SIGTERM is ignored, so the engine waits: {took:?}"
    );
    assert_eq!(state.status, Status::Exited);
    assert_eq!(state.exit_code, 137, "killed after the stop timeout");
}

#[test]
fn events_keep_flowing_past_the_request_timeout() {
    let name = unique("late-event");
    let _cleanup = Cleanup(name.clone());
    let seen = block_on(async {
        let rt = connect().await.with_request_timeout(Duration::from_secs(1));
        let id = create(&rt, &service_on(&name, NetworkMode::Bridge)).await;
        let mut events = rt.events();
        // The first poll sends the request; the engine answers at once and
        // the stream outlives the request timeout (other tests' events may
        // come and go meanwhile).
        let quiet = async {
            while let Some(event) = events.next().await {
                event.expect("event stream outlives the request timeout");
            }
        };
        let ended = tokio::time::timeout(Duration::from_secs(3), quiet).await;
        assert!(ended.is_err(), "the event stream ended");
        rt.start(&id).await.unwrap();
        let wait = async {
            while let Some(event) = events.next().await {
                let event = event.expect("event stream outlives the request timeout");
                if event.id == id && event.action == "start" {
                    return true;
                }
            }
            false
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or(false)
    });
    assert!(seen);
}

/// A registry on 127.0.0.1 that answers its ping at once and every other
/// request (manifests) after `delay`, with a 404 "manifest unknown".
fn slow_registry(delay: Duration) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the slow registry");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    return;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut conn = reader.into_inner();
                let path = request_line.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = if path.trim_end_matches('/') == "/v2" {
                    ("200 OK", "{}".to_string())
                } else if path.starts_with("/v2/") {
                    std::thread::sleep(delay);
                    (
                        "404 Not Found",
                        r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                            .to_string(),
                    )
                } else {
                    // A TLS hello: the engine then falls back to plain HTTP.
                    ("400 Bad Request", String::new())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                     Docker-Distribution-API-Version: registry/2.0\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

#[test]
fn a_slow_registry_is_waited_for_past_the_request_timeout() {
    let port = slow_registry(Duration::from_secs(3));
    let reference = format!("127.0.0.1:{port}/berth-test/slow:1");
    let (err, took) = block_on(async {
        let rt = connect().await.with_request_timeout(Duration::from_secs(1));
        let started = std::time::Instant::now();
        let err = rt.pull(&reference, &|_| {}).await.unwrap_err();
        (err, started.elapsed())
    });
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert_eq!(
        err,
        RuntimeError::not_found(Missing::Image, reference),
        "the engine's answer, not a client timeout"
    );
}

#[test]
fn a_network_removed_after_create_is_reported_at_start() {
    let name = unique("network-gone");
    let _cleanup = Cleanup(name.clone());
    let network = TestNetwork::new(&unique("network-gone-net"));
    let spec = service_on(&name, NetworkMode::User(network.0.clone()));
    let err = block_on(async {
        let rt = connect().await;
        let id = create_on(&rt, &spec, Vec::new()).await.expect("create");
        docker(&["network", "rm", &network.0]);
        rt.start(&id).await.unwrap_err()
    });
    assert_eq!(
        err,
        RuntimeError::not_found(Missing::Network, network.0.clone())
    );
}

/// Issue 22: `exec` runs a command to its end in a running container and
/// gives its exit code and interleaved output; `logs` gives what the
/// container printed.
#[test]
fn exec_gives_the_exit_code_and_output_and_logs_what_the_container_printed() {
    let name = unique("exec");
    let _cleanup = Cleanup(name.clone());
    let img = image("service", "1");
    let spec = desired(&name, &[("image", &img)]).containers.remove(0);
    block_on(async {
        let rt = connect().await;
        let id = create(&rt, &spec).await;
        rt.start(&id).await.unwrap();
        let argv: Vec<String> = ["/bin/sh", "-c", "echo out; echo err >&2; exit 7"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ran = rt.exec(&id, &argv).await.expect("exec");
        assert_eq!(ran.exit_code, 7);
        assert!(ran.output.contains("out"), "{:?}", ran.output);
        assert!(ran.output.contains("err"), "{:?}", ran.output);
        let printed = rt.logs(&id).await.expect("logs");
        assert!(
            printed.contains("berth test service version 1 started"),
            "{printed:?}"
        );
    });
}

#[test]
fn exec_in_a_missing_container_says_the_container_is_missing() {
    let err = block_on(async {
        connect()
            .await
            .exec("berth-no-such-container", &["true".to_string()])
            .await
            .unwrap_err()
    });
    assert!(err.is_missing(Missing::Container), "{err:?}");
}

/// Regression (issue 25): the API version came from the engine's `/version`,
/// which takes 9 to 60 ms here; it now comes from `/_ping`'s `Api-Version`
/// header, and must still be the engine's own when that is older than
/// bollard's (Debian's engine speaks 1.41, bollard 1.53).
#[test]
fn the_api_version_agreed_over_the_socket_is_the_one_the_engine_pings_with() {
    let pinged = std::process::Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--unix-socket"])
        .arg(
            std::env::var("DOCKER_HOST")
                .ok()
                .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
                .unwrap_or_else(|| "/var/run/docker.sock".into()),
        )
        .arg("http://docker/_ping")
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&pinged.stdout).to_ascii_lowercase();
    let engine = headers
        .lines()
        .find_map(|l| l.strip_prefix("api-version:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no Api-Version in the engine's ping:\n{headers}"));
    let agreed = block_on(async { connect().await.info().await.expect("info").api_version });
    let newest = bollard::API_DEFAULT_VERSION;
    let bollards = format!("{}.{}", newest.major_version, newest.minor_version);
    let version = |v: &str| -> (u32, u32) {
        let (a, b) = v.split_once('.').expect("major.minor");
        (a.parse().expect("major"), b.parse().expect("minor"))
    };
    let expected = if version(&engine) < version(&bollards) {
        engine
    } else {
        bollards
    };
    assert_eq!(agreed, expected);
}
