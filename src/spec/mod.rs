//! The desired-state document: wire format, validation and the normalised
//! model. Pure code: no I/O, no async.
//!
//! A document flows `text -> `[`document::Envelope`]` -> `[`validate()`]` ->
//! `[`DesiredState`]; everything downstream works on the normalised model.

mod cycles;
pub mod decoder;
pub mod document;
pub mod hash;
mod host_ports;
pub mod image;
pub mod keys;
pub mod limits;
pub mod merge;
pub mod model;
pub mod params;
pub mod validate;
pub mod values;

pub use document::Envelope;
pub use hash::spec_hash;
pub use image::ImageRef;
pub use limits::Limits;
pub use model::{ContainerConfig, ContainerSpec, DesiredState};
pub use validate::{parse, parse_bytes, validate, Accepted, Diagnostic, Options, Rejection};

#[cfg(test)]
mod tests;
