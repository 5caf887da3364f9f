//! [`Engine`]: one node's state database and the in-memory indexes built from it.
//!
//! Layout of the engine's root directory (the cluster passes `groups/0/state`):
//! `CURRENT` names the active generation directory (`gen-000001`, ...). Installing a
//! snapshot writes a new generation, fsyncs it and switches `CURRENT` by rename, so a
//! crash leaves the old state or the new one, never a mix; readers that still hold the
//! old generation finish on it.
//!
//! Durability: `state/` is written without a WAL and flushed atomically across column
//! families (TiKV's technique), so the applied marker in flushed files never runs ahead
//! of the data beside it; after a crash the state is the one at that marker and the Raft
//! log replays the rest. [`Engine::flush`] makes the current marker durable. The engine
//! makes every memtable switch itself (RocksDB's own limit is set out of reach), each
//! right after a write that also holds every changed open record block (`blocks`), so
//! flushed files hold whole blocks as of their marker.
//!
//! Submodules: `apply` (the write path), `load` (indexes rebuilt at open), `read`
//! (bucket reads, SQL tables, catalog reads), `rollup` (how rollup windows compose and
//! which of them live only in memory), `snapshot` (checkpoint and install).

mod apply;
mod blocks;
mod load;
mod read;
mod rollup;
mod snapshot;

pub use read::{RawRow, RawRows, ReadResult};
pub use snapshot::read_marker_at;

use crate::catalog::BucketDoc;
use crate::error::{EngineError, EngineResult};
use crate::keys::{self, ALL_CFS};
use crate::value::FieldType;
use parking_lot::RwLock;
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, DB};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Tuning of one engine; defaults are sized for three nodes sharing two cores.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// RocksDB background flush + compaction threads.
    pub background_jobs: i32,
    /// Shared block cache.
    pub block_cache_bytes: usize,
    /// Memtable size per column family before a flush.
    pub write_buffer_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            background_jobs: 2,
            block_cache_bytes: 64 << 20,
            write_buffer_bytes: 32 << 20,
        }
    }
}

/// The storage engine of one node.
pub struct Engine {
    root: PathBuf,
    opts: EngineOptions,
    inner: RwLock<Arc<Inner>>,
}

/// One open generation: the database and the indexes derived from it.
pub(crate) struct Inner {
    pub(crate) db: DB,
    pub(crate) state: RwLock<State>,
    /// Set when a write failed: memory and database no longer agree, so nothing more is
    /// written or flushed (a reopen recovers the last flushed state and the log replays).
    pub(crate) poisoned: std::sync::atomic::AtomicBool,
}

/// Indexes rebuilt from the database at open. Apply mutates them under the write lock
/// while it builds its write batch; readers take the read lock only to pair a RocksDB
/// snapshot with the matching bucket views.
pub(crate) struct State {
    pub(crate) bucket_ids: HashMap<(String, String), u32>,
    pub(crate) views: HashMap<u32, Arc<BucketView>>,
    pub(crate) hot: HashMap<u32, BucketHot>,
    pub(crate) next_bucket_id: u32,
    /// Bytes written since the last memtable switch (flush control, see `apply`).
    pub(crate) unflushed_bytes: usize,
}

/// What readers need of a bucket. Copy-on-write (`Arc::make_mut`) when apply changes it.
#[derive(Clone, Debug)]
pub(crate) struct BucketView {
    pub(crate) id: u32,
    pub(crate) user: String,
    pub(crate) bucket: String,
    pub(crate) doc: BucketDoc,
    /// Index = field id.
    pub(crate) fields: Vec<FieldDef>,
    pub(crate) field_ids: rustc_hash::FxHashMap<String, u16>,
    /// Index = series id; tag values in `doc.config.tags` order.
    pub(crate) series: Vec<Vec<String>>,
}

/// One registered field.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldDef {
    pub(crate) name: String,
    pub(crate) ty: FieldType,
}

/// Apply's private per-bucket state for the hot path (no reads for new records).
#[derive(Default, Debug)]
pub(crate) struct BucketHot {
    /// Series id by tag values, encoded as in the series registry.
    pub(crate) series_index: rustc_hash::FxHashMap<Vec<u8>, u32>,
    /// Newest timestamp per series (`i64::MIN` when it has none).
    pub(crate) last_ts: Vec<i64>,
    /// Per series: its open record block (its newest records, see `blocks`); `None`
    /// when it has no records. Shared with readers, copied on write.
    pub(crate) open: Vec<blocks::SharedOpen>,
    /// Series whose open block changed since it was last written.
    pub(crate) dirty: Vec<u32>,
    pub(crate) is_dirty: Vec<bool>,
    /// Per series: the newest rollup windows, which live in memory only (see `rollup`).
    pub(crate) roll: Vec<rollup::SeriesRoll>,
}

impl Engine {
    /// Opens (or creates) the engine under `root`.
    pub fn open(root: impl AsRef<Path>, opts: EngineOptions) -> EngineResult<Engine> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root)
            .map_err(EngineError::io(format!("creating {}", root.display())))?;
        let gen = match read_current(&root)? {
            Some(g) => g,
            None => {
                let g = "gen-000001".to_string();
                write_current(&root, &g)?;
                g
            }
        };
        remove_stale_generations(&root, &gen);
        let inner = open_generation(&root.join(&gen), &opts)?;
        Ok(Engine {
            root,
            opts,
            inner: RwLock::new(Arc::new(inner)),
        })
    }

    pub(crate) fn inner(&self) -> Arc<Inner> {
        self.inner.read().clone()
    }

    /// The opaque marker stored by the last apply (`None` on a fresh engine).
    pub fn applied_marker(&self) -> EngineResult<Option<Vec<u8>>> {
        let inner = self.inner();
        inner
            .db
            .get_cf(cf(&inner.db, keys::CF_META)?, keys::KEY_APPLIED)
            .map_err(EngineError::rocks("reading the applied marker"))
    }

    /// Flushes every column family atomically: afterwards the current applied marker and
    /// everything before it survive a crash. Returns that marker.
    pub fn flush(&self) -> EngineResult<Option<Vec<u8>>> {
        let inner = self.inner();
        let mut st = inner.state.write(); // no apply in between: the marker matches the data
        let marker = inner
            .db
            .get_cf(cf(&inner.db, keys::CF_META)?, keys::KEY_APPLIED)
            .map_err(EngineError::rocks("reading the applied marker"))?;
        inner.flush_all(&mut st, true)?;
        Ok(marker)
    }
}

impl Inner {
    pub(crate) fn check_poisoned(&self) -> EngineResult<()> {
        if self.poisoned.load(std::sync::atomic::Ordering::Acquire) {
            return Err(EngineError::Corrupt(
                "an earlier write failed; the engine stopped writing (reopen it)".into(),
            ));
        }
        Ok(())
    }

    /// Writes every changed open block (no apply may run: the caller holds the state
    /// lock); afterwards the database holds the whole state as of the current marker.
    pub(crate) fn write_open_blocks(&self, st: &mut State) -> EngineResult<()> {
        self.check_poisoned()?;
        let mut wb = rocksdb::WriteBatch::default();
        apply::put_open_blocks(&self.db, st, &mut wb)?;
        if wb.is_empty() {
            return Ok(());
        }
        st.unflushed_bytes += wb.size_in_bytes();
        let mut wo = rocksdb::WriteOptions::default();
        wo.disable_wal(true);
        self.db
            .write_opt(wb, &wo)
            .map_err(EngineError::rocks("writing open blocks"))
    }

    /// Open blocks written, then every column family flushed atomically (`wait`: until
    /// the files are durable).
    pub(crate) fn flush_all(&self, st: &mut State, wait: bool) -> EngineResult<()> {
        self.write_open_blocks(st)?;
        flush_db_opt(&self.db, wait)?;
        st.unflushed_bytes = 0;
        Ok(())
    }
}

impl Engine {
    /// Compacts every column family fully (maintenance and benchmarks: reports the size
    /// data settles at). Concurrent reads and applies proceed.
    pub fn compact(&self) -> EngineResult<()> {
        let inner = self.inner();
        // A manual compaction flushes memtables first: the open blocks must be in them, so
        // no apply may run until it is done.
        let mut st = inner.state.write();
        inner.flush_all(&mut st, true)?;
        for name in ALL_CFS {
            inner
                .db
                .compact_range_cf(cf(&inner.db, name)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Without a WAL, unflushed memtables are lost at close; flush what we can so a
        // clean shutdown needs no log replay. Errors are logged: Drop cannot report them.
        let inner = self.inner.read().clone();
        if inner.poisoned.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let mut st = inner.state.write();
        if let Err(e) = inner.flush_all(&mut st, true) {
            tracing::warn!("flush at close failed: {e}");
        }
    }
}

/// Flushes every column family atomically and waits for it. Callers that may hold open
/// blocks in memory use [`Inner::flush_all`].
pub(crate) fn flush_db(db: &DB) -> EngineResult<()> {
    flush_db_opt(db, true)
}

fn flush_db_opt(db: &DB, wait: bool) -> EngineResult<()> {
    let cfs: Vec<_> = ALL_CFS
        .iter()
        .map(|n| cf(db, n))
        .collect::<EngineResult<_>>()?;
    let mut fo = rocksdb::FlushOptions::default();
    fo.set_wait(wait);
    db.flush_cfs_opt(&cfs, &fo)
        .map_err(EngineError::rocks("flushing the state"))
}

/// Column family handle by name.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> EngineResult<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| EngineError::Corrupt(format!("column family `{name}` is missing")))
}

/// The series CF's memtable insert hints, keyed by the 8-byte [bucket][series] prefix.
const HINT_PREFIX_OPTION: &str = "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.8";

pub(crate) fn db_options(
    opts: &EngineOptions,
) -> EngineResult<(Options, Vec<ColumnFamilyDescriptor>)> {
    // Without a WAL a close would flush memtables on its own, possibly without the open
    // blocks; the engine flushes itself before it closes (see `Drop`). The C API has the
    // setter but the crate does not: set it through an options string, first (the
    // options built from a string keep none of the settings made before).
    let mut db_opts = Options::default()
        .get_options_from_string("avoid_flush_during_shutdown=true")
        .map_err(EngineError::rocks("setting avoid_flush_during_shutdown"))?;
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_atomic_flush(true);
    db_opts.set_max_background_jobs(opts.background_jobs);
    db_opts.set_max_open_files(512);
    let cache = Cache::new_lru_cache(opts.block_cache_bytes);
    let cfs = ALL_CFS
        .iter()
        .map(|name| {
            let mut o = Options::default();
            if *name == keys::CF_SERIES {
                // Each series' records arrive in time order: remember, per series prefix
                // ([bucket][series]), where the last one went in the memtable, so an insert
                // starts there instead of descending the whole skiplist (cache misses).
                // Set first: the options built from a string keep none of the settings below.
                match o.get_options_from_string(HINT_PREFIX_OPTION) {
                    Ok(hinted) => o = hinted,
                    Err(e) => tracing::warn!("memtable insert hints unavailable: {e}"),
                }
            }
            let mut t = BlockBasedOptions::default();
            t.set_block_cache(&cache);
            t.set_block_size(if *name == keys::CF_SERIES {
                32 << 10
            } else {
                8 << 10
            });
            o.set_block_based_table_factory(&t);
            // LZ4 where data is young and rewritten soon; zstd for the last level, where
            // nearly all of it ends up and stays (denser, decompression still fast).
            o.set_compression_type(DBCompressionType::Lz4);
            o.set_bottommost_compression_type(DBCompressionType::Zstd);
            // The engine switches memtables itself at `write_buffer_bytes` (see `apply`);
            // RocksDB's own limit is kept out of reach, since its switch would flush a
            // state whose open blocks were not written.
            o.set_write_buffer_size(opts.write_buffer_bytes.saturating_mul(4).max(256 << 20));
            o.set_max_write_buffer_number(4);
            o.set_arena_block_size((opts.write_buffer_bytes / 8).clamp(64 << 10, 4 << 20));
            o.set_level_compaction_dynamic_level_bytes(true);
            ColumnFamilyDescriptor::new(*name, o)
        })
        .collect();
    Ok((db_opts, cfs))
}

fn open_generation(dir: &Path, opts: &EngineOptions) -> EngineResult<Inner> {
    let (db_opts, cfs) = db_options(opts)?;
    let db = DB::open_cf_descriptors(&db_opts, dir, cfs)
        .map_err(EngineError::rocks(format!("opening {}", dir.display())))?;
    let meta = cf(&db, keys::CF_META)?;
    match db
        .get_cf(meta, keys::KEY_FORMAT)
        .map_err(EngineError::rocks("reading the format version"))?
    {
        Some(v) => {
            let found = u32::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| EngineError::Corrupt("format version is not 4 bytes".into()))?,
            );
            if found != keys::FORMAT_VERSION {
                return Err(EngineError::FormatVersion {
                    found,
                    expected: keys::FORMAT_VERSION,
                });
            }
        }
        None => {
            let mut wo = rocksdb::WriteOptions::default();
            wo.disable_wal(true);
            db.put_cf_opt(
                meta,
                keys::KEY_FORMAT,
                keys::FORMAT_VERSION.to_be_bytes(),
                &wo,
            )
            .map_err(EngineError::rocks("writing the format version"))?;
            flush_db(&db)?;
        }
    }
    let state = load::load_state(&db)?;
    Ok(Inner {
        db,
        state: RwLock::new(state),
        poisoned: std::sync::atomic::AtomicBool::new(false),
    })
}

fn read_current(root: &Path) -> EngineResult<Option<String>> {
    match std::fs::read_to_string(root.join("CURRENT")) {
        Ok(s) => {
            let g = s.trim().to_string();
            if g.starts_with("gen-") && !g.contains('/') {
                Ok(Some(g))
            } else {
                Err(EngineError::Corrupt(format!(
                    "CURRENT names `{g}`, not a generation"
                )))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::Io {
            context: "reading CURRENT".into(),
            source: e,
        }),
    }
}

/// Atomically points `CURRENT` at `gen` (write a temp file, fsync, rename, fsync dir).
fn write_current(root: &Path, gen: &str) -> EngineResult<()> {
    use std::io::Write;
    let tmp = root.join("CURRENT.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(EngineError::io("creating CURRENT.tmp"))?;
    f.write_all(gen.as_bytes())
        .map_err(EngineError::io("writing CURRENT.tmp"))?;
    f.sync_all()
        .map_err(EngineError::io("syncing CURRENT.tmp"))?;
    std::fs::rename(&tmp, root.join("CURRENT")).map_err(EngineError::io("renaming CURRENT"))?;
    sync_dir(root)
}

pub(crate) fn sync_dir(dir: &Path) -> EngineResult<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(EngineError::io(format!("syncing {}", dir.display())))
}

/// Removes generations other than the current one (left by an interrupted install or
/// by readers that held an old generation when the process stopped).
fn remove_stale_generations(root: &Path, current: &str) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if (name.starts_with("gen-") || name.starts_with("incoming-")) && name != current {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!("could not remove stale {name}: {err}");
            }
        }
    }
}
