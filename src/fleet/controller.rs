//! `berth fleet rollout`, the MQTT side (issue 26): it finds the devices
//! and their current states, publishes the document to each device's
//! prefix one wave at a time, follows every device's feedback, and stops
//! at the first wave that fails more than allowed. The decisions are
//! [`super::rollout`]'s.
//!
//! It never relies on retained messages alone: every named device is asked
//! for its current state (`currentstate/get`), since RabbitMQ 3.x keeps a
//! retained message on the node that received it only.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::rollout::{Rollout, Summary, Target, Verdict, Wave};
use crate::agent::mqtt::Topics;
use crate::inventory::CurrentState;

/// How a rollout runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// rumqttc's options, one per broker URL, tried in turn.
    pub brokers: Vec<MqttOptions>,
    /// The root of the devices' prefixes (`devices/`).
    pub prefix: String,
    /// The update domain (`containers`).
    pub domain: String,
    /// The devices, or `None` to take those whose current state is seen.
    pub devices: Option<Vec<String>>,
    /// How long to collect current states before the first wave.
    pub discover_wait: Duration,
    /// The waves.
    pub waves: Vec<Wave>,
    /// The failure ratio a wave may have.
    pub max_failures: f64,
    /// How long a device may take to a final status.
    pub timeout: Duration,
}

/// Why a rollout could not run.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// No broker took the connection.
    #[error("cannot reach any broker: {0}")]
    Unreachable(String),
    /// Nothing to roll out to.
    #[error("no devices: {0}")]
    NoDevices(String),
    /// The client's request queue closed (the connection task ended).
    #[error("the MQTT client stopped: {0}")]
    Client(String),
}

/// What one wave did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaveReport {
    /// Its devices.
    pub devices: usize,
    /// Whether it passed.
    pub passed: bool,
}

/// The end of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The activity.
    pub activity_id: String,
    /// The waves run, in order.
    pub waves: Vec<WaveReport>,
    /// Whether it stopped at a failed wave.
    pub stopped: bool,
    /// The counts, timings and failed devices.
    pub summary: Summary,
    /// Wall time, in milliseconds.
    pub took_ms: u128,
}

/// What the controller tells whoever shows it.
pub trait Show {
    /// The rollout's state, about four times a second.
    fn progress(&mut self, rollout: &Rollout, wave: usize, waves: usize);
    /// A wave ended.
    fn wave(&mut self, wave: usize, waves: usize, verdict: &Verdict);
}

/// A message from the broker the controller cares about.
#[derive(Debug)]
enum Heard {
    Feedback {
        device: String,
        activity_id: String,
        status: String,
        message: Option<String>,
    },
    Current {
        device: String,
        state: Box<CurrentState>,
    },
    Connected,
}

/// Runs the rollout of `document` (its text, published as is) whose target
/// is `target`.
///
/// # Errors
/// [`ControllerError`] when no broker can be reached or no device found.
pub async fn rollout(
    document: &str,
    target: Target,
    options: &Options,
    show: &mut dyn Show,
) -> Result<Report, ControllerError> {
    let t0 = Instant::now();
    let subscribe_to = Topics::new(&format!("{}+/", options.prefix), &options.domain);
    let (client, heard) = connect(options, &subscribe_to).await?;
    let mut heard = heard;
    // Current states: the named devices are asked; retained ones come too.
    let mut current: BTreeMap<String, CurrentState> = BTreeMap::new();
    if let Some(devices) = &options.devices {
        for d in devices {
            let topics = device_topics(options, d);
            let ask = serde_json::json!({
                "activityId": format!("rollout-get-{}", crate::history::now_ms()),
                "timestamp": crate::history::now_ms(),
            });
            client
                .publish(topics.current_get, QoS::AtLeastOnce, false, ask.to_string())
                .await
                .map_err(|e| ControllerError::Client(e.to_string()))?;
        }
    }
    let until = Instant::now() + options.discover_wait;
    while let Ok(Some(h)) = tokio::time::timeout_at(until, heard.recv()).await {
        if let Heard::Current { device, state } = h {
            current.insert(device, *state);
        }
    }
    let devices: Vec<String> = match &options.devices {
        Some(d) => d.clone(),
        None => current.keys().cloned().collect(),
    };
    if devices.is_empty() {
        return Err(ControllerError::NoDevices(format!(
            "no current state under {}+/ within {}",
            options.prefix,
            humantime::format_duration(options.discover_wait)
        )));
    }
    let mut rollout = Rollout::new(target, devices);
    for (device, state) in &current {
        if rollout.target.reached_by(&state.payload, &options.domain) {
            rollout.already(device);
        }
    }
    let waves: Vec<Range<usize>> = super::rollout::waves(rollout.order.len(), &options.waves);
    let mut reports = Vec::new();
    let mut stopped = false;
    for (k, wave) in waves.iter().enumerate() {
        let todo: Vec<String> = rollout.order[wave.clone()]
            .iter()
            .filter(|d| matches!(rollout.progress(d), Some(super::rollout::Progress::Pending)))
            .cloned()
            .collect();
        for d in todo {
            let topics = device_topics(options, &d);
            rollout.sent(&d, t0.elapsed());
            client
                .publish(
                    topics.desired,
                    QoS::AtLeastOnce,
                    false,
                    document.to_string(),
                )
                .await
                .map_err(|e| ControllerError::Client(e.to_string()))?;
        }
        let verdict = follow(
            &mut rollout,
            wave,
            &mut heard,
            options,
            t0,
            show,
            k,
            waves.len(),
        )
        .await;
        show.wave(k, waves.len(), &verdict);
        let passed = !matches!(verdict, Verdict::Failed(_));
        reports.push(WaveReport {
            devices: wave.len(),
            passed,
        });
        if !passed {
            stopped = true;
            break;
        }
    }
    let _ = client.disconnect().await;
    Ok(Report {
        activity_id: rollout.target.activity_id.clone(),
        waves: reports,
        stopped,
        summary: rollout.summary(),
        took_ms: t0.elapsed().as_millis(),
    })
}

/// Follows the feedback until the wave's verdict is in.
#[allow(clippy::too_many_arguments)]
async fn follow(
    rollout: &mut Rollout,
    wave: &Range<usize>,
    heard: &mut mpsc::UnboundedReceiver<Heard>,
    options: &Options,
    t0: Instant,
    show: &mut dyn Show,
    k: usize,
    n: usize,
) -> Verdict {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            h = heard.recv() => match h {
                Some(Heard::Feedback { device, activity_id, status, message }) => {
                    rollout.feedback(&device, &activity_id, &status, message.as_deref(), t0.elapsed());
                }
                Some(_) => {}
                // The connection task ended: nothing more can come.
                None => {
                    rollout.time_out(t0.elapsed() + options.timeout, options.timeout);
                }
            },
            _ = tick.tick() => {
                rollout.time_out(t0.elapsed(), options.timeout);
                show.progress(rollout, k, n);
            }
        }
        let verdict = rollout.verdict(wave, options.max_failures);
        if verdict != Verdict::Waiting {
            show.progress(rollout, k, n);
            return verdict;
        }
    }
}

fn device_topics(options: &Options, device: &str) -> Topics {
    Topics::new(&format!("{}{device}/", options.prefix), &options.domain)
}

/// The device a topic under `prefix` is for (`devices/sim-0001/…`).
fn device_of<'a>(prefix: &str, topic: &'a str) -> Option<&'a str> {
    topic.strip_prefix(prefix)?.split('/').next()
}

/// Connects to the first broker that answers, subscribes, and hands the
/// messages it hears to the returned channel; on a lost connection it
/// fails over to the next broker with jittered back-off, and subscribes
/// again.
async fn connect(
    options: &Options,
    topics: &Topics,
) -> Result<(AsyncClient, mpsc::UnboundedReceiver<Heard>), ControllerError> {
    let brokers: Vec<MqttOptions> = options.brokers.iter().cloned().map(tuned).collect();
    let first = brokers
        .first()
        .cloned()
        .ok_or_else(|| ControllerError::Unreachable("no broker given".into()))?;
    let (client, mut eventloop) = AsyncClient::new(first, 4096);
    // Small messages to many devices: none waits for a delayed ACK.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (tx, rx) = mpsc::unbounded_channel();
    let filters = vec![topics.feedback.clone(), topics.current.clone()];
    let prefix = options.prefix.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(pump(
        eventloop,
        client.clone(),
        brokers,
        filters,
        prefix,
        tx,
        ready_tx,
    ));
    match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
        Ok(Ok(Ok(()))) => Ok((client, rx)),
        Ok(Ok(Err(e))) => Err(ControllerError::Unreachable(e)),
        _ => Err(ControllerError::Unreachable(
            "no broker accepted the connection within 30s".into(),
        )),
    }
}

/// The agent's options made a controller's: it follows thousands of
/// devices (room for their messages), and what it hears it only reads, so
/// rumqttc acknowledges each message itself (the agent acknowledges only
/// what it persisted; a controller that never acknowledged would stop
/// hearing anything once the broker's in-flight window filled).
fn tuned(mut o: MqttOptions) -> MqttOptions {
    o.set_manual_acks(false);
    o.set_clean_session(true);
    o.set_request_channel_capacity(4096);
    o.set_inflight(1000);
    o.set_max_packet_size(4 << 20, 4 << 20);
    o
}

/// The connection's task: polls the event loop, subscribes at every
/// connect, fails over.
async fn pump(
    mut eventloop: EventLoop,
    client: AsyncClient,
    brokers: Vec<MqttOptions>,
    filters: Vec<String>,
    prefix: String,
    tx: mpsc::UnboundedSender<Heard>,
    ready: tokio::sync::oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut at = 0usize;
    let mut failures = 0u32;
    let mut errors: Vec<String> = Vec::new();
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                errors.clear();
                for f in &filters {
                    if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                        tracing::warn!(error = %e, "cannot subscribe to {f}");
                    }
                }
                let (host, port) = eventloop.mqtt_options.broker_address();
                tracing::info!(broker = %format!("{host}:{port}"), "connected");
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
                let _ = tx.send(Heard::Connected);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Some(h) = heard(&prefix, &p.topic, &p.payload) {
                    if tx.send(h).is_err() {
                        return;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                let (host, port) = eventloop.mqtt_options.broker_address();
                errors.push(format!("{host}:{port}: {e}"));
                failures = failures.saturating_add(1);
                if failures as usize >= brokers.len() * 3 && ready.is_some() {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(errors.join("; ")));
                    }
                    return;
                }
                if tx.is_closed() {
                    return;
                }
                at = (at + 1) % brokers.len().max(1);
                if let Some(next) = brokers.get(at) {
                    eventloop.mqtt_options = next.clone();
                }
                let wait = crate::agent::backoff::jittered(failures);
                tracing::warn!(error = %e, "lost the broker; trying the next in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Reads a message on a device's feedback or current-state topic.
fn heard(prefix: &str, topic: &str, payload: &[u8]) -> Option<Heard> {
    let device = device_of(prefix, topic)?.to_string();
    if topic.ends_with("/desiredstatefeedback") {
        let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
        return Some(Heard::Feedback {
            device,
            activity_id: v["activityId"].as_str()?.to_string(),
            status: v["payload"]["status"].as_str()?.to_string(),
            message: v["payload"]["message"].as_str().map(str::to_string),
        });
    }
    if topic.ends_with("/currentstate") {
        let state: CurrentState = serde_json::from_slice(payload).ok()?;
        return Some(Heard::Current {
            device,
            state: Box::new(state),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_is_the_level_after_the_prefix() {
        assert_eq!(
            device_of("devices/", "devices/sim-0001/containersupdate/currentstate"),
            Some("sim-0001")
        );
        assert_eq!(device_of("devices/", "other/sim-0001/x"), None);
    }

    #[test]
    fn a_feedback_message_is_read_with_its_activity_status_and_message() {
        let h = heard(
            "devices/",
            "devices/sim-0007/containersupdate/desiredstatefeedback",
            br#"{"activityId":"a1","payload":{"status":"INCOMPLETE","message":"pull failed"}}"#,
        );
        let Some(Heard::Feedback {
            device,
            activity_id,
            status,
            message,
        }) = h
        else {
            panic!("{h:?}");
        };
        assert_eq!(
            (device.as_str(), activity_id.as_str(), status.as_str()),
            ("sim-0007", "a1", "INCOMPLETE")
        );
        assert_eq!(message.as_deref(), Some("pull failed"));
    }

    #[test]
    fn a_message_on_another_topic_or_not_json_is_dropped() {
        assert!(heard(
            "devices/",
            "devices/d/containersupdate/desiredstatefeedback",
            b"{"
        )
        .is_none());
        assert!(heard("devices/", "devices/d/containersupdate/desiredstate", b"{}").is_none());
    }
}
