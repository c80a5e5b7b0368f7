//! The rollout controller's decisions (issue 26), pure: which devices go in
//! which wave, what each device's feedback means, whether a wave failed,
//! whether a device already runs the target (so a rerun resumes), and the
//! summary. The MQTT side is `fleet::controller`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::Serialize;

use crate::inventory::Inventory;
use crate::spec::model::DesiredState;

/// What the devices are to run: the document's activity and, per
/// component, the version the current state reports for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The document's activity id, which every device's feedback carries.
    pub activity_id: String,
    /// `(component id, version)`, the version as the agent reports it (the
    /// component's `version`, else its image's tag).
    pub components: Vec<(String, String)>,
}

impl Target {
    /// The target of a document.
    pub fn of(desired: &DesiredState) -> Self {
        Self {
            activity_id: desired.activity_id.clone(),
            components: desired
                .containers
                .iter()
                .map(|c| {
                    let version = c
                        .version
                        .clone()
                        .unwrap_or_else(|| c.config.image.version_hint().to_string());
                    (c.name.clone(), version)
                })
                .collect(),
        }
    }

    /// Whether a device whose current state is `inventory` runs the target
    /// already: every component there, at its version, running (or, a
    /// job, exited 0).
    pub fn reached_by(&self, inventory: &Inventory, domain: &str) -> bool {
        let param = |n: &crate::inventory::SoftwareNode, key: &str| {
            n.parameters
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.value.clone())
        };
        self.components.iter().all(|(id, version)| {
            let node_id = format!("{domain}:{id}");
            inventory.software_nodes.iter().any(|n| {
                let status = param(n, "status");
                let up = status.as_deref() == Some("Running")
                    || (status.as_deref() == Some("Exited")
                        && param(n, "exitCode").as_deref() == Some("0"));
                n.id == node_id && n.version == *version && up
            })
        })
    }
}

/// One wave: the share of all devices it brings the rollout to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wave {
    /// A share of the fleet (`10%`), cumulative.
    Share(f64),
    /// A number of devices (`50`), cumulative.
    Count(usize),
}

/// Reads `1%,10%,100%` (shares or counts, cumulative, growing). A last
/// wave short of everything is refused: the rollout would end with devices
/// never asked.
///
/// # Errors
/// Naming the entry and what is wrong with it.
pub fn parse_waves(text: &str) -> Result<Vec<Wave>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let wave = if let Some(p) = part.strip_suffix('%') {
            let share: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("wave {part:?} is not a percentage"))?;
            if !(share > 0.0 && share <= 100.0) {
                return Err(format!(
                    "wave {part:?} must be more than 0% and at most 100%"
                ));
            }
            Wave::Share(share / 100.0)
        } else {
            let n: usize = part
                .parse()
                .map_err(|_| format!("wave {part:?} is neither a count nor a percentage"))?;
            if n == 0 {
                return Err(format!("wave {part:?} has no devices"));
            }
            Wave::Count(n)
        };
        out.push(wave);
    }
    match out.last() {
        None => Err("no waves".into()),
        Some(Wave::Share(s)) if (*s - 1.0).abs() > f64::EPSILON => Err(format!(
            "the last wave must be 100% (it is {}%), or the rollout ends with devices never asked",
            s * 100.0
        )),
        _ => Ok(out),
    }
}

/// The devices of each wave, as index ranges into the device list: each
/// wave reaches its share (rounded up, at least one more device than the
/// wave before), the last one everything. Waves that would add nobody
/// are dropped.
pub fn waves(devices: usize, spec: &[Wave]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (k, wave) in spec.iter().enumerate() {
        let last = k + 1 == spec.len();
        let reach = match wave {
            _ if last => devices,
            Wave::Share(s) => {
                // f64 has the precision for any fleet; the cast saturates.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let n = (s * devices as f64).ceil() as usize;
                n
            }
            Wave::Count(n) => *n,
        };
        let end = reach.clamp(start + 1, devices.max(start + 1)).min(devices);
        if end > start {
            out.push(start..end);
            start = end;
        }
    }
    out
}

/// How a device ended its part of the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Ending {
    /// It runs the target.
    Completed,
    /// It went back to what it ran (or reports a device between versions).
    Incomplete,
    /// It refused the document.
    IdentificationFailed,
    /// Nothing terminal came within the timeout.
    NoAnswer,
    /// It was on the target before this run (a rerun resumed).
    AlreadyOnTarget,
}

impl Ending {
    /// Whether it counts against the wave.
    pub fn failed(self) -> bool {
        matches!(
            self,
            Ending::Incomplete | Ending::IdentificationFailed | Ending::NoAnswer
        )
    }
}

/// Where one device is.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Not asked yet.
    Pending,
    /// The document was published; `status` is its last feedback.
    Running {
        /// When it was published.
        since: Duration,
        /// The last feedback status (`""` before any).
        status: String,
    },
    /// Done.
    Done {
        /// How.
        ending: Ending,
        /// From publish to the terminal feedback.
        took: Duration,
        /// The feedback's message (why it failed).
        message: Option<String>,
    },
}

/// A wave's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Some devices still run.
    Waiting,
    /// Done, within `--max-failures`.
    Passed,
    /// Done, with more failures than allowed: the rollout stops. The failed
    /// devices and why.
    Failed(Vec<(String, String)>),
}

/// The state of a rollout: every device's progress, by name, in order.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// The target.
    pub target: Target,
    /// The devices, in rollout order.
    pub order: Vec<String>,
    progress: BTreeMap<String, Progress>,
}

impl Rollout {
    /// Every device pending.
    pub fn new(target: Target, devices: Vec<String>) -> Self {
        let progress = devices
            .iter()
            .map(|d| (d.clone(), Progress::Pending))
            .collect();
        Self {
            target,
            order: devices,
            progress,
        }
    }

    /// A device's progress.
    pub fn progress(&self, device: &str) -> Option<&Progress> {
        self.progress.get(device)
    }

    /// The device runs the target already: it is not asked again.
    pub fn already(&mut self, device: &str) {
        if let Some(p @ Progress::Pending) = self.progress.get_mut(device) {
            *p = Progress::Done {
                ending: Ending::AlreadyOnTarget,
                took: Duration::ZERO,
                message: None,
            };
        }
    }

    /// The document was published to the device at `now` (since the
    /// rollout began).
    pub fn sent(&mut self, device: &str, now: Duration) {
        if let Some(p @ Progress::Pending) = self.progress.get_mut(device) {
            *p = Progress::Running {
                since: now,
                status: String::new(),
            };
        }
    }

    /// A feedback message from a device: ignored unless it is for the
    /// target's activity and the device is running it.
    pub fn feedback(
        &mut self,
        device: &str,
        activity_id: &str,
        status: &str,
        message: Option<&str>,
        now: Duration,
    ) {
        if activity_id != self.target.activity_id {
            return;
        }
        let Some(p) = self.progress.get_mut(device) else {
            return;
        };
        let Progress::Running { since, .. } = p else {
            return;
        };
        let since = *since;
        let ending = match status {
            "COMPLETED" => Some(Ending::Completed),
            "INCOMPLETE" | "INCOMPLETE_INCONSISTENT" => Some(Ending::Incomplete),
            "IDENTIFICATION_FAILED" => Some(Ending::IdentificationFailed),
            _ => None,
        };
        *p = match ending {
            Some(ending) => Progress::Done {
                ending,
                took: now.saturating_sub(since),
                message: message.map(str::to_string),
            },
            None => Progress::Running {
                since,
                status: status.to_string(),
            },
        };
    }

    /// Devices running for longer than `timeout` at `now` get no answer.
    pub fn time_out(&mut self, now: Duration, timeout: Duration) {
        for p in self.progress.values_mut() {
            if let Progress::Running { since, status } = p {
                let took = now.saturating_sub(*since);
                if took >= timeout {
                    let last = if status.is_empty() {
                        "no feedback at all".to_string()
                    } else {
                        format!("last status {status}")
                    };
                    *p = Progress::Done {
                        ending: Ending::NoAnswer,
                        took,
                        message: Some(format!(
                            "no final status within {} ({last})",
                            humantime::format_duration(timeout)
                        )),
                    };
                }
            }
        }
    }

    /// The verdict on the devices of `wave`: failures over their number
    /// must not exceed `max_failures` (a ratio).
    pub fn verdict(&self, wave: &Range<usize>, max_failures: f64) -> Verdict {
        let devices = &self.order[wave.clone()];
        let mut failed = Vec::new();
        for d in devices {
            match self.progress.get(d) {
                Some(Progress::Done {
                    ending, message, ..
                }) if ending.failed() => {
                    let why = format!(
                        "{}{}",
                        words(*ending),
                        message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    );
                    failed.push((d.clone(), why));
                }
                Some(Progress::Done { .. }) => {}
                _ => return Verdict::Waiting,
            }
        }
        // Counts far below 2^52: exact as f64.
        #[allow(clippy::cast_precision_loss)]
        let ratio = failed.len() as f64 / devices.len().max(1) as f64;
        if ratio > max_failures {
            Verdict::Failed(failed)
        } else {
            Verdict::Passed
        }
    }

    /// The counts and timings so far.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        let mut times = Vec::new();
        for d in &self.order {
            match self.progress.get(d) {
                Some(Progress::Pending) | None => s.pending += 1,
                Some(Progress::Running { .. }) => s.running += 1,
                Some(Progress::Done {
                    ending,
                    took,
                    message,
                }) => {
                    *s.ended.entry(*ending).or_default() += 1;
                    if *ending == Ending::Completed {
                        times.push(*took);
                    }
                    if ending.failed() {
                        s.failed.push(Failure {
                            device: d.clone(),
                            ending: *ending,
                            message: message.clone(),
                        });
                    }
                }
            }
        }
        times.sort();
        s.p50_ms = percentile(&times, 50).map(|d| d.as_millis());
        s.p99_ms = percentile(&times, 99).map(|d| d.as_millis());
        s.devices = self.order.len();
        s
    }
}

/// People's words for an ending.
pub fn words(e: Ending) -> &'static str {
    match e {
        Ending::Completed => "COMPLETED",
        Ending::Incomplete => "INCOMPLETE",
        Ending::IdentificationFailed => "IDENTIFICATION_FAILED",
        Ending::NoAnswer => "no answer",
        Ending::AlreadyOnTarget => "already on the target",
    }
}

/// The nearest-rank percentile of sorted `times`.
fn percentile(times: &[Duration], p: usize) -> Option<Duration> {
    if times.is_empty() {
        return None;
    }
    let rank = (p * times.len()).div_ceil(100).max(1);
    times.get(rank - 1).copied()
}

/// A device that failed, for the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The device.
    pub device: String,
    /// How it ended.
    pub ending: Ending,
    /// Its feedback's message.
    pub message: Option<String>,
}

/// Where the rollout stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Devices in the rollout.
    pub devices: usize,
    /// Not asked yet (or never, after a stop).
    pub pending: usize,
    /// Asked, no final status yet.
    pub running: usize,
    /// How many ended how.
    pub ended: BTreeMap<Ending, usize>,
    /// Median time from publish to COMPLETED.
    pub p50_ms: Option<u128>,
    /// 99th percentile of it.
    pub p99_ms: Option<u128>,
    /// The devices that failed and why.
    pub failed: Vec<Failure>,
}

impl Summary {
    /// How many ended so.
    pub fn count(&self, e: Ending) -> usize {
        self.ended.get(&e).copied().unwrap_or(0)
    }
}

/// Reads `--max-failures`: `0`, `5%` or a ratio such as `0.05`.
///
/// # Errors
/// When it is none of those, or outside 0 to 100%.
pub fn parse_ratio(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let ratio = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("{text:?} is not a ratio (write 0, 5% or 0.05)"))?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!("{text:?} must lie between 0 and 100%"));
    }
    Ok(ratio)
}

#[cfg(test)]
mod tests;
