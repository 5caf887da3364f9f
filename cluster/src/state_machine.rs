//! The engine as openraft's state machine.
//!
//! Entries are applied in one engine call per `apply` (on a blocking thread): the
//! commands of every normal entry, in order, plus the applied marker holding the last
//! log id, membership and the request-id dedup window, all in one atomic write batch.
//! Blank and membership entries only move the marker. A bundle whose request id was
//! applied before is skipped (`Duplicate`), so a retried write applies once.
//! `applied_state` reads the marker back, so a restart resumes exactly where the
//! state's flushed files stand.
//!
//! Snapshots are the engine's checkpoint packed into one archive file
//! (`snapshot_archive`), streamed from disk. The newest one lives in
//! `<dir>/current.thk` with its metadata in `<dir>/current.meta`.

// openraft's traits return its `StorageError`, which is large by design.
#![allow(clippy::result_large_err)]

use crate::dedup::{DedupTable, Verdict};
use crate::snapshot_archive;
use crate::types::{BundleOutcome, NodeId, Response, TypeConfig};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use thicket_engine::{Command, Engine};

type SE = StorageError<NodeId>;
type Meta = SnapshotMeta<NodeId, BasicNode>;

/// Format of the marker this crate stores in the engine; checked when read.
/// 1: log id + membership; 2: plus the dedup window.
const MARKER_VERSION: u8 = 2;

/// What the engine's opaque applied marker holds for the cluster. Persisted: append-only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppliedMarker {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub dedup: DedupTable,
    /// Members that ever acknowledged the leader's log; pruned to the membership.
    pub joined: std::collections::BTreeSet<NodeId>,
}

/// Version 1 of the marker, still readable.
#[derive(Deserialize)]
struct MarkerV1 {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
}

impl AppliedMarker {
    /// Versioned bincode bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![MARKER_VERSION];
        out.extend(
            bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default(),
        );
        out
    }

    /// Inverse of [`AppliedMarker::encode`].
    pub fn decode(b: &[u8]) -> Result<AppliedMarker, AnyError> {
        match b.split_first() {
            Some((&MARKER_VERSION, rest)) => {
                bincode::serde::decode_from_slice(rest, bincode::config::standard())
                    .map(|(m, _)| m)
                    .map_err(|e| AnyError::error(format!("undecodable applied marker: {e}")))
            }
            Some((&1, rest)) => {
                bincode::serde::decode_from_slice::<MarkerV1, _>(rest, bincode::config::standard())
                    .map(|(m, _)| AppliedMarker {
                        last_applied: m.last_applied,
                        membership: m.membership,
                        dedup: DedupTable::default(),
                        joined: Default::default(),
                    })
                    .map_err(|e| AnyError::error(format!("undecodable applied marker: {e}")))
            }
            _ => Err(AnyError::error("applied marker has an unknown format")),
        }
    }
}

/// The state machine over one engine.
#[derive(Clone)]
pub struct StateMachine {
    engine: Arc<Engine>,
    dir: PathBuf,
    seq: Arc<AtomicU64>,
    /// The marker as of the last apply or install (`None`: read it from the engine).
    cached: Arc<parking_lot::Mutex<Option<AppliedMarker>>>,
    /// The dedicated apply thread.
    worker: crate::worker::Worker,
    /// Fault injection (tests): the next applies fail as a storage error would.
    fail_applies: Arc<std::sync::atomic::AtomicBool>,
    /// How far the engine's state is durable (raised at open, snapshot build and install).
    durable: crate::log_store::DurableMark,
}

fn io(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

impl StateMachine {
    /// A state machine over `engine`, keeping snapshots in `snapshot_dir`.
    pub fn new(engine: Arc<Engine>, snapshot_dir: &Path) -> Result<StateMachine, SE> {
        std::fs::create_dir_all(snapshot_dir)
            .map_err(|e| StorageIOError::write_snapshot(None, io(e)))?;
        // Leftovers of interrupted builds or transfers.
        if let Ok(rd) = std::fs::read_dir(snapshot_dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                if n.starts_with("tmp-") || n.starts_with("incoming-") {
                    let _ = std::fs::remove_dir_all(e.path())
                        .or_else(|_| std::fs::remove_file(e.path()));
                }
            }
        }
        let durable = crate::log_store::DurableMark::default();
        // What the engine holds at open is on disk.
        if let Some(b) = engine
            .applied_marker()
            .map_err(|e| StorageIOError::read_state_machine(io(e)))?
        {
            let m = AppliedMarker::decode(&b).map_err(StorageIOError::read_state_machine)?;
            durable.raise(m.last_applied);
        }
        match std::fs::read(snapshot_dir.join("current.meta")) {
            Ok(b) => {
                let meta: Meta = serde_json::from_slice(&b)
                    .map_err(|e| StorageIOError::read_snapshot(None, io(e)))?;
                durable.set_snapshot(meta.last_log_id);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageIOError::read_snapshot(None, io(e)).into()),
        }
        Ok(StateMachine {
            durable,
            engine,
            dir: snapshot_dir.to_path_buf(),
            seq: Arc::new(AtomicU64::new(0)),
            cached: Arc::new(parking_lot::Mutex::new(None)),
            worker: crate::worker::Worker::start("thicket-apply")
                .map_err(|e| StorageIOError::write_state_machine(io(e)))?,
            fail_applies: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// How far the state is durable, for [`LogStore::guard_purges`].
    ///
    /// [`LogStore::guard_purges`]: crate::log_store::LogStore::guard_purges
    pub fn durable_mark(&self) -> crate::log_store::DurableMark {
        self.durable.clone()
    }

    /// The engine, for reads.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Makes every later apply fail like a storage error (fault-injection tests).
    #[doc(hidden)]
    pub fn inject_apply_failure(&self) {
        self.fail_applies.store(true, Ordering::Release);
    }

    /// Members that ever acknowledged the leader's log, as of the last apply.
    pub fn joined(&self) -> std::collections::BTreeSet<NodeId> {
        self.marker().map(|m| m.joined).unwrap_or_default()
    }

    fn marker(&self) -> Result<AppliedMarker, SE> {
        if let Some(m) = self.cached.lock().as_ref() {
            return Ok(m.clone());
        }
        let m = self.stored_marker()?;
        *self.cached.lock() = Some(m.clone());
        Ok(m)
    }

    fn stored_marker(&self) -> Result<AppliedMarker, SE> {
        match self
            .engine
            .applied_marker()
            .map_err(|e| StorageIOError::read_state_machine(io(e)))?
        {
            Some(b) => {
                AppliedMarker::decode(&b).map_err(|e| StorageIOError::read_state_machine(e).into())
            }
            None => Ok(AppliedMarker::default()),
        }
    }

    fn tmp(&self, kind: &str) -> PathBuf {
        self.dir.join(format!(
            "{kind}-{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ))
    }

    async fn open_current(&self) -> Result<Option<Snapshot<TypeConfig>>, SE> {
        let meta_path = self.dir.join("current.meta");
        let meta: Meta = match std::fs::read(&meta_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| StorageIOError::read_snapshot(None, io(e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageIOError::read_snapshot(None, io(e)).into()),
        };
        let f = tokio::fs::File::open(self.dir.join("current.thk"))
            .await
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), io(e)))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(f),
        }))
    }

    /// Makes `archive` the current snapshot with `meta` (rename: atomic).
    fn set_current(&self, archive: &Path, meta: &Meta) -> Result<(), SE> {
        let err = |e: std::io::Error| StorageIOError::write_snapshot(Some(meta.signature()), io(e));
        let tmp_meta = self.tmp("tmp");
        std::fs::write(
            &tmp_meta,
            serde_json::to_vec(meta).map_err(|e| StorageIOError::write_snapshot(None, io(e)))?,
        )
        .map_err(err)?;
        std::fs::rename(archive, self.dir.join("current.thk")).map_err(err)?;
        std::fs::rename(&tmp_meta, self.dir.join("current.meta")).map_err(err)?;
        self.durable.set_snapshot(meta.last_log_id);
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err(e).into())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SE> {
        let me = self.clone();
        let meta = tokio::task::spawn_blocking(move || -> Result<Meta, SE> {
            let cp = me.tmp("tmp");
            let err = |e: AnyError| StorageIOError::write_snapshot(None, e);
            let marker = me.engine.checkpoint(&cp).map_err(|e| err(io(e)))?;
            let marker = match marker {
                Some(b) => AppliedMarker::decode(&b).map_err(err)?,
                None => AppliedMarker::default(),
            };
            let archive = me.tmp("tmp");
            snapshot_archive::pack(&cp, &archive).map_err(|e| err(io(e)))?;
            let _ = std::fs::remove_dir_all(&cp);
            let snapshot_id = match &marker.last_applied {
                Some(l) => format!(
                    "{}-{}-{}",
                    l.leader_id.term,
                    l.index,
                    me.seq.fetch_add(1, Ordering::Relaxed)
                ),
                None => format!("0-0-{}", me.seq.fetch_add(1, Ordering::Relaxed)),
            };
            let meta = Meta {
                last_log_id: marker.last_applied,
                last_membership: marker.membership,
                snapshot_id,
            };
            me.set_current(&archive, &meta)?;
            // The checkpoint flushed the state: durable at least this far.
            me.durable.raise(meta.last_log_id);
            Ok(meta)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, io(e)))??;
        let f = tokio::fs::File::open(self.dir.join("current.thk"))
            .await
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), io(e)))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(f),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), SE> {
        let m = self.marker()?;
        Ok((m.last_applied, m.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, SE>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        if self.fail_applies.load(Ordering::Acquire) {
            return Err(StorageIOError::write_state_machine(AnyError::error(
                "injected storage fault",
            ))
            .into());
        }
        let mut marker = self.marker()?;
        let mut commands: Vec<Command> = Vec::new();
        // Per entry, per bundle: the verdict and how many commands it put in `commands`.
        let mut plan: Vec<Vec<(Verdict, usize)>> = Vec::new();
        for e in entries {
            marker.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => plan.push(Vec::new()),
                EntryPayload::Normal(req) => {
                    let mut bundles = Vec::with_capacity(req.bundles.len());
                    for b in req.bundles {
                        let verdict = marker.dedup.admit(b.id);
                        if verdict == Verdict::Apply {
                            bundles.push((verdict, b.commands.len()));
                            commands.extend(b.commands);
                        } else {
                            bundles.push((verdict, 0));
                        }
                    }
                    marker.joined.extend(req.joined);
                    plan.push(bundles);
                }
                EntryPayload::Membership(m) => {
                    marker.joined.retain(|id| m.get_node(id).is_some());
                    marker.membership = StoredMembership::new(Some(e.log_id), m);
                    plan.push(Vec::new());
                }
            }
        }
        if plan.is_empty() {
            return Ok(Vec::new());
        }
        let engine = self.engine.clone();
        let last = marker.last_applied;
        let bytes = marker.encode();
        let applied = self
            .worker
            .run(move || engine.apply(&commands, &bytes))
            .await
            .map_err(|e| StorageIOError::write_state_machine(io(e)));
        // On failure the engine may hold anything up to it: read the marker back next time.
        let results = match applied {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                *self.cached.lock() = None;
                return Err(match last {
                    Some(l) => StorageIOError::apply(l, io(e)).into(),
                    None => StorageIOError::write_state_machine(io(e)).into(),
                });
            }
            Err(e) => {
                *self.cached.lock() = None;
                return Err(e.into());
            }
        };
        *self.cached.lock() = Some(marker);
        let mut it = results.into_iter();
        Ok(plan
            .into_iter()
            .map(|bundles| Response {
                outcomes: bundles
                    .into_iter()
                    .map(|(verdict, n)| match verdict {
                        Verdict::Apply => BundleOutcome::Applied(it.by_ref().take(n).collect()),
                        Verdict::Duplicate => BundleOutcome::Duplicate,
                        Verdict::Expired => BundleOutcome::Expired,
                    })
                    .collect(),
            })
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, SE> {
        let path = self.tmp("incoming");
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, io(e)))?;
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), SE> {
        let sig = meta.signature();
        let err = move |e: AnyError| -> SE {
            StorageIOError::write_snapshot(Some(sig.clone()), e).into()
        };
        // Copy the received stream to a file of our own (the handle may be anyone's).
        let archive = self.tmp("incoming");
        {
            use tokio::io::{AsyncSeekExt, AsyncWriteExt};
            let mut src = *snapshot;
            src.seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(|e| err(io(e)))?;
            let mut dst = tokio::fs::File::create(&archive)
                .await
                .map_err(|e| err(io(e)))?;
            tokio::io::copy(&mut src, &mut dst)
                .await
                .map_err(|e| err(io(e)))?;
            dst.flush().await.map_err(|e| err(io(e)))?;
            dst.sync_all().await.map_err(|e| err(io(e)))?;
        }
        let me = self.clone();
        let meta2 = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<(), SE> {
            let sig = meta2.signature();
            let err =
                |e: AnyError| -> SE { StorageIOError::write_snapshot(Some(sig.clone()), e).into() };
            let dir = me.tmp("incoming");
            snapshot_archive::unpack(&archive, &dir).map_err(|e| err(io(e)))?;
            let marker = thicket_engine::engine_marker_at(&dir).map_err(|e| err(io(e)))?;
            let marker = match marker {
                Some(b) => AppliedMarker::decode(&b).map_err(err)?,
                None => AppliedMarker::default(),
            };
            if marker.last_applied != meta2.last_log_id {
                return Err(err(AnyError::error(format!(
                    "snapshot holds state up to {:?} but claims {:?}",
                    marker.last_applied, meta2.last_log_id
                ))));
            }
            *me.cached.lock() = None;
            let installed = me.engine.install_snapshot(&dir).map_err(|e| err(io(e)));
            *me.cached.lock() = None;
            installed?;
            // Installed, fsynced and swapped in.
            me.durable.raise(meta2.last_log_id);
            let _ = std::fs::remove_dir_all(&dir);
            me.set_current(&archive, &meta2)
        })
        .await
        .map_err(|e| err(io(e)))?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SE> {
        self.open_current().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RequestId;

    /// Golden bytes: the marker is persisted in every replica's state.
    #[test]
    fn marker_encoding_is_pinned_and_v1_still_reads() {
        let mut m = AppliedMarker {
            last_applied: Some(LogId::new(openraft::CommittedLeaderId::new(2, 1), 7)),
            ..Default::default()
        };
        assert_eq!(
            m.dedup.admit(RequestId {
                node: 1,
                incarnation: 3,
                seq: 2
            }),
            Verdict::Apply
        );
        m.joined.insert(1);
        let hex: String = m.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "0201020107000000010103000040020000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000101"
        );
        assert_eq!(AppliedMarker::decode(&m.encode()).unwrap(), m);
        // Version 1 (no dedup window, no joined set) still decodes.
        let v1 = {
            #[derive(Serialize)]
            struct V1 {
                last_applied: Option<LogId<NodeId>>,
                membership: StoredMembership<NodeId, BasicNode>,
            }
            let mut b = vec![1u8];
            b.extend(
                bincode::serde::encode_to_vec(
                    V1 {
                        last_applied: m.last_applied,
                        membership: m.membership.clone(),
                    },
                    bincode::config::standard(),
                )
                .unwrap(),
            );
            b
        };
        let old = AppliedMarker::decode(&v1).unwrap();
        assert_eq!(old.last_applied, m.last_applied);
        assert!(old.dedup.origins.is_empty());
        assert!(AppliedMarker::decode(&[9, 0]).is_err());
    }
}
