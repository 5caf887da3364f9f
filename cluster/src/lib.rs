//! Thicket's cluster layer: the handle the API writes and reads through.
//!
//! Module map:
//! - `local_node`: [`LocalNode`], a single node without replication: commands go to a
//!   dedicated apply thread that group-commits whatever is queued into one engine apply.
//!   The Raft-replicated node (openraft over QUIC) replaces it behind the same methods.
//! - `error`: [`WriteError`], a failed write and whether it is safe to retry.

mod error;
mod local_node;

pub use error::WriteError;
pub use local_node::{LocalNode, LocalNodeOptions};
