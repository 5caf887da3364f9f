//! Why a write or a read failed, in terms a client can act on.

use crate::types::NodeId;
use thicket_engine::{CommandError, EngineError, QueryError};

/// A failed write. Every variant says whether the write may have been applied.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The command was applied and rejected: nothing changed. Not worth retrying as is.
    #[error(transparent)]
    Rejected(#[from] CommandError),
    /// Too many bytes already in flight on this node; the write was not applied.
    #[error("this node has {in_flight_bytes} bytes of writes in flight (limit {limit_bytes}); the write was not applied, retry shortly")]
    Overloaded {
        in_flight_bytes: usize,
        limit_bytes: usize,
    },
    /// The storage failed; the node stops accepting writes until restarted.
    #[error("storage failure on this node, writes are stopped until it is restarted: {0}")]
    Storage(String),
    /// The write was certainly not applied (no leader, no quorum, shutting down...);
    /// safe to retry.
    #[error("the write was not applied (safe to retry): {0}")]
    Unavailable(String),
    /// The write was proposed but its outcome could not be learned before the deadline:
    /// it may or may not be applied.
    #[error("the outcome of the write is unknown (it may have been applied): {0}")]
    Unknown(String),
    /// The write is larger than one write may be.
    #[error("the write has {bytes} bytes; one write may have at most {limit_bytes}")]
    TooLarge { bytes: usize, limit_bytes: usize },
}

impl From<EngineError> for WriteError {
    fn from(e: EngineError) -> Self {
        WriteError::Storage(e.to_string())
    }
}

/// A failed read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The query itself failed (bad parameter, unknown bucket, timeout...).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// `consistency=leader` on a node that does not lead.
    #[error("this node is not the leader (the leader is {})", leader_name(*.leader))]
    NotLeader { leader: Option<NodeId> },
    /// The consistency round could not be completed: no leader, or it lost its quorum.
    #[error("a linearizable read is not possible now: {0}")]
    Unavailable(String),
}

fn leader_name(l: Option<NodeId>) -> String {
    match l {
        Some(id) => format!("node {id}"),
        None => "not known".into(),
    }
}
