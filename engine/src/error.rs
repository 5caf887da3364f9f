//! The engine's errors.
//!
//! - [`EngineError`]: the whole call failed (I/O, corruption, format). Apply stops; the
//!   caller (the cluster's state machine) treats it as fatal for that node.
//! - [`CommandError`]: one command was rejected. Nothing it would have changed is stored;
//!   the other commands of the batch still apply. It travels in Raft results, so it is
//!   serialisable and its variants are append-only.
//! - [`QueryError`]: a read failed; maps to an HTTP status at the API edge.

use serde::{Deserialize, Serialize};

/// A failure of the whole engine call.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("RocksDB error while {context}: {source}")]
    Rocks {
        context: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("data directory has format version {found}, this build reads version {expected}")]
    FormatVersion { found: u32, expected: u32 },
    #[error("snapshot rejected: {0}")]
    Snapshot(String),
}

impl EngineError {
    /// Wraps a RocksDB error with what we were doing.
    pub fn rocks(context: impl Into<String>) -> impl FnOnce(rocksdb::Error) -> EngineError {
        let context = context.into();
        move |source| EngineError::Rocks { context, source }
    }

    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
        let context = context.into();
        move |source| EngineError::Io { context, source }
    }
}

/// Why one command was rejected. Persisted in Raft results: append-only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    /// Malformed or out-of-bounds input.
    #[error("{0}")]
    Invalid(String),
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The named thing already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// A bound was exceeded.
    #[error("{what} exceeds the limit of {limit}")]
    TooLarge { what: String, limit: u64 },
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("bad parameter `{param}`: {message}")]
    BadParam {
        param: &'static str,
        message: String,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("SQL error: {0}")]
    Sql(String),
    #[error("query exceeded its time limit of {0} ms")]
    Timeout(u64),
    #[error("query exceeded its memory limit: {0}")]
    ResourcesExhausted(String),
    #[error("query result too large: {0}")]
    TooLarge(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Result of a whole-call engine operation.
pub type EngineResult<T> = Result<T, EngineError>;
