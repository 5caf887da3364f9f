//! Snapshots: a checkpoint of the state database as files, and its atomic install.
//!
//! A checkpoint is a RocksDB checkpoint (hard links of flushed SST files plus the
//! manifest) taken after an atomic flush; its applied marker is read from the checkpoint
//! itself, so marker and content always belong together. Install copies the files into a
//! fresh generation directory, opens it to verify format and marker, fsyncs every file and
//! the directory, then switches `CURRENT` by rename.

use super::blocks::BlockIter;
use super::{cf, flush_db, open_generation, read_current, sync_dir, write_current, Engine, Inner};
use crate::error::{EngineError, EngineResult};
use crate::keys::{self, ALL_CFS};

use rocksdb::DB;
use std::path::Path;
use std::sync::Arc;
use xxhash_rust::xxh3::Xxh3;

impl Engine {
    /// Writes a consistent checkpoint of the state into `dir` (which must not exist) and
    /// returns the applied marker it holds.
    pub fn checkpoint(&self, dir: &Path) -> EngineResult<Option<Vec<u8>>> {
        let inner = self.inner();
        {
            // No apply between flush and checkpoint: the checkpoint holds whole batches,
            // and the open record blocks as of its marker.
            let mut st = inner.state.write();
            inner.flush_all(&mut st, true)?;
            rocksdb::checkpoint::Checkpoint::new(&inner.db)
                .and_then(|c| c.create_checkpoint(dir))
                .map_err(EngineError::rocks(format!(
                    "creating a checkpoint in {}",
                    dir.display()
                )))?;
        }
        read_marker_at(dir)
    }

    /// Replaces the whole state with the checkpoint in `from` (left untouched). A crash at
    /// any point leaves either the old state or the new one.
    pub fn install_snapshot(&self, from: &Path) -> EngineResult<()> {
        let current = read_current(&self.root)?.unwrap_or_default();
        let n: u64 = current.trim_start_matches("gen-").parse().unwrap_or(0) + 1;
        let gen = format!("gen-{n:06}");
        let incoming = self.root.join(format!("incoming-{n:06}"));
        if incoming.exists() {
            std::fs::remove_dir_all(&incoming)
                .map_err(EngineError::io("clearing an old incoming snapshot"))?;
        }
        copy_dir_synced(from, &incoming)?;
        // Verify: it opens, has our format version, and carries a marker.
        {
            let probe = open_generation(&incoming, &self.opts)?;
            let marker = probe
                .db
                .get_cf(cf(&probe.db, keys::CF_META)?, keys::KEY_APPLIED)
                .map_err(EngineError::rocks("reading the snapshot's marker"))?;
            if marker.is_none() {
                return Err(EngineError::Snapshot(
                    "the snapshot has no applied marker".into(),
                ));
            }
            flush_db(&probe.db)?;
        }
        sync_tree(&incoming)?;
        let target = self.root.join(&gen);
        std::fs::rename(&incoming, &target)
            .map_err(EngineError::io("moving the snapshot into place"))?;
        sync_dir(&self.root)?;
        let fresh = open_generation(&target, &self.opts)?;
        write_current(&self.root, &gen)?;
        let old = std::mem::replace(&mut *self.inner.write(), Arc::new(fresh));
        retire(old, self.root.join(current));
        Ok(())
    }

    /// A checksum of the logical content (every key and value of every column family,
    /// including the applied marker, with record blocks hashed record by record):
    /// equal on replicas that applied the same log.
    pub fn content_checksum(&self) -> EngineResult<u128> {
        let inner = self.inner();
        let mut st = inner.state.write();
        inner.write_open_blocks(&mut st)?;
        checksum_db(&inner.db)
    }
}

pub(crate) fn checksum_db(db: &DB) -> EngineResult<u128> {
    let snap = db.snapshot();
    let mut h = Xxh3::new();
    for name in ALL_CFS {
        h.update(name.as_bytes());
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_snapshot(&snap);
        let mut it = db.raw_iterator_cf_opt(cf(db, name)?, ro);
        it.seek_to_first();
        let mut entry = |k: &[u8], v: &[u8]| {
            h.update(&(k.len() as u32).to_le_bytes());
            h.update(k);
            h.update(&(v.len() as u32).to_le_bytes());
            h.update(v);
        };
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if name == keys::CF_SERIES {
                // Blocks may be cut differently on replicas that restarted at other points:
                // hash the records, keyed as single records.
                let first = keys::record_key_ts(k)
                    .ok_or_else(|| EngineError::Corrupt("record block key".into()))?;
                for r in BlockIter::new(first, v) {
                    let (ts, rec) = r?;
                    let mut key = [0u8; 16];
                    key[..8].copy_from_slice(&k[..8]);
                    key[8..].copy_from_slice(&keys::ts_bytes(ts));
                    entry(&key, rec);
                }
            } else {
                entry(k, v);
            }
            it.next();
        }
        it.status().map_err(EngineError::rocks("checksumming"))?;
    }
    Ok(h.digest128())
}

/// Reads the applied marker of a checkpoint directory (opened read-only).
pub fn read_marker_at(dir: &Path) -> EngineResult<Option<Vec<u8>>> {
    let opts = rocksdb::Options::default();
    let db = DB::open_cf_for_read_only(&opts, dir, ALL_CFS, false).map_err(EngineError::rocks(
        format!("opening the checkpoint {}", dir.display()),
    ))?;
    db.get_cf(cf(&db, keys::CF_META)?, keys::KEY_APPLIED)
        .map_err(EngineError::rocks("reading the checkpoint's marker"))
}

/// Drops the old generation; its directory goes once the last reader lets go of it
/// (here if none holds it, else at the next open).
fn retire(old: Arc<Inner>, dir: std::path::PathBuf) {
    if let Ok(inner) = Arc::try_unwrap(old) {
        drop(inner);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!("could not remove the old state {}: {e}", dir.display());
        }
    }
}

fn copy_dir_synced(from: &Path, to: &Path) -> EngineResult<()> {
    std::fs::create_dir_all(to).map_err(EngineError::io(format!("creating {}", to.display())))?;
    let rd =
        std::fs::read_dir(from).map_err(EngineError::io(format!("reading {}", from.display())))?;
    for e in rd {
        let e = e.map_err(EngineError::io("listing a snapshot"))?;
        let ty = e
            .file_type()
            .map_err(EngineError::io("reading a file type"))?;
        if !ty.is_file() {
            return Err(EngineError::Snapshot(format!(
                "unexpected entry {} in the snapshot",
                e.path().display()
            )));
        }
        std::fs::copy(e.path(), to.join(e.file_name()))
            .map_err(EngineError::io(format!("copying {}", e.path().display())))?;
    }
    Ok(())
}

fn sync_tree(dir: &Path) -> EngineResult<()> {
    let rd =
        std::fs::read_dir(dir).map_err(EngineError::io(format!("reading {}", dir.display())))?;
    for e in rd {
        let e = e.map_err(EngineError::io("listing a snapshot"))?;
        std::fs::File::open(e.path())
            .and_then(|f| f.sync_all())
            .map_err(EngineError::io(format!("syncing {}", e.path().display())))?;
    }
    sync_dir(dir)
}
