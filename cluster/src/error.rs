//! Why a write failed, in terms a client can act on.

use thicket_engine::{CommandError, EngineError};

/// A failed write.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The command was applied and rejected: nothing changed. Not worth retrying as is.
    #[error(transparent)]
    Rejected(#[from] CommandError),
    /// Too many bytes already in flight on this node; retry after a moment.
    #[error("this node has {in_flight_bytes} bytes of writes in flight (limit {limit_bytes}); retry shortly")]
    Overloaded {
        in_flight_bytes: usize,
        limit_bytes: usize,
    },
    /// The storage failed; the write was not applied. The node stops accepting writes.
    #[error("storage failure, the write was not applied: {0}")]
    Storage(String),
    /// The node is shutting down or its apply thread stopped; the write was not applied.
    #[error("the node is not accepting writes: {0}")]
    Unavailable(String),
}

impl From<EngineError> for WriteError {
    fn from(e: EngineError) -> Self {
        WriteError::Storage(e.to_string())
    }
}
