//! What a node is told at start: identity, addresses, peers, timeouts and bounds.

use crate::tls::TlsFiles;
use crate::types::NodeId;
use std::path::PathBuf;
use std::time::Duration;
use thicket_engine::EngineOptions;

/// Bytes per millisecond an AppendEntries is assumed to need at worst (encode, QUIC,
/// decode, append and fsync on a loaded follower): 64 MB/s.
pub const APPEND_BYTES_PER_MS: u64 = 64 << 10;

/// One node's configuration. Defaults suit a LAN (failover well under a second) and three
/// nodes sharing two cores.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// Data directory; the group's state lives in `<dir>/groups/0/{raft,state,snapshots}`.
    pub data_dir: PathBuf,
    /// Cluster port (QUIC) to bind; `None`: a single node without a cluster port.
    pub cluster_bind: Option<String>,
    /// The address peers reach this node at (defaults to the bound address).
    pub cluster_advertise: Option<String>,
    /// The initial members (id, cluster address); used only when the data dir is empty
    /// and no peer reports an initialised cluster. A node not listed is a new node: it
    /// never initialises a cluster, it waits to be added as a learner.
    pub peers: Vec<(NodeId, String)>,
    pub tls: Option<TlsFiles>,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// Log entries kept behind the snapshot (so slightly lagging followers need no snapshot).
    pub logs_kept_behind_snapshot: u64,
    pub snapshot_chunk_bytes: u64,
    /// Entries in one append RPC at most.
    pub max_payload_entries: u64,
    /// Group commit: commands and bytes gathered into one entry at most.
    pub batch_commands_max: usize,
    pub batch_bytes_max: usize,
    /// Entries proposed and not yet applied at once (group commit's window).
    pub entries_in_flight_max: usize,
    /// Forward RPCs in flight from a follower at once.
    pub forwards_in_flight_max: usize,
    /// Admission control: write bytes accepted on this node and not yet answered.
    pub in_flight_bytes_max: usize,
    /// Bytes of one write at most (one bundle; bounds entries and messages).
    pub write_bytes_max: usize,
    /// Default deadline of a write and of a read's consistency round.
    pub write_timeout_ms: u64,
    pub read_timeout_ms: u64,
    /// How long adding a learner may wait for it to catch up.
    pub add_learner_timeout_ms: u64,
    /// How long an empty node waits at start for peers to answer about the cluster.
    pub bootstrap_timeout_ms: u64,
    pub engine: EngineOptions,
}

impl NodeConfig {
    /// A single node with its data in `data_dir` and defaults for everything else.
    pub fn single(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            node_id: 1,
            data_dir: data_dir.into(),
            cluster_bind: None,
            cluster_advertise: None,
            peers: Vec::new(),
            tls: None,
            // openraft 0.9: a follower refuses votes for a lease (= max) after it last
            // heard its leader; the elector stands at once when the lease has run out.
            // The heartbeat is also openraft's timeout of every AppendEntries RPC (see
            // `APPEND_BYTES_PER_MS`).
            heartbeat_ms: 50,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            snapshot_logs_since_last: 20_000,
            logs_kept_behind_snapshot: 5_000,
            snapshot_chunk_bytes: 4 << 20,
            max_payload_entries: 2,
            batch_commands_max: 4096,
            batch_bytes_max: 512 << 10,
            entries_in_flight_max: 4,
            forwards_in_flight_max: 8,
            in_flight_bytes_max: 256 << 20,
            write_bytes_max: 1 << 20,
            write_timeout_ms: 10_000,
            read_timeout_ms: 5_000,
            add_learner_timeout_ms: 60_000,
            bootstrap_timeout_ms: 120_000,
            engine: EngineOptions::default(),
        }
    }

    /// Group 0's directory (multi-Raft later adds groups beside it).
    pub fn group_dir(&self) -> PathBuf {
        self.data_dir.join("groups").join("0")
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }

    /// Checks that the bounds fit together; says which do not.
    pub fn validate(&self) -> Result<(), String> {
        let entry_max = self.batch_bytes_max.max(self.write_bytes_max) + 4096;
        let msg = entry_max as u64 * self.max_payload_entries;
        // openraft 0.9 gives every AppendEntries RPC one heartbeat interval to be sent,
        // appended and fsynced on the follower; one that cannot make it is retried,
        // unchanged, forever, and nothing commits again.
        let budget = self.heartbeat_ms * APPEND_BYTES_PER_MS;
        if msg > budget {
            return Err(format!(
                "max_payload_entries ({}) × largest entry ({entry_max} bytes; the larger of \
                 batch_bytes_max and write_bytes_max) is {msg} bytes, more than one \
                 AppendEntries can carry within the heartbeat interval ({} ms × {} KiB/ms = \
                 {budget} bytes): raise heartbeat_ms or lower the others",
                self.max_payload_entries,
                self.heartbeat_ms,
                APPEND_BYTES_PER_MS >> 10
            ));
        }
        if msg > crate::wire::MESSAGE_BYTES_MAX as u64 {
            return Err(format!(
                "max_payload_entries ({}) × largest entry ({entry_max} bytes) exceeds the \
                 message bound of {} bytes",
                self.max_payload_entries,
                crate::wire::MESSAGE_BYTES_MAX
            ));
        }
        if self.snapshot_chunk_bytes as usize + 4096 > crate::wire::MESSAGE_BYTES_MAX {
            return Err("snapshot_chunk_bytes exceeds the message bound".into());
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms * 2 > self.election_timeout_min_ms {
            return Err(format!(
                "heartbeat ({} ms) must be at most half the minimum election timeout ({} ms)",
                self.heartbeat_ms, self.election_timeout_min_ms
            ));
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            return Err("election_timeout_min_ms must be below election_timeout_max_ms".into());
        }
        if !self.peers.is_empty() && (self.cluster_bind.is_none() || self.tls.is_none()) {
            return Err("a multi-node cluster needs a cluster address and certificates".into());
        }
        Ok(())
    }

    /// openraft's configuration from ours.
    pub fn raft_config(&self) -> Result<openraft::Config, String> {
        let c = openraft::Config {
            cluster_name: "thicket".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            max_payload_entries: self.max_payload_entries,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.logs_kept_behind_snapshot,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            install_snapshot_timeout: 10_000,
            // Purge in batches, but never wait for more than half a snapshot interval.
            purge_batch_size: (self.snapshot_logs_since_last / 2).clamp(1, 256),
            ..Default::default()
        };
        c.validate().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults fit one AppendEntries in a heartbeat; last session's bounds (8 entries
    /// of 2 MiB at 40 ms) did not, and wedged a loaded cluster, so they are refused.
    #[test]
    fn append_entries_must_fit_in_a_heartbeat() {
        let c = NodeConfig::single("/tmp/unused");
        c.validate().unwrap();
        c.raft_config().unwrap();
        let mut big = c.clone();
        big.heartbeat_ms = 40;
        big.max_payload_entries = 8;
        big.batch_bytes_max = 2 << 20;
        let e = big.validate().unwrap_err();
        assert!(e.contains("heartbeat"), "{e}");
        // A longer heartbeat carries more.
        big.heartbeat_ms = 300;
        big.election_timeout_min_ms = 600;
        big.election_timeout_max_ms = 900;
        big.validate().unwrap();
        // One write larger than an entry counts as the largest entry.
        let mut w = c.clone();
        w.write_bytes_max = 16 << 20;
        assert!(w.validate().unwrap_err().contains("write_bytes_max"));
    }
}
