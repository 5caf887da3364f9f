//! The Raft log in its own RocksDB (`raft/`), so synced log appends never share a write
//! queue with the state machine and a snapshot of the state never carries a log or vote.
//!
//! Column families: `logs` (index u64 BE → versioned bincode entry) and `meta` (vote:
//! synced; committed: not synced, it can be recomputed; last purged log id: synced).
//! One `append` call is one synced write batch: one fsync for however many entries the
//! leader batched.

// openraft's traits return its `StorageError`, which is large by design.
#![allow(clippy::result_large_err)]

use crate::types::{NodeId, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote,
};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_FORMAT: &[u8] = b"format";
const KEY_INCARNATION: &[u8] = b"incarnation";
/// Format of log entries and meta values; checked at open.
/// 1: entries of plain command lists; 2: entries of bundles with request ids.
pub const LOG_FORMAT_VERSION: u8 = 2;

type SE = StorageError<NodeId>;

/// How far the state machine's state is durable on disk (the engine writes no WAL: its
/// state is durable as of its last flush, checkpoint or snapshot install). Shared by the
/// state machine, which raises it, and the log store, which purges no entry above it.
#[derive(Clone, Debug, Default)]
pub struct DurableMark(
    Arc<std::sync::atomic::AtomicU64>,
    Arc<parking_lot::Mutex<Option<LogId<NodeId>>>>,
    /// The last log id of the state machine's current snapshot.
    Arc<parking_lot::Mutex<Option<LogId<NodeId>>>>,
);

impl DurableMark {
    /// The state holds every entry up to `log_id` durably.
    pub fn raise(&self, log_id: Option<LogId<NodeId>>) {
        if let Some(l) = log_id {
            let mut last = self.1.lock();
            if last.is_none_or(|x| x.index < l.index) {
                *last = Some(l);
            }
            self.0.fetch_max(
                l.index.saturating_add(1),
                std::sync::atomic::Ordering::AcqRel,
            );
        }
    }

    /// The log id of the newest entry held durably.
    pub fn log_id(&self) -> Option<LogId<NodeId>> {
        *self.1.lock()
    }

    /// Records the last log id of the state machine's current snapshot (Raft never
    /// purges past it).
    pub fn set_snapshot(&self, last: Option<LogId<NodeId>>) {
        *self.2.lock() = last;
    }

    pub fn snapshot(&self) -> Option<LogId<NodeId>> {
        *self.2.lock()
    }

    /// The highest index held durably (`None`: nothing yet).
    pub fn get(&self) -> Option<u64> {
        self.0
            .load(std::sync::atomic::Ordering::Acquire)
            .checked_sub(1)
    }
}

/// The Raft log store; clones share the database (the log reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// When set, purges stop at what the state holds durably (see [`LogStore::guard_purges`]).
    durable: Option<DurableMark>,
    /// The thread that runs appends and other synced writes, in order.
    worker: crate::worker::Worker,
    /// Last committed index saved, for status reports (`u64::MAX`: none yet).
    committed: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the log's continuity was checked (at the first `get_log_state`).
    checked: Arc<std::sync::atomic::AtomicBool>,
}

fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![LOG_FORMAT_VERSION];
    out.extend(bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap_or_default());
    out
}

fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, AnyError> {
    match b.split_first() {
        Some((&LOG_FORMAT_VERSION, rest)) => {
            bincode::serde::decode_from_slice(rest, bincode::config::standard())
                .map(|(v, _)| v)
                .map_err(|e| AnyError::error(format!("undecodable log record: {e}")))
        }
        Some((v, _)) => Err(AnyError::error(format!(
            "log record format {v}, this build reads {LOG_FORMAT_VERSION}"
        ))),
        None => Err(AnyError::error("empty log record")),
    }
}

impl LogStore {
    /// Opens or creates the log store in `dir`.
    pub fn open(dir: &Path) -> Result<LogStore, SE> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(1);
        let cfs = [CF_LOGS, CF_META].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)
            .map_err(|e| StorageIOError::read(AnyError::new(&e)))?;
        let worker = crate::worker::Worker::start("thicket-log")
            .map_err(|e| StorageIOError::write(AnyError::error(format!("log thread: {e}"))))?;
        let store = LogStore {
            db: Arc::new(db),
            durable: None,
            worker,
            committed: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
            checked: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        match store.get_meta(KEY_FORMAT)? {
            Some(v) if v != [LOG_FORMAT_VERSION] => {
                return Err(StorageIOError::read(AnyError::error(format!(
                    "raft log format {v:?}, this build reads {LOG_FORMAT_VERSION}"
                )))
                .into())
            }
            Some(_) => {}
            None => store.put_meta(KEY_FORMAT, &[LOG_FORMAT_VERSION], true)?,
        }
        Ok(store)
    }

    /// Bumps and returns this node's incarnation (synced): request ids of different
    /// process lifetimes never collide, whatever the wall clock does.
    pub fn next_incarnation(&self) -> Result<u64, SE> {
        let n = match self.get_meta(KEY_INCARNATION)? {
            Some(b) => dec::<u64>(&b).map_err(StorageIOError::read)? + 1,
            None => 1,
        };
        self.put_meta(KEY_INCARNATION, &enc(&n), true)?;
        Ok(n)
    }

    /// The committed index last saved by Raft (`None` before any).
    pub fn committed_index(&self) -> Option<u64> {
        match self.committed.load(std::sync::atomic::Ordering::Relaxed) {
            u64::MAX => None,
            i => Some(i),
        }
    }

    /// Purges delete no entry above `mark`. openraft purges the log up to a received
    /// snapshot as soon as it takes the snapshot in, while the state machine may still be
    /// installing it: a kill -9 in between left a node whose state lacked entries its log
    /// no longer had, and it could not start again. Entries kept this way are deleted by
    /// a later purge; the purge marker only moves as far as entries were deleted.
    pub fn guard_purges(&mut self, mark: DurableMark) {
        self.durable = Some(mark);
    }

    /// The last log id stored (entry or purge marker), for the elector's probe answers.
    pub fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.last_purged()
            .and_then(|p| self.last_stored(p))
            .unwrap_or_else(|e| {
                tracing::warn!("reading the last log id: {e}");
                None
            })
    }

    /// The log id of the entry at `index`, if the log holds it.
    fn entry_log_id(&self, index: u64) -> Result<Option<LogId<NodeId>>, SE> {
        let v = self
            .db
            .get_pinned_cf(self.cf(CF_LOGS)?, index_key(index))
            .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
        v.map(|v| dec::<LogId<NodeId>>(&v).map_err(|e| StorageIOError::read_logs(e).into()))
            .transpose()
    }

    /// The newest entry's log id (decoded from the entry's prefix only), else `purged`.
    fn last_stored(&self, purged: Option<LogId<NodeId>>) -> Result<Option<LogId<NodeId>>, SE> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_LOGS)?);
        it.seek_to_last();
        // An entry is its log id followed by its payload: decode the prefix alone.
        let last = match it.value() {
            Some(v) => Some(dec::<LogId<NodeId>>(v).map_err(StorageIOError::read_logs)?),
            None => purged,
        };
        it.status()
            .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
        Ok(last)
    }

    /// Whether the log holds a vote or any entry or purge marker: a member of some cluster.
    pub fn is_empty(&self) -> Result<bool, SE> {
        if self.get_meta(KEY_VOTE)?.is_some() || self.get_meta(KEY_PURGED)?.is_some() {
            return Ok(false);
        }
        let mut it = self.db.raw_iterator_cf(self.cf(CF_LOGS)?);
        it.seek_to_first();
        Ok(!it.valid())
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, SE> {
        self.db.cf_handle(name).ok_or_else(|| {
            StorageIOError::read(AnyError::error(format!("column family {name} missing"))).into()
        })
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, SE> {
        self.db
            .get_cf(self.cf(CF_META)?, key)
            .map_err(|e| StorageIOError::read(AnyError::new(&e)).into())
    }

    fn put_meta(&self, key: &[u8], value: &[u8], sync: bool) -> Result<(), SE> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db
            .put_cf_opt(self.cf(CF_META)?, key, value, &wo)
            .map_err(|e| StorageIOError::write(AnyError::new(&e)).into())
    }

    /// At start, before Raft reads the log: a purge that the durable mark held back
    /// (a snapshot was still being installed) is lost with the process, so the log can
    /// hold a gap (entries the snapshot replaced were never received) that Raft would
    /// read as missing entries. When the state and the current snapshot hold everything
    /// up to the last gap, the purge is finished here (up to the older of the two); when
    /// they do not, the node cannot catch up from this log and refuses to start.
    fn close_gap_at_start(&self) -> Result<(), SE> {
        let Some(durable) = self.durable.as_ref() else {
            return Ok(()); // unguarded (the storage suite): purges are never held back
        };
        let marker = self.last_purged()?;
        // The start of the last contiguous run of entries, if a gap precedes it.
        let mut expected = marker.map_or(0, |m| m.index + 1);
        let mut run_after_gap: Option<u64> = None;
        let mut it = self.db.raw_iterator_cf(self.cf(CF_LOGS)?);
        it.seek_to_first();
        while let Some(k) = it.key() {
            let i = index_from_key(k)
                .ok_or_else(|| StorageIOError::read_logs(AnyError::error("undecodable log key")))?;
            if i > expected {
                run_after_gap = Some(i);
            }
            expected = i + 1;
            it.next();
        }
        it.status()
            .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
        drop(it);
        let Some(h) = run_after_gap else {
            return Ok(());
        };
        // Raft purges no further than its current snapshot: the purge stops there.
        let target = match (durable.log_id(), durable.snapshot()) {
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, _) => d,
        };
        match target {
            Some(d) if d.index.saturating_add(1) >= h && marker.is_none_or(|m| m < d) => {
                tracing::info!(
                    "raft log resumes at {h} after a gap (purge marker {marker:?}): finishing \
                     the purge up to the state's {d}"
                );
                self.purge_now(d)
            }
            d => Err(StorageIOError::read_logs(AnyError::error(format!(
                "the raft log lacks the entries before {h} and the state holds only up to \
                 {d:?} (state and snapshot): remove this node from the cluster, wipe its data \
                 and add it back as a learner"
            )))
            .into()),
        }
    }

    /// Deletes every entry up to `log_id` and moves the purge marker there (synced).
    fn purge_now(&self, log_id: LogId<NodeId>) -> Result<(), SE> {
        let mut wb = WriteBatch::default();
        wb.put_cf(self.cf(CF_META)?, KEY_PURGED, enc(&log_id));
        wb.delete_range_cf(
            self.cf(CF_LOGS)?,
            index_key(0),
            index_key(log_id.index.saturating_add(1)),
        );
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .write_opt(wb, &wo)
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)).into())
    }

    fn last_purged(&self) -> Result<Option<LogId<NodeId>>, SE> {
        self.get_meta(KEY_PURGED)?
            .map(|b| dec(&b).map_err(|e| StorageIOError::read_logs(e).into()))
            .transpose()
    }

    /// Runs blocking RocksDB work (fsyncs) on the log thread, off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(LogStore) -> Result<T, SE> + Send + 'static,
    ) -> Result<T, SE> {
        let me = self.clone();
        self.worker
            .run(move || f(me))
            .await
            .map_err(|e| StorageIOError::write(AnyError::error(e)))?
    }
}

fn index_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn index_from_key(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SE> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut ro = rocksdb::ReadOptions::default();
        match range.end_bound() {
            Bound::Included(&i) => {
                ro.set_iterate_upper_bound(index_key(i.saturating_add(1)).to_vec())
            }
            Bound::Excluded(&i) => ro.set_iterate_upper_bound(index_key(i).to_vec()),
            Bound::Unbounded => {}
        }
        let mut it = self.db.raw_iterator_cf_opt(self.cf(CF_LOGS)?, ro);
        it.seek(index_key(start));
        let mut out = Vec::new();
        while let Some(v) = it.value() {
            out.push(dec::<Entry<TypeConfig>>(v).map_err(StorageIOError::read_logs)?);
            it.next();
        }
        it.status()
            .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SE> {
        if !self.checked.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.close_gap_at_start()?;
        }
        let last_purged_log_id = self.last_purged()?;
        let last = self.last_stored(last_purged_log_id)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SE> {
        let v = enc(vote);
        self.blocking(move |s| s.put_meta(KEY_VOTE, &v, true)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SE> {
        self.get_meta(KEY_VOTE)?
            .map(|b| dec(&b).map_err(|e| StorageIOError::read_vote(e).into()))
            .transpose()
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SE> {
        // Not synced: after a crash the committed index is recomputed from a quorum.
        if let Some(c) = committed {
            self.committed
                .store(c.index, std::sync::atomic::Ordering::Relaxed);
        }
        self.put_meta(KEY_COMMITTED, &enc(&committed), false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SE> {
        Ok(self
            .get_meta(KEY_COMMITTED)?
            .map(|b| dec::<Option<LogId<NodeId>>>(&b).map_err(StorageIOError::read))
            .transpose()?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SE>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let batch: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| (e.get_log_id().index, enc(&e)))
            .collect();
        let res = self
            .blocking(move |s| {
                let mut wb = WriteBatch::default();
                let cf = s.cf(CF_LOGS)?;
                for (i, v) in &batch {
                    wb.put_cf(cf, index_key(*i), v);
                }
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                s.db.write_opt(wb, &wo)
                    .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)).into())
            })
            .await;
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SE> {
        self.blocking(move |s| {
            let mut wb = WriteBatch::default();
            wb.delete_range_cf(s.cf(CF_LOGS)?, index_key(log_id.index), index_key(u64::MAX));
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            s.db.write_opt(wb, &wo)
                .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)).into())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SE> {
        let log_id = match self.durable.as_ref().map(|d| d.get()) {
            None => log_id,
            Some(Some(d)) if d >= log_id.index => log_id,
            Some(durable) => {
                // Only as far as the state holds durably: the log id of that entry.
                let Some(d) = durable else {
                    tracing::debug!("purge up to {log_id} deferred: no durable state yet");
                    return Ok(());
                };
                match self.entry_log_id(d)? {
                    Some(l) => {
                        tracing::debug!("purge up to {log_id} held at {l} (durable state)");
                        l
                    }
                    None => return Ok(()), // already purged that far
                }
            }
        };
        self.blocking(move |s| s.purge_now(log_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::entry::RaftEntry;
    use openraft::CommittedLeaderId;

    fn lid(i: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), i)
    }

    /// A purge deletes no entry the state does not hold durably, and moves the purge
    /// marker only as far as it deleted; a later purge finishes the job.
    #[tokio::test]
    async fn purges_stop_at_the_durable_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        let mark = DurableMark::default();
        log.guard_purges(mark.clone());
        let cf = log.cf(CF_LOGS).unwrap();
        for i in 0..10 {
            let e = Entry::<TypeConfig>::new_blank(lid(i));
            log.db.put_cf(cf, index_key(i), enc(&e)).unwrap();
        }
        let left = |log: &mut LogStore| {
            let mut log = log.clone();
            async move {
                let st = log.get_log_state().await.unwrap();
                let n = log.try_get_log_entries(0..10).await.unwrap().len();
                (st.last_purged_log_id, st.last_log_id, n)
            }
        };

        // Nothing durable yet (a snapshot still being installed): nothing goes.
        log.purge(lid(7)).await.unwrap();
        assert_eq!(left(&mut log).await, (None, Some(lid(9)), 10));
        // Durable up to 4: entries 0..=4 go, the marker says 4.
        mark.raise(Some(lid(4)));
        log.purge(lid(7)).await.unwrap();
        assert_eq!(left(&mut log).await, (Some(lid(4)), Some(lid(9)), 5));
        // Durable past the request: the whole purge.
        mark.raise(Some(lid(9)));
        log.purge(lid(7)).await.unwrap();
        assert_eq!(left(&mut log).await, (Some(lid(7)), Some(lid(9)), 2));
        assert_eq!(log.last_log_id(), Some(lid(9)));
        // Unguarded (the storage suite): purges as asked.
        let plain_dir = tempfile::tempdir().unwrap();
        let mut plain = LogStore::open(plain_dir.path()).unwrap();
        plain.purge(lid(3)).await.unwrap();
        assert_eq!(
            plain.get_log_state().await.unwrap().last_purged_log_id,
            Some(lid(3))
        );
    }
    /// A purge held back while a snapshot was installed is lost with the process: the
    /// log then starts after a gap. At start it is finished when the state covers the
    /// gap (else Raft would read entries that are not there), and refused when not.
    #[tokio::test]
    async fn a_gap_after_the_purge_marker_is_closed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = LogStore::open(dir.path()).unwrap();
            let cf = log.cf(CF_LOGS).unwrap();
            // 0..=2 from before the node went away, 120.. after the snapshot it installed.
            for i in (0..3).chain(120..124) {
                let e = Entry::<TypeConfig>::new_blank(lid(i));
                log.db.put_cf(cf, index_key(i), enc(&e)).unwrap();
            }
        }
        // The state holds only up to 29: the node cannot go on from this log.
        {
            let mut log = LogStore::open(dir.path()).unwrap();
            let mark = DurableMark::default();
            mark.raise(Some(lid(29)));
            log.guard_purges(mark);
            let e = log.get_log_state().await.unwrap_err().to_string();
            assert!(e.contains("lacks the entries before 120"), "{e}");
        }
        // The state holds up to 119 (the snapshot was installed): the purge is finished.
        let mut log = LogStore::open(dir.path()).unwrap();
        let mark = DurableMark::default();
        mark.raise(Some(lid(123)));
        // The purge stops at the snapshot, which Raft needs to purge no further.
        mark.set_snapshot(Some(lid(119)));
        log.guard_purges(mark);
        let st = log.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(lid(119)));
        assert_eq!(st.last_log_id, Some(lid(123)));
        assert_eq!(log.try_get_log_entries(120..124).await.unwrap().len(), 4);
        assert!(log.try_get_log_entries(0..3).await.unwrap().is_empty());
    }
}
