//! Cluster benchmarks against three real `thicket serve` processes on 127.0.0.1 (fsync
//! on): replicated write throughput over HTTP (records per request × concurrency),
//! single-record latency through the leader and through a follower, and failover drills
//! (kill -9 of the leader under load, time until the first acknowledged write).
//!
//! CPU is read per node and per thread from /proc, so the report splits core-µs per
//! record into: `tokio` (HTTP parse, Raft, QUIC), `thicket-log` (log append + fsync),
//! `thicket-apply` (engine apply) and `rocksdb` (flush and compaction).

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thicket_chaos_tests::ProcessCluster;

/// Cluster benchmark options.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// The `thicket` binary (default: beside this one).
    #[arg(long)]
    thicket: Option<PathBuf>,
    /// Seconds per throughput cell.
    #[arg(long, default_value_t = 8)]
    secs: u64,
    /// Records per request to try.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    sizes: Vec<usize>,
    /// Concurrent clients to try.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    concurrency: Vec<usize>,
    /// Single-record writes per latency series.
    #[arg(long, default_value_t = 2000)]
    latency_writes: usize,
    /// Failover drills (kill -9 of the leader under load).
    #[arg(long, default_value_t = 20)]
    drills: usize,
    /// Where the nodes keep their data (a temp dir by default).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// CPU seconds per thread-name group of one process, from /proc.
fn thread_cpu(pid: u32) -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in rd.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks: f64 = rest
            .get(11)
            .and_then(|u| u.parse::<f64>().ok())
            .unwrap_or(0.0)
            + rest
                .get(12)
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
        let group = if name.starts_with("thicket-apply") {
            "apply"
        } else if name.starts_with("thicket-log") {
            "log append"
        } else if name.starts_with("rocksdb") {
            "compaction"
        } else {
            "parse+raft+quic"
        };
        *out.entry(group).or_insert(0.0) += ticks / hz;
    }
    out
}

/// CPU seconds of this process (the load generator), which shares the cores.
fn own_cpu() -> f64 {
    thread_cpu(std::process::id()).values().sum()
}

struct Cluster {
    pc: ProcessCluster,
    http: reqwest::Client,
}

impl Cluster {
    fn start(bin: &Path, dir: Option<PathBuf>) -> Result<Cluster> {
        Ok(Cluster {
            pc: ProcessCluster::start(bin, 3, dir, &[])?,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(512)
                .build()?,
        })
    }

    async fn leader(&self) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for n in self.pc.nodes.values().filter(|n| n.is_up()) {
                let r = self
                    .http
                    .get(format!("http://{}/v1/cluster", n.http))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                if let Ok(r) = r {
                    if let Ok(v) = r.json::<serde_json::Value>().await {
                        if v["state"] == "Leader" {
                            return Ok(n.id);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("no leader")
    }

    /// Records stored in the bench bucket, as `node` sees them (a linearizable read).
    async fn stored_records(&self, node: &str) -> Result<u64> {
        let r = self
            .http
            .get(format!(
                "http://{node}/v1/users/bench/buckets/env/data?agg=1y&agg_type=count&fields=temperature"
            ))
            .timeout(Duration::from_secs(60))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("counting records on {node}: {}", r.text().await?);
        }
        let v: serde_json::Value = r.json().await?;
        let rows = v.as_array().context("count rows")?;
        Ok(rows
            .iter()
            .filter_map(|row| row["temperature"].as_u64())
            .sum())
    }

    fn cpu(&self) -> BTreeMap<&'static str, f64> {
        let mut total = BTreeMap::new();
        for n in self.pc.nodes.values() {
            if let Some(pid) = n.pid() {
                for (k, v) in thread_cpu(pid) {
                    *total.entry(k).or_insert(0.0) += v;
                }
            }
        }
        total
    }
}

/// Devices of the fleet (the `device` tag), as in the engine benchmark.
const DEVICES: usize = 1000;

/// A JSON array of `records` samples. Like a fleet, each device is written by one client
/// only, in time order: client `w` of `clients` owns the devices `w, w + clients, ...`
/// and cycles through them, with timestamps from its own counter `base_ts` upward.
fn body(records: usize, base_ts: i64, w: usize, clients: usize) -> String {
    use std::fmt::Write as _;
    // The load generator shares the two cores with the three nodes: the values cycle
    // through small fixed sets, so they are formatted once, not per record.
    static VALUES: std::sync::OnceLock<[Vec<String>; 3]> = std::sync::OnceLock::new();
    let [temperature, humidity, pressure] = VALUES.get_or_init(|| {
        [
            (0..17)
                .map(|k| format!("{:.2}", 20.0 + k as f64 * 0.1))
                .collect(),
            (0..11).map(|k| format!("{:.1}", 40.0 + k as f64)).collect(),
            (0..7)
                .map(|k| format!("{:.1}", 1000.0 + k as f64))
                .collect(),
        ]
    });
    let clients = clients.clamp(1, DEVICES);
    let owned = DEVICES.div_ceil(clients).max(1);
    let mut s = String::with_capacity(records * 90 + 2);
    s.push('[');
    for i in 0..records {
        if i > 0 {
            s.push(',');
        }
        let device = (w % clients + clients * (i % owned)) % DEVICES;
        let _ = write!(
            s,
            r#"{{"ts":{},"device":"d{}","temperature":{},"humidity":{},"pressure":{}}}"#,
            base_ts + i as i64,
            device,
            temperature[i % 17],
            humidity[i % 11],
            pressure[i % 7]
        );
    }
    s.push(']');
    s
}

/// Failed requests by cause (status code or transport error), for the report.
#[derive(Default)]
struct Failures(std::sync::Mutex<BTreeMap<String, u64>>);

impl Failures {
    fn add(&self, why: String) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(why).or_default() += 1;
        }
    }
    fn report(&self) -> String {
        let m = self.0.lock().map(|m| m.clone()).unwrap_or_default();
        m.iter()
            .map(|(k, v)| format!("{v}× {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs the cluster benchmarks and prints the figures.
pub fn run(a: ClusterArgs) -> Result<()> {
    let bin = match &a.thicket {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("thicket"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p thicket-api`",
            bin.display()
        );
    }
    // The nodes inherit it: errors only, so drills do not flood the report, unless
    // THICKET_BENCH_NODE_LOG asks for more (e.g. `openraft=info` to time elections).
    // Set before any thread starts.
    let node_log = std::env::var("THICKET_BENCH_NODE_LOG").unwrap_or_else(|_| "error".into());
    std::env::set_var("RUST_LOG", node_log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(a, bin))
}

async fn run_async(a: ClusterArgs, bin: PathBuf) -> Result<()> {
    let mut c = Cluster::start(&bin, a.dir.clone())?;
    let leader = c.leader().await?;
    let urls: Vec<String> = c.pc.nodes.values().map(|n| n.http.clone()).collect();
    let r = c
        .http
        .post(format!("http://{}/v1/users/bench/buckets", urls[0]))
        .body(r#"{"bucket":"env","name":"Env","config":{"source":"api","tags":["device"]}}"#)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("creating the bucket: {}", r.text().await?);
    }
    println!(
        "3 nodes on loopback, fsync on; leader is node {leader}; writes round-robin over all nodes"
    );
    println!(
        "{:>8} {:>6} {:>12} {:>14} {:>10} | core-µs/record: {:>8} {:>8} {:>8} {:>8} {:>8} | {:>7}",
        "rec/req",
        "conc",
        "records/s",
        "values/s",
        "errors",
        "total",
        "parse+",
        "log",
        "apply",
        "compact",
        "client"
    );
    let ts = Arc::new(AtomicU64::new(1_000_000));
    let mut acked_total = 0u64;
    let mut failed_total = 0u64;
    for &size in &a.sizes {
        for &conc in &a.concurrency {
            let before = c.cpu();
            let client_before = own_cpu();
            let done = Arc::new(AtomicU64::new(0));
            let errors = Arc::new(AtomicU64::new(0));
            let failures = Arc::new(Failures::default());
            let stop_at = Instant::now() + Duration::from_secs(a.secs);
            let mut tasks = Vec::new();
            let cell_ts = ts.fetch_add(1 << 32, Ordering::Relaxed) as i64;
            for w in 0..conc {
                let (http, url) = (c.http.clone(), urls[w % urls.len()].clone());
                let (done, errors, failures) = (done.clone(), errors.clone(), failures.clone());
                tasks.push(tokio::spawn(async move {
                    // This client's own clock: its devices' samples stay in time order.
                    let mut base = cell_ts;
                    // Bounded: by time, and by a request count far above what time allows.
                    for _ in 0..10_000_000u64 {
                        if Instant::now() >= stop_at {
                            break;
                        }
                        let payload = body(size, base, w, conc);
                        base += size as i64;
                        let r = http
                            .post(format!("http://{url}/v1/users/bench/buckets/env/data"))
                            .body(payload)
                            .timeout(Duration::from_secs(30))
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status().is_success() => {
                                done.fetch_add(size as u64, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                let status = r.status();
                                let text = r.text().await.unwrap_or_default();
                                failures.add(format!(
                                    "{status}: {}",
                                    text.chars().take(120).collect::<String>()
                                ));
                            }
                            Err(e) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                failures.add(if e.is_timeout() {
                                    "client timeout".into()
                                } else {
                                    format!("{e}")
                                });
                            }
                        }
                    }
                }));
            }
            let t0 = Instant::now();
            for t in tasks {
                let _ = t.await;
            }
            let secs = t0.elapsed().as_secs_f64();
            let after = c.cpu();
            let client_us =
                (own_cpu() - client_before) * 1e6 / (done.load(Ordering::Relaxed) as f64).max(1.0);
            let n = done.load(Ordering::Relaxed) as f64;
            acked_total += done.load(Ordering::Relaxed);
            failed_total += errors.load(Ordering::Relaxed);
            let us = |k: &str| {
                (after.get(k).unwrap_or(&0.0) - before.get(k).unwrap_or(&0.0)) * 1e6 / n.max(1.0)
            };
            let total: f64 = ["parse+raft+quic", "log append", "apply", "compaction"]
                .iter()
                .map(|k| us(k))
                .sum();
            println!(
                "{:>8} {:>6} {:>12.0} {:>14.0} {:>10} | {:>23.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {:>7.1}",
                size,
                conc,
                n / secs,
                3.0 * n / secs,
                errors.load(Ordering::Relaxed),
                total,
                us("parse+raft+quic"),
                us("log append"),
                us("apply"),
                us("compaction"),
                client_us
            );
            if errors.load(Ordering::Relaxed) > 0 {
                println!("    failed requests: {}", failures.report());
            }
        }
    }

    // The figures count acknowledged records: check that every node stores them all
    // (each record has its own device and timestamp, so none replaces another).
    for n in c.pc.nodes.values() {
        let stored = c.stored_records(&n.http).await?;
        println!(
            "node {}: stores {stored} records; {acked_total} were acknowledged ({failed_total} requests failed)",
            n.id
        );
        if stored < acked_total {
            bail!(
                "node {} lost acknowledged records: {stored} < {acked_total}",
                n.id
            );
        }
    }

    // Latency: single-record writes, one at a time, through the leader and a follower.
    let leader = c.leader().await?;
    let follower = *c
        .pc
        .nodes
        .keys()
        .find(|i| **i != leader)
        .context("no follower")?;
    for (label, id) in [("leader", leader), ("follower", follower)] {
        let url = c.pc.nodes[&id].http.clone();
        let mut lat = Vec::with_capacity(a.latency_writes);
        for _ in 0..a.latency_writes {
            let base = ts.fetch_add(1, Ordering::Relaxed) as i64;
            let t = Instant::now();
            let r = c
                .http
                .post(format!("http://{url}/v1/users/bench/buckets/env/data"))
                .body(body(1, base, 0, 1))
                .send()
                .await?;
            if r.status().is_success() {
                lat.push(t.elapsed());
            }
        }
        lat.sort();
        println!(
            "latency through the {label} (node {id}), {} single-record writes: p50 {:.2} ms, p99 {:.2} ms",
            lat.len(),
            pct(&lat, 0.5).as_secs_f64() * 1e3,
            pct(&lat, 0.99).as_secs_f64() * 1e3
        );
    }

    // Failover drills: load through every node; kill -9 the leader; time until the
    // first acknowledged write through a survivor; restart the killed node.
    let mut times = Vec::new();
    for drill in 0..a.drills {
        let leader = c.leader().await?;
        let survivors: Vec<String> =
            c.pc.nodes
                .values()
                .filter(|n| n.id != leader)
                .map(|n| n.http.clone())
                .collect();
        let acked_after_kill = Arc::new(slot::Slot::default());
        let killed_at = Arc::new(slot::Slot::default());
        let stop_at = Instant::now() + Duration::from_secs(15);
        let mut tasks = Vec::new();
        for w in 0..16 {
            let http = c.http.clone();
            let url = survivors[w % survivors.len()].clone();
            let (ts, acked, killed) = (ts.clone(), acked_after_kill.clone(), killed_at.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..1_000_000u64 {
                    if Instant::now() >= stop_at || acked.get().is_some() {
                        break;
                    }
                    let base = ts.fetch_add(10, Ordering::Relaxed) as i64;
                    let sent = Instant::now();
                    let r = http
                        .post(format!("http://{url}/v1/users/bench/buckets/env/data"))
                        .body(body(10, base, w, 16))
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    if let (Ok(r), Some(k)) = (r, killed.get()) {
                        // Only a write sent after the kill proves the new leader serves.
                        if r.status().is_success() && sent >= k {
                            acked.set_once(Instant::now());
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        killed_at.set_once(Instant::now());
        c.pc.node(leader).kill9();
        for t in tasks {
            let _ = t.await;
        }
        match (killed_at.get(), acked_after_kill.get()) {
            (Some(k), Some(a)) => {
                let d = a.duration_since(k);
                eprintln!(
                    "drill {drill}: killed node {leader} at {} (unix ms); first acknowledged write after {} ms",
                    unix_ms_at(k),
                    d.as_millis()
                );
                times.push(d);
            }
            _ => println!("drill {drill}: no acknowledged write within 15 s"),
        }
        c.pc.node(leader).spawn()?;
        // Let the restarted node catch up before the next drill.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    times.sort();
    if !times.is_empty() {
        println!(
            "failover over {} drills (kill -9 of the leader under load): first acknowledged write after p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            times.len(),
            pct(&times, 0.5).as_secs_f64() * 1e3,
            pct(&times, 0.99).as_secs_f64() * 1e3,
            times.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
        );
    }
    Ok(())
}

/// A set-once slot for an `Instant`, shared between tasks.
mod slot {
    use std::sync::Mutex;
    use std::time::Instant;

    #[derive(Default)]
    pub struct Slot(Mutex<Option<Instant>>);

    impl Slot {
        pub fn set_once(&self, t: Instant) {
            if let Ok(mut g) = self.0.lock() {
                g.get_or_insert(t);
            }
        }
        pub fn get(&self) -> Option<Instant> {
            self.0.lock().ok().and_then(|g| *g)
        }
    }
}

/// Wall-clock time (unix ms) of an `Instant` in the past, to line up with node logs.
fn unix_ms_at(t: Instant) -> u128 {
    let ago = t.elapsed();
    (std::time::SystemTime::now() - ago)
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
