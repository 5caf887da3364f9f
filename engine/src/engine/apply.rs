//! The write path: `apply(commands, marker)`.
//!
//! One call is one RocksDB write batch holding every effect plus the marker, written
//! without a WAL (see `engine.rs`). Commands see each other's effects through the
//! [`Batch`] overlays (meta documents, record blocks, rollup rows), so a batch is
//! equivalent to applying its commands one by one. Each command validates everything
//! before it changes anything, so a rejected command leaves no trace.
//!
//! Records (layout in `blocks.rs`), the hot path: a record newer than its series' newest
//! is appended to the series' open block in memory; nothing is read and nothing is
//! written until the block closes (full, or its 15-minute window is over). A late or
//! replacing record goes into the open block when it falls inside it, else into the
//! closed records of its window, read once per batch and written again as chunks.
//!
//! Rollups (definitions in `rollup.rs`): a record newer than its series' newest
//! timestamp goes into the series' in-memory 15-minute window. When a series moves past
//! a window, that window's row is written once and folded into the level above. A late
//! point is merged into the row of its 15-minute window (one read); a replacing record
//! recomputes that window from raw rows when it is applied. Either way the hour and day
//! windows above are folded again from their children at the end of the batch.

use super::blocks::{block_window, chunk, BlockIter, OpenBlock};
use super::load::{decode_rollup, encode_rollup, encode_tag_values_into};
use super::rollup::{
    child, fold, merge_row, parent, push_points, row_from_records, stored_rows, to_types, Row,
    SeriesRoll,
};
use super::{cf, BucketHot, BucketView, Engine, FieldDef, State};
use crate::aggregate::RollupLevel;
use crate::catalog::{self, BucketDoc};
use crate::command::{Command, DocKind, Output, PutMode};
use crate::error::{CommandError, EngineError, EngineResult};
use crate::keys;
use crate::limits::{BUCKET_FIELDS_MAX, SERIES_PER_BUCKET_MAX};
use crate::record;
use crate::stats::Stats;
use crate::value::{FieldType, Num};
use rocksdb::{WriteBatch, WriteOptions, DB};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

type CmdResult = Result<Output, CommandError>;
/// (bucket, series, level, window start).
type RollupKey = (u32, u32, u8, i64);

impl Engine {
    /// Applies `commands` in order and stores `marker` with their effects, atomically.
    /// Returns one result per command; only an I/O failure fails the whole call (and then
    /// nothing of it is stored, and the engine refuses further writes until reopened).
    pub fn apply(&self, commands: &[Command], marker: &[u8]) -> EngineResult<Vec<CmdResult>> {
        let inner = self.inner();
        inner.check_poisoned()?;
        let mut st = inner.state.write();
        let outcome = (|| {
            let mut batch = Batch::new(&inner.db);
            let mut results = Vec::with_capacity(commands.len());
            for c in commands {
                results.push(batch.apply_command(&mut st, c)?);
            }
            let appended = batch.appended_bytes;
            let mut wb = batch.finish(&mut st, marker)?;
            // Flush control: the engine switches memtables itself, once the records
            // applied since the last switch reach `write_buffer_bytes`, right after a
            // write that also holds every changed open block (see `blocks`).
            let pending = st.unflushed_bytes + wb.size_in_bytes() + appended;
            let switch = pending >= self.opts.write_buffer_bytes;
            if switch {
                put_open_blocks(&inner.db, &mut st, &mut wb)?;
            }
            let mut wo = WriteOptions::default();
            wo.disable_wal(true);
            inner
                .db
                .write_opt(wb, &wo)
                .map_err(EngineError::rocks("writing the batch"))?;
            st.unflushed_bytes = pending;
            if switch {
                super::flush_db_opt(&inner.db, false)?;
                st.unflushed_bytes = 0;
            }
            Ok(results)
        })();
        if outcome.is_err() {
            // Apply changed memory (indexes, open blocks) as it went, and the database may
            // lack earlier batches' open blocks: stop writing, so that nothing inconsistent
            // is ever flushed. A reopen recovers the last flushed state; the log replays.
            inner
                .poisoned
                .store(true, std::sync::atomic::Ordering::Release);
        }
        outcome
    }
}

/// Puts every changed open block into `wb` and marks them written.
pub(crate) fn put_open_blocks(db: &DB, st: &mut State, wb: &mut WriteBatch) -> EngineResult<()> {
    let series_cf = cf(db, keys::CF_SERIES)?;
    let mut bids: Vec<u32> = st.hot.keys().copied().collect();
    bids.sort_unstable();
    for bid in bids {
        let Some(hot) = st.hot.get_mut(&bid) else {
            continue;
        };
        let mut dirty = std::mem::take(&mut hot.dirty);
        dirty.sort_unstable();
        for sid in dirty {
            let s = sid as usize;
            if !std::mem::replace(&mut hot.is_dirty[s], false) {
                continue;
            }
            if let Some(open) = &hot.open[s] {
                wb.put_cf(
                    series_cf,
                    keys::record_key(bid, sid, open.first_ts),
                    &open.bytes,
                );
            }
        }
    }
    Ok(())
}

fn mark_dirty(hot: &mut BucketHot, sid: u32) {
    let d = &mut hot.is_dirty[sid as usize];
    if !*d {
        *d = true;
        hot.dirty.push(sid);
    }
}

/// The closed records of one 15-minute window of one series, read once per batch when a
/// late record or a recomputation needs them (`blocks`).
struct Window {
    /// (ts, record), sorted; never the open block's.
    recs: Vec<(i64, Vec<u8>)>,
    /// Keys (first ts) of the blocks they were read from, replaced when `dirty`.
    keys: Vec<i64>,
    dirty: bool,
}

/// Effects of one apply call, gathered before they are written.
struct Batch<'a> {
    db: &'a DB,
    /// Meta column family writes (`None` deletes), in key order.
    meta: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Range deletions, written before everything else.
    range_deletes: Vec<(&'static str, Vec<u8>, Vec<u8>)>,
    /// Record blocks to write by (bucket, series, first ts) (`None` deletes).
    blocks: BTreeMap<(u32, u32, i64), Option<Vec<u8>>>,
    /// Windows whose closed records this batch read, by (bucket, series, window start).
    windows: BTreeMap<(u32, u32, i64), Window>,
    /// Record bytes appended to open blocks (flush control counts them as written).
    appended_bytes: usize,
    /// Scratch for one record's encoding.
    encoded: Vec<u8>,
    /// Rollup rows to write (`None` deletes).
    rollups: FxHashMap<RollupKey, Option<Vec<(u16, Stats)>>>,
    /// Hour and day windows to fold again from their children at the end of the batch
    /// (a 15-minute window below them took a late or replacing record).
    recompute: BTreeSet<RollupKey>,
    /// Series whose newest 15-minute window is stored (it took a late point) and changed
    /// in this batch: its row is rewritten at the end.
    stored_open: BTreeSet<(u32, u32)>,
    /// Per bucket: rows older than this were expired earlier in this batch.
    expired: FxHashMap<u32, i64>,
}

impl<'a> Batch<'a> {
    fn new(db: &'a DB) -> Batch<'a> {
        Batch {
            db,
            meta: BTreeMap::new(),
            range_deletes: Vec::new(),
            blocks: BTreeMap::new(),
            windows: BTreeMap::new(),
            appended_bytes: 0,
            encoded: Vec::new(),
            rollups: FxHashMap::default(),
            recompute: BTreeSet::new(),
            stored_open: BTreeSet::new(),
            expired: FxHashMap::default(),
        }
    }

    fn apply_command(&mut self, st: &mut State, c: &Command) -> EngineResult<CmdResult> {
        match c {
            Command::PutDoc {
                kind,
                user,
                parent,
                id,
                doc,
            } => self.put_doc(st, *kind, user, parent, id, doc, PutMode::Upsert),
            Command::PutDocWith {
                kind,
                user,
                parent,
                id,
                doc,
                mode,
            } => self.put_doc(st, *kind, user, parent, id, doc, *mode),
            Command::DeleteDoc {
                kind,
                user,
                parent,
                id,
            } => self.delete_doc(st, *kind, user, parent, id),
            Command::CreateBucket { user, bucket, doc } => {
                self.create_bucket(st, user, bucket, doc)
            }
            Command::UpdateBucket { user, bucket, doc } => {
                self.update_bucket(st, user, bucket, doc)
            }
            Command::DeleteBucket { user, bucket } => {
                match st.bucket_ids.get(&(user.clone(), bucket.clone())) {
                    Some(&bid) => {
                        self.delete_bucket(st, bid);
                        Ok(Ok(Output::Done))
                    }
                    None => Ok(Err(bucket_not_found(user, bucket))),
                }
            }
            Command::WriteRecords {
                user,
                bucket,
                records,
                default_ts,
            } => self.write_records(st, user, bucket, records, *default_ts),
            Command::Expire {
                user,
                bucket,
                before_ts,
            } => self.expire(st, user, bucket, *before_ts),
        }
    }

    // ---- meta overlay ----

    fn meta_get(&self, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        if let Some(v) = self.meta.get(key) {
            return Ok(v.clone());
        }
        self.db
            .get_cf(cf(self.db, keys::CF_META)?, key)
            .map_err(EngineError::rocks("reading the catalog"))
    }

    fn meta_keys_with_prefix(&self, prefix: &[u8]) -> EngineResult<Vec<Vec<u8>>> {
        let mut keys: BTreeSet<Vec<u8>> = super::load::prefix_scan(self.db, keys::CF_META, prefix)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for (k, v) in self.meta.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(_) => keys.insert(k.clone()),
                None => keys.remove(k),
            };
        }
        Ok(keys.into_iter().collect())
    }

    // ---- documents ----

    #[allow(clippy::too_many_arguments)]
    fn put_doc(
        &mut self,
        st: &State,
        kind: DocKind,
        user: &str,
        parent: &str,
        id: &str,
        doc: &str,
        mode: PutMode,
    ) -> EngineResult<CmdResult> {
        let what = describe(kind, user, parent, id);
        if let Err(e) = self.check_doc_path(kind, user, parent, id)? {
            return Ok(Err(e));
        }
        if kind == DocKind::Bucket {
            return Ok(Err(CommandError::Invalid(
                "buckets are written with the bucket commands".into(),
            )));
        }
        let _ = st;
        let new = match catalog::parse_doc(kind.name(), doc) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let key = keys::doc_key(kind.tag(), user, parent, id);
        let old = self.meta_get(&key)?;
        let stored = match (mode, old) {
            (PutMode::Create, Some(_)) => return Ok(Err(CommandError::Conflict(what))),
            (PutMode::Merge, None) => return Ok(Err(CommandError::NotFound(what))),
            (PutMode::Merge, Some(old)) => {
                let mut base = match serde_json::from_slice::<serde_json::Value>(&old) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => return Err(EngineError::Corrupt(format!("{what} is not a JSON object"))),
                };
                catalog::merge_doc(&mut base, new);
                serde_json::Value::Object(base).to_string()
            }
            _ => serde_json::Value::Object(new).to_string(),
        };
        if stored.len() > crate::limits::DOCUMENT_BYTES_MAX {
            return Ok(Err(CommandError::TooLarge {
                what,
                limit: crate::limits::DOCUMENT_BYTES_MAX as u64,
            }));
        }
        self.meta.insert(key, Some(stored.into_bytes()));
        Ok(Ok(Output::Done))
    }

    /// Ids are valid, the owner exists, and a property's device exists.
    fn check_doc_path(
        &self,
        kind: DocKind,
        user: &str,
        parent: &str,
        id: &str,
    ) -> EngineResult<Result<(), CommandError>> {
        let check = || -> Result<(), CommandError> {
            catalog::validate_id("user", user)?;
            if kind == DocKind::User {
                if !id.is_empty() || !parent.is_empty() {
                    return Err(CommandError::Invalid(
                        "a user document has no parent and no id".into(),
                    ));
                }
                return Ok(());
            }
            catalog::validate_id(kind.name(), id)?;
            if kind == DocKind::Property {
                catalog::validate_id("device", parent)?;
            } else if !parent.is_empty() {
                return Err(CommandError::Invalid(format!(
                    "a {} has no parent",
                    kind.name()
                )));
            }
            Ok(())
        };
        if let Err(e) = check() {
            return Ok(Err(e));
        }
        if kind != DocKind::User
            && self
                .meta_get(&keys::doc_key(DocKind::User.tag(), user, "", ""))?
                .is_none()
        {
            return Ok(Err(CommandError::NotFound(format!("user `{user}`"))));
        }
        if kind == DocKind::Property
            && self
                .meta_get(&keys::doc_key(DocKind::Device.tag(), user, "", parent))?
                .is_none()
        {
            return Ok(Err(CommandError::NotFound(format!(
                "device `{parent}` of user `{user}`"
            ))));
        }
        Ok(Ok(()))
    }

    fn delete_doc(
        &mut self,
        st: &mut State,
        kind: DocKind,
        user: &str,
        parent: &str,
        id: &str,
    ) -> EngineResult<CmdResult> {
        if kind == DocKind::Bucket {
            return Ok(Err(CommandError::Invalid(
                "buckets are deleted with DeleteBucket".into(),
            )));
        }
        let key = keys::doc_key(kind.tag(), user, parent, id);
        if self.meta_get(&key)?.is_none() {
            return Ok(Err(CommandError::NotFound(describe(
                kind, user, parent, id,
            ))));
        }
        self.meta.insert(key, None);
        match kind {
            DocKind::User => {
                for k in DocKind::OWNED {
                    if k == DocKind::Bucket {
                        continue;
                    }
                    for key in self.meta_keys_with_prefix(&keys::doc_prefix(k.tag(), user, None))? {
                        self.meta.insert(key, None);
                    }
                }
                let ids: Vec<u32> = st
                    .views
                    .values()
                    .filter(|v| v.user == user)
                    .map(|v| v.id)
                    .collect();
                for bid in ids {
                    self.delete_bucket(st, bid);
                }
            }
            DocKind::Device => {
                for key in self.meta_keys_with_prefix(&keys::doc_prefix(
                    DocKind::Property.tag(),
                    user,
                    Some(id),
                ))? {
                    self.meta.insert(key, None);
                }
            }
            _ => {}
        }
        Ok(Ok(Output::Done))
    }

    // ---- buckets ----

    fn create_bucket(
        &mut self,
        st: &mut State,
        user: &str,
        bucket: &str,
        doc: &str,
    ) -> EngineResult<CmdResult> {
        if let Err(e) = self.check_doc_path(DocKind::Bucket, user, "", bucket)? {
            return Ok(Err(e));
        }
        if st
            .bucket_ids
            .contains_key(&(user.to_string(), bucket.to_string()))
        {
            return Ok(Err(CommandError::Conflict(format!(
                "bucket `{bucket}` of user `{user}`"
            ))));
        }
        let bid = st.next_bucket_id;
        let parsed =
            catalog::parse_doc("bucket", doc).and_then(|d| BucketDoc::from_json(bucket, d, bid));
        let bdoc = match parsed {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        st.next_bucket_id += 1;
        self.meta.insert(
            keys::KEY_NEXT_BUCKET.to_vec(),
            Some(st.next_bucket_id.to_be_bytes().to_vec()),
        );
        self.meta.insert(
            keys::doc_key(DocKind::Bucket.tag(), user, "", bucket),
            Some(serde_json::to_vec(&bdoc).map_err(|e| EngineError::Corrupt(e.to_string()))?),
        );
        st.bucket_ids
            .insert((user.to_string(), bucket.to_string()), bid);
        st.hot.insert(bid, BucketHot::default());
        st.views.insert(
            bid,
            Arc::new(BucketView {
                id: bid,
                user: user.to_string(),
                bucket: bucket.to_string(),
                doc: bdoc,
                fields: Vec::new(),
                field_ids: Default::default(),
                series: Vec::new(),
            }),
        );
        Ok(Ok(Output::Done))
    }

    fn update_bucket(
        &mut self,
        st: &mut State,
        user: &str,
        bucket: &str,
        doc: &str,
    ) -> EngineResult<CmdResult> {
        let Some(&bid) = st.bucket_ids.get(&(user.to_string(), bucket.to_string())) else {
            return Ok(Err(bucket_not_found(user, bucket)));
        };
        let Some(view) = st.views.get_mut(&bid) else {
            return Err(EngineError::Corrupt(format!(
                "bucket `{bucket}` has no view"
            )));
        };
        let patch = match catalog::parse_doc("bucket", doc) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let mut base = match view.doc.to_public_json(bucket) {
            serde_json::Value::Object(m) => m,
            _ => return Err(EngineError::Corrupt(format!("bucket `{bucket}` document"))),
        };
        catalog::merge_doc(&mut base, patch);
        let new = match BucketDoc::from_json(bucket, base, bid) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        if new.config.tags != view.doc.config.tags {
            return Ok(Err(CommandError::Invalid(format!(
                "the tags of bucket `{bucket}` cannot change after it is created (they pick each record's series)"
            ))));
        }
        self.meta.insert(
            keys::doc_key(DocKind::Bucket.tag(), user, "", bucket),
            Some(serde_json::to_vec(&new).map_err(|e| EngineError::Corrupt(e.to_string()))?),
        );
        Arc::make_mut(view).doc = new;
        Ok(Ok(Output::Done))
    }

    fn delete_bucket(&mut self, st: &mut State, bid: u32) {
        let Some(view) = st.views.remove(&bid) else {
            return;
        };
        st.hot.remove(&bid);
        st.bucket_ids
            .remove(&(view.user.clone(), view.bucket.clone()));
        self.meta.insert(
            keys::doc_key(DocKind::Bucket.tag(), &view.user, "", &view.bucket),
            None,
        );
        let internal = keys::bucket_internal_prefix(bid);
        let internal_end = keys::prefix_end(&internal);
        let stale: Vec<Vec<u8>> = self
            .meta
            .range(internal.clone()..internal_end.clone())
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.meta.remove(&k);
        }
        self.range_deletes
            .push((keys::CF_META, internal, internal_end));
        let prefix = bid.to_be_bytes();
        for name in [keys::CF_SERIES, keys::CF_ROLLUPS] {
            self.range_deletes
                .push((name, prefix.to_vec(), keys::prefix_end(&prefix)));
        }
        self.blocks.retain(|(b, ..), _| *b != bid);
        self.windows.retain(|(b, ..), _| *b != bid);
        self.rollups.retain(|(b, ..), _| *b != bid);
        self.recompute.retain(|(b, ..)| *b != bid);
    }

    fn expire(
        &mut self,
        st: &mut State,
        user: &str,
        bucket: &str,
        before_ts: i64,
    ) -> EngineResult<CmdResult> {
        let Some(&bid) = st.bucket_ids.get(&(user.to_string(), bucket.to_string())) else {
            return Ok(Err(bucket_not_found(user, bucket)));
        };
        let before = RollupLevel::D1.window_start(before_ts);
        let Some(hot) = st.hot.get_mut(&bid) else {
            return Err(EngineError::Corrupt(format!(
                "bucket `{bucket}` has no index"
            )));
        };
        for sid in 0..hot.last_ts.len() as u32 {
            self.range_deletes.push((
                keys::CF_SERIES,
                keys::record_key(bid, sid, i64::MIN).to_vec(),
                keys::record_key(bid, sid, before).to_vec(),
            ));
            for level in RollupLevel::ALL {
                self.range_deletes.push((
                    keys::CF_ROLLUPS,
                    keys::rollup_key(bid, sid, level as u8, i64::MIN).to_vec(),
                    keys::rollup_key(bid, sid, level as u8, before).to_vec(),
                ));
            }
            // `before` is a day boundary: either every in-memory window of the series is
            // older (it has nothing left) or none is.
            if hot.last_ts[sid as usize] < before {
                hot.last_ts[sid as usize] = i64::MIN;
                hot.roll[sid as usize] = SeriesRoll::default();
                hot.open[sid as usize] = None;
            }
        }
        // Blocks never span a window, and `before` is a window boundary.
        self.blocks
            .retain(|(b, _, first), _| *b != bid || *first >= before);
        self.windows
            .retain(|(b, _, ws), _| *b != bid || *ws >= before);
        self.rollups
            .retain(|(b, _, _, ws), _| *b != bid || *ws >= before);
        self.recompute
            .retain(|(b, _, _, ws)| *b != bid || *ws >= before);
        let e = self.expired.entry(bid).or_insert(before);
        *e = (*e).max(before);
        Ok(Ok(Output::Done))
    }

    // ---- records ----

    fn write_records(
        &mut self,
        st: &mut State,
        user: &str,
        bucket: &str,
        json: &str,
        default_ts: i64,
    ) -> EngineResult<CmdResult> {
        let Some(&bid) = st.bucket_ids.get(&(user.to_string(), bucket.to_string())) else {
            return Ok(Err(bucket_not_found(user, bucket)));
        };
        let (Some(view), Some(hot)) = (st.views.get_mut(&bid), st.hot.get_mut(&bid)) else {
            return Err(EngineError::Corrupt(format!(
                "bucket `{bucket}` has no index"
            )));
        };
        if !view.doc.enabled {
            return Ok(Err(CommandError::Invalid(format!(
                "bucket `{bucket}` is disabled"
            ))));
        }
        let parsed = match record::parse_records(json, &view.doc.config.tags, default_ts) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        // Phase 1: resolve every field and series without changing anything.
        let plan = match plan_fields(view, &parsed, bucket) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let mut key = Vec::new();
        let mut sids = Vec::with_capacity(parsed.len());
        // New series in order of first appearance: (tag key, record index).
        let mut new_series: FxHashMap<Vec<u8>, u32> = FxHashMap::default();
        let mut new_order: Vec<usize> = Vec::new();
        for (i, rec) in parsed.iter().enumerate() {
            encode_tag_values_into(rec.tags, &mut key);
            let sid = match hot.series_index.get(key.as_slice()) {
                Some(&s) => s,
                None => match new_series.get(key.as_slice()) {
                    Some(&s) => s,
                    None => {
                        let s = (view.series.len() + new_order.len()) as u32;
                        new_series.insert(key.clone(), s);
                        new_order.push(i);
                        s
                    }
                },
            };
            sids.push(sid);
        }
        if view.series.len() + new_order.len() > SERIES_PER_BUCKET_MAX {
            return Ok(Err(CommandError::TooLarge {
                what: format!("series (distinct tag values) in bucket `{bucket}`"),
                limit: SERIES_PER_BUCKET_MAX as u64,
            }));
        }
        // Phase 2: commit registry changes, then the records.
        let view = Arc::make_mut(view);
        for (name, ty) in plan.new_fields {
            let fid = view.fields.len() as u16;
            let mut v = vec![ty as u8];
            v.extend_from_slice(name.as_bytes());
            self.meta.insert(keys::field_key(bid, fid), Some(v));
            view.field_ids.insert(name.clone(), fid);
            view.fields.push(FieldDef { name, ty });
        }
        for fid in plan.promoted {
            for roll in hot.roll.iter_mut() {
                roll.promote(fid);
            }
            let f = &mut view.fields[fid as usize];
            f.ty = FieldType::Float;
            let mut v = vec![FieldType::Float as u8];
            v.extend_from_slice(f.name.as_bytes());
            self.meta.insert(keys::field_key(bid, fid), Some(v));
        }
        for i in new_order {
            let tags: Vec<String> = parsed.get(i).tags.iter().map(|t| t.to_string()).collect();
            encode_tag_values_into(parsed.get(i).tags, &mut key);
            let s = view.series.len() as u32;
            self.meta
                .insert(keys::series_key(bid, s), Some(key.clone()));
            view.series.push(tags);
            hot.series_index.insert(key.clone(), s);
            hot.last_ts.push(i64::MIN);
            hot.roll.push(SeriesRoll::default());
            hot.open.push(None);
            hot.is_dirty.push(false);
        }
        let types: Vec<FieldType> = view.fields.iter().map(|f| f.ty).collect();
        let mut nums: Vec<(u16, Num)> = Vec::new();
        let mut encoded = std::mem::take(&mut self.encoded);
        for (rec, sid) in parsed.iter().zip(sids) {
            nums.clear();
            encoded.clear();
            record::put_count(&mut encoded, rec.fields.len());
            for (j, (_, v)) in rec.fields.iter().enumerate() {
                let fid = plan.fids[rec.first_field + j];
                let float_field = types[fid as usize] == FieldType::Float;
                record::put_field(&mut encoded, fid, v, float_field);
                if let Some(n) = v.as_num() {
                    nums.push((
                        fid,
                        if float_field {
                            n.to_type(FieldType::Float)
                        } else {
                            n
                        },
                    ));
                }
            }
            self.put_record(hot, bid, sid, rec.ts, &encoded, &nums, &types)?;
        }
        self.encoded = encoded;
        Ok(Ok(Output::Written {
            records: parsed.len() as u64,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    fn put_record(
        &mut self,
        hot: &mut BucketHot,
        bid: u32,
        sid: u32,
        ts: i64,
        rec: &[u8],
        nums: &[(u16, Num)],
        types: &[FieldType],
    ) -> EngineResult<()> {
        let s = sid as usize;
        let last = hot.last_ts[s];
        self.appended_bytes += rec.len() + 4;
        mark_dirty(hot, sid);
        let m15 = RollupLevel::M15;
        if ts <= last {
            // Late or replacing: into the open block when at or after its first record,
            // else into the closed records of its window.
            let replaces = match hot.open[s].as_mut() {
                Some(open) if ts >= open.first_ts => Arc::make_mut(open).insert(ts, rec)?,
                open => {
                    let open_first = open.as_ref().map(|o| o.first_ts);
                    let w = self.window(bid, sid, block_window(ts), open_first)?;
                    w.dirty = true;
                    match w.recs.binary_search_by_key(&ts, |r| r.0) {
                        Ok(i) => {
                            w.recs[i].1 = rec.to_vec();
                            true
                        }
                        Err(i) => {
                            w.recs.insert(i, (ts, rec.to_vec()));
                            false
                        }
                    }
                }
            };
            if replaces {
                // Replacing: a point cannot be taken out of merged statistics, so its
                // 15-minute window is recomputed from raw rows, now (not at the end of the
                // batch: later points must merge into the same row whatever the batch
                // boundaries, which differ between replicas); the windows above are
                // folded again at the end of the batch.
                let ws = m15.window_start(ts);
                let open = hot.open[s].clone();
                let open_first = open.as_ref().map(|o| o.first_ts);
                let closed = &self.window(bid, sid, ws, open_first)?.recs;
                let mut recs: Vec<(i64, &[u8])> =
                    closed.iter().map(|(t, v)| (*t, v.as_slice())).collect();
                if let Some(open) = open.as_ref().filter(|o| block_window(o.first_ts) == ws) {
                    for r in open.records() {
                        recs.push(r?);
                    }
                }
                let row = row_from_records(recs, types)?;
                if ws == m15.window_start(last) {
                    let roll = &mut hot.roll[s];
                    roll.m15 = row;
                    if roll.m15_stored {
                        self.stored_open.insert((bid, sid));
                    }
                } else {
                    self.put_rollup((bid, sid, m15 as u8, ws), row);
                    let h1 = RollupLevel::H1;
                    self.recompute
                        .insert((bid, sid, h1 as u8, h1.window_start(ts)));
                }
                return Ok(());
            }
            if nums.is_empty() {
                return Ok(());
            }
            let ws = m15.window_start(ts);
            if ws == m15.window_start(last) {
                // A late point in the newest window: merged in memory, and from now on the
                // window's row is also stored (rewritten at the end of each batch that
                // changes it), because arrival order now matters to its bits and raw rows
                // no longer rebuild it.
                let roll = &mut hot.roll[s];
                push_points(&mut roll.m15, ts, nums);
                roll.m15_stored = true;
                self.stored_open.insert((bid, sid));
            } else {
                // A late point in a stored window: one read, merged, written; the windows
                // above are folded again from their children at the end of the batch.
                let key = (bid, sid, m15 as u8, ws);
                let mut row = self.stored_row(key)?;
                push_points(&mut row, ts, nums);
                self.rollups.insert(key, Some(row));
                let h1 = RollupLevel::H1;
                self.recompute
                    .insert((bid, sid, h1 as u8, h1.window_start(ts)));
            }
            return Ok(());
        }
        // The hot path: newer than everything of the series, appended to its open block.
        match &mut hot.open[s] {
            Some(open) if !open.full_for(ts) => Arc::make_mut(open).append(ts, rec),
            slot => {
                if let Some(old) = slot.take() {
                    self.close_block(bid, sid, &old);
                }
                *slot = Some(Arc::new(OpenBlock::new(ts, rec)));
            }
        }
        hot.last_ts[s] = ts;
        let roll = &mut hot.roll[s];
        if last != i64::MIN {
            self.close_windows(roll, bid, sid, last, ts);
        }
        push_points(&mut roll.m15, ts, nums);
        if roll.m15_stored {
            self.stored_open.insert((bid, sid));
        }
        Ok(())
    }

    /// Writes a series' open block as a closed one (it is full or its window is over).
    fn close_block(&mut self, bid: u32, sid: u32, block: &OpenBlock) {
        match self
            .windows
            .get_mut(&(bid, sid, block_window(block.first_ts)))
        {
            // This batch read the window: the block joins its closed records, which are
            // written again at the end (they are all older than the block's). A copy of
            // the block stored while it was open goes with the window's old blocks.
            Some(w) => {
                for (t, v) in block.records().flatten() {
                    w.recs.push((t, v.to_vec()));
                }
                w.keys.push(block.first_ts);
                w.dirty = true;
            }
            None => {
                self.blocks
                    .insert((bid, sid, block.first_ts), Some(block.bytes.clone()));
            }
        }
    }

    /// The closed records of window `ws` of a series (read at the first need in a batch):
    /// its stored blocks (this batch's writes over the database's), never the open block
    /// (`open_first`), whose stored copy may be stale.
    fn window(
        &mut self,
        bid: u32,
        sid: u32,
        ws: i64,
        open_first: Option<i64>,
    ) -> EngineResult<&mut Window> {
        let key = (bid, sid, ws);
        if !self.windows.contains_key(&key) {
            let end = ws.saturating_add(RollupLevel::M15.len_ms());
            let mut blocks: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
            if ws >= self.floor(bid) {
                let mut ro = rocksdb::ReadOptions::default();
                ro.set_iterate_upper_bound(keys::record_key(bid, sid, end).to_vec());
                let mut it = self
                    .db
                    .raw_iterator_cf_opt(cf(self.db, keys::CF_SERIES)?, ro);
                it.seek(keys::record_key(bid, sid, ws));
                while let (Some(k), Some(v)) = (it.key(), it.value()) {
                    let first = keys::record_key_ts(k)
                        .ok_or_else(|| EngineError::Corrupt("record block key".into()))?;
                    blocks.insert(first, v.to_vec());
                    it.next();
                }
                it.status()
                    .map_err(EngineError::rocks("reading record blocks"))?;
            }
            for ((_, _, first), v) in self.blocks.range((bid, sid, ws)..(bid, sid, end)) {
                match v {
                    Some(v) => blocks.insert(*first, v.clone()),
                    None => blocks.remove(first),
                };
            }
            if let Some(f) = open_first {
                blocks.remove(&f);
            }
            let mut recs = Vec::new();
            for (first, b) in &blocks {
                for r in BlockIter::new(*first, b) {
                    let (t, v) = r?;
                    recs.push((t, v.to_vec()));
                }
            }
            self.windows.insert(
                key,
                Window {
                    recs,
                    keys: blocks.into_keys().collect(),
                    dirty: false,
                },
            );
        }
        Ok(self.windows.get_mut(&key).expect("inserted above"))
    }

    fn stored_row(&self, key: RollupKey) -> EngineResult<Row> {
        if let Some(r) = self.rollups.get(&key) {
            return Ok(r.clone().unwrap_or_default());
        }
        let (bid, sid, level, ws) = key;
        if self.expired.get(&bid).is_some_and(|b| ws < *b) {
            return Ok(Row::new());
        }
        match self
            .db
            .get_pinned_cf(
                cf(self.db, keys::CF_ROLLUPS)?,
                keys::rollup_key(bid, sid, level, ws),
            )
            .map_err(EngineError::rocks("reading a rollup row"))?
        {
            Some(v) => decode_rollup(&v)
                .ok_or_else(|| EngineError::Corrupt("undecodable rollup row".into())),
            None => Ok(Row::new()),
        }
    }

    /// The series moves from `last` to the newer `ts`: every in-memory window that does
    /// not hold `ts` is complete; its row is written and folded into the level above.
    fn close_windows(&mut self, roll: &mut SeriesRoll, bid: u32, sid: u32, last: i64, ts: i64) {
        let (m15, h1, d1) = (RollupLevel::M15, RollupLevel::H1, RollupLevel::D1);
        if m15.window_start(last) == m15.window_start(ts) {
            return;
        }
        let row15 = std::mem::take(&mut roll.m15);
        // The closed window's row is written below with its final value; the new newest
        // window starts unstored.
        roll.m15_stored = false;
        if h1.window_start(last) == h1.window_start(ts) {
            merge_row(&mut roll.h1_closed, &row15);
            self.put_closed((bid, sid, m15 as u8, m15.window_start(last)), row15);
            return;
        }
        let mut row1h = std::mem::take(&mut roll.h1_closed);
        merge_row(&mut row1h, &row15);
        self.put_closed((bid, sid, m15 as u8, m15.window_start(last)), row15);
        if d1.window_start(last) == d1.window_start(ts) {
            merge_row(&mut roll.d1_closed, &row1h);
            self.put_closed((bid, sid, h1 as u8, h1.window_start(last)), row1h);
            return;
        }
        let mut row1d = std::mem::take(&mut roll.d1_closed);
        merge_row(&mut row1d, &row1h);
        self.put_closed((bid, sid, h1 as u8, h1.window_start(last)), row1h);
        self.put_closed((bid, sid, d1 as u8, d1.window_start(last)), row1d);
    }

    /// The row of a window that was in memory until now (so none is stored).
    fn put_closed(&mut self, key: RollupKey, row: Row) {
        if !row.is_empty() {
            self.rollups.insert(key, Some(row));
        }
    }

    /// A row to write (an empty one deletes the window's row).
    fn put_rollup(&mut self, key: RollupKey, row: Row) {
        self.rollups
            .insert(key, if row.is_empty() { None } else { Some(row) });
    }

    /// Folds again the hour and day windows above late or replacing records, hours first:
    /// each from its children (this batch's rows over the database's); a series' newest
    /// window updates memory instead of being written.
    fn recompute_all(&mut self, st: &mut State) -> EngineResult<()> {
        while let Some(key) = self.recompute.pop_first() {
            let (bid, sid, level, ws) = key;
            let level = RollupLevel::from_u8(level)
                .ok_or_else(|| EngineError::Corrupt("rollup level".into()))?;
            let (Some(view), Some(hot)) = (st.views.get(&bid), st.hot.get_mut(&bid)) else {
                continue; // the bucket was deleted later in the batch
            };
            let types: Vec<FieldType> = view.fields.iter().map(|f| f.ty).collect();
            let last = hot.last_ts[sid as usize];
            let is_open = last != i64::MIN && level.window_start(last) == ws;
            let end = ws.saturating_add(level.len_ms());
            // Only hour and day windows are queued (15-minute ones are handled at once).
            let Some(c) = child(level) else {
                debug_assert!(false, "a 15-minute window was queued for folding");
                continue;
            };
            // The newest window's closed part stops where its newest child starts.
            let to = if is_open { c.window_start(last) } else { end };
            let mut row = self.fold_children(bid, sid, c, ws, to)?;
            to_types(&mut row, &types);
            match (is_open, level) {
                (true, RollupLevel::H1) => hot.roll[sid as usize].h1_closed = row,
                (true, _) => hot.roll[sid as usize].d1_closed = row,
                (false, _) => self.put_rollup(key, row),
            }
            if !is_open {
                if let Some(p) = parent(level) {
                    self.recompute
                        .insert((bid, sid, p as u8, p.window_start(ws)));
                }
            }
        }
        Ok(())
    }

    /// Floor below which this batch expired the bucket's rows.
    fn floor(&self, bid: u32) -> i64 {
        self.expired.get(&bid).copied().unwrap_or(i64::MIN)
    }

    /// Fold of the `level` rows of one series with window starts in `[from, to)`.
    fn fold_children(
        &self,
        bid: u32,
        sid: u32,
        level: RollupLevel,
        from: i64,
        to: i64,
    ) -> EngineResult<Row> {
        let mut rows = stored_rows(self.db, bid, sid, level, self.floor(bid).max(from), to)?;
        let step = level.len_ms();
        let mut ws = from;
        while ws < to {
            match self.rollups.get(&(bid, sid, level as u8, ws)) {
                Some(Some(r)) => {
                    rows.insert(ws, r.clone());
                }
                Some(None) => {
                    rows.remove(&ws);
                }
                None => {}
            }
            ws = ws.saturating_add(step);
        }
        Ok(fold(rows.values()))
    }

    /// Turns the overlays into one write batch (range deletes first) with the marker, and
    /// moves the in-memory newest windows forward.
    fn finish(mut self, st: &mut State, marker: &[u8]) -> EngineResult<WriteBatch> {
        self.recompute_all(st)?;
        for (bid, sid) in std::mem::take(&mut self.stored_open) {
            let Some(hot) = st.hot.get(&bid) else {
                continue;
            };
            let (last, roll) = (hot.last_ts[sid as usize], &hot.roll[sid as usize]);
            if last != i64::MIN && roll.m15_stored {
                let key = (
                    bid,
                    sid,
                    RollupLevel::M15 as u8,
                    RollupLevel::M15.window_start(last),
                );
                self.put_rollup(key, roll.m15.clone());
            }
        }
        let db = self.db;
        let mut wb = WriteBatch::default();
        for (name, from, to) in &self.range_deletes {
            wb.delete_range_cf(cf(db, name)?, from, to);
        }
        let series_cf = cf(db, keys::CF_SERIES)?;
        // Windows that took late records: their closed records written again as chunks.
        for ((bid, sid, _), w) in std::mem::take(&mut self.windows) {
            if !w.dirty {
                continue;
            }
            for k in w.keys {
                self.blocks.insert((bid, sid, k), None);
            }
            for (first, bytes) in chunk(&w.recs) {
                self.blocks.insert((bid, sid, first), Some(bytes));
            }
        }
        // In key order: RocksDB's skiplist memtable inserts a key that follows the previous
        // one from where that one went, instead of searching from the top.
        for ((bid, sid, first), v) in &self.blocks {
            let key = keys::record_key(*bid, *sid, *first);
            match v {
                Some(v) => wb.put_cf(series_cf, key, v),
                None => wb.delete_cf(series_cf, key),
            }
        }
        let rollups_cf = cf(db, keys::CF_ROLLUPS)?;
        let mut rollups: Vec<(&RollupKey, &Option<Row>)> = self.rollups.iter().collect();
        rollups.sort_unstable_by_key(|(k, _)| **k);
        for (&(bid, sid, level, ws), row) in rollups {
            let key = keys::rollup_key(bid, sid, level, ws);
            match row {
                Some(stats) if !stats.is_empty() => {
                    wb.put_cf(rollups_cf, key, encode_rollup(stats))
                }
                _ => wb.delete_cf(rollups_cf, key),
            }
        }
        let meta_cf = cf(db, keys::CF_META)?;
        for (k, v) in &self.meta {
            match v {
                Some(v) => wb.put_cf(meta_cf, k, v),
                None => wb.delete_cf(meta_cf, k),
            }
        }
        wb.put_cf(meta_cf, keys::KEY_APPLIED, marker);
        Ok(wb)
    }
}

/// How one write's fields map onto the bucket's registry.
struct FieldPlan {
    new_fields: Vec<(String, FieldType)>,
    promoted: Vec<u16>,
    /// The field id of every parsed field (`ParsedRecords::all_fields` order); new fields
    /// get the ids they will have once `new_fields` are registered in order.
    fids: Vec<u16>,
}

/// Checks every field of every record against the registry (and against the new fields
/// earlier records of the same write introduce). Integers into a float field become
/// floats; a float into an integer field promotes the field to float (JSON does not
/// distinguish 21 from 21.0, so devices send both); any other mismatch is an error.
fn plan_fields(
    view: &BucketView,
    records: &record::ParsedRecords<'_>,
    bucket: &str,
) -> Result<FieldPlan, CommandError> {
    let mut plan = FieldPlan {
        new_fields: Vec::new(),
        promoted: Vec::new(),
        fids: Vec::with_capacity(records.all_fields().len()),
    };
    for (i, rec) in records.iter().enumerate() {
        for (name, v) in rec.fields {
            let name: &str = name;
            let vt = v.field_type();
            let current = match view.field_ids.get(name) {
                Some(&fid) => {
                    let ty = if plan.promoted.contains(&fid) {
                        FieldType::Float
                    } else {
                        view.fields[fid as usize].ty
                    };
                    Some((fid, true, ty))
                }
                None => plan
                    .new_fields
                    .iter()
                    .position(|(n, _)| n == name)
                    .map(|k| ((view.fields.len() + k) as u16, false, plan.new_fields[k].1)),
            };
            let fid = match current {
                None => {
                    if view.fields.len() + plan.new_fields.len() >= BUCKET_FIELDS_MAX {
                        return Err(CommandError::TooLarge {
                            what: format!("fields in bucket `{bucket}`"),
                            limit: BUCKET_FIELDS_MAX as u64,
                        });
                    }
                    plan.new_fields.push((name.to_string(), vt));
                    (view.fields.len() + plan.new_fields.len() - 1) as u16
                }
                Some((fid, _, ty)) if ty == vt => fid,
                Some((fid, _, FieldType::Float)) if vt == FieldType::Int => fid,
                Some((fid, registered, FieldType::Int)) if vt == FieldType::Float => {
                    if registered {
                        plan.promoted.push(fid);
                    } else {
                        plan.new_fields[fid as usize - view.fields.len()].1 = FieldType::Float;
                    }
                    fid
                }
                Some((_, _, ty)) => {
                    return Err(CommandError::Invalid(format!(
                        "record {i}: field `{name}` is {} in bucket `{bucket}`, got {}",
                        ty.name(),
                        vt.name()
                    )))
                }
            };
            plan.fids.push(fid);
        }
    }
    Ok(plan)
}

fn bucket_not_found(user: &str, bucket: &str) -> CommandError {
    CommandError::NotFound(format!("bucket `{bucket}` of user `{user}`"))
}

fn describe(kind: DocKind, user: &str, parent: &str, id: &str) -> String {
    match kind {
        DocKind::User => format!("user `{user}`"),
        DocKind::Property => format!("property `{id}` of device `{parent}` of user `{user}`"),
        k => format!("{} `{id}` of user `{user}`", k.name()),
    }
}
