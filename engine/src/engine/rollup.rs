//! Rollup windows: how the levels compose, and which windows live only in memory.
//!
//! Definitions (each row is a function of the raw rows alone):
//! - a 15-minute row is its window's raw points pushed in timestamp order, except that
//!   a late point (older than the series' newest, replacing nothing) is merged into the
//!   row it falls in, in log order (one read instead of rescanning a dense window);
//! - an hour row is the fold (Chan's merge, in window order) of its 15-minute rows;
//! - a day row is the fold of its hour rows.
//!
//! Persisted: every window except each series' newest window per level (the three
//! windows holding its newest timestamp); a newest 15-minute window that took a late
//! point is persisted too, rewritten in every batch that changes it, since raw rows
//! would not rebuild its bits. Those change with nearly every record; they
//! live here, in [`SeriesRoll`], and a row is written once, when its series moves past
//! it. At 10 s sampling that turns three rollup writes per record into one per ~90
//! records. Because the definitions fix the order of every floating-point step, a replica
//! that rebuilt this memory at open ([`rebuild`]) holds the same bits as one that never
//! stopped, so replicas keep identical content.

use super::blocks::{for_each_record, OpenBlock};
use super::cf;
use super::load::decode_rollup;
use crate::aggregate::RollupLevel;
use crate::error::{EngineError, EngineResult};
use crate::keys;
use crate::record::decode_all;
use crate::stats::Stats;
use crate::value::FieldType;
use rocksdb::DB;
use std::collections::BTreeMap;

/// One rollup row: per field id, its statistics (fields in order of first appearance).
pub(crate) type Row = Vec<(u16, Stats)>;

/// The in-memory rollup windows of one series (all empty while it has no records).
#[derive(Clone, Debug, Default)]
pub(crate) struct SeriesRoll {
    /// The newest 15-minute window.
    pub(crate) m15: Row,
    /// Fold of the (persisted) 15-minute rows of the newest hour before the newest window.
    pub(crate) h1_closed: Row,
    /// Fold of the (persisted) hour rows of the newest day before the newest hour.
    pub(crate) d1_closed: Row,
    /// The newest 15-minute window took a late point, so its row is also stored and
    /// kept current (raw rows in timestamp order would not rebuild the same bits).
    pub(crate) m15_stored: bool,
}

/// The newest window of each level of one series: (window start, row), finest first.
pub(crate) type OpenRows = [(i64, Row); 3];

impl SeriesRoll {
    /// The rows of the three newest windows, given the series' newest timestamp.
    pub(crate) fn open_rows(&self, last_ts: i64) -> OpenRows {
        let m15 = self.m15.clone();
        let h1 = merged(&self.h1_closed, &m15);
        let d1 = merged(&self.d1_closed, &h1);
        [
            (RollupLevel::M15.window_start(last_ts), m15),
            (RollupLevel::H1.window_start(last_ts), h1),
            (RollupLevel::D1.window_start(last_ts), d1),
        ]
    }

    /// Converts one field's statistics to float (the field was promoted).
    pub(crate) fn promote(&mut self, fid: u16) {
        for row in [&mut self.m15, &mut self.h1_closed, &mut self.d1_closed] {
            for (f, s) in row.iter_mut() {
                if *f == fid {
                    *s = s.to_type(FieldType::Float);
                }
            }
        }
    }
}

/// Pushes one record's numeric values into a row.
pub(crate) fn push_points(row: &mut Row, ts: i64, nums: &[(u16, crate::value::Num)]) {
    for (fid, n) in nums {
        match row.iter_mut().find(|(f, _)| f == fid) {
            Some((_, s)) => s.push(ts, *n),
            None => row.push((*fid, Stats::single(ts, *n))),
        }
    }
}

/// Merges `other` into `into`, field by field.
pub(crate) fn merge_row(into: &mut Row, other: &[(u16, Stats)]) {
    for (f, s) in other {
        match into.iter_mut().find(|(g, _)| g == f) {
            Some((_, t)) => t.merge(s),
            None => into.push((*f, *s)),
        }
    }
}

/// `a` merged with `b`.
pub(crate) fn merged(a: &Row, b: &Row) -> Row {
    let mut out = a.clone();
    merge_row(&mut out, b);
    out
}

/// Every field in its registry type (a promoted field's old integer statistics as floats).
pub(crate) fn to_types(row: &mut Row, types: &[FieldType]) {
    for (f, s) in row.iter_mut() {
        let ty = types.get(*f as usize).copied().unwrap_or(FieldType::Float);
        *s = s.to_type(ty);
    }
}

/// The level whose windows are made of `level`'s windows.
pub(crate) fn parent(level: RollupLevel) -> Option<RollupLevel> {
    match level {
        RollupLevel::M15 => Some(RollupLevel::H1),
        RollupLevel::H1 => Some(RollupLevel::D1),
        RollupLevel::D1 => None,
    }
}

/// The level `level`'s windows are made of (`None`: raw rows).
pub(crate) fn child(level: RollupLevel) -> Option<RollupLevel> {
    match level {
        RollupLevel::M15 => None,
        RollupLevel::H1 => Some(RollupLevel::M15),
        RollupLevel::D1 => Some(RollupLevel::H1),
    }
}

/// Pushes raw records (timestamp order) into a row, each value in its field's type.
pub(crate) fn row_from_records<'a>(
    rows: impl IntoIterator<Item = (i64, &'a [u8])>,
    types: &[FieldType],
) -> EngineResult<Row> {
    let mut out: Row = Vec::new();
    for (ts, v) in rows {
        let fields =
            decode_all(v).ok_or_else(|| EngineError::Corrupt("undecodable record".into()))?;
        for (fid, val) in fields {
            let Some(n) = val.as_num() else { continue };
            let ty = types.get(fid as usize).copied().unwrap_or(FieldType::Float);
            let n = n.to_type(ty);
            match out.iter_mut().find(|(f, _)| *f == fid) {
                Some((_, s)) => s.push(ts, n),
                None => out.push((fid, Stats::single(ts, n))),
            }
        }
    }
    Ok(out)
}

/// Persisted rows of one series and level with window starts in `[from, to)`, in order.
pub(crate) fn stored_rows(
    db: &DB,
    bid: u32,
    sid: u32,
    level: RollupLevel,
    from: i64,
    to: i64,
) -> EngineResult<BTreeMap<i64, Row>> {
    let mut out = BTreeMap::new();
    if from >= to {
        return Ok(out);
    }
    let mut ro = rocksdb::ReadOptions::default();
    ro.set_iterate_upper_bound(keys::rollup_key(bid, sid, level as u8, to).to_vec());
    let mut it = db.raw_iterator_cf_opt(cf(db, keys::CF_ROLLUPS)?, ro);
    it.seek(keys::rollup_key(bid, sid, level as u8, from));
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let ws = keys::rollup_key_ts(k).ok_or_else(|| EngineError::Corrupt("rollup key".into()))?;
        let row = decode_rollup(v).ok_or_else(|| EngineError::Corrupt("rollup row".into()))?;
        out.insert(ws, row);
        it.next();
    }
    it.status()
        .map_err(EngineError::rocks("reading rollup rows"))?;
    Ok(out)
}

/// Folds rows in window order.
pub(crate) fn fold<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Row {
    let mut acc = Row::new();
    for r in rows {
        merge_row(&mut acc, r);
    }
    acc
}

/// Rebuilds a series' in-memory windows from the database (at open): the newest 15
/// minutes from raw rows, the closed parts of the newest hour and day from their rows.
pub(crate) fn rebuild(
    db: &DB,
    bid: u32,
    sid: u32,
    open: Option<&OpenBlock>,
    types: &[FieldType],
) -> EngineResult<SeriesRoll> {
    let Some(open) = open else {
        return Ok(SeriesRoll::default());
    };
    let last_ts = open.last_ts;
    let (m, h, d) = (
        RollupLevel::M15.window_start(last_ts),
        RollupLevel::H1.window_start(last_ts),
        RollupLevel::D1.window_start(last_ts),
    );
    // A stored newest window (it took a late point) is current; else raw rows rebuild it.
    let stored = stored_rows(db, bid, sid, RollupLevel::M15, m, m.saturating_add(1))?;
    let (m15, m15_stored) = match stored.into_values().next() {
        Some(row) => (row, true),
        None => {
            // The window's closed blocks, then the open block (whose stored copy may be
            // stale, so it comes from memory).
            let mut raw: Vec<(i64, Vec<u8>)> = Vec::new();
            let mut it = db.raw_iterator_cf(cf(db, keys::CF_SERIES)?);
            let to = m.saturating_add(RollupLevel::M15.len_ms() - 1);
            for_each_record(&mut it, bid, sid, Some(open), m, to, &mut |t, v| {
                raw.push((t, v.to_vec()));
                Ok(true)
            })?;
            let row = row_from_records(raw.iter().map(|(t, v)| (*t, v.as_slice())), types)?;
            (row, false)
        }
    };
    let mut h1_closed = fold(stored_rows(db, bid, sid, RollupLevel::M15, h, m)?.values());
    to_types(&mut h1_closed, types);
    let mut d1_closed = fold(stored_rows(db, bid, sid, RollupLevel::H1, d, h)?.values());
    to_types(&mut d1_closed, types);
    Ok(SeriesRoll {
        m15,
        h1_closed,
        d1_closed,
        m15_stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Num;

    #[test]
    fn open_rows_compose_finest_first() {
        let mut r = SeriesRoll::default();
        r.h1_closed.push((0, Stats::single(1, Num::I(1))));
        r.d1_closed.push((0, Stats::single(0, Num::I(5))));
        r.m15.push((0, Stats::single(900_001, Num::I(3))));
        let rows = r.open_rows(900_001);
        assert_eq!(rows[0].0, 900_000);
        assert_eq!(rows[1].0, 0);
        assert_eq!(rows[2].0, 0);
        assert_eq!(rows[0].1[0].1.count, 1);
        assert_eq!(rows[1].1[0].1.count, 2);
        assert_eq!(rows[2].1[0].1.count, 3);
        assert_eq!(rows[2].1[0].1.sum, Num::I(9));
        assert_eq!(rows[2].1[0].1.first, Num::I(5));
        assert_eq!(rows[2].1[0].1.last, Num::I(3));
    }
}
