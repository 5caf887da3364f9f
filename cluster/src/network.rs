//! openraft's network over the [`Transport`]: Raft RPCs as cluster messages.
//!
//! Snapshots go as openraft's chunks (`snapshot_max_chunk_size`), read from the archive
//! file piece by piece, so a snapshot is never held whole in memory on either side.

use crate::transport::{RpcError, Transport};
use crate::types::{NodeId, TypeConfig};
use crate::wire::{Message, Reply, SnapshotReply};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use std::sync::Arc;
use std::time::Duration;

/// Pause before retrying an unreachable peer: short, so a restarted node rejoins fast.
pub const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(100);

/// Makes one [`PeerClient`] per replication target.
#[derive(Clone)]
pub struct NetworkFactory {
    /// `None` for a node without a cluster port (a single node): every peer is unreachable.
    pub transport: Option<Arc<Transport>>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// Raft RPCs to one peer.
pub struct PeerClient {
    transport: Option<Arc<Transport>>,
    target: NodeId,
    addr: String,
}

type RE<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

fn unreachable<E: std::error::Error>(msg: String) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&AnyError::error(msg)))
}

fn rpc_error<E: std::error::Error>(e: RpcError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        // Nothing got through: back off before the next try.
        RpcError::Unreachable(..) | RpcError::Refused(..) => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        // It may have got through: openraft retries at once.
        RpcError::Timeout(..) | RpcError::Broken(..) => RPCError::Network(NetworkError::new(&e)),
    }
}

impl PeerClient {
    async fn call<E: std::error::Error>(
        &self,
        msg: Message,
        option: &RPCOption,
    ) -> Result<Reply, RPCError<NodeId, BasicNode, E>> {
        let Some(t) = &self.transport else {
            return Err(unreachable(format!(
                "node {} has no cluster port configured",
                self.target
            )));
        };
        t.call(self.target, &self.addr, msg, option.hard_ttl())
            .await
            .map_err(rpc_error)
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RE> {
        match self.call(Message::AppendEntries(rpc), &option).await? {
            Reply::AppendEntries(Ok(r)) => Ok(r),
            Reply::AppendEntries(Err(e)) => Err(unreachable(e)),
            other => Err(unreachable(format!("unexpected answer {other:?}"))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RE<InstallSnapshotError>> {
        match self.call(Message::InstallSnapshot(rpc), &option).await? {
            Reply::InstallSnapshot(SnapshotReply::Ok(r)) => Ok(r),
            Reply::InstallSnapshot(SnapshotReply::Mismatch(m)) => {
                Err(RPCError::RemoteError(RemoteError::new(
                    self.target,
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m)),
                )))
            }
            Reply::InstallSnapshot(SnapshotReply::Failed(e)) => Err(unreachable(e)),
            other => Err(unreachable(format!("unexpected answer {other:?}"))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RE> {
        match self.call(Message::Vote(rpc), &option).await? {
            Reply::Vote(Ok(r)) => Ok(r),
            Reply::Vote(Err(e)) => Err(unreachable(e)),
            other => Err(unreachable(format!("unexpected answer {other:?}"))),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}
