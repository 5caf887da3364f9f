//! openraft's own storage test suite against the RocksDB log store and the engine-backed
//! state machine (real RocksDB in temp dirs). Durability, which the suite does not check,
//! is proven by kill -9 tests.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use std::sync::Arc;
use thicket_cluster::log_store::LogStore;
use thicket_cluster::state_machine::StateMachine;
use thicket_cluster::types::{NodeId, TypeConfig};
use thicket_engine::{Engine, EngineOptions};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("raft"))?;
        let engine =
            Engine::open(dir.path().join("state"), EngineOptions::default()).expect("open engine");
        let sm = StateMachine::new(Arc::new(engine), &dir.path().join("snapshots"))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}
