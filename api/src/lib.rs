//! Thicket API.
