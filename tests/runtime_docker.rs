//! The bollard runtime against the real engine: what berth creates reads back
//! as the same configuration (so a fresh container plans as `keep`), and every
//! life-cycle call does what it says.

use std::time::Duration;

use futures_util::StreamExt;

use berth::labels;
use berth::observe;
use berth::plan::{self, Action, PlanOptions};
use berth::runtime::docker::DockerRuntime;
use berth::runtime::{CreateRequest, Runtime, RuntimeError, Status};
use berth::spec::{self, ContainerSpec, DesiredState};

use crate::util::{desired_state, docker, image, skip_docker, unique, Cleanup};

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
        networks: Vec::new(),
    };
    rt.create(&request).await.expect("create")
}

#[test]
fn a_container_berth_created_plans_as_keep() {
    if skip_docker("a_container_berth_created_plans_as_keep") {
        return;
    }
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
    if skip_docker("update_changes_limits_without_a_restart") {
        return;
    }
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
    if skip_docker("stop_rename_and_remove_keep_named_volumes") {
        return;
    }
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
    if skip_docker("pulling_a_missing_tag_is_an_error_that_names_it") {
        return;
    }
    let reference = image("service", "does-not-exist");
    let err = block_on(async { connect().await.pull(&reference, &|_| {}).await.unwrap_err() });
    assert!(
        matches!(
            err,
            RuntimeError::NotFound { .. } | RuntimeError::Refused { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn pulling_reports_progress_and_makes_the_image_present() {
    if skip_docker("pulling_reports_progress_and_makes_the_image_present") {
        return;
    }
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
    if skip_docker("events_report_a_container_start") {
        return;
    }
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
