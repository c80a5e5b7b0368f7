//! The MQTT side of the agent: Kanto's topics on a broker, through rumqttc.
//!
//! Delivery is at least once in both directions. Desired states are
//! acknowledged only after the loop has persisted them, and the session is
//! kept (clean session off), so a document the broker holds for berth
//! survives a berth restart. berth keeps every QoS 1 message it publishes
//! until the broker acknowledges it and sends it again after a reconnect
//! into a new session. rumqttc itself drops unacknowledged messages when
//! the broker has forgotten the session, for example after a broker restart
//! without persistence.
//!
//! Incoming messages are hostile input:
//!
//! - **Size.** rumqttc is told the largest packet berth takes
//!   (`max_message_size` plus the topic and header), so a larger one is
//!   refused from its fixed header, before its payload is read. rumqttc then
//!   fails the connection (`PayloadSizeLimitExceeded`) knowing only the size:
//!   not the topic, not the packet id. berth answers `IDENTIFICATION_FAILED`
//!   under a made-up activity id naming the size and the limit, and, since
//!   it cannot acknowledge a message it never read, reconnects once with a
//!   clean session: the broker then discards the session with the message
//!   in it (QoS 1 keeps an unacknowledged message only in its session), and
//!   berth connects with a persistent session again and resubscribes.
//!   Without that the broker would deliver it again at every reconnect.
//!   A *retained* message too large comes back at every new subscription,
//!   so when one comes back at once berth reads it a single time under a
//!   larger, still bounded, limit ([`DEFAULT_MAX_OVERSIZE_READ`]), refuses it
//!   under its own activity id and acknowledges it; since berth subscribes
//!   only when its session has no subscriptions, it does not come back.
//!   Larger than that, berth keeps trying with back-off and logs how to
//!   remove it.
//! - **Floods.** The loop gets one desired state and one `currentstate/get`
//!   at a time; what arrives meanwhile is coalesced here (the newest document
//!   wins and names the ones it replaced; the newest request answers for
//!   the others), so neither the channel to the loop nor this task grows
//!   with the flood.
//! - **Order.** Acknowledgements go out in the order the messages came, a
//!   desired state's once the loop has persisted it (or answered it).
//! - **Replays.** A subscription is made when the session lacks it (a new
//!   process, a broker that lost the session), not at every reconnect:
//!   subscribing again makes the broker replay every retained message. What
//!   is replayed or redelivered anyway is recognised by the loop
//!   ([`super::queue::History`]) and never applied twice.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS,
    StateError, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::{activity_id_in, refused_activity_id, Body, Credit, Incoming, Input, Origin, Outbound};
use crate::config::MqttConfig;

/// MQTT's largest packet: what berth may send.
const MQTT_MAX_PACKET: usize = 268_435_455;
/// What a QoS 1 PUBLISH carries besides the topic and the payload: the
/// topic's length (2 bytes) and the packet id (2 bytes).
const PUBLISH_OVERHEAD: usize = 4;
/// Activity ids of coalesced documents named to the loop (to be answered
/// `SUPERSEDED`) per hand-over; more are counted in the log only.
const MAX_NAMED_SUPERSEDED: usize = 1000;
/// The largest message read once, whole, when a message too large for
/// `max_message_size` keeps coming back (a retained one, sent again at every
/// subscription): enough for an honest mistake, small enough for a device.
pub const DEFAULT_MAX_OVERSIZE_READ: usize = 16 << 20;
/// Messages handed to rumqttc and not yet acknowledged, at most.
const WINDOW: usize = 32;
/// Feedback messages kept while the broker is away; older ones are dropped.
const MAX_WAITING: usize = 10_000;
/// How long a connection must last for the reconnect back-off to start
/// afresh when it is lost.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// The longest wait between connection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);
/// The first wait before asking again for a document berth could not
/// persist; doubled each time, up to [`MAX_RECONNECT_DELAY`].
const MIN_REDELIVERY_DELAY: Duration = Duration::from_secs(1);
/// Where Debian keeps the system's CA bundle, for `mqtts://` without `ca_file`.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Update Manager commands in the loop's channel at once: it sends one
/// per phase and waits for the answer, so more means a flood.
const MAX_COMMANDS_IN_FLIGHT: usize = 16;

/// The agent's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Desired states arrive here.
    pub desired: String,
    /// Requests for the current state arrive here.
    pub current_get: String,
    /// An Update Manager's phase commands arrive here (orchestrated mode).
    pub command: String,
    /// Progress feedback goes here.
    pub feedback: String,
    /// The inventory goes here, retained.
    pub current: String,
    /// The periodic registry check's results go here, retained.
    pub upgrades: String,
}

impl Topics {
    /// Kanto's naming: the domain without dashes, `update` appended unless
    /// it already ends so (`containers` -> `containersupdate/...`), under
    /// an optional per-device prefix.
    pub fn new(prefix: &str, domain: &str) -> Self {
        let mut root = domain.replace('-', "");
        if !root.ends_with("update") {
            root.push_str("update");
        }
        let base = format!("{prefix}{root}");
        Self {
            desired: format!("{base}/desiredstate"),
            current_get: format!("{base}/currentstate/get"),
            command: format!("{base}/desiredstate/command"),
            feedback: format!("{base}/desiredstatefeedback"),
            current: format!("{base}/currentstate"),
            upgrades: format!("{base}/upgrades"),
        }
    }
}

/// Why the MQTT settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MqttSetupError(String);

/// What berth knows about the machine it runs on, for the settings that
/// depend on it: read once at start ([`Host::current`]) and passed in, so
/// that the derivations stay testable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// The text of `/etc/machine-id`, if readable.
    pub machine_id: Option<String>,
    /// The kernel's host name, if readable.
    pub hostname: Option<String>,
    /// `$CREDENTIALS_DIRECTORY`, which systemd sets for a unit with
    /// `LoadCredential=`.
    pub credentials_directory: Option<PathBuf>,
}

impl Host {
    /// This machine: `/etc/machine-id`, `/proc/sys/kernel/hostname` (else
    /// `/etc/hostname`) and `$CREDENTIALS_DIRECTORY`.
    pub fn current() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        Self {
            machine_id: read("/etc/machine-id"),
            hostname: read("/proc/sys/kernel/hostname").or_else(|| read("/etc/hostname")),
            credentials_directory: std::env::var_os(CREDENTIALS_DIRECTORY)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// The environment variable systemd sets to the directory holding a unit's
/// credentials.
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// berth's application id for systemd's app-specific machine ids
/// (`sd_id128_get_machine_app_specific`): the client id is derived from it,
/// never from the machine id itself, which machine-id(5) asks to keep off
/// the network. `systemd-id128 machine-id --app-specific=` with this id
/// prints the same derivation, so an operator can tell a device's client id.
pub const CLIENT_ID_APP: [u8; 16] = [
    0x74, 0x91, 0x3b, 0xd9, 0x4a, 0xde, 0x48, 0x60, 0xb8, 0xdd, 0xab, 0xca, 0xd4, 0x1b, 0x44, 0x0e,
];

/// The client id when none is configured. A broker lets one session per
/// client id: two devices under one id would throw each other off (and
/// share one persistent session's messages), so the id is per device:
/// `berth-` and the first 12 hex digits of this machine's app-specific id
/// (see [`CLIENT_ID_APP`]), else the host name; an instance other than
/// `default` is appended, since two berths on one device are two clients.
/// With neither a machine id nor a host name it is `berth-<instance>`.
pub fn default_client_id(
    machine_id: Option<&str>,
    hostname: Option<&str>,
    instance: &str,
) -> String {
    let device = machine_id
        .and_then(machine_id_bytes)
        .map(|key| hex(&hmac_sha256(&key, &CLIENT_ID_APP)[..6]))
        .or_else(|| {
            let name: String = hostname?
                .trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                .take(64)
                .collect();
            (!name.is_empty()).then_some(name)
        });
    match device {
        None => format!("berth-{instance}"),
        Some(d) if instance == crate::labels::DEFAULT_INSTANCE => format!("berth-{d}"),
        Some(d) => format!("berth-{d}-{instance}"),
    }
}

/// The 16 bytes of a machine id: 32 hex digits, as machine-id(5) has them.
/// An all-zero or malformed one (an unset image) is no identity.
fn machine_id_bytes(text: &str) -> Option<[u8; 16]> {
    let text = text.trim();
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    (out != [0; 16]).then_some(out)
}

/// HMAC-SHA-256 (RFC 2104), as systemd keys its app-specific ids.
fn hmac_sha256(key: &[u8; 16], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer.finalize());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A configured path with a leading `${CREDENTIALS_DIRECTORY}` (or
/// `$CREDENTIALS_DIRECTORY`) replaced by systemd's credentials directory,
/// so that the configuration can name a `LoadCredential=` file, whose
/// directory only systemd knows.
///
/// # Errors
/// The path names the directory and none is set (berth not started by a
/// unit with `LoadCredential=`).
pub fn expand_credentials(
    path: &Path,
    option: &str,
    credentials_directory: Option<&Path>,
) -> Result<PathBuf, MqttSetupError> {
    let text = path.to_string_lossy();
    let rest = ["${CREDENTIALS_DIRECTORY}", "$CREDENTIALS_DIRECTORY"]
        .iter()
        .find_map(|v| text.strip_prefix(v));
    let Some(rest) = rest else {
        return Ok(path.to_path_buf());
    };
    let dir = credentials_directory.ok_or_else(|| {
        MqttSetupError(format!(
            "{option}: {} names $CREDENTIALS_DIRECTORY, which is not set \
             (systemd sets it for a unit with LoadCredential=)",
            path.display()
        ))
    })?;
    Ok(dir.join(rest.trim_start_matches('/')))
}

/// The warning for a secret file that others than its owner may read, or
/// `None` when only the owner can. `mode` is the file's permission bits.
pub fn loose_mode_warning(option: &str, path: &Path, mode: u32) -> Option<String> {
    (mode & 0o077 != 0).then(|| {
        format!(
            "{option} {} is readable by {} (mode {:04o}); make it 0600 or 0400",
            path.display(),
            match (mode & 0o070 != 0, mode & 0o007 != 0) {
                (true, true) => "group and others",
                (true, false) => "its group",
                _ => "others",
            },
            mode & 0o7777
        )
    })
}

/// Everything needed to connect.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the broker in use is, for logs.
    url: String,
    /// The topics.
    pub topics: Topics,
    /// Larger desired states are refused.
    max_message_size: usize,
    /// Larger messages are never read, not even once to get past one that
    /// keeps coming back.
    max_oversize_read: usize,
    /// Found while reading the files, for the caller to log once at start.
    warnings: Vec<String>,
    /// Every broker to try, `mqtt.url`'s first.
    brokers: Brokers,
    /// `mqtt.connect_timeout` in whole seconds, rounded up (rumqttc's
    /// unit): how long one connection attempt may take.
    connect_timeout: u64,
}

/// The brokers of `mqtt.url` and `mqtt.failover_urls`, each as (URL for
/// logs, rumqttc's options: broker, identity, TLS, credentials). Never
/// empty, by construction: the first is apart.
#[derive(Debug, Clone)]
struct Brokers {
    first: (String, MqttOptions),
    others: Vec<(String, MqttOptions)>,
}

impl Brokers {
    fn len(&self) -> usize {
        1 + self.others.len()
    }

    /// The broker at `index` of the list, counting round it.
    fn at(&self, index: usize) -> &(String, MqttOptions) {
        match index % self.len() {
            0 => &self.first,
            i => self.others.get(i - 1).unwrap_or(&self.first),
        }
    }
}

/// The largest packet to read for messages up to `max_message_size` on
/// these topics: the payload, the longest topic, the header.
fn incoming_limit(max_message_size: usize, topics: &Topics) -> usize {
    let topic = topics
        .desired
        .len()
        .max(topics.current_get.len())
        .max(topics.command.len());
    max_message_size
        .saturating_add(topic + PUBLISH_OVERHEAD)
        .min(MQTT_MAX_PACKET)
}

impl Settings {
    /// rumqttc's options, for a client of berth's own beside the agent's
    /// (the fleet controller).
    pub fn options(&self) -> &MqttOptions {
        &self.brokers.first.1
    }

    /// Reads the TLS and password files and builds rumqttc's options, for
    /// this machine ([`Host::current`]).
    ///
    /// # Errors
    /// A file that cannot be read, or a URL without a usable host and port.
    pub fn new(config: &MqttConfig, instance: &str) -> Result<Self, MqttSetupError> {
        Self::on(config, instance, &Host::current())
    }

    /// [`Settings::new`] on a given host.
    ///
    /// # Errors
    /// A file that cannot be read, or a URL without a usable host and port.
    pub fn on(config: &MqttConfig, instance: &str, host: &Host) -> Result<Self, MqttSetupError> {
        let (scheme, rest) = config.url.split_once("://").ok_or_else(|| {
            MqttSetupError(format!(
                "mqtt.url: \"{}\" has no scheme",
                crate::redact::userinfo(&config.url)
            ))
        })?;
        let tls = matches!(scheme, "mqtts" | "ssl");
        let (broker, port) = host_port(rest, if tls { 8883 } else { 1883 }).ok_or_else(|| {
            MqttSetupError(format!(
                "mqtt.url: \"{}\" is not scheme://host[:port]",
                crate::redact::userinfo(&config.url)
            ))
        })?;
        let client_id = config
            .client_id
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| {
                default_client_id(
                    host.machine_id.as_deref(),
                    host.hostname.as_deref(),
                    instance,
                )
            });
        let creds = host.credentials_directory.as_deref();
        let file = |path: &Option<PathBuf>, option: &str| {
            path.as_deref()
                .map(|p| expand_credentials(p, option, creds))
                .transpose()
        };
        let password_file = file(&config.password_file, "mqtt.password_file")?;
        let ca_file = file(&config.ca_file, "mqtt.ca_file")?;
        let cert_file = file(&config.cert_file, "mqtt.cert_file")?;
        let key_file = file(&config.key_file, "mqtt.key_file")?;
        let mut warnings = Vec::new();
        for (option, path) in [
            ("mqtt.password_file", &password_file),
            ("mqtt.key_file", &key_file),
        ] {
            if let Some(path) = path {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(meta) = std::fs::metadata(path) {
                    warnings.extend(loose_mode_warning(option, path, meta.permissions().mode()));
                }
            }
        }
        let topics = Topics::new(&config.topic_prefix, &config.domain);
        let mut options = MqttOptions::new(client_id, broker, port);
        options
            .set_keep_alive(config.keep_alive)
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(
                incoming_limit(config.max_message_size, &topics),
                MQTT_MAX_PACKET,
            )
            .set_inflight(WINDOW as u16)
            .set_request_channel_capacity(WINDOW * 4);
        let password = match (&config.password, &password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(file)) => Some(
                read_text(file, "mqtt.password_file")?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            (None, None) => None,
        };
        if let Some(user) = &config.username {
            options.set_credentials(user.clone(), password.unwrap_or_default());
        } else if password.is_some() {
            return Err(MqttSetupError(
                "mqtt.username: a password is set but no username".into(),
            ));
        }
        if tls {
            let ca = match &ca_file {
                Some(file) => read_bytes(file, "mqtt.ca_file")?,
                None => read_bytes(Path::new(SYSTEM_CA_BUNDLE), "the system CA bundle")?,
            };
            let client_auth = match (&cert_file, &key_file) {
                (Some(cert), Some(key)) => Some((
                    read_bytes(cert, "mqtt.cert_file")?,
                    read_bytes(key, "mqtt.key_file")?,
                )),
                _ => None,
            };
            options.set_transport(Transport::Tls(TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth,
            }));
        }
        let shown = crate::redact::userinfo(&config.url).into_owned();
        let mut others = Vec::new();
        for alt in &config.failover_urls {
            let one = MqttConfig {
                url: alt.clone(),
                failover_urls: Vec::new(),
                ..config.clone()
            };
            others.push(Self::on(&one, instance, host)?.brokers.first);
        }
        Ok(Self {
            brokers: Brokers {
                first: (shown.clone(), options),
                others,
            },
            // Only ever shown (in logs): never with a password in it.
            url: shown,
            topics,
            max_message_size: config.max_message_size,
            max_oversize_read: DEFAULT_MAX_OVERSIZE_READ,
            warnings,
            connect_timeout: whole_seconds(config.connect_timeout),
        })
    }

    /// What start-up should say once: secret files others can read.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The client id berth connects with, for the start-up log (the broker
    /// names sessions by it).
    pub fn client_id(&self) -> String {
        self.options().client_id()
    }

    /// Sets the largest message read once to get past one too large that
    /// keeps coming back (default [`DEFAULT_MAX_OVERSIZE_READ`]; never less
    /// than `max_message_size`).
    pub fn with_max_oversize_read(mut self, bytes: usize) -> Self {
        self.max_oversize_read = bytes;
        self
    }

    /// The packet limit for rumqttc: the usual one, or the one for reading
    /// a message too large once.
    fn packet_limit(&self, once: bool) -> usize {
        let size = if once {
            self.max_oversize_read.max(self.max_message_size)
        } else {
            self.max_message_size
        };
        incoming_limit(size, &self.topics)
    }
}

fn read_bytes(path: &Path, what: &str) -> Result<Vec<u8>, MqttSetupError> {
    std::fs::read(path)
        .map_err(|e| MqttSetupError(format!("{what}: cannot read {}: {e}", path.display())))
}

fn read_text(path: &Path, what: &str) -> Result<String, MqttSetupError> {
    std::fs::read_to_string(path)
        .map_err(|e| MqttSetupError(format!("{what}: cannot read {}: {e}", path.display())))
}

/// `host`, `host:port`, `[v6]:port`, with an optional trailing `/`.
fn host_port(rest: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = rest.trim_end_matches('/');
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (rest, default_port),
    };
    (!host.is_empty() && !host.contains('/')).then(|| (host.to_string(), port))
}

/// One message for the broker.
#[derive(Debug, Clone)]
struct Message {
    topic: String,
    retain: bool,
    payload: Vec<u8>,
    /// Current states replace each other while waiting.
    current_state: bool,
    /// Queue order, kept when messages go again.
    seq: u64,
}

/// What berth has handed to rumqttc and the broker has not acknowledged.
#[derive(Debug, Default)]
struct Delivery {
    /// Not handed over yet.
    waiting: VecDeque<Message>,
    /// Handed over, packet id not known yet.
    handed: VecDeque<Message>,
    /// Sent with this packet id, awaiting PUBACK.
    inflight: BTreeMap<u16, Message>,
    next_seq: u64,
}

impl Delivery {
    /// Queues each of `messages` (none, for one that could not be made).
    fn queue_all(&mut self, messages: impl IntoIterator<Item = Message>) {
        for m in messages {
            self.queue(m);
        }
    }

    fn queue(&mut self, mut m: Message) {
        m.seq = self.next_seq;
        self.next_seq += 1;
        if m.current_state {
            self.waiting.retain(|w| !w.current_state);
        }
        self.waiting.push_back(m);
        if self.waiting.len() > MAX_WAITING {
            if let Some(i) = self.waiting.iter().position(|w| !w.current_state) {
                self.waiting.remove(i);
                tracing::warn!("the broker is away and {MAX_WAITING} messages wait; dropped the oldest feedback");
            }
        }
    }

    /// The broker has no session for us: whatever it did not acknowledge
    /// goes again, before anything newer.
    fn resend_all(&mut self) {
        let mut again: Vec<Message> = std::mem::take(&mut self.inflight).into_values().collect();
        again.extend(self.handed.drain(..));
        again.sort_by_key(|m| m.seq);
        for m in again.into_iter().rev() {
            self.waiting.push_front(m);
        }
    }

    fn sent(&mut self, pkid: u16) {
        if !self.inflight.contains_key(&pkid) {
            if let Some(m) = self.handed.pop_front() {
                self.inflight.insert(pkid, m);
            }
        }
    }

    fn acked(&mut self, pkid: u16) {
        self.inflight.remove(&pkid);
    }

    fn in_flight(&self) -> usize {
        self.handed.len() + self.inflight.len()
    }

    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.in_flight() == 0
    }
}

/// One acknowledgement owed to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owed {
    seq: u64,
    pkid: u16,
    qos: QoS,
    /// A desired state: owed once the loop is done with it.
    after_loop: bool,
    /// The loop dropped it unanswered (it stopped): never acknowledged, so
    /// the broker delivers it again.
    dropped: bool,
}

/// A desired state waiting for the loop.
#[derive(Debug)]
struct Waiting {
    seq: u64,
    body: Body,
    activity_id: String,
    /// The documents it replaced while it waited, oldest first.
    superseded: Vec<String>,
}

/// What arrived for the loop and has not been handed to it, and the
/// acknowledgements owed to the broker, in order. Pure; the connection
/// moves things in and out.
#[derive(Debug, Default)]
struct Inbox {
    next_seq: u64,
    /// The newest desired state not handed over yet.
    document: Option<Waiting>,
    /// Documents replaced beyond those named, since the last hand-over.
    unnamed: u64,
    /// The newest `currentstate/get` not handed over yet.
    get: Option<String>,
    /// Requests it replaced.
    gets_coalesced: u64,
    acks: VecDeque<Owed>,
    /// Every document up to this sequence number is done with.
    released: u64,
}

impl Inbox {
    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn owe(&mut self, seq: u64, qos: QoS, pkid: Option<u16>, after_loop: bool) {
        if let (Some(pkid), false) = (pkid, qos == QoS::AtMostOnce) {
            self.acks.push_back(Owed {
                seq,
                pkid,
                qos,
                after_loop,
                dropped: false,
            });
        }
    }

    /// A desired state; `pkid` is `None` when it cannot be acknowledged
    /// (it came on a connection that is gone).
    fn document(&mut self, qos: QoS, pkid: Option<u16>, body: Body, activity_id: String) {
        let seq = self.seq();
        self.owe(seq, qos, pkid, true);
        let mut superseded = Vec::new();
        if let Some(old) = self.document.take() {
            superseded = old.superseded;
            if superseded.len() < MAX_NAMED_SUPERSEDED {
                superseded.push(old.activity_id);
            } else {
                self.unnamed += 1;
            }
        }
        self.document = Some(Waiting {
            seq,
            body,
            activity_id,
            superseded,
        });
    }

    /// A `currentstate/get`.
    fn get(&mut self, qos: QoS, pkid: Option<u16>, activity_id: String) {
        let seq = self.seq();
        self.owe(seq, qos, pkid, false);
        if self.get.replace(activity_id).is_some() {
            self.gets_coalesced += 1;
        }
    }

    /// Anything else: acknowledged in its turn.
    fn other(&mut self, qos: QoS, pkid: Option<u16>) {
        let seq = self.seq();
        self.owe(seq, qos, pkid, false);
    }

    fn take_document(&mut self) -> Option<(Waiting, u64)> {
        let w = self.document.take()?;
        Some((w, std::mem::take(&mut self.unnamed)))
    }

    fn take_get(&mut self) -> Option<(String, u64)> {
        let id = self.get.take()?;
        Some((id, std::mem::take(&mut self.gets_coalesced)))
    }

    /// The loop is done with every document up to `upto`: it answered the
    /// last one (`answered`), or dropped it unanswered.
    fn release(&mut self, upto: u64, answered: bool) {
        if !answered {
            for owed in self
                .acks
                .iter_mut()
                .filter(|o| o.after_loop && o.seq <= upto)
            {
                owed.dropped = true;
            }
        }
        self.released = self.released.max(upto);
    }

    /// The next acknowledgement to send, if it is due: every one before it
    /// has gone.
    fn due(&mut self) -> Option<Owed> {
        while let Some(front) = self.acks.front() {
            if front.after_loop && front.seq > self.released {
                return None;
            }
            if front.dropped {
                self.acks.pop_front();
                continue;
            }
            return Some(*front);
        }
        None
    }

    /// The acknowledgement [`Inbox::due`] gave is sent.
    fn acked(&mut self) {
        self.acks.pop_front();
    }

    /// A new connection: the broker sends every unacknowledged message again
    /// (or has dropped the session with them), so the packet ids owed on the
    /// old one must not acknowledge whatever comes under the same ids now.
    fn reconnected(&mut self) {
        self.acks.clear();
    }
}

/// berth's subscriptions and what the broker said about them in the
/// current session. One the broker acknowledged is not made again while
/// the session lasts: subscribing again makes the broker send the topic's
/// retained message again.
#[derive(Debug, Default)]
struct Subscriptions {
    /// Asked for, in order, packet id not reported by rumqttc yet.
    asked: VecDeque<String>,
    /// Sent under this packet id, awaiting the SUBACK.
    sent: BTreeMap<u16, String>,
    /// Acknowledged in this session.
    acked: BTreeSet<String>,
}

impl Subscriptions {
    /// Of `topics`, the ones to subscribe on a new connection.
    fn missing(&self, topics: &[String]) -> Vec<String> {
        topics
            .iter()
            .filter(|t| !self.acked.contains(*t))
            .cloned()
            .collect()
    }

    fn asked(&mut self, topic: String) {
        self.asked.push_back(topic);
    }

    /// rumqttc sent the next SUBSCRIBE under `pkid`.
    fn sent(&mut self, pkid: u16) {
        if let Some(topic) = self.asked.pop_front() {
            self.sent.insert(pkid, topic);
        }
    }

    /// The broker answered the SUBSCRIBE `pkid`.
    fn answered(&mut self, pkid: u16, ok: bool) {
        if let Some(topic) = self.sent.remove(&pkid) {
            if ok {
                self.acked.insert(topic);
            }
        }
    }

    /// A new connection; without a session every subscription is gone.
    fn reconnected(&mut self, session_present: bool) {
        self.asked.clear();
        self.sent.clear();
        if !session_present {
            self.acked.clear();
        }
    }
}

/// The acknowledgement of a message, which needs only its id and QoS.
fn ack_of(owed: &Owed) -> Publish {
    let mut p = Publish::new("", owed.qos, Vec::new());
    p.pkid = owed.pkid;
    p
}

/// The size of a packet rumqttc refused to read, if that is why the
/// connection failed.
fn too_large(e: &ConnectionError) -> Option<usize> {
    match e {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(size),
        )) => Some(*size),
        _ => None,
    }
}

/// The state of one broker connection, across reconnects.
struct Connection {
    client: AsyncClient,
    settings: Settings,
    inputs: mpsc::UnboundedSender<Input>,
    delivery: Delivery,
    inbox: Inbox,
    connected: bool,
    /// Reconnecting with a clean session, so the broker drops the session
    /// holding a message too large to read.
    dropping_session: bool,
    /// Messages too large to read in a row: what to do about the next one.
    too_large_in_a_row: u32,
    /// What the broker holds of berth's subscriptions.
    subscriptions: Subscriptions,
    /// Commands in the loop's channel at most; more are dropped.
    commands: Arc<Semaphore>,
}

/// What the connection needs done to the event loop.
#[derive(Debug, PartialEq, Eq)]
enum Then {
    Nothing,
    /// Drop the connection and connect again.
    Reconnect,
}

impl Connection {
    fn topics(&self) -> &Topics {
        &self.settings.topics
    }

    fn handle(&mut self, event: Event, fresh: bool, eventloop: &mut EventLoop) -> Then {
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                return self.connected(ack.session_present, eventloop)
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                let ok = ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                if !ok {
                    tracing::warn!(broker = %self.settings.url, "the broker refused a subscription; subscribing again at the next connection");
                }
                self.subscriptions.answered(ack.pkid, ok);
            }
            Event::Outgoing(Outgoing::Subscribe(pkid)) => self.subscriptions.sent(pkid),
            Event::Incoming(Packet::Publish(p)) => {
                self.too_large_in_a_row = 0;
                self.incoming(p, fresh);
            }
            Event::Incoming(Packet::PingResp) => self.too_large_in_a_row = 0,
            Event::Incoming(Packet::PubAck(a)) => self.delivery.acked(a.pkid),
            Event::Outgoing(Outgoing::Publish(pkid)) => self.delivery.sent(pkid),
            _ => {}
        }
        Then::Nothing
    }

    fn connected(&mut self, session_present: bool, eventloop: &mut EventLoop) -> Then {
        self.inbox.reconnected();
        // Whatever this connection was made with, the next one reads no
        // more than max_message_size.
        let usual = self.settings.packet_limit(false);
        eventloop
            .mqtt_options
            .set_max_packet_size(usual, MQTT_MAX_PACKET);
        if self.dropping_session {
            // The broker has discarded the old session and the message in
            // it; this clean one ends with the connection.
            self.dropping_session = false;
            self.subscriptions.reconnected(false);
            eventloop.mqtt_options.set_clean_session(false);
            tracing::info!(broker = %self.settings.url, "the broker dropped the session holding the message too large to read; connecting with a persistent session again");
            return Then::Reconnect;
        }
        self.connected = true;
        if !session_present {
            self.delivery.resend_all();
        }
        self.subscriptions.reconnected(session_present);
        tracing::info!(broker = %self.settings.url, session_present, "connected to the MQTT broker");
        let topics = [
            self.topics().desired.clone(),
            self.topics().current_get.clone(),
            self.topics().command.clone(),
        ];
        for topic in self.subscriptions.missing(&topics) {
            match self.client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                Ok(()) => self.subscriptions.asked(topic),
                Err(e) => tracing::warn!(topic = %topic, error = %e, "cannot subscribe"),
            }
        }
        let _ = self.inputs.send(Input::Connected);
        Then::Nothing
    }

    /// A message. `fresh` when it came on the live connection and can be
    /// acknowledged; otherwise its connection is gone (the broker sends it
    /// again, or dropped it with its session) and only its content counts.
    fn incoming(&mut self, p: Publish, fresh: bool) {
        let pkid = fresh.then_some(p.pkid);
        if p.topic == self.topics().current_get {
            self.inbox.get(p.qos, pkid, activity_id_in(&p.payload));
            return;
        }
        if p.topic == self.topics().command {
            self.inbox.other(p.qos, pkid);
            self.command(&p.payload);
            return;
        }
        if p.topic != self.topics().desired {
            self.inbox.other(p.qos, pkid);
            return;
        }
        let limit = self.settings.max_message_size;
        let (body, activity_id) = if p.payload.len() > limit {
            let id = activity_id_in(&p.payload);
            let body = Body::Refused {
                activity_id: id.clone(),
                errors: vec![format!(
                    "document: the message has {} bytes, more than mqtt.max_message_size ({limit})",
                    p.payload.len(),
                )],
            };
            (body, id)
        } else {
            match crate::spec::validate::utf8(&p.payload) {
                Ok(text) => (Body::Text(text.to_string()), activity_id_in(text)),
                Err(problem) => (
                    Body::Refused {
                        activity_id: String::new(),
                        errors: vec![format!("document: {problem}")],
                    },
                    String::new(),
                ),
            }
        };
        self.inbox.document(p.qos, pkid, body, activity_id);
    }

    /// An Update Manager's command, read and handed to the loop. One that
    /// cannot be read is logged and dropped, as Kanto does; so is one that
    /// finds the loop's share of commands full (a flood).
    fn command(&mut self, payload: &[u8]) {
        let command = match crate::orchestrate::parse(payload) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a command");
                return;
            }
        };
        let Ok(permit) = self.commands.clone().try_acquire_owned() else {
            tracing::warn!(activity = %command.activity_id, "too many commands waiting; dropping one");
            return;
        };
        let _ = self.inputs.send(Input::Command {
            command,
            credit: Credit::new(permit),
        });
    }

    /// rumqttc refused a packet of `size` bytes from its header and broke
    /// the connection. The message is answered as well as it can be, and
    /// the next connection gets past it: the first time with a clean
    /// session, so that the broker drops it with the session; when it comes
    /// back at once (a retained message, sent again at every subscription)
    /// by reading it once under the larger limit, so that it is refused
    /// under its own id and acknowledged. Returns how long to wait before
    /// connecting again.
    fn too_large(&mut self, size: usize, eventloop: &mut EventLoop) -> Duration {
        self.too_large_in_a_row = self.too_large_in_a_row.saturating_add(1);
        let n = self.too_large_in_a_row;
        let limit = self.settings.max_message_size;
        let topics = format!("{} or {}", self.topics().desired, self.topics().current_get);
        tracing::warn!(broker = %self.settings.url, packet = size, limit, "a message larger than mqtt.max_message_size arrived; refused unread");
        // Once per run of them: the same message sent again is answered
        // once (and once more under its own id if it can be read).
        if n == 1 {
            let refused = Body::Refused {
                activity_id: refused_activity_id(),
                errors: vec![format!(
                    "document: a message of {size} bytes on {topics}, more than mqtt.max_message_size ({limit}); refused unread, so its activityId is unknown"
                )],
            };
            let _ = self
                .inputs
                .send(Input::Document(Incoming::new(Origin::Mqtt, refused, None)));
        }
        if n % 2 == 1 {
            eventloop.mqtt_options.set_clean_session(true);
            self.dropping_session = true;
        } else {
            let once = self.settings.packet_limit(true);
            eventloop
                .mqtt_options
                .set_max_packet_size(once, MQTT_MAX_PACKET);
            tracing::info!(broker = %self.settings.url, packet = size, "the message too large came back at once (a retained one?); reading it once to refuse it");
        }
        if n < 3 {
            return Duration::ZERO;
        }
        if n == 3 {
            tracing::error!(broker = %self.settings.url, packet = size, limit = self.settings.packet_limit(true), "a message too large even to be read once keeps coming on {topics}; if it is retained, remove it (mosquitto_pub -r -n -t <topic>)");
        }
        let exp = (n - 3).min(7);
        (Duration::from_millis(250) * 2u32.pow(exp)).min(MAX_RECONNECT_DELAY)
    }

    /// Sends the acknowledgements that are due, in order.
    fn acknowledge(&mut self) {
        while let Some(owed) = self.inbox.due() {
            // Full: the event loop takes requests while it is polled; the
            // rest go after the next event.
            if self.client.try_ack(&ack_of(&owed)).is_err() {
                break;
            }
            self.inbox.acked();
        }
    }

    /// Hands the waiting document to the loop, if the loop is done with the
    /// previous one.
    fn hand_document(&mut self, in_loop: &mut Option<(u64, oneshot::Receiver<()>)>) {
        if in_loop.is_some() {
            return;
        }
        let Some((waiting, unnamed)) = self.inbox.take_document() else {
            return;
        };
        if !waiting.superseded.is_empty() || unnamed > 0 {
            tracing::debug!(activity = %waiting.activity_id, replaced = waiting.superseded.len() as u64 + unnamed, "desired states replaced by a newer one before the loop read them");
        }
        let (tx, rx) = oneshot::channel();
        let incoming = Incoming {
            origin: Origin::Mqtt,
            body: waiting.body,
            ack: Some(tx),
            superseded: waiting.superseded,
        };
        if self.inputs.send(Input::Document(incoming)).is_ok() {
            *in_loop = Some((waiting.seq, rx));
        } else {
            self.inbox.release(waiting.seq, false);
        }
    }

    /// Hands the waiting `currentstate/get` to the loop with its credit.
    fn hand_get(&mut self, credit: Credit) {
        let Some((activity_id, coalesced)) = self.inbox.take_get() else {
            return;
        };
        if coalesced > 0 {
            tracing::debug!(activity = %activity_id, coalesced, "currentstate/get requests replaced by a newer one");
        }
        let _ = self.inputs.send(Input::CurrentStateGet {
            activity_id,
            credit,
        });
    }
}

/// Until `at`; never, when there is no `at`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Until the loop is done with the document it has; never, when it has none.
async fn answered(in_loop: &mut Option<(u64, oneshot::Receiver<()>)>) -> bool {
    match in_loop {
        Some((_, rx)) => rx.await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Runs the connection until `stop` turns true (or `outbox` closes), then
/// delivers what is queued for at most `drain_limit` and disconnects.
pub async fn run(
    settings: Settings,
    inputs: mpsc::UnboundedSender<Input>,
    mut outbox: mpsc::UnboundedReceiver<Outbound>,
    mut stop: watch::Receiver<bool>,
    drain_limit: Duration,
) {
    let (client, mut eventloop) = AsyncClient::new(settings.options().clone(), WINDOW * 4);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(settings.connect_timeout);
    // Feedback and acknowledgements are small packets that must go out at
    // once: with Nagle's algorithm each waited for the broker's delayed
    // ACK, about 40 ms (issue 25: MQTT -> IDENTIFYING under 20 ms).
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let topics = settings.topics.clone();
    let mut c = Connection {
        client: client.clone(),
        settings,
        inputs,
        delivery: Delivery::default(),
        inbox: Inbox::default(),
        connected: false,
        dropping_session: false,
        too_large_in_a_row: 0,
        subscriptions: Subscriptions::default(),
        commands: Arc::new(Semaphore::new(MAX_COMMANDS_IN_FLIGHT)),
    };
    // One `currentstate/get` in the loop's channel at a time.
    let gets = Arc::new(Semaphore::new(1));
    let mut in_loop: Option<(u64, oneshot::Receiver<()>)> = None;
    // Consecutive failed connection attempts, for the jittered back-off,
    // and which broker of `brokers` is in use.
    let mut attempts: u32 = 0;
    let mut broker_at: usize = 0;
    // When the connection came up: one that dies within STABLE_CONNECTION
    // of being accepted (a broker that accepts and then refuses a
    // subscription, say) does not reset the back-off, or berth would
    // reconnect several times a second for ever.
    let mut up_since: Option<tokio::time::Instant> = None;
    let mut closing: Option<tokio::time::Instant> = None;
    // A document the loop could not persist is not acknowledged; the broker
    // sends it again only on a new connection, so berth makes one, later
    // each time while it keeps failing (a full disk).
    let mut redeliver: Option<tokio::time::Instant> = None;
    let mut redeliver_delay = MIN_REDELIVERY_DELAY;
    loop {
        c.acknowledge();
        if let Some(since) = closing {
            while let Ok(m) = outbox.try_recv() {
                c.delivery.queue_all(message(&topics, m));
            }
            if c.delivery.is_idle() || since.elapsed() > drain_limit || !c.connected {
                if !c.delivery.is_idle() {
                    tracing::warn!(
                        waiting = c.delivery.waiting.len() + c.delivery.in_flight(),
                        "stopping with MQTT messages not delivered"
                    );
                }
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
                return;
            }
        } else {
            // While disconnected the outbox has no branch below (see there):
            // what the loop publishes meanwhile waits in the delivery queue,
            // which is bounded, not in the channel.
            loop {
                match outbox.try_recv() {
                    Ok(m) => c.delivery.queue_all(message(&topics, m)),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closing = Some(tokio::time::Instant::now());
                        break;
                    }
                }
            }
            c.hand_document(&mut in_loop);
        }
        // Hand waiting messages to rumqttc while connected and within the window.
        while c.connected && c.delivery.in_flight() < WINDOW {
            let Some(m) = c.delivery.waiting.pop_front() else {
                break;
            };
            match client.try_publish(&m.topic, QoS::AtLeastOnce, m.retain, m.payload.clone()) {
                Ok(()) => c.delivery.handed.push_back(m),
                Err(_) => {
                    c.delivery.waiting.push_front(m);
                    break;
                }
            }
        }
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(event) => {
                    if c.handle(event, true, &mut eventloop) == Then::Reconnect {
                        eventloop.clean();
                    }
                    if c.connected && up_since.is_none() {
                        up_since = Some(tokio::time::Instant::now());
                    }
                }
                Err(e) => {
                    // What rumqttc had read on the broken connection.
                    let stale: Vec<Event> = eventloop.state.events.drain(..).collect();
                    for event in stale {
                        c.handle(event, false, &mut eventloop);
                    }
                    let was_connected = std::mem::replace(&mut c.connected, false);
                    // The next connection is the one that brings the
                    // unacknowledged document back: no extra one is due.
                    redeliver = None;
                    if let Some(size) = too_large(&e) {
                        let wait = c.too_large(size, &mut eventloop);
                        if closing.is_none() && !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                        continue;
                    }
                    if up_since
                        .take()
                        .is_some_and(|t| t.elapsed() >= STABLE_CONNECTION)
                    {
                        attempts = 0;
                    }
                    attempts = attempts.saturating_add(1);
                    let delay = super::backoff::jittered(attempts);
                    if was_connected {
                        let _ = c.inputs.send(Input::Disconnected);
                        tracing::warn!(broker = %c.settings.url, error = %e, "lost the MQTT connection; reconnecting");
                    } else {
                        log_connect_error(&c.settings.url, &e, delay, c.settings.connect_timeout);
                    }
                    // The next attempt goes to the next broker of the list
                    // (the same one when there is one).
                    if c.settings.brokers.len() > 1 {
                        broker_at = (broker_at + 1) % c.settings.brokers.len();
                        let (url, options) = c.settings.brokers.at(broker_at).clone();
                        tracing::info!(broker = %url, "trying the next MQTT broker");
                        eventloop.mqtt_options = options;
                        c.settings.url = url;
                    }
                    if closing.is_none() {
                        tokio::time::sleep(delay).await;
                    }
                }
            },
            // The other branches wait while rumqttc connects: dropping its
            // poll mid-connect would drop the connection being made.
            done = answered(&mut in_loop), if in_loop.is_some() && c.connected => {
                if let Some((upto, _)) = in_loop.take() {
                    c.inbox.release(upto, done);
                }
                if done {
                    redeliver_delay = MIN_REDELIVERY_DELAY;
                } else if closing.is_none() {
                    redeliver = Some(tokio::time::Instant::now() + redeliver_delay);
                    redeliver_delay = (redeliver_delay * 2).min(MAX_RECONNECT_DELAY);
                }
            },
            () = sleep_until_some(redeliver), if redeliver.is_some() && c.connected && closing.is_none() => {
                redeliver = None;
                tracing::info!(broker = %c.settings.url, "reconnecting, so that the broker sends the unacknowledged desired state again");
                c.connected = false;
                eventloop.clean();
            },
            permit = gets.clone().acquire_owned(), if c.inbox.get.is_some() && closing.is_none() && c.connected => {
                if let Ok(permit) = permit {
                    c.hand_get(Credit::new(permit));
                }
            },
            m = outbox.recv(), if closing.is_none() && c.connected => match m {
                Some(m) => c.delivery.queue_all(message(&topics, m)),
                None => closing = Some(tokio::time::Instant::now()),
            },
            changed = stop.changed(), if closing.is_none() => {
                if changed.is_err() || *stop.borrow() {
                    closing = Some(tokio::time::Instant::now());
                }
            },
        }
    }
}

/// The TLS failure behind a connection error, if it is one: rustls's own
/// error wherever rumqttc wrapped it. A certificate berth does not trust
/// fails the handshake; a broker's refusal of berth's certificate (or its
/// lack of one) arrives under TLS 1.3 as an alert on the first read after
/// it, inside an MQTT read error. `io::Error::source` skips the error it
/// wraps, hence the look inside each one.
fn tls_failure(e: &ConnectionError) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = err.source();
    }
    None
}

/// What to check for a TLS failure, in the configuration's words.
fn tls_hint(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(_) => {
            "the broker's certificate is not one mqtt.ca_file (else the system CA bundle) vouches for, \
             or not for the host in mqtt.url"
        }
        rustls::Error::AlertReceived(_) => {
            "the broker refused the TLS session: it may require a client certificate \
             (mqtt.cert_file, mqtt.key_file) its CA signed"
        }
        _ => "check mqtt.url and the TLS files",
    }
}

/// A duration in whole seconds, rounded up, at least one: rumqttc counts
/// its connection timeout in seconds, and zero would give every attempt up
/// at once.
fn whole_seconds(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

fn log_connect_error(url: &str, e: &ConnectionError, delay: Duration, timeout: u64) {
    let retry = humantime::format_duration(delay).to_string();
    if let Some(tls) = tls_failure(e) {
        tracing::error!(broker = %url, error = %tls, hint = tls_hint(tls), retry_in = %retry, "TLS with the MQTT broker failed");
        return;
    }
    match e {
        ConnectionError::ConnectionRefused(code) => {
            tracing::error!(broker = %url, reason = ?code, retry_in = %retry, "the broker refused berth")
        }
        ConnectionError::NetworkTimeout => {
            tracing::warn!(broker = %url, connect_timeout = %format!("{timeout}s"), retry_in = %retry, "the MQTT broker did not answer within mqtt.connect_timeout; retrying")
        }
        _ => {
            tracing::info!(broker = %url, error = %e, retry_in = %retry, "cannot reach the MQTT broker")
        }
    }
}

/// The message for `m`; `None` (logged) when it cannot be serialised, so
/// that nothing empty is ever sent: an empty retained message would clear
/// the topic on the broker.
fn message(topics: &Topics, m: Outbound) -> Option<Message> {
    let (topic, retain, current_state, payload) = match &m {
        Outbound::Feedback(f) => (&topics.feedback, false, false, serde_json::to_vec(f)),
        Outbound::CurrentState(s) => (&topics.current, true, true, serde_json::to_vec(s)),
        Outbound::Upgrades(r) => (&topics.upgrades, true, false, serde_json::to_vec(r)),
    };
    match payload {
        Ok(payload) => Some(Message {
            topic: topic.clone(),
            retain,
            payload,
            current_state,
            seq: 0,
        }),
        Err(e) => {
            tracing::error!(topic = %topic, error = %e, "cannot serialise a message; not sent");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_kantos_naming() {
        let t = Topics::new("", "containers");
        assert_eq!(t.desired, "containersupdate/desiredstate");
        assert_eq!(t.current_get, "containersupdate/currentstate/get");
        assert_eq!(t.feedback, "containersupdate/desiredstatefeedback");
        assert_eq!(t.current, "containersupdate/currentstate");
        assert_eq!(t.command, "containersupdate/desiredstate/command");
        assert_eq!(t.upgrades, "containersupdate/upgrades");
    }

    #[test]
    fn the_periodic_check_is_published_retained_on_the_upgrades_topic() {
        let t = Topics::new("devices/d1/", "containers");
        let report = crate::check::watch::Report::new(Vec::new(), Some(1));
        let m = message(&t, Outbound::Upgrades(report)).unwrap();
        assert_eq!(m.topic, "devices/d1/containersupdate/upgrades");
        assert!(m.retain);
        assert_eq!(
            String::from_utf8(m.payload).unwrap(),
            r#"{"timestamp":1,"containers":[],"available":0}"#
        );
    }

    #[test]
    fn dashes_go_and_update_is_not_doubled() {
        assert_eq!(
            Topics::new("", "edge-apps").desired,
            "edgeappsupdate/desiredstate"
        );
        assert_eq!(
            Topics::new("", "vehicleupdate").feedback,
            "vehicleupdate/desiredstatefeedback"
        );
    }

    #[test]
    fn the_prefix_roots_every_topic() {
        let t = Topics::new("devices/d1/", "containers");
        assert_eq!(t.current, "devices/d1/containersupdate/currentstate");
    }

    #[test]
    fn host_and_port_are_read_from_the_url() {
        assert_eq!(
            host_port("broker:1884", 1883),
            Some(("broker".into(), 1884))
        );
        assert_eq!(host_port("broker", 8883), Some(("broker".into(), 8883)));
        assert_eq!(host_port("[::1]:1883/", 1), Some(("::1".into(), 1883)));
        assert_eq!(host_port("broker:x", 1), None);
        assert_eq!(host_port("", 1), None);
    }

    /// `systemd-id128 machine-id --app-specific=74913bd94ade4860b8ddabcad41b440e`
    /// printed 69815304b99f4251ac43998fa13a007c on the machine whose id is
    /// this one: the first 12 digits are the client id's.
    const MACHINE_ID: &str = "3d1219c7c4c5404aaa1f6d2a48adfda4\n";

    #[test]
    fn the_default_client_id_is_systemds_app_specific_id_of_the_machine() {
        assert_eq!(
            default_client_id(Some(MACHINE_ID), Some("edge-1"), "default"),
            "berth-69815304b99f"
        );
        assert!(!default_client_id(Some(MACHINE_ID), None, "default").contains("3d1219c7"));
    }

    #[test]
    fn the_default_client_id_differs_per_device_and_per_instance() {
        let other = "0123456789abcdef0123456789abcdef";
        assert_ne!(
            default_client_id(Some(MACHINE_ID), None, "default"),
            default_client_id(Some(other), None, "default")
        );
        assert_eq!(
            default_client_id(Some(MACHINE_ID), None, "edge"),
            "berth-69815304b99f-edge"
        );
    }

    #[test]
    fn without_a_usable_machine_id_the_default_client_id_is_the_host_name() {
        for bad in [
            None,
            Some(""),
            Some("not hex"),
            Some("00000000000000000000000000000000"),
        ] {
            assert_eq!(
                default_client_id(bad, Some("edge-1.lan\n"), "default"),
                "berth-edge-1.lan"
            );
        }
        assert_eq!(default_client_id(None, Some("gw"), "x"), "berth-gw-x");
        assert_eq!(default_client_id(None, None, "edge"), "berth-edge");
        assert_eq!(default_client_id(None, Some(" \n"), "edge"), "berth-edge");
    }

    #[test]
    fn settings_use_the_derived_client_id_unless_one_is_configured() {
        let host = Host {
            machine_id: Some(MACHINE_ID.into()),
            ..Host::default()
        };
        let s = Settings::on(&MqttConfig::default(), "default", &host).unwrap();
        assert_eq!(s.client_id(), "berth-69815304b99f");
        assert!(!s.options().clean_session());
        let config = MqttConfig {
            client_id: Some("berth-default".into()),
            ..Default::default()
        };
        let s = Settings::on(&config, "default", &host).unwrap();
        assert_eq!(s.client_id(), "berth-default");
    }

    #[test]
    fn the_connect_timeout_is_given_to_rumqttc_in_whole_seconds_rounded_up() {
        assert_eq!(whole_seconds(Duration::from_secs(30)), 30);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn settings_carry_the_configured_connect_timeout() {
        let config = MqttConfig {
            connect_timeout: Duration::from_secs(9),
            ..Default::default()
        };
        let s = Settings::on(&config, "default", &Host::default()).unwrap();
        assert_eq!(s.connect_timeout, 9);
    }

    #[test]
    fn a_credentials_path_is_read_from_systemds_directory() {
        let dir = Path::new("/run/credentials/berth.service");
        for written in [
            "${CREDENTIALS_DIRECTORY}/mqtt-password",
            "$CREDENTIALS_DIRECTORY/mqtt-password",
        ] {
            assert_eq!(
                expand_credentials(Path::new(written), "mqtt.password_file", Some(dir)).unwrap(),
                dir.join("mqtt-password")
            );
        }
        assert_eq!(
            expand_credentials(Path::new("/etc/berth/pw"), "mqtt.password_file", None).unwrap(),
            Path::new("/etc/berth/pw")
        );
    }

    #[test]
    fn a_credentials_path_without_systemds_directory_is_refused_naming_the_field() {
        let e = expand_credentials(
            Path::new("${CREDENTIALS_DIRECTORY}/mqtt-key"),
            "mqtt.key_file",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("mqtt.key_file: ${CREDENTIALS_DIRECTORY}/mqtt-key names $CREDENTIALS_DIRECTORY, which is not set"),
            "{e}"
        );
    }

    #[test]
    fn a_secret_file_others_can_read_is_warned_about_with_its_mode() {
        let p = Path::new("/etc/berth/pw");
        assert_eq!(
            loose_mode_warning("mqtt.password_file", p, 0o100644).as_deref(),
            Some("mqtt.password_file /etc/berth/pw is readable by group and others (mode 0644); make it 0600 or 0400")
        );
        assert!(loose_mode_warning("k", p, 0o640)
            .unwrap()
            .contains("its group (mode 0640)"));
        assert!(loose_mode_warning("k", p, 0o604)
            .unwrap()
            .contains("others (mode 0604)"));
    }

    #[test]
    fn a_secret_file_only_its_owner_can_read_is_not_warned_about() {
        let p = Path::new("/k");
        assert_eq!(loose_mode_warning("k", p, 0o100600), None);
        assert_eq!(loose_mode_warning("k", p, 0o400), None);
    }

    #[test]
    fn settings_warn_about_a_loose_password_file_read_through_credentials() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("mqtt-password");
        std::fs::write(&pw, "secret\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let host = Host {
            credentials_directory: Some(dir.path().to_path_buf()),
            ..Host::default()
        };
        let config = MqttConfig {
            username: Some("u".into()),
            password_file: Some("${CREDENTIALS_DIRECTORY}/mqtt-password".into()),
            ..Default::default()
        };
        let s = Settings::on(&config, "x", &host).unwrap();
        assert_eq!(s.warnings().len(), 1, "{:?}", s.warnings());
        assert!(s.warnings()[0].contains("mode 0644"), "{:?}", s.warnings());
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Settings::on(&config, "x", &host)
            .unwrap()
            .warnings()
            .is_empty());
    }

    #[test]
    fn a_missing_password_file_is_named() {
        let config = MqttConfig {
            username: Some("u".into()),
            password_file: Some("/nonexistent/pw".into()),
            ..Default::default()
        };
        let e = Settings::new(&config, "x").unwrap_err().to_string();
        assert!(e.starts_with("mqtt.password_file:"), "{e}");
    }

    #[test]
    fn activity_ids_are_read_from_any_json() {
        assert_eq!(
            activity_id_in(br#"{"activityId":"a1","payload":null}"#),
            "a1"
        );
        assert_eq!(activity_id_in(b"null"), "");
        assert_eq!(activity_id_in(b"not json"), "");
    }

    fn msg(n: u8, current_state: bool) -> Message {
        Message {
            topic: "t".into(),
            retain: current_state,
            payload: vec![n],
            current_state,
            seq: 0,
        }
    }

    /// Queues and hands over `n` messages, as the connection loop does.
    fn hand(d: &mut Delivery, n: usize) {
        for _ in 0..n {
            let m = d.waiting.pop_front().unwrap();
            d.handed.push_back(m);
        }
    }

    #[test]
    fn a_waiting_current_state_is_replaced_by_a_newer_one() {
        let mut d = Delivery::default();
        d.queue(msg(1, true));
        d.queue(msg(2, false));
        d.queue(msg(3, true));
        let payloads: Vec<u8> = d.waiting.iter().map(|m| m.payload[0]).collect();
        assert_eq!(payloads, [2, 3]);
    }

    #[test]
    fn unacknowledged_messages_go_again_first_and_in_order() {
        let mut d = Delivery::default();
        for n in 1..=4 {
            d.queue(msg(n, false));
        }
        hand(&mut d, 2);
        d.sent(9);
        d.sent(2);
        hand(&mut d, 1);
        d.resend_all();
        let payloads: Vec<u8> = d.waiting.iter().map(|m| m.payload[0]).collect();
        assert_eq!(payloads, [1, 2, 3, 4]);
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn an_acknowledged_message_is_forgotten() {
        let mut d = Delivery::default();
        d.queue(msg(1, false));
        hand(&mut d, 1);
        d.sent(3);
        d.sent(3);
        assert_eq!(
            d.in_flight(),
            1,
            "a resend of packet 3 is not a new message"
        );
        d.acked(3);
        assert!(d.is_idle());
    }

    fn text(id: &str) -> Body {
        Body::Text(format!(r#"{{"activityId":"{id}"}}"#))
    }

    /// The packet ids the inbox lets go now, in order.
    fn drain_acks(inbox: &mut Inbox) -> Vec<u16> {
        let mut sent = Vec::new();
        while let Some(owed) = inbox.due() {
            sent.push(owed.pkid);
            inbox.acked();
        }
        sent
    }

    #[test]
    fn the_incoming_limit_is_the_message_size_plus_the_longest_topic_and_the_header() {
        let topics = Topics::new("", "containers");
        let longest = topics.command.len();
        assert!(longest > topics.desired.len() && longest > topics.current_get.len());
        assert_eq!(incoming_limit(1 << 20, &topics), (1 << 20) + longest + 4);
        assert_eq!(incoming_limit(MQTT_MAX_PACKET, &topics), MQTT_MAX_PACKET);
        let s = Settings::new(&MqttConfig::default(), "edge").unwrap();
        assert_eq!(
            s.options().max_packet_size(),
            incoming_limit(MqttConfig::default().max_message_size, &s.topics)
        );
    }

    #[test]
    fn a_message_too_large_is_read_once_under_a_bounded_larger_limit() {
        let config = MqttConfig {
            max_message_size: 4096,
            ..Default::default()
        };
        let s = Settings::new(&config, "edge").unwrap();
        assert_eq!(s.packet_limit(false), incoming_limit(4096, &s.topics));
        assert_eq!(
            s.packet_limit(true),
            incoming_limit(DEFAULT_MAX_OVERSIZE_READ, &s.topics)
        );
        let small = s.clone().with_max_oversize_read(10);
        assert_eq!(
            small.packet_limit(true),
            small.packet_limit(false),
            "never less than max_message_size"
        );
    }

    #[test]
    fn only_subscriptions_the_broker_has_not_acknowledged_in_the_session_are_made_again() {
        let topics = ["d".to_string(), "g".to_string()];
        let mut subs = Subscriptions::default();
        assert_eq!(subs.missing(&topics), topics);
        for t in subs.missing(&topics) {
            subs.asked(t);
        }
        subs.sent(1);
        subs.sent(2);
        subs.answered(1, true);
        // The connection broke before the second SUBACK.
        subs.reconnected(true);
        assert_eq!(subs.missing(&topics), ["g"]);
        subs.asked("g".into());
        subs.sent(3);
        subs.answered(3, false);
        assert_eq!(subs.missing(&topics), ["g"], "a refused one is made again");
        subs.reconnected(false);
        assert_eq!(subs.missing(&topics), topics, "a new session has none");
    }

    #[test]
    fn rumqttcs_refusal_of_a_large_packet_is_recognised_with_its_size() {
        let e = ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(5000),
        ));
        assert_eq!(too_large(&e), Some(5000));
        assert_eq!(too_large(&ConnectionError::NetworkTimeout), None);
    }

    #[test]
    fn a_flood_of_desired_states_waits_as_the_newest_naming_the_ones_it_replaced() {
        let mut inbox = Inbox::default();
        let payload = "x".repeat(10_000);
        for i in 0..10_000 {
            inbox.document(
                QoS::AtMostOnce,
                None,
                Body::Text(format!(r#"{{"activityId":"d{i}","pad":"{payload}"}}"#)),
                format!("d{i}"),
            );
        }
        let (waiting, unnamed) = inbox.take_document().expect("one waits");
        assert_eq!(waiting.activity_id, "d9999");
        assert_eq!(waiting.superseded.len(), MAX_NAMED_SUPERSEDED);
        assert_eq!(waiting.superseded[0], "d0", "oldest first");
        assert_eq!(unnamed, 9_999 - MAX_NAMED_SUPERSEDED as u64);
        assert!(inbox.take_document().is_none(), "only one document is kept");
        assert!(inbox.acks.is_empty(), "QoS 0 is never acknowledged");
    }

    #[test]
    fn a_flood_of_currentstate_gets_waits_as_the_latest_one() {
        let mut inbox = Inbox::default();
        for i in 0..1000u16 {
            inbox.get(QoS::AtLeastOnce, Some(i + 1), format!("get-{i}"));
        }
        assert_eq!(inbox.take_get(), Some(("get-999".into(), 999)));
        assert_eq!(inbox.take_get(), None);
        assert_eq!(
            drain_acks(&mut inbox).len(),
            1000,
            "every request is acknowledged"
        );
    }

    #[test]
    fn acknowledgements_go_out_in_the_order_the_messages_came() {
        let mut inbox = Inbox::default();
        inbox.document(QoS::AtLeastOnce, Some(1), text("a"), "a".into());
        let (first, _) = inbox.take_document().unwrap();
        inbox.get(QoS::AtLeastOnce, Some(2), "g".into());
        inbox.document(QoS::AtLeastOnce, Some(3), text("b"), "b".into());
        inbox.other(QoS::AtLeastOnce, Some(4));
        assert_eq!(
            drain_acks(&mut inbox),
            [] as [u16; 0],
            "nothing passes a document the loop has not persisted"
        );
        inbox.release(first.seq, true);
        assert_eq!(drain_acks(&mut inbox), [1, 2], "up to the next document");
        let (second, _) = inbox.take_document().unwrap();
        inbox.release(second.seq, true);
        assert_eq!(drain_acks(&mut inbox), [3, 4]);
    }

    #[test]
    fn a_document_replaced_while_waiting_is_acknowledged_with_the_one_that_replaced_it() {
        let mut inbox = Inbox::default();
        inbox.document(QoS::AtLeastOnce, Some(1), text("a"), "a".into());
        inbox.document(QoS::AtLeastOnce, Some(2), text("b"), "b".into());
        let (b, _) = inbox.take_document().unwrap();
        assert_eq!(b.superseded, ["a"]);
        assert_eq!(drain_acks(&mut inbox), [] as [u16; 0]);
        inbox.release(b.seq, true);
        assert_eq!(drain_acks(&mut inbox), [1, 2]);
    }

    #[test]
    fn a_document_the_loop_dropped_is_not_acknowledged_and_does_not_hold_back_the_rest() {
        let mut inbox = Inbox::default();
        inbox.document(QoS::AtLeastOnce, Some(1), text("a"), "a".into());
        let (a, _) = inbox.take_document().unwrap();
        inbox.get(QoS::AtLeastOnce, Some(2), "g".into());
        inbox.release(a.seq, false);
        assert_eq!(drain_acks(&mut inbox), [2]);
    }

    #[test]
    fn acknowledgements_owed_on_a_broken_connection_are_forgotten_at_the_reconnect() {
        let mut inbox = Inbox::default();
        inbox.document(QoS::AtLeastOnce, Some(7), text("a"), "a".into());
        let (a, _) = inbox.take_document().unwrap();
        inbox.reconnected();
        // The broker sends it again under its id; the old promise must not
        // acknowledge whatever else comes under id 7 now.
        inbox.release(a.seq, true);
        assert_eq!(drain_acks(&mut inbox), [] as [u16; 0]);
    }

    #[test]
    fn a_message_from_a_broken_connection_is_used_but_never_acknowledged() {
        let mut inbox = Inbox::default();
        inbox.document(QoS::AtLeastOnce, None, text("a"), "a".into());
        let (a, _) = inbox.take_document().unwrap();
        inbox.release(a.seq, true);
        assert!(inbox.acks.is_empty());
    }
}
