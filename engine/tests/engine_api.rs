//! The engine's public surface on a real RocksDB in a temp dir: catalog, writes, raw
//! reads, newest values, retention, restart, snapshots and bad input.

use serde_json::json;
use thicket_engine::value::Value;
use thicket_engine::{
    Command, CommandError, DocKind, Engine, EngineOptions, Output, PutMode, QueryError, ReadQuery,
    ReadResult,
};

fn open(dir: &std::path::Path) -> Engine {
    Engine::open(dir, EngineOptions::default()).expect("open engine")
}

fn user(u: &str) -> Command {
    Command::PutDoc {
        kind: DocKind::User,
        user: u.into(),
        parent: String::new(),
        id: String::new(),
        doc: r#"{"role":"user"}"#.into(),
    }
}

fn bucket(u: &str, b: &str) -> Command {
    Command::CreateBucket {
        user: u.into(),
        bucket: b.into(),
        doc: r#"{"name":"B","config":{"source":"api","tags":["device"]}}"#.into(),
    }
}

fn write(u: &str, b: &str, records: serde_json::Value) -> Command {
    Command::WriteRecords {
        user: u.into(),
        bucket: b.into(),
        records: records.to_string(),
        default_ts: 1_000,
    }
}

fn ok(engine: &Engine, cmds: &[Command], marker: &str) -> Vec<Output> {
    engine
        .apply(cmds, marker.as_bytes())
        .expect("apply")
        .into_iter()
        .map(|r| r.expect("command accepted"))
        .collect()
}

fn raw(engine: &Engine, b: &str, params: &[(&str, &str)]) -> thicket_engine::RawRows {
    match engine
        .read_bucket(
            "u",
            b,
            &ReadQuery::from_params(params.iter().copied()).unwrap(),
        )
        .unwrap()
    {
        ReadResult::Raw(r) => r,
        other => panic!("expected raw rows, got {other:?}"),
    }
}

fn field<'a>(row: &'a thicket_engine::RawRow, name: &str) -> Option<&'a Value> {
    row.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

#[test]
fn catalog_documents_crud_and_cascade() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    ok(&e, &[user("u")], "1");
    let dev = |mode, doc: &str| Command::PutDocWith {
        kind: DocKind::Device,
        user: "u".into(),
        parent: String::new(),
        id: "d1".into(),
        doc: doc.into(),
        mode,
    };
    ok(
        &e,
        &[dev(PutMode::Create, r#"{"name":"one","type":"HTTP"}"#)],
        "2",
    );
    let r = e.apply(&[dev(PutMode::Create, "{}")], b"3").unwrap();
    assert!(
        matches!(&r[0], Err(CommandError::Conflict(m)) if m.contains("device `d1`")),
        "{r:?}"
    );
    ok(&e, &[dev(PutMode::Merge, r#"{"name":"uno"}"#)], "4");
    let doc: serde_json::Value =
        serde_json::from_str(&e.get_doc(DocKind::Device, "u", "", "d1").unwrap().unwrap()).unwrap();
    assert_eq!(doc, json!({"name":"uno","type":"HTTP"}));
    ok(
        &e,
        &[Command::PutDoc {
            kind: DocKind::Property,
            user: "u".into(),
            parent: "d1".into(),
            id: "p".into(),
            doc: r#"{"value":1}"#.into(),
        }],
        "5",
    );
    assert_eq!(
        e.list_docs(DocKind::Property, "u", Some("d1"))
            .unwrap()
            .len(),
        1
    );
    // A property of a missing device, a device of a missing user: named errors.
    let r = e
        .apply(
            &[Command::PutDoc {
                kind: DocKind::Property,
                user: "u".into(),
                parent: "nope".into(),
                id: "p".into(),
                doc: "{}".into(),
            }],
            b"6",
        )
        .unwrap();
    assert!(
        matches!(&r[0], Err(CommandError::NotFound(m)) if m.contains("device `nope`")),
        "{r:?}"
    );
    let r = e
        .apply(
            &[Command::PutDoc {
                kind: DocKind::Device,
                user: "ghost".into(),
                parent: String::new(),
                id: "d".into(),
                doc: "{}".into(),
            }],
            b"7",
        )
        .unwrap();
    assert!(
        matches!(&r[0], Err(CommandError::NotFound(m)) if m.contains("user `ghost`")),
        "{r:?}"
    );
    // Deleting the device deletes its properties; deleting the user deletes everything.
    ok(
        &e,
        &[
            bucket("u", "b"),
            write("u", "b", json!({"ts": 5, "device": "x", "t": 1.5})),
        ],
        "8",
    );
    ok(
        &e,
        &[Command::DeleteDoc {
            kind: DocKind::Device,
            user: "u".into(),
            parent: String::new(),
            id: "d1".into(),
        }],
        "9",
    );
    assert!(e
        .list_docs(DocKind::Property, "u", Some("d1"))
        .unwrap()
        .is_empty());
    ok(
        &e,
        &[Command::DeleteDoc {
            kind: DocKind::User,
            user: "u".into(),
            parent: String::new(),
            id: String::new(),
        }],
        "10",
    );
    assert!(e.get_bucket("u", "b").is_none());
    assert!(matches!(
        e.read_bucket("u", "b", &ReadQuery::default()),
        Err(QueryError::NotFound(_))
    ));
    // Re-created bucket of the same name starts empty (ids are never reused).
    ok(&e, &[user("u"), bucket("u", "b")], "11");
    assert!(raw(&e, "b", &[]).rows.is_empty());
}

#[test]
fn raw_reads_honour_every_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    ok(&e, &[user("u"), bucket("u", "b")], "1");
    let mut recs = Vec::new();
    for i in 0..30i64 {
        let device = ["a", "b", "c"][(i % 3) as usize];
        recs.push(json!({"ts": 100 + i * 10, "device": device, "t": i as f64 + 0.5, "n": i, "gps": {"lat": i}}));
    }
    ok(&e, &[write("u", "b", serde_json::Value::Array(recs))], "2");
    // Default: newest first, 100 items.
    let r = raw(&e, "b", &[]);
    assert_eq!(r.rows.len(), 30);
    assert_eq!(r.rows[0].ts, 390);
    assert_eq!(r.rows[0].tags, vec!["c".to_string()]);
    // min_ts/max_ts inclusive, ascending, projection, nested names flattened.
    let r = raw(
        &e,
        "b",
        &[
            ("min_ts", "150"),
            ("max_ts", "200"),
            ("sort", "asc"),
            ("fields", "t,gps.lat"),
        ],
    );
    assert_eq!(
        r.rows.iter().map(|r| r.ts).collect::<Vec<_>>(),
        vec![150, 160, 170, 180, 190, 200]
    );
    assert_eq!(field(&r.rows[0], "t"), Some(&Value::Float(5.5)));
    assert_eq!(field(&r.rows[0], "gps.lat"), Some(&Value::Int(5)));
    assert_eq!(field(&r.rows[0], "n"), None);
    // Tag filters with repeated values.
    let r = raw(
        &e,
        "b",
        &[("device", "a"), ("device", "c"), ("sort", "asc")],
    );
    assert_eq!(r.rows.len(), 20);
    assert!(r.rows.iter().all(|row| row.tags[0] != "b"));
    // Pagination: pages of 7, stable and complete, in both directions.
    for sort in ["asc", "desc"] {
        let mut seen = Vec::new();
        let mut page: Option<String> = None;
        for _ in 0..10 {
            let mut p = vec![("items", "7"), ("sort", sort)];
            if let Some(c) = page.as_deref() {
                p.push(("page", c));
            }
            let r = raw(&e, "b", &p);
            seen.extend(r.rows.iter().map(|r| r.ts));
            page = r.next_page;
            if page.is_none() {
                break;
            }
        }
        let mut want: Vec<i64> = (0..30).map(|i| 100 + i * 10).collect();
        if sort == "desc" {
            want.reverse();
        }
        assert_eq!(seen, want, "pagination {sort}");
    }
    // Unknown tag filter: a clear error.
    let err = e
        .read_bucket("u", "b", &ReadQuery::from_params([("room", "x")]).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("no tag `room`"), "{err}");
}

#[test]
fn overwrites_late_records_and_latest() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    ok(&e, &[user("u"), bucket("u", "b")], "1");
    ok(
        &e,
        &[write(
            "u",
            "b",
            json!([{"ts": 3_600_000, "device": "a", "t": 1.0}, {"ts": 3_600_500, "device": "a", "t": 2.0}]),
        )],
        "2",
    );
    // Same series and ts: replaced; other device same ts: separate record.
    ok(
        &e,
        &[write(
            "u",
            "b",
            json!([{"ts": 3_600_000, "device": "a", "t": 10.0}, {"ts": 3_600_000, "device": "b", "t": 7.0}]),
        )],
        "3",
    );
    let r = raw(&e, "b", &[("sort", "asc")]);
    assert_eq!(r.rows.len(), 3);
    let a0 = r
        .rows
        .iter()
        .find(|r| r.ts == 3_600_000 && r.tags[0] == "a")
        .unwrap();
    assert_eq!(field(a0, "t"), Some(&Value::Float(10.0)));
    // The rollup of that hour reflects the replacement (sum 10 + 2 + 7).
    let q = ReadQuery::from_params([("agg", "1h"), ("agg_type", "sum")]).unwrap();
    let ReadResult::Agg(agg) = e.read_bucket("u", "b", &q).unwrap() else {
        panic!()
    };
    assert_eq!(agg.rows.len(), 1);
    assert_eq!(agg.rows[0].values[0], Some(Value::Float(19.0)));
    // Latest per device, including after a late record older than the newest one.
    ok(
        &e,
        &[write("u", "b", json!({"ts": 10, "device": "a", "t": -1.0}))],
        "4",
    );
    let l = e.latest("u", "b", &[], None).unwrap();
    assert_eq!(l.rows.len(), 2);
    let a = l.rows.iter().find(|r| r.tags[0] == "a").unwrap();
    assert_eq!((a.ts, field(a, "t")), (3_600_500, Some(&Value::Float(2.0))));
    // An integer field that later receives a float is promoted, and old values read as floats.
    ok(
        &e,
        &[write(
            "u",
            "b",
            json!([{"ts": 20, "device": "c", "k": 3}, {"ts": 30, "device": "c", "k": 3.5}]),
        )],
        "5",
    );
    let r = raw(&e, "b", &[("device", "c"), ("sort", "asc")]);
    assert_eq!(field(&r.rows[0], "k"), Some(&Value::Float(3.0)));
}

#[test]
fn retention_expires_rows_and_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    ok(&e, &[user("u"), bucket("u", "b")], "1");
    let day = 86_400_000i64;
    let recs: Vec<_> = (0..10)
        .map(|d| json!({"ts": d * day + 5, "device": "a", "t": d}))
        .collect();
    ok(&e, &[write("u", "b", serde_json::Value::Array(recs))], "2");
    // Expire before day 4 at noon: aligned down to day 4 00:00, so days 0-3 go.
    ok(
        &e,
        &[Command::Expire {
            user: "u".into(),
            bucket: "b".into(),
            before_ts: 4 * day + day / 2,
        }],
        "3",
    );
    let r = raw(&e, "b", &[("sort", "asc")]);
    assert_eq!(r.rows.first().map(|r| r.ts), Some(4 * day + 5));
    assert_eq!(r.rows.len(), 6);
    let q = ReadQuery::from_params([("agg", "1d"), ("agg_type", "count")]).unwrap();
    let ReadResult::Agg(agg) = e.read_bucket("u", "b", &q).unwrap() else {
        panic!()
    };
    assert_eq!(agg.rows.len(), 6);
    assert_eq!(agg.rows[0].ts, 4 * day);
}

#[test]
fn restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let checksum;
    {
        let e = open(dir.path());
        ok(&e, &[user("u"), bucket("u", "b")], "1");
        let recs: Vec<_> = (0..500)
            .map(|i| json!({"ts": i * 1000, "device": format!("d{}", i % 7), "t": i as f64 / 4.0}))
            .collect();
        ok(&e, &[write("u", "b", serde_json::Value::Array(recs))], "2");
        checksum = e.content_checksum().unwrap();
    }
    let e = open(dir.path());
    assert_eq!(e.content_checksum().unwrap(), checksum);
    assert_eq!(e.applied_marker().unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(raw(&e, "b", &[("items", "1000")]).rows.len(), 500);
    // Indexes were rebuilt: new records continue the same series and rollups.
    ok(
        &e,
        &[write(
            "u",
            "b",
            json!({"ts": 500_000, "device": "d0", "t": 1.0}),
        )],
        "3",
    );
    let q =
        ReadQuery::from_params([("agg", "1h"), ("agg_type", "count"), ("device", "d0")]).unwrap();
    let ReadResult::Agg(agg) = e.read_bucket("u", "b", &q).unwrap() else {
        panic!()
    };
    assert_eq!(agg.rows[0].values[0], Some(Value::Int(73)));
}

#[test]
fn snapshot_install_gives_identical_content() {
    let src_dir = tempfile::tempdir().unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let cp_dir = tempfile::tempdir().unwrap();
    let src = open(src_dir.path());
    ok(&src, &[user("u"), bucket("u", "b")], "1");
    let recs: Vec<_> = (0..300)
        .map(|i| json!({"ts": i * 997, "device": format!("d{}", i % 5), "t": i}))
        .collect();
    ok(
        &src,
        &[write("u", "b", serde_json::Value::Array(recs))],
        "snap-marker",
    );
    let cp = cp_dir.path().join("cp");
    let marker = src.checkpoint(&cp).unwrap();
    assert_eq!(marker.as_deref(), Some(&b"snap-marker"[..]));
    let dst = open(dst_dir.path());
    ok(&dst, &[user("other")], "x");
    dst.install_snapshot(&cp).unwrap();
    assert_eq!(
        dst.content_checksum().unwrap(),
        src.content_checksum().unwrap()
    );
    assert_eq!(
        dst.applied_marker().unwrap().as_deref(),
        Some(&b"snap-marker"[..])
    );
    assert_eq!(raw(&dst, "b", &[("items", "1000")]).rows.len(), 300);
    // The installed state keeps working and survives a reopen.
    ok(
        &dst,
        &[write("u", "b", json!({"ts": 1, "device": "d9", "t": 1}))],
        "after",
    );
    let sum = dst.content_checksum().unwrap();
    drop(dst);
    let dst = open(dst_dir.path());
    assert_eq!(dst.content_checksum().unwrap(), sum);
    // A directory that is not a checkpoint is refused and changes nothing.
    let bogus = cp_dir.path().join("bogus");
    std::fs::create_dir_all(&bogus).unwrap();
    std::fs::write(bogus.join("junk"), b"not rocksdb").unwrap();
    assert!(dst.install_snapshot(&bogus).is_err());
    assert_eq!(dst.content_checksum().unwrap(), sum);
}

#[test]
fn bad_input_is_rejected_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    ok(
        &e,
        &[
            user("u"),
            bucket("u", "b"),
            write(
                "u",
                "b",
                json!({"ts": 1, "device": "a", "t": 1.5, "s": "x"}),
            ),
        ],
        "1",
    );
    let before = e.content_checksum().unwrap();
    let many: serde_json::Map<String, serde_json::Value> =
        (0..300).map(|i| (format!("f{i}"), json!(i))).collect();
    let bad = vec![
        Command::WriteRecords {
            user: "u".into(),
            bucket: "b".into(),
            records: "{not json".into(),
            default_ts: 0,
        },
        write("u", "b", serde_json::Value::Object(many)),
        // A string into a float field, after a valid record in the same command.
        write(
            "u",
            "b",
            json!([{"ts": 2, "device": "a", "t": 2.0}, {"ts": 3, "device": "a", "t": "hot"}]),
        ),
        write("u", "b", json!({"ts": "noon", "t": 1})),
        write("u", "nope", json!({"t": 1})),
        Command::CreateBucket {
            user: "u".into(),
            bucket: "bad/name".into(),
            doc: "{}".into(),
        },
        Command::CreateBucket {
            user: "u".into(),
            bucket: "b".into(),
            doc: "{}".into(),
        },
        Command::CreateBucket {
            user: "u".into(),
            bucket: "c".into(),
            doc: "[]".into(),
        },
        Command::UpdateBucket {
            user: "u".into(),
            bucket: "b".into(),
            doc: r#"{"config":{"tags":["room"]}}"#.into(),
        },
    ];
    let res = e.apply(&bad, b"1").unwrap();
    let msgs: Vec<String> = res
        .iter()
        .map(|r| r.as_ref().expect_err("must be rejected").to_string())
        .collect();
    assert!(msgs[0].contains("not valid JSON"), "{}", msgs[0]);
    assert!(msgs[1].contains("exceeds the limit"), "{}", msgs[1]);
    assert!(
        msgs[2].contains("field `t` is float") && msgs[2].contains("record 1"),
        "{}",
        msgs[2]
    );
    assert!(msgs[3].contains("`ts`"), "{}", msgs[3]);
    assert!(msgs[4].contains("bucket `nope`"), "{}", msgs[4]);
    assert!(msgs[5].contains("`/`"), "{}", msgs[5]);
    assert!(msgs[6].contains("already exists"), "{}", msgs[6]);
    assert!(msgs[7].contains("JSON object"), "{}", msgs[7]);
    assert!(msgs[8].contains("cannot change"), "{}", msgs[8]);
    assert_eq!(
        e.content_checksum().unwrap(),
        before,
        "rejected commands changed stored data"
    );
    // A valid command in the same batch as rejected ones still applies.
    let res = e
        .apply(
            &[
                write("u", "b", json!({"t": "x"})),
                write("u", "b", json!({"ts": 9, "device": "a", "t": 9})),
            ],
            b"2",
        )
        .unwrap();
    assert!(res[0].is_err() && res[1].is_ok());
    assert_eq!(raw(&e, "b", &[]).rows.len(), 2);
}

#[test]
fn empty_apply_moves_only_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path());
    ok(&e, &[user("u")], "1");
    assert!(e.apply(&[], b"2").unwrap().is_empty());
    assert_eq!(e.applied_marker().unwrap().as_deref(), Some(&b"2"[..]));
}

#[test]
fn interrupted_install_leaves_the_old_state() {
    let dir = tempfile::tempdir().unwrap();
    let sum = {
        let e = open(dir.path());
        ok(
            &e,
            &[
                user("u"),
                bucket("u", "b"),
                write("u", "b", json!({"ts": 1, "device": "a", "t": 1.5})),
            ],
            "1",
        );
        e.content_checksum().unwrap()
    };
    // A crash mid-install leaves a half-copied incoming dir, or a renamed generation that
    // CURRENT does not name yet: both are discarded at open.
    for junk in ["incoming-000002", "gen-000002"] {
        let p = dir.path().join(junk);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("000001.sst"), b"partial").unwrap();
    }
    let e = open(dir.path());
    assert_eq!(e.content_checksum().unwrap(), sum);
    assert!(!dir.path().join("incoming-000002").exists());
    assert!(!dir.path().join("gen-000002").exists());
}
