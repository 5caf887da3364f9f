//! The aggregated read: range, windows, groups, cells, fill, transform, rows.

use super::cells::Cells;
use super::plan::Plan;
use super::reduce::Out;
use super::transforms::{self, Point};
use super::windows::{Span, Windows};
use super::{AggRow, AggRows, AggSource, FieldRef};
use crate::error::QueryError;
use crate::query::{AggSpec, AggType, Fill, ReadQuery};
use crate::value::Value;
use std::collections::BTreeMap;

/// Bound on the window × field cells one group holds while it is aggregated (each is a
/// [`Stats`](crate::stats::Stats) of about 120 bytes, so this is about half a GB), and on
/// the group × window × field cells of a fill=null answer.
pub const AGG_CELLS_MAX: usize = 4_000_000;

/// Runs an aggregated read over `source`, reading rollups wherever they answer.
pub fn aggregate(
    query: &ReadQuery,
    spec: &AggSpec,
    source: &dyn AggSource,
) -> Result<AggRows, QueryError> {
    aggregate_with(query, spec, source, true)
}

/// The same read from raw points only, never from rollups: slower, and the reference
/// the rollup path must match (tests compare the two).
pub fn aggregate_raw_only(
    query: &ReadQuery,
    spec: &AggSpec,
    source: &dyn AggSource,
) -> Result<AggRows, QueryError> {
    aggregate_with(query, spec, source, false)
}

/// Runs an aggregated read; `use_rollups` false computes every window from raw points.
///
/// Non-numeric fields (booleans, strings, arrays) are not aggregated: their column is
/// null in every row, for count too (the source hands them over as `None`).
///
/// Memory: mergeable aggregates hold one statistics cell per window and field of one
/// group at a time (bounded by [`AGG_CELLS_MAX`]); median and mode hold every value of
/// one group in the range, as InfluxDB does.
pub fn aggregate_with(
    query: &ReadQuery,
    spec: &AggSpec,
    source: &dyn AggSource,
    use_rollups: bool,
) -> Result<AggRows, QueryError> {
    let fields = source.fields();
    let mut answer = AggRows {
        group_by: spec.group_by.clone(),
        fields: fields.iter().map(|f| f.name.clone()).collect(),
        rows: Vec::new(),
    };
    if source.series().is_empty() || fields.is_empty() {
        return Ok(answer);
    }
    let Some((min_ts, max_ts)) = read_bounds(query, source)? else {
        return Ok(answer);
    };
    let windows = Windows::new(spec.window, spec.tz);
    // Transforms that compare with the previous window read one window before min_ts
    // and keep what they compute there (SEMANTICS.md, "One window back").
    let read_from = match spec.transform {
        Some(t) if t.reads_one_window_back() => windows.one_back(min_ts).min(min_ts),
        _ => min_ts,
    };
    let spans = windows.spans(read_from, max_ts)?;
    let groups = groups(source, spec.group_by.as_deref());
    check_cells(spans.len(), fields.len(), groups.len(), spec.fill)?;
    let plan = Plan::new(&spans, use_rollups && spec.agg_type.mergeable());
    for (name, series) in groups {
        let cells = Cells::read(
            source,
            &series,
            &plan,
            spans.len(),
            spec.agg_type.mergeable(),
        )?;
        if !cells.any_point {
            continue;
        }
        let results = cells.results(spec.agg_type, fields);
        let group = spec.group_by.as_ref().map(|_| name);
        answer
            .rows
            .extend(group_rows(spec, fields, &spans, &results, group));
    }
    Ok(answer)
}

/// The inclusive range to read; an open end (`i64::MIN`/`i64::MAX`) is closed at the
/// data's oldest/newest point. `None` when nothing can match.
fn read_bounds(
    query: &ReadQuery,
    source: &dyn AggSource,
) -> Result<Option<(i64, i64)>, QueryError> {
    let (mut lo, mut hi) = (query.min_ts, query.max_ts);
    if lo > hi {
        return Ok(None);
    }
    if lo == i64::MIN || hi == i64::MAX {
        let Some((first, last)) = source.time_range()? else {
            return Ok(None);
        };
        lo = lo.max(first);
        hi = hi.min(last);
    }
    Ok((lo <= hi).then_some((lo, hi)))
}

/// Series ids per group, sorted by group value; one unnamed group without `group_by`.
fn groups(source: &dyn AggSource, group_by: Option<&str>) -> BTreeMap<String, Vec<u32>> {
    let mut groups: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for s in source.series() {
        let name = group_by.map(|g| s.tag(g).to_string()).unwrap_or_default();
        groups.entry(name).or_default().push(s.id);
    }
    groups
}

fn check_cells(windows: usize, fields: usize, groups: usize, fill: Fill) -> Result<(), QueryError> {
    let per_group = windows.saturating_mul(fields);
    let answer = match fill {
        Fill::Null => per_group.saturating_mul(groups),
        Fill::None => 0,
    };
    if per_group.max(answer) > AGG_CELLS_MAX {
        return Err(QueryError::BadParam {
            param: "agg",
            message: format!(
                "{windows} windows × {fields} fields{} are more than {AGG_CELLS_MAX} cells; use a longer window, a shorter range or fewer fields",
                if answer > per_group { format!(" × {groups} groups") } else { String::new() }
            ),
        });
    }
    Ok(())
}

/// The rows of one group: fill, then the transform, per field; a row for every window
/// where at least one field has an entry.
fn group_rows(
    spec: &AggSpec,
    fields: &[FieldRef],
    spans: &[Span],
    results: &[Option<Out>],
    group: Option<String>,
) -> Vec<AggRow> {
    let n_fields = fields.len();
    // window index → one value per field.
    let mut rows: BTreeMap<usize, Vec<Option<Value>>> = BTreeMap::new();
    for (fi, field) in fields.iter().enumerate() {
        let mut series: Vec<Point> = Vec::new();
        for (wi, span) in spans.iter().enumerate() {
            let value = match results.get(wi * n_fields + fi).copied().flatten() {
                Some(v) => Some(v),
                None if spec.fill == Fill::None => continue,
                // fill=null: an empty window is null, or 0 for count (numeric fields).
                None if spec.agg_type == AggType::Count && field.ty.is_numeric() => Some(Out::I(0)),
                None => None,
            };
            series.push(Point {
                window: wi,
                label: span.label,
                value,
            });
        }
        let entries: Vec<(usize, Option<Value>)> = match spec.transform {
            Some(t) => transforms::apply(t, &series)
                .into_iter()
                .map(|(w, v)| (w, v.to_value()))
                .collect(),
            None => series
                .into_iter()
                .map(|p| (p.window, p.value.and_then(Out::to_value)))
                .collect(),
        };
        for (wi, value) in entries {
            rows.entry(wi).or_insert_with(|| vec![None; n_fields])[fi] = value;
        }
    }
    rows.into_iter()
        .map(|(wi, values)| AggRow {
            ts: spans[wi].label,
            group: group.clone(),
            values,
        })
        .collect()
}
