use super::*;

const EXAMPLE: &str = include_str!("../../tests/fixtures/kanto/config.json");

fn example() -> KantoConfig {
    parse(EXAMPLE).expect("the example parses")
}

#[test]
fn the_example_gives_the_update_agent_and_connection_settings() {
    let k = example();
    assert_eq!(k.enable, Some(true));
    assert_eq!(k.domain.as_deref(), Some("containers"));
    assert_eq!(
        k.system_containers,
        Some(vec!["self-update-agent".to_string()])
    );
    assert_eq!(k.verbose_inventory_report, Some(false));
    assert_eq!(k.broker_url.as_deref(), Some("tcp://localhost:1883"));
    assert_eq!(k.keep_alive, Some(Duration::from_secs(20)));
    assert_eq!(k.username, None, "an empty user name is none");
    assert_eq!(k.password, None);
    assert_eq!(k.timeouts.len(), 5);
}

#[test]
fn every_other_section_is_listed_as_ignored() {
    assert_eq!(
        example().ignored,
        [
            "containers",
            "deployment",
            "grpc_server",
            "log",
            "manager",
            "network",
            "things"
        ]
    );
}

#[test]
fn an_unknown_key_inside_a_read_section_is_listed_by_its_path() {
    let k =
        parse(r#"{"update_agent": {"verbose_inventory": true}, "connection": {"transport": {}}}"#)
            .unwrap();
    assert_eq!(
        k.ignored,
        ["connection.transport", "update_agent.verbose_inventory"],
        "in key order, as serde_json's map keeps them"
    );
}

#[test]
fn a_wrong_type_is_refused_naming_the_key() {
    let e = parse(r#"{"update_agent": {"enable": "yes"}}"#).unwrap_err();
    assert_eq!(e.field, "update_agent.enable");
    let e = parse(r#"{"connection": {"keep_alive": "twenty"}}"#).unwrap_err();
    assert_eq!(e.field, "connection.keep_alive");
    assert!(e.problem.contains("\"twenty\" is not a duration"), "{e}");
}

#[test]
fn not_json_is_refused() {
    assert_eq!(parse("enable = true").unwrap_err().field, "config.json");
}

#[test]
fn an_enabled_agent_brings_the_broker_the_domain_and_orchestrated_mode() {
    let mut c = Config::default();
    let notes = apply(&example(), &mut c, &());
    let m = c.mqtt.as_ref().expect("mqtt is on");
    assert_eq!(m.url, "tcp://localhost:1883");
    assert_eq!(m.domain, "containers");
    assert_eq!(m.keep_alive, Duration::from_secs(20));
    assert_eq!(c.system_containers, ["self-update-agent"]);
    assert_eq!(c.mode, Mode::Orchestrated);
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("ignored Kanto settings: containers, deployment")),
        "{notes:?}"
    );
    assert!(c.check().is_ok());
}

#[test]
fn berths_own_file_wins_where_both_set_a_value() {
    let berth: toml::Table = "system_containers = [\"mine\"]\nmode = \"autonomous\"\n[mqtt]\nurl = \"mqtt://10.0.0.1:1883\"\n"
        .parse()
        .unwrap();
    let mut c = Config::parse("system_containers = [\"mine\"]\nmode = \"autonomous\"\n[mqtt]\nurl = \"mqtt://10.0.0.1:1883\"\n").unwrap();
    let notes = apply(&example(), &mut c, &berth);
    assert_eq!(c.system_containers, ["mine"]);
    assert_eq!(c.mode, Mode::Autonomous);
    let m = c.mqtt.as_ref().unwrap();
    assert_eq!(m.url, "mqtt://10.0.0.1:1883");
    assert_eq!(
        m.domain, "containers",
        "what berth left unset comes from Kanto"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("mqtt.url: berth's configuration wins")),
        "{notes:?}"
    );
}

#[test]
fn a_disabled_agent_leaves_mqtt_off() {
    let k = parse(
        r#"{"update_agent": {"enable": false}, "connection": {"broker_url": "tcp://b:1883"}}"#,
    )
    .unwrap();
    let mut c = Config::default();
    apply(&k, &mut c, &());
    assert!(c.mqtt.is_none());
    assert_eq!(c.mode, Mode::Autonomous);
}

#[test]
fn a_password_to_a_local_broker_goes_as_kanto_sends_it_and_to_a_remote_one_needs_berths_consent() {
    let local = parse(r#"{"update_agent": {"enable": true}, "connection": {"broker_url": "tcp://localhost:1883", "client_username": "u", "client_password": "p"}}"#).unwrap();
    let mut c = Config::default();
    apply(&local, &mut c, &());
    assert!(c.check().is_ok());
    assert_eq!(c.mqtt.as_ref().unwrap().password.as_deref(), Some("p"));
    let remote = parse(r#"{"update_agent": {"enable": true}, "connection": {"broker_url": "tcp://broker.example:1883", "client_password": "p"}}"#).unwrap();
    let mut c = Config::default();
    apply(&remote, &mut c, &());
    assert!(
        c.check().is_err(),
        "a password in clear over the network needs mqtt.allow_insecure"
    );
}

#[test]
fn verbose_inventory_report_is_taken() {
    let k = parse(r#"{"update_agent": {"verbose_inventory_report": true}}"#).unwrap();
    let mut c = Config::default();
    apply(&k, &mut c, &());
    assert!(c.verbose_inventory_report);
}

#[test]
fn kantos_connect_timeout_becomes_berths() {
    let mut c = Config::default();
    apply(&example(), &mut c, &());
    assert_eq!(
        c.mqtt.as_ref().map(|m| m.connect_timeout),
        Some(Duration::from_secs(30))
    );
    assert!(c.check().is_ok());
}

#[test]
fn berths_connect_timeout_wins_over_kantos() {
    let text = "[mqtt]\nconnect_timeout = \"7s\"\n";
    let berth: toml::Table = text.parse().unwrap();
    let mut c = Config::parse(text).unwrap();
    let notes = apply(&example(), &mut c, &berth);
    assert_eq!(
        c.mqtt.as_ref().map(|m| m.connect_timeout),
        Some(Duration::from_secs(7))
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("mqtt.connect_timeout: berth's configuration wins")),
        "{notes:?}"
    );
}

#[test]
fn the_timeouts_berth_cannot_apply_are_named_in_one_note_with_the_reason() {
    let notes = apply(&example(), &mut Config::default(), &());
    let unapplied: Vec<&String> = notes.iter().filter(|n| n.contains("not applied")).collect();
    assert_eq!(unapplied.len(), 1, "{notes:?}");
    let note = unapplied[0];
    for key in [
        "disconnect_timeout",
        "acknowledge_timeout",
        "subscribe_timeout",
        "unsubscribe_timeout",
    ] {
        assert!(note.contains(&format!("connection.{key}")), "{note}");
    }
    assert!(!note.contains("connection.connect_timeout"), "{note}");
    assert!(note.contains("keep-alive"), "{note}");
}

#[test]
fn a_sub_second_connect_timeout_is_rounded_up_to_whole_seconds_with_a_note() {
    let (d, note) = connect_timeout(Duration::from_millis(1500));
    assert_eq!(d, Duration::from_secs(2));
    assert!(note.is_some_and(|n| n.contains("1s 500ms is taken as 2s")));
}

#[test]
fn a_zero_connect_timeout_is_taken_as_one_second() {
    assert_eq!(connect_timeout(Duration::ZERO).0, Duration::from_secs(1));
}

#[test]
fn a_connect_timeout_beyond_the_bound_is_taken_as_the_bound() {
    assert_eq!(
        connect_timeout(Duration::from_secs(3600)).0,
        crate::config::MAX_CONNECT_TIMEOUT
    );
}

#[test]
fn a_whole_connect_timeout_within_bounds_is_taken_as_it_is_without_a_note() {
    assert_eq!(
        connect_timeout(Duration::from_secs(30)),
        (Duration::from_secs(30), None)
    );
}
