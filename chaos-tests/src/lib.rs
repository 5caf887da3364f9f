//! Fault injection against real `thicket` processes.
//!
//! Module map:
//! - `process_cluster`: [`ProcessCluster`], N `thicket serve` processes on 127.0.0.1 with
//!   certificates from `thicket certs` and static `--peers`, each killable with SIGKILL
//!   and restartable with its own flags. Used by the API's process tests and by the
//!   cluster benchmark.

pub mod process_cluster;

pub use process_cluster::{free_port, Node, ProcessCluster};
