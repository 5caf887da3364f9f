//! Thicket's API layer and the `thicket` binary.
//!
//! Module map (a request's path: route → handler → cluster handle → engine):
//! - `http`: the axum router: bucket create/write/read, health check.
//! - `http_error`: [`ApiError`], the JSON error body and status of every failure.
//! - `serve`: `thicket serve`: opens the engine, starts the node, serves until SIGTERM.

pub mod http;
pub mod http_error;
pub mod serve;
