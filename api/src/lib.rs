//! Thicket's API layer and the `thicket` binary.
//!
//! Module map (a request's path: route → handler → cluster handle → engine):
//! - `http`: the axum router: bucket create/write/read, health check.
//! - `http_error`: [`ApiError`], the JSON error body and status of every failure.
//! - `serve`: `thicket serve`: starts the cluster node, serves HTTP until SIGTERM.
//! - `settings`: `thicket serve`'s flags, TOML file and environment, resolved.
//! - `certs`: `thicket certs`: the cluster CA and node certificates.

pub mod certs;
pub mod http;
pub mod http_error;
pub mod serve;
pub mod settings;
