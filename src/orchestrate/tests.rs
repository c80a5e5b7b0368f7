use super::*;
use crate::plan::PlanEntry;
use crate::spec::model::Baseline;

fn command(json: &str) -> Command {
    parse(json.as_bytes()).expect("a command")
}

fn entry(id: &str, action: Action) -> PlanEntry {
    PlanEntry {
        id: id.into(),
        action,
        reasons: vec![],
        diff: None,
        version: None,
        container_id: None,
        execution: Default::default(),
    }
}

fn activity(baselines: &[(&str, &[&str])], actions: &[(&str, Action)]) -> (DesiredState, Plan) {
    let desired = DesiredState {
        activity_id: "a".into(),
        timestamp: None,
        system_containers: None,
        baselines: baselines
            .iter()
            .map(|(t, m)| Baseline {
                title: t.to_string(),
                containers: m.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
        containers: vec![],
    };
    let plan = Plan {
        activity_id: "a".into(),
        actions: actions.iter().map(|(n, a)| entry(n, *a)).collect(),
        warnings: vec![],
    };
    (desired, plan)
}

#[test]
fn the_update_managers_command_has_no_baseline_and_means_every_baseline() {
    let c = command(r#"{"activityId":"x","timestamp":1,"payload":{"command":"DOWNLOAD"}}"#);
    assert_eq!(c.activity_id, "x");
    assert_eq!(c.word, Word::Phase(Phase::Download));
    assert_eq!(c.baseline, "");
    let p = Progress::new(&[], &["web".into()]);
    assert_eq!(p.admit(Phase::Download, &c.baseline), Ok(Selection::All));
}

#[test]
fn every_phase_word_is_read() {
    for (text, phase) in [
        ("DOWNLOAD", Phase::Download),
        ("UPDATE", Phase::Update),
        ("ACTIVATE", Phase::Activate),
        ("CLEANUP", Phase::Cleanup),
        ("ROLLBACK", Phase::Rollback),
    ] {
        let c = command(&format!(
            r#"{{"activityId":"x","payload":{{"command":"{text}"}}}}"#
        ));
        assert_eq!(c.word, Word::Phase(phase));
        assert_eq!(phase.as_str(), text);
    }
}

#[test]
fn an_unknown_command_is_read_as_unknown_not_refused() {
    let c = command(r#"{"activityId":"x","payload":{"command":"REBOOT","baseline":"*"}}"#);
    assert_eq!(c.word, Word::Unknown("REBOOT".into()));
    assert_eq!(c.baseline, "*");
}

#[test]
fn unknown_envelope_fields_are_ignored_as_go_does() {
    let c = command(
        r#"{"activityId":"x","extra":1,"payload":{"command":"UPDATE","precondition":"y"}}"#,
    );
    assert_eq!(c.word, Word::Phase(Phase::Update));
}

#[test]
fn a_command_without_payload_is_not_a_command() {
    assert_eq!(
        parse(br#"{"activityId":"x","payload":null}"#),
        Err(CommandError::NoPayload("x".into()))
    );
    assert_eq!(
        parse(br#"{"activityId":"x"}"#),
        Err(CommandError::NoPayload("x".into()))
    );
}

#[test]
fn a_message_that_is_not_json_is_malformed() {
    assert!(matches!(
        parse(b"DOWNLOAD"),
        Err(CommandError::Malformed(_))
    ));
}

#[test]
fn preconditions_follow_kantos_table() {
    use Status::*;
    let all = [
        Identified,
        DownloadSuccess,
        DownloadFailure,
        UpdateSuccess,
        UpdateFailure,
        ActivationSuccess,
        ActivationFailure,
        RollbackSuccess,
        RollbackFailure,
    ];
    let ok = |p: Phase| -> Vec<Status> {
        all.iter()
            .copied()
            .filter(|s| admit(p, *s).is_ok())
            .collect()
    };
    assert_eq!(ok(Phase::Download), vec![Identified]);
    assert_eq!(ok(Phase::Update), vec![DownloadSuccess]);
    assert_eq!(ok(Phase::Activate), vec![UpdateSuccess]);
    assert_eq!(
        ok(Phase::Rollback),
        vec![
            DownloadSuccess,
            UpdateSuccess,
            ActivationSuccess,
            ActivationFailure
        ]
    );
    assert_eq!(ok(Phase::Cleanup), all.to_vec());
}

#[test]
fn an_out_of_order_command_gets_kantos_sentence() {
    assert_eq!(
        admit(Phase::Update, Status::Identified),
        Err("UPDATE is possible only after status DOWNLOAD_SUCCESS is reported".into())
    );
    assert_eq!(
        admit(Phase::Rollback, Status::Identified),
        Err("ROLLBACK is possible only after status DOWNLOAD_SUCCESS|UPDATE_SUCCESS|ACTIVATION_FAILURE|ACTIVATION_SUCCESS is reported".into())
    );
}

#[test]
fn a_refused_command_reports_its_phases_failure_status() {
    assert_eq!(Phase::Download.failure(), Status::DownloadFailure);
    assert_eq!(Phase::Update.failure(), Status::UpdateFailure);
    assert_eq!(Phase::Activate.failure(), Status::ActivationFailure);
    assert_eq!(Phase::Rollback.failure(), Status::RollbackFailure);
    assert_eq!(Phase::Cleanup.failure(), Status::Cleanup);
}

#[test]
fn containers_in_no_baseline_get_one_of_their_own_and_removals_share_one() {
    let (desired, plan) = activity(
        &[("monitoring", &["db", "web"])],
        &[
            ("db", Action::Recreate),
            ("web", Action::Keep),
            ("api", Action::Create),
            ("old", Action::Remove),
            ("older", Action::Remove),
            ("agent", Action::Ignore),
        ],
    );
    let b = baselines(&desired, &plan, "containers");
    let titles: Vec<&str> = b.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        titles,
        [
            "monitoring",
            "containers:api",
            "containers:remove-components"
        ]
    );
    assert_eq!(b[2].1, vec!["old".to_string(), "older".to_string()]);
}

#[test]
fn the_implicit_baselines_carry_the_agents_domain_as_kantos_do() {
    let (desired, plan) = activity(&[], &[("api", Action::Create), ("old", Action::Remove)]);
    let b = baselines(&desired, &plan, "apps");
    let titles: Vec<&str> = b.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(titles, ["apps:api", "apps:remove-components"]);
}

#[test]
fn the_removals_baseline_is_there_even_when_nothing_is_removed() {
    let (desired, plan) = activity(&[], &[("api", Action::Create)]);
    let b = baselines(&desired, &plan, "containers");
    assert_eq!(
        b.last(),
        Some(&("containers:remove-components".to_string(), Vec::new()))
    );
}
