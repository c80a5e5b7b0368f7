use super::*;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Baselines `a` (containers a1, a2) and `b` (b1), all changed, and `idle`
/// holding an unchanged container.
fn two() -> Progress {
    Progress::new(
        &[
            ("a".into(), names(&["a1", "a2"])),
            ("b".into(), names(&["b1"])),
            ("idle".into(), names(&["same"])),
        ],
        &names(&["a1", "a2", "b1"]),
    )
}

fn baseline(title: &str, members: &[&str]) -> Selection {
    Selection::Baseline {
        title: title.into(),
        members: names(members),
    }
}

fn ran(p: &mut Progress, phase: Phase, title: &str, status: Status) {
    let s = p.admit(phase, title).expect("admitted");
    p.record(&s, status);
}

#[test]
fn a_named_baseline_selects_only_its_changed_containers() {
    assert_eq!(
        two().admit(Phase::Download, "a"),
        Ok(baseline("a", &["a1", "a2"]))
    );
}

#[test]
fn star_and_absent_select_every_baseline() {
    assert_eq!(two().admit(Phase::Download, "*"), Ok(Selection::All));
    assert_eq!(two().admit(Phase::Download, ""), Ok(Selection::All));
}

#[test]
fn a_baseline_holding_every_change_selects_all() {
    let p = Progress::new(
        &[
            ("all".into(), names(&["x", "y"])),
            ("z".into(), names(&["same"])),
        ],
        &names(&["x", "y"]),
    );
    assert_eq!(p.admit(Phase::Download, "all"), Ok(Selection::All));
}

#[test]
fn an_unknown_baseline_is_refused_with_kantos_words() {
    assert_eq!(
        two().admit(Phase::Download, "nope"),
        Err("Unknown baseline nope".to_string())
    );
}

#[test]
fn each_baseline_follows_kantos_preconditions_on_its_own_status() {
    let mut p = two();
    ran(&mut p, Phase::Download, "a", Status::DownloadSuccess);
    assert!(p.admit(Phase::Update, "a").is_ok());
    assert_eq!(
        p.admit(Phase::Update, "b"),
        Err("UPDATE is possible only after status DOWNLOAD_SUCCESS is reported".to_string())
    );
    assert_eq!(
        p.admit(Phase::Download, "a"),
        Err("DOWNLOAD is possible only after status IDENTIFIED is reported".to_string())
    );
}

#[test]
fn star_is_refused_while_baselines_are_at_different_statuses() {
    let mut p = two();
    ran(&mut p, Phase::Download, "a", Status::DownloadSuccess);
    let refused = p.admit(Phase::Update, "*").expect_err("refused");
    assert!(
        refused.starts_with("UPDATE is possible only after status DOWNLOAD_SUCCESS is reported")
    );
    assert!(
        refused.contains("a DOWNLOAD_SUCCESS, b IDENTIFIED"),
        "{refused}"
    );
}

#[test]
fn star_is_admitted_once_every_baseline_caught_up() {
    let mut p = two();
    ran(&mut p, Phase::Download, "a", Status::DownloadSuccess);
    ran(&mut p, Phase::Download, "b", Status::DownloadSuccess);
    assert_eq!(p.admit(Phase::Update, "*"), Ok(Selection::All));
}

#[test]
fn a_star_phase_moves_every_baseline() {
    let mut p = two();
    ran(&mut p, Phase::Download, "*", Status::DownloadSuccess);
    assert!(p.admit(Phase::Update, "a").is_ok());
    assert!(p.admit(Phase::Update, "b").is_ok());
}

#[test]
fn a_failed_baseline_stops_the_changing_phases_of_the_others() {
    let mut p = two();
    ran(&mut p, Phase::Download, "a", Status::DownloadFailure);
    let refused = p.admit(Phase::Download, "b").expect_err("refused");
    assert!(
        refused.contains("baseline a ended with DOWNLOAD_FAILURE"),
        "{refused}"
    );
}

#[test]
fn cleanup_is_admitted_for_any_baseline_after_a_failure() {
    let mut p = two();
    ran(&mut p, Phase::Download, "a", Status::DownloadFailure);
    assert!(p.admit(Phase::Cleanup, "b").is_ok());
    assert!(p.admit(Phase::Cleanup, "a").is_ok());
}

#[test]
fn cleanup_after_a_failure_restores() {
    let mut p = two();
    ran(&mut p, Phase::Download, "a", Status::DownloadFailure);
    let s = p.admit(Phase::Cleanup, "b").expect("admitted");
    assert_eq!(p.cleanup(&s), Cleanup::Restore);
}

#[test]
fn cleanup_of_an_activated_baseline_commits_it_and_the_activity_goes_on() {
    let mut p = two();
    for (phase, status) in [
        (Phase::Download, Status::DownloadSuccess),
        (Phase::Update, Status::UpdateSuccess),
        (Phase::Activate, Status::ActivationSuccess),
    ] {
        ran(&mut p, phase, "a", status);
    }
    let s = p.admit(Phase::Cleanup, "a").expect("admitted");
    assert_eq!(p.cleanup(&s), Cleanup::Commit { last: false });
}

#[test]
fn cleanup_of_the_last_activated_baseline_ends_the_activity() {
    let mut p = two();
    for title in ["a", "b"] {
        ran(&mut p, Phase::Download, title, Status::DownloadSuccess);
        ran(&mut p, Phase::Update, title, Status::UpdateSuccess);
        ran(&mut p, Phase::Activate, title, Status::ActivationSuccess);
    }
    let a = p.admit(Phase::Cleanup, "a").expect("admitted");
    p.cleaned(&a);
    let b = p.admit(Phase::Cleanup, "b").expect("admitted");
    assert_eq!(p.cleanup(&b), Cleanup::Commit { last: true });
}

#[test]
fn cleanup_of_a_baseline_not_activated_restores() {
    let mut p = two();
    ran(&mut p, Phase::Download, "a", Status::DownloadSuccess);
    let s = p.admit(Phase::Cleanup, "a").expect("admitted");
    assert_eq!(p.cleanup(&s), Cleanup::Restore);
}

#[test]
fn cleanup_of_a_baseline_without_changes_changes_nothing() {
    let p = two();
    let s = p.admit(Phase::Cleanup, "idle").expect("admitted");
    assert_eq!(s, baseline("idle", &[]));
    assert_eq!(p.cleanup(&s), Cleanup::Commit { last: false });
}

#[test]
fn a_cleaned_baseline_is_unknown_afterwards() {
    let mut p = two();
    for (phase, status) in [
        (Phase::Download, Status::DownloadSuccess),
        (Phase::Update, Status::UpdateSuccess),
        (Phase::Activate, Status::ActivationSuccess),
    ] {
        ran(&mut p, phase, "a", status);
    }
    let s = p.admit(Phase::Cleanup, "a").expect("admitted");
    p.cleaned(&s);
    assert_eq!(
        p.admit(Phase::Cleanup, "a"),
        Err("Unknown baseline a".to_string())
    );
}

#[test]
fn star_after_some_baselines_were_cleaned_covers_the_rest() {
    let mut p = two();
    for title in ["a", "b"] {
        ran(&mut p, Phase::Download, title, Status::DownloadSuccess);
        ran(&mut p, Phase::Update, title, Status::UpdateSuccess);
        ran(&mut p, Phase::Activate, title, Status::ActivationSuccess);
    }
    let a = p.admit(Phase::Cleanup, "a").expect("admitted");
    p.cleaned(&a);
    let all = p.admit(Phase::Cleanup, "*").expect("admitted");
    assert_eq!(p.cleanup(&all), Cleanup::Commit { last: true });
}

#[test]
fn a_rolled_back_baseline_dooms_the_activity() {
    let mut p = two();
    ran(&mut p, Phase::Download, "a", Status::DownloadSuccess);
    ran(&mut p, Phase::Rollback, "a", Status::RollbackSuccess);
    assert!(p.admit(Phase::Download, "b").is_err());
    let s = p.admit(Phase::Cleanup, "a").expect("admitted");
    assert_eq!(p.cleanup(&s), Cleanup::Restore);
}

#[test]
fn reached_is_nothing_before_any_phase() {
    assert_eq!(two().reached(), Reached::Nothing);
}

#[test]
fn reached_is_downloaded_when_only_downloads_ran() {
    let mut p = two();
    ran(&mut p, Phase::Download, "a", Status::DownloadSuccess);
    assert_eq!(p.reached(), Reached::Downloaded);
}

#[test]
fn reached_is_changed_once_any_baseline_updated() {
    let mut p = two();
    ran(&mut p, Phase::Download, "a", Status::DownloadSuccess);
    ran(&mut p, Phase::Download, "b", Status::DownloadSuccess);
    ran(&mut p, Phase::Update, "b", Status::UpdateFailure);
    assert_eq!(p.reached(), Reached::Changed);
}

#[test]
fn the_shared_status_is_none_while_baselines_differ() {
    let mut p = two();
    assert_eq!(p.status(), Some(Status::Identified));
    ran(&mut p, Phase::Download, "a", Status::DownloadSuccess);
    assert_eq!(p.status(), None);
}

#[test]
fn phases_for_a_baseline_without_changes_are_admitted_and_change_nothing() {
    let p = two();
    assert_eq!(p.admit(Phase::Download, "idle"), Ok(baseline("idle", &[])));
}

#[test]
fn a_baseline_without_changes_does_not_hold_back_the_end() {
    let mut p = two();
    for title in ["a", "b"] {
        ran(&mut p, Phase::Download, title, Status::DownloadSuccess);
        ran(&mut p, Phase::Update, title, Status::UpdateSuccess);
        ran(&mut p, Phase::Activate, title, Status::ActivationSuccess);
    }
    let a = p.admit(Phase::Cleanup, "a").expect("admitted");
    p.cleaned(&a);
    let b = p.admit(Phase::Cleanup, "b").expect("admitted");
    assert_eq!(p.cleanup(&b), Cleanup::Commit { last: true });
}
