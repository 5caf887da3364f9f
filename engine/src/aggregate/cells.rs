//! Per group, field and window aggregation, from rollups where the window allows and from
//! raw points elsewhere.
//!
//! A window's effective range `[a, b)` (the window clipped to the read range) is split on
//! the coarsest rollup grid that fits inside it: the aligned middle is read from rollup
//! rows, the ragged edges from raw points. Reads are range calls per series: adjacent
//! raw segments coalesce into one call, and each rollup level is read once over the span
//! its segments cover.

use super::transforms::{apply_transform, Out};
use super::windows::Windows;
use super::{AggRow, AggRows, AggSource, RollupLevel};
use crate::error::QueryError;
use crate::query::{AggSpec, AggType, Fill, ReadQuery};
use crate::stats::Stats;
use crate::value::{FieldType, Num, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// Bound on group × field × window cells one read may hold in memory.
pub const AGG_CELLS_MAX: usize = 20_000_000;

/// Where one piece of a window's range is read from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Src {
    Raw,
    Rollup(RollupLevel),
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    from: i64,
    to: i64,
    src: Src,
    window: usize,
}

/// One group's accumulators: per field, per window.
struct GroupAcc {
    stats: Vec<Vec<Option<Stats>>>,
    /// (ts, series, value) per field and window, for median and mode.
    values: Vec<Vec<Vec<(i64, u32, Num)>>>,
    any_point: bool,
}

/// Aggregates through rollups where possible.
pub fn aggregate(
    query: &ReadQuery,
    spec: &AggSpec,
    source: &dyn AggSource,
) -> Result<AggRows, QueryError> {
    aggregate_with(query, spec, source, true)
}

/// Aggregates; with `use_rollups` false every window is computed from raw points (used by
/// tests to prove both paths agree).
pub fn aggregate_with(
    query: &ReadQuery,
    spec: &AggSpec,
    source: &dyn AggSource,
    use_rollups: bool,
) -> Result<AggRows, QueryError> {
    let fields = source.fields();
    let out_fields: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
    let empty = AggRows {
        group_by: spec.group_by.clone(),
        fields: out_fields.clone(),
        rows: Vec::new(),
    };
    // Unbounded reads are bounded by the data itself.
    let (mut lo, mut hi) = (query.min_ts, query.max_ts);
    if lo == i64::MIN || hi == i64::MAX {
        match source.time_range()? {
            Some((dlo, dhi)) => {
                lo = lo.max(dlo);
                hi = hi.min(dhi);
            }
            None => return Ok(empty),
        }
    }
    if lo > hi || source.series().is_empty() || fields.is_empty() {
        return Ok(empty);
    }
    let w = Windows::new(spec.window, spec.tz);
    let back = spec.transform.is_some_and(|t| t.reads_one_window_back());
    let read_lo = if back { w.one_back(lo) } else { lo };
    let read_hi = hi.saturating_add(1);
    let windows = w.enumerate(read_lo, hi)?;
    let mut group_names: BTreeSet<String> = BTreeSet::new();
    for s in source.series() {
        group_names.insert(
            spec.group_by
                .as_deref()
                .map(|g| s.tag(g).to_string())
                .unwrap_or_default(),
        );
    }
    let cells = windows
        .len()
        .saturating_mul(fields.len())
        .saturating_mul(group_names.len());
    if cells > AGG_CELLS_MAX {
        return Err(QueryError::BadParam {
            param: "agg",
            message: format!("{} windows × {} fields × {} groups is more than {AGG_CELLS_MAX} cells; use a longer window or a shorter range", windows.len(), fields.len(), group_names.len()),
        });
    }
    let mergeable = spec.agg_type.mergeable();
    let segments = plan_segments(&windows, read_lo, read_hi, mergeable && use_rollups);
    let mut groups: BTreeMap<String, GroupAcc> = BTreeMap::new();
    for s in source.series() {
        let gname = spec
            .group_by
            .as_deref()
            .map(|g| s.tag(g).to_string())
            .unwrap_or_default();
        let acc = groups.entry(gname).or_insert_with(|| GroupAcc {
            stats: vec![vec![None; windows.len()]; fields.len()],
            values: if mergeable {
                Vec::new()
            } else {
                vec![vec![Vec::new(); windows.len()]; fields.len()]
            },
            any_point: false,
        });
        read_series(source, s.id, &segments, &windows, mergeable, acc)?;
    }
    let mut rows = Vec::new();
    for (gname, acc) in groups {
        if !acc.any_point {
            continue;
        }
        // Per field: the window results in time order (`None`: null under fill=null).
        let mut per_field: Vec<Vec<(i64, Option<Out>)>> = Vec::with_capacity(fields.len());
        for (fi, f) in fields.iter().enumerate() {
            let mut series = Vec::new();
            for (wi, (ws, _)) in windows.iter().enumerate() {
                let v = finalize(
                    spec.agg_type,
                    f.ty,
                    acc.stats[fi][wi].as_ref(),
                    acc.values.get(fi).map(|v| &v[wi]),
                );
                match (v, spec.fill) {
                    (Some(v), _) => series.push((*ws, Some(v))),
                    (None, Fill::Null) => {
                        let zero = (spec.agg_type == AggType::Count).then_some(Out::I(0));
                        series.push((*ws, zero));
                    }
                    (None, Fill::None) => {}
                }
            }
            per_field.push(match spec.transform {
                Some(t) => apply_transform(t, &series),
                None => series,
            });
        }
        let mut labels: BTreeMap<i64, Vec<Option<Value>>> = BTreeMap::new();
        for (fi, series) in per_field.iter().enumerate() {
            for (ts, v) in series {
                let row = labels
                    .entry(*ts)
                    .or_insert_with(|| vec![None; fields.len()]);
                row[fi] = v.and_then(Out::to_value);
            }
        }
        let group = spec.group_by.as_ref().map(|_| gname.clone());
        rows.extend(labels.into_iter().map(|(ts, values)| AggRow {
            ts,
            group: group.clone(),
            values,
        }));
    }
    Ok(AggRows {
        group_by: spec.group_by.clone(),
        fields: out_fields,
        rows,
    })
}

/// Splits every window's effective range into rollup middles and raw edges.
fn plan_segments(
    windows: &[(i64, i64)],
    read_lo: i64,
    read_hi: i64,
    rollups: bool,
) -> Vec<Segment> {
    let mut segs = Vec::new();
    for (i, (ws, we)) in windows.iter().enumerate() {
        let (a, b) = ((*ws).max(read_lo), (*we).min(read_hi));
        if a >= b {
            continue;
        }
        let mut placed = false;
        if rollups {
            for level in [RollupLevel::D1, RollupLevel::H1, RollupLevel::M15] {
                let len = level.len_ms();
                let ca = a.div_euclid(len) * len + if a.rem_euclid(len) == 0 { 0 } else { len };
                let fb = b.div_euclid(len) * len;
                if ca < fb {
                    for (from, to, src) in [
                        (a, ca, Src::Raw),
                        (ca, fb, Src::Rollup(level)),
                        (fb, b, Src::Raw),
                    ] {
                        if from < to {
                            segs.push(Segment {
                                from,
                                to,
                                src,
                                window: i,
                            });
                        }
                    }
                    placed = true;
                    break;
                }
            }
        }
        if !placed {
            segs.push(Segment {
                from: a,
                to: b,
                src: Src::Raw,
                window: i,
            });
        }
    }
    segs
}

/// Reads one series into its group's accumulators.
fn read_series(
    source: &dyn AggSource,
    sid: u32,
    segments: &[Segment],
    windows: &[(i64, i64)],
    mergeable: bool,
    acc: &mut GroupAcc,
) -> Result<(), QueryError> {
    let window_of = |t: i64| -> Option<usize> {
        let i = windows.partition_point(|(s, _)| *s <= t);
        (i > 0 && t < windows[i - 1].1).then(|| i - 1)
    };
    // Raw: coalesce adjacent raw segments into one range call each.
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for s in segments.iter().filter(|s| s.src == Src::Raw) {
        match runs.last_mut() {
            Some(last) if last.1 == s.from => last.1 = s.to,
            _ => runs.push((s.from, s.to)),
        }
    }
    for (from, to) in runs {
        source.raw(sid, from, to, &mut |ts, vals| {
            let Some(wi) = window_of(ts) else { return };
            for (fi, v) in vals.iter().enumerate() {
                let Some(n) = v else { continue };
                acc.any_point = true;
                if mergeable {
                    match &mut acc.stats[fi][wi] {
                        Some(s) => s.push(ts, *n),
                        slot => *slot = Some(Stats::single(ts, *n)),
                    }
                } else {
                    acc.values[fi][wi].push((ts, sid, *n));
                }
            }
        })?;
    }
    // Rollups: one range call per level over the span of that level's segments.
    for level in RollupLevel::ALL {
        let segs: Vec<&Segment> = segments
            .iter()
            .filter(|s| s.src == Src::Rollup(level))
            .collect();
        let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
            continue;
        };
        source.rollups(sid, level, first.from, last.to, &mut |ws, stats| {
            let i = segs.partition_point(|s| s.from <= ws);
            if i == 0 || ws >= segs[i - 1].to {
                return;
            }
            let wi = segs[i - 1].window;
            for (fi, st) in stats.iter().enumerate() {
                let Some(st) = st else { continue };
                if st.count == 0 {
                    continue;
                }
                acc.any_point = true;
                match &mut acc.stats[fi][wi] {
                    Some(s) => s.merge(st),
                    slot => *slot = Some(*st),
                }
            }
        })?;
    }
    Ok(())
}

/// One window's aggregate; `None` when the window has no point for the field.
fn finalize(
    agg: AggType,
    ty: FieldType,
    stats: Option<&Stats>,
    values: Option<&Vec<(i64, u32, Num)>>,
) -> Option<Out> {
    let typed = |n: Num| Out::from_num(n.to_type(ty));
    match agg {
        AggType::Median | AggType::Mode => {
            let vals = values?;
            if vals.is_empty() {
                return None;
            }
            Some(if agg == AggType::Median {
                median(vals)
            } else {
                typed(mode(vals))
            })
        }
        _ => {
            let s = stats?;
            if s.count == 0 {
                return None;
            }
            Some(match agg {
                AggType::Count => Out::I(s.count as i64),
                AggType::Sum => typed(s.sum),
                AggType::Mean => Out::F(s.mean_value()),
                AggType::Stddev => Out::F(s.stddev()),
                AggType::Min => typed(s.min),
                AggType::Max => typed(s.max),
                AggType::Spread => typed(s.spread()),
                AggType::First => typed(s.first),
                AggType::Last => typed(s.last),
                AggType::Median | AggType::Mode => return None,
            })
        }
    }
}

fn median(vals: &[(i64, u32, Num)]) -> Out {
    let mut xs: Vec<Num> = vals.iter().map(|v| v.2).collect();
    xs.sort_by(|a, b| a.cmp_total(*b));
    let n = xs.len();
    if n % 2 == 1 {
        Out::F(xs[n / 2].as_f64())
    } else {
        let (lo, hi) = (xs[n / 2 - 1].as_f64(), xs[n / 2].as_f64());
        Out::F(lo + (hi - lo) / 2.0)
    }
}

/// Most frequent value with InfluxDB's tie rule (SEMANTICS.md, "Mode ties"): distinct
/// values from smallest to largest; a later value replaces the pick when it occurs more
/// often, or equally often (at least twice) with its earliest occurrence not later than
/// the pick's latest occurrence.
fn mode(vals: &[(i64, u32, Num)]) -> Num {
    let mut timed: Vec<(i64, u32, Num)> = vals.to_vec();
    timed.sort_by_key(|a| (a.0, a.1));
    // value -> (count, first position, last position), values in ascending order
    let mut stats: Vec<(Num, usize, usize, usize)> = Vec::new();
    let mut order: Vec<usize> = (0..timed.len()).collect();
    order.sort_by(|&a, &b| timed[a].2.cmp_total(timed[b].2).then(a.cmp(&b)));
    for &pos in &order {
        let v = timed[pos].2;
        match stats.last_mut() {
            Some(last) if last.0.cmp_total(v) == Ordering::Equal => {
                last.1 += 1;
                last.2 = last.2.min(pos);
                last.3 = last.3.max(pos);
            }
            _ => stats.push((v, 1, pos, pos)),
        }
    }
    let mut pick = stats[0];
    for s in &stats[1..] {
        if s.1 > pick.1 || (s.1 == pick.1 && s.1 >= 2 && s.2 <= pick.3) {
            pick = *s;
        }
    }
    pick.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(xs: &[i64]) -> i64 {
        let v: Vec<_> = xs
            .iter()
            .enumerate()
            .map(|(i, x)| (i as i64, 0, Num::I(*x)))
            .collect();
        match mode(&v) {
            Num::I(i) => i,
            Num::F(_) => unreachable!(),
        }
    }

    #[test]
    fn mode_tie_rule() {
        assert_eq!(m(&[3, 1, 3, 1, 2]), 3);
        assert_eq!(m(&[2, 2, 5, 5]), 2);
        assert_eq!(m(&[2, 5, 5, 2]), 5);
        assert_eq!(m(&[9, 4, 7]), 4);
    }

    #[test]
    fn median_even_and_odd() {
        let v = |xs: &[f64]| xs.iter().map(|x| (0, 0, Num::F(*x))).collect::<Vec<_>>();
        assert_eq!(median(&v(&[3.0, 1.0, 2.0])), Out::F(2.0));
        assert_eq!(median(&v(&[4.0, 1.0, 2.0, 3.0])), Out::F(2.5));
    }
}
