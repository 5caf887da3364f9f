//! Every golden aggregation case (tests/golden/*.json, answers from InfluxDB 1.6.7 or the
//! calendar reference) through the whole engine: records written with `WriteRecords`
//! into a real RocksDB, rollups maintained on apply, the answer read with `read_bucket`.

use serde_json::Value as Json;
use thicket_engine::aggregate::AggRows;
use thicket_engine::value::Value;
use thicket_engine::{Command, DocKind, Engine, EngineOptions, ReadQuery, ReadResult};

fn cases() -> Vec<(String, Json)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("golden dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let all: Vec<Json> = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        for c in all {
            out.push((name.clone(), c));
        }
    }
    out
}

fn query_params(q: &Json) -> Vec<(String, String)> {
    let mut p = Vec::new();
    for (k, v) in q.as_object().unwrap() {
        let s = match v {
            Json::String(s) => s.clone(),
            Json::Object(_) => v.to_string(),
            other => other.to_string(),
        };
        p.push((k.clone(), s));
    }
    p
}

/// Compares one case's answer; returns a description of the first difference.
fn compare(case: &Json, got: &AggRows) -> Result<(), String> {
    let expected = case["expected"].as_array().unwrap();
    let types = case["expected_types"].as_object().unwrap();
    let group_by = case["query"]["group_by"].as_str();
    let mut want: Vec<&Json> = expected.iter().collect();
    want.sort_by(|a, b| {
        let ga = group_by.map(|g| a[g].as_str().unwrap_or("")).unwrap_or("");
        let gb = group_by.map(|g| b[g].as_str().unwrap_or("")).unwrap_or("");
        (ga, a["ts"].as_i64()).cmp(&(gb, b["ts"].as_i64()))
    });
    let mut rows = got.rows.clone();
    rows.sort_by_key(|r| (r.group.clone(), r.ts));
    if want.len() != rows.len() {
        return Err(format!(
            "{} rows, expected {}: got ts {:?}",
            rows.len(),
            want.len(),
            rows.iter().map(|r| r.ts).collect::<Vec<_>>()
        ));
    }
    for (w, g) in want.iter().zip(rows.iter()) {
        if w["ts"].as_i64() != Some(g.ts) {
            return Err(format!("row ts {} expected {}", g.ts, w["ts"]));
        }
        if let Some(gb) = group_by {
            if w[gb].as_str() != g.group.as_deref() {
                return Err(format!(
                    "row {} group {:?} expected {}",
                    g.ts, g.group, w[gb]
                ));
            }
        }
        for (field, ty) in types {
            let pos = got
                .fields
                .iter()
                .position(|f| f == field)
                .ok_or(format!("field {field} missing from the answer"))?;
            let gv = &g.values[pos];
            let wv = &w[field.as_str()];
            match (wv, gv) {
                (Json::Null, None) => {}
                (Json::Null, Some(v)) => {
                    return Err(format!("ts {} {field}: got {v:?}, expected null", g.ts))
                }
                (_, None) => return Err(format!("ts {} {field}: got null, expected {wv}", g.ts)),
                (_, Some(Value::Int(i))) if ty == "integer" => {
                    if wv.as_i64() != Some(*i) {
                        return Err(format!("ts {} {field}: got {i}, expected {wv}", g.ts));
                    }
                }
                (_, Some(Value::Float(f))) if ty == "float" => {
                    let e = wv.as_f64().unwrap();
                    if (e - f).abs() > 1e-9 * e.abs().max(f.abs()) + 1e-12 {
                        return Err(format!("ts {} {field}: got {f}, expected {e}", g.ts));
                    }
                }
                (_, Some(v)) => {
                    return Err(format!(
                        "ts {} {field}: got {v:?}, expected {ty} {wv}",
                        g.ts
                    ))
                }
            }
        }
    }
    Ok(())
}

#[test]
fn golden_cases_through_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    let mut setup = vec![Command::PutDoc {
        kind: DocKind::User,
        user: "u".into(),
        parent: String::new(),
        id: String::new(),
        doc: "{}".into(),
    }];
    let all = cases();
    assert!(all.len() >= 319, "only {} golden cases found", all.len());
    for i in 0..all.len() {
        setup.push(Command::CreateBucket {
            user: "u".into(),
            bucket: format!("c{i}"),
            doc: r#"{"name":"golden","config":{"source":"api","tags":["device"]}}"#.into(),
        });
    }
    let res = engine.apply(&setup, b"setup").unwrap();
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    // Write each case's records in shuffled-ish chunks (reverse order in the second half)
    // so rollups see late records as well as in-order ones.
    for (i, (_, case)) in all.iter().enumerate() {
        let recs = case["records"].as_array().unwrap();
        let half = recs.len() / 2;
        let mut second: Vec<Json> = recs[half..].to_vec();
        second.reverse();
        for chunk in [Json::Array(recs[..half].to_vec()), Json::Array(second)] {
            let r = engine
                .apply(
                    &[Command::WriteRecords {
                        user: "u".into(),
                        bucket: format!("c{i}"),
                        records: chunk.to_string(),
                        default_ts: 0,
                    }],
                    format!("w{i}").as_bytes(),
                )
                .unwrap();
            assert!(r[0].is_ok(), "case {i}: {:?}", r[0]);
        }
    }
    let mut failures = Vec::new();
    let mut passed = 0;
    let mut skipped = 0;
    for (i, (file, case)) in all.iter().enumerate() {
        if case.get("quirk").is_some() {
            println!("skipped (quirk): {}: {}", case["name"], case["quirk"]);
            skipped += 1;
            continue;
        }
        let params = query_params(&case["query"]);
        let q =
            ReadQuery::from_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
        let outcome = match engine.read_bucket("u", &format!("c{i}"), &q) {
            Ok(ReadResult::Agg(rows)) => compare(case, &rows),
            Ok(other) => Err(format!("not an aggregated answer: {other:?}")),
            Err(e) => Err(format!("error: {e}")),
        };
        match outcome {
            Ok(()) => passed += 1,
            Err(e) => failures.push(format!("{file}: {}: {e}", case["name"])),
        }
    }
    println!(
        "golden through the engine: {passed} passed, {} failed, {skipped} skipped",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} golden cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
