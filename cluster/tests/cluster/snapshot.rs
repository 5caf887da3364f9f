use crate::harness::*;
use thicket_cluster::NodeConfig;

fn small_snapshots(c: &mut NodeConfig) {
    c.snapshot_logs_since_last = 40;
    c.logs_kept_behind_snapshot = 5;
    c.snapshot_chunk_bytes = 16 << 10;
}

/// A stopped node catches up from the log; one far behind (its entries purged on the
/// leader) catches up by snapshot, streamed in chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_nodes_catch_up_from_log_and_snapshot() {
    let mut c = TestCluster::start(3, small_snapshots).await;
    let leader = c.wait_leader().await;
    let lagger = *c.nodes.keys().find(|id| **id != leader).unwrap();
    c.node(leader)
        .write(create_bucket("acme", "env"))
        .await
        .unwrap();

    // Phase 1: a short absence: the log still holds what it missed.
    c.stop_node(lagger).await;
    for k in 0..10 {
        c.node(leader)
            .write(vec![write_record("acme", "env", "a", k, k as f64)])
            .await
            .unwrap();
    }
    c.start_node(lagger).await.unwrap();
    c.assert_identical().await;
    assert_eq!(count_records(c.node(lagger), "acme", "env"), 10);

    // Phase 2: a long absence: the leader snapshots and purges past what it missed.
    c.stop_node(lagger).await;
    let leader = c.wait_leader().await;
    for k in 10..200 {
        c.node(leader)
            .write(vec![write_record(
                "acme",
                "env",
                &format!("d{}", k % 7),
                k,
                k as f64,
            )])
            .await
            .unwrap();
    }
    until(30, "the leader purged its log behind a snapshot", || {
        let m = c.node(leader).raft().metrics().borrow().clone();
        let ok = m.purged.is_some_and(|p| p.index > 20);
        async move { ok }
    })
    .await;
    c.start_node(lagger).await.unwrap();
    until(60, "the lagging node installed a snapshot", || {
        let m = c.node(lagger).raft().metrics().borrow().clone();
        let ok = m.snapshot.is_some();
        async move { ok }
    })
    .await;
    c.assert_identical().await;
    assert_eq!(count_records(c.node(lagger), "acme", "env"), 200);

    // Phase 3: after a restart it still holds everything (state and log agree).
    c.stop_node(lagger).await;
    c.start_node(lagger).await.unwrap();
    c.assert_identical().await;
}
