//! A private MQTT broker per test, and the clients that watch and drive it,
//! for the integration tests of `berth run`, the long-running agent.
//!
//! Those tests stop, kill and restart the broker under a running berth, so
//! each test gets its own mosquitto on a free port with its own persistence
//! directory; the shared broker `scripts/test-env.sh` starts is never used
//! here. Messages are watched and sent with Debian's `mosquitto_sub` and
//! `mosquitto_pub`: clients independent of the MQTT library berth uses.
//!
//! What mosquitto 2.0.11 (Debian 12) does, found by running it, that these
//! helpers rely on (the tests at the bottom check it):
//!
//! - A `mosquitto_sub` with a persistent session (`-c -i ID`) does not exit
//!   when its broker goes away, whether stopped or killed: it retries once a
//!   second, however long the broker is down, and subscribes again on every
//!   connect. After a restart it is back within about a second.
//! - Stopped with SIGTERM, mosquitto writes its database on the way out, so
//!   sessions, subscriptions, retained messages and QoS 1 messages queued for
//!   a disconnected session all survive a restart; a QoS 1 message published
//!   after the restart but before the subscriber is back is delivered when it
//!   reconnects.
//! - With `autosave_on_changes true` and `autosave_interval 1` a new
//!   subscription is saved at once, so it survives even a SIGKILL that comes
//!   straight after the SUBACK. Retained and queued messages are saved within
//!   about a second of arriving; a SIGKILL sooner than that loses them.
//! - Started as root, mosquitto switches to the `mosquitto` user, which cannot
//!   write to a temporary directory of ours ("Error saving in-memory database
//!   ... Permission denied"): the config says `user root`, which a broker
//!   started by anyone else ignores.
//! - `mosquitto_sub -d` prints its protocol trace (`Client ID received
//!   SUBACK`) on stdout, which is block-buffered when it is a pipe: the trace
//!   would only show up with the next message. `stdbuf -oL` makes it
//!   line-buffered, so the SUBACK line arrives as it happens.
//! - `mosquitto_pub -s` refuses empty input ("Zero length input"): an empty
//!   payload goes with `-n` instead.
//! - `mosquitto_sub -W` exits with status 27 when nothing arrived in time.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::util::{free_port, text};

/// How long a broker or a subscriber gets to come up before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a broker gets to exit after SIGTERM before the test fails.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many fresh ports `Broker::start` tries when another process takes the
/// one it picked before mosquitto could bind it.
const PORT_ATTEMPTS: usize = 5;

/// A mosquitto of one test's own: on a free port of 127.0.0.1, anonymous, with
/// persistence in a temporary directory, so that the test can stop, kill and
/// restart it under a running berth without disturbing any other test, and
/// sessions and queued QoS 1 messages survive a stop and restart.
///
/// Dropping it kills the process and removes the directory.
pub struct Broker {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Lines added to the config.
    extra: String,
}

impl Broker {
    /// Starts a broker and returns once it accepts connections.
    ///
    /// Panics, with its log, if it does not within 10 s, and with a pointer
    /// to `scripts/test-env.sh` if mosquitto is not installed.
    pub fn start() -> Broker {
        Self::start_with("")
    }

    /// [`Broker::start`], with `extra` lines added to its config (for
    /// example `max_queued_messages 0`, so that a flood is never cut short
    /// by the broker itself).
    pub fn start_with(extra: &str) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir for the broker");
        let mut broker = Broker {
            port: 0,
            dir,
            child: None,
            extra: extra.to_string(),
        };
        for _ in 0..PORT_ATTEMPTS {
            broker.port = free_port();
            std::fs::write(broker.conf(), broker.config()).expect("write mosquitto.conf");
            broker.spawn();
            match broker.wait_ready() {
                Ok(()) => return broker,
                // The port went to someone else between free_port and bind.
                Err(_) if broker.log().contains("Address already in use") => continue,
                Err(why) => panic!("{why}\nmosquitto log:\n{}", broker.log()),
            }
        }
        panic!(
            "mosquitto found no free port in {PORT_ATTEMPTS} attempts\nmosquitto log:\n{}",
            broker.log()
        );
    }

    /// The address to give berth: `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The port the broker listens on; it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the broker logged so far, across restarts: for failure
    /// messages.
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| text(&b))
            .unwrap_or_default()
    }

    /// Stops the broker the orderly way (SIGTERM) and waits for it to exit,
    /// so that it writes its database: sessions, subscriptions, retained and
    /// queued messages come back with [`Broker::restart`]. Clients see their
    /// connection closed. Does nothing if the broker is not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("sh")
            .args(["-c", "kill -TERM \"$1\"", "sh", &child.id().to_string()])
            .status()
            .expect("sh runs");
        assert!(status.success(), "could not send SIGTERM to mosquitto");
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().expect("wait for mosquitto").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mosquitto did not exit within {STOP_TIMEOUT:?} of SIGTERM\nmosquitto log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker (SIGKILL): a crash. What it had saved by then comes
    /// back with [`Broker::restart`] (see the module documentation for how
    /// much that is). Does nothing if the broker is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again, on the same port with the same config and
    /// database, and returns once it accepts connections. A running broker is
    /// first stopped with [`Broker::stop`].
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        if let Err(why) = self.wait_ready() {
            panic!("{why} (restart)\nmosquitto log:\n{}", self.log());
        }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// The config: one anonymous listener, persistence saved on every change,
    /// the log on stderr (unbuffered, unlike stdout).
    fn config(&self) -> String {
        // A test that brings its own authentication says so in `extra`.
        let anonymous = if self.extra.contains("allow_anonymous") {
            ""
        } else {
            "allow_anonymous true\n"
        };
        format!(
            "# A private broker of one test (tests/broker.rs).\n\
             listener {port} 127.0.0.1\n\
             {anonymous}\
             # As root, mosquitto would switch to the mosquitto user, who cannot\n\
             # write here. Anyone else's broker ignores this.\n\
             user root\n\
             persistence true\n\
             persistence_location {dir}/\n\
             autosave_on_changes true\n\
             autosave_interval 1\n\
             log_dest stderr\n\
             log_type all\n\
             log_timestamp_format %H:%M:%S\n\
             {extra}\n",
            port = self.port,
            dir = self.dir.path().display(),
            extra = self.extra,
        )
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the broker log");
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(self.conf())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
    }

    /// Waits until the port accepts TCP connections, or the broker exits.
    fn wait_ready(&mut self) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("the broker was spawned");
            if let Some(status) = child.try_wait().expect("wait for mosquitto") {
                self.child = None;
                return Err(format!(
                    "mosquitto exited ({status}) before accepting on port {}",
                    self.port
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "mosquitto did not accept on port {} within {START_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every message on a topic filter, with its topic, in the order they came:
/// what berth published, for tests to wait for and assert on.
///
/// It is a `mosquitto_sub` with a persistent session and QoS 1, so messages
/// published while it is reconnecting after a broker restart are delivered
/// when it is back, not lost. It reconnects by itself; should it ever exit
/// anyway, a background thread starts it again with the same session.
///
/// Dropping it ends the process.
pub struct Subscriber {
    filter: String,
    shared: Arc<Shared>,
    broker_log: PathBuf,
}

/// What the subscriber's background thread shares with its owner.
struct Shared {
    /// `(topic, payload)` of every message, in order of arrival.
    messages: Mutex<Vec<(String, String)>>,
    /// Everything else mosquitto_sub printed (its `-d` trace and errors), and
    /// notes of its restarts: for failure messages.
    log: Mutex<Vec<String>>,
    /// SUBACKs received: how many times it has (re)subscribed.
    subacks: AtomicUsize,
    /// Times the process exited and was started again.
    exits: AtomicUsize,
    /// The running process; `None` once dropped.
    child: Mutex<Option<Child>>,
    /// Set, under the `child` lock, when the subscriber is dropped.
    stopped: AtomicBool,
}

/// The output format of message lines: a marker no trace line starts with,
/// the payload in hex (one line whatever it holds), then the topic (which may
/// contain spaces).
const MESSAGE_FORMAT: &str = "msg %x %t";

impl Subscriber {
    /// Subscribes to `filter` and returns once the broker has acknowledged
    /// the subscription, so nothing published afterwards can be missed.
    ///
    /// Panics if that takes more than 10 s.
    pub fn start(broker: &Broker, filter: &str) -> Subscriber {
        Self::start_with(broker, filter, &[])
    }

    /// [`Subscriber::start`] logged in as `user` with `password`, for a
    /// broker that lets no one in anonymously.
    pub fn start_as(broker: &Broker, filter: &str, user: &str, password: &str) -> Subscriber {
        Self::start_with(broker, filter, &["-u", user, "-P", password])
    }

    fn start_with(broker: &Broker, filter: &str, login: &[&str]) -> Subscriber {
        Self::start_at(broker.port(), broker.log_path(), filter, login)
    }

    /// [`Subscriber::start`] on another broker's port of 127.0.0.1 (a node of
    /// a RabbitMQ cluster: tests/rabbitmq.rs), logged in with `login`
    /// (`-u USER -P PASSWORD`, or nothing).
    pub fn start_on(port: u16, filter: &str, login: &[&str]) -> Subscriber {
        Self::start_at(port, PathBuf::new(), filter, login)
    }

    fn start_at(port: u16, broker_log: PathBuf, filter: &str, login: &[&str]) -> Subscriber {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // Unique among the subscribers of this run; at most 23 characters,
        // MQTT 3.1's limit.
        let id = format!(
            "berth-it-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let args: Vec<String> = [
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-c",
            "-i",
            &id,
            "-d",
            "-t",
            filter,
            "-F",
            MESSAGE_FORMAT,
        ]
        .iter()
        .chain(login)
        .map(|s| s.to_string())
        .collect();
        let shared = Arc::new(Shared {
            messages: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            subacks: AtomicUsize::new(0),
            exits: AtomicUsize::new(0),
            child: Mutex::new(None),
            stopped: AtomicBool::new(false),
        });
        let (child, output) = spawn_sub(&args);
        *shared.child.lock().unwrap() = Some(child);
        let thread_shared = Arc::clone(&shared);
        std::thread::spawn(move || supervise(&thread_shared, &args, output));

        let sub = Subscriber {
            filter: filter.to_string(),
            shared,
            broker_log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while sub.shared.subacks.load(Ordering::SeqCst) == 0 {
            if sub.shared.exits.load(Ordering::SeqCst) > 0 {
                panic!("mosquitto_sub exited before subscribing\n{}", sub.report());
            }
            if Instant::now() >= deadline {
                panic!(
                    "mosquitto_sub was not subscribed within {START_TIMEOUT:?}\n{}",
                    sub.report()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        sub
    }

    /// Every `(topic, payload)` received so far, in order.
    pub fn messages(&self) -> Vec<(String, String)> {
        self.shared.messages.lock().unwrap().clone()
    }

    /// The payloads received on exactly `topic`, parsed as JSON; payloads that
    /// are not JSON are left out.
    pub fn json(&self, topic: &str) -> Vec<serde_json::Value> {
        self.messages()
            .iter()
            .filter(|(t, _)| t == topic)
            .filter_map(|(_, p)| serde_json::from_str(p).ok())
            .collect()
    }

    /// Waits until `pred` holds for the messages received so far (checked
    /// every 100 ms) and returns them. Panics after `timeout` with `what`,
    /// every message, mosquitto_sub's trace and the broker's log.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        self.try_wait_for(what, timeout, pred)
            .unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// Waits for the first feedback message of `activity` whose status is
    /// one of `statuses` and returns it, parsed. Panics after `timeout`
    /// with `context` (a berth log, say) and everything received.
    pub fn feedback(
        &self,
        activity: &str,
        statuses: &[&str],
        timeout: Duration,
        context: &str,
    ) -> serde_json::Value {
        let pick = |msgs: &[(String, String)]| {
            msgs.iter()
                .filter(|(t, _)| t.ends_with("containersupdate/desiredstatefeedback"))
                .filter_map(|(_, p)| serde_json::from_str::<serde_json::Value>(p).ok())
                .find(|f| {
                    f["activityId"] == activity
                        && statuses.contains(&f["payload"]["status"].as_str().unwrap_or(""))
                })
        };
        let what = format!("feedback {statuses:?} of {activity}\n{context}");
        let msgs = self.wait_for(&what, timeout, |m| pick(m).is_some());
        pick(&msgs).expect("the message wait_for found")
    }

    /// [`Subscriber::wait_for`], with the failure message as an error.
    fn try_wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[(String, String)]) -> bool,
    ) -> Result<Vec<(String, String)>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if pred(&messages) {
                return Ok(messages);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.report()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything known about this subscriber, for failure messages.
    fn report(&self) -> String {
        let messages: Vec<String> = self
            .messages()
            .iter()
            .map(|(t, p)| format!("  {t} {p}"))
            .collect();
        let log = self.shared.log.lock().unwrap().join("\n  ");
        let broker_log = std::fs::read(&self.broker_log)
            .map(|b| text(&b))
            .unwrap_or_else(|e| format!("(unreadable: {e})"));
        let tail: Vec<&str> = broker_log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "messages on {} ({}):\n{}\nmosquitto_sub said:\n  {log}\nbroker log (last {} lines):\n{}",
            self.filter,
            messages.len(),
            messages.join("\n"),
            tail.len(),
            tail.join("\n")
        )
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let mut child = self.shared.child.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.stopped.store(true, Ordering::SeqCst);
        if let Some(mut child) = child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `stdbuf ARGS` (mosquitto_sub, line-buffered) with stdout and
/// stderr on one pipe, returning the process and the pipe's read end.
fn spawn_sub(args: &[String]) -> (Child, std::io::PipeReader) {
    require("mosquitto_sub", "mosquitto-clients");
    require("stdbuf", "coreutils");
    let (reader, writer) = std::io::pipe().expect("a pipe for mosquitto_sub");
    let child = Command::new("stdbuf")
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("clone the pipe"))
        .stderr(writer)
        .spawn()
        .expect("mosquitto_sub starts");
    // The Command, and with it our copies of the write end, is gone: the
    // reader sees end-of-file when the process exits.
    (child, reader)
}

/// The subscriber's background thread: records what mosquitto_sub prints and,
/// should it exit while the subscriber lives, starts it again.
fn supervise(shared: &Shared, args: &[String], mut output: std::io::PipeReader) {
    loop {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            record(shared, line);
        }
        {
            let mut child = shared.child.lock().unwrap();
            if shared.stopped.load(Ordering::SeqCst) {
                return;
            }
            let status = child.take().map(|mut c| c.wait());
            shared.exits.fetch_add(1, Ordering::SeqCst);
            shared
                .log
                .lock()
                .unwrap()
                .push(format!("[harness] mosquitto_sub exited ({status:?})"));
        }
        std::thread::sleep(Duration::from_millis(500));
        let mut child = shared.child.lock().unwrap();
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        shared
            .log
            .lock()
            .unwrap()
            .push("[harness] starting mosquitto_sub again".to_string());
        let (new, reader) = spawn_sub(args);
        *child = Some(new);
        output = reader;
    }
}

/// Files one line of mosquitto_sub's output: a message, or trace.
fn record(shared: &Shared, line: String) {
    if let Some(rest) = line.strip_prefix("msg ") {
        let (hex, topic) = rest.split_once(' ').unwrap_or((rest, ""));
        let payload = text(&unhex(hex));
        shared
            .messages
            .lock()
            .unwrap()
            .push((topic.to_string(), payload));
        return;
    }
    if line.starts_with("Client ") && line.ends_with(" received SUBACK") {
        shared.subacks.fetch_add(1, Ordering::SeqCst);
    }
    shared.log.lock().unwrap().push(line);
}

/// Bytes of a hex string as mosquitto_sub's `%x` prints them.
fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("mosquitto_sub prints hex"))
        .collect()
}

/// Publishes `payload` on `topic` with QoS 1, returning once the broker has
/// acknowledged it: how a test plays the cloud sending berth a command.
pub fn publish(broker: &Broker, topic: &str, payload: &str) {
    mosquitto_pub(broker, topic, payload, false);
}

/// Publishes `payload` on `topic` as the retained message, QoS 1; an empty
/// payload clears it. For tests of what a (re)connecting berth finds waiting.
pub fn publish_retained(broker: &Broker, topic: &str, payload: &str) {
    mosquitto_pub(broker, topic, payload, true);
}

/// The message retained on `topic`, or `None` if none arrives within
/// `timeout` (rounded up to whole seconds): for asserting what berth left
/// retained, such as its connection status. A message published while
/// this looks is not retained (mosquitto_sub then stops with nothing
/// printed): that is `None` too, and looking again finds it retained.
pub fn retained(broker: &Broker, topic: &str, timeout: Duration) -> Option<String> {
    require("mosquitto_sub", "mosquitto-clients");
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-t", topic, "--retained-only", "-C", "1"])
        .args(["-W", &secs.max(1).to_string(), "-F", "%x"])
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_sub runs");
    match out.status.code() {
        Some(0) if out.stdout.is_empty() => None,
        Some(0) => Some(text(&unhex(text(&out.stdout).trim_end()))),
        // -W ran out.
        Some(27) => None,
        _ => panic!(
            "mosquitto_sub -t {topic} failed: {}\nstdout: {}\nstderr: {}\nmosquitto log:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr),
            broker.log()
        ),
    }
}

/// Publishes every line of `lines` as one message on `topic` with `qos`, from
/// one `mosquitto_pub -l` as fast as it goes: a burst. Returns once all are
/// sent (QoS 1: acknowledged).
pub fn publish_lines(broker: &Broker, topic: &str, lines: &[String], qos: u8) {
    require("mosquitto_pub", "mosquitto-clients");
    assert!(
        lines.iter().all(|l| !l.is_empty() && !l.contains('\n')),
        "one message per line, none empty"
    );
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-q", &qos.to_string(), "-t", topic, "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub starts");
    let mut stdin = child.stdin.take().expect("mosquitto_pub's stdin");
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    // From a thread: mosquitto_pub reads while it publishes.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("mosquitto_pub runs");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "mosquitto_pub -l -t {topic} failed: {}\nstderr: {}\nmosquitto log:\n{}",
        out.status,
        text(&out.stderr),
        broker.log()
    );
}

/// `mosquitto_pub -q 1`, the payload on stdin: it may be larger than a
/// command-line argument can be.
/// Publishes `payload`, any bytes (not UTF-8, NUL), on `topic` with QoS 1:
/// how a test delivers a hostile message.
pub fn publish_bytes(broker: &Broker, topic: &str, payload: &[u8]) {
    mosquitto_pub(broker, topic, payload, false);
}

fn mosquitto_pub(broker: &Broker, topic: &str, payload: impl AsRef<[u8]>, retain: bool) {
    let payload = payload.as_ref();
    require("mosquitto_pub", "mosquitto-clients");
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args(["-q", "1", "-t", topic]);
    if retain {
        cmd.arg("-r");
    }
    // -s refuses empty input; -n sends an empty payload.
    cmd.arg(if payload.is_empty() { "-n" } else { "-s" });
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub starts");
    let mut stdin = child.stdin.take().expect("mosquitto_pub's stdin");
    // A failing mosquitto_pub may not read it all; its status says why.
    let _ = stdin.write_all(payload);
    drop(stdin);
    let out = child.wait_with_output().expect("mosquitto_pub runs");
    assert!(
        out.status.success(),
        "mosquitto_pub -t {topic} failed: {}\nstderr: {}\nmosquitto log:\n{}",
        out.status,
        text(&out.stderr),
        broker.log()
    );
}

/// The mosquitto broker binary: Debian puts it in /usr/sbin, which is not on
/// every user's PATH.
fn mosquitto() -> PathBuf {
    let sbin = Path::new("/usr/sbin/mosquitto");
    if sbin.exists() {
        return sbin.to_path_buf();
    }
    require("mosquitto", "mosquitto");
    PathBuf::from("mosquitto")
}

/// Panics, saying how to get it, unless `tool` is on PATH.
fn require(tool: &str, package: &str) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()) {
        panic!(
            "{tool} is not installed: run scripts/test-env.sh as root, which installs \
             Debian's {package} (the broker tests need it, not Docker)"
        );
    }
}

mod tests {
    //! The harness itself: everything the `berth run` tests will take for
    //! granted about it.

    use super::*;

    /// `n` messages received, whatever they are.
    fn count(n: usize) -> impl Fn(&[(String, String)]) -> bool {
        move |m| m.len() >= n
    }

    #[test]
    fn a_subscriber_sees_every_message_published_after_it_started() {
        let broker = Broker::start();
        assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));
        let sub = Subscriber::start(&broker, "berth-test/#");

        // Published the moment start returns: it is already subscribed.
        publish(&broker, "berth-test/a", r#"{"status": "two words"}"#);
        publish(&broker, "berth-test/a", "not json");
        publish(&broker, "berth-test/b c", "two\nlines ");
        publish(&broker, "berth-test/a", "");
        publish(&broker, "elsewhere", "{}");

        let got = sub.wait_for("four messages", Duration::from_secs(10), count(4));
        let expected = [
            ("berth-test/a", r#"{"status": "two words"}"#),
            ("berth-test/a", "not json"),
            ("berth-test/b c", "two\nlines "),
            ("berth-test/a", ""),
        ];
        assert_eq!(
            got,
            expected.map(|(t, p)| (t.to_string(), p.to_string())),
            "messages arrive whole, in order, and only those matching the filter"
        );
        assert_eq!(
            sub.json("berth-test/a"),
            vec![serde_json::json!({"status": "two words"})]
        );
    }

    #[test]
    fn wait_for_fails_with_what_it_waited_for_and_what_came() {
        let broker = Broker::start();
        let sub = Subscriber::start(&broker, "berth-test/#");
        publish(&broker, "berth-test/a", "only this");
        let message = sub
            .try_wait_for("a second message", Duration::from_millis(500), count(2))
            .expect_err("time runs out");
        assert!(message.contains("a second message"), "{message}");
        assert!(message.contains("berth-test/a only this"), "{message}");
    }

    #[test]
    fn a_retained_message_is_read_back_until_cleared() {
        let broker = Broker::start();
        // Larger than any single command-line argument may be (128 KiB).
        let big = format!("{{\"blob\": \"{}\"}}", "x".repeat(200 * 1024));
        publish_retained(&broker, "berth-test/status", &big);
        assert_eq!(
            retained(&broker, "berth-test/status", Duration::from_secs(5)).as_deref(),
            Some(big.as_str())
        );

        publish(&broker, "berth-test/live", "not retained");
        assert_eq!(
            retained(&broker, "berth-test/live", Duration::from_secs(1)),
            None
        );

        publish_retained(&broker, "berth-test/status", "");
        assert_eq!(
            retained(&broker, "berth-test/status", Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn a_retained_message_survives_a_broker_restart() {
        let mut broker = Broker::start();
        publish_retained(&broker, "berth-test/status", "online");
        broker.stop();
        broker.restart();
        assert_eq!(
            retained(&broker, "berth-test/status", Duration::from_secs(5)).as_deref(),
            Some("online"),
            "broker log:\n{}",
            broker.log()
        );
    }

    #[test]
    fn a_persistent_subscriber_gets_what_was_published_while_it_reconnected() {
        let mut broker = Broker::start();
        let sub = Subscriber::start(&broker, "berth-test/#");
        broker.stop();
        // Down for longer than mosquitto_sub's one-second retry.
        std::thread::sleep(Duration::from_secs(2));
        broker.restart();
        let restarted = Instant::now();
        // Most likely before the subscriber is back: the broker queues it
        // for the persistent session.
        publish(&broker, "berth-test/after", "queued");

        sub.wait_for(
            "the message published after the restart",
            Duration::from_secs(15),
            |m| m.contains(&("berth-test/after".to_string(), "queued".to_string())),
        );
        sub.wait_for("a second SUBACK", Duration::from_secs(15), |_| {
            sub.shared.subacks.load(Ordering::SeqCst) >= 2
        });
        eprintln!(
            "subscriber back {:?} after the restart; mosquitto_sub restarted by the harness {} times",
            restarted.elapsed(),
            sub.shared.exits.load(Ordering::SeqCst)
        );
        assert!(
            broker.dir.path().join("mosquitto.db").exists(),
            "SIGTERM writes the database"
        );
    }

    #[test]
    fn a_persistent_subscriber_survives_a_broker_kill() {
        let mut broker = Broker::start();
        let sub = Subscriber::start(&broker, "berth-test/#");
        broker.kill();
        broker.restart();
        // A killed broker may lose the session it had not saved yet; the
        // subscriber subscribes again once it is back, and only what is
        // published after that can be asked of it.
        let deadline = Instant::now() + Duration::from_secs(15);
        while sub.shared.subacks.load(Ordering::SeqCst) < 2 {
            assert!(
                Instant::now() < deadline,
                "not subscribed again\n{}",
                sub.report()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        publish(&broker, "berth-test/after", "queued");
        sub.wait_for(
            "the message published after the kill and restart",
            Duration::from_secs(15),
            |m| m.contains(&("berth-test/after".to_string(), "queued".to_string())),
        );
        eprintln!(
            "mosquitto_sub restarted by the harness {} times",
            sub.shared.exits.load(Ordering::SeqCst)
        );
    }

    #[test]
    fn a_subscriber_that_exits_is_started_again_with_its_session() {
        let broker = Broker::start();
        let sub = Subscriber::start(&broker, "berth-test/#");
        let pid = sub.shared.child.lock().unwrap().as_ref().unwrap().id();
        Command::new("sh")
            .args(["-c", "kill -KILL \"$1\"", "sh", &pid.to_string()])
            .status()
            .expect("sh runs");
        // Queued for the session while no mosquitto_sub runs.
        publish(&broker, "berth-test/while-down", "kept");
        sub.wait_for(
            "the message published while mosquitto_sub was down",
            Duration::from_secs(15),
            |m| m.contains(&("berth-test/while-down".to_string(), "kept".to_string())),
        );
        assert_eq!(sub.shared.exits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn published_lines_arrive_as_one_message_each_in_order() {
        let broker = Broker::start_with("max_queued_messages 0");
        assert!(std::fs::read_to_string(broker.conf())
            .unwrap()
            .contains("max_queued_messages 0"));
        let sub = Subscriber::start(&broker, "berth-test/#");
        let lines: Vec<String> = (0..500).map(|i| format!("line {i}")).collect();
        publish_lines(&broker, "berth-test/burst", &lines, 0);
        let got = sub.wait_for("500 messages", Duration::from_secs(15), count(500));
        let payloads: Vec<&str> = got.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(
            payloads,
            lines.iter().map(String::as_str).collect::<Vec<_>>()
        );
    }
}
