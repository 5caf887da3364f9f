//! Thicket's storage and query engine: no networking, no Raft.
//!
//! Module map (the one path data takes: `Command` → `apply` → RocksDB → reads):
//! - `command`: the replicated commands and their outputs (persisted, append-only).
//! - `engine`: [`Engine`]: open, apply, reads; owns the RocksDB instance.
//! - `aggregate`: aggregated reads (windows, aggregates, transforms) over raw rows and rollups.
//! - `query`: read parameters; `scan`: raw scans for SQL; `sql`: DataFusion over buckets.
//! - `value`, `stats`: typed values and mergeable statistics.
//! - `limits`, `error`: named bounds and error types.

pub mod aggregate;
pub mod catalog;
pub mod command;
mod engine;
pub mod error;
pub mod keys;
pub mod limits;
pub mod query;
pub mod record;
pub mod scan;
pub mod sql;
pub mod stats;
pub mod value;

pub use command::{Command, DocKind, Output, PutMode};
pub use engine::read_marker_at as engine_marker_at;
pub use engine::{Engine, EngineOptions, RawRow, RawRows, ReadResult};
pub use error::{CommandError, EngineError, QueryError};
pub use query::ReadQuery;
