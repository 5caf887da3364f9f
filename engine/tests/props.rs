//! Property tests: random records (out of order, duplicates, overwrites) written in
//! several batches; aggregated reads (answered from rollups plus raw edges) must equal a
//! naive reference computed from the deduplicated records, and raw reads must honour
//! every parameter. Case counts come from PROPTEST_CASES (bounded in CI).

use proptest::prelude::*;
use std::collections::BTreeMap;
use thicket_engine::value::Value;
use thicket_engine::{Command, DocKind, Engine, EngineOptions, ReadQuery, ReadResult};

#[derive(Clone, Debug)]
struct Rec {
    ts: i64,
    device: u8,
    v: Option<i32>,
    n: Option<i8>,
}

fn rec() -> impl Strategy<Value = Rec> {
    // Three days, coarse timestamps so duplicates and same-ts-other-device happen.
    (
        0i64..3 * 86_400,
        0u8..3,
        proptest::option::weighted(0.9, -40i32..40),
        proptest::option::weighted(0.8, -20i8..20),
    )
        .prop_map(|(s, device, v, n)| Rec {
            ts: s * 1000 - 86_400_000,
            device,
            v,
            n,
        })
}

fn to_json(r: &Rec) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("ts".into(), r.ts.into());
    m.insert("device".into(), format!("d{}", r.device).into());
    if let Some(v) = r.v {
        // Floats with a fractional part so the field registers as float.
        m.insert("v".into(), serde_json::json!(v as f64 * 0.5 + 0.25));
    }
    if let Some(n) = r.n {
        m.insert("n".into(), n.into());
    }
    serde_json::Value::Object(m)
}

/// Writes the records in `batches` chunks; returns the engine and the surviving records
/// (last write per (device, ts) wins: a record replaces another entirely).
fn load(recs: &[Rec], batches: usize) -> (tempfile::TempDir, Engine, Vec<Rec>) {
    let dir = tempfile::tempdir().unwrap();
    let e = setup_engine(dir.path());
    let chunk = recs.len().div_ceil(batches.max(1)).max(1);
    // The field types are fixed by the first value seen: seed them so `v` is float and
    // `n` integer regardless of which record comes first.
    let seed = serde_json::json!({"ts": -10_000_000_000i64, "device": "seed", "v": 0.5, "n": 1});
    let first = Command::WriteRecords {
        user: "u".into(),
        bucket: "b".into(),
        records: seed.to_string(),
        default_ts: 0,
    };
    assert!(e.apply(&[first], b"s").unwrap()[0].is_ok());
    for (i, c) in recs.chunks(chunk).enumerate() {
        let body = serde_json::Value::Array(c.iter().map(to_json).collect());
        let cmd = Command::WriteRecords {
            user: "u".into(),
            bucket: "b".into(),
            records: body.to_string(),
            default_ts: 0,
        };
        let r = e.apply(&[cmd], format!("{i}").as_bytes()).unwrap();
        assert!(r[0].is_ok(), "{r:?}");
    }
    let mut last: BTreeMap<(u8, i64), Rec> = BTreeMap::new();
    for r in recs {
        last.insert((r.device, r.ts), r.clone());
    }
    (dir, e, last.into_values().collect())
}

/// Mostly ascending records (each device's clock moves by up to 40 min) with about one
/// in five late by up to two days: both the hot path and the late path of the rollups.
fn timeline() -> impl Strategy<Value = Vec<Rec>> {
    proptest::collection::vec(
        (
            0i64..2400,
            proptest::option::weighted(0.2, 0i64..2 * 86_400),
            0u8..3,
            proptest::option::weighted(0.9, -40i32..40),
            proptest::option::weighted(0.8, -20i8..20),
        ),
        1..400,
    )
    .prop_map(|steps| {
        let mut clock = 0i64;
        steps
            .into_iter()
            .map(|(step, back, device, v, n)| {
                clock += step;
                let s = back.map_or(clock, |b| clock - b);
                Rec {
                    ts: s * 1000,
                    device,
                    v,
                    n,
                }
            })
            .collect()
    })
}

fn setup_engine(dir: &std::path::Path) -> Engine {
    let e = Engine::open(dir, EngineOptions::default()).unwrap();
    let setup = [
        Command::PutDoc {
            kind: DocKind::User,
            user: "u".into(),
            parent: String::new(),
            id: String::new(),
            doc: "{}".into(),
        },
        Command::CreateBucket {
            user: "u".into(),
            bucket: "b".into(),
            doc: r#"{"config":{"tags":["device"]}}"#.into(),
        },
    ];
    assert!(e.apply(&setup, b"0").unwrap().iter().all(|r| r.is_ok()));
    e
}

/// Applies `recs` in chunks of `chunk`, reopening the engine after each chunk whose bit
/// is set in `reopen`; ends with an empty apply carrying the same marker everywhere.
fn apply_reopening(dir: &std::path::Path, recs: &[Rec], chunk: usize, reopen: u64) -> Engine {
    let mut e = setup_engine(dir);
    for (i, c) in recs.chunks(chunk.max(1)).enumerate() {
        let body = serde_json::Value::Array(c.iter().map(to_json).collect());
        let cmd = Command::WriteRecords {
            user: "u".into(),
            bucket: "b".into(),
            records: body.to_string(),
            default_ts: 0,
        };
        let r = e.apply(&[cmd], format!("{i}").as_bytes()).unwrap();
        assert!(r[0].is_ok(), "{r:?}");
        if reopen >> (i % 64) & 1 == 1 {
            drop(e);
            e = Engine::open(dir, EngineOptions::default()).unwrap();
        }
    }
    e.apply(&[], b"end").unwrap();
    e
}

/// Naive aggregate of (ts, value) points: returns None for "no result / NaN".
fn naive(agg: &str, pts: &[(i64, f64)], int: bool) -> Option<Value> {
    if pts.is_empty() {
        return None;
    }
    let n = pts.len() as f64;
    let sum: f64 = pts.iter().map(|p| p.1).sum();
    let min = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let pick = |best: fn(i64, i64) -> bool| {
        let mut b = pts[0];
        for p in &pts[1..] {
            if best(p.0, b.0) || (p.0 == b.0 && p.1 > b.1) {
                b = *p;
            }
        }
        b.1
    };
    let typed = |x: f64| {
        if int {
            Value::Int(x as i64)
        } else {
            Value::Float(x)
        }
    };
    Some(match agg {
        "count" => Value::Int(pts.len() as i64),
        "sum" => typed(sum),
        "mean" => Value::Float(sum / n),
        "min" => typed(min),
        "max" => typed(max),
        "spread" => typed(max - min),
        "first" => typed(pick(|a, b| a < b)),
        "last" => typed(pick(|a, b| a > b)),
        "stddev" => {
            if pts.len() < 2 {
                return None;
            }
            let m = sum / n;
            Value::Float((pts.iter().map(|p| (p.1 - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
        }
        _ => unreachable!(),
    })
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) + 1e-9,
        _ => false,
    }
}

/// Points of `v` and `n` in one (group, window).
type FieldPoints = [Vec<(i64, f64)>; 2];

const AGGS: [&str; 9] = [
    "count", "sum", "mean", "min", "max", "spread", "first", "last", "stddev",
];
const WINDOWS: [(&str, i64); 5] = [
    ("15m", 900_000),
    ("1h", 3_600_000),
    ("2h", 7_200_000),
    ("1d", 86_400_000),
    ("10m", 600_000),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(32), ..ProptestConfig::default() })]

    #[test]
    fn aggregates_through_rollups_equal_a_naive_reference(
        recs in proptest::collection::vec(rec(), 1..300),
        batches in 1usize..4,
        agg_i in 0usize..AGGS.len(),
        win_i in 0usize..WINDOWS.len(),
        grouped in any::<bool>(),
        lo in -86_400_000i64..86_400_000,
        span in 1i64..3 * 86_400_000,
    ) {
        let (_dir, e, live) = load(&recs, batches);
        let (agg, (wname, wlen)) = (AGGS[agg_i], WINDOWS[win_i]);
        let hi = lo + span;
        let (los, his) = (lo.to_string(), hi.to_string());
        let mut params = vec![("agg", wname), ("agg_type", agg), ("min_ts", los.as_str()), ("max_ts", his.as_str()), ("fields", "v,n")];
        if grouped { params.push(("group_by", "device")); }
        let q = ReadQuery::from_params(params.iter().copied()).unwrap();
        let ReadResult::Agg(got) = e.read_bucket("u", "b", &q).unwrap() else { panic!("not aggregated") };
        // Reference: window -> group -> field points.
        let mut want: BTreeMap<(String, i64), FieldPoints> = BTreeMap::new();
        for r in live.iter().filter(|r| r.ts >= lo && r.ts <= hi) {
            let g = if grouped { format!("d{}", r.device) } else { String::new() };
            let w = r.ts - r.ts.rem_euclid(wlen);
            let slot = want.entry((g, w)).or_default();
            if let Some(v) = r.v { slot[0].push((r.ts, v as f64 * 0.5 + 0.25)); }
            if let Some(n) = r.n { slot[1].push((r.ts, n as f64)); }
        }
        let vi = got.fields.iter().position(|f| f == "v");
        let ni = got.fields.iter().position(|f| f == "n");
        let mut got_rows: BTreeMap<(String, i64), (Option<Value>, Option<Value>)> = BTreeMap::new();
        for row in &got.rows {
            let v = vi.and_then(|i| row.values[i].clone());
            let n = ni.and_then(|i| row.values[i].clone());
            got_rows.insert((row.group.clone().unwrap_or_default(), row.ts), (v, n));
        }
        let mut expected_rows = 0;
        for (key, [vp, np]) in &want {
            let (wv, wn) = (naive(agg, vp, false), naive(agg, np, true));
            if vp.is_empty() && np.is_empty() { continue; }
            expected_rows += 1;
            let (gv, gn) = got_rows.get(key).cloned().unwrap_or_else(|| panic!("missing window {key:?} for {agg} {wname}"));
            for (w, g, f) in [(wv, gv, "v"), (wn, gn, "n")] {
                match (&w, &g) {
                    (None, None) => {}
                    (Some(a), Some(b)) => prop_assert!(close(a, b), "{agg} {wname} {key:?} {f}: got {b:?}, want {a:?}"),
                    _ => prop_assert!(false, "{agg} {wname} {key:?} {f}: got {g:?}, want {w:?}"),
                }
            }
        }
        prop_assert_eq!(got.rows.len(), expected_rows, "row count for {} {}", agg, wname);
    }

    #[test]
    fn rollup_path_equals_raw_path_in_any_zone(
        recs in proptest::collection::vec(rec(), 1..300),
        batches in 1usize..4,
        agg_i in 0usize..AGGS.len(),
        win in prop::sample::select(vec!["15m", "30m", "1h", "3h", "1d", "1w", "1mo"]),
        tz in prop::sample::select(vec!["", "Asia/Kathmandu", "Asia/Kolkata", "Europe/Madrid", "America/New_York"]),
        grouped in any::<bool>(),
        lo in -86_400_000i64..86_400_000,
        span in 1i64..3 * 86_400_000,
    ) {
        let (_dir, e, _) = load(&recs, batches);
        let agg = AGGS[agg_i];
        let (los, his) = (lo.to_string(), (lo + span).to_string());
        let mut params = vec![("agg", win), ("agg_type", agg), ("min_ts", los.as_str()), ("max_ts", his.as_str()), ("fields", "v,n")];
        if !tz.is_empty() { params.push(("tz", tz)); }
        if grouped { params.push(("group_by", "device")); }
        let q = ReadQuery::from_params(params.iter().copied()).unwrap();
        let ReadResult::Agg(fast) = e.read_bucket("u", "b", &q).unwrap() else { panic!("not aggregated") };
        let slow = e.read_bucket_without_rollups("u", "b", &q).unwrap();
        prop_assert_eq!(fast.rows.len(), slow.rows.len(), "{} {} {}", agg, win, tz);
        let exact = matches!(agg, "count" | "min" | "max" | "first" | "last" | "spread");
        for (a, b) in fast.rows.iter().zip(slow.rows.iter()) {
            prop_assert_eq!((a.ts, &a.group), (b.ts, &b.group));
            for (x, y) in a.values.iter().zip(b.values.iter()) {
                match (x, y) {
                    (Some(x), Some(y)) if exact => prop_assert_eq!(x, y, "{} {} {} at {}", agg, win, tz, a.ts),
                    (Some(x), Some(y)) => prop_assert!(close(x, y), "{agg} {win} {tz} at {}: {x:?} vs {y:?}", a.ts),
                    (None, None) => {}
                    _ => prop_assert!(false, "{agg} {win} {tz} at {}: {x:?} vs {y:?}", a.ts),
                }
            }
        }
    }

    /// Rollup rows are functions of the raw rows alone: the same records in other batch
    /// sizes, with the engine reopened (its in-memory windows rebuilt) at random points,
    /// give byte-identical content and identical aggregated answers.
    #[test]
    fn rollups_do_not_depend_on_batching_or_restarts(
        recs in timeline(),
        chunk_a in 1usize..200,
        chunk_b in 1usize..200,
        reopen in any::<u64>(),
        win in prop::sample::select(vec!["15m", "1h", "1d", "1w"]),
    ) {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = apply_reopening(da.path(), &recs, chunk_a, 0);
        let b = apply_reopening(db.path(), &recs, chunk_b, reopen);
        prop_assert_eq!(a.content_checksum().unwrap(), b.content_checksum().unwrap());
        for agg in ["mean", "stddev", "sum", "count", "first", "last"] {
            let params = [("agg", win), ("agg_type", agg), ("min_ts", "-200000000"), ("max_ts", "2000000000"), ("group_by", "device")];
            let q = ReadQuery::from_params(params.iter().copied()).unwrap();
            let ra = a.read_bucket("u", "b", &q).unwrap();
            let rb = b.read_bucket("u", "b", &q).unwrap();
            prop_assert_eq!(&ra, &rb, "{} {}", agg, win);
            let slow = a.read_bucket_without_rollups("u", "b", &q).unwrap();
            let ReadResult::Agg(fast) = ra else { panic!("not aggregated") };
            prop_assert_eq!(fast.rows.len(), slow.rows.len());
            for (x, y) in fast.rows.iter().zip(slow.rows.iter()) {
                prop_assert_eq!((x.ts, &x.group), (y.ts, &y.group));
                for (p, q) in x.values.iter().zip(y.values.iter()) {
                    match (p, q) {
                        (Some(p), Some(q)) => prop_assert!(close(p, q), "{agg} {win} at {}: {p:?} vs {q:?}", x.ts),
                        (None, None) => {}
                        _ => prop_assert!(false, "{agg} {win} at {}: {p:?} vs {q:?}", x.ts),
                    }
                }
            }
        }
    }

    #[test]
    fn raw_reads_equal_naive_filtering(
        recs in proptest::collection::vec(rec(), 1..200),
        batches in 1usize..4,
        lo in -86_400_000i64..86_400_000,
        span in 1i64..3 * 86_400_000,
        items in 1usize..50,
        asc in any::<bool>(),
        only in proptest::option::of(0u8..3),
    ) {
        let (_dir, e, live) = load(&recs, batches);
        let hi = lo + span;
        let (los, his, its) = (lo.to_string(), hi.to_string(), items.to_string());
        let dev = only.map(|d| format!("d{d}"));
        let mut params = vec![("min_ts", los.as_str()), ("max_ts", his.as_str()), ("items", its.as_str()), ("sort", if asc { "asc" } else { "desc" }), ("fields", "n")];
        if let Some(d) = dev.as_deref() { params.push(("device", d)); }
        let q = ReadQuery::from_params(params.iter().copied()).unwrap();
        let ReadResult::Raw(got) = e.read_bucket("u", "b", &q).unwrap() else { panic!("not raw") };
        let mut want: Vec<&Rec> = live.iter().filter(|r| r.ts >= lo && r.ts <= hi && only.is_none_or(|d| d == r.device)).collect();
        // Storage order within one timestamp is by series id (order of first appearance).
        want.sort_by_key(|r| r.ts);
        if !asc { want.reverse(); }
        prop_assert_eq!(got.rows.len(), want.len().min(items));
        for (g, w) in got.rows.iter().zip(want.iter()) {
            prop_assert_eq!(g.ts, w.ts);
            prop_assert!(g.fields.iter().all(|(f, _)| f == "n"), "projection leaked {:?}", g.fields);
            if only.is_some() {
                prop_assert_eq!(&g.tags[0], &format!("d{}", w.device));
                prop_assert_eq!(g.fields.first().map(|(_, v)| v.clone()), w.n.map(|n| Value::Int(n as i64)));
            }
        }
        prop_assert_eq!(got.next_page.is_some(), want.len() > items);
    }
}
