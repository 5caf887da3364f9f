//! The Raft type configuration and the data that travels in log entries.

use serde::{Deserialize, Serialize};
use thicket_engine::{Command, CommandError, Output};

/// Stable node identity, independent of addresses.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Thicket's Raft types: entries carry batches of engine commands; snapshots are one
    /// archive file streamed from disk, never held whole in memory.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// One log entry's payload: commands applied together, in order. Persisted: append-only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub commands: Vec<Command>,
}

/// The result of each command of one entry. Persisted in nothing, but sent between
/// nodes (forwarded writes): append-only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub results: Vec<Result<Output, CommandError>>,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} commands", self.commands.len())
    }
}
