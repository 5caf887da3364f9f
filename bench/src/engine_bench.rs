//! Engine benchmarks: apply throughput in batches of 1000 records, newest values of all
//! devices, per-device hourly/daily windows through rollups, SQL over raw rows, and disk
//! bytes per stored field value.

use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};
use thicket_engine::sql::{run_sql, SqlOptions};
use thicket_engine::{Command, DocKind, Engine, EngineOptions, ReadQuery, ReadResult};

/// Engine benchmark options.
#[derive(clap::Args, Debug)]
pub struct EngineArgs {
    /// Rows of the 1000-device workload.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Devices of the main workload.
    #[arg(long, default_value_t = 1000)]
    devices: u64,
    /// Days of the long-span workload (100 devices, one sample a minute); 0 skips it.
    #[arg(long, default_value_t = 365)]
    long_days: u64,
    /// Where to put the data (a temp dir by default).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Timed repetitions of each read.
    #[arg(long, default_value_t = 5)]
    reps: u32,
    /// Reuse the main workload already written into `--dir` by an earlier run with the
    /// same `--rows`/`--devices` (profiles the reads alone).
    #[arg(long)]
    reuse: bool,
    /// Skip the SQL figures (to profile the other reads alone).
    #[arg(long)]
    skip_sql: bool,
    /// Memtable size per column family in MiB (default: the engine's).
    #[arg(long)]
    write_buffer_mb: Option<usize>,
}

const BATCH: u64 = 1000;
const T0: i64 = 1_700_000_000_000;

/// Process CPU time (user + system) so far.
fn cpu_time() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// CPU time of the calling thread (apply runs on it; RocksDB's flushes and compactions
/// run on its own background threads).
fn thread_cpu_time() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn setup(engine: &Engine, bucket: &str) -> Result<()> {
    let cmds = [
        Command::PutDoc {
            kind: DocKind::User,
            user: "bench".into(),
            parent: String::new(),
            id: String::new(),
            doc: "{}".into(),
        },
        Command::CreateBucket {
            user: "bench".into(),
            bucket: bucket.into(),
            doc: r#"{"config":{"source":"api","tags":["device"]}}"#.into(),
        },
    ];
    for r in engine.apply(&cmds, b"setup")? {
        if let Err(e) = r {
            if !matches!(e, thicket_engine::CommandError::Conflict(_)) {
                bail!("setup: {e}");
            }
        }
    }
    Ok(())
}

/// Builds the JSON body of batch `b`: sample `i` of the workload is device `i % devices`
/// at `T0 + (i / devices) * step_ms`.
fn body(b: u64, devices: u64, step_ms: i64, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    out.push('[');
    for k in 0..BATCH {
        let i = b * BATCH + k;
        let d = i % devices;
        let ts = T0 + (i / devices) as i64 * step_ms;
        let x = (i.wrapping_mul(2_654_435_761) % 1000) as f64;
        if k > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"ts":{ts},"device":"dev-{d:04}","temperature":{:.2},"humidity":{:.1},"pressure":{:.1}}}"#,
            15.0 + x / 40.0,
            30.0 + x / 20.0,
            990.0 + x / 25.0
        );
    }
    out.push(']');
}

/// Applies `rows` rows in batches of 1000; returns (wall, process cpu, apply-thread cpu)
/// of the apply calls only.
fn ingest(
    engine: &Engine,
    bucket: &str,
    rows: u64,
    devices: u64,
    step_ms: i64,
) -> Result<(Duration, Duration, Duration)> {
    let mut wall = Duration::ZERO;
    let mut cpu = Duration::ZERO;
    let mut thread_cpu = Duration::ZERO;
    let mut s = String::new();
    let batches = rows / BATCH;
    for b in 0..batches {
        body(b, devices, step_ms, &mut s);
        let cmd = Command::WriteRecords {
            user: "bench".into(),
            bucket: bucket.into(),
            records: std::mem::take(&mut s),
            default_ts: 0,
        };
        let (t, c, tc) = (Instant::now(), cpu_time(), thread_cpu_time());
        let res = engine.apply(std::slice::from_ref(&cmd), &b.to_be_bytes())?;
        wall += t.elapsed();
        cpu += cpu_time() - c;
        thread_cpu += thread_cpu_time() - tc;
        if let Some(Err(e)) = res.into_iter().next() {
            bail!("batch {b}: {e}");
        }
        if let Command::WriteRecords { records, .. } = cmd {
            s = records;
        }
        if b % 1000 == 0 && b > 0 {
            eprintln!("  {} rows applied", b * BATCH);
        }
    }
    Ok((wall, cpu, thread_cpu))
}

fn time<T>(reps: u32, mut f: impl FnMut() -> Result<T>) -> Result<(Duration, T)> {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let v = f()?;
        best = best.min(t.elapsed());
        last = Some(v);
    }
    Ok((best, last.context("no repetition ran")?))
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => n += dir_bytes(&e.path()),
                Ok(m) => n += m.len(),
                Err(_) => {}
            }
        }
    }
    n
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn agg_query(params: &[(&str, &str)]) -> ReadQuery {
    ReadQuery::from_params(params.iter().copied()).expect("valid query")
}

pub fn run(a: EngineArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let mut eo = EngineOptions::default();
    if let Some(mb) = a.write_buffer_mb {
        eo.write_buffer_bytes = mb << 20;
    }
    let engine = Engine::open(root.join("main"), eo.clone())?;
    setup(&engine, "sensors")?;
    println!(
        "== 1000-device workload: {} rows, {} devices, 3 fields, one sample per device every 10 s",
        a.rows, a.devices
    );
    if a.reuse && a.dir.is_none() {
        bail!("--reuse needs --dir");
    }
    let (wall, cpu, thread_cpu) = if a.reuse {
        (Duration::from_secs(1), Duration::ZERO, Duration::ZERO)
    } else {
        ingest(&engine, "sensors", a.rows, a.devices, 10_000)?
    };
    let rps = a.rows as f64 / wall.as_secs_f64();
    if a.reuse {
        println!("apply: skipped (--reuse)");
    } else {
        println!("apply: {:.0} records/s, {:.0} field values/s, {:.2} core-µs/record ({:.2} on the applying thread, the rest RocksDB flush/compaction; wall {:.1} s, cpu {:.1} s, batches of {BATCH})",
        rps, rps * 3.0, cpu.as_secs_f64() * 1e6 / a.rows as f64, thread_cpu.as_secs_f64() * 1e6 / a.rows as f64, wall.as_secs_f64(), cpu.as_secs_f64());
    }
    engine.flush()?;
    let (d, rows) = time(a.reps, || {
        Ok(engine.latest("bench", "sensors", &[], None)?)
    })?;
    println!(
        "latest value of all devices: {} ({} rows)",
        ms(d),
        rows.rows.len()
    );
    let span_ms = (a.rows / a.devices) as i64 * 10_000;
    let (min_ts, max_ts) = (T0.to_string(), (T0 + span_ms).to_string());
    for agg in ["mean", "min", "max"] {
        let q = agg_query(&[
            ("agg", "1h"),
            ("agg_type", agg),
            ("group_by", "device"),
            ("min_ts", &min_ts),
            ("max_ts", &max_ts),
        ]);
        let (d, r) = time(a.reps, || Ok(engine.read_bucket("bench", "sensors", &q)?))?;
        let n = match r {
            ReadResult::Agg(r) => r.rows.len(),
            ReadResult::Raw(r) => r.rows.len(),
        };
        println!(
            "{agg} per device per 1h over the whole range (rollups): {} ({n} rows)",
            ms(d)
        );
    }
    // One engine on this machine: a query may use every core (the scan splits the series).
    let opts = SqlOptions {
        target_partitions: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..SqlOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sql_all = "SELECT device, date_bin(INTERVAL '1 hour', ts) AS h, avg(temperature), min(temperature), max(temperature) FROM sensors GROUP BY device, h";
    let sql_one = "SELECT date_bin(INTERVAL '1 hour', ts) AS h, avg(temperature), min(temperature), max(temperature) FROM sensors WHERE device = 'dev-0007' GROUP BY h";
    let sql_cases = if a.skip_sql {
        Vec::new()
    } else {
        vec![("all devices", sql_all), ("one device", sql_one)]
    };
    for (label, sql) in sql_cases {
        let (d, n) = time(a.reps.min(3), || {
            let tables = engine.sql_tables("bench");
            let batches = rt.block_on(run_sql(tables, sql, &opts))?;
            Ok(batches.iter().map(|b| b.num_rows()).sum::<usize>())
        })?;
        println!(
            "SQL mean/min/max per 1h over raw rows, {label}: {} ({n} rows)",
            ms(d)
        );
    }
    let flushed = dir_bytes(&root.join("main"));
    engine.compact()?;
    let bytes = dir_bytes(&root.join("main"));
    println!(
        "disk: {bytes} bytes for {} field values = {:.2} bytes/value after full compaction ({:.2} right after flush); includes rollups and newest rows",
        a.rows * 3,
        bytes as f64 / (a.rows * 3) as f64,
        flushed as f64 / (a.rows * 3) as f64
    );
    drop(engine);

    if a.long_days > 0 {
        let engine = Engine::open(root.join("long"), eo)?;
        setup(&engine, "long")?;
        let rows = 100 * 1440 * a.long_days;
        println!(
            "== long-span workload: {rows} rows, 100 devices, one sample a minute, {} days",
            a.long_days
        );
        let (wall, cpu, thread_cpu) = ingest(&engine, "long", rows, 100, 60_000)?;
        let rps = rows as f64 / wall.as_secs_f64();
        println!(
            "apply: {:.0} records/s, {:.2} core-µs/record ({:.2} on the applying thread)",
            rps,
            cpu.as_secs_f64() * 1e6 / rows as f64,
            thread_cpu.as_secs_f64() * 1e6 / rows as f64
        );
        engine.flush()?;
        let max_ts = (T0 + a.long_days as i64 * 86_400_000).to_string();
        let t0 = T0.to_string();
        for agg in ["mean", "min", "max"] {
            let q = agg_query(&[
                ("agg", "1d"),
                ("agg_type", agg),
                ("group_by", "device"),
                ("min_ts", &t0),
                ("max_ts", &max_ts),
            ]);
            let (d, r) = time(a.reps, || Ok(engine.read_bucket("bench", "long", &q)?))?;
            let n = match r {
                ReadResult::Agg(r) => r.rows.len(),
                ReadResult::Raw(r) => r.rows.len(),
            };
            println!(
                "{agg} per device per 1d over the span (rollups): {} ({n} rows)",
                ms(d)
            );
        }
        engine.compact()?;
        let bytes = dir_bytes(&root.join("long"));
        println!(
            "disk: {:.2} bytes/value after full compaction",
            bytes as f64 / (rows * 3) as f64
        );
    }
    Ok(())
}
