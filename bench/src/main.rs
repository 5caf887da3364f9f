//! Thicket's workload generator and benchmarks. Reports figures; never passes or fails
//! on speed. Build with `--release`.
//!
//! `thicket-bench engine` runs the engine benchmarks of the 1000-device workload
//! (fields temperature, humidity, pressure; tag `device`; one sample per device every
//! 10 s) and of the long-span workload (100 devices, one sample a minute, one year).
//! `thicket-bench cluster` drives three real `thicket serve` processes on loopback.

mod cluster_bench;
mod engine_bench;

/// mimalloc instead of glibc's allocator: apply and reads allocate many small, short-lived
/// buffers (parsed records, rows, rollup rows); glibc's malloc/free took about an eighth
/// of apply's CPU in a profile, mimalloc is a well-kept drop-in that is much cheaper
/// there. RocksDB's C++ keeps its own allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "thicket-bench",
    about = "Thicket workload generator and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// In-process engine benchmarks (apply, newest values, rollup windows, SQL, disk use).
    Engine(engine_bench::EngineArgs),
    /// Three `thicket serve` processes on loopback: write throughput, latency, failover.
    Cluster(cluster_bench::ClusterArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Engine(a) => engine_bench::run(a),
        Cmd::Cluster(a) => cluster_bench::run(a),
    }
}
