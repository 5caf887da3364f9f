//! `thicket serve`: one node. With no flags: data in `./data`, HTTP on 127.0.0.1:8080.

use crate::http;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use thicket_cluster::{LocalNode, LocalNodeOptions};
use thicket_engine::{Engine, EngineOptions};

/// Options of `thicket serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Data directory (created if missing); the state lives in `<dir>/groups/0/state`.
    #[arg(long, env = "THICKET_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// HTTP listen address. Defaults to loopback: authentication is not in place yet.
    #[arg(long, env = "THICKET_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
}

/// Runs the node until SIGTERM or Ctrl-C, then drains requests and flushes the state.
pub async fn serve(args: ServeArgs) -> Result<()> {
    let state_dir = args.data_dir.join("groups").join("0").join("state");
    let engine = Arc::new(
        Engine::open(&state_dir, EngineOptions::default())
            .with_context(|| format!("opening the state in {}", state_dir.display()))?,
    );
    let node = LocalNode::start(engine.clone(), LocalNodeOptions::default())?;
    let listener = tokio::net::TcpListener::bind(&args.http)
        .await
        .with_context(|| format!("binding HTTP to {}", args.http))?;
    tracing::info!(
        "thicket serving HTTP on {} with data in {}",
        listener.local_addr()?,
        args.data_dir.display()
    );
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, http::router(node))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    let marker = engine.flush()?;
    tracing::info!("flushed state at marker {marker:?}; bye");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
