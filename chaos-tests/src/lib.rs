//! Chaos tests.
