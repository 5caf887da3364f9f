//! A single node without replication.
//!
//! Writes go through a bounded queue to one dedicated apply thread (RocksDB work never
//! runs on the async workers). The thread takes everything queued, up to a count and byte
//! bound, and applies it as one engine call: one write batch for many requests (group
//! commit). Each caller gets its own command's result. The applied marker is a local
//! sequence number.

use crate::error::WriteError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use thicket_engine::{Command, Engine, Output};
use tokio::sync::{mpsc, oneshot};

/// Bounds of the write path.
#[derive(Clone, Debug)]
pub struct LocalNodeOptions {
    /// Commands applied in one engine call at most.
    pub batch_commands_max: usize,
    /// Bytes of commands applied in one engine call at most.
    pub batch_bytes_max: usize,
    /// Bytes of writes accepted but not yet applied; beyond it writes get `Overloaded`.
    pub in_flight_bytes_max: usize,
}

impl Default for LocalNodeOptions {
    fn default() -> Self {
        LocalNodeOptions {
            batch_commands_max: 1024,
            batch_bytes_max: 8 << 20,
            in_flight_bytes_max: 256 << 20,
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<Result<Output, thicket_engine::CommandError>>, WriteError>>;

struct Job {
    commands: Vec<Command>,
    bytes: usize,
    reply: Reply,
}

/// Handle to a single node; cheap to clone.
#[derive(Clone)]
pub struct LocalNode {
    engine: Arc<Engine>,
    tx: mpsc::Sender<Job>,
    in_flight: Arc<AtomicUsize>,
    failed: Arc<AtomicBool>,
    opts: LocalNodeOptions,
}

impl LocalNode {
    /// Starts the apply thread over `engine`.
    pub fn start(engine: Arc<Engine>, opts: LocalNodeOptions) -> Result<LocalNode, WriteError> {
        let (tx, rx) = mpsc::channel::<Job>(opts.batch_commands_max * 4);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let first = match engine.applied_marker()? {
            Some(m) => m.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0) + 1,
            None => 1,
        };
        let (e, inf, f, o) = (
            engine.clone(),
            in_flight.clone(),
            failed.clone(),
            opts.clone(),
        );
        std::thread::Builder::new()
            .name("thicket-apply".into())
            .spawn(move || apply_loop(e, rx, inf, f, o, first))
            .map_err(|e| WriteError::Unavailable(format!("cannot start the apply thread: {e}")))?;
        Ok(LocalNode {
            engine,
            tx,
            in_flight,
            failed,
            opts,
        })
    }

    /// The engine, for reads.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Applies `commands` in order, atomically with respect to other writers' batches;
    /// returns one result per command.
    pub async fn write(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Output, thicket_engine::CommandError>>, WriteError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(WriteError::Unavailable(
                "a storage failure stopped writes on this node; restart it once the cause is fixed"
                    .into(),
            ));
        }
        let bytes: usize = commands.iter().map(|c| c.size_bytes()).sum();
        let now = self.in_flight.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if now > self.opts.in_flight_bytes_max {
            self.in_flight.fetch_sub(bytes, Ordering::AcqRel);
            return Err(WriteError::Overloaded {
                in_flight_bytes: now - bytes,
                limit_bytes: self.opts.in_flight_bytes_max,
            });
        }
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Job {
                commands,
                bytes,
                reply,
            })
            .await
            .is_err()
        {
            self.in_flight.fetch_sub(bytes, Ordering::AcqRel);
            return Err(WriteError::Unavailable("the apply thread stopped".into()));
        }
        rx.await
            .map_err(|_| WriteError::Unavailable("the apply thread stopped".into()))?
    }
}

fn apply_loop(
    engine: Arc<Engine>,
    mut rx: mpsc::Receiver<Job>,
    in_flight: Arc<AtomicUsize>,
    failed: Arc<AtomicBool>,
    opts: LocalNodeOptions,
    mut seq: u64,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        let (mut n, mut bytes) = (jobs[0].commands.len(), jobs[0].bytes);
        while n < opts.batch_commands_max && bytes < opts.batch_bytes_max {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.commands.len();
                    bytes += j.bytes;
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let counts: Vec<usize> = jobs.iter().map(|j| j.commands.len()).collect();
        let all: Vec<Command> = jobs
            .iter_mut()
            .flat_map(|j| std::mem::take(&mut j.commands))
            .collect();
        let outcome = engine.apply(&all, &seq.to_be_bytes());
        in_flight.fetch_sub(bytes, Ordering::AcqRel);
        match outcome {
            Ok(results) => {
                seq += 1;
                let mut it = results.into_iter();
                for (j, count) in jobs.into_iter().zip(counts) {
                    let mine: Vec<_> = it.by_ref().take(count).collect();
                    let _ = j.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::error!("apply failed, this node stops accepting writes: {e}");
                failed.store(true, Ordering::Release);
                for j in jobs {
                    let _ = j.reply.send(Err(WriteError::Storage(e.to_string())));
                }
            }
        }
    }
}
