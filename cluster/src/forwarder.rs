//! A follower's side of writes: bundles bound for the leader travel batched, many
//! bundles per `Forward` RPC, with a bounded number of RPCs in flight (the follower's
//! share of group commit). Each bundle's caller gets its own outcome.
//!
//! Each target has its own lane (queue, slots, gathering): RPCs stuck on a leader that
//! died hold only that lane's slots, so forwards to its successor leave at once.

use crate::transport::{RpcError, Transport};
use crate::types::{Bundle, NodeId};
use crate::wire::{ForwardOutcome, Message, Reply};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Bundles waiting to be forwarded at most.
pub const QUEUE_BUNDLES_MAX: usize = 65_536;

/// What one forward attempt of a bundle came to.
pub type ForwardResult = Result<ForwardOutcome, RpcError>;

struct Pending {
    to: NodeId,
    addr: String,
    bundle: Bundle,
    bytes: usize,
    deadline: Instant,
    reply: oneshot::Sender<ForwardResult>,
}

/// Handle to the forwarder task.
#[derive(Clone)]
pub struct Forwarder {
    tx: mpsc::Sender<Pending>,
}

/// Bounds of one forward RPC.
#[derive(Clone, Debug)]
pub struct ForwardBounds {
    pub bytes_max: usize,
    pub bundles_max: usize,
    pub in_flight_max: usize,
}

impl Forwarder {
    /// Starts the forwarder over `transport`.
    pub fn start(transport: Arc<Transport>, bounds: ForwardBounds) -> Forwarder {
        let (tx, rx) = mpsc::channel(QUEUE_BUNDLES_MAX);
        tokio::spawn(run(transport, bounds, rx));
        Forwarder { tx }
    }

    /// Forwards `bundle` to the leader `to` at `addr`; answers by `deadline`.
    pub async fn forward(
        &self,
        to: NodeId,
        addr: String,
        bundle: Bundle,
        deadline: Instant,
    ) -> ForwardResult {
        let (reply, rx) = oneshot::channel();
        let bytes = bundle.size_bytes();
        let p = Pending {
            to,
            addr,
            bundle,
            bytes,
            deadline,
            reply,
        };
        if self.tx.try_send(p).is_err() {
            return Err(RpcError::Unreachable(
                to,
                "the forward queue of this node is full".into(),
            ));
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(RpcError::Unreachable(to, "the forwarder stopped".into())),
        }
    }
}

/// Targets with a lane at most (a lane whose queue closed is replaced).
const LANES_MAX: usize = 64;

async fn run(t: Arc<Transport>, b: ForwardBounds, mut rx: mpsc::Receiver<Pending>) {
    let mut lanes: std::collections::HashMap<(NodeId, String), mpsc::Sender<Pending>> =
        std::collections::HashMap::new();
    while let Some(p) = rx.recv().await {
        let key = (p.to, p.addr.clone());
        if lanes.len() >= LANES_MAX && !lanes.contains_key(&key) {
            lanes.retain(|_, tx| !tx.is_closed());
            if lanes.len() >= LANES_MAX {
                let _ = p.reply.send(Err(RpcError::Unreachable(
                    p.to,
                    "too many forward targets at once".into(),
                )));
                continue;
            }
        }
        let lane = lanes.entry(key).or_insert_with(|| {
            let (tx, lane_rx) = mpsc::channel(QUEUE_BUNDLES_MAX);
            tokio::spawn(lane(t.clone(), b.clone(), lane_rx));
            tx
        });
        if let Err(mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p)) =
            lane.try_send(p)
        {
            let _ = p.reply.send(Err(RpcError::Unreachable(
                p.to,
                "the forward queue of this node is full".into(),
            )));
        }
    }
}

/// One target's forwarding: gathers what queued while its slots were busy.
async fn lane(t: Arc<Transport>, b: ForwardBounds, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(b.in_flight_max.max(1)));
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        if first.reply.is_closed() {
            continue; // its caller gave up (e.g. moved on to a new leader): never sent
        }
        let (to, addr) = (first.to, first.addr.clone());
        let mut bytes = first.bytes;
        let mut deadline = first.deadline;
        let mut batch = vec![first];
        while batch.len() < b.bundles_max && bytes < b.bytes_max {
            match rx.try_recv() {
                Ok(p) if p.reply.is_closed() => {}
                Ok(p) if bytes + p.bytes <= b.bytes_max => {
                    bytes += p.bytes;
                    deadline = deadline.max(p.deadline);
                    batch.push(p);
                }
                Ok(p) => {
                    carry = Some(p);
                    break;
                }
                Err(_) => break,
            }
        }
        let t = t.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (bundles, replies): (Vec<Bundle>, Vec<_>) =
                batch.into_iter().map(|p| (p.bundle, p.reply)).unzip();
            let n = bundles.len();
            let timeout = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let res = t.call(to, &addr, Message::Forward(bundles), timeout).await;
            match res {
                Ok(Reply::Forward(outcomes)) if outcomes.len() == n => {
                    for (r, o) in replies.into_iter().zip(outcomes) {
                        let _ = r.send(Ok(o));
                    }
                }
                Ok(other) => {
                    let e = RpcError::Broken(to, format!("unexpected answer {other:?}"));
                    for r in replies {
                        let _ = r.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for r in replies {
                        let _ = r.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
