use super::*;

fn doc(activity: &str, tag: &str) -> String {
    format!(
        r#"{{"activityId":"{activity}","payload":{{"domains":[{{"id":"containers","components":[{{"id":"a","version":"{tag}","config":[{{"key":"image","value":"r/a:{tag}"}},{{"key":"env","value":"DB_PASSWORD=hunter2"}}]}}]}}]}}}}"#
    )
}

fn record(id: &str, outcome: Status, document: Option<String>) -> Record {
    let mut r = Record::start(id, Source::Cli, document);
    r.finish(outcome, None);
    r
}

#[test]
fn the_history_keeps_the_last_hundred_activities() {
    let mut h = History::default();
    for i in 0..(MAX_RECORDS + 5) {
        h.push(record(&format!("a{i}"), Status::Completed, None));
    }
    assert_eq!(h.records().count(), MAX_RECORDS);
    assert_eq!(h.records().next().map(|r| r.id.as_str()), Some("a5"));
    assert_eq!(
        h.records().last().map(|r| r.id.as_str()),
        Some(format!("a{}", MAX_RECORDS + 4).as_str())
    );
}

#[test]
fn past_the_byte_bound_the_oldest_documents_are_dropped_first() {
    let mut h = History::default();
    let big = "x".repeat(MAX_BYTES / 4 - 1024);
    for i in 0..5 {
        h.push(record(
            &format!("a{i}"),
            Status::Completed,
            Some(big.clone()),
        ));
    }
    let kept: Vec<bool> = h.records().map(|r| r.document.is_some()).collect();
    assert_eq!(kept, [false, true, true, true, true]);
    assert_eq!(h.records().count(), 5, "the records themselves stay");
}

#[test]
fn the_end_of_an_activity_replaces_its_start() {
    let mut h = History::default();
    let mut r = Record::start("a", Source::Upgrade, None);
    h.push(r.clone());
    r.finish(Status::Completed, Some("done".into()));
    h.push(r);
    assert_eq!(h.records().count(), 1);
    assert_eq!(h.find("a").and_then(|r| r.outcome), Some(Status::Completed));
}

#[test]
fn a_rollback_goes_to_the_last_completed_document_before_the_current_one() {
    let mut h = History::default();
    h.push(record("one", Status::Completed, Some(doc("one", "1"))));
    h.push(record("two", Status::Completed, Some(doc("two", "2"))));
    h.push(record("three", Status::Incomplete, Some(doc("three", "3"))));
    assert_eq!(h.rollback_target(None).map(|r| r.id.as_str()), Ok("one"));
}

#[test]
fn a_rollback_skips_re_applies_of_the_current_document() {
    let mut h = History::default();
    h.push(record("one", Status::Completed, Some(doc("one", "1"))));
    h.push(record("two", Status::Completed, Some(doc("two", "2"))));
    h.push(record(
        "two-again",
        Status::Completed,
        Some(doc("two-again", "2")),
    ));
    assert_eq!(h.rollback_target(None).map(|r| r.id.as_str()), Ok("one"));
}

#[test]
fn a_rollback_with_nothing_before_the_current_document_is_refused_naming_it() {
    let mut h = History::default();
    assert_eq!(h.rollback_target(None), Err(RollbackError::Empty));
    h.push(record("one", Status::Completed, Some(doc("one", "1"))));
    assert_eq!(
        h.rollback_target(None),
        Err(RollbackError::NothingBefore("one".into()))
    );
}

#[test]
fn a_rollback_to_a_named_activity_needs_it_completed_with_its_document() {
    let mut h = History::default();
    h.push(record("kept", Status::Completed, Some(doc("kept", "1"))));
    h.push(record(
        "failed",
        Status::Incomplete,
        Some(doc("failed", "2")),
    ));
    h.push(record("dropped", Status::Completed, None));
    assert_eq!(
        h.rollback_target(Some("kept")).map(|r| r.id.as_str()),
        Ok("kept")
    );
    assert!(matches!(
        h.rollback_target(Some("failed")),
        Err(RollbackError::NotCompleted { .. })
    ));
    assert_eq!(
        h.rollback_target(Some("dropped")),
        Err(RollbackError::NoDocument("dropped".into()))
    );
    assert_eq!(
        h.rollback_target(Some("nope")),
        Err(RollbackError::Unknown("nope".into()))
    );
}

#[test]
fn a_history_round_trips_through_its_file_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    append(
        dir.path(),
        record("one", Status::Completed, Some(doc("one", "1"))),
    )
    .unwrap();
    append(dir.path(), record("two", Status::Incomplete, None)).unwrap();
    let h = History::load(dir.path()).unwrap();
    let ids: Vec<&str> = h.records().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["one", "two"]);
    let mode = std::fs::metadata(dir.path().join(FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn no_file_is_an_empty_history() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(History::load(dir.path()).unwrap(), History::default());
}

#[test]
fn records_written_without_the_later_fields_still_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(FILE),
        r#"{"version":1,"records":[{"id":"old","source":"mqtt","started":5}]}"#,
    )
    .unwrap();
    let h = History::load(dir.path()).unwrap();
    let r = h.find("old").unwrap();
    assert_eq!((r.source, r.started, r.outcome), (Source::Mqtt, 5, None));
    assert!(r.components.is_empty() && r.migrations.is_empty());
}

#[test]
fn a_newer_format_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE), r#"{"version":9,"records":[]}"#).unwrap();
    let err = History::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("format 9 is newer"), "{err}");
}

#[test]
fn an_unreadable_history_is_set_aside_and_a_new_one_begun() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE), "not json").unwrap();
    append(dir.path(), record("one", Status::Completed, None)).unwrap();
    assert_eq!(History::load(dir.path()).unwrap().records().count(), 1);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(format!("{FILE}.unreadable"))).unwrap(),
        "not json"
    );
}

#[test]
fn a_shown_record_has_its_secrets_redacted_and_the_stored_one_keeps_them() {
    let mut r = record("one", Status::Completed, Some(doc("one", "1")));
    r.message = Some("pulling https://user:pw@r/a failed".into());
    let shown = r.redacted(crate::redact::default_rule());
    let text = serde_json::to_string(&shown).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains(":pw@"),
        "{text}"
    );
    assert!(text.contains("DB_PASSWORD=<redacted>"), "{text}");
    assert!(r.document.as_deref().unwrap().contains("hunter2"));
}

#[test]
fn changes_pair_every_component_before_and_after() {
    let v = |i: &str| Version {
        image: i.into(),
        version: None,
    };
    let before = BTreeMap::from([("a".to_string(), v("a:1")), ("gone".to_string(), v("g:1"))]);
    let after = BTreeMap::from([("a".to_string(), v("a:2")), ("new".to_string(), v("n:1"))]);
    let c = changes(&before, &after);
    let names: Vec<&str> = c.iter().map(|c| c.component.as_str()).collect();
    assert_eq!(names, ["a", "gone", "new"]);
    assert!(c.iter().all(Change::changed));
    assert_eq!(c[1].after, None);
    assert_eq!(c[2].before, None);
}

#[tokio::test]
async fn recovery_ends_the_open_record_of_its_activity_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), record("done", Status::Completed, None)).unwrap();
    append(dir.path(), Record::start("cut", Source::Mqtt, None)).unwrap();
    close_logged(dir.path(), "cut", Status::Incomplete, Some("undone".into())).await;
    close_logged(dir.path(), "done", Status::Incomplete, None).await;
    let h = History::load(dir.path()).unwrap();
    let cut = h.find("cut").unwrap();
    assert_eq!(cut.outcome, Some(Status::Incomplete));
    assert!(cut.ended.is_some());
    assert_eq!(cut.message.as_deref(), Some("undone"));
    assert_eq!(h.find("done").unwrap().outcome, Some(Status::Completed));
}
