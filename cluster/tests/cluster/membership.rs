use crate::harness::*;
use thicket_cluster::StartError;

/// Add a learner, promote it, remove a voter: the cluster serves writes throughout, and
/// a wiped voter is refused at start with instructions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_added_promoted_and_voter_removed_while_serving() {
    let mut c = TestCluster::start(3, default_tune).await;
    let leader = c.wait_leader().await;
    c.node(leader)
        .write(create_bucket("acme", "env"))
        .await
        .unwrap();
    let writer = c.node(leader).clone();
    // Writes keep flowing through the whole phase sequence.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let load = tokio::spawn(async move {
        let mut acked = 0i64;
        for k in 0..100_000i64 {
            if s2.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            if let Ok(r) = writer
                .write(vec![write_record("acme", "env", "w", k, 1.0)])
                .await
            {
                assert!(r[0].is_ok());
                acked += 1;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        acked
    });

    // Phase 1: node 4 starts empty; the cluster does not know it, so it waits.
    c.start_node(4).await.unwrap();
    let addr4 = c.addrs[&4].clone();
    // Through a follower: membership changes are forwarded to the leader.
    let follower = *c
        .nodes
        .keys()
        .find(|id| **id != leader && **id != 4)
        .unwrap();
    let msg = c.node(follower).add_learner(4, addr4).await.unwrap();
    assert!(msg.contains("learner"), "{msg}");
    let m = c
        .node(leader)
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .clone();
    assert!(m.membership().learner_ids().any(|i| i == 4));

    // Phase 2: promote it to voter.
    c.node(leader).promote(4).await.unwrap();
    until(10, "node 4 is a voter", || {
        let m = c
            .node(leader)
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .clone();
        let ok = m.membership().voter_ids().any(|i| i == 4);
        async move { ok }
    })
    .await;

    // Phase 3: remove an original voter that is not the leader.
    let gone = *c
        .nodes
        .keys()
        .find(|id| **id != leader && **id != 4)
        .unwrap();
    c.node(leader).remove(gone).await.unwrap();
    c.stop_node(gone).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = load.await.unwrap();
    assert!(acked > 0);
    let leader = c.wait_leader().await;
    c.node(leader)
        .read_barrier(thicket_cluster::Consistency::Linearizable)
        .await
        .unwrap();
    c.assert_identical().await;
    assert!(count_records(c.node(4), "acme", "env") as i64 >= acked);

    // Phase 4: a voter whose data dir was wiped is refused, with what to do.
    let victim = *c.nodes.keys().find(|id| **id != leader).unwrap();
    c.stop_node(victim).await;
    std::fs::remove_dir_all(c.data_dir(victim)).unwrap();
    c.initial = c.nodes.keys().copied().chain([victim]).collect();
    match c.start_node(victim).await {
        Err(StartError::WipedVoter { id, .. }) => assert_eq!(id, victim),
        Err(e) => panic!("unexpected start error: {e}"),
        Ok(()) => panic!("a wiped voter must not start"),
    }
    let err = StartError::WipedVoter {
        id: victim,
        peer: leader,
    }
    .to_string();
    assert!(err.contains("learner"), "{err}");
}

/// An initial member that starts before its peers takes no Raft traffic until its
/// bootstrap has decided what it is: an empty node that took a leader's entries while
/// still asking its peers would look to them like a wiped voter and be refused (this
/// once failed a CI run). When the others come, the cluster forms and elects, whichever
/// of them founded it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_node_takes_no_raft_traffic_until_its_bootstrap_decides() {
    use std::time::Duration;
    use thicket_cluster::transport::RpcError;
    use thicket_cluster::wire::Message;
    use thicket_cluster::ClusterNode;

    let (mut c, mut transports) = TestCluster::prepare(3, default_tune);
    // Node 1 starts alone: nodes 2 and 3 have bound ports but serve nothing yet, so its
    // bootstrap keeps asking.
    let t1 = transports.remove(&1).unwrap();
    let mut cfg = c.config(1);
    cfg.bootstrap_timeout_ms = 120_000;
    let first = tokio::spawn(async move { ClusterNode::start_with_transport(cfg, Some(t1)).await });
    // A vote request from node 2 (a genuine certificate) is refused meanwhile.
    let t2 = transports[&2].clone();
    let addr1 = c.addrs[&1].clone();
    let answer = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    // Generous bounds: under a loaded CI machine the first TLS handshake (an unoptimised
    // `ring` in test builds) can take seconds.
    until(60, "node 1 refusing Raft traffic while it starts", || {
        let (t2, addr1) = (t2.clone(), addr1.clone());
        let vote = openraft::raft::VoteRequest::new(openraft::Vote::new(1, 2), None);
        let seen = answer.clone();
        async move {
            match t2
                .call(1, &addr1, Message::Vote(vote), Duration::from_secs(5))
                .await
            {
                Err(RpcError::Refused(1, why)) if why.contains("still starting") => {
                    *seen.lock().unwrap() = why;
                    true
                }
                other => {
                    eprintln!("node 1 answered, not yet refusing: {other:?}");
                    false
                }
            }
        }
    })
    .await;
    let answer = answer.lock().unwrap().clone();
    assert!(answer.contains("node 1"), "{answer}");
    assert!(
        !first.is_finished(),
        "node 1 cannot have finished bootstrap alone"
    );

    // The others start; all three form one cluster.
    c.start_on(transports).await;
    let one = first
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("node 1: {e}"));
    c.nodes.insert(1, one);
    let leader = c.wait_leader().await;
    c.node(leader)
        .write(create_bucket("acme", "env"))
        .await
        .unwrap();
    c.assert_identical().await;
}
