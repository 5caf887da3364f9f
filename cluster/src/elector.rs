//! Prompt elections after a leader dies: the survivor with the longest log stands at
//! once when the leader's lease runs out, instead of waiting for openraft's timer.
//!
//! openraft 0.9 lets a follower that heard from its leader within `election_timeout_max`
//! (the leader lease) reject every vote, and its own election timer fires only after
//! that lease *plus* a random election timeout (600–800 ms with the defaults). When the
//! survivor with the shorter log happens to stand first, it is refused on log length and
//! then waits twice the maximum timeout before it tries again, while the other survivor
//! waits out its own timer: a failover could take 1.3–2.4 s.
//!
//! The elector replaces openraft's timer (switched off with `runtime_config().elect`)
//! with a pre-vote of its own: when this voter has heard nothing from a leader for
//! longer than the lease (plus a small margin), it asks the other voters
//! ([`Message::Probe`]) what they see. It stands (`Raft::trigger().elect()`) only when
//! - no peer is a leader that heard from its quorum within the lease, and no peer heard
//!   from a leader within the lease (it would refuse the vote, and the leader may be
//!   fine: only this node is cut off);
//! - a majority of the voters, this one included, answered and lost the leader (a node
//!   cut off from the majority never stands, so it cannot raise the term and disturb the
//!   cluster when it comes back);
//! - it has the greatest last log id among them (ties: the lowest node id), so the
//!   first vote round is won. After four leases without a leader the rank is dropped
//!   (the best may be unable to stand), and any node that may stand does.
//!
//! While no leader is known it probes again every tick and stands again after a short
//! randomised gap, so a vote refused on a not-quite-expired lease is soon retried. The
//! only voter of a cluster stands whenever it does not lead.

use crate::node::Inner;
use crate::types::NodeId;
use crate::wire::{Message, ProbeInfo, Reply};
use openraft::ServerState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// When this node last heard from a leader it accepted (append entries, snapshot chunk
/// or a vote it granted), as milliseconds since `base`; `u64::MAX` while never.
pub(crate) struct LeaderContact {
    base: Instant,
    at_ms: AtomicU64,
}

impl LeaderContact {
    pub(crate) fn new() -> Self {
        LeaderContact {
            base: Instant::now(),
            at_ms: AtomicU64::new(u64::MAX),
        }
    }

    pub(crate) fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.at_ms.store(ms, Ordering::Release);
    }

    /// Milliseconds since the last contact; since start-up when there was none.
    pub(crate) fn since_ms(&self) -> u64 {
        let now = self.base.elapsed().as_millis() as u64;
        match self.at_ms.load(Ordering::Acquire) {
            u64::MAX => now,
            at => now.saturating_sub(at),
        }
    }
}

/// When a quorum last acknowledged this node as leader, from openraft's metrics as they
/// are published. A report's `millis_since_quorum_ack` is that age at publication time;
/// a leader cut off from its followers may publish nothing new for a while, so the age is
/// counted on from the moment the report was seen rather than read off the last report.
pub(crate) struct QuorumAck {
    /// The last acknowledgement; `None` while none is known (not leading, or newly
    /// elected).
    at: parking_lot::Mutex<Option<Instant>>,
}

impl QuorumAck {
    /// Starts following `metrics` (until the Raft instance stops publishing).
    pub(crate) fn follow(
        mut metrics: tokio::sync::watch::Receiver<
            openraft::RaftMetrics<NodeId, openraft::BasicNode>,
        >,
    ) -> Arc<QuorumAck> {
        let me = Arc::new(QuorumAck::new());
        let ack = me.clone();
        ack.observe(metrics.borrow_and_update().millis_since_quorum_ack);
        tokio::spawn(async move {
            while metrics.changed().await.is_ok() {
                let ms = metrics.borrow_and_update().millis_since_quorum_ack;
                ack.observe(ms);
            }
        });
        me
    }

    fn new() -> QuorumAck {
        QuorumAck {
            at: parking_lot::Mutex::new(None),
        }
    }

    fn observe(&self, millis_since: Option<u64>) {
        let now = Instant::now();
        *self.at.lock() =
            millis_since.map(|ms| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now));
    }

    /// Milliseconds since a quorum last acknowledged this leader; `None` when unknown.
    pub(crate) fn since_ms(&self) -> Option<u64> {
        let at = *self.at.lock();
        at.map(|t| t.elapsed().as_millis() as u64)
    }
}

/// What a probed voter reported, reduced to what the decision needs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Seen {
    pub id: NodeId,
    /// A leader whose quorum answered within the lease, or a follower that heard a
    /// leader within the lease: either way a leader is alive for it.
    pub hears_leader: bool,
    pub last_log: Option<(u64, NodeId, u64)>,
}

/// The decision: should `me` stand for election now?
pub(crate) fn should_stand(me: &Seen, peers: &[Seen], voters: usize) -> bool {
    if me.hears_leader || peers.iter().any(|p| p.hears_leader) {
        return false;
    }
    let lost = 1 + peers.len();
    if lost < voters / 2 + 1 {
        return false;
    }
    // Greatest last log id wins; on a tie the lowest node id.
    peers
        .iter()
        .all(|p| (me.last_log, std::cmp::Reverse(me.id)) > (p.last_log, std::cmp::Reverse(p.id)))
}

/// The log id as an ordered tuple: (term, leader node, index), openraft's order.
pub(crate) fn log_key(l: Option<openraft::LogId<NodeId>>) -> Option<(u64, NodeId, u64)> {
    l.map(|l| (l.leader_id.term, l.leader_id.node_id, l.index))
}

impl Inner {
    /// This node's answer to [`Message::Probe`].
    pub(crate) fn probe_info(&self) -> ProbeInfo {
        let m = self.raft.metrics().borrow().clone();
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id);
        let last_log_id = self.log.last_log_id();
        ProbeInfo {
            // An initial member that has not received its first entry yet (its log is
            // empty, so it knows no membership) would vote for any candidate with a log:
            // it counts. Without it, a node whose first vote round went out before the
            // others finished starting would never find a majority to stand with.
            healthy: m.running_state.is_ok()
                && self.raft_open.load(Ordering::Acquire)
                && (voter || last_log_id.is_none()),
            leading: m.state == ServerState::Leader,
            millis_since_quorum_ack: self.quorum_ack.since_ms(),
            millis_since_leader: self.contact.since_ms(),
            last_log_id,
        }
    }
}

/// Runs the elector of a node until the node stops. openraft's own election timer is
/// switched off: the elector is this node's only way to stand (its pre-vote keeps a node
/// that is cut off from stirring the cluster when it comes back).
pub(crate) fn spawn(weak: Weak<Inner>) {
    if let Some(n) = weak.upgrade() {
        n.raft.runtime_config().elect(false);
    }
    tokio::spawn(async move {
        let mut last_stand: Option<Instant> = None;
        let mut gap = Duration::ZERO;
        loop {
            let Some(n) = weak.upgrade() else { return };
            let tick = Duration::from_millis((n.config.heartbeat_ms / 2).clamp(5, 50));
            if n.draining.load(Ordering::Acquire) {
                return;
            }
            if last_stand.is_none_or(|t| t.elapsed() >= gap) && step(&n).await {
                last_stand = Some(Instant::now());
                // Before standing again, let the round finish; randomised, so that two
                // nodes that both think they should stand (an odd partition) do not
                // collide forever.
                let hb = n.config.heartbeat_ms.max(1);
                let lease = n.config.election_timeout_max_ms.max(hb * 2 + 1);
                gap = Duration::from_millis(hb * 2 + jitter(lease - hb * 2));
            }
            drop(n);
            tokio::time::sleep(tick).await;
        }
    });
}

/// A pseudo-random number below `bound` (std's random hasher keys; no extra crate).
fn jitter(bound: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() % bound.max(1)
}

/// One look; true when it stood for election.
async fn step(n: &Arc<Inner>) -> bool {
    let lease = n.config.election_timeout_max_ms;
    let hb = n.config.heartbeat_ms;
    let since = n.contact.since_ms();
    let m = n.raft.metrics().borrow().clone();
    if m.running_state.is_err() || m.state == ServerState::Leader {
        return false;
    }
    let membership = m.membership_config.membership().clone();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    if !voters.contains(&n.id) {
        return false;
    }
    if voters.len() == 1 {
        // The only voter: nobody to ask, nobody to wait for.
        tracing::info!("node {}: the only voter; standing for election", n.id);
        return stand(n).await;
    }
    if since <= lease + (hb / 2).max(10) {
        return false;
    }
    let Some(transport) = n.transport.clone() else {
        return false;
    };
    let timeout = Duration::from_millis((hb * 2).clamp(20, 200));
    // The leader we lost is not asked: if it were alive and reachable, its appends would
    // reach us too (and the other voters, who would then say they hear it); if it is
    // dead, asking it would only wait out the timeout.
    let lost_leader = m.current_leader;
    let asks = voters
        .iter()
        .filter(|v| **v != n.id && Some(**v) != lost_leader)
        .filter_map(|v| {
            let addr = membership.get_node(v)?.addr.clone();
            let t = transport.clone();
            let v = *v;
            Some(async move {
                match t.call(v, &addr, Message::Probe, timeout).await {
                    Ok(Reply::Probe(p)) => Some((v, p)),
                    _ => None,
                }
            })
        });
    let answers: Vec<(NodeId, ProbeInfo)> = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .filter(|(_, p)| p.healthy)
        .collect();
    let seen = |id: NodeId, p: &ProbeInfo| Seen {
        id,
        hears_leader: if p.leading {
            p.millis_since_quorum_ack.is_some_and(|ms| ms <= lease)
        } else {
            p.millis_since_leader <= lease
        },
        last_log: log_key(p.last_log_id),
    };
    let me = seen(n.id, &n.probe_info());
    let peers: Vec<Seen> = answers.iter().map(|(id, p)| seen(*id, p)).collect();
    // The longest log stands first; if it has not won after a few leases (it may be
    // unable to), anyone who may stand does.
    let rank_matters = since <= lease * 4;
    let stands = if rank_matters {
        should_stand(&me, &peers, voters.len())
    } else {
        let mut best_me = me.clone();
        best_me.last_log = Some((u64::MAX, 0, u64::MAX));
        should_stand(&best_me, &peers, voters.len())
    };
    if !stands {
        return false;
    }
    tracing::info!(
        "node {}: no leader heard for {since} ms by a majority; standing for election \
         (last log {:?}{})",
        n.id,
        me.last_log,
        if rank_matters {
            ", the longest among them"
        } else {
            ""
        }
    );
    stand(n).await
}

async fn stand(n: &Inner) -> bool {
    match n.raft.trigger().elect().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("node {}: cannot stand for election: {e}", n.id);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: NodeId, hears: bool, log: Option<(u64, NodeId, u64)>) -> Seen {
        Seen {
            id,
            hears_leader: hears,
            last_log: log,
        }
    }

    /// A cut-off leader may publish no new metrics: the last report's age keeps growing.
    #[test]
    fn a_quorum_acknowledgement_ages_between_reports() {
        let ack = QuorumAck::new();
        assert_eq!(ack.since_ms(), None);
        ack.observe(Some(300));
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            ack.since_ms().is_some_and(|ms| ms >= 360),
            "{:?}",
            ack.since_ms()
        );
        ack.observe(Some(0));
        assert!(ack.since_ms().is_some_and(|ms| ms < 300));
        ack.observe(None);
        assert_eq!(ack.since_ms(), None);
    }

    #[test]
    fn the_longest_log_stands_and_only_it() {
        let a = s(2, false, Some((3, 1, 100)));
        let b = s(3, false, Some((3, 1, 98)));
        assert!(should_stand(&a, std::slice::from_ref(&b), 3));
        assert!(!should_stand(&b, std::slice::from_ref(&a), 3));
        // A newer term beats a longer index.
        let c = s(3, false, Some((4, 2, 5)));
        assert!(should_stand(&c, std::slice::from_ref(&a), 3));
        assert!(!should_stand(&a, std::slice::from_ref(&c), 3));
    }

    #[test]
    fn ties_go_to_the_lowest_id() {
        let a = s(2, false, Some((3, 1, 100)));
        let b = s(3, false, Some((3, 1, 100)));
        assert!(should_stand(&a, std::slice::from_ref(&b), 3));
        assert!(!should_stand(&b, std::slice::from_ref(&a), 3));
    }

    #[test]
    fn nobody_stands_while_a_leader_is_heard() {
        let a = s(2, false, Some((3, 1, 100)));
        let b = s(3, true, Some((3, 1, 90)));
        assert!(!should_stand(&a, std::slice::from_ref(&b), 3));
        let me_hears = s(2, true, Some((3, 1, 100)));
        assert!(!should_stand(&me_hears, &[], 1));
    }

    #[test]
    fn a_node_cut_off_from_the_majority_does_not_stand() {
        let a = s(2, false, Some((3, 1, 100)));
        assert!(!should_stand(&a, &[], 3));
        assert!(!should_stand(&a, &[s(3, false, None)], 5));
        assert!(should_stand(
            &a,
            &[s(3, false, None), s(4, false, Some((3, 1, 7)))],
            5
        ));
    }
}
