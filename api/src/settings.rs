//! `thicket serve`'s settings: defaults, then a TOML file (`--config`), then `THICKET_*`
//! environment variables, then flags; later sources win.

use anyhow::{bail, Context, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use thicket_cluster::tls::TlsFiles;
use thicket_cluster::NodeConfig;
use thicket_engine::EngineOptions;

/// Flags of `thicket serve`. Every one may also be set in the TOML file (same name with
/// underscores) or as `THICKET_<NAME>` in the environment.
#[derive(clap::Args, Debug, Clone, Default, Serialize)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and environment override it).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id: stable, independent of addresses [default: 1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// Data directory, created if missing; group 0 lives in `<dir>/groups/0/{raft,state}`
    /// [default: ./data].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address. Defaults to loopback: authentication is not in place yet
    /// [default: 127.0.0.1:8080].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Cluster port to bind (QUIC over UDP), e.g. 127.0.0.1:7401. Without it the node is a
    /// single-node cluster with no cluster port.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Address peers reach this node's cluster port at [default: the --cluster address].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// The initial members, this node included: `1=host:port,2=host:port,3=host:port`.
    /// Used only when the data dir is empty and no peer reports an initialised cluster;
    /// afterwards the stored membership wins.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<String>,
    /// Directory written by `thicket certs` (ca.pem, node-<id>.pem, node-<id>-key.pem);
    /// --ca/--cert/--key override single files.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certs_dir: Option<PathBuf>,
    /// The cluster CA certificate (PEM).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// This node's certificate (PEM), naming its node id.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Raft heartbeat interval; also openraft's timeout of one AppendEntries, so it bounds
    /// how many bytes one may carry (64 KiB per ms) [default: 50].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// Raft election timeout, lower bound [default: 200].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub election_timeout_min_ms: Option<u64>,
    /// Raft election timeout, upper bound [default: 400]: the leader lease. When no voter
    /// of a majority has heard the leader for this long, the one with the longest log
    /// stands at once (openraft's own timer, this plus a random timeout, is the fallback).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub election_timeout_max_ms: Option<u64>,
    /// Build a snapshot after this many entries since the last one [default: 20000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_logs_since_last: Option<u64>,
    /// Log entries kept behind a snapshot [default: 5000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs_kept_behind_snapshot: Option<u64>,
    /// Deadline of a write [default: 10000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_timeout_ms: Option<u64>,
    /// Deadline of a read's consistency round [default: 5000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_timeout_ms: Option<u64>,
    /// Admission control: write bytes in flight on this node before 503 [default: 268435456].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight_bytes_max: Option<usize>,
    /// Group commit: bytes gathered into one Raft entry at most [default: 524288].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_bytes_max: Option<usize>,
    /// Group commit: commands gathered into one Raft entry at most [default: 4096].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_commands_max: Option<usize>,
    /// Group commit: entries in flight before the leader gathers [default: 4].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries_in_flight_max: Option<usize>,
    /// Async worker threads (three nodes may share two cores) [default: 2].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// RocksDB background flush and compaction threads of the state [default: 2].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rocksdb_background_jobs: Option<i32>,
    /// RocksDB block cache of the state, in MiB [default: 64].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_cache_mb: Option<usize>,
}

/// Every setting resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub http: String,
    pub cluster: Option<String>,
    pub advertise: Option<String>,
    pub peers: Option<String>,
    pub certs_dir: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub logs_kept_behind_snapshot: u64,
    pub write_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub in_flight_bytes_max: usize,
    pub batch_bytes_max: usize,
    pub batch_commands_max: usize,
    pub entries_in_flight_max: usize,
    pub workers: usize,
    pub rocksdb_background_jobs: i32,
    pub block_cache_mb: usize,
}

impl Default for Settings {
    fn default() -> Self {
        let c = NodeConfig::single("./data");
        let e = EngineOptions::default();
        Settings {
            node_id: 1,
            data_dir: "./data".into(),
            http: "127.0.0.1:8080".into(),
            cluster: None,
            advertise: None,
            peers: None,
            certs_dir: None,
            ca: None,
            cert: None,
            key: None,
            heartbeat_ms: c.heartbeat_ms,
            election_timeout_min_ms: c.election_timeout_min_ms,
            election_timeout_max_ms: c.election_timeout_max_ms,
            snapshot_logs_since_last: c.snapshot_logs_since_last,
            logs_kept_behind_snapshot: c.logs_kept_behind_snapshot,
            write_timeout_ms: c.write_timeout_ms,
            read_timeout_ms: c.read_timeout_ms,
            in_flight_bytes_max: c.in_flight_bytes_max,
            batch_bytes_max: c.batch_bytes_max,
            batch_commands_max: c.batch_commands_max,
            entries_in_flight_max: c.entries_in_flight_max,
            workers: 2,
            rocksdb_background_jobs: e.background_jobs,
            block_cache_mb: e.block_cache_bytes >> 20,
        }
    }
}

impl Settings {
    /// Resolves defaults ← TOML file ← environment ← flags.
    pub fn resolve(args: &ServeArgs) -> Result<Settings> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = &args.config {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig
            .merge(Env::prefixed("THICKET_"))
            .merge(Serialized::defaults(args));
        fig.extract().context("reading the settings")
    }

    /// Parses `--peers`.
    pub fn peer_list(&self) -> Result<Vec<(u64, String)>> {
        let Some(p) = &self.peers else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for part in p.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (id, addr) = part
                .split_once('=')
                .with_context(|| format!("--peers entry `{part}` is not id=host:port"))?;
            let id: u64 = id
                .trim()
                .parse()
                .with_context(|| format!("--peers entry `{part}`: `{id}` is not a node id"))?;
            if out.iter().any(|(i, _)| *i == id) {
                bail!("--peers lists node {id} twice");
            }
            out.push((id, addr.trim().to_string()));
        }
        Ok(out)
    }

    /// The node configuration these settings describe.
    pub fn node_config(&self) -> Result<NodeConfig> {
        let mut c = NodeConfig::single(&self.data_dir);
        c.node_id = self.node_id;
        c.cluster_bind = self.cluster.clone();
        c.cluster_advertise = self.advertise.clone();
        c.peers = self.peer_list()?;
        c.tls = match (&self.certs_dir, &self.ca, &self.cert, &self.key) {
            (_, Some(ca), Some(cert), Some(key)) => Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            }),
            (Some(dir), ca, cert, key) => {
                let d = TlsFiles::in_dir(dir, self.node_id);
                Some(TlsFiles {
                    ca: ca.clone().unwrap_or(d.ca),
                    cert: cert.clone().unwrap_or(d.cert),
                    key: key.clone().unwrap_or(d.key),
                })
            }
            (None, None, None, None) => None,
            _ => bail!("--ca, --cert and --key go together (or give --certs-dir)"),
        };
        if let (Some(me), Some(bind)) = (
            c.peers.iter().find(|(i, _)| *i == c.node_id),
            &c.cluster_bind,
        ) {
            if c.cluster_advertise.is_none() && &me.1 != bind {
                // The address the others were told is what peers will dial.
                c.cluster_advertise = Some(me.1.clone());
            }
        }
        c.heartbeat_ms = self.heartbeat_ms;
        c.election_timeout_min_ms = self.election_timeout_min_ms;
        c.election_timeout_max_ms = self.election_timeout_max_ms;
        c.snapshot_logs_since_last = self.snapshot_logs_since_last;
        c.logs_kept_behind_snapshot = self.logs_kept_behind_snapshot;
        c.write_timeout_ms = self.write_timeout_ms;
        c.read_timeout_ms = self.read_timeout_ms;
        c.in_flight_bytes_max = self.in_flight_bytes_max;
        c.batch_bytes_max = self.batch_bytes_max;
        c.batch_commands_max = self.batch_commands_max;
        c.entries_in_flight_max = self.entries_in_flight_max;
        c.engine.background_jobs = self.rocksdb_background_jobs;
        c.engine.block_cache_bytes = self.block_cache_mb << 20;
        c.validate().map_err(anyhow::Error::msg)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("thicket.toml");
        std::fs::write(
            &path,
            "node_id = 2\nhttp = \"127.0.0.1:9000\"\nheartbeat_ms = 40\nelection_timeout_min_ms = 200\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            http: Some("127.0.0.1:9001".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&args).unwrap();
        assert_eq!(s.node_id, 2, "from the file");
        assert_eq!(s.http, "127.0.0.1:9001", "flags win over the file");
        assert_eq!(s.heartbeat_ms, 40);
        assert_eq!(s.election_timeout_max_ms, 400, "default kept");
        assert!(Settings::resolve(&ServeArgs {
            config: Some(dir.path().join("missing.toml")),
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn peers_parse_and_errors_name_the_problem() {
        let s = Settings {
            peers: Some("1=127.0.0.1:7401, 2=127.0.0.1:7402".into()),
            ..Default::default()
        };
        assert_eq!(
            s.peer_list().unwrap(),
            vec![(1, "127.0.0.1:7401".into()), (2, "127.0.0.1:7402".into())]
        );
        let bad = Settings {
            peers: Some("1=a,x=b".into()),
            ..Default::default()
        };
        assert!(bad.peer_list().unwrap_err().to_string().contains("`x`"));
        let dup = Settings {
            peers: Some("1=a,1=b".into()),
            ..Default::default()
        };
        assert!(dup.peer_list().unwrap_err().to_string().contains("twice"));
    }
}
