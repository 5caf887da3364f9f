//! Record blocks (`engine/blocks.rs`) against a model: dense series that fill and close
//! blocks, late records into closed windows (their blocks are cut again), replacements,
//! retention, reopening with open blocks not yet written, and reads in every direction
//! and page size. A second engine that receives the same records sorted, without
//! restarts, must hold the same logical content.

use std::collections::BTreeMap;
use thicket_engine::value::Value;
use thicket_engine::{Command, DocKind, Engine, EngineOptions, ReadQuery, ReadResult};

type Model = BTreeMap<(String, i64), f64>;

fn setup(e: &Engine) {
    let cmds = [
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
            doc: r#"{"config":{"source":"api","tags":["device"]}}"#.into(),
        },
    ];
    for r in e.apply(&cmds, b"0").unwrap() {
        r.unwrap();
    }
}

fn write(e: &Engine, recs: &[(&str, i64, f64)], marker: u64) {
    let body: Vec<String> = recs
        .iter()
        .map(|(d, ts, v)| format!(r#"{{"device":"{d}","ts":{ts},"v":{v}}}"#))
        .collect();
    let cmd = Command::WriteRecords {
        user: "u".into(),
        bucket: "b".into(),
        records: format!("[{}]", body.join(",")),
        default_ts: 0,
    };
    for r in e.apply(&[cmd], &marker.to_be_bytes()).unwrap() {
        r.unwrap();
    }
}

fn read_all(e: &Engine, params: &[(&str, &str)]) -> Vec<(String, i64, f64)> {
    let mut out = Vec::new();
    let mut page: Option<String> = None;
    for _ in 0..10_000 {
        let mut p: Vec<(&str, &str)> = params.to_vec();
        if let Some(c) = &page {
            p.push(("page", c));
        }
        let q = ReadQuery::from_params(p.iter().copied()).unwrap();
        let ReadResult::Raw(r) = e.read_bucket("u", "b", &q).unwrap() else {
            panic!("raw rows expected")
        };
        for row in &r.rows {
            let v = match row.fields.iter().find(|(n, _)| n == "v").map(|(_, v)| v) {
                Some(Value::Float(f)) => *f,
                Some(Value::Int(i)) => *i as f64,
                other => panic!("v is {other:?}"),
            };
            out.push((row.tags[0].clone(), row.ts, v));
        }
        match r.next_page {
            Some(c) => page = Some(c),
            None => return out,
        }
    }
    panic!("too many pages");
}

/// Every read shape against the model.
fn check_reads(e: &Engine, model: &Model) {
    let mut asc: Vec<(String, i64, f64)> = model
        .iter()
        .map(|((d, ts), v)| (d.clone(), *ts, *v))
        .collect();
    asc.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let got = read_all(e, &[("sort", "asc"), ("items", "777")]);
    assert_eq!(got, asc, "ascending, pages of 777");
    let mut desc = asc.clone();
    desc.reverse();
    let got = read_all(e, &[("sort", "desc"), ("items", "100000")]);
    assert_eq!(got, desc, "descending, one page");
    // One device, a range that starts and ends inside blocks.
    let (lo, hi) = (1_000_123, 3_456_789);
    let want: Vec<_> = asc
        .iter()
        .filter(|r| r.0 == "a" && r.1 >= lo && r.1 <= hi)
        .cloned()
        .collect();
    let (los, his) = (lo.to_string(), hi.to_string());
    let got = read_all(
        e,
        &[
            ("device", "a"),
            ("min_ts", &los),
            ("max_ts", &his),
            ("sort", "asc"),
            ("items", "50"),
        ],
    );
    assert_eq!(got, want, "range of device a, pages of 50");
    let got = read_all(
        e,
        &[
            ("device", "a"),
            ("min_ts", &los),
            ("max_ts", &his),
            ("sort", "desc"),
            ("items", "33"),
        ],
    );
    let mut want_desc = want.clone();
    want_desc.reverse();
    assert_eq!(got, want_desc, "range of device a, descending, pages of 33");
    // Counts per hour through raw rows and through rollups agree with the model.
    let q =
        ReadQuery::from_params([("agg", "1h"), ("agg_type", "count"), ("device", "a")]).unwrap();
    let ReadResult::Agg(agg) = e.read_bucket("u", "b", &q).unwrap() else {
        panic!()
    };
    let raw = e.read_bucket_without_rollups("u", "b", &q).unwrap();
    assert_eq!(agg, raw);
    let total: i64 = agg
        .rows
        .iter()
        .map(|r| match &r.values[0] {
            Some(Value::Int(n)) => *n,
            None => 0,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(total as usize, asc.iter().filter(|r| r.0 == "a").count());
    // Newest value per device.
    let latest = e.latest("u", "b", &[], None).unwrap();
    for row in &latest.rows {
        let newest = model
            .range((row.tags[0].clone(), i64::MIN)..=(row.tags[0].clone(), i64::MAX))
            .next_back()
            .unwrap();
        assert_eq!(row.ts, newest.0 .1);
    }
}

#[test]
fn dense_late_and_replaced_records_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut marker = 1;
    let opts = EngineOptions {
        // Small memtables: the engine switches them often, writing open blocks each time.
        write_buffer_bytes: 256 << 10,
        ..Default::default()
    };
    {
        let e = Engine::open(dir.path(), opts.clone()).unwrap();
        setup(&e);
        // Device a: one point a second for 100 minutes (900 a window: 4 blocks each);
        // device b: one a minute. Batches of 500.
        let mut recs = Vec::new();
        for i in 0..6000i64 {
            recs.push(("a", 1_000_000 + i * 1000, i as f64));
            if i % 60 == 0 {
                recs.push(("b", 1_000_000 + i * 1000, -(i as f64)));
            }
        }
        for c in recs.chunks(500) {
            write(&e, c, marker);
            marker += 1;
            for (d, ts, v) in c {
                model.insert((d.to_string(), *ts), *v);
            }
        }
        check_reads(&e, &model);
    }
    // Reopened: open blocks come back from what the close wrote.
    let e = Engine::open(dir.path(), opts.clone()).unwrap();
    check_reads(&e, &model);
    // Late records between existing ones (closed windows and the open block), before
    // every record, and replacements of existing ones, in one batch and spread out.
    let mut late = Vec::new();
    for i in 0..400i64 {
        late.push(("a", 1_000_500 + i * 13_000, 0.5 + i as f64)); // between points
        late.push(("a", 1_000_000 + i * 15_000, 1e6 + i as f64)); // replaces
    }
    late.push(("a", 5, 42.0)); // before everything
    late.push(("b", 1_000_000 + 5_999_500, 7.0)); // inside b's open block
    late.push(("a", 1_000_000 + 5_999_000, 8.0)); // replaces a's newest
    for c in late.chunks(37) {
        write(&e, c, marker);
        marker += 1;
        for (d, ts, v) in c {
            model.insert((d.to_string(), *ts), *v);
        }
    }
    check_reads(&e, &model);
    // New records continue after the late ones.
    let more: Vec<(&str, i64, f64)> = (0..700i64)
        .map(|i| ("a", 7_000_000 + i * 1000, i as f64))
        .collect();
    write(&e, &more, marker);
    marker += 1;
    for (d, ts, v) in &more {
        model.insert((d.to_string(), *ts), *v);
    }
    check_reads(&e, &model);
    let sum = e.content_checksum().unwrap();
    drop(e);

    // The same records in timestamp order, one batch, no restart: the same content
    // (blocks may be cut differently; the checksum hashes records).
    let dir2 = tempfile::tempdir().unwrap();
    let e2 = Engine::open(dir2.path(), opts.clone()).unwrap();
    setup(&e2);
    let sorted: Vec<(&str, i64, f64)> = {
        let mut v: Vec<(&str, i64, f64)> = model
            .iter()
            .map(|((d, ts), v)| (if d == "a" { "a" } else { "b" }, *ts, *v))
            .collect();
        v.sort_by_key(|r| (r.1, r.0));
        v
    };
    for c in sorted.chunks(5000) {
        write(&e2, c, 1);
    }
    e2.apply(&[], &(marker - 1).to_be_bytes()).unwrap();
    check_reads(&e2, &model);
    // Rollup rows differ (late points merge differently from points in order), so the
    // whole-content checksum is not comparable; the records are.
    let e = Engine::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(
        e.content_checksum().unwrap(),
        sum,
        "reopen keeps the content"
    );
    assert_eq!(
        read_all(&e, &[("sort", "asc"), ("items", "100000")]),
        read_all(&e2, &[("sort", "asc"), ("items", "100000")])
    );

    // Retention at a day boundary removes whole blocks, then reads still match.
    let cmd = Command::Expire {
        user: "u".into(),
        bucket: "b".into(),
        before_ts: 86_400_000,
    };
    e.apply(&[cmd], &marker.to_be_bytes()).unwrap()[0]
        .as_ref()
        .unwrap();
    assert!(read_all(&e, &[("items", "10")]).is_empty());
}

/// An open block stored at a reopen, then closed in a batch that also took a late
/// record for its window: its stored copy must go with the window's old blocks (it once
/// stayed behind, and its records were read twice).
#[test]
fn an_open_block_closed_into_a_rewritten_window_leaves_no_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    {
        let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
        setup(&e);
        let recs: Vec<(&str, i64, f64)> = (0..10i64)
            .map(|i| ("a", 1_000_000 + i * 10_000, i as f64))
            .collect();
        write(&e, &recs, 1);
        for (d, ts, v) in &recs {
            model.insert((d.to_string(), *ts), *v);
        }
    } // the open block [1_000_000 ..] is stored at close
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    // One batch: a late record before the open block (same window), then a record in the
    // next window, which closes the open block.
    let recs = [("a", 950_000, -1.0), ("a", 2_000_000, 99.0)];
    write(&e, &recs, 2);
    for (d, ts, v) in &recs {
        model.insert((d.to_string(), *ts), *v);
    }
    check_reads(&e, &model);
    drop(e);
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    check_reads(&e, &model);
}
