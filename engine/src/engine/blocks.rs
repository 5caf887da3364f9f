//! Record blocks: how a series' raw records are stored.
//!
//! The `series` column family holds *blocks*, not single records: the key is
//! `[bucket][series][first ts]` and the value the block's records in timestamp order,
//! each as `varint zigzag(ts − previous ts)`, `varint length`, the record's encoding
//! (`record.rs`); the first record's delta is taken from the key's timestamp, so it is 0.
//!
//! Rules that keep blocks ordered and disjoint:
//! - a block never spans two 15-minute windows (so expiring at a day boundary and
//!   recomputing a 15-minute rollup touch whole blocks);
//! - each series has at most one *open* block, its newest, which lives in memory
//!   ([`OpenBlock`]): a record newer than the series' newest is appended to it. It is
//!   closed (written) when the series moves to another window or when it holds
//!   [`BLOCK_RECORDS`] records, and then the next record starts a new one;
//! - a late record at or after the open block's first timestamp goes into the open block;
//!   any other late record joins the *closed* records of its window, which are then
//!   written again as consecutive chunks of [`BLOCK_RECORDS`] (`chunk`).
//!
//! So within a window the closed blocks hold records older than the open block's, and
//! reading blocks in key order (the open block in place of its stored copy) yields
//! records in timestamp order. The logical content (the records) is a function of the
//! log; block boundaries may differ between replicas that restarted at different
//! points, which is why content checksums hash records, not blocks.
//!
//! Durability: the open block is not written per batch (that was one memtable entry per
//! record, most of apply's and compaction's cost). Instead every memtable switch is made
//! by the engine itself, after it wrote every changed open block in the same write as the
//! applied marker (`Engine::apply`'s flush control): flushed files always hold whole
//! open blocks as of their marker.

use crate::aggregate::RollupLevel;
use crate::error::{EngineError, EngineResult};
use crate::keys;
use crate::record::{get_ivarint, get_uvarint, put_ivarint, put_uvarint};
use rocksdb::{DBRawIteratorWithThreadMode, DB};
use std::sync::Arc;

/// Records per block, beyond which a block is closed (appends) or chunked (late records).
pub(crate) const BLOCK_RECORDS: usize = 256;

/// Start of the 15-minute window `ts` falls in (blocks never span two).
pub(crate) fn block_window(ts: i64) -> i64 {
    RollupLevel::M15.window_start(ts)
}

fn corrupt() -> EngineError {
    EngineError::Corrupt("undecodable record block".into())
}

/// Appends one record to an encoded block whose previous record has `prev_ts`.
pub(crate) fn push_record(buf: &mut Vec<u8>, prev_ts: i64, ts: i64, rec: &[u8]) {
    put_ivarint(buf, ts.wrapping_sub(prev_ts));
    put_uvarint(buf, rec.len() as u64);
    buf.extend_from_slice(rec);
}

/// Records of an encoded block, oldest first, as (ts, record).
#[derive(Clone)]
pub(crate) struct BlockIter<'a> {
    buf: &'a [u8],
    prev: i64,
}

impl<'a> BlockIter<'a> {
    pub(crate) fn new(first_ts: i64, buf: &'a [u8]) -> BlockIter<'a> {
        BlockIter {
            buf,
            prev: first_ts,
        }
    }
}

impl<'a> Iterator for BlockIter<'a> {
    type Item = EngineResult<(i64, &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let mut step = || -> Option<(i64, &'a [u8])> {
            let d = get_ivarint(&mut self.buf)?;
            let n = get_uvarint(&mut self.buf)? as usize;
            let (rec, rest) = self.buf.split_at_checked(n)?;
            self.buf = rest;
            self.prev = self.prev.wrapping_add(d);
            Some((self.prev, rec))
        };
        match step() {
            Some(r) => Some(Ok(r)),
            None => {
                self.buf = &[];
                Some(Err(corrupt()))
            }
        }
    }
}

/// Decodes a stored block (key timestamp `first_ts`) into `out` as (ts, start, end)
/// ranges of `buf`.
pub(crate) fn index_block(
    first_ts: i64,
    buf: &[u8],
    out: &mut Vec<(i64, u32, u32)>,
) -> EngineResult<()> {
    out.clear();
    let base = buf.as_ptr() as usize;
    for r in BlockIter::new(first_ts, buf) {
        let (ts, rec) = r?;
        let start = rec.as_ptr() as usize - base;
        out.push((ts, start as u32, (start + rec.len()) as u32));
    }
    Ok(())
}

/// Encodes sorted records as one block (its key timestamp is the first record's).
pub(crate) fn encode_block<'a>(recs: impl IntoIterator<Item = (i64, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev: Option<i64> = None;
    for (ts, rec) in recs {
        push_record(&mut out, prev.unwrap_or(ts), ts, rec);
        prev = Some(ts);
    }
    out
}

/// The closed records of one window written as consecutive blocks of at most
/// [`BLOCK_RECORDS`]: (first ts, encoded block).
pub(crate) fn chunk(recs: &[(i64, Vec<u8>)]) -> Vec<(i64, Vec<u8>)> {
    recs.chunks(BLOCK_RECORDS)
        .map(|c| {
            (
                c[0].0,
                encode_block(c.iter().map(|(t, r)| (*t, r.as_slice()))),
            )
        })
        .collect()
}

/// A series' newest block, kept in memory (see the module docs).
#[derive(Clone, Debug, Default)]
pub(crate) struct OpenBlock {
    pub(crate) first_ts: i64,
    pub(crate) last_ts: i64,
    pub(crate) len: usize,
    /// The encoded block, exactly as it is stored.
    pub(crate) bytes: Vec<u8>,
    /// Where the newest record's encoding lies in `bytes`.
    pub(crate) last: (u32, u32),
}

impl OpenBlock {
    pub(crate) fn new(ts: i64, rec: &[u8]) -> OpenBlock {
        let mut b = OpenBlock {
            first_ts: ts,
            last_ts: ts,
            ..Default::default()
        };
        b.append(ts, rec);
        b
    }

    /// Appends a record newer than every one in the block.
    pub(crate) fn append(&mut self, ts: i64, rec: &[u8]) {
        let prev = if self.len == 0 { ts } else { self.last_ts };
        push_record(&mut self.bytes, prev, ts, rec);
        self.last = (
            (self.bytes.len() - rec.len()) as u32,
            self.bytes.len() as u32,
        );
        self.last_ts = ts;
        self.len += 1;
    }

    /// Whether the next newer record `ts` must start a new block.
    pub(crate) fn full_for(&self, ts: i64) -> bool {
        self.len >= BLOCK_RECORDS || block_window(ts) != block_window(self.first_ts)
    }

    /// The newest record.
    pub(crate) fn last_record(&self) -> &[u8] {
        &self.bytes[self.last.0 as usize..self.last.1 as usize]
    }

    pub(crate) fn records(&self) -> BlockIter<'_> {
        BlockIter::new(self.first_ts, &self.bytes)
    }

    /// Inserts (or replaces, returning true) a record with `first_ts <= ts <= last_ts`.
    pub(crate) fn insert(&mut self, ts: i64, rec: &[u8]) -> EngineResult<bool> {
        let mut recs: Vec<(i64, &[u8])> = self.records().collect::<EngineResult<_>>()?;
        let replaced = match recs.binary_search_by_key(&ts, |r| r.0) {
            Ok(i) => {
                recs[i].1 = rec;
                true
            }
            Err(i) => {
                recs.insert(i, (ts, rec));
                false
            }
        };
        let mut fresh = OpenBlock {
            first_ts: recs[0].0,
            last_ts: recs[0].0,
            ..Default::default()
        };
        for (t, r) in recs {
            fresh.append(t, r);
        }
        *self = fresh;
        Ok(replaced)
    }
}

/// One series' open block as readers share it.
pub(crate) type SharedOpen = Option<Arc<OpenBlock>>;

/// Calls `f(ts, record)` for the records of one series with `from <= ts <= to`, in order:
/// stored blocks (through `it`, an iterator over the series column family, sought here),
/// with the open block `open` in place of its stored copy. `f` returns false to stop.
/// Returns false when stopped.
pub(crate) fn for_each_record(
    it: &mut DBRawIteratorWithThreadMode<'_, DB>,
    bid: u32,
    sid: u32,
    open: Option<&OpenBlock>,
    from: i64,
    to: i64,
    f: &mut dyn FnMut(i64, &[u8]) -> EngineResult<bool>,
) -> EngineResult<bool> {
    if from > to {
        return Ok(true);
    }
    let prefix = keys::series_prefix(bid, sid);
    // Stored blocks end where the open block starts (its stored copy may be stale).
    let stored_below = open.map(|o| o.first_ts);
    if stored_below.is_none_or(|b| from < b) {
        it.seek_for_prev(keys::record_key(bid, sid, from));
        if !it.key().is_some_and(|k| k.starts_with(&prefix)) {
            it.seek(keys::record_key(bid, sid, from));
        }
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            let first = keys::record_key_ts(k).ok_or_else(corrupt)?;
            if first > to || stored_below.is_some_and(|b| first >= b) {
                break;
            }
            for r in BlockIter::new(first, v) {
                let (ts, rec) = r?;
                if ts > to {
                    return Ok(true);
                }
                if ts >= from && !f(ts, rec)? {
                    return Ok(false);
                }
            }
            it.next();
        }
        it.status()
            .map_err(EngineError::rocks("reading record blocks"))?;
    }
    if let Some(o) = open {
        if o.last_ts >= from && o.first_ts <= to {
            for r in o.records() {
                let (ts, rec) = r?;
                if ts > to {
                    break;
                }
                if ts >= from && !f(ts, rec)? {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

/// Records of one series with `lo <= ts <= hi`, one block at a time, oldest or newest
/// first (raw reads merge several of these).
pub(crate) struct SeriesCursor<'r> {
    it: DBRawIteratorWithThreadMode<'r, DB>,
    prefix: [u8; 8],
    open: SharedOpen,
    lo: i64,
    hi: i64,
    asc: bool,
    /// The current block and its records in range, in read order.
    buf: Vec<u8>,
    recs: Vec<(i64, u32, u32)>,
    pos: usize,
    /// Stored blocks are exhausted (ascending: the open block comes next; descending:
    /// the end).
    stored_done: bool,
    open_done: bool,
}

impl<'r> SeriesCursor<'r> {
    /// `it` iterates the series column family (bounds at least this series).
    pub(crate) fn new(
        mut it: DBRawIteratorWithThreadMode<'r, DB>,
        bid: u32,
        sid: u32,
        open: SharedOpen,
        lo: i64,
        hi: i64,
        asc: bool,
    ) -> EngineResult<SeriesCursor<'r>> {
        let prefix = keys::series_prefix(bid, sid);
        let stored_below = open.as_ref().map(|o| o.first_ts);
        let mut stored_done = lo > hi || stored_below.is_some_and(|b| lo >= b);
        if !stored_done {
            if asc {
                it.seek_for_prev(keys::record_key(bid, sid, lo));
                if !it.key().is_some_and(|k| k.starts_with(&prefix)) {
                    it.seek(keys::record_key(bid, sid, lo));
                }
            } else {
                let top = stored_below.map_or(hi, |b| hi.min(b - 1));
                it.seek_for_prev(keys::record_key(bid, sid, top));
            }
            it.status()
                .map_err(EngineError::rocks("reading record blocks"))?;
            stored_done = !it.key().is_some_and(|k| k.starts_with(&prefix));
        }
        let mut c = SeriesCursor {
            it,
            prefix,
            open,
            lo,
            hi,
            asc,
            buf: Vec::new(),
            recs: Vec::new(),
            pos: 0,
            stored_done,
            open_done: lo > hi,
        };
        c.fill()?;
        Ok(c)
    }

    /// The current record.
    pub(crate) fn current(&self) -> Option<(i64, &[u8])> {
        self.recs
            .get(self.pos)
            .map(|&(ts, a, b)| (ts, &self.buf[a as usize..b as usize]))
    }

    pub(crate) fn advance(&mut self) -> EngineResult<()> {
        self.pos += 1;
        self.fill()
    }

    /// Loads blocks until one has a record in range or none is left.
    fn fill(&mut self) -> EngineResult<()> {
        while self.pos >= self.recs.len() {
            self.pos = 0;
            self.recs.clear();
            if self.asc {
                if !self.stored_done {
                    self.load_stored()?;
                } else if !self.open_done {
                    self.load_open()?;
                } else {
                    return Ok(());
                }
            } else if !self.open_done {
                self.load_open()?;
            } else if !self.stored_done {
                self.load_stored()?;
            } else {
                return Ok(());
            }
        }
        Ok(())
    }

    fn load_open(&mut self) -> EngineResult<()> {
        self.open_done = true;
        if let Some(o) = &self.open {
            self.buf.clear();
            self.buf.extend_from_slice(&o.bytes);
            let first = o.first_ts;
            self.index(first)?;
        }
        Ok(())
    }

    /// Reads the block under the iterator and moves the iterator on.
    fn load_stored(&mut self) -> EngineResult<()> {
        let stored_below = self.open.as_ref().map(|o| o.first_ts);
        let (first, v) = match (self.it.key(), self.it.value()) {
            (Some(k), Some(v)) if k.starts_with(&self.prefix) => {
                (keys::record_key_ts(k).ok_or_else(corrupt)?, v)
            }
            _ => {
                self.stored_done = true;
                return self
                    .it
                    .status()
                    .map_err(EngineError::rocks("reading record blocks"));
            }
        };
        if self.asc && (first > self.hi || stored_below.is_some_and(|b| first >= b)) {
            self.stored_done = true;
            return Ok(());
        }
        self.buf.clear();
        self.buf.extend_from_slice(v);
        if self.asc {
            self.it.next();
        } else {
            // Older blocks hold nothing in range once this one starts at or below `lo`.
            if first <= self.lo {
                self.stored_done = true;
            }
            self.it.prev();
        }
        self.index(first)
    }

    fn index(&mut self, first: i64) -> EngineResult<()> {
        index_block(first, &self.buf, &mut self.recs)?;
        let (lo, hi) = (self.lo, self.hi);
        self.recs.retain(|r| r.0 >= lo && r.0 <= hi);
        if !self.asc {
            self.recs.reverse();
        }
        Ok(())
    }
}

/// Oldest and newest record timestamps of one series (`None` without records).
pub(crate) fn series_bounds(
    it: &mut DBRawIteratorWithThreadMode<'_, DB>,
    bid: u32,
    sid: u32,
    open: Option<&OpenBlock>,
) -> EngineResult<Option<(i64, i64)>> {
    let prefix = keys::series_prefix(bid, sid);
    it.seek(prefix);
    let first_stored = match it.key() {
        Some(k) if k.starts_with(&prefix) => Some(keys::record_key_ts(k).ok_or_else(corrupt)?),
        _ => None,
    };
    it.status()
        .map_err(EngineError::rocks("reading record blocks"))?;
    if let Some(o) = open {
        let first = first_stored.map_or(o.first_ts, |f| f.min(o.first_ts));
        return Ok(Some((first, o.last_ts)));
    }
    let Some(first) = first_stored else {
        return Ok(None);
    };
    it.seek_for_prev(keys::prefix_end(&prefix));
    let mut last = first;
    if let (Some(k), Some(v)) = (it.key(), it.value()) {
        if k.starts_with(&prefix) {
            let block_first = keys::record_key_ts(k).ok_or_else(corrupt)?;
            for r in BlockIter::new(block_first, v) {
                last = r?.0;
            }
        }
    }
    it.status()
        .map_err(EngineError::rocks("reading record blocks"))?;
    Ok(Some((first, last)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_roundtrip_and_insert_in_order() {
        let mut b = OpenBlock::new(1000, b"a");
        b.append(1010, b"bb");
        b.append(1500, b"");
        assert_eq!(b.len, 3);
        assert_eq!(b.last_record(), b"");
        let recs: Vec<(i64, Vec<u8>)> = b
            .records()
            .map(|r| r.map(|(t, v)| (t, v.to_vec())))
            .collect::<EngineResult<_>>()
            .unwrap();
        assert_eq!(
            recs,
            vec![
                (1000, b"a".to_vec()),
                (1010, b"bb".to_vec()),
                (1500, vec![])
            ]
        );
        assert!(!b.insert(1200, b"c").unwrap());
        assert!(b.insert(1010, b"B").unwrap());
        let ts: Vec<i64> = b.records().map(|r| r.unwrap().0).collect();
        assert_eq!(ts, [1000, 1010, 1200, 1500]);
        assert_eq!(b.last_record(), b"");
        // Stored form = what encode_block makes of the same records.
        let again = encode_block(b.records().map(|r| r.unwrap()));
        assert_eq!(again, b.bytes);
    }

    #[test]
    fn chunks_cover_in_order() {
        let recs: Vec<(i64, Vec<u8>)> = (0..(BLOCK_RECORDS as i64 * 2 + 3))
            .map(|i| (i * 7 - 50, vec![i as u8]))
            .collect();
        let chunks = chunk(&recs);
        assert_eq!(chunks.len(), 3);
        let back: Vec<(i64, Vec<u8>)> = chunks
            .iter()
            .flat_map(|(k, b)| BlockIter::new(*k, b).map(|r| r.map(|(t, v)| (t, v.to_vec()))))
            .collect::<EngineResult<_>>()
            .unwrap();
        assert_eq!(back, recs);
    }

    /// Golden bytes: the persisted block encoding must not change silently.
    #[test]
    fn block_golden_bytes() {
        let b = encode_block([(1000, &b"xy"[..]), (1010, &b"z"[..]), (990, &b""[..])]);
        assert_eq!(b, [0, 2, b'x', b'y', 20, 1, b'z', 39, 0]);
    }

    #[test]
    fn corrupt_blocks_are_errors() {
        assert!(BlockIter::new(0, &[0, 5, 1]).next().unwrap().is_err());
        let mut v = Vec::new();
        assert!(index_block(0, &[0x80], &mut v).is_err());
    }
}
