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
