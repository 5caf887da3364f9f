//! Thicket's cluster layer: the engine replicated by openraft over QUIC.
//!
//! Module map (a write's path: `writes` → `forwarder`/`proposer` → openraft →
//! `log_store` + `network`/`transport` → `state_machine` → engine):
//! - `types`: the Raft type configuration; log entries carry bundles (one client write
//!   each, with its request id).
//! - `config`: [`NodeConfig`], a node's identity, peers, timeouts and bounds.
//! - `node`: [`ClusterNode`]: start-up, bootstrap from `--peers`, membership changes,
//!   shutdown, and the handler of cluster messages.
//! - `writes`: any-node writes with retries under one request id and honest outcomes.
//! - `proposer`: the leader's group commit; `forwarder`: followers' batched forwarding.
//! - `reads`: consistency levels; `read_index`: shared read-index rounds.
//! - `status`: the `/v1/cluster` report; `elector`: prompt elections after a leader dies.
//! - `log_store`: the Raft log in its own RocksDB (`raft/`).
//! - `state_machine`: the engine as openraft's state machine; `dedup`: the replicated
//!   window of applied request ids; `snapshot_archive`: one-file engine checkpoints.
//! - `transport`: QUIC (quinn) with mutual TLS; `network`: openraft's RPCs over it;
//!   `wire`: the messages; `tls`: the cluster CA and node certificates.
//! - `worker`: the named threads for apply (`thicket-apply`) and log appends (`thicket-log`).
//! - `error`: [`WriteError`] and [`ReadError`].

pub mod config;
pub mod dedup;
mod elector;
mod error;
pub mod forwarder;
pub mod log_store;
pub mod network;
pub mod node;
pub mod proposer;
pub mod read_index;
pub mod reads;
pub mod snapshot_archive;
pub mod state_machine;
pub mod status;
pub mod tls;
pub mod transport;
pub mod types;
pub mod wire;
mod worker;
mod writes;

pub use config::NodeConfig;
pub use error::{ReadError, WriteError};
pub use node::{ClusterNode, StartError};
pub use reads::Consistency;
pub use status::ClusterStatus;
