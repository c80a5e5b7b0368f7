//! berth drives Docker containers toward a desired-state document written in
//! Eclipse Kanto's container-update-agent format.
//!
//! Start at [`spec`]: a document is parsed and validated into a normalised
//! [`spec::DesiredState`], which later stages plan against and apply. The
//! [`schema`] module generates the published JSON schemas from the same types.

pub mod agent;
pub mod api;
pub mod check;
pub mod config;
pub mod execute;
pub mod feedback;
pub mod fleet;
pub mod history;
pub mod instance;
pub mod inventory;
pub mod journal;
pub mod kanto;
pub mod labels;
pub mod observe;
pub mod orchestrate;
pub mod plan;
pub mod policy;
pub mod redact;
pub mod registry;
pub mod runtime;
pub mod schema;
pub mod spec;
pub mod upgrade;

#[cfg(test)]
mod test_support;
