//! [`ClusterNode`]: one member of a Raft-replicated Thicket cluster.
//!
//! Start-up: open `raft/` and `state/`, bump the incarnation, start openraft, serve
//! the cluster port, then bootstrap. Bootstrap uses `--peers` only when this node's log is
//! empty and no peer reports an initialised cluster; a node whose data dir was wiped while
//! the cluster still counts it as a voter refuses to start (it could vote twice), and a
//! node the cluster does not know waits to be added as a learner. Afterwards the stored
//! membership wins over flags, so restarting with the same flags changes nothing.
//!
//! The write path is in `writes`, reads in `reads`, the status report in `status`.

use crate::config::NodeConfig;
use crate::forwarder::{ForwardBounds, Forwarder};
use crate::log_store::LogStore;
use crate::network::NetworkFactory;
use crate::proposer::{Proposer, ProposerBounds};
use crate::read_index::ReadIndexBatcher;
use crate::state_machine::StateMachine;
use crate::transport::{Handler, Transport};
use crate::types::{NodeId, Request, TypeConfig};
use crate::wire::{AdminOp, ForwardOutcome, Message, NodeInfo, Refusal, Reply, SnapshotReply};
use futures::future::BoxFuture;
use openraft::error::{InitializeError, InstallSnapshotError, RaftError};
use openraft::raft::AppendEntriesResponse;
use openraft::{BasicNode, ChangeMembers, Raft, ServerState};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use thicket_engine::Engine;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("cluster port: {0}")]
    Transport(String),
    #[error(
        "node {id} has an empty data dir, but the cluster (answering from node {peer}) still \
         counts it as a voter. A voter that forgot its vote could vote twice, so it will not \
         start as one: remove it from the cluster (DELETE /v1/cluster/members/{id} on any \
         node), then start it again with an empty data dir and add it back as a learner \
         (POST /v1/cluster/members) and promote it"
    )]
    WipedVoter { id: NodeId, peer: NodeId },
    #[error("bootstrap: {0}")]
    Bootstrap(String),
}

/// One node of the cluster; cheap to clone.
#[derive(Clone)]
pub struct ClusterNode {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) id: NodeId,
    pub(crate) config: NodeConfig,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) engine: Arc<Engine>,
    pub(crate) log: LogStore,
    pub(crate) sm: StateMachine,
    pub(crate) transport: Option<Arc<Transport>>,
    pub(crate) proposer: Proposer,
    pub(crate) forwarder: Option<Forwarder>,
    /// Leader-side read-index rounds (local reads and followers' `ReadIndex`).
    pub(crate) reads: ReadIndexBatcher,
    /// Follower-side rounds: one `ReadIndex` RPC to the leader serves many reads.
    pub(crate) remote_reads: ReadIndexBatcher,
    pub(crate) incarnation: u64,
    pub(crate) seq: AtomicU64,
    pub(crate) in_flight_bytes: AtomicUsize,
    pub(crate) draining: AtomicBool,
    /// Raft traffic (append, vote, snapshot) is refused until bootstrap has decided what
    /// this node is: an empty node that took a leader's entries while still asking its
    /// peers would look to them like a wiped voter, and a wiped voter must not take any.
    pub(crate) raft_open: AtomicBool,
    pub(crate) advertise: String,
    /// When a leader was last heard (the elector's failure detector).
    pub(crate) contact: crate::elector::LeaderContact,
    /// When a quorum last acknowledged this node as leader (ageing between reports).
    pub(crate) quorum_ack: Arc<crate::elector::QuorumAck>,
}

fn storage(e: impl std::fmt::Display) -> StartError {
    StartError::Storage(e.to_string())
}

impl ClusterNode {
    /// Starts a node: binds its cluster port when configured, then bootstraps.
    pub async fn start(config: NodeConfig) -> Result<ClusterNode, StartError> {
        let transport =
            match (&config.cluster_bind, &config.tls) {
                (Some(bind), Some(files)) => {
                    let tls = crate::tls::load(files, config.node_id)
                        .map_err(|e| StartError::Transport(e.to_string()))?;
                    let addr = bind.parse().map_err(|e| {
                        StartError::Config(format!("cluster address `{bind}`: {e}"))
                    })?;
                    Some(
                        Transport::bind(addr, &tls)
                            .map_err(|e| StartError::Transport(format!("binding {bind}: {e}")))?,
                    )
                }
                (Some(_), None) => return Err(StartError::Config(
                    "a cluster port needs certificates (--ca, --cert, --key; see `thicket certs`)"
                        .into(),
                )),
                _ => None,
            };
        Self::start_with_transport(config, transport).await
    }

    /// Starts a node over an already bound transport (tests bind ephemeral ports first).
    pub async fn start_with_transport(
        config: NodeConfig,
        transport: Option<Arc<Transport>>,
    ) -> Result<ClusterNode, StartError> {
        config.validate().map_err(StartError::Config)?;
        let raft_config = Arc::new(config.raft_config().map_err(StartError::Config)?);
        let group = config.group_dir();
        std::fs::create_dir_all(&group).map_err(storage)?;
        let log = LogStore::open(&group.join("raft")).map_err(storage)?;
        let incarnation = log.next_incarnation().map_err(storage)?;
        let engine = Arc::new(
            Engine::open(group.join("state"), config.engine.clone()).map_err(|e| {
                StartError::Storage(format!(
                    "opening the state in {}: {e}",
                    group.join("state").display()
                ))
            })?,
        );
        let sm = StateMachine::new(engine.clone(), &group.join("snapshots")).map_err(storage)?;
        let mut log = log;
        log.guard_purges(sm.durable_mark());
        let advertise = match (&config.cluster_advertise, &transport) {
            (Some(a), _) => a.clone(),
            (None, Some(t)) => t
                .local_addr()
                .map_err(|e| StartError::Transport(e.to_string()))?
                .to_string(),
            (None, None) => String::new(),
        };
        let network = NetworkFactory {
            transport: transport.clone(),
        };
        let raft = Raft::new(
            config.node_id,
            raft_config,
            network,
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(|e| StartError::Storage(format!("starting raft: {e}")))?;
        let election_max = config.election_timeout_max_ms;
        let quorum_ack = crate::elector::QuorumAck::follow(raft.metrics());
        let proposer = Proposer::start(
            raft.clone(),
            ProposerBounds {
                commands_max: config.batch_commands_max,
                bytes_max: config.batch_bytes_max,
                entries_in_flight_max: config.entries_in_flight_max,
                quorum_ack_max_ms: election_max,
            },
            quorum_ack.clone(),
        );
        let forwarder = transport.as_ref().map(|t| {
            Forwarder::start(
                t.clone(),
                ForwardBounds {
                    bytes_max: config.batch_bytes_max,
                    bundles_max: config.batch_commands_max,
                    in_flight_max: config.forwards_in_flight_max,
                },
            )
        });
        let read_timeout = config.read_timeout();
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let w1 = weak.clone();
            let reads = ReadIndexBatcher::new(Arc::new(move || {
                let w = w1.clone();
                Box::pin(async move {
                    match w.upgrade() {
                        Some(n) => n.leader_read_round(read_timeout).await,
                        None => Err(Refusal::Failed("the node stopped".into())),
                    }
                })
            }));
            let w2 = weak.clone();
            let remote_reads = ReadIndexBatcher::new(Arc::new(move || {
                let w = w2.clone();
                Box::pin(async move {
                    match w.upgrade() {
                        Some(n) => n.remote_read_round(read_timeout).await,
                        None => Err(Refusal::Failed("the node stopped".into())),
                    }
                })
            }));
            Inner {
                id: config.node_id,
                config,
                raft,
                engine,
                log,
                sm,
                transport: transport.clone(),
                proposer,
                forwarder,
                reads,
                remote_reads,
                incarnation,
                seq: AtomicU64::new(0),
                in_flight_bytes: AtomicUsize::new(0),
                draining: AtomicBool::new(false),
                raft_open: AtomicBool::new(false),
                advertise,
                contact: crate::elector::LeaderContact::new(),
                quorum_ack,
            }
        });
        if let Some(t) = &transport {
            t.serve(Arc::new(NodeHandler(Arc::downgrade(&inner))));
        }
        let node = ClusterNode { inner };
        if let Err(e) = node.bootstrap().await {
            node.shutdown().await;
            return Err(e);
        }
        node.inner.raft_open.store(true, Ordering::Release);
        node.spawn_join_recorder();
        crate::elector::spawn(Arc::downgrade(&node.inner));
        Ok(node)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The engine, for reads (after [`ClusterNode::read_barrier`]).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// The openraft handle (metrics, tests).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// The transport (fault injection in tests).
    pub fn transport(&self) -> Option<&Arc<Transport>> {
        self.inner.transport.as_ref()
    }

    /// Makes this node's state machine fail its next apply like a storage error would
    /// (fault-injection tests; a restart clears it).
    #[doc(hidden)]
    pub fn inject_storage_failure_for_test(&self) {
        self.inner.sm.inject_apply_failure();
    }

    /// The address peers reach this node's cluster port at.
    pub fn cluster_addr(&self) -> &str {
        &self.inner.advertise
    }

    async fn bootstrap(&self) -> Result<(), StartError> {
        let n = &self.inner;
        if !n.log.is_empty().map_err(storage)? {
            tracing::info!("node {}: resuming the stored cluster state", n.id);
            return Ok(());
        }
        let me = n.id;
        let others: Vec<(NodeId, String)> = n
            .config
            .peers
            .iter()
            .filter(|(id, _)| *id != me)
            .cloned()
            .collect();
        if others.is_empty() {
            let members = BTreeMap::from([(me, BasicNode::new(n.advertise.clone()))]);
            return self.initialize(members).await;
        }
        let Some(t) = n.transport.clone() else {
            return Err(StartError::Config(
                "peers given without a cluster port".into(),
            ));
        };
        let majority = n.config.peers.len() / 2 + 1;
        let deadline = Instant::now() + Duration::from_millis(n.config.bootstrap_timeout_ms);
        let mut last_report = Instant::now();
        loop {
            let asks = others.iter().map(|(id, addr)| {
                let t = t.clone();
                async move {
                    t.call(*id, addr, Message::NodeInfo, Duration::from_secs(1))
                        .await
                        .map(|r| (*id, r))
                }
            });
            let mut empty = 1; // this node
            for answer in futures::future::join_all(asks).await {
                let Ok((peer, Reply::NodeInfo(info))) = answer else {
                    continue;
                };
                if info.initialized {
                    if info.voters.contains(&me) && info.joined.contains(&me) {
                        return Err(StartError::WipedVoter { id: me, peer });
                    }
                    tracing::info!(
                        "node {me}: node {peer} holds the cluster; waiting for the leader to \
                         replicate to this node (as an initial member, or once it is added \
                         as a learner)"
                    );
                    return Ok(());
                }
                empty += 1;
            }
            // A majority of the initial members is empty: no cluster can exist yet.
            let initial_member = n.config.peers.iter().any(|(id, _)| *id == me);
            if initial_member && empty >= majority {
                let members = n
                    .config
                    .peers
                    .iter()
                    .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
                    .collect();
                return self.initialize(members).await;
            }
            if Instant::now() > deadline {
                return Err(StartError::Bootstrap(format!(
                    "could not reach a majority of --peers ({majority} of {}) holding or \
                     founding a cluster within {} ms",
                    n.config.peers.len(),
                    n.config.bootstrap_timeout_ms
                )));
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                tracing::info!("node {me}: waiting for a majority of --peers to answer");
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn initialize(&self, members: BTreeMap<NodeId, BasicNode>) -> Result<(), StartError> {
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another initial member got there first with the same list: same cluster.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(StartError::Bootstrap(e.to_string())),
        }
    }

    /// The leader records which members ever acknowledged its log (replicated, in the
    /// applied marker), so a member that comes back with an empty data dir is recognised
    /// as wiped rather than as an initial member starting for the first time.
    fn spawn_join_recorder(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(300));
            loop {
                tick.tick().await;
                let Some(n) = weak.upgrade() else { return };
                if n.draining.load(Ordering::Acquire) {
                    return;
                }
                let m = n.raft.metrics().borrow().clone();
                if m.state != ServerState::Leader {
                    continue;
                }
                let joined = n.sm.joined();
                let mut new: Vec<NodeId> = Vec::new();
                if !joined.contains(&n.id) {
                    new.push(n.id);
                }
                if let Some(repl) = &m.replication {
                    for (id, matched) in repl {
                        if matched.is_some() && !joined.contains(id) {
                            new.push(*id);
                        }
                    }
                }
                if new.is_empty() {
                    continue;
                }
                let req = Request {
                    bundles: Vec::new(),
                    joined: new,
                };
                if let Err(e) = n.raft.client_write(req).await {
                    tracing::debug!("recording joined members: {e}");
                }
            }
        });
    }

    /// Adds a learner (waiting, up to the configured timeout, for it to catch up).
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<String, Refusal> {
        self.admin(AdminOp::AddLearner { id, addr }).await
    }

    /// Promotes a learner to voter.
    pub async fn promote(&self, id: NodeId) -> Result<String, Refusal> {
        self.admin(AdminOp::Promote { id }).await
    }

    /// Removes a node (voter or learner) from the cluster.
    pub async fn remove(&self, id: NodeId) -> Result<String, Refusal> {
        self.admin(AdminOp::Remove { id }).await
    }

    async fn admin(&self, op: AdminOp) -> Result<String, Refusal> {
        let n = &self.inner;
        let m = n.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            return n.admin_local(op).await;
        }
        let leader = m.current_leader.ok_or_else(|| {
            Refusal::Failed("no leader is known; membership cannot change now".into())
        })?;
        let (t, addr) = n.peer(leader)?;
        let timeout = Duration::from_millis(n.config.add_learner_timeout_ms + 5_000);
        match t.call(leader, &addr, Message::Admin(op), timeout).await {
            Ok(Reply::Admin(r)) => r,
            Ok(other) => Err(Refusal::Failed(format!("unexpected answer {other:?}"))),
            Err(e) => Err(Refusal::Failed(e.to_string())),
        }
    }

    /// SIGTERM: refuse new writes, let in-flight ones finish (bounded), stop Raft, close
    /// the cluster port, flush the state.
    pub async fn shutdown(&self) {
        let n = &self.inner;
        n.draining.store(true, Ordering::Release);
        for _ in 0..200 {
            if n.in_flight_bytes.load(Ordering::Acquire) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = n.raft.shutdown().await;
        if let Some(t) = &n.transport {
            t.close();
        }
        let engine = n.engine.clone();
        match tokio::task::spawn_blocking(move || engine.flush()).await {
            Ok(Ok(m)) => tracing::info!(
                "node {}: state flushed ({} marker bytes)",
                n.id,
                m.map(|m| m.len()).unwrap_or(0)
            ),
            Ok(Err(e)) => tracing::error!("node {}: flushing the state failed: {e}", n.id),
            Err(e) => tracing::error!("node {}: flush task failed: {e}", n.id),
        }
    }
}

impl Inner {
    /// The transport and the address of member `id`.
    pub(crate) fn peer(&self, id: NodeId) -> Result<(Arc<Transport>, String), Refusal> {
        let t = self
            .transport
            .clone()
            .ok_or_else(|| Refusal::Failed("this node has no cluster port".into()))?;
        let m = self.raft.metrics().borrow().membership_config.clone();
        let addr = m
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .ok_or_else(|| Refusal::Failed(format!("node {id} is not a member")))?;
        Ok((t, addr))
    }

    async fn admin_local(&self, op: AdminOp) -> Result<String, Refusal> {
        let fail = |e: RaftError<NodeId, openraft::error::ClientWriteError<NodeId, BasicNode>>| {
            match e.forward_to_leader::<BasicNode>() {
                Some(f) => Refusal::NotLeader {
                    leader: f.leader_id,
                },
                None => Refusal::Failed(e.to_string()),
            }
        };
        match op {
            AdminOp::AddLearner { id, addr } => {
                if addr.parse::<std::net::SocketAddr>().is_err() {
                    return Err(Refusal::Failed(format!(
                        "`{addr}` is not a cluster address (host:port with an IP)"
                    )));
                }
                let timeout = Duration::from_millis(self.config.add_learner_timeout_ms);
                match tokio::time::timeout(
                    timeout,
                    self.raft
                        .add_learner(id, BasicNode::new(addr.clone()), true),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(format!(
                        "node {id} ({addr}) added as a learner and caught up"
                    )),
                    Ok(Err(e)) => Err(fail(e)),
                    Err(_) => Err(Refusal::Failed(format!(
                        "node {id} was added as a learner but did not catch up within {} ms; \
                         it keeps catching up in the background",
                        self.config.add_learner_timeout_ms
                    ))),
                }
            }
            AdminOp::Promote { id } => self
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map(|_| format!("node {id} is a voter"))
                .map_err(fail),
            AdminOp::Remove { id } => {
                let m = self.raft.metrics().borrow().membership_config.clone();
                let is_voter = m.membership().voter_ids().any(|v| v == id);
                if m.membership().get_node(&id).is_none() {
                    return Err(Refusal::Failed(format!("node {id} is not a member")));
                }
                if is_voter {
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                        .await
                        .map_err(fail)?;
                } else {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                        .await
                        .map_err(fail)?;
                }
                Ok(format!("node {id} removed"))
            }
        }
    }

    /// What this node knows of itself.
    pub(crate) async fn info(&self) -> NodeInfo {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let initialized = !self.log.is_empty().unwrap_or(true);
        NodeInfo {
            id: self.id,
            initialized,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            nodes: membership.nodes().map(|(i, n)| (*i, n.clone())).collect(),
            state: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            committed_index: self.log.committed_index(),
            applied_index: m.last_applied.map(|l| l.index),
            clock_ms: crate::status::now_ms(),
            storage_error: m.running_state.as_ref().err().map(|e| e.to_string()),
            joined: self.sm.joined().into_iter().collect(),
        }
    }
}

/// Serves cluster messages for a node (weak: the transport must not keep it alive).
struct NodeHandler(Weak<Inner>);

impl Handler for NodeHandler {
    fn handle(&self, _from: NodeId, msg: Message) -> BoxFuture<'static, Reply> {
        let weak = self.0.clone();
        Box::pin(async move {
            let Some(n) = weak.upgrade() else {
                return Reply::Refused("the node is stopping".into());
            };
            let raft_rpc = matches!(
                msg,
                Message::AppendEntries(_) | Message::Vote(_) | Message::InstallSnapshot(_)
            );
            if raft_rpc && !n.raft_open.load(Ordering::Acquire) {
                return Reply::Refused(format!("node {} is still starting", n.id));
            }
            match msg {
                Message::AppendEntries(rpc) => {
                    let r = n.raft.append_entries(rpc).await;
                    if matches!(&r, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_))) {
                        n.contact.touch();
                    }
                    Reply::AppendEntries(r.map_err(|e| e.to_string()))
                }
                Message::Vote(rpc) => {
                    let r = n.raft.vote(rpc).await;
                    if matches!(&r, Ok(v) if v.vote_granted) {
                        n.contact.touch();
                    }
                    Reply::Vote(r.map_err(|e| e.to_string()))
                }
                Message::Probe => Reply::Probe(n.probe_info()),
                Message::InstallSnapshot(rpc) => {
                    Reply::InstallSnapshot(match n.raft.install_snapshot(rpc).await {
                        Ok(r) => {
                            n.contact.touch();
                            SnapshotReply::Ok(r)
                        }
                        Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m))) => {
                            SnapshotReply::Mismatch(m)
                        }
                        Err(e) => SnapshotReply::Failed(e.to_string()),
                    })
                }
                Message::Forward(bundles) => {
                    let deadline = Instant::now() + n.config.write_timeout();
                    let all = bundles
                        .into_iter()
                        .map(|b| n.propose_forwarded(b, deadline));
                    let outcomes: Vec<ForwardOutcome> = futures::future::join_all(all).await;
                    Reply::Forward(outcomes)
                }
                Message::ReadIndex => {
                    let m = n.raft.metrics().borrow().clone();
                    if m.state != ServerState::Leader {
                        Reply::ReadIndex(Err(Refusal::NotLeader {
                            leader: m.current_leader,
                        }))
                    } else {
                        Reply::ReadIndex(n.reads.read_index().await)
                    }
                }
                Message::NodeInfo => Reply::NodeInfo(n.info().await),
                Message::Admin(op) => {
                    let m = n.raft.metrics().borrow().clone();
                    if m.state != ServerState::Leader {
                        Reply::Admin(Err(Refusal::NotLeader {
                            leader: m.current_leader,
                        }))
                    } else {
                        Reply::Admin(n.admin_local(op).await)
                    }
                }
                Message::Hello { .. } => Reply::Refused("handshake repeated".into()),
            }
        })
    }
}
