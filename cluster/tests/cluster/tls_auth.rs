use crate::harness::*;
use std::time::Duration;
use thicket_cluster::tls::{self, TlsFiles};
use thicket_cluster::transport::{RpcError, Transport};
use thicket_cluster::wire::{Message, Reply};

/// A process without a CA-signed certificate, or with another node's certificate,
/// cannot join or inject traffic; a legitimate node can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_ca_signed_nodes_speaking_as_themselves_get_in() {
    let c = TestCluster::start(3, default_tune).await;
    let leader = c.wait_leader().await;
    let target = c.addrs[&leader].clone();
    let t = Duration::from_secs(3);

    // Phase 1: a certificate from another CA is refused at the TLS handshake.
    let rogue_dir = tempfile::tempdir().unwrap();
    tls::ensure_ca(rogue_dir.path()).unwrap();
    let rogue = bind(rogue_dir.path(), 9, "127.0.0.1:0");
    let err = rogue
        .call(leader, &target, Message::NodeInfo, t)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Unreachable(..)), "{err}");

    // Phase 2: a foreign CA's certificate claiming a member's id fares no better.
    tls::issue_node_cert(rogue_dir.path(), 2).unwrap();
    let forged = tls::load(&TlsFiles::in_dir(rogue_dir.path(), 2), 2).unwrap();
    let forged = Transport::bind("127.0.0.1:0".parse().unwrap(), &forged).unwrap();
    assert!(forged
        .call(leader, &target, Message::NodeInfo, t)
        .await
        .is_err());

    // Phase 3: a genuine certificate of node 7 (signed by the cluster CA) may connect,
    // but a handshake claiming to be another node is refused: the sender id must match
    // the certificate.
    let certs = certs_dir(c.dir.path());
    tls::issue_node_cert(&certs, 7).unwrap();
    let files = TlsFiles::in_dir(&certs, 7);
    assert!(
        tls::load(&files, 3).is_err(),
        "node 7's certificate cannot be loaded as node 3's"
    );
    let seven = bind(&certs, 7, "127.0.0.1:0");
    match seven.call(leader, &target, Message::NodeInfo, t).await {
        Ok(Reply::NodeInfo(info)) => assert_eq!(info.id, leader),
        other => panic!("a CA-signed node is answered: {other:?}"),
    }
    let err = seven
        .call_as_for_test(3, leader, &target, Message::NodeInfo, t)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("differs from its certificate"),
        "{err}"
    );

    // Phase 4: the cluster is unharmed.
    c.node(leader)
        .write(create_bucket("acme", "env"))
        .await
        .unwrap();
    c.assert_identical().await;
}
