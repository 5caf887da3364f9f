//! In-process clusters on 127.0.0.1: real RocksDB in temp dirs, real QUIC with mutual
//! TLS on ephemeral ports, nodes stopped and started on their data dirs.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thicket_cluster::tls::{self, TlsFiles};
use thicket_cluster::transport::Transport;
use thicket_cluster::types::NodeId;
use thicket_cluster::{ClusterNode, NodeConfig, StartError};
use thicket_engine::Command;

/// Waits for `f` to hold, checking every 20 ms, at most `secs` seconds.
pub async fn until<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {secs} s waiting for: {what}");
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<NodeId, ClusterNode>,
    /// Cluster addresses of every node ever started (kept across restarts).
    pub addrs: BTreeMap<NodeId, String>,
    pub initial: Vec<NodeId>,
    pub tune: fn(&mut NodeConfig),
}

pub fn certs_dir(dir: &Path) -> PathBuf {
    dir.join("certs")
}

pub fn default_tune(_: &mut NodeConfig) {}

impl TestCluster {
    /// Starts `n` voters (ids 1..=n) from empty data dirs with static `--peers`.
    pub async fn start(n: u64, tune: fn(&mut NodeConfig)) -> TestCluster {
        let (mut c, transports) = TestCluster::prepare(n, tune);
        c.start_on(transports).await;
        c.wait_leader().await;
        c
    }

    /// Starts the nodes of `transports` together (each on its bound port).
    pub async fn start_on(&mut self, transports: BTreeMap<NodeId, Arc<Transport>>) {
        let starts = transports.into_iter().map(|(id, t)| {
            let cfg = self.config(id);
            async move { (id, ClusterNode::start_with_transport(cfg, Some(t)).await) }
        });
        for (id, r) in futures::future::join_all(starts).await {
            self.nodes
                .insert(id, r.unwrap_or_else(|e| panic!("node {id}: {e}")));
        }
    }

    /// Certificates and bound cluster ports for `n` voters (ids 1..=n); no node started.
    pub fn prepare(
        n: u64,
        tune: fn(&mut NodeConfig),
    ) -> (TestCluster, BTreeMap<NodeId, Arc<Transport>>) {
        let dir = tempfile::tempdir().unwrap();
        let certs = certs_dir(dir.path());
        tls::ensure_ca(&certs).unwrap();
        let mut transports = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=n {
            let t = bind(&certs, id, "127.0.0.1:0");
            addrs.insert(id, t.local_addr().unwrap().to_string());
            transports.insert(id, t);
        }
        let c = TestCluster {
            dir,
            nodes: BTreeMap::new(),
            addrs,
            initial: (1..=n).collect(),
            tune,
        };
        (c, transports)
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    pub fn config(&self, id: NodeId) -> NodeConfig {
        let mut cfg = NodeConfig::single(self.data_dir(id));
        cfg.node_id = id;
        cfg.peers = self
            .initial
            .iter()
            .map(|i| (*i, self.addrs[i].clone()))
            .collect();
        cfg.tls = Some(TlsFiles::in_dir(&certs_dir(self.dir.path()), id));
        cfg.cluster_bind = Some(self.addrs.get(&id).cloned().unwrap_or_default());
        cfg.heartbeat_ms = 50;
        cfg.election_timeout_min_ms = 400;
        cfg.election_timeout_max_ms = 800;
        cfg.write_timeout_ms = 15_000;
        cfg.read_timeout_ms = 5_000;
        cfg.bootstrap_timeout_ms = 20_000;
        cfg.add_learner_timeout_ms = 30_000;
        cfg.engine.background_jobs = 1;
        cfg.engine.block_cache_bytes = 8 << 20;
        cfg.engine.write_buffer_bytes = 4 << 20;
        (self.tune)(&mut cfg);
        cfg
    }

    /// Starts (or restarts) node `id` on its data dir and its old address.
    pub async fn start_node(&mut self, id: NodeId) -> Result<(), StartError> {
        if !self.addrs.contains_key(&id) {
            let t = bind(&certs_dir(self.dir.path()), id, "127.0.0.1:0");
            self.addrs.insert(id, t.local_addr().unwrap().to_string());
            let node = ClusterNode::start_with_transport(self.config(id), Some(t)).await?;
            self.nodes.insert(id, node);
            return Ok(());
        }
        // The old port may linger after an in-process stop (a task of the old node can
        // still hold its QUIC endpoint; a stopped process frees it at exit): bounded
        // retries, up to 20 s (5 s was once too short in a cold CI run).
        let mut last = None;
        for _ in 0..200 {
            let addr = self.addrs[&id].clone();
            let files = TlsFiles::in_dir(&certs_dir(self.dir.path()), id);
            let tls = tls::load(&files, id).unwrap();
            match Transport::bind(addr.parse().unwrap(), &tls) {
                Ok(t) => {
                    let node = ClusterNode::start_with_transport(self.config(id), Some(t)).await?;
                    self.nodes.insert(id, node);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot rebind node {id}: {last:?}");
    }

    /// Stops node `id` cleanly (its data dir stays).
    pub async fn stop_node(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.remove(&id) {
            n.shutdown().await;
            drop(n);
            // Let the runtime finish the node's tasks so its RocksDB closes.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn node(&self, id: NodeId) -> &ClusterNode {
        &self.nodes[&id]
    }

    /// The leader every running node agrees on (waits for one).
    pub async fn wait_leader(&self) -> NodeId {
        let mut found = 0;
        until(30, "a leader all running nodes agree on", || {
            let leaders: Vec<Option<NodeId>> = self
                .nodes
                .values()
                .map(|n| n.raft().metrics().borrow().current_leader)
                .collect();
            let first = leaders.first().copied().flatten();
            let ok = first.is_some()
                && leaders.iter().all(|l| *l == first)
                && first.is_some_and(|l| {
                    self.nodes.get(&l).is_some_and(|n| {
                        n.raft().metrics().borrow().state == openraft::ServerState::Leader
                    })
                });
            if ok {
                found = first.unwrap_or(0);
            }
            async move { ok }
        })
        .await;
        found
    }

    /// Waits until every running node applied at least the leader's last log index.
    pub async fn wait_converged(&self) {
        until(60, "all running nodes applied the same index", || {
            let applied: Vec<Option<u64>> = self
                .nodes
                .values()
                .map(|n| n.raft().metrics().borrow().last_applied.map(|l| l.index))
                .collect();
            let last: Vec<Option<u64>> = self
                .nodes
                .values()
                .map(|n| n.raft().metrics().borrow().last_log_index)
                .collect();
            let ok =
                applied.windows(2).all(|w| w[0] == w[1]) && last.iter().all(|l| *l == applied[0]);
            async move { ok }
        })
        .await;
    }

    /// Content checksums of every running node's engine.
    pub fn checksums(&self) -> BTreeMap<NodeId, u128> {
        self.nodes
            .iter()
            .map(|(id, n)| (*id, n.engine().content_checksum().unwrap()))
            .collect()
    }

    /// Every running node's content equals the others'.
    pub async fn assert_identical(&self) {
        self.wait_converged().await;
        let sums = self.checksums();
        let first = *sums.values().next().unwrap();
        assert!(
            sums.values().all(|s| *s == first),
            "replicas differ: {sums:x?}"
        );
    }
}

pub fn bind(certs: &Path, id: NodeId, addr: &str) -> Arc<Transport> {
    if !TlsFiles::in_dir(certs, id).cert.exists() {
        tls::issue_node_cert(certs, id).unwrap();
    }
    let tls = tls::load(&TlsFiles::in_dir(certs, id), id).unwrap();
    Transport::bind(addr.parse().unwrap(), &tls).unwrap()
}

pub fn create_bucket(user: &str, bucket: &str) -> Vec<Command> {
    vec![
        Command::PutDocWith {
            kind: thicket_engine::DocKind::User,
            user: user.into(),
            parent: String::new(),
            id: String::new(),
            doc: "{}".into(),
            mode: thicket_engine::PutMode::Upsert,
        },
        Command::CreateBucket {
            user: user.into(),
            bucket: bucket.into(),
            doc: r#"{"name":"b","config":{"source":"api","tags":["device"]}}"#.into(),
        },
    ]
}

pub fn write_record(user: &str, bucket: &str, device: &str, ts: i64, v: f64) -> Command {
    Command::WriteRecords {
        user: user.into(),
        bucket: bucket.into(),
        records: format!(r#"{{"ts":{ts},"device":"{device}","v":{v}}}"#),
        default_ts: 0,
    }
}

/// Number of raw records of `bucket` in a node's engine.
pub fn count_records(n: &ClusterNode, user: &str, bucket: &str) -> usize {
    let q = thicket_engine::ReadQuery::from_params([("items", "100000")]).unwrap();
    match n.engine().read_bucket(user, bucket, &q) {
        Ok(thicket_engine::ReadResult::Raw(r)) => r.rows.len(),
        Ok(_) => panic!("expected raw rows"),
        Err(_) => 0,
    }
}
