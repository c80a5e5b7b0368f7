//! Specification tests for document validation and normalisation.
