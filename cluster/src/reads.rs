//! Read consistency: what a node must establish before it reads its own engine.
//!
//! ```text
//! linearizable (default)
//!   leader:   shared read-index round (get_read_log_id: a quorum heartbeat) ─┐
//!   follower: shared ReadIndex RPC to the leader (which joins its rounds)  ──┤
//!             wait until this node applied the read log id ◀────────────────┘
//! leader:     this node believes it leads (no quorum round; may be stale for
//!             about an election timeout after a pause or a partition)
//! local:      this node's applied state as it is
//! ```

use crate::error::ReadError;
use crate::node::{ClusterNode, Inner};
use crate::read_index::RoundResult;
use crate::wire::{Message, Refusal, Reply};
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::ServerState;
use std::time::{Duration, Instant};

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    #[default]
    Linearizable,
    Leader,
    Local,
}

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "linearizable" => Ok(Consistency::Linearizable),
            "leader" => Ok(Consistency::Leader),
            "local" => Ok(Consistency::Local),
            other => Err(format!(
                "consistency `{other}` is not one of linearizable, leader, local"
            )),
        }
    }
}

fn refusal(r: Refusal) -> ReadError {
    match r {
        Refusal::NotLeader { leader } => ReadError::Unavailable(match leader {
            Some(l) => format!("leadership moved to node {l} during the read round; retry"),
            None => "no leader is elected".into(),
        }),
        Refusal::NoQuorum(why) => ReadError::Unavailable(why),
        Refusal::Overloaded { retry_after_ms } => ReadError::Unavailable(format!(
            "too many reads waiting; retry in {retry_after_ms} ms"
        )),
        Refusal::Failed(why) => ReadError::Unavailable(why),
    }
}

impl ClusterNode {
    /// Waits until a read of this node's engine satisfies `c`, or says why it cannot.
    pub async fn read_barrier(&self, c: Consistency) -> Result<(), ReadError> {
        let n = &*self.inner;
        let m = n.raft.metrics().borrow().clone();
        match c {
            Consistency::Local => Ok(()),
            Consistency::Leader => {
                if m.state == ServerState::Leader {
                    Ok(())
                } else {
                    Err(ReadError::NotLeader {
                        leader: m.current_leader,
                    })
                }
            }
            Consistency::Linearizable => {
                let deadline = Instant::now() + n.config.read_timeout();
                let mut changes = n.raft.server_metrics();
                // Bounded by the deadline: each pass runs a round or waits for a leader.
                let want = loop {
                    let m = n.raft.metrics().borrow().clone();
                    let round = if m.state == ServerState::Leader {
                        n.reads.read_index().await
                    } else if m.current_leader.is_some_and(|l| l != n.id) {
                        n.remote_reads.read_index().await
                    } else {
                        Err(Refusal::NotLeader { leader: None })
                    };
                    match round {
                        Ok(w) => break w,
                        // No leader yet, or leadership moved mid-round: wait for the
                        // election (a restarting cluster answers once it has a leader).
                        Err(Refusal::NotLeader { .. }) if Instant::now() < deadline => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            let slice = left.min(Duration::from_millis(100));
                            if let Ok(Err(_)) = tokio::time::timeout(slice, changes.changed()).await
                            {
                                return Err(ReadError::Unavailable(
                                    "raft stopped on this node".into(),
                                ));
                            }
                        }
                        Err(r) => return Err(refusal(r)),
                    }
                };
                let Some(want) = want else {
                    return Ok(());
                };
                let left = deadline.saturating_duration_since(Instant::now());
                n.raft
                    .wait(Some(left.max(Duration::from_millis(1))))
                    .applied_index_at_least(Some(want.index), "linearizable read")
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        ReadError::Unavailable(format!(
                            "this node did not apply up to index {} in time: {e}",
                            want.index
                        ))
                    })
            }
        }
    }
}

impl Inner {
    /// One leader-side round: refuse at once without a recent quorum, else confirm
    /// leadership with a quorum heartbeat.
    pub(crate) async fn leader_read_round(&self, timeout: Duration) -> RoundResult {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err(Refusal::NotLeader {
                leader: m.current_leader,
            });
        }
        let voters = m.membership_config.membership().voter_ids().count();
        let lease = self.config.election_timeout_max_ms;
        if voters > 1 && self.quorum_ack.since_ms().is_some_and(|ms| ms > lease) {
            return Err(Refusal::NoQuorum(format!(
                "node {} leads but has not heard from a quorum for over {lease} ms",
                self.id
            )));
        }
        match tokio::time::timeout(timeout, self.raft.get_read_log_id()).await {
            Ok(Ok((read_log_id, _applied))) => Ok(read_log_id),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(Refusal::NotLeader {
                    leader: f.leader_id,
                })
            }
            Ok(Err(e)) => Err(Refusal::Failed(e.to_string())),
            Err(_) => Err(Refusal::NoQuorum(format!(
                "node {} could not confirm its leadership with a quorum within {} ms",
                self.id,
                timeout.as_millis()
            ))),
        }
    }

    /// One follower-side round: the leader's read index over one RPC.
    pub(crate) async fn remote_read_round(&self, timeout: Duration) -> RoundResult {
        let m = self.raft.metrics().borrow().clone();
        let leader = match m.current_leader {
            Some(l) if l != self.id => l,
            _ => return Err(Refusal::NotLeader { leader: None }),
        };
        let (t, addr) = self.peer(leader)?;
        match t.call(leader, &addr, Message::ReadIndex, timeout).await {
            Ok(Reply::ReadIndex(r)) => r,
            Ok(other) => Err(Refusal::Failed(format!("unexpected answer {other:?}"))),
            Err(e) => Err(Refusal::NoQuorum(format!(
                "cannot reach the leader (node {leader}) for a read index: {e}"
            ))),
        }
    }
}
