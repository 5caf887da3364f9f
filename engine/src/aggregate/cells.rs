//! One group's window × field cells, filled from raw points and rollup rows.
//!
//! Mergeable aggregates keep one [`Stats`] per cell: raw points are pushed, rollup rows
//! merged, with the same rules, so both paths give identical count, min, max, first and
//! last (and sums, means and deviations equal up to float rounding). median and mode
//! keep every value of the cell instead.

use super::plan::{Locator, Plan};
use super::reduce::{self, Out};
use super::{AggSource, FieldRef, RollupLevel};
use crate::error::QueryError;
use crate::query::AggType;
use crate::stats::Stats;
use crate::value::Num;

/// What one group read, before aggregation.
pub(super) struct Cells {
    windows: usize,
    fields: usize,
    /// Mergeable aggregates: `stats[window * fields + field]`.
    stats: Vec<Option<Stats>>,
    /// median and mode: every value read, with its window and field.
    values: Vec<CellValue>,
    /// Whether any selected field has a point in the read range (fill=null returns
    /// windows only for groups with data).
    pub any_point: bool,
}

#[derive(Clone, Copy, Debug)]
struct CellValue {
    window: u32,
    field: u32,
    ts: i64,
    value: Num,
}

impl Cells {
    /// Reads the series of one group. `mergeable` chooses statistics (and rollups, when
    /// the plan has rollup segments) over keeping values.
    pub fn read(
        source: &dyn AggSource,
        series: &[u32],
        plan: &Plan,
        windows: usize,
        mergeable: bool,
    ) -> Result<Cells, QueryError> {
        let fields = source.fields();
        let mut cells = Cells {
            windows,
            fields: fields.len(),
            stats: if mergeable {
                vec![None; windows * fields.len()]
            } else {
                Vec::new()
            },
            values: Vec::new(),
            any_point: false,
        };
        if !fields.iter().any(|f| f.ty.is_numeric()) {
            return Ok(cells);
        }
        for &sid in series {
            let mut locate = Locator::new(&plan.raw);
            for &(from, to) in &plan.raw_calls {
                source.raw(sid, from, to, &mut |ts, vals| {
                    if let Some(w) = locate.window_of(ts) {
                        cells.push_point(fields, w, ts, vals);
                    }
                })?;
            }
            if !mergeable {
                continue;
            }
            for (li, level) in RollupLevel::ALL.into_iter().enumerate() {
                let mut locate = Locator::new(&plan.rollups[li]);
                for &(from, to) in &plan.rollup_calls[li] {
                    source.rollups(sid, level, from, to, &mut |ws, stats| {
                        if let Some(w) = locate.window_of(ws) {
                            cells.merge_row(fields, w, stats);
                        }
                    })?;
                }
            }
        }
        Ok(cells)
    }

    fn push_point(&mut self, fields: &[FieldRef], window: u32, ts: i64, vals: &[Option<Num>]) {
        for (fi, (v, f)) in vals.iter().zip(fields).enumerate() {
            let Some(n) = v else { continue };
            if !f.ty.is_numeric() {
                continue;
            }
            let n = n.to_type(f.ty);
            self.any_point = true;
            if self.stats.is_empty() {
                self.values.push(CellValue {
                    window,
                    field: fi as u32,
                    ts,
                    value: n,
                });
                continue;
            }
            match &mut self.stats[window as usize * self.fields + fi] {
                Some(s) => s.push(ts, n),
                slot => *slot = Some(Stats::single(ts, n)),
            }
        }
    }

    fn merge_row(&mut self, fields: &[FieldRef], window: u32, row: &[Option<Stats>]) {
        for (fi, (st, f)) in row.iter().zip(fields).enumerate() {
            let Some(st) = st else { continue };
            if st.count == 0 || !f.ty.is_numeric() {
                continue;
            }
            self.any_point = true;
            match &mut self.stats[window as usize * self.fields + fi] {
                Some(s) => s.merge(st),
                slot => *slot = Some(st.to_type(f.ty)),
            }
        }
    }

    /// The aggregate of every cell, `results[window * fields + field]`; `None` where the
    /// cell has no point.
    pub fn results(mut self, agg: AggType, fields: &[FieldRef]) -> Vec<Option<Out>> {
        if agg.mergeable() {
            return self
                .stats
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.as_ref()
                        .and_then(|s| reduce::from_stats(agg, fields[i % self.fields].ty, s))
                })
                .collect();
        }
        let mut out = vec![None; self.windows * self.fields];
        self.values.sort_unstable_by(|a, b| {
            (a.window, a.field)
                .cmp(&(b.window, b.field))
                .then(a.value.cmp_total(b.value))
                .then(a.ts.cmp(&b.ts))
        });
        let mut cell: Vec<(i64, Num)> = Vec::new();
        let mut i = 0;
        while i < self.values.len() {
            let (w, f) = (self.values[i].window, self.values[i].field);
            cell.clear();
            while i < self.values.len() && (self.values[i].window, self.values[i].field) == (w, f) {
                cell.push((self.values[i].ts, self.values[i].value));
                i += 1;
            }
            let ty = fields[f as usize].ty;
            out[w as usize * self.fields + f as usize] = match agg {
                AggType::Mode => reduce::mode(&cell).map(|n| Out::from_num(n.to_type(ty))),
                _ => reduce::median(&cell.iter().map(|c| c.1).collect::<Vec<_>>()),
            };
        }
        out
    }
}
