//! SQL over real buckets: records written through `apply` into RocksDB, queried with
//! DataFusion through the engine's tables (one per bucket of the user).

use thicket_engine::sql::{batches_to_csv, batches_to_json, run_sql, SqlOptions};
use thicket_engine::{Command, DocKind, Engine, EngineOptions, QueryError};

fn engine_with_data() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path(), EngineOptions::default()).unwrap();
    let mut cmds = vec![
        Command::PutDoc {
            kind: DocKind::User,
            user: "u".into(),
            parent: String::new(),
            id: String::new(),
            doc: "{}".into(),
        },
        Command::PutDoc {
            kind: DocKind::User,
            user: "other".into(),
            parent: String::new(),
            id: String::new(),
            doc: "{}".into(),
        },
        Command::CreateBucket {
            user: "u".into(),
            bucket: "env".into(),
            doc: r#"{"config":{"tags":["device"]}}"#.into(),
        },
        Command::CreateBucket {
            user: "other".into(),
            bucket: "secret".into(),
            doc: r#"{"config":{"tags":["device"]}}"#.into(),
        },
    ];
    // Two hours of one sample a minute for three devices; temperature = minute index.
    let recs: Vec<_> = (0..120)
        .flat_map(|m| (0..3).map(move |d| serde_json::json!({"ts": m * 60_000, "device": format!("d{d}"), "temp": m as f64 + d as f64 * 0.5, "ok": m % 2 == 0})))
        .collect();
    cmds.push(Command::WriteRecords {
        user: "u".into(),
        bucket: "env".into(),
        records: serde_json::Value::Array(recs).to_string(),
        default_ts: 0,
    });
    cmds.push(Command::WriteRecords {
        user: "other".into(),
        bucket: "secret".into(),
        records: r#"{"ts":1,"device":"x","v":1}"#.into(),
        default_ts: 0,
    });
    assert!(e.apply(&cmds, b"1").unwrap().iter().all(|r| r.is_ok()));
    (dir, e)
}

#[tokio::test]
async fn sql_aggregates_real_bucket_rows() {
    let (_dir, e) = engine_with_data();
    let sql = "SELECT device, date_bin(INTERVAL '1 hour', ts) AS h, count(*) AS n, avg(temp) AS mean, max(temp) AS mx \
               FROM env WHERE device IN ('d0', 'd2') GROUP BY device, h ORDER BY device, h";
    let batches = run_sql(e.sql_tables("u"), sql, &SqlOptions::default())
        .await
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&batches_to_json(&batches).unwrap()).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 4, "{json}");
    assert_eq!(rows[0]["device"], "d0");
    assert_eq!(rows[0]["h"], 0);
    assert_eq!(rows[0]["n"], 60);
    assert_eq!(rows[0]["mean"], 29.5);
    assert_eq!(rows[3]["device"], "d2");
    assert_eq!(rows[3]["h"], 3_600_000);
    assert_eq!(rows[3]["mx"], 120.0);
    // A time range and projection: the right rows, as CSV with a header.
    let batches = run_sql(e.sql_tables("u"), "SELECT ts, temp FROM env WHERE device = 'd1' AND ts >= to_timestamp_millis(60000) AND ts < to_timestamp_millis(180000) ORDER BY ts", &SqlOptions::default())
        .await
        .unwrap();
    let csv = batches_to_csv(&batches).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert_eq!(lines[0], "ts,temp");
    assert!(lines[1].ends_with(",1.5"), "{csv}");
}

#[tokio::test]
async fn sql_sees_only_the_users_buckets_and_names_errors() {
    let (_dir, e) = engine_with_data();
    let err = run_sql(
        e.sql_tables("u"),
        "SELECT * FROM secret",
        &SqlOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, QueryError::Sql(_)) && err.to_string().contains("secret"),
        "{err}"
    );
    let err = run_sql(
        e.sql_tables("u"),
        "SELECT nosuch FROM env",
        &SqlOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("nosuch"), "{err}");
    let err = run_sql(e.sql_tables("u"), "DROP TABLE env", &SqlOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Sql(_)), "{err}");
    // The data is untouched by the rejected statement.
    let b = run_sql(
        e.sql_tables("u"),
        "SELECT count(*) AS n FROM env",
        &SqlOptions::default(),
    )
    .await
    .unwrap();
    assert!(batches_to_json(&b).unwrap().contains("360"));
}

/// A scan split into partitions (each over its share of the series) gives the rows one
/// partition gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_scans_give_the_same_rows() {
    let (_dir, e) = engine_with_data();
    let sql = "SELECT device, date_bin(INTERVAL '1 hour', ts) AS h, count(*) AS n, avg(temp) AS mean, min(ts) AS first \
               FROM env GROUP BY device, h ORDER BY device, h";
    let mut answers = Vec::new();
    for target_partitions in [1, 2, 3, 8] {
        let opts = SqlOptions {
            target_partitions,
            ..SqlOptions::default()
        };
        let batches = run_sql(e.sql_tables("u"), sql, &opts).await.unwrap();
        answers.push(batches_to_json(&batches).unwrap());
    }
    let rows: serde_json::Value = serde_json::from_str(&answers[0]).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 6, "{rows}");
    for a in &answers[1..] {
        assert_eq!(a, &answers[0]);
    }
    // A LIMIT still returns that many rows when each partition stops at it.
    let opts = SqlOptions {
        target_partitions: 2,
        ..SqlOptions::default()
    };
    let batches = run_sql(e.sql_tables("u"), "SELECT ts FROM env LIMIT 7", &opts)
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 7);
}
