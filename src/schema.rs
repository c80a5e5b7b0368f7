//! JSON schemas generated from berth's own types, so the published contract
//! in `schemas/` cannot drift from what the code reads and writes.

use schemars::JsonSchema;

use crate::feedback::Feedback;
use crate::history::Record;
use crate::inventory::CurrentState;
use crate::plan::Plan;
use crate::spec::Envelope;

/// A type's schema (JSON Schema 2020-12), pretty-printed with a trailing
/// newline exactly as checked in under `schemas/`.
fn generate<T: JsonSchema>() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// The desired-state document schema.
pub fn desired_state() -> String {
    generate::<Envelope>()
}

/// Every generated schema with the file name it is published under.
pub fn all() -> Vec<(&'static str, String)> {
    vec![
        ("desired-state.schema.json", desired_state()),
        ("current-state.schema.json", generate::<CurrentState>()),
        ("plan.schema.json", generate::<Plan>()),
        ("feedback.schema.json", generate::<Feedback>()),
        ("history.schema.json", generate::<Vec<Record>>()),
        // OpenAPI, from the API's handlers and types (utoipa).
        ("openapi.json", crate::api::openapi::document()),
    ]
}
