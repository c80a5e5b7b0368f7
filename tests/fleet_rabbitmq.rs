//! Fleets on a clustered broker (issue 26): Debian's RabbitMQ 3.10 with its
//! MQTT plugin, three nodes on this machine (tests/rabbitmq.rs,
//! scripts/rabbitmq-cluster.sh). Hollow agents spread over the nodes, the
//! controller on one node only, a node killed under a rollout, and the
//! per-device isolation of `examples/rabbitmq/` as shipped.

use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;

use crate::broker::Subscriber;
use crate::fleet::{devices, release, show};
use crate::rabbitmq::{shared, Cluster};
use crate::util::{berth, root, run, text, Background};

const WAIT: Duration = Duration::from_secs(120);
const AGENTS: usize = 30;

/// `berth fleet-sim` with `agents` agents, agent i first on node i mod 3
/// and failing over to the others.
fn sim(cluster: &Cluster, agents: usize, extra: &[&str]) -> Background {
    let mut cmd = berth();
    cmd.args(["fleet-sim", "--agents", &agents.to_string()])
        .args(["--broker", &cluster.urls(), "--prefix", "devices/"])
        .args(["--min-ready", "200ms", "--log-level", "berth=info"])
        .args(extra);
    Background::spawn(cmd)
}

/// A subscriber on node 0 to every device's current state, started before
/// the agents: RabbitMQ 3.10 hands a retained message to an exact-topic
/// subscription only, so one that comes after an agent's current state
/// never sees it.
fn current_states(cluster: &Cluster) -> Subscriber {
    Subscriber::start_on(
        cluster.port(0),
        "devices/+/containersupdate/currentstate",
        &[],
    )
}

/// Waits until `n` devices published their current state: the messages of
/// agents on the other nodes are routed across the cluster to node 0.
fn wait_connected(states: &Subscriber, cluster: &Cluster, n: usize, sim: &Background) {
    states.wait_for(
        &format!("{n} current states\n{}\n{}", cluster.status(), sim.stderr()),
        WAIT,
        |m| {
            m.iter()
                .map(|(t, _)| t.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                >= n
        },
    );
}

/// How many times the agents connected to `url`.
fn connects_to(sim: &Background, url: &str) -> usize {
    sim.stderr()
        .lines()
        .filter(|l| l.contains("connected to the MQTT broker") && l.contains(&format!("={url} ")))
        .count()
}

/// `berth fleet rollout` connected to `brokers` only, naming the devices
/// (no retained state to discover them from: RabbitMQ keeps it on one node).
fn rollout(brokers: &str, file: &std::path::Path, n: usize) -> (Output, Value) {
    let mut cmd = berth();
    cmd.args(["fleet", "rollout"])
        .arg(file)
        .args(["--broker", brokers, "--prefix", "devices/", "--json"])
        .args(["--timeout", "90s", "--devices", &devices(n)]);
    let out = run(&mut cmd);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, report)
}

#[test]
fn a_rollout_through_one_node_completes_on_30_agents_spread_over_a_3_node_cluster() {
    let cluster = Cluster::start(3);
    let files = tempfile::tempdir().unwrap();
    let states = current_states(&cluster);
    let mut fleet = sim(&cluster, AGENTS, &[]);
    wait_connected(&states, &cluster, AGENTS, &fleet);
    // Agent i starts at node i mod 3: a third of them on each.
    for i in 0..3 {
        assert!(
            connects_to(&fleet, cluster.url(i)) >= AGENTS / 3,
            "node {i}\n{}",
            fleet.stderr()
        );
    }
    let file = release(files.path(), "rmq-rel-2", "2");

    let (out, report) = rollout(cluster.url(0), &file, AGENTS);

    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        report["summary"]["ended"]["COMPLETED"],
        AGENTS,
        "{}",
        show(&out)
    );
    fleet.terminate();
}

#[test]
fn a_node_killed_mid_rollout_moves_its_agents_to_survivors_and_the_rollout_completes() {
    let cluster = Cluster::start(3);
    let files = tempfile::tempdir().unwrap();
    // Pulls take 3 s: the node dies while every device is still busy.
    let states = current_states(&cluster);
    let mut fleet = sim(&cluster, AGENTS, &["--pull-latency", "3s"]);
    wait_connected(&states, &cluster, AGENTS, &fleet);
    let file = release(files.path(), "rmq-rel-3", "3");
    let before: usize = (0..2).map(|i| connects_to(&fleet, cluster.url(i))).sum();

    let mut cmd = berth();
    cmd.args(["fleet", "rollout"])
        .arg(&file)
        .args([
            "--broker",
            &format!("{},{}", cluster.url(0), cluster.url(1)),
        ])
        .args(["--prefix", "devices/", "--json", "--timeout", "90s"])
        .args(["--discover-wait", "1s"])
        .args(["--devices", &devices(AGENTS)]);
    let feedback = Subscriber::start_on(
        cluster.port(0),
        "devices/+/containersupdate/desiredstatefeedback",
        &[],
    );
    let mut controller = Background::spawn(cmd);
    // Every device is at work on the release (each has said so): then the
    // node under a third of them dies, 3 s pulls still running.
    feedback.wait_for("feedback from every device", WAIT, |m| {
        m.iter()
            .map(|(t, _)| t.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            >= AGENTS
    });
    assert!(
        !feedback
            .messages()
            .iter()
            .any(|(_, p)| p.contains("COMPLETED")),
        "the release was done before the node died: pulls are too quick"
    );
    cluster.kill(2);
    let status = controller.wait_exit(WAIT);

    let report: Value = serde_json::from_str(&controller.stdout()).unwrap_or(Value::Null);
    let why = format!(
        "stdout:\n{}\nstderr:\n{}\nagents:\n{}",
        controller.stdout(),
        controller.stderr(),
        fleet.stderr()
    );
    assert_eq!(status.code(), Some(0), "{why}");
    assert_eq!(report["summary"]["ended"]["COMPLETED"], AGENTS, "{why}");
    let after: usize = (0..2).map(|i| connects_to(&fleet, cluster.url(i))).sum();
    assert!(
        after >= before + AGENTS / 3,
        "the agents of the dead node did not reconnect to a survivor: {before} -> {after}\n{why}"
    );
    fleet.terminate();
}

const CONTROLLER: (&str, &str) = ("controller", "controller-secret");
const DEV1: (&str, &str) = ("sim-0001", "secret-0001");
const DEV2: (&str, &str) = ("sim-0002", "secret-0002");

/// A node with `examples/rabbitmq/rabbitmq.conf`, and the controller and
/// two devices provisioned by `examples/rabbitmq/provision.sh`, shared by
/// the isolation tests that run at the same time.
fn isolated() -> Arc<Cluster> {
    static SLOT: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    shared(&SLOT, || {
        let conf = root().join("examples/rabbitmq/rabbitmq.conf");
        let cluster = Cluster::start_with(1, Some(&conf));
        for (role, (user, password)) in [
            ("controller", CONTROLLER),
            ("device", DEV1),
            ("device", DEV2),
        ] {
            let mut child = Command::new("bash")
                .arg(root().join("examples/rabbitmq/provision.sh"))
                .args([role, user])
                .env("RABBITMQCTL", cluster.ctl_command(0))
                .current_dir(root())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("provision.sh runs");
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("its stdin");
            writeln!(stdin, "{password}").expect("write the password");
            drop(stdin);
            let out = child.wait_with_output().expect("provision.sh ends");
            assert!(
                out.status.success(),
                "provision.sh {role} {user}: {}",
                text(&out.stderr)
            );
        }
        cluster
    })
}

/// `mosquitto_pub` as `who` (client id `<user>.pub`), QoS 1.
fn publish_as(cluster: &Cluster, who: (&str, &str), topic: &str, payload: &str) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &cluster.port(0).to_string()])
        .args(["-u", who.0, "-P", who.1, "-i", &format!("{}.pub", who.0)])
        .args(["-q", "1", "-t", topic, "-m", payload]);
    let _ = cmd
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_pub runs");
}

/// What `who` receives on `filter` (with its own client id) in 4 s, while
/// `meanwhile` runs once it had time to subscribe: RabbitMQ 3.10 delivers a
/// retained message to a subscription of its exact topic only, so what a
/// wildcard could reach is published live.
fn receive_as(
    cluster: &Cluster,
    who: (&str, &str),
    filter: &str,
    meanwhile: impl FnOnce(),
) -> String {
    let child = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &cluster.port(0).to_string()])
        .args(["-u", who.0, "-P", who.1, "-i", who.0, "-t", filter, "-v"])
        .args(["-W", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs");
    std::thread::sleep(Duration::from_millis(1500));
    meanwhile();
    let out = child.wait_with_output().expect("mosquitto_sub ends");
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

#[test]
fn on_rabbitmq_a_client_without_credentials_is_refused() {
    let cluster = isolated();
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &cluster.port(0).to_string()])
        .args(["-t", "devices/#", "-W", "3"])
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_sub runs");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("Connection Refused"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn on_rabbitmq_a_device_cannot_read_another_devices_topics() {
    let cluster = isolated();
    let theirs = "devices/sim-0002/containersupdate/currentstate";
    let send = || publish_as(&cluster, CONTROLLER, theirs, "{\"secret\":1}");
    // The controller reads it: the message is there to be read.
    let seen = receive_as(&cluster, CONTROLLER, theirs, send);
    assert!(seen.contains("\"secret\""), "{seen}");
    // sim-0001 asks for it by name, by wildcard and for everything.
    for filter in [theirs, "devices/+/containersupdate/currentstate", "#"] {
        let got = receive_as(&cluster, DEV1, filter, send);
        assert!(!got.contains("secret"), "{filter}: {got}");
    }
    // Its own prefix it reads.
    let mine = "devices/sim-0001/containersupdate/currentstate";
    let own = receive_as(&cluster, DEV1, "devices/sim-0001/#", || {
        publish_as(&cluster, CONTROLLER, mine, "{\"own\":1}")
    });
    assert!(own.contains("\"own\""), "{own}");
}

#[test]
fn on_rabbitmq_a_device_cannot_publish_a_desired_state_for_another_device() {
    let cluster = isolated();
    let login = ["-u", CONTROLLER.0, "-P", CONTROLLER.1];
    let watch = Subscriber::start_on(cluster.port(0), "devices/#", &login);
    let theirs = "devices/sim-0002/containersupdate/desiredstate";
    // RabbitMQ closes the connection of a publish it does not allow.
    publish_as(&cluster, DEV1, theirs, "{\"forged\":true}");
    let mine = "devices/sim-0001/containersupdate/desiredstatefeedback";
    publish_as(&cluster, DEV1, mine, "{\"marker\":true}");
    let msgs = watch.wait_for("sim-0001's own message", Duration::from_secs(20), |m| {
        m.iter().any(|(t, _)| t == mine)
    });
    assert!(
        !msgs.iter().any(|(t, _)| t == theirs),
        "a forged desired state reached sim-0002's topic: {msgs:?}"
    );
}

/// A real `berth run` as device sim-0001 under the shipped permissions:
/// it gets its desired state and completes it, and its feedback reaches the
/// controller, so every topic and queue berth uses is within what a device
/// is allowed (a refused subscribe or publish would close its connection).
#[test]
fn on_rabbitmq_berth_as_a_device_works_within_its_own_prefix() {
    let cluster = isolated();
    let state = tempfile::tempdir().expect("a state directory");
    let login = ["-u", CONTROLLER.0, "-P", CONTROLLER.1];
    let watch = Subscriber::start_on(cluster.port(0), "devices/sim-0001/#", &login);
    let mut agent = crate::fleet_isolation::berth_as_device(
        &state,
        cluster.url(0),
        DEV1,
        "client_id = \"sim-0001.agent\"\n",
    );
    let current = "devices/sim-0001/containersupdate/currentstate";
    watch.wait_for(
        &format!("sim-0001's current state\n{}", agent.stderr()),
        WAIT,
        |m| m.iter().any(|(t, _)| t == current),
    );
    let doc =
        r#"{"activityId":"rmq-iso-1","payload":{"domains":[{"id":"containers","components":[]}]}}"#;
    publish_as(
        &cluster,
        CONTROLLER,
        "devices/sim-0001/containersupdate/desiredstate",
        doc,
    );
    let done = watch.feedback("rmq-iso-1", &["COMPLETED"], WAIT, &agent.stderr());
    assert_eq!(done["activityId"], "rmq-iso-1");
    assert!(
        !agent.stderr().contains("lost the MQTT connection"),
        "the broker closed berth's connection (a refused topic or queue?)\n{}",
        agent.stderr()
    );
    agent.terminate();
}
