//! The agent's periodic check (`check_interval`): every so often, the same
//! check as `berth check`, published as one [`Report`] (retained on
//! `containersupdate/upgrades`). It only reads the engine and asks the
//! registries; it never changes a container and never waits for, or holds
//! up, the reconcile loop.

use std::time::Duration;

use serde::Serialize;

use super::{run, targets, Finding, Options};
use crate::registry::client::Registry;
use crate::runtime::Runtime;

/// The shortest `check_interval`: a registry asked more often than this
/// by every device of a fleet would throttle them all.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// How long after start the first check runs: soon enough that an operator
/// sees results right after a reboot, late enough that the start-up
/// enforcement has the engine to itself for a moment.
pub const FIRST_DELAY: Duration = Duration::from_secs(2);

/// One round of checks, as published and as `berth check --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// When the round ended, in ms since the epoch (Kanto's timestamps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// One finding per managed container.
    pub containers: Vec<Finding>,
    /// How many have something to roll out.
    pub available: usize,
}

impl Report {
    /// The report of `findings`, stamped with `timestamp` when given.
    pub fn new(containers: Vec<Finding>, timestamp: Option<u64>) -> Self {
        let available = containers
            .iter()
            .filter(|f| f.status.is_available())
            .count();
        Self {
            timestamp,
            containers,
            available,
        }
    }
}

/// Checks every `interval` (the first after [`FIRST_DELAY`]) and hands each
/// round's report to `publish`. An engine that cannot be read skips the
/// round with a warning; a registry problem is a finding, as in `berth
/// check`. Runs until the task is dropped.
pub async fn every<R, G>(
    rt: &R,
    registry: &G,
    instance: &str,
    options: &Options,
    interval: Duration,
    publish: impl Fn(Report),
) where
    R: Runtime,
    G: Registry,
{
    let mut next = tokio::time::Instant::now() + FIRST_DELAY;
    loop {
        tokio::time::sleep_until(next).await;
        next = tokio::time::Instant::now() + interval;
        match targets(rt, instance).await {
            Ok(t) => {
                let findings = run(registry, t, options).await;
                let report = Report::new(findings, Some(crate::history::now_ms()));
                tracing::info!(
                    containers = report.containers.len(),
                    available = report.available,
                    "checked the registries for newer images"
                );
                publish(report);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the engine to check for newer images; trying again at the next check_interval")
            }
        }
    }
}
