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

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Outgoing, Packet, Publish, QoS,
    TlsConfiguration, Transport,
};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::{Body, Incoming, Input, Origin, Outbound};
use crate::config::MqttConfig;

/// Largest packet rumqttc will take: MQTT's own limit. A smaller one would
/// make rumqttc drop the connection on a big message, which the broker then
/// delivers again, forever; berth refuses big documents itself instead.
const MQTT_MAX_PACKET: usize = 268_435_455;
/// Messages handed to rumqttc and not yet acknowledged, at most.
const WINDOW: usize = 32;
/// Feedback messages kept while the broker is away; older ones are dropped.
const MAX_WAITING: usize = 10_000;
/// The longest wait between connection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);
/// Where Debian keeps the system's CA bundle, for `mqtts://` without `ca_file`.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The agent's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Desired states arrive here.
    pub desired: String,
    /// Requests for the current state arrive here.
    pub current_get: String,
    /// Progress feedback goes here.
    pub feedback: String,
    /// The inventory goes here, retained.
    pub current: String,
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
            feedback: format!("{base}/desiredstatefeedback"),
            current: format!("{base}/currentstate"),
        }
    }
}

/// Why the MQTT settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MqttSetupError(String);

/// Everything needed to connect.
#[derive(Debug, Clone)]
pub struct Settings {
    /// rumqttc's options (broker, identity, TLS, credentials).
    options: MqttOptions,
    /// Where the broker is, for logs.
    url: String,
    /// The topics.
    pub topics: Topics,
    /// Larger desired states are refused.
    max_message_size: usize,
}

impl Settings {
    /// Reads the TLS and password files and builds rumqttc's options.
    ///
    /// # Errors
    /// A file that cannot be read, or a URL without a usable host and port.
    pub fn new(config: &MqttConfig, instance: &str) -> Result<Self, MqttSetupError> {
        let (scheme, rest) = config
            .url
            .split_once("://")
            .ok_or_else(|| MqttSetupError(format!("mqtt.url: \"{}\" has no scheme", config.url)))?;
        let tls = matches!(scheme, "mqtts" | "ssl");
        let (host, port) = host_port(rest, if tls { 8883 } else { 1883 }).ok_or_else(|| {
            MqttSetupError(format!(
                "mqtt.url: \"{}\" is not scheme://host[:port]",
                config.url
            ))
        })?;
        let client_id = config
            .client_id
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| format!("berth-{instance}"));
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_keep_alive(config.keep_alive)
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(MQTT_MAX_PACKET, MQTT_MAX_PACKET)
            .set_inflight(WINDOW as u16)
            .set_request_channel_capacity(WINDOW * 4);
        let password = match (&config.password, &config.password_file) {
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
            let ca = match &config.ca_file {
                Some(file) => read_bytes(file, "mqtt.ca_file")?,
                None => read_bytes(Path::new(SYSTEM_CA_BUNDLE), "the system CA bundle")?,
            };
            let client_auth = match (&config.cert_file, &config.key_file) {
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
        Ok(Self {
            options,
            url: config.url.clone(),
            topics: Topics::new(&config.topic_prefix, &config.domain),
            max_message_size: config.max_message_size,
        })
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

/// The activity id of a request or document, read without trusting the
/// rest of it.
fn activity_id(payload: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Id {
        #[serde(rename = "activityId")]
        activity_id: Option<String>,
    }
    serde_json::from_slice::<Id>(payload)
        .ok()
        .and_then(|i| i.activity_id)
        .unwrap_or_default()
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
    let (client, mut eventloop) = AsyncClient::new(settings.options.clone(), WINDOW * 4);
    let topics = settings.topics.clone();
    let mut delivery = Delivery::default();
    let mut connected = false;
    let mut delay = Duration::from_millis(250);
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        if let Some(since) = closing {
            while let Ok(m) = outbox.try_recv() {
                delivery.queue(message(&topics, m));
            }
            if delivery.is_idle() || since.elapsed() > drain_limit || !connected {
                if !delivery.is_idle() {
                    tracing::warn!(
                        waiting = delivery.waiting.len() + delivery.in_flight(),
                        "stopping with MQTT messages not delivered"
                    );
                }
                let _ = client.try_disconnect();
                let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
                return;
            }
        }
        // Hand waiting messages to rumqttc while connected and within the window.
        while connected && delivery.in_flight() < WINDOW {
            let Some(m) = delivery.waiting.pop_front() else {
                break;
            };
            match client.try_publish(&m.topic, QoS::AtLeastOnce, m.retain, m.payload.clone()) {
                Ok(()) => delivery.handed.push_back(m),
                Err(_) => {
                    delivery.waiting.push_front(m);
                    break;
                }
            }
        }
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(event) => {
                    handle(event, &client, &topics, &settings, &inputs, &mut delivery, &mut connected);
                    if connected {
                        delay = Duration::from_millis(250);
                    }
                }
                Err(e) => {
                    if connected {
                        tracing::warn!(broker = %settings.url, error = %e, "lost the MQTT connection; reconnecting");
                    } else {
                        log_connect_error(&settings.url, &e, delay);
                    }
                    connected = false;
                    if closing.is_none() {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                    }
                }
            },
            m = outbox.recv(), if closing.is_none() => match m {
                Some(m) => delivery.queue(message(&topics, m)),
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

fn log_connect_error(url: &str, e: &ConnectionError, delay: Duration) {
    let retry = humantime::format_duration(delay).to_string();
    match e {
        ConnectionError::ConnectionRefused(code) => {
            tracing::error!(broker = %url, reason = ?code, retry_in = %retry, "the broker refused berth")
        }
        _ => {
            tracing::info!(broker = %url, error = %e, retry_in = %retry, "cannot reach the MQTT broker")
        }
    }
}

fn message(topics: &Topics, m: Outbound) -> Message {
    match m {
        Outbound::Feedback(f) => Message {
            topic: topics.feedback.clone(),
            retain: false,
            payload: serde_json::to_vec(&f).unwrap_or_default(),
            current_state: false,
            seq: 0,
        },
        Outbound::CurrentState(s) => Message {
            topic: topics.current.clone(),
            retain: true,
            payload: serde_json::to_vec(&s).unwrap_or_default(),
            current_state: true,
            seq: 0,
        },
    }
}

fn handle(
    event: Event,
    client: &AsyncClient,
    topics: &Topics,
    settings: &Settings,
    inputs: &mpsc::UnboundedSender<Input>,
    delivery: &mut Delivery,
    connected: &mut bool,
) {
    match event {
        Event::Incoming(Packet::ConnAck(ack)) => {
            *connected = true;
            if !ack.session_present {
                delivery.resend_all();
            }
            tracing::info!(broker = %settings.url, session_present = ack.session_present, "connected to the MQTT broker");
            for topic in [&topics.desired, &topics.current_get] {
                if let Err(e) = client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                    tracing::warn!(topic = %topic, error = %e, "cannot subscribe");
                }
            }
            let _ = inputs.send(Input::Connected);
        }
        Event::Incoming(Packet::Publish(p)) => incoming(p, client, topics, settings, inputs),
        Event::Incoming(Packet::PubAck(a)) => delivery.acked(a.pkid),
        Event::Outgoing(Outgoing::Publish(pkid)) => delivery.sent(pkid),
        _ => {}
    }
}

fn incoming(
    p: Publish,
    client: &AsyncClient,
    topics: &Topics,
    settings: &Settings,
    inputs: &mpsc::UnboundedSender<Input>,
) {
    if p.topic == topics.current_get {
        let _ = inputs.send(Input::CurrentStateGet {
            activity_id: activity_id(&p.payload),
        });
        ack_later(client, p, None);
        return;
    }
    if p.topic != topics.desired {
        ack_later(client, p, None);
        return;
    }
    let body = if p.payload.len() > settings.max_message_size {
        Body::Refused {
            activity_id: activity_id(&p.payload),
            errors: vec![format!(
                "document: the message has {} bytes, more than mqtt.max_message_size ({})",
                p.payload.len(),
                settings.max_message_size
            )],
        }
    } else {
        match std::str::from_utf8(&p.payload) {
            Ok(text) => Body::Text(text.to_string()),
            Err(e) => Body::Refused {
                activity_id: String::new(),
                errors: vec![format!("document: is not UTF-8 text ({e})")],
            },
        }
    };
    let (tx, rx) = oneshot::channel();
    let _ = inputs.send(Input::Document(Incoming {
        origin: Origin::Mqtt,
        body,
        ack: Some(tx),
    }));
    ack_later(client, p, Some(rx));
}

/// Acknowledges a message once the loop has taken care of it (persisted
/// it); when the loop drops the promise, the broker delivers it again.
fn ack_later(client: &AsyncClient, p: Publish, done: Option<oneshot::Receiver<()>>) {
    let client = client.clone();
    tokio::spawn(async move {
        if let Some(done) = done {
            if done.await.is_err() {
                return;
            }
        }
        let _ = client.ack(&p).await;
    });
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

    #[test]
    fn a_default_client_id_names_the_instance() {
        let s = Settings::new(&MqttConfig::default(), "edge").unwrap();
        assert_eq!(s.options.client_id(), "berth-edge");
        assert!(!s.options.clean_session());
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
        assert_eq!(activity_id(br#"{"activityId":"a1","payload":null}"#), "a1");
        assert_eq!(activity_id(b"null"), "");
        assert_eq!(activity_id(b"not json"), "");
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
}
