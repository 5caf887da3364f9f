//! Thicket's cluster layer: openraft glue and the handle the API writes and reads through.
//!
//! Module map:
//! - `types`: the Raft type configuration; `Request` (a batch of engine commands per log
//!   entry) and `Response`.
//! - `log_store`: the Raft log in its own RocksDB (`raft/`).
//! - `state_machine`: the engine as openraft's state machine; snapshots as archives.
//! - `snapshot_archive`: one-file packing of an engine checkpoint, streamed.
//! - `local_node`: [`LocalNode`], a single node without replication: commands go to a
//!   dedicated apply thread that group-commits whatever is queued into one engine apply.
//!   The Raft-replicated node (openraft over QUIC) replaces it behind the same methods.
//! - `error`: [`WriteError`], a failed write and whether it is safe to retry.

mod error;
mod local_node;
pub mod log_store;
pub mod snapshot_archive;
pub mod state_machine;
pub mod types;

pub use error::WriteError;
pub use local_node::{LocalNode, LocalNodeOptions};
