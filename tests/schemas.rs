//! The published JSON schemas are generated from berth's types; these tests
//! keep the checked-in copies current and prove the examples conform.
//! Regenerate with `BERTH_BLESS=1 cargo test --test integration schemas`.

use std::fs;

use serde_json::Value;

use crate::util::repo_path;

fn load(rel: &str) -> Value {
    let text = fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn validator(schema_file: &str) -> jsonschema::Validator {
    jsonschema::draft202012::new(&load(&format!("schemas/{schema_file}"))).expect("schema compiles")
}

fn examples() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(repo_path("examples"))
        .expect("examples/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

#[test]
fn checked_in_schemas_match_the_generated_ones() {
    let bless = std::env::var("BERTH_BLESS").is_ok_and(|v| v == "1");
    for (name, generated) in berth::schema::all() {
        let path = repo_path(&format!("schemas/{name}"));
        if bless {
            fs::write(&path, &generated).expect("write schema");
            continue;
        }
        let checked_in = fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "schemas/{name} is stale; regenerate it with `BERTH_BLESS=1 cargo test --test integration schemas`"
        );
    }
}

#[test]
fn desired_state_schema_declares_draft_2020_12() {
    let schema = load("schemas/desired-state.schema.json");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

#[test]
fn desired_state_schema_describes_every_key() {
    let text = fs::read_to_string(repo_path("schemas/desired-state.schema.json")).unwrap();
    for key in berth::spec::keys::CONTAINER_KEYS {
        assert!(
            text.contains(&format!("\"const\": \"{}\"", key.name)),
            "key {} missing",
            key.name
        );
    }
}

#[test]
fn every_example_conforms_to_the_schema_and_the_parser() {
    let names = examples();
    assert!(
        names.len() >= 3,
        "expected at least three examples, found {names:?}"
    );
    let schema = validator("desired-state.schema.json");
    for name in names {
        let doc = load(&format!("examples/{name}"));
        let errors: Vec<String> = schema.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "examples/{name} breaks the schema: {errors:?}"
        );
        let text = fs::read_to_string(repo_path(&format!("examples/{name}"))).unwrap();
        if let Err(r) = berth::spec::parse(&text, &Default::default()) {
            panic!("examples/{name} is refused by the parser: {r}");
        }
    }
}

#[test]
fn schema_refuses_a_non_string_value() {
    let doc = serde_json::json!({
        "activityId": "a",
        "payload": {"domains": [{"id": "containers", "components": [
            {"id": "web", "config": [{"key": "privileged", "value": true}]}
        ]}]}
    });
    assert!(!validator("desired-state.schema.json").is_valid(&doc));
}

#[test]
fn schema_refuses_an_unknown_key() {
    let doc = serde_json::json!({
        "activityId": "a",
        "payload": {"domains": [{"id": "containers", "components": [
            {"id": "web", "config": [{"key": "imgae", "value": "nginx"}]}
        ]}]}
    });
    assert!(!validator("desired-state.schema.json").is_valid(&doc));
}

#[test]
fn schema_refuses_a_bad_boolean_word() {
    let doc = serde_json::json!({
        "activityId": "a",
        "payload": {"domains": [{"id": "containers", "components": [
            {"id": "web", "config": [{"key": "privileged", "value": "YES"}]}
        ]}]}
    });
    assert!(!validator("desired-state.schema.json").is_valid(&doc));
}
