use crate::harness::*;
use thicket_cluster::Consistency;

/// Writes through every node are replicated; all replicas end identical; reads at every
/// consistency level see acknowledged writes where they promise to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_every_node_replicate_identically() {
    let c = TestCluster::start(3, default_tune).await;
    let leader = c.wait_leader().await;

    // Phase 1: a bucket created through a follower is visible everywhere.
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let res = c
        .node(follower)
        .write(create_bucket("acme", "env"))
        .await
        .unwrap();
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");

    // Phase 2: concurrent writes through all three nodes (group commit on the leader,
    // batched forwarding on followers).
    let mut tasks = Vec::new();
    for (id, n) in &c.nodes {
        for k in 0..40i64 {
            let n = n.clone();
            let id = *id;
            tasks.push(tokio::spawn(async move {
                let cmd = write_record("acme", "env", &format!("d{id}"), 1_000 * k, k as f64);
                n.write(vec![cmd]).await
            }));
        }
    }
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert!(r[0].is_ok(), "{r:?}");
    }

    // Phase 3: a linearizable read on any node sees all 120 acknowledged records.
    for n in c.nodes.values() {
        n.read_barrier(Consistency::Linearizable).await.unwrap();
        assert_eq!(count_records(n, "acme", "env"), 120, "node {}", n.id());
    }
    // `leader` consistency is refused on followers, naming the leader.
    let err = c
        .node(follower)
        .read_barrier(Consistency::Leader)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&format!("node {leader}")), "{err}");
    c.node(leader)
        .read_barrier(Consistency::Leader)
        .await
        .unwrap();

    // Phase 4: every replica's content is identical.
    c.assert_identical().await;

    // Phase 5: a rejected command changes nothing and says why, through a follower too.
    let r = c
        .node(follower)
        .write(vec![thicket_engine::Command::WriteRecords {
            user: "acme".into(),
            bucket: "env".into(),
            records: "{oops".into(),
            default_ts: 0,
        }])
        .await
        .unwrap();
    assert!(r[0].is_err(), "{r:?}");
    c.assert_identical().await;

    // Phase 6: the status report names the leader and all members from any node.
    let s = c
        .node(follower)
        .status(std::time::Duration::from_secs(2))
        .await;
    assert_eq!(s.leader, Some(leader));
    assert_eq!(s.members.len(), 3);
    assert!(
        s.members.iter().all(|m| m.reachable && m.role == "voter"),
        "{s:?}"
    );
    assert!(
        s.members
            .iter()
            .all(|m| m.clock_offset_ms.is_some_and(|o| o.abs() < 1_000)),
        "{s:?}"
    );
    assert!(s.committed_index.is_some());
}

/// A write whose answer is lost is retried under the same request id and applied once,
/// even when the retry goes to a new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_write_retried_across_leader_change_applies_once() {
    let c = TestCluster::start(3, default_tune).await;
    let leader = c.wait_leader().await;
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let third = *c
        .nodes
        .keys()
        .find(|id| **id != leader && **id != follower)
        .unwrap();

    // Phase 1: the leader applies the follower's forwarded write but its answer is lost.
    // Creating a bucket is not idempotent: applied twice, the second would be a conflict.
    c.node(leader)
        .transport()
        .unwrap()
        .faults
        .drop_replies_to(&[follower]);
    let n = c.node(follower).clone();
    let write = tokio::spawn(async move { n.write(create_bucket("acme", "once")).await });
    until(20, "the leader applied the forwarded write", || {
        let ok = c.node(leader).engine().get_bucket("acme", "once").is_some();
        async move { ok }
    })
    .await;

    // Phase 2: the leader is cut off; the other two elect a new one; the follower's
    // retry (same request id) reaches it.
    let lt = c.node(leader).transport().unwrap();
    lt.faults.heal();
    lt.faults.block(&[follower, third]);
    for id in [follower, third] {
        c.node(id).transport().unwrap().faults.block(&[leader]);
    }
    let res = write.await.unwrap().expect("the retried write succeeds");
    assert!(res.iter().all(|r| r.is_ok()), "applied twice? {res:?}");

    // Phase 3: healed, every replica holds the bucket once and the same content.
    for n in c.nodes.values() {
        n.transport().unwrap().faults.heal();
    }
    c.wait_leader().await;
    c.assert_identical().await;
    let buckets = c.node(leader).engine().list_buckets("acme");
    assert_eq!(buckets.len(), 1, "{buckets:?}");
}

fn tiny_admission(c: &mut thicket_cluster::NodeConfig) {
    c.in_flight_bytes_max = 4_096;
}

/// Admission control: writes beyond the in-flight byte bound are refused at once as not
/// applied; within it they are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beyond_the_in_flight_bound_are_refused_not_queued() {
    let c = TestCluster::start(3, tiny_admission).await;
    let leader = c.wait_leader().await;
    c.node(leader)
        .write(create_bucket("acme", "env"))
        .await
        .unwrap();
    let big: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"ts":{i},"device":"a","v":1}}"#))
        .collect();
    let cmd = thicket_engine::Command::WriteRecords {
        user: "acme".into(),
        bucket: "env".into(),
        records: format!("[{}]", big.join(",")),
        default_ts: 0,
    };
    for n in c.nodes.values() {
        match n.write(vec![cmd.clone()]).await {
            Err(thicket_cluster::WriteError::Overloaded { limit_bytes, .. }) => {
                assert_eq!(limit_bytes, 4_096)
            }
            other => panic!("expected Overloaded, got {other:?}"),
        }
    }
    assert_eq!(count_records(c.node(leader), "acme", "env"), 0);
    let small = write_record("acme", "env", "a", 1, 1.0);
    assert!(c.node(leader).write(vec![small]).await.unwrap()[0].is_ok());
}

/// A storage error stops that node's Raft: its status and its writes say so, the others
/// keep serving, and a restart once the cause is gone recovers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_error_stops_one_node_and_restart_recovers() {
    let mut c = TestCluster::start(3, default_tune).await;
    let leader = c.wait_leader().await;
    let sick = *c.nodes.keys().find(|id| **id != leader).unwrap();
    c.node(leader)
        .write(create_bucket("acme", "env"))
        .await
        .unwrap();

    // Phase 1: the follower's next apply fails.
    c.node(sick).inject_storage_failure_for_test();
    c.node(leader)
        .write(vec![write_record("acme", "env", "a", 1, 1.0)])
        .await
        .unwrap();
    until(20, "the sick node's raft stopped", || {
        let ok = c
            .node(sick)
            .raft()
            .metrics()
            .borrow()
            .running_state
            .is_err();
        async move { ok }
    })
    .await;
    let s = c.node(sick).status(std::time::Duration::from_secs(1)).await;
    assert!(s.storage_error.is_some() && !s.accepting_writes, "{s:?}");
    match c
        .node(sick)
        .write(vec![write_record("acme", "env", "a", 2, 2.0)])
        .await
    {
        Err(thicket_cluster::WriteError::Storage(m)) => assert!(m.contains("raft stopped"), "{m}"),
        other => panic!("expected a storage error, got {other:?}"),
    }

    // Phase 2: the other two keep serving.
    c.node(leader)
        .write(vec![write_record("acme", "env", "a", 3, 3.0)])
        .await
        .unwrap();

    // Phase 3: restarted (the fault gone), it catches up.
    c.stop_node(sick).await;
    c.start_node(sick).await.unwrap();
    c.assert_identical().await;
    assert_eq!(count_records(c.node(sick), "acme", "env"), 2);
}
