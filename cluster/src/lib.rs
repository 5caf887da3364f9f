//! Thicket cluster.
