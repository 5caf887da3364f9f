//! `thicket certs`: creates the cluster CA (once) and node certificates naming their ids.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use thicket_cluster::tls;

/// Options of `thicket certs`.
#[derive(clap::Args, Debug, Clone)]
pub struct CertsArgs {
    /// Directory for ca.pem, ca-key.pem and node-<id>.pem / node-<id>-key.pem. An existing
    /// CA there is reused, so new nodes can be issued certificates later.
    #[arg(long, default_value = "./certs")]
    pub dir: PathBuf,
    /// Node ids to issue certificates for, e.g. `1,2,3`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<u64>,
}

/// Runs `thicket certs`.
pub fn run(args: &CertsArgs) -> Result<()> {
    if args.nodes.is_empty() {
        bail!("--nodes names no node");
    }
    let created = tls::ensure_ca(&args.dir)
        .with_context(|| format!("creating the cluster CA in {}", args.dir.display()))?;
    println!(
        "{} cluster CA {}",
        if created { "created" } else { "reusing" },
        args.dir.join("ca.pem").display()
    );
    for id in &args.nodes {
        let f = tls::issue_node_cert(&args.dir, *id)
            .with_context(|| format!("issuing the certificate of node {id}"))?;
        println!("node {id}: {} and {}", f.cert.display(), f.key.display());
    }
    println!(
        "keep {} off the nodes: it signs new members",
        args.dir.join("ca-key.pem").display()
    );
    Ok(())
}
