//! The `thicket` command line.

/// mimalloc instead of glibc's allocator: apply and reads allocate many small, short-lived
/// buffers (parsed records, rows, rollup rows); glibc's malloc/free took about an eighth
/// of apply's CPU in a profile, mimalloc is a well-kept drop-in that is much cheaper
/// there. RocksDB's C++ keeps its own allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "thicket",
    version,
    about = "Thicket: a self-hosted IoT data server"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node (with no flags: a single-node cluster with its data in ./data).
    Serve(Box<thicket_api::settings::ServeArgs>),
    /// Create the cluster CA and node certificates for mutual TLS between nodes.
    Certs(thicket_api::certs::CertsArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(args) => {
            let settings = thicket_api::settings::Settings::resolve(&args)?;
            // Three nodes may share two cores: keep the async worker pool small.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(settings.workers.max(1))
                .enable_all()
                .build()?;
            rt.block_on(thicket_api::serve::serve(settings))
        }
        Cmd::Certs(args) => thicket_api::certs::run(&args),
    }
}
