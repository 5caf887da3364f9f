//! Reads: bucket data (raw and aggregated), newest values, SQL tables, catalog documents.
//!
//! Every read pairs a RocksDB snapshot with the bucket views of the same moment (taken
//! under the state's read lock), so it never sees a field or series id the view lacks.

use super::blocks::{for_each_record, series_bounds, SeriesCursor, SharedOpen};
use super::load::{decode_rollup, prefix_scan};
use super::rollup::OpenRows;
use super::{cf, BucketHot, BucketView, Engine, Inner, State};
use crate::aggregate::{self, AggRows, AggSource, FieldRef, RollupLevel, SeriesRef};
use crate::command::DocKind;
use crate::error::{EngineError, EngineResult, QueryError};
use crate::keys;
use crate::query::{ReadQuery, Sort};
use crate::record::FieldDecoder;
use crate::scan::{BucketColumns, BucketData, ScanRequest, ScanRow};
use crate::stats::Stats;
use crate::value::{FieldType, Num, Value};
use rocksdb::{DBRawIteratorWithThreadMode, SnapshotWithThreadMode, DB};
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// A bucket read's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum ReadResult {
    Raw(RawRows),
    Agg(AggRows),
}

/// Raw records, newest or oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct RawRows {
    /// The bucket's tag names (each row's `tags` in this order).
    pub tags: Vec<String>,
    pub rows: Vec<RawRow>,
    /// Cursor for the next page (`page=` parameter), when more rows match.
    pub next_page: Option<String>,
}

/// One stored record.
#[derive(Clone, Debug, PartialEq)]
pub struct RawRow {
    pub ts: i64,
    pub tags: Vec<String>,
    pub fields: Vec<(String, Value)>,
}

/// A RocksDB snapshot together with the database it belongs to.
pub(crate) struct Snap {
    // Declared before `inner` so it is dropped first: it borrows `inner.db`.
    snap: SnapshotWithThreadMode<'static, DB>,
    inner: Arc<Inner>,
}

impl Snap {
    /// Takes a snapshot; the caller holds the state lock so views match it.
    fn new(inner: Arc<Inner>) -> Snap {
        let snap = inner.db.snapshot();
        // SAFETY: the snapshot borrows `inner.db`; `inner` is an Arc kept in the same
        // struct and dropped after the snapshot (field order), so the database outlives
        // the borrow. Moving the Arc does not move the database.
        let snap: SnapshotWithThreadMode<'static, DB> = unsafe { std::mem::transmute(snap) };
        Snap { snap, inner }
    }
}

/// A consistent view of one bucket: a snapshot and the bucket's registries at that moment.
pub(crate) struct BucketReader {
    snap: Arc<Snap>,
    view: Arc<BucketView>,
    columns: BucketColumns,
    /// Per series: the newest rollup windows, which are not stored (filled for
    /// aggregated reads only, see `rollup.rs`).
    open: FxHashMap<u32, OpenRows>,
    /// Per series id: its open record block (its newest records, see `blocks`).
    blocks: Vec<SharedOpen>,
}

impl BucketReader {
    fn new(inner: Arc<Inner>, user: &str, bucket: &str) -> Result<BucketReader, QueryError> {
        let st = inner.state.read();
        let view = view_of(&st, user, bucket)?;
        let snap = Arc::new(Snap::new(inner.clone()));
        let hot = st.hot.get(&view.id);
        Ok(BucketReader::with(snap, view, hot))
    }

    /// A reader that also holds the newest rollup windows (which live only in memory) of
    /// the series matching `filters`, taken under the same lock as the snapshot.
    fn with_rollups(
        inner: Arc<Inner>,
        user: &str,
        bucket: &str,
        filters: &[(String, Vec<String>)],
    ) -> Result<BucketReader, QueryError> {
        let st = inner.state.read();
        let view = view_of(&st, user, bucket)?;
        let snap = Arc::new(Snap::new(inner.clone()));
        let hot = st.hot.get(&view.id);
        let mut reader = BucketReader::with(snap, view, hot);
        if let Some(hot) = hot {
            for s in reader.select_series(filters)? {
                let i = s.id as usize;
                let last = hot.last_ts.get(i).copied().unwrap_or(i64::MIN);
                if last == i64::MIN {
                    continue;
                }
                if let Some(roll) = hot.roll.get(i) {
                    reader.open.insert(s.id, roll.open_rows(last));
                }
            }
        }
        drop(st);
        Ok(reader)
    }

    /// `hot`: the bucket's memory at the snapshot's instant (the caller holds the lock).
    fn with(snap: Arc<Snap>, view: Arc<BucketView>, hot: Option<&BucketHot>) -> BucketReader {
        let columns = BucketColumns {
            tags: view.doc.config.tags.clone(),
            fields: view
                .fields
                .iter()
                .map(|f| FieldRef {
                    name: f.name.clone(),
                    ty: f.ty,
                })
                .collect(),
        };
        BucketReader {
            snap,
            view,
            columns,
            open: FxHashMap::default(),
            blocks: hot.map(|h| h.open.clone()).unwrap_or_default(),
        }
    }

    /// The open block of series `sid`.
    fn open_block(&self, sid: u32) -> SharedOpen {
        self.blocks.get(sid as usize).cloned().flatten()
    }

    fn iter(
        &self,
        cf_name: &str,
        lo: &[u8],
        hi: &[u8],
    ) -> Result<DBRawIteratorWithThreadMode<'_, DB>, QueryError> {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_snapshot(&self.snap.snap);
        ro.set_iterate_lower_bound(lo.to_vec());
        ro.set_iterate_upper_bound(hi.to_vec());
        let db = &self.snap.inner.db;
        Ok(db.raw_iterator_cf_opt(cf(db, cf_name)?, ro))
    }

    /// An iterator over everything of this bucket in one data column family.
    fn bucket_iter(
        &self,
        cf_name: &str,
    ) -> Result<DBRawIteratorWithThreadMode<'_, DB>, QueryError> {
        let prefix = self.view.id.to_be_bytes();
        self.iter(cf_name, &prefix, &keys::prefix_end(&prefix))
    }

    /// Series whose tags match every filter (ordered by id).
    fn select_series(
        &self,
        filters: &[(String, Vec<String>)],
    ) -> Result<Vec<SeriesRef>, QueryError> {
        let tags = &self.view.doc.config.tags;
        let mut idx = Vec::with_capacity(filters.len());
        for (t, vals) in filters {
            let pos = tags
                .iter()
                .position(|x| x == t)
                .ok_or_else(|| QueryError::BadParam {
                    param: "tags",
                    message: format!(
                        "bucket `{}` has no tag `{t}` (its tags: {})",
                        self.view.bucket,
                        tags.join(", ")
                    ),
                })?;
            idx.push((pos, vals));
        }
        Ok(self
            .view
            .series
            .iter()
            .enumerate()
            .filter(|(_, vals)| {
                idx.iter()
                    .all(|(p, want)| want.iter().any(|w| *w == vals[*p]))
            })
            .map(|(i, vals)| SeriesRef {
                id: i as u32,
                tags: tags.iter().cloned().zip(vals.iter().cloned()).collect(),
            })
            .collect())
    }

    /// Field ids for the requested names (`None`: every field); unknown names are skipped.
    fn select_fields(&self, names: Option<&[String]>) -> Vec<u16> {
        match names {
            None => (0..self.view.fields.len() as u16).collect(),
            Some(ns) => ns
                .iter()
                .filter_map(|n| self.view.field_ids.get(n).copied())
                .collect(),
        }
    }

    /// Decodes the selected fields of one record into `out` (indexed like `fids`).
    fn decode_into(
        &self,
        bytes: &[u8],
        fids: &[u16],
        out: &mut [Option<Value>],
    ) -> Result<(), QueryError> {
        out.iter_mut().for_each(|o| *o = None);
        let mut d = FieldDecoder::new(bytes).ok_or_else(corrupt_record)?;
        while let Some((fid, v)) = d
            .next_with(|f| fids.contains(&f))
            .map_err(|_| corrupt_record())?
        {
            if let (Some(v), Some(pos)) = (v, fids.iter().position(|f| *f == fid)) {
                let ty = self.view.fields.get(fid as usize).map(|f| f.ty);
                out[pos] = Some(match (ty, v) {
                    (Some(FieldType::Float), Value::Int(i)) => Value::Float(i as f64),
                    (_, v) => v,
                });
            }
        }
        Ok(())
    }

    fn raw_read(&self, q: &ReadQuery) -> Result<RawRows, QueryError> {
        let series = self.select_series(&q.tags)?;
        let fids = self.select_fields(q.fields.as_deref());
        let cursor = q.page.as_deref().map(parse_cursor).transpose()?;
        // One cursor per series, merged by (ts, series id).
        let mut iters = Vec::with_capacity(series.len());
        let mut heap = BinaryHeap::new();
        for s in &series {
            let (mut lo, mut hi) = (q.min_ts, q.max_ts);
            if let Some((cts, csid)) = cursor {
                match q.sort {
                    Sort::Asc => {
                        lo = lo.max(if s.id > csid {
                            cts
                        } else {
                            cts.saturating_add(1)
                        })
                    }
                    Sort::Desc => {
                        hi = hi.min(if s.id < csid {
                            cts
                        } else {
                            cts.saturating_sub(1)
                        })
                    }
                }
            }
            if lo > hi {
                continue;
            }
            let prefix = keys::series_prefix(self.view.id, s.id);
            let it = self.iter(keys::CF_SERIES, &prefix, &keys::prefix_end(&prefix))?;
            let cursor = SeriesCursor::new(
                it,
                self.view.id,
                s.id,
                self.open_block(s.id),
                lo,
                hi,
                q.sort == Sort::Asc,
            )?;
            if let Some((ts, _)) = cursor.current() {
                let i = iters.len();
                heap.push(HeapKey::new(q.sort, ts, s.id, i));
            }
            iters.push((s, cursor));
        }
        let mut rows: Vec<(u32, RawRow)> = Vec::new();
        let mut values = vec![None; fids.len()];
        let mut next_page = None;
        while let Some(top) = heap.pop() {
            if rows.len() == q.items {
                // More rows match: the cursor names the last row returned.
                next_page = rows.last().map(|(sid, r)| format!("{}.{sid}", r.ts));
                break;
            }
            let (s, it) = &mut iters[top.index];
            let (_, bytes) = it.current().ok_or_else(corrupt_record)?;
            self.decode_into(bytes, &fids, &mut values)?;
            rows.push((
                s.id,
                RawRow {
                    ts: top.ts,
                    tags: s.tags.iter().map(|(_, v)| v.clone()).collect(),
                    fields: self.named(&fids, &mut values),
                },
            ));
            it.advance()?;
            if let Some((ts, _)) = it.current() {
                heap.push(HeapKey::new(q.sort, ts, s.id, top.index));
            }
        }
        Ok(RawRows {
            tags: self.view.doc.config.tags.clone(),
            rows: rows.into_iter().map(|(_, r)| r).collect(),
            next_page,
        })
    }

    /// Pairs decoded values with their field names, skipping absent ones.
    fn named(&self, fids: &[u16], values: &mut [Option<Value>]) -> Vec<(String, Value)> {
        fids.iter()
            .zip(values.iter_mut())
            .filter_map(|(f, v)| {
                v.take()
                    .map(|v| (self.view.fields[*f as usize].name.clone(), v))
            })
            .collect()
    }

    fn latest(
        &self,
        tags: &[(String, Vec<String>)],
        fields: Option<&[String]>,
    ) -> Result<RawRows, QueryError> {
        let fids = self.select_fields(fields);
        let mut values = vec![None; fids.len()];
        let series = self.select_series(tags)?;
        let mut rows = Vec::with_capacity(series.len());
        for s in series {
            let Some(open) = self.open_block(s.id) else {
                continue;
            };
            self.decode_into(open.last_record(), &fids, &mut values)?;
            rows.push(RawRow {
                ts: open.last_ts,
                tags: self.view.series[s.id as usize].clone(),
                fields: self.named(&fids, &mut values),
            });
        }
        Ok(RawRows {
            tags: self.view.doc.config.tags.clone(),
            rows,
            next_page: None,
        })
    }
}

/// The view of one bucket, or "not found" naming it.
fn view_of(st: &State, user: &str, bucket: &str) -> Result<Arc<BucketView>, QueryError> {
    st.bucket_ids
        .get(&(user.to_string(), bucket.to_string()))
        .and_then(|id| st.views.get(id))
        .cloned()
        .ok_or_else(|| QueryError::NotFound(format!("bucket `{bucket}` of user `{user}`")))
}

fn corrupt_record() -> QueryError {
    QueryError::Engine(corrupt_engine())
}

fn corrupt_engine() -> EngineError {
    EngineError::Corrupt("undecodable record".into())
}

fn parse_cursor(s: &str) -> Result<(i64, u32), QueryError> {
    let bad = || QueryError::BadParam {
        param: "page",
        message: format!("`{s}` is not a cursor returned by a previous read"),
    };
    let (ts, sid) = s.split_once('.').ok_or_else(bad)?;
    Ok((
        ts.parse().map_err(|_| bad())?,
        sid.parse().map_err(|_| bad())?,
    ))
}

/// Heap entry: pops rows in (ts, series) order, ascending or descending.
#[derive(PartialEq, Eq)]
struct HeapKey {
    sort: Sort,
    ts: i64,
    sid: u32,
    index: usize,
}

impl HeapKey {
    fn new(sort: Sort, ts: i64, sid: u32, index: usize) -> HeapKey {
        HeapKey {
            sort,
            ts,
            sid,
            index,
        }
    }
}

impl Ord for HeapKey {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: ascending reads want the smallest key on top.
        let mine = (self.ts, self.sid);
        let theirs = (o.ts, o.sid);
        match self.sort {
            Sort::Asc => theirs.cmp(&mine),
            Sort::Desc => mine.cmp(&theirs),
        }
    }
}

impl PartialOrd for HeapKey {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// The engine's side of an aggregated read: selected series and fields of one reader.
struct AggInput<'r> {
    reader: &'r BucketReader,
    series: Vec<SeriesRef>,
    fields: Vec<FieldRef>,
    fids: Vec<u16>,
    /// One iterator per column family for the whole read, sought for each range call:
    /// creating an iterator (over every memtable and file) costs more than a seek, and a
    /// read makes a few calls per series.
    raw_it: RefCell<Option<DBRawIteratorWithThreadMode<'r, DB>>>,
    rollup_it: RefCell<Option<DBRawIteratorWithThreadMode<'r, DB>>>,
}

impl<'r> AggInput<'r> {
    fn new(reader: &'r BucketReader, q: &ReadQuery) -> Result<AggInput<'r>, QueryError> {
        if let Some(g) = q.agg.as_ref().and_then(|a| a.group_by.as_ref()) {
            if !reader.view.doc.config.tags.contains(g) {
                return Err(QueryError::BadParam {
                    param: "group_by",
                    message: format!("bucket `{}` has no tag `{g}`", reader.view.bucket),
                });
            }
        }
        let series = reader.select_series(&q.tags)?;
        let fids = reader.select_fields(q.fields.as_deref());
        let fields = fids
            .iter()
            .map(|f| {
                let d = &reader.view.fields[*f as usize];
                FieldRef {
                    name: d.name.clone(),
                    ty: d.ty,
                }
            })
            .collect();
        Ok(AggInput {
            reader,
            series,
            fields,
            fids,
            raw_it: RefCell::new(None),
            rollup_it: RefCell::new(None),
        })
    }
}

impl AggSource for AggInput<'_> {
    fn series(&self) -> &[SeriesRef] {
        &self.series
    }

    fn fields(&self) -> &[FieldRef] {
        &self.fields
    }

    fn raw(
        &self,
        series: u32,
        from: i64,
        to: i64,
        f: &mut dyn FnMut(i64, &[Option<Num>]),
    ) -> Result<(), QueryError> {
        if from >= to {
            return Ok(());
        }
        let bid = self.reader.view.id;
        let mut slot = self.raw_it.borrow_mut();
        let it = match &mut *slot {
            Some(it) => it,
            None => slot.insert(self.reader.bucket_iter(keys::CF_SERIES)?),
        };
        let mut nums = vec![None; self.fids.len()];
        let open = self.reader.open_block(series);
        for_each_record(
            it,
            bid,
            series,
            open.as_deref(),
            from,
            to - 1,
            &mut |ts, v| {
                nums.iter_mut().for_each(|n| *n = None);
                let mut d = FieldDecoder::new(v).ok_or_else(corrupt_engine)?;
                while let Some((fid, v)) = d
                    .next_with(|x| self.fids.contains(&x))
                    .map_err(|_| corrupt_engine())?
                {
                    if let (Some(v), Some(pos)) = (v, self.fids.iter().position(|x| *x == fid)) {
                        nums[pos] = v.as_num().map(|n| n.to_type(self.fields[pos].ty));
                    }
                }
                f(ts, &nums);
                Ok(true)
            },
        )?;
        Ok(())
    }

    fn rollups(
        &self,
        series: u32,
        level: RollupLevel,
        from: i64,
        to: i64,
        f: &mut dyn FnMut(i64, &[Option<Stats>]),
    ) -> Result<(), QueryError> {
        if from >= to {
            return Ok(());
        }
        let bid = self.reader.view.id;
        let mut slot = self.rollup_it.borrow_mut();
        let it = match &mut *slot {
            Some(it) => it,
            None => slot.insert(self.reader.bucket_iter(keys::CF_ROLLUPS)?),
        };
        let hi = keys::rollup_key(bid, series, level as u8, to);
        it.seek(keys::rollup_key(bid, series, level as u8, from));
        let mut out = vec![None; self.fids.len()];
        // The newest window comes from memory (a stored copy of it is skipped).
        let open_ws = self
            .reader
            .open
            .get(&series)
            .map(|rows| rows[level as usize].0);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k >= &hi[..] {
                break;
            }
            let ws = keys::rollup_key_ts(k).ok_or_else(corrupt_record)?;
            if Some(ws) == open_ws {
                it.next();
                continue;
            }
            out.iter_mut().for_each(|o| *o = None);
            for (fid, s) in decode_rollup(v).ok_or_else(corrupt_record)? {
                if let Some(pos) = self.fids.iter().position(|x| *x == fid) {
                    out[pos] = Some(s.to_type(self.fields[pos].ty));
                }
            }
            f(ws, &out);
            it.next();
        }
        it.status().map_err(EngineError::rocks("reading rollups"))?;
        // The newest window follows every stored one.
        if let Some(rows) = self.reader.open.get(&series) {
            let (ws, row) = &rows[level as usize];
            if (from..to).contains(ws) && !row.is_empty() {
                out.iter_mut().for_each(|o| *o = None);
                for (fid, s) in row {
                    if let Some(pos) = self.fids.iter().position(|x| x == fid) {
                        out[pos] = Some(s.to_type(self.fields[pos].ty));
                    }
                }
                f(*ws, &out);
            }
        }
        Ok(())
    }

    fn time_range(&self) -> Result<Option<(i64, i64)>, QueryError> {
        self.reader.time_range(&self.series)
    }
}

impl BucketReader {
    /// Oldest and newest record timestamps over `series`: two seeks per series, on one
    /// iterator (creating an iterator per series cost more than the seeks).
    fn time_range(&self, series: &[SeriesRef]) -> Result<Option<(i64, i64)>, QueryError> {
        let mut range: Option<(i64, i64)> = None;
        let mut it = self.bucket_iter(keys::CF_SERIES)?;
        for s in series {
            let open = self.open_block(s.id);
            if let Some((a, b)) = series_bounds(&mut it, self.view.id, s.id, open.as_deref())? {
                range = Some(match range {
                    None => (a, b),
                    Some((x, y)) => (x.min(a), y.max(b)),
                });
            }
        }
        Ok(range)
    }
}

impl BucketData for BucketReader {
    fn columns(&self) -> &BucketColumns {
        &self.columns
    }

    fn scan(
        &self,
        req: &ScanRequest,
        f: &mut dyn FnMut(&ScanRow<'_>) -> bool,
    ) -> Result<(), QueryError> {
        if req.min_ts > req.max_ts {
            return Ok(());
        }
        let series = self.select_series(&req.tags)?;
        let fids = self.select_fields(req.fields.as_deref());
        let mut values = vec![None; fids.len()];
        let mut it = self.bucket_iter(keys::CF_SERIES)?;
        let (part, parts) = (req.part.0, req.part.1.max(1));
        for s in series {
            if s.id as usize % parts != part {
                continue;
            }
            let tags = &self.view.series[s.id as usize];
            let open = self.open_block(s.id);
            let more = for_each_record(
                &mut it,
                self.view.id,
                s.id,
                open.as_deref(),
                req.min_ts,
                req.max_ts,
                &mut |ts, v| {
                    self.decode_into(v, &fids, &mut values)
                        .map_err(|_| EngineError::Corrupt("undecodable record".into()))?;
                    Ok(f(&ScanRow {
                        ts,
                        tags,
                        values: &values,
                    }))
                },
            )?;
            if !more {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl Engine {
    /// A bucket read with Thinger's parameters: raw rows, or windows when `agg` is set.
    pub fn read_bucket(
        &self,
        user: &str,
        bucket: &str,
        q: &ReadQuery,
    ) -> Result<ReadResult, QueryError> {
        match &q.agg {
            None => Ok(ReadResult::Raw(
                BucketReader::new(self.inner(), user, bucket)?.raw_read(q)?,
            )),
            Some(spec) => {
                let reader = BucketReader::with_rollups(self.inner(), user, bucket, &q.tags)?;
                let input = AggInput::new(&reader, q)?;
                Ok(ReadResult::Agg(aggregate::aggregate(q, spec, &input)?))
            }
        }
    }

    /// An aggregated read computed from raw rows only, never from rollups. Slower; it
    /// exists so tests can prove the rollup path gives the same answers.
    #[doc(hidden)]
    pub fn read_bucket_without_rollups(
        &self,
        user: &str,
        bucket: &str,
        q: &ReadQuery,
    ) -> Result<AggRows, QueryError> {
        let reader = BucketReader::new(self.inner(), user, bucket)?;
        let spec = q.agg.as_ref().ok_or_else(|| QueryError::BadParam {
            param: "agg",
            message: "an aggregated read needs agg".into(),
        })?;
        let input = AggInput::new(&reader, q)?;
        aggregate::aggregate_with(q, spec, &input, false)
    }

    /// The newest record of every series matching `tags`, kept in memory (no read of
    /// the data).
    pub fn latest(
        &self,
        user: &str,
        bucket: &str,
        tags: &[(String, Vec<String>)],
        fields: Option<&[String]>,
    ) -> Result<RawRows, QueryError> {
        BucketReader::new(self.inner(), user, bucket)?.latest(tags, fields)
    }

    /// Read access to one bucket for SQL.
    pub fn bucket_data(&self, user: &str, bucket: &str) -> Result<Arc<dyn BucketData>, QueryError> {
        Ok(Arc::new(BucketReader::new(self.inner(), user, bucket)?))
    }

    /// Every bucket of `user` as a SQL table, all read at the same instant.
    pub fn sql_tables(&self, user: &str) -> Vec<(String, Arc<dyn BucketData>)> {
        let inner = self.inner();
        let st = inner.state.read();
        let snap = Arc::new(Snap::new(inner.clone()));
        let mut out: Vec<(String, Arc<dyn BucketData>)> = st
            .views
            .values()
            .filter(|v| v.user == user)
            .map(|v| {
                let hot = st.hot.get(&v.id);
                let r: Arc<dyn BucketData> =
                    Arc::new(BucketReader::with(snap.clone(), v.clone(), hot));
                (v.bucket.clone(), r)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// A catalog document's JSON text.
    pub fn get_doc(
        &self,
        kind: DocKind,
        user: &str,
        parent: &str,
        id: &str,
    ) -> EngineResult<Option<String>> {
        if kind == DocKind::Bucket {
            return Ok(self.get_bucket(user, id).map(|v| v.to_string()));
        }
        let inner = self.inner();
        let v = inner
            .db
            .get_cf(
                cf(&inner.db, keys::CF_META)?,
                keys::doc_key(kind.tag(), user, parent, id),
            )
            .map_err(EngineError::rocks("reading a document"))?;
        v.map(|b| {
            String::from_utf8(b).map_err(|_| EngineError::Corrupt("document is not UTF-8".into()))
        })
        .transpose()
    }

    /// Every document of one kind of `user` (under `parent` for properties), by id.
    pub fn list_docs(
        &self,
        kind: DocKind,
        user: &str,
        parent: Option<&str>,
    ) -> EngineResult<Vec<(String, String)>> {
        if kind == DocKind::Bucket {
            return Ok(self
                .list_buckets(user)
                .into_iter()
                .map(|v| {
                    (
                        v["bucket"].as_str().unwrap_or_default().to_string(),
                        v.to_string(),
                    )
                })
                .collect());
        }
        let inner = self.inner();
        let mut out = Vec::new();
        for (k, v) in prefix_scan(
            &inner.db,
            keys::CF_META,
            &keys::doc_prefix(kind.tag(), user, parent),
        )? {
            let (_, _, id) = keys::split_doc_key(&k)
                .ok_or_else(|| EngineError::Corrupt("document key".into()))?;
            let doc = String::from_utf8(v)
                .map_err(|_| EngineError::Corrupt("document is not UTF-8".into()))?;
            out.push((id.to_string(), doc));
        }
        Ok(out)
    }

    /// A bucket's public document.
    pub fn get_bucket(&self, user: &str, bucket: &str) -> Option<serde_json::Value> {
        let inner = self.inner();
        let st = inner.state.read();
        let id = st.bucket_ids.get(&(user.to_string(), bucket.to_string()))?;
        st.views.get(id).map(|v| v.doc.to_public_json(bucket))
    }

    /// Every bucket of `user`, sorted by id.
    pub fn list_buckets(&self, user: &str) -> Vec<serde_json::Value> {
        let inner = self.inner();
        let st = inner.state.read();
        let mut v: Vec<_> = st.views.values().filter(|v| v.user == user).collect();
        v.sort_by(|a, b| a.bucket.cmp(&b.bucket));
        v.into_iter()
            .map(|v| v.doc.to_public_json(&v.bucket))
            .collect()
    }
}
