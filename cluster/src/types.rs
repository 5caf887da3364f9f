//! The Raft type configuration and the data that travels in log entries.
//!
//! One log entry carries a [`Request`]: the bundles the leader's proposer gathered (group
//! commit). A bundle is one client write as it arrived on some node, with its request id,
//! so that a retry of the same bundle (after a leader change, or a forward whose answer
//! was lost) is applied once: the state machine keeps a window of applied ids per origin.

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

/// Identifies one client write across retries: the node it arrived on, that node's
/// incarnation (a counter bumped durably at every start, so sequences never repeat), and
/// a sequence number within the incarnation. Persisted: append-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub node: NodeId,
    pub incarnation: u64,
    pub seq: u64,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.node, self.incarnation, self.seq)
    }
}

/// One client write: its id and its commands, applied together, in order.
/// Persisted: append-only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    pub id: RequestId,
    pub commands: Vec<Command>,
}

impl Bundle {
    /// Approximate encoded size, for batch and admission bounds.
    pub fn size_bytes(&self) -> usize {
        24 + self.commands.iter().map(|c| c.size_bytes()).sum::<usize>()
    }
}

/// One log entry's payload. Persisted: append-only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub bundles: Vec<Bundle>,
    /// Members the leader saw acknowledge its log for the first time (see
    /// `ClusterNode`'s bootstrap: how a wiped voter is told from a new member).
    pub joined: Vec<NodeId>,
}

/// What became of one bundle. Sent between nodes (forwarded writes): append-only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BundleOutcome {
    /// Applied now: one result per command.
    Applied(Vec<Result<Output, CommandError>>),
    /// The same request id was applied before (a retry): nothing applied twice.
    Duplicate,
    /// The id is older than the dedup window of its origin: it was not applied now, and
    /// whether an earlier attempt was is not known.
    Expired,
}

/// The outcome of each bundle of one entry, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub outcomes: Vec<BundleOutcome>,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let commands: usize = self.bundles.iter().map(|b| b.commands.len()).sum();
        write!(f, "{} bundles, {commands} commands", self.bundles.len())
    }
}
