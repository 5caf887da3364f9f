//! Every golden aggregation case (tests/golden/*.json, answers from InfluxDB 1.6.7 or the
//! calendar reference) through `thicket_engine::aggregate` with an in-memory source,
//! twice: composing rollups (15 min / 1 h / 1 d UTC rows computed from the records, as
//! the engine maintains them) and from raw points only. Both must give `expected`.
//!
//! A second test compares the two paths on denser synthetic data across windows, zones
//! and aggregates, where most of every window comes from rollup rows.
//!
//! The case helpers (`cases`, `parse_query`, `compare`) use only the case file and the
//! public answer type, so another golden test can copy them as they are.

use serde_json::Value as Json;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use thicket_engine::aggregate::{
    aggregate, aggregate_raw_only, AggRows, AggSource, FieldRef, RollupLevel, SeriesRef,
};
use thicket_engine::query::{AggSpec, ReadQuery};
use thicket_engine::stats::Stats;
use thicket_engine::value::{FieldType, Num, Value};
use thicket_engine::QueryError;

// ---------------------------------------------------------------------------------
// Case files and comparison (self-contained: copy freely).

/// Every case of every golden file, as (file name, case), files in name order.
fn cases() -> Vec<(String, Json)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("tests/golden exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{name}: {e}"));
        let all: Vec<Json> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.extend(all.into_iter().map(|c| (name.clone(), c)));
    }
    out
}

/// The case's `query` as Thinger query-string pairs, parsed like the API parses them.
fn parse_query(case: &Json) -> Result<ReadQuery, String> {
    let obj = case["query"]
        .as_object()
        .ok_or("case has no query object")?;
    let pairs: Vec<(String, String)> = obj
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), s)
        })
        .collect();
    ReadQuery::from_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| e.to_string())
}

/// Floats equal within the golden tolerance.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12
}

/// Compares an answer with the case's `expected` rows and `expected_types`; returns a
/// description of the first difference.
fn compare(case: &Json, got: &AggRows) -> Result<(), String> {
    let expected = case["expected"]
        .as_array()
        .ok_or("case has no expected array")?;
    let types = case["expected_types"]
        .as_object()
        .ok_or("case has no expected_types")?;
    let group_by = case["query"]["group_by"].as_str();
    let want_fields: BTreeSet<&str> = types.keys().map(|k| k.as_str()).collect();
    let got_fields: BTreeSet<&str> = got.fields.iter().map(|f| f.as_str()).collect();
    if want_fields != got_fields {
        return Err(format!("fields {got_fields:?}, expected {want_fields:?}"));
    }
    let group_of = |row: &Json| group_by.and_then(|g| row[g].as_str()).map(str::to_string);
    let mut want: Vec<&Json> = expected.iter().collect();
    want.sort_by_key(|r| (group_of(r), r["ts"].as_i64()));
    let mut rows = got.rows.clone();
    rows.sort_by(|a, b| (&a.group, a.ts).cmp(&(&b.group, b.ts)));
    if want.len() != rows.len() {
        let show = |v: Vec<(Option<String>, i64)>| format!("{v:?}");
        return Err(format!(
            "{} rows, expected {}:\n    got      {}\n    expected {}",
            rows.len(),
            want.len(),
            show(rows.iter().map(|r| (r.group.clone(), r.ts)).collect()),
            show(
                want.iter()
                    .map(|r| (group_of(r), r["ts"].as_i64().unwrap_or(0)))
                    .collect()
            ),
        ));
    }
    for (w, g) in want.iter().zip(&rows) {
        let at = format!("row {:?} ts {}", g.group, g.ts);
        if w["ts"].as_i64() != Some(g.ts) {
            return Err(format!("{at}: expected ts {}", w["ts"]));
        }
        if group_of(w) != g.group {
            return Err(format!("{at}: expected group {:?}", group_of(w)));
        }
        for (field, ty) in types {
            let pos = got
                .fields
                .iter()
                .position(|f| f == field)
                .ok_or(format!("no field {field}"))?;
            let (wv, gv) = (&w[field.as_str()], &g.values[pos]);
            match (ty.as_str().unwrap_or(""), wv, gv) {
                (_, Json::Null, None) => {}
                (_, Json::Null, Some(v)) => {
                    return Err(format!("{at} {field}: got {v:?}, expected null"))
                }
                (_, _, None) => return Err(format!("{at} {field}: got null, expected {wv}")),
                ("integer", _, Some(Value::Int(i))) if wv.as_i64() == Some(*i) => {}
                ("float", _, Some(Value::Float(f)))
                    if wv.as_f64().is_some_and(|e| close(e, *f)) => {}
                (_, _, Some(v)) => {
                    return Err(format!("{at} {field}: got {v:?}, expected {ty} {wv}"))
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// In-memory source: records per series, rollups computed from them.

/// Reads served, to check that the rollup path reads rollups.
#[derive(Default)]
struct Reads {
    raw_points: Cell<usize>,
    rollup_rows: Cell<usize>,
}

struct MemSource {
    series: Vec<SeriesRef>,
    fields: Vec<FieldRef>,
    /// Per series (by id): points ascending, one value per field.
    points: Vec<Vec<(i64, Vec<Option<Num>>)>>,
    /// Per series, per level (as [`RollupLevel::ALL`]): window start → stats per field.
    rollups: Vec<[BTreeMap<i64, Vec<Option<Stats>>>; 3]>,
    reads: Reads,
}

impl MemSource {
    /// `records` as (device, ts, field → value); `fields` selected in order.
    fn new(
        fields: Vec<FieldRef>,
        records: Vec<(String, i64, BTreeMap<String, Num>)>,
        keep: impl Fn(&str) -> bool,
    ) -> MemSource {
        let devices: BTreeSet<String> = records
            .iter()
            .map(|r| r.0.clone())
            .filter(|d| keep(d))
            .collect();
        let devices: Vec<String> = devices.into_iter().collect();
        let mut points: Vec<Vec<(i64, Vec<Option<Num>>)>> = vec![Vec::new(); devices.len()];
        for (device, ts, vals) in records {
            let Ok(id) = devices.binary_search(&device) else {
                continue;
            };
            let row = fields
                .iter()
                .map(|f| vals.get(&f.name).map(|n| n.to_type(f.ty)))
                .collect();
            points[id].push((ts, row));
        }
        let mut rollups = Vec::new();
        for pts in &mut points {
            pts.sort_by_key(|p| p.0);
            let mut levels: [BTreeMap<i64, Vec<Option<Stats>>>; 3] = Default::default();
            for (li, level) in RollupLevel::ALL.into_iter().enumerate() {
                for (ts, vals) in pts.iter() {
                    let row = levels[li]
                        .entry(level.window_start(*ts))
                        .or_insert_with(|| vec![None; vals.len()]);
                    for (slot, v) in row.iter_mut().zip(vals) {
                        if let Some(n) = v {
                            match slot {
                                Some(s) => s.push(*ts, *n),
                                None => *slot = Some(Stats::single(*ts, *n)),
                            }
                        }
                    }
                }
            }
            rollups.push(levels);
        }
        let series = devices
            .iter()
            .enumerate()
            .map(|(i, d)| SeriesRef {
                id: i as u32,
                tags: vec![("device".to_string(), d.clone())],
            })
            .collect();
        MemSource {
            series,
            fields,
            points,
            rollups,
            reads: Reads::default(),
        }
    }

    /// The source a golden case describes, with the query's field and tag selection.
    fn from_case(case: &Json, q: &ReadQuery) -> Result<MemSource, String> {
        let types = case["field_types"]
            .as_object()
            .ok_or("case has no field_types")?;
        let ty_of = |name: &str| match types.get(name).and_then(|t| t.as_str()) {
            Some("integer") => Some(FieldType::Int),
            Some("float") => Some(FieldType::Float),
            _ => None,
        };
        let names: Vec<String> = match &q.fields {
            Some(f) => f.clone(),
            None => types.keys().cloned().collect(),
        };
        let fields: Vec<FieldRef> = names
            .iter()
            .map(|n| {
                ty_of(n)
                    .map(|ty| FieldRef {
                        name: n.clone(),
                        ty,
                    })
                    .ok_or(format!("field {n} has no type"))
            })
            .collect::<Result<_, _>>()?;
        let mut records = Vec::new();
        for r in case["records"].as_array().ok_or("case has no records")? {
            let ts = r["ts"].as_i64().ok_or("record without ts")?;
            let device = r["device"].as_str().unwrap_or("").to_string();
            let mut vals = BTreeMap::new();
            for (k, v) in r.as_object().into_iter().flatten() {
                let n = match ty_of(k) {
                    Some(FieldType::Int) => v.as_i64().map(Num::I),
                    Some(_) => v.as_f64().map(Num::F),
                    None => None,
                };
                if let Some(n) = n {
                    vals.insert(k.clone(), n);
                }
            }
            records.push((device, ts, vals));
        }
        let tags = q.tags.clone();
        let keep = move |device: &str| {
            tags.iter().all(|(tag, vals)| {
                let v = if tag == "device" { device } else { "" };
                vals.iter().any(|x| x == v)
            })
        };
        Ok(MemSource::new(fields, records, keep))
    }
}

impl AggSource for MemSource {
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
        let pts = &self.points[series as usize];
        let start = pts.partition_point(|p| p.0 < from);
        for (ts, vals) in pts[start..].iter().take_while(|p| p.0 < to) {
            self.reads.raw_points.set(self.reads.raw_points.get() + 1);
            f(*ts, vals);
        }
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
        for (ws, stats) in self.rollups[series as usize][level as usize].range(from..to) {
            self.reads.rollup_rows.set(self.reads.rollup_rows.get() + 1);
            f(*ws, stats);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Tests.

type AggFn = fn(&ReadQuery, &AggSpec, &dyn AggSource) -> Result<AggRows, QueryError>;

const PATHS: [(&str, AggFn); 2] = [("rollups", aggregate), ("raw only", aggregate_raw_only)];

#[test]
fn golden_cases_through_aggregate() {
    let all = cases();
    assert!(all.len() >= 319, "only {} golden cases found", all.len());
    // file → (passed, failed, skipped)
    let mut per_file: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for (file, case) in &all {
        let counts = per_file.entry(file.clone()).or_default();
        let name = case["name"].as_str().unwrap_or("?");
        if let Some(quirk) = case.get("quirk") {
            // Reported, not required: InfluxDB behaviour an implementation may not copy.
            let ours = parse_query(case).and_then(|q| {
                let spec = q.agg.clone().ok_or("query has no agg")?;
                let source = MemSource::from_case(case, &q)?;
                compare(
                    case,
                    &aggregate(&q, &spec, &source).map_err(|e| e.to_string())?,
                )
            });
            let ours = ours.err().unwrap_or_else(|| "same answer".into());
            println!("skipped {file}: {name}: quirk: {quirk}\n  ours: {ours}");
            counts.2 += 1;
            continue;
        }
        let mut outcome = Ok(());
        for (path, run) in PATHS {
            let result = parse_query(case).and_then(|q| {
                let spec = q.agg.clone().ok_or("query has no agg")?;
                let source = MemSource::from_case(case, &q)?;
                let rows = run(&q, &spec, &source).map_err(|e| format!("error: {e}"))?;
                compare(case, &rows)
            });
            if let Err(e) = result {
                outcome = Err(format!("{file}: {name} ({path}): {e}"));
                break;
            }
        }
        match outcome {
            Ok(()) => counts.0 += 1,
            Err(e) => {
                counts.1 += 1;
                failures.push(e);
            }
        }
    }
    for (file, (passed, failed, skipped)) in &per_file {
        println!("{file}: {passed} passed, {failed} failed, {skipped} skipped");
    }
    assert!(
        failures.is_empty(),
        "{} golden cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Deterministic pseudo-random numbers (64-bit LCG), so failures reproduce.
struct Lcg(u64);

impl Lcg {
    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// The selected `fields` (`v` float, `n` integer) of three devices: a point every ~5 min
/// for two weeks across Madrid's spring switch, `n` past 2^53 on device c, some records
/// without a field, and a third of the points snapped to whole minutes, so devices
/// share timestamps (first/last ties).
fn synthetic(fields: &[&str]) -> MemSource {
    let mut rng = Lcg(7);
    let start: i64 = 1_711_152_000_000; // 2024-03-23T00:00:00Z
    let mut records = Vec::new();
    for device in ["a", "b", "c"] {
        let mut ts = start + rng.below(60) as i64 * 1_000;
        while ts < start + 14 * 86_400_000 {
            let mut vals = BTreeMap::new();
            if rng.below(10) > 0 {
                let v = rng.below(4000) as f64 / 8.0 - 100.0;
                vals.insert("v".to_string(), Num::F(v));
            }
            if rng.below(7) > 0 {
                let base = if device == "c" { 1i64 << 54 } else { 0 };
                vals.insert("n".to_string(), Num::I(base + rng.below(200) as i64 - 100));
            }
            let at = if rng.below(3) == 0 {
                ts - ts.rem_euclid(60_000)
            } else {
                ts
            };
            records.push((device.to_string(), at, vals));
            ts += (240 + rng.below(120) as i64) * 1_000;
        }
    }
    let fields = fields
        .iter()
        .map(|&name| FieldRef {
            name: name.to_string(),
            ty: if name == "n" {
                FieldType::Int
            } else {
                FieldType::Float
            },
        })
        .collect();
    MemSource::new(fields, records, |_| true)
}

/// Two answers agree: same rows, integers equal, floats equal when `exact` (selectors,
/// which pick a stored value), else within 1e-9 relative (sums depend on their order).
fn same_answer(a: &AggRows, b: &AggRows, exact: bool) -> Result<(), String> {
    if a.rows.len() != b.rows.len() {
        return Err(format!("{} rows vs {}", a.rows.len(), b.rows.len()));
    }
    for (x, y) in a.rows.iter().zip(&b.rows) {
        if (x.ts, &x.group) != (y.ts, &y.group) {
            return Err(format!(
                "row {:?} {} vs {:?} {}",
                x.group, x.ts, y.group, y.ts
            ));
        }
        for (vx, vy) in x.values.iter().zip(&y.values) {
            let same = match (vx, vy) {
                (Some(Value::Float(p)), Some(Value::Float(q))) if !exact => {
                    (p - q).abs() <= 1e-9 * p.abs().max(q.abs()) + 1e-9
                }
                _ => vx == vy,
            };
            if !same {
                return Err(format!("row {:?} {}: {vx:?} vs {vy:?}", x.group, x.ts));
            }
        }
    }
    Ok(())
}

#[test]
fn rollups_match_raw_points_on_synthetic_data() {
    // Device c's `n` sits past 2^53, where a float deviation is only good to a few units
    // whatever the merge order (so is InfluxDB's): stddev reads `v` only.
    let with_n = synthetic(&["v", "n"]);
    let only_v = synthetic(&["v"]);
    let min_ts: i64 = 1_711_152_000_000 + 7 * 3_600_000 + 123_456; // 07:02:03.456 on day one
    let max_ts = min_ts + 12 * 86_400_000 + 5 * 3_600_000 + 777;
    let mut failures = Vec::new();
    let mut runs = 0;
    for agg in ["15m", "1h", "3h", "1d", "1w", "7m", "1mo"] {
        for tz in [
            "",
            "Europe/Madrid",
            "Asia/Kathmandu",
            "Asia/Kolkata",
            "America/New_York",
        ] {
            for agg_type in [
                "count", "sum", "mean", "stddev", "min", "max", "spread", "first", "last",
            ] {
                for (group_by, transform) in
                    [("", ""), ("device", "difference"), ("", "cumulative_sum")]
                {
                    let min = min_ts.to_string();
                    let max = max_ts.to_string();
                    let source = if agg_type == "stddev" {
                        &only_v
                    } else {
                        &with_n
                    };
                    let params = [
                        ("agg", agg),
                        ("agg_type", agg_type),
                        ("tz", tz),
                        ("group_by", group_by),
                        ("transform", transform),
                        ("min_ts", min.as_str()),
                        ("max_ts", max.as_str()),
                    ];
                    let q = ReadQuery::from_params(params).expect("valid query");
                    let spec = q.agg.clone().expect("agg");
                    let with = aggregate(&q, &spec, source).expect("rollup path");
                    let without = aggregate_raw_only(&q, &spec, source).expect("raw path");
                    runs += 1;
                    if with.rows.is_empty() {
                        failures.push(format!("{params:?}: no rows"));
                    }
                    let exact =
                        ["count", "min", "max", "spread", "first", "last"].contains(&agg_type);
                    if let Err(e) = same_answer(&with, &without, exact) {
                        failures.push(format!("{params:?}: {e}"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} reads differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn rollup_path_reads_rollups_instead_of_points() {
    let source = synthetic(&["v", "n"]);
    let read = |agg: &str, tz: &str, raw_only: bool| {
        let params = [
            ("agg", agg),
            ("agg_type", "mean"),
            ("tz", tz),
            ("min_ts", "1711152000000"),
            ("max_ts", "1711843199999"),
        ];
        let q = ReadQuery::from_params(params).expect("valid query");
        let spec = q.agg.clone().expect("agg");
        source.reads.raw_points.set(0);
        source.reads.rollup_rows.set(0);
        let run: AggFn = if raw_only {
            aggregate_raw_only
        } else {
            aggregate
        };
        run(&q, &spec, &source).expect("read");
        (
            source.reads.raw_points.get(),
            source.reads.rollup_rows.get(),
        )
    };
    let (all_points, none) = read("1d", "", true);
    assert_eq!(none, 0);
    assert!(all_points > 6_000, "{all_points}");
    // UTC days: 1 d rows only (8 days × 3 series).
    assert_eq!(read("1d", "", false), (0, 24));
    // Madrid days and Kathmandu hours: 1 h or 15 min rows, raw points only where the
    // read range's own edges are off the grid (here they are not).
    let (points, rows) = read("1d", "Europe/Madrid", false);
    assert_eq!(points, 0);
    assert!(rows > 24 && rows < 24 * 8 * 3 + 3 * 24, "{rows}");
    assert_eq!(read("1h", "Asia/Kathmandu", false).0, 0);
    // Unbounded reads close the range at the data.
    let q = ReadQuery::from_params([("agg", "1d"), ("agg_type", "count")]).expect("valid query");
    let spec = q.agg.clone().expect("agg");
    let all = aggregate(&q, &spec, &source).expect("read");
    assert_eq!(all.rows.len(), 14);
}
