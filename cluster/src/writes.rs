//! The write path of any node, with honest outcomes.
//!
//! ```text
//! write(commands) ── admission (in-flight bytes) ── Bundle{id: (node, incarnation, seq)}
//!     │ leader here?  ── yes ──▶ proposer (group commit) ──▶ raft ──▶ apply ──▶ outcome
//!     └─ no ──▶ forwarder (batched Forward RPC) ──▶ leader's proposer ──▶ outcome
//! ```
//!
//! Until its deadline the write is retried with the same request id: at once when it was
//! provably not proposed (forward-to-leader answer, connection refused), after a leader
//! change seen in `Raft::server_metrics()` otherwise. A retry of a write whose earlier
//! attempt did commit is answered `Duplicate` by the state machine, so it applies once.
//! Past the deadline the error says whether the write was never applied or its outcome
//! is unknown.

use crate::error::WriteError;
use crate::node::{ClusterNode, Inner};
use crate::transport::RpcError;
use crate::types::{Bundle, BundleOutcome, NodeId, RequestId};
use crate::wire::{ForwardOutcome, Refusal};
use openraft::ServerState;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use thicket_engine::{Command, CommandError, Output};

/// The longest a retry waits for a leader change before looking again.
const LEADER_WAIT_SLICE: Duration = Duration::from_millis(100);

/// Releases admitted bytes when a write ends, however it ends.
pub(crate) struct Admitted<'a> {
    inner: &'a Inner,
    bytes: usize,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.inner
            .in_flight_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Where a write stands while it is retried.
#[derive(Default)]
struct Attempts {
    /// Some attempt may have been proposed (its outcome never came back).
    maybe_proposed: bool,
    /// What stopped the last attempt, for the final error.
    last: String,
}

impl ClusterNode {
    /// Applies `commands` in order as one write, through whichever node leads; returns one
    /// result per command. Uses the configured write timeout.
    pub async fn write(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Output, CommandError>>, WriteError> {
        let deadline = Instant::now() + self.inner.config.write_timeout();
        self.write_by(commands, deadline).await
    }

    /// [`ClusterNode::write`] with an explicit deadline.
    pub async fn write_by(
        &self,
        commands: Vec<Command>,
        deadline: Instant,
    ) -> Result<Vec<Result<Output, CommandError>>, WriteError> {
        let n = &*self.inner;
        if n.draining.load(Ordering::Acquire) {
            return Err(WriteError::Unavailable("the node is shutting down".into()));
        }
        if let Err(e) = &n.raft.metrics().borrow().running_state {
            return Err(WriteError::Storage(format!(
                "raft stopped on this node: {e}"
            )));
        }
        let bundle = Bundle {
            id: RequestId {
                node: n.id,
                incarnation: n.incarnation,
                seq: n.seq.fetch_add(1, Ordering::Relaxed) + 1,
            },
            commands,
        };
        let bytes = bundle.size_bytes();
        if bytes > n.config.write_bytes_max {
            return Err(WriteError::TooLarge {
                bytes,
                limit_bytes: n.config.write_bytes_max,
            });
        }
        let before = n.in_flight_bytes.fetch_add(bytes, Ordering::AcqRel);
        let _admitted = Admitted { inner: n, bytes };
        if before + bytes > n.config.in_flight_bytes_max {
            return Err(WriteError::Overloaded {
                in_flight_bytes: before,
                limit_bytes: n.config.in_flight_bytes_max,
            });
        }
        let count = bundle.commands.len();
        let mut tries = Attempts::default();
        let mut server_metrics = n.raft.server_metrics();
        // Bounded: every pass either returns or waits for a leader change or a slice.
        loop {
            if Instant::now() >= deadline {
                return Err(past_deadline(&tries));
            }
            let (state, leader) = {
                let m = n.raft.metrics().borrow().clone();
                (m.state, m.current_leader)
            };
            let outcome = match leader {
                Some(l) if l == n.id && state == ServerState::Leader => {
                    Ok(n.propose_here(bundle.clone(), deadline).await)
                }
                Some(l) if l != n.id => {
                    // A dead leader answers nothing: when another one is elected while the
                    // forward waits, abandon it and retry there (same id: applied once).
                    let fwd = self.forward(l, bundle.clone(), deadline);
                    tokio::pin!(fwd);
                    loop {
                        tokio::select! {
                            r = &mut fwd => break r,
                            changed = server_metrics.changed() => {
                                if changed.is_err() {
                                    break Err(RpcError::Unreachable(l, "raft stopped on this node".into()));
                                }
                                let now = n.raft.metrics().borrow().current_leader;
                                if now.is_some() && now != Some(l) {
                                    break Err(RpcError::Timeout(l, Duration::ZERO));
                                }
                            }
                        }
                    }
                }
                _ => {
                    tries.last = "no leader is elected".into();
                    wait_change(&mut server_metrics, deadline).await;
                    continue;
                }
            };
            match outcome {
                Ok(ForwardOutcome::Done(BundleOutcome::Applied(results))) => return Ok(results),
                Ok(ForwardOutcome::Done(BundleOutcome::Duplicate)) => {
                    // An earlier attempt applied it; its per-command results stayed there.
                    return Ok(vec![Ok(Output::Done); count]);
                }
                Ok(ForwardOutcome::Done(BundleOutcome::Expired)) => {
                    return Err(WriteError::Unknown(format!(
                        "request {} outlived the dedup window of its origin; an earlier \
                         attempt may have been applied",
                        bundle.id
                    )))
                }
                Ok(ForwardOutcome::Refused(r)) => match r {
                    Refusal::NotLeader { leader: hint } => {
                        tries.last = match hint {
                            Some(h) => format!("leadership is moving to node {h}"),
                            None => "leadership is changing".into(),
                        };
                        if hint.is_none() || hint == leader {
                            wait_change(&mut server_metrics, deadline).await;
                        }
                    }
                    Refusal::NoQuorum(why) if !tries.maybe_proposed => {
                        return Err(WriteError::Unavailable(why))
                    }
                    Refusal::Overloaded { .. } if !tries.maybe_proposed => {
                        return Err(WriteError::Overloaded {
                            in_flight_bytes: before,
                            limit_bytes: n.config.in_flight_bytes_max,
                        })
                    }
                    Refusal::Failed(why) if !tries.maybe_proposed => {
                        return Err(WriteError::Unavailable(why))
                    }
                    other => {
                        // An earlier attempt may be applied: keep trying under the same id.
                        tries.last = format!("{other:?}");
                        wait_change(&mut server_metrics, deadline).await;
                    }
                },
                Ok(ForwardOutcome::Unknown(why)) => {
                    tries.maybe_proposed = true;
                    tries.last = why;
                    wait_change(&mut server_metrics, deadline).await;
                }
                Err(e) => {
                    if !e.not_delivered() {
                        tries.maybe_proposed = true;
                    }
                    tries.last = e.to_string();
                    wait_change(&mut server_metrics, deadline).await;
                }
            }
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        bundle: Bundle,
        deadline: Instant,
    ) -> Result<ForwardOutcome, RpcError> {
        let n = &*self.inner;
        let Some(fwd) = &n.forwarder else {
            return Err(RpcError::Unreachable(
                leader,
                "this node has no cluster port to forward on".into(),
            ));
        };
        let addr = match n.peer(leader) {
            Ok((_, a)) => a,
            Err(r) => return Err(RpcError::Unreachable(leader, format!("{r:?}"))),
        };
        // One attempt may not use the whole deadline: a leader that went silent must
        // leave time to retry with its successor.
        let attempt = Duration::from_millis((n.config.election_timeout_max_ms * 4).max(2_000));
        let until = deadline.min(Instant::now() + attempt);
        fwd.forward(leader, addr, bundle, until).await
    }
}

impl Inner {
    /// A bundle forwarded by a follower: admitted against this node's in-flight bound
    /// too (the leader carries every node's writes), then proposed.
    pub(crate) async fn propose_forwarded(
        &self,
        bundle: Bundle,
        deadline: Instant,
    ) -> ForwardOutcome {
        let bytes = bundle.size_bytes();
        let before = self.in_flight_bytes.fetch_add(bytes, Ordering::AcqRel);
        let _admitted = Admitted { inner: self, bytes };
        if before + bytes > self.config.in_flight_bytes_max {
            return ForwardOutcome::Refused(Refusal::Overloaded {
                retry_after_ms: 100,
            });
        }
        self.propose_here(bundle, deadline).await
    }

    /// Proposes `bundle` through this node's proposer (it must lead to succeed).
    pub(crate) async fn propose_here(&self, bundle: Bundle, deadline: Instant) -> ForwardOutcome {
        let mut ticket = match self.proposer.submit(bundle) {
            Ok(t) => t,
            Err(r) => return ForwardOutcome::Refused(r),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let waited = tokio::time::timeout(left, ticket.outcome()).await;
        match waited {
            Ok(o) => o,
            Err(_) if ticket.withdraw() => ForwardOutcome::Refused(Refusal::Failed(
                "the deadline passed before the write was proposed".into(),
            )),
            Err(_) => ForwardOutcome::Unknown(
                "the deadline passed after the write was proposed, before it committed".into(),
            ),
        }
    }
}

fn past_deadline(t: &Attempts) -> WriteError {
    if t.maybe_proposed {
        WriteError::Unknown(format!("deadline passed; last: {}", t.last))
    } else if t.last.is_empty() {
        WriteError::Unavailable("deadline passed before the write could be proposed".into())
    } else {
        WriteError::Unavailable(format!("deadline passed; {}", t.last))
    }
}

/// Waits for a change of vote, leader or membership, at most a slice, never past `deadline`.
async fn wait_change<T>(rx: &mut tokio::sync::watch::Receiver<T>, deadline: Instant) {
    let slice = deadline
        .saturating_duration_since(Instant::now())
        .min(LEADER_WAIT_SLICE);
    if let Ok(Err(_)) = tokio::time::timeout(slice, rx.changed()).await {
        // Raft stopped: nothing will change; do not spin.
        tokio::time::sleep(slice).await;
    }
}
