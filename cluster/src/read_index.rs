//! Shared read-index rounds: concurrent linearizable reads share one round.
//!
//! A read may only use a round that started after the read arrived (otherwise a write
//! acknowledged just before the read could be missed), so readers that arrive while a
//! round runs wait for the next one, which then serves all of them.

use crate::types::NodeId;
use crate::wire::Refusal;
use futures::future::BoxFuture;
use openraft::LogId;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The outcome of one round: the log id reads must wait for.
pub type RoundResult = Result<Option<LogId<NodeId>>, Refusal>;

/// Readers waiting for one round at most; more are refused as overloaded.
pub const WAITERS_MAX: usize = 100_000;

type RoundFn = Arc<dyn Fn() -> BoxFuture<'static, RoundResult> + Send + Sync>;

struct State {
    running: bool,
    waiters: Vec<oneshot::Sender<RoundResult>>,
}

/// Runs rounds of `round` on demand, one at a time.
#[derive(Clone)]
pub struct ReadIndexBatcher {
    state: Arc<Mutex<State>>,
    round: RoundFn,
}

impl ReadIndexBatcher {
    pub fn new(round: RoundFn) -> ReadIndexBatcher {
        ReadIndexBatcher {
            state: Arc::new(Mutex::new(State {
                running: false,
                waiters: Vec::new(),
            })),
            round,
        }
    }

    /// The read log id of a round that starts after this call.
    pub async fn read_index(&self) -> RoundResult {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut s = self.state.lock();
            if s.waiters.len() >= WAITERS_MAX {
                return Err(Refusal::Overloaded { retry_after_ms: 50 });
            }
            s.waiters.push(tx);
            !std::mem::replace(&mut s.running, true)
        };
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.drive().await });
        }
        rx.await
            .unwrap_or_else(|_| Err(Refusal::Failed("the read round was dropped".into())))
    }

    async fn drive(self) {
        loop {
            let waiters = {
                let mut s = self.state.lock();
                if s.waiters.is_empty() {
                    s.running = false;
                    return;
                }
                std::mem::take(&mut s.waiters)
            };
            let r = (self.round)().await;
            for w in waiters {
                let _ = w.send(r.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::sync::Semaphore;

    async fn until(mut f: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if f() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!("condition not reached");
    }

    #[tokio::test]
    async fn concurrent_reads_share_rounds_that_start_after_them() {
        let rounds = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Semaphore::new(0));
        let (r, g) = (rounds.clone(), gate.clone());
        let b = ReadIndexBatcher::new(Arc::new(move || {
            let (r, g) = (r.clone(), g.clone());
            Box::pin(async move {
                let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                g.acquire().await.unwrap().forget();
                Ok(Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), n)))
            })
        }));
        // Phase 1: one read starts round 1, which stays open.
        let b1 = b.clone();
        let first = tokio::spawn(async move { b1.read_index().await });
        until(|| rounds.load(Ordering::SeqCst) == 1).await;
        // Phase 2: 199 reads arrive while round 1 runs: they must not use it.
        let mut tasks = Vec::new();
        for _ in 0..199 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move { b.read_index().await }));
        }
        until(|| b.state.lock().waiters.len() == 199).await;
        gate.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap().unwrap().index, 1);
        for t in tasks {
            assert_eq!(
                t.await.unwrap().unwrap().unwrap().index,
                2,
                "served by round 2"
            );
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
        // Phase 3: a later read gets a round of its own.
        gate.add_permits(1);
        assert_eq!(b.read_index().await.unwrap().unwrap().index, 3);
    }
}
