//! JSON schemas generated from berth's own types, so the published contract
//! in `schemas/` cannot drift from what the parser accepts.

use crate::spec::Envelope;

/// The desired-state document schema (JSON Schema 2020-12), pretty-printed
/// with a trailing newline exactly as checked in under `schemas/`.
pub fn desired_state() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Envelope>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Every generated schema with the file name it is published under.
pub fn all() -> Vec<(&'static str, String)> {
    vec![("desired-state.schema.json", desired_state())]
}
