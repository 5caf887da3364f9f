//! The status report of `/v1/cluster`: members, roles, leader, term, log indexes, lag
//! and each node's clock offset from the leader (API nodes stamp record timestamps, so
//! a skewed clock skews data).

use crate::node::ClusterNode;
use crate::types::NodeId;
use crate::wire::{Message, NodeInfo, Reply};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Wall clock in ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The whole report, as seen from the node that answers.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub millis_since_quorum_ack: Option<u64>,
    /// Set when a storage error stopped Raft on this node: restart it once fixed.
    pub storage_error: Option<String>,
    pub accepting_writes: bool,
    pub members: Vec<MemberStatus>,
}

/// One member as the answering node sees it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub addr: String,
    pub role: &'static str,
    pub reachable: bool,
    pub state: Option<String>,
    pub term: Option<u64>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Entries the leader has that this member has not acknowledged (leader's view), or
    /// behind the leader's last log index by its own report.
    pub lag_entries: Option<u64>,
    /// This member's wall clock minus the leader's, in ms (round-trip corrected).
    pub clock_offset_ms: Option<i64>,
    pub storage_error: Option<String>,
}

impl ClusterNode {
    /// Builds the status report, asking every member for its own view (bounded by
    /// `timeout` per member, all at once).
    pub async fn status(&self, timeout: Duration) -> ClusterStatus {
        let n = &*self.inner;
        // This node's own view, once: its member row and the report's header.
        let me = n.info().await;
        let m = n.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let members: Vec<(NodeId, String)> = membership
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        // Each member's own info and its clock offset from this node.
        let me_ref = &me;
        let asks = members.iter().map(|(id, addr)| {
            let (id, addr) = (*id, addr.clone());
            async move {
                if id == n.id {
                    return (id, Some((me_ref.clone(), 0i64)));
                }
                let Some(t) = &n.transport else {
                    return (id, None);
                };
                let t0 = Instant::now();
                let sent_ms = now_ms();
                match t.call(id, &addr, Message::NodeInfo, timeout).await {
                    Ok(Reply::NodeInfo(info)) => {
                        let rtt = t0.elapsed().as_millis() as i64;
                        let offset = info.clock_ms - (sent_ms + rtt / 2);
                        (id, Some((info, offset)))
                    }
                    _ => (id, None),
                }
            }
        });
        let answers: Vec<(NodeId, Option<(NodeInfo, i64)>)> = futures::future::join_all(asks).await;
        let leader_offset = m.current_leader.and_then(|l| {
            answers
                .iter()
                .find(|(id, _)| *id == l)
                .and_then(|(_, a)| a.as_ref().map(|(_, o)| *o))
        });
        let leader_last = m.current_leader.and_then(|l| {
            answers
                .iter()
                .find(|(id, _)| *id == l)
                .and_then(|(_, a)| a.as_ref().and_then(|(i, _)| i.last_log_index))
        });
        let repl = m.replication.clone();
        let members = members
            .iter()
            .zip(answers)
            .map(|((id, addr), (_, answer))| {
                let info = answer.as_ref().map(|(i, _)| i);
                let lag_from_leader = repl.as_ref().and_then(|r| {
                    r.get(id).map(|matched| {
                        let matched = matched.as_ref().map(|l| l.index + 1).unwrap_or(0);
                        (m.last_log_index.map(|i| i + 1).unwrap_or(0)).saturating_sub(matched)
                    })
                });
                let lag_own = match (leader_last, info.and_then(|i| i.last_log_index)) {
                    (Some(l), Some(mine)) => Some(l.saturating_sub(mine)),
                    _ => None,
                };
                MemberStatus {
                    id: *id,
                    addr: addr.clone(),
                    role: if voters.contains(id) {
                        "voter"
                    } else {
                        "learner"
                    },
                    reachable: answer.is_some(),
                    state: info.map(|i| i.state.clone()),
                    term: info.map(|i| i.term),
                    last_log_index: info.and_then(|i| i.last_log_index),
                    applied_index: info.and_then(|i| i.applied_index),
                    lag_entries: if *id == n.id && m.current_leader == Some(n.id) {
                        Some(0)
                    } else {
                        lag_from_leader.or(lag_own)
                    },
                    clock_offset_ms: match (answer.as_ref(), leader_offset) {
                        (Some((_, o)), Some(lo)) => Some(o - lo),
                        _ => None,
                    },
                    storage_error: info.and_then(|i| i.storage_error.clone()),
                }
            })
            .collect();
        let storage_error = me.storage_error.clone();
        ClusterStatus {
            node_id: me.id,
            state: me.state.clone(),
            leader: me.leader,
            term: me.term,
            last_log_index: me.last_log_index,
            committed_index: me.committed_index,
            applied_index: me.applied_index,
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            millis_since_quorum_ack: n.quorum_ack.since_ms(),
            accepting_writes: storage_error.is_none()
                && !n.draining.load(std::sync::atomic::Ordering::Acquire),
            storage_error,
            members,
        }
    }
}
