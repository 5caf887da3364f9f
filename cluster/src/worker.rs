//! A named thread that runs blocking jobs in order: the state machine's apply thread and
//! the log's append thread. Keeps RocksDB work and fsyncs off the async workers, in a
//! thread whose CPU time can be told apart (`thicket-apply`, `thicket-log`).

use std::sync::mpsc;
use tokio::sync::oneshot;

/// Jobs queued at most; a full queue makes the caller wait (backpressure).
pub const QUEUE_JOBS_MAX: usize = 1024;

type Job = Box<dyn FnOnce() + Send>;

/// Handle to one worker thread; clones share it. The thread ends when the last handle
/// is dropped.
#[derive(Clone)]
pub struct Worker {
    tx: mpsc::SyncSender<Job>,
    name: &'static str,
}

impl Worker {
    /// Starts the thread `name`.
    pub fn start(name: &'static str) -> std::io::Result<Worker> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE_JOBS_MAX);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        Ok(Worker { tx, name })
    }

    /// Runs `f` on the thread and waits for its result without blocking the runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        // A full queue is rare (one Raft core feeds it); waiting there is backpressure.
        let sender = self.tx.clone();
        let name = self.name;
        let queued = match sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || sender.send(job).map_err(|_| ()))
                    .await
                    .map_err(|_| ())
                    .and_then(|r| r)
            }
            Err(mpsc::TrySendError::Disconnected(_)) => Err(()),
        };
        queued.map_err(|_| format!("the {name} thread stopped"))?;
        rx.await.map_err(|_| format!("the {name} thread stopped"))
    }
}
