//! Messages between nodes on the cluster port, encoded with bincode 2.
//!
//! Each RPC is one QUIC bidirectional stream: the caller writes one [`Envelope`] and
//! finishes its side; the callee answers one [`Reply`]. The first stream of every
//! connection is the handshake ([`Message::Hello`]): wire version, group, sender and
//! intended receiver, checked against the TLS certificates. Enums here are append-only
//! (golden-bytes tests pin their encodings); a change that breaks them bumps
//! [`WIRE_VERSION`].

use crate::types::{Bundle, BundleOutcome, NodeId, TypeConfig};
use openraft::error::SnapshotMismatch;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, LogId};
use serde::{Deserialize, Serialize};

/// Wire format version, checked at handshake.
pub const WIRE_VERSION: u32 = 1;

/// Largest message either way. Bounds what a peer can make us buffer; it must hold
/// `max_payload_entries` entries of at most `entry_bytes_max` each (checked at start).
pub const MESSAGE_BYTES_MAX: usize = 96 << 20;

/// The Raft group every message belongs to (multi-Raft later; one group today).
pub const GROUP: u32 = 0;

/// One request with its sender, checked against the connection's certificate.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub group: u32,
    pub body: Message,
}

/// A request. Append-only.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    Hello {
        version: u32,
        from: NodeId,
        to: NodeId,
    },
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Client writes forwarded to the leader, answered per bundle.
    Forward(Vec<Bundle>),
    /// The leader's read index for a linearizable read on a follower.
    ReadIndex,
    /// What the receiver knows of itself (bootstrap, status, clock offsets).
    NodeInfo,
    /// A membership change, run on the leader.
    Admin(AdminOp),
    /// What the receiver sees of the leader (the elector's pre-vote).
    Probe,
}

/// Membership changes. Append-only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AdminOp {
    AddLearner { id: NodeId, addr: String },
    Promote { id: NodeId },
    Remove { id: NodeId },
}

/// An answer. Append-only.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    HelloAck {
        version: u32,
        node: NodeId,
    },
    AppendEntries(Result<AppendEntriesResponse<NodeId>, String>),
    Vote(Result<VoteResponse<NodeId>, String>),
    InstallSnapshot(SnapshotReply),
    Forward(Vec<ForwardOutcome>),
    ReadIndex(Result<Option<LogId<NodeId>>, Refusal>),
    NodeInfo(NodeInfo),
    Admin(Result<String, Refusal>),
    /// The request was refused before it was looked at (bad sender, version, group).
    Refused(String),
    Probe(ProbeInfo),
}

/// The answer to [`Message::Probe`]. Append-only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// A voter whose Raft runs and takes traffic (it can vote and stand), or an initial
    /// member still waiting for its first entry (it can vote).
    pub healthy: bool,
    /// Whether the receiver believes it leads.
    pub leading: bool,
    /// As a leader: since its quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// As a follower: since it last heard from a leader (since start-up if never).
    pub millis_since_leader: u64,
    pub last_log_id: Option<LogId<NodeId>>,
}

/// The answer to one snapshot chunk. Append-only.
#[derive(Debug, Serialize, Deserialize)]
pub enum SnapshotReply {
    Ok(InstallSnapshotResponse<NodeId>),
    Mismatch(SnapshotMismatch),
    Failed(String),
}

/// Why the receiver did not act; nothing was proposed. Append-only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Refusal {
    /// The receiver is not the leader; it names the one it knows of.
    NotLeader { leader: Option<NodeId> },
    /// The receiver leads but has not heard from a quorum recently.
    NoQuorum(String),
    /// Admission control: too many bytes in flight.
    Overloaded { retry_after_ms: u64 },
    /// Anything else (storage failure, shutting down, bad request).
    Failed(String),
}

/// What became of one forwarded bundle. Append-only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ForwardOutcome {
    /// Applied (or found applied) by the state machine.
    Done(BundleOutcome),
    /// Never proposed: safe to retry elsewhere.
    Refused(Refusal),
    /// Proposed, but the leader could not learn its outcome (leadership lost, deadline).
    Unknown(String),
}

/// A node's own view, for bootstrap and the status report. Append-only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Whether it holds a Raft log or vote (a member of some cluster).
    pub initialized: bool,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub nodes: Vec<(NodeId, BasicNode)>,
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Its wall clock, for clock offsets (API nodes stamp record timestamps).
    pub clock_ms: i64,
    pub storage_error: Option<String>,
    /// Members that ever acknowledged the leader's log (replicated).
    pub joined: Vec<NodeId>,
}

/// Encodes with the one bincode configuration of the wire.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .map_err(|e| format!("cannot encode a cluster message: {e}"))
}

/// Decodes a whole buffer; trailing bytes are an error.
pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    let (v, n) = bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map_err(|e| format!("undecodable cluster message: {e}"))?;
    if n != b.len() {
        return Err(format!(
            "{} trailing bytes after a cluster message",
            b.len() - n
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Request, RequestId};
    use thicket_engine::{Command, Output};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Golden bytes: a change here breaks mixed-version clusters and stored logs.
    #[test]
    fn encodings_are_pinned() {
        let hello = Envelope {
            from: 2,
            group: GROUP,
            body: Message::Hello {
                version: WIRE_VERSION,
                from: 2,
                to: 3,
            },
        };
        assert_eq!(hex(&encode(&hello).unwrap()), "020000010203");
        let bundle = Bundle {
            id: RequestId {
                node: 1,
                incarnation: 4,
                seq: 300,
            },
            commands: vec![Command::DeleteBucket {
                user: "u".into(),
                bucket: "b".into(),
            }],
        };
        let fwd = Envelope {
            from: 1,
            group: GROUP,
            body: Message::Forward(vec![bundle.clone()]),
        };
        assert_eq!(
            hex(&encode(&fwd).unwrap()),
            "010004010104fb2c01010401750162"
        );
        let req = Request {
            bundles: vec![bundle],
            joined: vec![2],
        };
        assert_eq!(hex(&encode(&req).unwrap()), "010104fb2c010104017501620102");
        let out = Reply::Forward(vec![
            ForwardOutcome::Done(BundleOutcome::Applied(vec![Ok(Output::Done)])),
            ForwardOutcome::Done(BundleOutcome::Duplicate),
            ForwardOutcome::Refused(Refusal::NotLeader { leader: Some(3) }),
            ForwardOutcome::Unknown("x".into()),
        ]);
        assert_eq!(
            hex(&encode(&out).unwrap()),
            "04040000010000000101000103020178"
        );
        let admin = Message::Admin(AdminOp::Promote { id: 4 });
        assert_eq!(hex(&encode(&admin).unwrap()), "070104");
        assert_eq!(hex(&encode(&Message::Probe).unwrap()), "08");
        let probe = Reply::Probe(ProbeInfo {
            healthy: true,
            leading: false,
            millis_since_quorum_ack: None,
            millis_since_leader: 420,
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 77)),
        });
        assert_eq!(hex(&encode(&probe).unwrap()), "09010000fba4010103014d");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut b = encode(&Message::ReadIndex).unwrap();
        assert!(decode::<Message>(&b).is_ok());
        b.push(0);
        assert!(decode::<Message>(&b).unwrap_err().contains("trailing"));
    }
}
