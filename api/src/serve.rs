//! `thicket serve`: one node. With no flags: a single-node cluster in `./data` that
//! initialises itself, HTTP on 127.0.0.1:8080. With `--cluster`, `--peers` and
//! certificates: a member of a multi-node cluster.

use crate::http;
use crate::settings::Settings;
use anyhow::{Context, Result};
use thicket_cluster::ClusterNode;

/// Runs the node until SIGTERM or Ctrl-C, then drains requests, stops Raft and flushes.
pub async fn serve(settings: Settings) -> Result<()> {
    let config = settings.node_config()?;
    let listener = tokio::net::TcpListener::bind(&settings.http)
        .await
        .with_context(|| format!("binding HTTP to {}", settings.http))?;
    let node = ClusterNode::start(config)
        .await
        .with_context(|| format!("starting node {}", settings.node_id))?;
    tracing::info!(
        "thicket node {} serving HTTP on {} (cluster port {}) with data in {}",
        node.id(),
        listener.local_addr()?,
        if node.cluster_addr().is_empty() {
            "none"
        } else {
            node.cluster_addr()
        },
        settings.data_dir.display()
    );
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, http::router(node.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    node.shutdown().await;
    tracing::info!("node {} stopped cleanly", node.id());
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
