//! The `thicket` command line.

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
    /// Run a node (with no flags: a single node with its data in ./data).
    Serve(thicket_api::serve::ServeArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    // Three nodes may share two cores: keep the async worker pool small.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Serve(args) => rt.block_on(thicket_api::serve::serve(args)),
    }
}
