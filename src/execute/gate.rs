//! The readiness gate: healthy within the health check's own worst case
//! (plus a margin) when the container has one; otherwise running, without
//! restarts, for `min_ready`. Every wait ends by the activity's deadline,
//! whatever the health settings say, and no setting can overflow the
//! arithmetic: the worst case saturates and is then capped.

use std::time::Duration;

use tokio::time::Instant;

use super::{output, ExecuteOptions};
use crate::runtime::{self, ContainerDetails, Health, RawHealthcheck, Runtime};
use crate::spec::model::{ContainerSpec, HealthTest, RestartPolicy};

/// How often the gate looks at a container.
const POLL: Duration = Duration::from_millis(200);

/// The engine's defaults for a health check that leaves them unset.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 3;

/// The longest a health check may take to call a container healthy: its
/// start period plus interval times retries plus `margin`; saturating, so
/// any values give a duration (the deadline caps it).
pub(super) fn health_worst_case(h: &RawHealthcheck, margin: Duration) -> Duration {
    let ns = |v: i64, default: Duration| {
        u64::try_from(v)
            .ok()
            .filter(|v| *v > 0)
            .map_or(default, Duration::from_nanos)
    };
    let interval = ns(h.interval_ns, DEFAULT_INTERVAL);
    let start = ns(h.start_period_ns, Duration::ZERO);
    let retries = u32::try_from(h.retries)
        .ok()
        .filter(|r| *r > 0)
        .unwrap_or(DEFAULT_RETRIES);
    interval
        .saturating_mul(retries)
        .saturating_add(start)
        .saturating_add(margin)
}

/// `now + d`, or `cap` when that is later or beyond what an instant holds.
fn until(d: Duration, cap: Instant) -> Instant {
    Instant::now().checked_add(d).map_or(cap, |t| t.min(cap))
}

async fn look<R: Runtime>(rt: &R, id: &str) -> Result<ContainerDetails, String> {
    rt.inspect(id)
        .await
        .map_err(|e| format!("cannot inspect: {e}"))?
        .ok_or_else(|| "the container disappeared".to_string())
}

/// What the gate waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// A service: ready (healthy, or up for `min_ready`) and staying up.
    Service,
    /// A one-shot job (`restartPolicy=no`): exit 0 means it completed,
    /// which passes; another exit fails. Still running after `min_ready`,
    /// it passes as a service, unless `until_done`.
    Job {
        /// Something depends on it: pass only once it has completed
        /// (compose's `service_completed_successfully`).
        until_done: bool,
    },
}

impl Expect {
    /// What a component's gate waits for: `awaited` says another component
    /// of the document depends on it.
    pub(super) fn of(spec: Option<&ContainerSpec>, awaited: bool) -> Self {
        match spec {
            Some(s) if s.config.restart == RestartPolicy::No => Expect::Job {
                until_done: awaited,
            },
            _ => Expect::Service,
        }
    }
}

/// A stopped container's verdict: `Ok` when it is a job that completed,
/// else the reason words (without its output).
pub(super) fn stopped_verdict(
    expect: Expect,
    exit_code: i64,
    service_words: impl FnOnce() -> String,
) -> Result<(), String> {
    match expect {
        Expect::Job { .. } if exit_code == 0 => Ok(()),
        Expect::Job { .. } => Err(format!("the job exited with code {exit_code}")),
        Expect::Service => Err(service_words()),
    }
}

/// The verdict on a container that stopped: a completed job passes, any
/// other stop fails with the words and what the container printed last.
async fn stopped<R: Runtime>(
    rt: &R,
    options: &ExecuteOptions,
    id: &str,
    spec: Option<&ContainerSpec>,
    expect: Expect,
    exit_code: i64,
    service_words: impl FnOnce() -> String,
) -> Result<(), String> {
    let reason = match stopped_verdict(expect, exit_code, service_words) {
        Ok(()) => return Ok(()),
        Err(reason) => reason,
    };
    let said = match rt.logs(id).await {
        Ok(raw) => output::last_words(&raw, spec, &options.redactor),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the output of {id}");
            String::new()
        }
    };
    if !said.is_empty() {
        tracing::warn!(container = %id, "{reason}; its last output:\n{said}");
    }
    Err(output::with_output(reason, &said))
}

/// Waits until the container `id` is ready, or says why it is not.
/// `deadline` is the activity's.
pub(super) async fn wait_ready<R: Runtime>(
    rt: &R,
    options: &ExecuteOptions,
    id: &str,
    spec: Option<&ContainerSpec>,
    expect: Expect,
    deadline: Instant,
) -> Result<(), String> {
    let first_at = Instant::now();
    let details = look(rt, id).await?;
    let check = details
        .healthcheck
        .as_ref()
        .filter(|h| !h.test.is_empty() && h.test.first().map(String::as_str) != Some("NONE"));
    let disabled = spec.is_some_and(|s| s.config.health.test == Some(HealthTest::Disabled));
    // One run of the container is identified by when it started: every
    // restart sets a new start time (and counts one more restart), so a
    // container that crash-loops between two looks cannot pass for one
    // that stayed up, however slowly the engine answers.
    let run = (
        details.state.started_at.clone(),
        details.state.restart_count,
    );
    let same_run =
        |d: &ContainerDetails| (d.state.started_at.clone(), d.state.restart_count) == run;
    let cut_short = || {
        format!(
            "not ready when the activity's time ran out (activity_timeout {})",
            humantime::format_duration(options.activity_timeout)
        )
    };
    match check {
        Some(h) if !disabled => {
            let within = health_worst_case(h, options.ready_margin);
            let until = until(within, deadline);
            loop {
                let d = look(rt, id).await?;
                if d.state.status != runtime::Status::Running
                    && d.state.status != runtime::Status::Restarting
                {
                    let code = d.state.exit_code;
                    return stopped(rt, options, id, spec, expect, code, || {
                        format!("exited with code {code} before becoming healthy")
                    })
                    .await;
                }
                if !same_run(&d) {
                    return Err("restarted before becoming healthy".into());
                }
                match d.state.health {
                    Some(Health::Healthy) => return Ok(()),
                    Some(Health::Unhealthy) => return Err("became unhealthy".into()),
                    _ => {}
                }
                if Instant::now() >= until {
                    return Err(if until >= deadline {
                        cut_short()
                    } else {
                        format!("not healthy within {}", humantime::format_duration(within))
                    });
                }
                tokio::time::sleep(POLL).await;
            }
        }
        _ => {
            let until = until(options.min_ready, deadline);
            // Each look with the time before it: the last one is taken
            // after the window, so the run it sees spans the whole window.
            let (mut at, mut d) = (first_at, details);
            loop {
                if d.state.status != runtime::Status::Running {
                    let code = d.state.exit_code;
                    return stopped(rt, options, id, spec, expect, code, || {
                        format!(
                            "exited with code {code} within {} of starting",
                            humantime::format_duration(options.min_ready)
                        )
                    })
                    .await;
                }
                if !same_run(&d) {
                    return Err("restarted while it had to prove it stays up".into());
                }
                let waits_for_exit = expect == Expect::Job { until_done: true };
                if waits_for_exit && at >= until {
                    if at >= deadline {
                        return Err(format!(
                            "the job did not complete before the activity's time ran out (activity_timeout {}); what depends on it cannot start",
                            humantime::format_duration(options.activity_timeout)
                        ));
                    }
                    tokio::time::sleep(POLL).await;
                    at = Instant::now();
                    d = look(rt, id).await?;
                    continue;
                }
                if at >= until {
                    return if until >= deadline && options.min_ready > Duration::ZERO {
                        Err(cut_short())
                    } else {
                        Ok(())
                    };
                }
                tokio::time::sleep(POLL.min(options.min_ready)).await;
                at = Instant::now();
                d = look(rt, id).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overflowing_health_check_saturates_instead_of_panicking() {
        // Regression: healthInterval of many days times retries in the
        // billions panicked in Duration arithmetic after the container started.
        let h = RawHealthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval_ns: i64::MAX,
            retries: i64::from(u32::MAX),
            start_period_ns: i64::MAX,
            ..Default::default()
        };
        assert_eq!(health_worst_case(&h, Duration::MAX), Duration::MAX);
    }

    #[test]
    fn the_worst_case_is_start_plus_interval_times_retries_plus_margin() {
        let h = RawHealthcheck {
            interval_ns: 2_000_000_000,
            retries: 3,
            start_period_ns: 5_000_000_000,
            ..Default::default()
        };
        assert_eq!(
            health_worst_case(&h, Duration::from_secs(1)),
            Duration::from_secs(12)
        );
    }

    #[test]
    fn unset_health_values_take_the_engines_defaults() {
        assert_eq!(
            health_worst_case(&RawHealthcheck::default(), Duration::ZERO),
            Duration::from_secs(90)
        );
    }

    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::{ContainerState, Status};

    fn up(started_at: &str, restart_count: i64) -> ContainerDetails {
        ContainerDetails {
            id: "c1".into(),
            name: "web".into(),
            state: ContainerState {
                status: Status::Running,
                started_at: Some(started_at.into()),
                restart_count,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn quick() -> ExecuteOptions {
        ExecuteOptions {
            min_ready: Duration::from_secs(1),
            ..Default::default()
        }
    }

    /// Regression (fault campaign, crashloop): under load two slow looks
    /// both found a crash-looping container running with the same restart
    /// count, and the gate let it through. A restart between looks now
    /// shows as a new start time.
    #[tokio::test(start_paused = true)]
    async fn a_container_that_restarted_between_two_looks_is_not_ready() {
        let rt = FakeRuntime::new();
        rt.add_container(up("2026-12-01T12:00:00.1Z", 0));
        let far = Instant::now() + Duration::from_secs(60);
        let options = quick();
        let gate = wait_ready(&rt, &options, "c1", None, Expect::Service, far);
        let restart = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            rt.tamper("web", |d| {
                d.state.started_at = Some("2026-12-01T12:00:00.6Z".into())
            });
        };
        let (verdict, ()) = tokio::join!(gate, restart);
        assert_eq!(
            verdict,
            Err("restarted while it had to prove it stays up".to_string())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_that_stays_up_for_min_ready_is_ready() {
        let rt = FakeRuntime::new();
        rt.add_container(up("2026-12-01T12:00:00.1Z", 0));
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(
            wait_ready(&rt, &quick(), "c1", None, Expect::Service, far).await,
            Ok(())
        );
    }

    fn exited(code: i64) -> ContainerDetails {
        let mut d = up("2026-12-01T12:00:00.1Z", 0);
        d.state.status = Status::Exited;
        d.state.exit_code = code;
        d
    }

    const JOB: Expect = Expect::Job { until_done: false };
    const AWAITED_JOB: Expect = Expect::Job { until_done: true };

    #[test]
    fn a_job_that_exits_0_has_completed_and_a_service_that_exits_0_has_failed() {
        let words = || "service words".to_string();
        assert_eq!(stopped_verdict(JOB, 0, words), Ok(()));
        assert_eq!(stopped_verdict(AWAITED_JOB, 0, words), Ok(()));
        assert_eq!(
            stopped_verdict(Expect::Service, 0, words),
            Err("service words".to_string())
        );
    }

    #[test]
    fn a_job_that_exits_non_zero_fails_naming_its_code() {
        assert_eq!(
            stopped_verdict(JOB, 3, String::new),
            Err("the job exited with code 3".to_string())
        );
    }

    #[test]
    fn only_restart_policy_no_makes_a_job_and_only_a_dependency_is_awaited() {
        let mut spec = super::super::output::spec_with_env(&[]);
        spec.config.restart = crate::spec::model::RestartPolicy::No;
        assert_eq!(Expect::of(Some(&spec), false), JOB);
        assert_eq!(Expect::of(Some(&spec), true), AWAITED_JOB);
        spec.config.restart = crate::spec::model::RestartPolicy::Always;
        assert_eq!(Expect::of(Some(&spec), true), Expect::Service);
        assert_eq!(Expect::of(None, true), Expect::Service);
    }

    #[tokio::test(start_paused = true)]
    async fn a_completed_job_passes_its_gate() {
        let rt = FakeRuntime::new();
        rt.add_container(exited(0));
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(
            wait_ready(&rt, &quick(), "c1", None, JOB, far).await,
            Ok(())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_job_fails_its_gate_with_its_code_and_last_output() {
        let rt = FakeRuntime::new();
        rt.add_container(exited(3));
        rt.set_output("c1", "reading input\nbad input: line 7\n");
        let far = Instant::now() + Duration::from_secs(60);
        let verdict = wait_ready(&rt, &quick(), "c1", None, JOB, far).await;
        assert_eq!(
            verdict,
            Err("the job exited with code 3; output: reading input\nbad input: line 7".to_string())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_awaited_job_passes_only_once_it_has_completed() {
        let rt = FakeRuntime::new();
        rt.add_container(up("2026-12-01T12:00:00.1Z", 0));
        let far = Instant::now() + Duration::from_secs(60);
        let options = quick();
        let started = Instant::now();
        let gate = wait_ready(&rt, &options, "c1", None, AWAITED_JOB, far);
        let finish = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            rt.tamper("web", |d| {
                d.state.status = Status::Exited;
                d.state.exit_code = 0;
            });
        };
        let (verdict, ()) = tokio::join!(gate, finish);
        assert_eq!(verdict, Ok(()));
        assert!(started.elapsed() >= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_job_nothing_waits_for_passes_like_a_service() {
        let rt = FakeRuntime::new();
        rt.add_container(up("2026-12-01T12:00:00.1Z", 0));
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(
            wait_ready(&rt, &quick(), "c1", None, JOB, far).await,
            Ok(())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_awaited_job_that_never_ends_fails_at_the_activity_deadline() {
        let rt = FakeRuntime::new();
        rt.add_container(up("2026-12-01T12:00:00.1Z", 0));
        let far = Instant::now() + Duration::from_secs(30);
        let verdict = wait_ready(&rt, &quick(), "c1", None, AWAITED_JOB, far).await;
        assert!(
            verdict
                .as_ref()
                .is_err_and(|e| e.contains("the job did not complete")),
            "{verdict:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_never_passes_the_activity_deadline() {
        let cap = Instant::now() + Duration::from_secs(5);
        assert_eq!(until(Duration::MAX, cap), cap);
        assert_eq!(until(Duration::from_secs(86_400 * 365 * 1000), cap), cap);
        assert!(until(Duration::from_secs(1), cap) < cap);
    }
}
