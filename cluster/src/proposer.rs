//! The leader's group commit.
//!
//! openraft appends each `client_write` as its own entry (and fsync), so bundles from
//! this node's clients and from forwarding followers queue here. Idle, the proposer
//! proposes at once; while [`NodeConfig::entries_in_flight_max`] entries are in flight it
//! gathers what queues up, to `batch_commands_max` / `batch_bytes_max`, into one entry.
//! Each bundle's caller gets its own outcome after apply.
//!
//! A bundle still queued when its caller gives up is withdrawn, so the caller can say
//! "never applied"; once taken into an entry it can only end as applied or unknown.
//!
//! [`NodeConfig::entries_in_flight_max`]: crate::config::NodeConfig

use crate::elector::QuorumAck;
use crate::types::{Bundle, Request, TypeConfig};
use crate::wire::{ForwardOutcome, Refusal};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Bundles queued for proposal at most; a full queue refuses with `Overloaded`.
pub const QUEUE_BUNDLES_MAX: usize = 65_536;

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

struct Pending {
    bundle: Bundle,
    bytes: usize,
    state: Arc<AtomicU8>,
    reply: oneshot::Sender<ForwardOutcome>,
}

/// A submitted bundle: await its outcome, or withdraw it. Dropping it (the caller gave
/// up, e.g. its HTTP client went away) withdraws a bundle still queued, so abandoned
/// writes are not proposed later: admission control releases their bytes at that moment,
/// and the queue must not outgrow what it admits.
pub struct Ticket {
    state: Arc<AtomicU8>,
    rx: oneshot::Receiver<ForwardOutcome>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.withdraw();
    }
}

impl Ticket {
    /// Waits for the outcome.
    pub async fn outcome(&mut self) -> ForwardOutcome {
        match (&mut self.rx).await {
            Ok(o) => o,
            Err(_) => ForwardOutcome::Unknown("the proposer stopped".into()),
        }
    }

    /// Withdraws the bundle if it was not yet taken into an entry; true if withdrawn
    /// (then it will never be applied).
    pub fn withdraw(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Bounds of the group commit.
#[derive(Clone, Debug)]
pub struct ProposerBounds {
    pub commands_max: usize,
    pub bytes_max: usize,
    pub entries_in_flight_max: usize,
    /// A leader that has not heard from a quorum for longer refuses new writes.
    pub quorum_ack_max_ms: u64,
}

/// Handle to the proposer task.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    /// Starts the proposer over `raft`.
    pub(crate) fn start(
        raft: Raft<TypeConfig>,
        bounds: ProposerBounds,
        quorum_ack: Arc<QuorumAck>,
    ) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE_BUNDLES_MAX);
        tokio::spawn(run(raft, bounds, quorum_ack, rx));
        Proposer { tx }
    }

    /// Queues `bundle` for proposal.
    pub fn submit(&self, bundle: Bundle) -> Result<Ticket, Refusal> {
        let (reply, rx) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let bytes = bundle.size_bytes();
        self.tx
            .try_send(Pending {
                bundle,
                bytes,
                state: state.clone(),
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Refusal::Overloaded {
                    retry_after_ms: 100,
                },
                mpsc::error::TrySendError::Closed(_) => {
                    Refusal::Failed("the node is shutting down".into())
                }
            })?;
        Ok(Ticket { state, rx })
    }
}

/// Refuses before proposing when this node cannot commit: not the leader, or a leader cut
/// off from its quorum for longer than an election timeout.
fn precheck(
    raft: &Raft<TypeConfig>,
    quorum_ack: &QuorumAck,
    quorum_ack_max_ms: u64,
) -> Result<(), Refusal> {
    let m = raft.metrics().borrow().clone();
    if let Err(e) = &m.running_state {
        return Err(Refusal::Failed(format!("raft stopped on this node: {e}")));
    }
    if m.state != ServerState::Leader {
        return Err(Refusal::NotLeader {
            leader: m.current_leader.filter(|l| *l != m.id),
        });
    }
    let voters = m.membership_config.membership().voter_ids().count();
    if voters > 1 {
        // `None`: newly elected, no acknowledgement yet; the commit itself waits for one.
        if let Some(ms) = quorum_ack.since_ms() {
            if ms > quorum_ack_max_ms {
                return Err(Refusal::NoQuorum(format!(
                    "node {} leads but has not heard from a quorum for {ms} ms",
                    m.id
                )));
            }
        }
    }
    Ok(())
}

async fn run(
    raft: Raft<TypeConfig>,
    b: ProposerBounds,
    quorum_ack: Arc<QuorumAck>,
    mut rx: mpsc::Receiver<Pending>,
) {
    let slots = Arc::new(Semaphore::new(b.entries_in_flight_max.max(1)));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Wait for a slot: while entries are in flight, more bundles queue up behind.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::new();
        let (mut commands, mut bytes) = (0usize, 0usize);
        let mut next = Some(first);
        while let Some(p) = next.take() {
            if p.state
                .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // Withdrawn by its caller.
            } else if !batch.is_empty()
                && (commands + p.bundle.commands.len() > b.commands_max
                    || bytes + p.bytes > b.bytes_max)
            {
                // Does not fit: first of the next entry (put back to queued).
                p.state.store(QUEUED, Ordering::Release);
                carry = Some(p);
                break;
            } else {
                commands += p.bundle.commands.len();
                bytes += p.bytes;
                batch.push(p);
            }
            if commands >= b.commands_max || bytes >= b.bytes_max {
                break;
            }
            next = rx.try_recv().ok();
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(refusal) = precheck(&raft, &quorum_ack, b.quorum_ack_max_ms) {
            for p in batch {
                let _ = p.reply.send(ForwardOutcome::Refused(refusal.clone()));
            }
            continue;
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (bundles, replies): (Vec<Bundle>, Vec<_>) =
                batch.into_iter().map(|p| (p.bundle, p.reply)).unzip();
            let n = bundles.len();
            match raft
                .client_write(Request {
                    bundles,
                    joined: Vec::new(),
                })
                .await
            {
                Ok(resp) => {
                    let mut outcomes = resp.data.outcomes.into_iter();
                    for r in replies {
                        let o = match outcomes.next() {
                            Some(o) => ForwardOutcome::Done(o),
                            None => ForwardOutcome::Unknown(format!(
                                "the entry answered fewer than its {n} bundles"
                            )),
                        };
                        let _ = r.send(o);
                    }
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    // Not leader at proposal, or the entry was truncated by a new leader:
                    // either way it will never be applied.
                    let refusal = Refusal::NotLeader {
                        leader: f.leader_id,
                    };
                    for r in replies {
                        let _ = r.send(ForwardOutcome::Refused(refusal.clone()));
                    }
                }
                Err(e) => {
                    let msg = format!("raft failed while the write was in flight: {e}");
                    for r in replies {
                        let _ = r.send(ForwardOutcome::Unknown(msg.clone()));
                    }
                }
            }
        });
    }
}
