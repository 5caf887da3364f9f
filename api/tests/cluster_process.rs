//! A 3-node cluster of real `thicket serve` processes on 127.0.0.1, as a user runs it:
//! certificates from `thicket certs`, static `--peers`, HTTP on every node. Nodes are
//! killed with SIGKILL (by the pid this test started) and restarted with the same flags.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use thicket_chaos_tests::{Node, ProcessCluster};

const BIN: &str = env!("CARGO_BIN_EXE_thicket");

struct Cluster {
    pc: ProcessCluster,
    http: reqwest::Client,
}

impl Cluster {
    fn start(extra: &[&str]) -> Cluster {
        Cluster {
            pc: ProcessCluster::start(Path::new(BIN), 3, None, extra).expect("start 3 nodes"),
            http: reqwest::Client::new(),
        }
    }

    fn node(&mut self, id: u64) -> &mut Node {
        self.pc.node(id)
    }

    async fn status(&self, id: u64) -> Option<Value> {
        let r = self
            .http
            .get(self.pc.nodes[&id].url("/v1/cluster"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// The leader that every live node names.
    async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let mut seen = BTreeSet::new();
            let mut all = true;
            for (id, n) in &self.pc.nodes {
                if !n.is_up() {
                    continue;
                }
                match self.status(*id).await.and_then(|s| s["leader"].as_u64()) {
                    Some(l) => {
                        seen.insert(l);
                    }
                    None => all = false,
                }
            }
            if all && seen.len() == 1 {
                let l = *seen.iter().next().unwrap();
                if self.pc.nodes[&l].is_up() {
                    return l;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no agreed leader");
    }

    async fn post(&self, id: u64, path: &str, body: String) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(self.pc.nodes[&id].url(path))
            .body(body)
            .timeout(Duration::from_secs(20))
            .send()
            .await
    }

    async fn read_ts(&self, id: u64, consistency: &str) -> Option<Vec<i64>> {
        let r = self
            .http
            .get(self.pc.nodes[&id].url(&format!(
                "/v1/users/acme/buckets/env/data?items=100000&sort=asc&consistency={consistency}"
            )))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        let rows: Value = r.json().await.ok()?;
        Some(
            rows.as_array()?
                .iter()
                .map(|r| r["ts"].as_i64().unwrap())
                .collect(),
        )
    }

    /// Waits until every live node's local state equals `want`.
    async fn converged(&self, want: &[i64]) {
        let deadline = Instant::now() + Duration::from_secs(90);
        'outer: while Instant::now() < deadline {
            for (id, n) in &self.pc.nodes {
                if n.is_up() && self.read_ts(*id, "local").await.as_deref() != Some(want) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'outer;
                }
            }
            return;
        }
        panic!("replicas did not converge");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_writes_loses_nothing_acknowledged() {
    let mut c = Cluster::start(&[]);
    let leader = c.leader().await;

    // Phase 1: a bucket, created through a follower.
    let follower = *c.pc.nodes.keys().find(|i| **i != leader).unwrap();
    let r = c
        .post(
            follower,
            "/v1/users/acme/buckets",
            r#"{"bucket":"env","name":"Env","config":{"source":"api","tags":["device"]}}"#.into(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Phase 2: writes through every node; the leader is killed after 60 of them.
    let mut acked: Vec<i64> = Vec::new();
    let mut unknown = 0;
    let mut killed_at = None;
    let mut first_ack_after_kill = None;
    for k in 0..240i64 {
        if k == 60 {
            c.node(leader).kill9();
            killed_at = Some(Instant::now());
        }
        let live: Vec<u64> =
            c.pc.nodes
                .iter()
                .filter(|(_, n)| n.is_up())
                .map(|(i, _)| *i)
                .collect();
        let via = live[k as usize % live.len()];
        let body = format!(r#"{{"ts":{},"device":"d","v":{k}}}"#, 1_000 + k);
        match c.post(via, "/v1/users/acme/buckets/env/data", body).await {
            Ok(r) if r.status() == 200 => {
                acked.push(1_000 + k);
                if killed_at.is_some() && first_ack_after_kill.is_none() {
                    first_ack_after_kill = killed_at.map(|t| t.elapsed());
                }
            }
            Ok(r) => {
                let status = r.status();
                let body: Value = r.json().await.unwrap();
                let msg = body["error"]["message"].as_str().unwrap().to_string();
                assert_eq!(status, 503, "{msg}");
                assert!(
                    msg.contains("not applied") || msg.contains("unknown"),
                    "a failed write says whether it was applied: {msg}"
                );
                if msg.contains("unknown") {
                    unknown += 1;
                }
            }
            Err(e) => panic!("HTTP failed: {e}"),
        }
    }
    assert!(
        acked.len() >= 200,
        "only {} of 240 writes acknowledged",
        acked.len()
    );
    println!(
        "failover: first acknowledged write {:?} after kill -9 of the leader; {unknown} unknown",
        first_ack_after_kill
    );

    // Phase 3: a new leader serves every acknowledged write, each once.
    let new = c.leader().await;
    assert_ne!(new, leader);
    let got = c.read_ts(new, "linearizable").await.unwrap();
    let set: BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(set.len(), got.len(), "a record stored twice");
    for ts in &acked {
        assert!(set.contains(ts), "acknowledged write {ts} lost");
    }

    // Phase 4: the killed node restarts with the same flags (no re-init) and catches up.
    c.node(leader).spawn().unwrap();
    c.converged(&got).await;
    let s = c.status(leader).await.unwrap();
    assert_eq!(s["members"].as_array().unwrap().len(), 3, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_killed_during_snapshot_install_recovers() {
    let mut c = Cluster::start(&[
        "--snapshot-logs-since-last",
        "30",
        "--logs-kept-behind-snapshot",
        "5",
    ]);
    let leader = c.leader().await;
    let victim = *c.pc.nodes.keys().find(|i| **i != leader).unwrap();
    let r = c
        .post(
            leader,
            "/v1/users/acme/buckets",
            r#"{"bucket":"env","name":"Env","config":{"source":"api","tags":["device"]}}"#.into(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Phase 1: the victim is away while the leader writes, snapshots and purges.
    c.node(victim).kill9();
    for k in 0..120i64 {
        let batch: Vec<String> = (0..50)
            .map(|j| format!(r#"{{"ts":{},"device":"d{j}","v":{k}}}"#, 10_000 + k))
            .collect();
        let r = c
            .post(
                leader,
                "/v1/users/acme/buckets/env/data",
                format!("[{}]", batch.join(",")),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let want = c.read_ts(leader, "linearizable").await.unwrap();
    assert_eq!(want.len(), 6_000);

    // Phase 2: restarted, it is killed again at several points of its catch-up
    // (snapshot transfer and install); each time it must come back.
    for delay_ms in [150u64, 400, 900] {
        c.node(victim).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        c.node(victim).kill9();
    }

    // Phase 3: the last restart catches up fully.
    c.node(victim).spawn().unwrap();
    c.converged(&want).await;
    let s = c.status(victim).await.unwrap();
    assert!(
        s["snapshot_index"].as_u64().is_some(),
        "caught up by snapshot: {s}"
    );
}
