//! A RabbitMQ cluster of one test's own, for the fleet tests (issue 26):
//! `scripts/rabbitmq-cluster.sh` does every step (one implementation, by
//! hand and here); this is its Rust face, so that a test owns its cluster
//! and Drop stops every node it started, whatever the test did.
//!
//! What Debian's RabbitMQ 3.10.8 does that these helpers rely on (see
//! docs/FLEET.md, "RabbitMQ"): a cluster of 3 takes about 25 s to start on
//! this machine; MQTT is routed across the nodes; a node killed with SIGKILL
//! takes its clients' connections with it, and with quorum session queues
//! (`mqtt.durable_queue_type = quorum`, which the script sets) their
//! sessions live on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use crate::util::{root, text};

/// The nodes of a cluster in a temporary directory of the test's.
pub struct Cluster {
    dir: TempDir,
    urls: Vec<String>,
}

fn script() -> PathBuf {
    root().join("scripts/rabbitmq-cluster.sh")
}

fn run_script(args: &[&str], dir: &Path, extra_conf: Option<&Path>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .args(args)
        .arg(dir)
        .current_dir(root())
        .stdin(Stdio::null());
    if let Some(conf) = extra_conf {
        cmd.env("RABBITMQ_EXTRA_CONF", conf);
    }
    cmd.output().expect("bash runs scripts/rabbitmq-cluster.sh")
}

impl Cluster {
    /// `n` clustered nodes, anonymous MQTT allowed; returns once every node
    /// runs and has joined. Panics with the failing node's log otherwise.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, None)
    }

    /// [`Cluster::start`] with `conf` appended to every node's config (for
    /// example `examples/rabbitmq/rabbitmq.conf`).
    pub fn start_with(n: usize, conf: Option<&Path>) -> Cluster {
        let dir = tempfile::tempdir().expect("a directory for the cluster");
        let out = run_script(&["start", &n.to_string()], dir.path(), conf);
        let mut cluster = Cluster {
            dir,
            urls: Vec::new(),
        };
        assert!(
            out.status.success(),
            "the RabbitMQ cluster did not start\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        cluster.urls = text(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("mqtt://"))
            .map(str::to_string)
            .collect();
        assert_eq!(cluster.urls.len(), n, "{}", text(&out.stdout));
        cluster
    }

    /// Node `i`'s MQTT address (0-based).
    pub fn url(&self, i: usize) -> &str {
        &self.urls[i]
    }

    /// Node `i`'s MQTT port (0-based).
    pub fn port(&self, i: usize) -> u16 {
        self.urls[i]
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("an mqtt://127.0.0.1:PORT url")
    }

    /// Every node's address, comma-separated: a `--broker` list.
    pub fn urls(&self) -> String {
        self.urls.join(",")
    }

    /// SIGKILL of node `i`'s beam (0-based): a crash; returns once it is gone.
    pub fn kill(&self, i: usize) {
        let out = run_script(&["kill", &(i + 1).to_string()], self.dir.path(), None);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    /// `rabbitmqctl ARGS` against node `i` (0-based), as the script runs it.
    pub fn ctl_command(&self, i: usize) -> String {
        format!(
            "bash {} ctl {} {}",
            script().display(),
            i + 1,
            self.dir.path().display()
        )
    }

    /// One line per node (name, MQTT address, up or down): for failure messages.
    pub fn status(&self) -> String {
        let out = run_script(&["status"], self.dir.path(), None);
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = run_script(&["stop"], self.dir.path(), None);
        if !out.status.success() {
            eprintln!(
                "stopping the RabbitMQ cluster in {}: {}",
                self.dir.path().display(),
                text(&out.stderr)
            );
        }
    }
}

/// One cluster for the tests that run at the same time and do not kill its
/// nodes: the first asks for it and starts it, and when the last one lets
/// go it is stopped (a static would never be dropped, and would leave its
/// nodes running after the test binary).
pub fn shared(
    slot: &'static std::sync::Mutex<std::sync::Weak<Cluster>>,
    start: impl FnOnce() -> Cluster,
) -> std::sync::Arc<Cluster> {
    let mut weak = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cluster) = weak.upgrade() {
        return cluster;
    }
    let cluster = std::sync::Arc::new(start());
    *weak = std::sync::Arc::downgrade(&cluster);
    cluster
}
