use crate::harness::*;
use std::time::Duration;
use thicket_cluster::{Consistency, ReadError, WriteError};

/// The leader cut off from the others: the minority refuses writes and linearizable
/// reads with a clear error; the majority elects and serves; after healing all converge
/// and the old leader serves no stale linearizable read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_refuses_and_majority_serves() {
    let c = TestCluster::start(3, default_tune).await;
    let old = c.wait_leader().await;
    let others: Vec<u64> = c.nodes.keys().copied().filter(|i| *i != old).collect();
    c.node(old)
        .write(create_bucket("acme", "env"))
        .await
        .unwrap();
    c.node(old)
        .write(vec![write_record("acme", "env", "a", 1, 1.0)])
        .await
        .unwrap();

    // Phase 1: partition the leader from both followers.
    c.node(old).transport().unwrap().faults.block(&others);
    for id in &others {
        c.node(*id).transport().unwrap().faults.block(&[old]);
    }

    // Phase 2: the majority elects a new leader.
    until(20, "the majority elects a new leader", || {
        let ok = others.iter().any(|id| {
            let m = c.node(*id).raft().metrics().borrow().clone();
            m.state == openraft::ServerState::Leader
        });
        async move { ok }
    })
    .await;
    let new = *others
        .iter()
        .find(|id| c.node(**id).raft().metrics().borrow().state == openraft::ServerState::Leader)
        .unwrap();

    // Phase 3: the old leader refuses writes and linearizable reads, saying why.
    until(10, "the old leader notices it lost its quorum", || {
        let n = c.node(old).clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            match n
                .write_by(vec![write_record("acme", "env", "a", 2, 2.0)], deadline)
                .await
            {
                Err(WriteError::Unavailable(m)) => {
                    assert!(m.contains("quorum"), "{m}");
                    true
                }
                // Proposed while its lease had not quite run out (the majority's
                // election can finish a few ms earlier on a loaded machine): its outcome
                // is honestly unknown. It can never commit; the final count proves it.
                Err(WriteError::Unknown(_)) => false,
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => false,
            }
        }
    })
    .await;
    match c.node(old).read_barrier(Consistency::Linearizable).await {
        Err(ReadError::Unavailable(m)) => assert!(m.contains("quorum"), "{m}"),
        other => panic!("the cut-off leader must refuse a linearizable read: {other:?}"),
    }

    // Phase 4: the majority serves writes through both of its nodes.
    for id in &others {
        let r = c
            .node(*id)
            .write(vec![write_record("acme", "env", "b", 10 + *id as i64, 3.0)])
            .await
            .unwrap();
        assert!(r[0].is_ok());
    }
    c.node(new)
        .read_barrier(Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(count_records(c.node(new), "acme", "env"), 3);

    // Phase 5: heal; the old leader follows and its linearizable reads are fresh.
    for n in c.nodes.values() {
        n.transport().unwrap().faults.heal();
    }
    // It keeps refusing (never stale) until it learns of the new term and follows.
    c.wait_leader().await;
    c.node(old)
        .read_barrier(Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        count_records(c.node(old), "acme", "env"),
        3,
        "no stale read"
    );
    c.assert_identical().await;
}

/// A follower cut off from the leader while the rest of the cluster still hears it does
/// not stand for election (the elector's pre-vote finds a peer that hears the leader):
/// its term stays, and after healing the same leader still leads in the same term.
/// openraft's own timer would have had it campaign, and its higher term would have
/// deposed the leader on healing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_follower_does_not_disturb_the_leader() {
    let c = TestCluster::start(3, default_tune).await;
    let leader = c.wait_leader().await;
    let term = c.node(leader).raft().metrics().borrow().current_term;
    let mut followers = c.nodes.keys().copied().filter(|i| *i != leader);
    let (cut, other) = (followers.next().unwrap(), followers.next().unwrap());
    c.node(leader).transport().unwrap().faults.block(&[cut]);
    c.node(cut).transport().unwrap().faults.block(&[leader]);

    // Several leases pass: long enough for openraft's timer to have fired twice.
    let lease = c.config(cut).election_timeout_max_ms;
    tokio::time::sleep(Duration::from_millis(lease * 5)).await;
    // The leader keeps serving through the follower it still reaches.
    c.node(other)
        .write(create_bucket("acme", "env"))
        .await
        .unwrap();
    let m = c.node(cut).raft().metrics().borrow().clone();
    assert_eq!(m.current_term, term, "the cut-off follower raised the term");
    assert_ne!(m.state, openraft::ServerState::Candidate);

    for n in c.nodes.values() {
        n.transport().unwrap().faults.heal();
    }
    c.node(cut)
        .write(vec![write_record("acme", "env", "a", 1, 1.0)])
        .await
        .unwrap();
    assert_eq!(c.wait_leader().await, leader, "the leader was deposed");
    assert_eq!(c.node(leader).raft().metrics().borrow().current_term, term);
    c.wait_converged().await;
    c.assert_identical().await;
}
