//! Unit tests of the agent loop on the in-memory engine.
