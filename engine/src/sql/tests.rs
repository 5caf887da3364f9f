//! End-to-end tests of [`run_sql`] over in-memory buckets.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};

use super::test_data::{weather, MemBucket};
use super::*;
use crate::scan::{BucketData, ScanRequest};

fn tables(list: &[(&str, &Arc<MemBucket>)]) -> Vec<(String, Arc<dyn BucketData>)> {
    list.iter()
        .map(|(name, data)| (name.to_string(), Arc::clone(data) as Arc<dyn BucketData>))
        .collect()
}

async fn query(
    list: &[(&str, &Arc<MemBucket>)],
    sql: &str,
    opts: &SqlOptions,
) -> Result<Json, QueryError> {
    let batches = run_sql(tables(list), sql, opts).await?;
    let text = batches_to_json(&batches)?;
    serde_json::from_str(&text).map_err(|e| QueryError::Sql(format!("bad JSON {text}: {e}")))
}

async fn json_of(bucket: &Arc<MemBucket>, sql: &str) -> Json {
    match query(&[("weather", bucket)], sql, &SqlOptions::default()).await {
        Ok(v) => v,
        Err(e) => panic!("query {sql} failed: {e}"),
    }
}

async fn error_of(bucket: &Arc<MemBucket>, sql: &str, opts: &SqlOptions) -> QueryError {
    match query(&[("weather", bucket)], sql, opts).await {
        Ok(v) => panic!("query {sql} should fail, gave {v}"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_range_and_tag_filters_are_pushed_down() {
    let w = weather();
    let rows = json_of(
        &w,
        "SELECT ts, device, temp FROM weather \
         WHERE ts >= TIMESTAMP '1970-01-01T00:00:02Z' AND ts < to_timestamp_millis(5000) \
           AND device = 'a' ORDER BY ts",
    )
    .await;
    assert_eq!(
        rows,
        json!([
            {"ts": 2000, "device": "a", "temp": 21.0},
            {"ts": 3000, "device": "a", "temp": null},
            {"ts": 4000, "device": "a", "temp": 23.0},
        ])
    );
    assert_eq!(
        w.last_request(),
        Some(ScanRequest {
            min_ts: 2000,
            max_ts: 4999,
            tags: vec![("device".to_string(), vec!["a".to_string()])],
            fields: Some(vec!["temp".to_string()]),
            part: (0, 1),
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_in_list_and_or_are_pushed_down() {
    let w = weather();
    let rows = json_of(
        &w,
        "SELECT device, hum FROM weather \
         WHERE ts BETWEEN to_timestamp_millis(1000) AND to_timestamp_millis(2500) \
           AND (device IN ('b', 'c') OR device = 'z') ORDER BY hum",
    )
    .await;
    assert_eq!(
        rows,
        json!([{"device": "b", "hum": 50}, {"device": "b", "hum": 51}])
    );
    let req = w.last_request().expect("scanned");
    assert_eq!((req.min_ts, req.max_ts), (1000, 2500));
    let devices = vec!["b".to_string(), "c".to_string(), "z".to_string()];
    assert_eq!(req.tags, vec![("device".to_string(), devices)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_ms_comparisons_are_pushed_down() {
    let w = weather();
    for sql in [
        "SELECT hum FROM weather WHERE CAST(ts AS BIGINT) > 4000 ORDER BY hum",
        "SELECT hum FROM weather WHERE ts > to_timestamp_millis(4000) ORDER BY hum",
    ] {
        assert_eq!(
            json_of(&w, sql).await,
            json!([{"hum": 44}, {"hum": 60}]),
            "{sql}"
        );
        let req = w.last_request().expect("scanned");
        assert_eq!((req.min_ts, req.max_ts), (4001, i64::MAX), "{sql}");
    }
    // DataFusion does not compare timestamps with bare integers; the error says so.
    let sql = "SELECT hum FROM weather WHERE ts > 4000";
    match error_of(&w, sql, &SqlOptions::default()).await {
        QueryError::Sql(msg) => assert!(msg.contains("Int64"), "{msg}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_tags_are_null_and_non_pushable_filters_still_apply() {
    let w = weather();
    let rows = json_of(&w, "SELECT device, site FROM weather WHERE site IS NULL").await;
    assert_eq!(rows, json!([{"device": "c", "site": null}]));
    // A filter on a field is not pushed, but applied.
    let rows = json_of(&w, "SELECT hum FROM weather WHERE temp > 22 ORDER BY hum").await;
    assert_eq!(rows, json!([{"hum": 43}, {"hum": 44}, {"hum": 60}]));
    let req = w.last_request().expect("scanned");
    assert_eq!(
        (req.min_ts, req.max_ts, req.tags.len()),
        (i64::MIN, i64::MAX, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradictory_filters_skip_the_scan() {
    let w = weather();
    // DataFusion folds `device = 'a' AND device = 'b'` itself; these reach the scan.
    for sql in [
        "SELECT ts FROM weather WHERE ts > to_timestamp_millis(5000) AND ts < to_timestamp_millis(5001)",
        "SELECT ts FROM weather WHERE (device = 'a' OR device = 'b') AND device = 'c'",
    ] {
        assert_eq!(json_of(&w, sql).await, json!([]), "{sql}");
    }
    assert_eq!(w.requests.lock().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_requests_only_used_fields() {
    let w = weather();
    let rows = json_of(
        &w,
        "SELECT hum FROM weather WHERE device = 'b' ORDER BY hum",
    )
    .await;
    assert_eq!(rows, json!([{"hum": 50}, {"hum": 51}, {"hum": 52}]));
    assert_eq!(
        w.last_request().and_then(|r| r.fields),
        Some(vec!["hum".to_string()])
    );

    let rows = json_of(&w, "SELECT count(*) AS n FROM weather").await;
    assert_eq!(rows, json!([{"n": 9}]));
    assert_eq!(w.last_request().and_then(|r| r.fields), Some(vec![]));

    let rows = json_of(
        &w,
        "SELECT note, ok FROM weather WHERE ts = to_timestamp_millis(61000)",
    )
    .await;
    assert_eq!(rows, json!([{"note": "c@61000", "ok": true}]));
    // DataFusion may order the projection by schema position; the set is what matters.
    let mut fields = w.last_request().and_then(|r| r.fields).unwrap_or_default();
    fields.sort();
    assert_eq!(fields, vec!["note".to_string(), "ok".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_by_aggregates_per_tag() {
    let w = weather();
    let rows = json_of(
        &w,
        "SELECT device, avg(temp) AS avg, min(temp) AS min, max(temp) AS max, \
                count(temp) AS n, count(*) AS rows, sum(hum) AS hum \
         FROM weather GROUP BY device ORDER BY device",
    )
    .await;
    assert_eq!(
        rows,
        json!([
            {"device": "a", "avg": 22.0, "min": 20.0, "max": 24.0, "n": 4, "rows": 5, "hum": 210},
            {"device": "b", "avg": 12.0, "min": 10.0, "max": 14.0, "n": 3, "rows": 3, "hum": 153},
            {"device": "c", "avg": 30.0, "min": 30.0, "max": 30.0, "n": 1, "rows": 1, "hum": 60},
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_bin_and_date_trunc_windows() {
    let w = weather();
    let rows = json_of(
        &w,
        "SELECT date_bin(INTERVAL '2 seconds', ts) AS w, count(*) AS n FROM weather \
         WHERE device = 'a' GROUP BY w ORDER BY w",
    )
    .await;
    assert_eq!(
        rows,
        json!([{"w": 0, "n": 1}, {"w": 2000, "n": 2}, {"w": 4000, "n": 2}])
    );
    let rows = json_of(
        &w,
        "SELECT date_trunc('minute', ts) AS m, max(hum) AS hum FROM weather GROUP BY m ORDER BY m",
    )
    .await;
    assert_eq!(rows, json!([{"m": 0, "hum": 52}, {"m": 60000, "hum": 60}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_stops_the_scan_early() {
    const ROWS: usize = 1_000_000;
    let big = MemBucket::generated(4, ROWS / 4).into_arc();
    let opts = SqlOptions::default();

    // LIMIT pushed into the scan.
    let rows = query(&[("big", &big)], "SELECT n FROM big LIMIT 10", &opts).await;
    assert_eq!(rows.ok().and_then(|r| r.as_array().map(Vec::len)), Some(10));
    assert!(big.wait_finished(1), "scan did not stop");
    assert_eq!(big.delivered.load(Ordering::SeqCst), 10);

    // LIMIT above a filter: the scan stops when the stream is dropped.
    let rows = query(
        &[("big", &big)],
        "SELECT n FROM big WHERE n % 2 = 1 LIMIT 5",
        &opts,
    )
    .await;
    assert_eq!(
        rows.ok(),
        Some(json!([{"n": 1}, {"n": 3}, {"n": 5}, {"n": 7}, {"n": 9}]))
    );
    assert!(big.wait_finished(2), "scan did not stop");
    let delivered = big.delivered.load(Ordering::SeqCst) - 10;
    assert!(delivered < ROWS / 10, "scan delivered {delivered} rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_session_statements_are_rejected() {
    let w = weather();
    let opts = SqlOptions::default();
    for sql in [
        "CREATE TABLE t AS SELECT 1",
        "DROP TABLE weather",
        "CREATE VIEW v AS SELECT * FROM weather",
        "SET datafusion.execution.batch_size = 1",
        "INSERT INTO weather (ts, device) VALUES (to_timestamp_millis(1), 'a')",
        "COPY (SELECT 1) TO '/tmp/thicket-sql-test.csv'",
        "DELETE FROM weather",
    ] {
        match error_of(&w, sql, &opts).await {
            QueryError::Sql(msg) => {
                assert!(!msg.is_empty(), "{sql}");
                if sql.starts_with("CREATE") || sql.starts_with("DROP") || sql.starts_with("SET") {
                    assert!(msg.contains("read-only"), "{sql}: {msg}");
                }
            }
            other => panic!("{sql}: unexpected {other:?}"),
        }
    }
    assert!(!std::path::Path::new("/tmp/thicket-sql-test.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_are_named_in_the_error() {
    let w = weather();
    let opts = SqlOptions::default();
    for (sql, name) in [
        ("SELECT * FROM nosuchbucket", "nosuchbucket"),
        ("SELECT nosuchcolumn FROM weather", "nosuchcolumn"),
        ("SELECT nosuchfn(temp) FROM weather", "nosuchfn"),
    ] {
        match error_of(&w, sql, &opts).await {
            QueryError::Sql(msg) => assert!(msg.contains(name), "{sql}: {msg}"),
            other => panic!("{sql}: unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_names_are_literal() {
    let w = weather();
    let rows = query(
        &[("My-Bucket_1", &w)],
        "SELECT count(*) AS n FROM \"My-Bucket_1\"",
        &SqlOptions::default(),
    )
    .await;
    assert_eq!(rows.ok(), Some(json!([{"n": 9}])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_memory_pool_exhausts() {
    let big = MemBucket::generated(4, 50_000).into_arc();
    let opts = SqlOptions {
        memory_bytes: 256 * 1024,
        ..SqlOptions::default()
    };
    for sql in [
        "SELECT n FROM big ORDER BY value DESC",
        "SELECT n, count(*) FROM big GROUP BY n",
    ] {
        match query(&[("big", &big)], sql, &opts).await {
            Err(QueryError::ResourcesExhausted(_)) => {}
            other => panic!("{sql}: expected ResourcesExhausted, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_scan_times_out_and_stops() {
    const ROWS: usize = 10_000;
    let slow = MemBucket::generated(1, ROWS)
        .with_row_delay(Duration::from_millis(1))
        .into_arc();
    let opts = SqlOptions {
        timeout_ms: 100,
        ..SqlOptions::default()
    };
    match query(&[("slow", &slow)], "SELECT avg(value) FROM slow", &opts).await {
        Err(QueryError::Timeout(100)) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(slow.wait_finished(1), "scan did not stop after the timeout");
    assert!(slow.delivered.load(Ordering::SeqCst) < ROWS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_rows_are_bounded() {
    let w = weather();
    let opts = SqlOptions {
        max_rows: 5,
        ..SqlOptions::default()
    };
    assert!(matches!(
        error_of(&w, "SELECT * FROM weather", &opts).await,
        QueryError::TooLarge(_)
    ));
    assert!(
        query(&[("weather", &w)], "SELECT * FROM weather LIMIT 5", &opts)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_errors_keep_their_kind() {
    let broken = MemBucket::generated(1, 10).failing().into_arc();
    match query(
        &[("broken", &broken)],
        "SELECT * FROM broken",
        &SqlOptions::default(),
    )
    .await
    {
        Err(QueryError::Engine(crate::error::EngineError::Corrupt(msg))) => {
            assert_eq!(msg, "test block")
        }
        other => panic!("expected the storage error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_results_keep_their_columns() {
    let w = weather();
    let batches = run_sql(
        tables(&[("weather", &w)]),
        "SELECT ts, temp FROM weather WHERE device = 'nobody'",
        &SqlOptions::default(),
    )
    .await
    .expect("query");
    assert_eq!(batches_to_csv(&batches).expect("csv"), "ts,temp\n");
    assert_eq!(batches_to_json(&batches).expect("json"), "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_pushed_down_scan() {
    let w = weather();
    let batches = run_sql(
        tables(&[("weather", &w)]),
        "EXPLAIN SELECT ts, temp FROM weather WHERE ts >= to_timestamp_millis(2000) AND device = 'a'",
        &SqlOptions::default(),
    )
    .await
    .expect("explain");
    let text = batches_to_csv(&batches).expect("csv");
    assert!(
        text.contains(r#"BucketScanExec: ts=[2000, 9223372036854775807], tags=[(""device"", [""a""])], fields=[""temp""]"#),
        "{text}"
    );
    // EXPLAIN plans only: nothing was scanned.
    assert_eq!(w.requests.lock().len(), 0);
}
