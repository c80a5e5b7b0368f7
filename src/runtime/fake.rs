//! An in-memory engine for unit tests.
