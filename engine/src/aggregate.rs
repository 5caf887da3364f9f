//! Aggregated bucket reads: windows, aggregates, transforms and fill, with InfluxDB 1.x
//! semantics (see tests/golden/SEMANTICS.md, the contract).
//!
//! Data flows in through an [`AggSource`]: the engine hands over the series selected by
//! the tag filters, raw points of a series in a time range, and rollup rows (mergeable
//! [`Stats`] per fixed UTC window). Mergeable aggregates read rollups for the parts of
//! each window that lie on a rollup grid and raw points for the ragged edges; median
//! and mode read raw points. [`aggregate_raw_only`] reads raw points for everything, the
//! reference the rollup path must match.
//!
//! Submodules, in the order data takes:
//! - `windows`: window labels and ranges for fixed and calendar windows in a zone (DST).
//! - `plan`: splits each window's range into rollup rows of each level and raw edges.
//! - `cells`: reads one group's series into per window, per field statistics or values.
//! - `reduce`: one cell's aggregate (result types, median, the mode tie rule).
//! - `transforms`: transforms over one group's window series.
//! - `run`: the read itself: range, groups, fill, rows.

mod cells;
mod plan;
mod reduce;
mod run;
mod transforms;
mod windows;

pub use run::{aggregate, aggregate_raw_only, aggregate_with, AGG_CELLS_MAX};
pub use windows::{Span, Windows};

use crate::error::QueryError;
use crate::stats::Stats;
use crate::value::{FieldType, Num, Value};

/// Fixed UTC rollup levels maintained on apply. Persisted (rollup keys): append-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum RollupLevel {
    M15 = 0,
    H1 = 1,
    D1 = 2,
}

impl RollupLevel {
    /// All levels, finest first.
    pub const ALL: [RollupLevel; 3] = [RollupLevel::M15, RollupLevel::H1, RollupLevel::D1];

    /// Window length in ms.
    pub fn len_ms(self) -> i64 {
        match self {
            RollupLevel::M15 => 15 * 60_000,
            RollupLevel::H1 => 3_600_000,
            RollupLevel::D1 => 86_400_000,
        }
    }

    /// Start of the UTC window holding `ts`.
    pub fn window_start(self, ts: i64) -> i64 {
        ts - ts.rem_euclid(self.len_ms())
    }

    /// Decodes the persisted tag.
    pub fn from_u8(tag: u8) -> Option<RollupLevel> {
        RollupLevel::ALL.get(tag as usize).copied()
    }
}

/// One series selected by the read's tag filters.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesRef {
    pub id: u32,
    /// Tag name → value for this series (every tag of the bucket).
    pub tags: Vec<(String, String)>,
}

impl SeriesRef {
    /// Value of one tag ("" when the series has none).
    pub fn tag(&self, name: &str) -> &str {
        self.tags
            .iter()
            .find(|(t, _)| t == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// One selected field: its name and its type in the bucket's registry.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldRef {
    pub name: String,
    pub ty: FieldType,
}

/// What the engine provides to an aggregated read. Implementations read one consistent
/// view of the state (a RocksDB snapshot).
pub trait AggSource {
    /// The series selected by the tag filters, ordered by id.
    fn series(&self) -> &[SeriesRef];

    /// The selected fields, in output order.
    fn fields(&self) -> &[FieldRef];

    /// Calls `f(ts, values)` for each raw point of `series` with `from <= ts < to`, in
    /// ascending ts; `values[i]` is field `i` of [`AggSource::fields`] when numeric.
    fn raw(
        &self,
        series: u32,
        from: i64,
        to: i64,
        f: &mut dyn FnMut(i64, &[Option<Num>]),
    ) -> Result<(), QueryError>;

    /// Calls `f(window_start, stats)` for each rollup row of `series` at `level` with
    /// `from <= window_start < to`, ascending; `stats[i]` is field `i`, already in the
    /// field's current type. Windows without points have no row.
    fn rollups(
        &self,
        series: u32,
        level: RollupLevel,
        from: i64,
        to: i64,
        f: &mut dyn FnMut(i64, &[Option<Stats>]),
    ) -> Result<(), QueryError>;

    /// Oldest and newest timestamp of the selected series (bounds an open-ended read).
    /// The default walks the raw points; the engine answers with two seeks per series.
    fn time_range(&self) -> Result<Option<(i64, i64)>, QueryError> {
        let mut range: Option<(i64, i64)> = None;
        for s in self.series() {
            self.raw(s.id, i64::MIN, i64::MAX, &mut |ts, _| {
                range = Some(match range {
                    None => (ts, ts),
                    Some((a, b)) => (a.min(ts), b.max(ts)),
                });
            })?;
        }
        Ok(range)
    }
}

/// Result of an aggregated read: one row per window (and group).
#[derive(Clone, Debug, PartialEq)]
pub struct AggRows {
    /// The tag rows are grouped by, if any.
    pub group_by: Option<String>,
    /// Output field names, in the order of each row's `values`.
    pub fields: Vec<String>,
    /// Sorted by group value, then ts.
    pub rows: Vec<AggRow>,
}

/// One window of one group.
#[derive(Clone, Debug, PartialEq)]
pub struct AggRow {
    /// Window label (its start, epoch ms).
    pub ts: i64,
    /// Group tag value when grouped.
    pub group: Option<String>,
    /// One per field; `None` is null (no result, empty window, or NaN).
    pub values: Vec<Option<Value>>,
}
