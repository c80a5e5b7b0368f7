//! The rollout controller's decisions, one behaviour per test.

use std::time::Duration;

use super::*;
use crate::inventory::SoftwareNode;
use crate::spec::document::KeyValue;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn target() -> Target {
    Target {
        activity_id: "rel-2".into(),
        components: vec![("web".into(), "2".into())],
    }
}

fn devices(n: usize) -> Vec<String> {
    (0..n).map(crate::fleet::sim_name).collect()
}

fn node(id: &str, version: &str, status: &str, exit: &str) -> SoftwareNode {
    SoftwareNode {
        id: id.into(),
        version: version.into(),
        name: None,
        parameters: vec![
            KeyValue::new("status", status),
            KeyValue::new("exitCode", exit),
        ],
        kind: "CONTAINER".into(),
    }
}

fn inventory(nodes: Vec<SoftwareNode>) -> Inventory {
    Inventory {
        software_nodes: nodes,
        associations: Vec::new(),
    }
}

#[test]
fn waves_of_shares_are_cumulative_and_the_last_takes_everyone() {
    let spec = parse_waves("1%,10%,100%").unwrap();
    assert_eq!(waves(1000, &spec), vec![0..10, 10..100, 100..1000]);
}

#[test]
fn a_small_fleet_gets_at_least_one_device_per_wave_and_no_empty_wave() {
    let spec = parse_waves("1%,10%,100%").unwrap();
    assert_eq!(waves(5, &spec), vec![0..1, 1..2, 2..5]);
    assert_eq!(waves(1, &spec), vec![0..1]);
}

#[test]
fn counts_and_shares_mix() {
    let spec = parse_waves("2, 50%, 100%").unwrap();
    assert_eq!(waves(10, &spec), vec![0..2, 2..5, 5..10]);
}

#[test]
fn a_last_wave_short_of_everyone_is_refused() {
    let err = parse_waves("1%,50%").unwrap_err();
    assert!(err.contains("100%"), "{err}");
}

#[test]
fn a_wave_that_is_not_a_share_or_count_is_refused_naming_it() {
    let err = parse_waves("1%,ten,100%").unwrap_err();
    assert!(err.contains("\"ten\""), "{err}");
    assert!(parse_waves("0%,100%").is_err());
    assert!(parse_waves("0,100%").is_err());
}

#[test]
fn a_completed_feedback_ends_the_device_with_the_time_from_publish() {
    let mut r = Rollout::new(target(), devices(1));
    r.sent("sim-0000", ms(100));
    r.feedback("sim-0000", "rel-2", "IDENTIFYING", None, ms(120));
    assert!(
        matches!(r.progress("sim-0000"), Some(Progress::Running { status, .. }) if status == "IDENTIFYING")
    );
    r.feedback("sim-0000", "rel-2", "COMPLETED", None, ms(1100));
    assert_eq!(
        r.progress("sim-0000"),
        Some(&Progress::Done {
            ending: Ending::Completed,
            took: ms(1000),
            message: None
        })
    );
}

#[test]
fn feedback_for_another_activity_is_ignored() {
    let mut r = Rollout::new(target(), devices(1));
    r.sent("sim-0000", ms(0));
    r.feedback("sim-0000", "rel-1", "COMPLETED", None, ms(10));
    assert!(matches!(
        r.progress("sim-0000"),
        Some(Progress::Running { .. })
    ));
}

#[test]
fn feedback_before_the_publish_is_ignored() {
    // A device finishing an earlier run of the same rollout.
    let mut r = Rollout::new(target(), devices(1));
    r.feedback("sim-0000", "rel-2", "COMPLETED", None, ms(10));
    assert_eq!(r.progress("sim-0000"), Some(&Progress::Pending));
}

#[test]
fn incomplete_inconsistent_and_identification_failed_count_as_failures() {
    let mut r = Rollout::new(target(), devices(3));
    for d in &devices(3) {
        r.sent(d, ms(0));
    }
    r.feedback(
        "sim-0000",
        "rel-2",
        "INCOMPLETE",
        Some("rolled back"),
        ms(5),
    );
    r.feedback("sim-0001", "rel-2", "INCOMPLETE_INCONSISTENT", None, ms(5));
    r.feedback("sim-0002", "rel-2", "IDENTIFICATION_FAILED", None, ms(5));
    let s = r.summary();
    assert_eq!(s.count(Ending::Incomplete), 2);
    assert_eq!(s.count(Ending::IdentificationFailed), 1);
    assert_eq!(s.failed.len(), 3);
}

#[test]
fn a_device_silent_past_the_timeout_gets_no_answer_naming_its_last_status() {
    let mut r = Rollout::new(target(), devices(1));
    r.sent("sim-0000", ms(0));
    r.feedback("sim-0000", "rel-2", "DOWNLOADING", None, ms(5));
    r.time_out(ms(59_000), Duration::from_secs(60));
    assert!(matches!(
        r.progress("sim-0000"),
        Some(Progress::Running { .. })
    ));
    r.time_out(ms(60_000), Duration::from_secs(60));
    let Some(Progress::Done {
        ending, message, ..
    }) = r.progress("sim-0000")
    else {
        panic!("{:?}", r.progress("sim-0000"));
    };
    assert_eq!(*ending, Ending::NoAnswer);
    assert!(
        message.as_deref().unwrap().contains("DOWNLOADING"),
        "{message:?}"
    );
}

#[test]
fn a_wave_waits_until_every_device_ended() {
    let mut r = Rollout::new(target(), devices(2));
    r.sent("sim-0000", ms(0));
    r.sent("sim-0001", ms(0));
    r.feedback("sim-0000", "rel-2", "COMPLETED", None, ms(5));
    assert_eq!(r.verdict(&(0..2), 0.0), Verdict::Waiting);
    r.feedback("sim-0001", "rel-2", "COMPLETED", None, ms(6));
    assert_eq!(r.verdict(&(0..2), 0.0), Verdict::Passed);
}

#[test]
fn one_failure_fails_a_wave_at_the_default_of_zero_naming_the_device_and_why() {
    let mut r = Rollout::new(target(), devices(2));
    r.sent("sim-0000", ms(0));
    r.sent("sim-0001", ms(0));
    r.feedback("sim-0000", "rel-2", "COMPLETED", None, ms(5));
    r.feedback(
        "sim-0001",
        "rel-2",
        "INCOMPLETE",
        Some("pull failed"),
        ms(5),
    );
    assert_eq!(
        r.verdict(&(0..2), 0.0),
        Verdict::Failed(vec![("sim-0001".into(), "INCOMPLETE: pull failed".into())])
    );
}

#[test]
fn failures_within_max_failures_pass_the_wave() {
    let mut r = Rollout::new(target(), devices(20));
    for d in &devices(20) {
        r.sent(d, ms(0));
        r.feedback(d, "rel-2", "COMPLETED", None, ms(1));
    }
    let mut r2 = Rollout::new(target(), devices(20));
    for (i, d) in devices(20).iter().enumerate() {
        r2.sent(d, ms(0));
        let status = if i == 0 { "INCOMPLETE" } else { "COMPLETED" };
        r2.feedback(d, "rel-2", status, None, ms(1));
    }
    assert_eq!(r.verdict(&(0..20), 0.0), Verdict::Passed);
    // One of 20 is 5%: not more than 5%.
    assert_eq!(r2.verdict(&(0..20), 0.05), Verdict::Passed);
    assert!(matches!(r2.verdict(&(0..20), 0.04), Verdict::Failed(_)));
}

#[test]
fn a_device_already_on_the_target_is_not_asked_and_does_not_fail_its_wave() {
    let mut r = Rollout::new(target(), devices(1));
    r.already("sim-0000");
    r.sent("sim-0000", ms(0));
    assert!(matches!(
        r.progress("sim-0000"),
        Some(Progress::Done {
            ending: Ending::AlreadyOnTarget,
            ..
        })
    ));
    assert_eq!(r.verdict(&(0..1), 0.0), Verdict::Passed);
}

#[test]
fn percentiles_are_nearest_rank_over_completed_devices() {
    let mut r = Rollout::new(target(), devices(100));
    for (i, d) in devices(100).iter().enumerate() {
        r.sent(d, ms(0));
        r.feedback(d, "rel-2", "COMPLETED", None, ms(10 * (i as u64 + 1)));
    }
    let s = r.summary();
    assert_eq!(s.p50_ms, Some(500));
    assert_eq!(s.p99_ms, Some(990));
}

#[test]
fn the_target_is_reached_when_every_component_runs_at_its_version() {
    let t = target();
    assert!(t.reached_by(
        &inventory(vec![node("containers:web", "2", "Running", "0")]),
        "containers"
    ));
    assert!(!t.reached_by(
        &inventory(vec![node("containers:web", "1", "Running", "0")]),
        "containers"
    ));
    assert!(!t.reached_by(
        &inventory(vec![node("containers:web", "2", "Exited", "137")]),
        "containers"
    ));
    assert!(!t.reached_by(&inventory(vec![]), "containers"));
}

#[test]
fn a_job_that_completed_counts_as_on_the_target() {
    assert!(target().reached_by(
        &inventory(vec![node("containers:web", "2", "Exited", "0")]),
        "containers"
    ));
}

#[test]
fn max_failures_reads_percent_ratio_and_zero() {
    assert_eq!(parse_ratio("0"), Ok(0.0));
    assert_eq!(parse_ratio("5%"), Ok(0.05));
    assert_eq!(parse_ratio("0.05"), Ok(0.05));
    assert!(parse_ratio("150%").is_err());
    assert!(parse_ratio("many").is_err());
}
