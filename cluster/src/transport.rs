//! The cluster port: QUIC (quinn) with mutual TLS, one bidirectional stream per RPC.
//!
//! A node keeps one connection per peer, opened on first use and re-opened when it
//! breaks. Every new connection starts with the handshake (wire version, group, who
//! speaks to whom), checked against the certificates on both ends; afterwards each
//! message's sender id must equal the id in the peer's certificate. Every RPC has a
//! timeout and a bounded size both ways.
//!
//! [`FaultSwitch`] drops or delays traffic to and from chosen peers, so tests can
//! partition a node without touching the operating system.

use crate::tls::{names_node, node_name, NodeTls};
use crate::types::NodeId;
use crate::wire::{self, Envelope, Message, Reply, GROUP, MESSAGE_BYTES_MAX, WIRE_VERSION};
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use rustls::pki_types::CertificateDer;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Incoming connections served at once; more are refused.
pub const CONNECTIONS_MAX: usize = 64;
/// Streams (RPCs) one peer may have open at once.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 512;
/// How long a handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an RPC failed, in terms the caller can act on.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RpcError {
    /// Nothing reached the peer (no connection, refused handshake, blocked by a fault):
    /// the request was certainly not acted on.
    #[error("node {0} is unreachable: {1}")]
    Unreachable(NodeId, String),
    /// The request may have reached the peer, but no answer came back in time.
    #[error("no answer from node {0} within {1:?}")]
    Timeout(NodeId, Duration),
    /// The request may have reached the peer; the connection broke before the answer.
    #[error("connection to node {0} broke: {1}")]
    Broken(NodeId, String),
    /// The peer refused the message (version, sender, group).
    #[error("node {0} refused the message: {1}")]
    Refused(NodeId, String),
}

impl RpcError {
    /// True when the request certainly did not reach the peer's handler.
    pub fn not_delivered(&self) -> bool {
        matches!(self, RpcError::Unreachable(..) | RpcError::Refused(..))
    }
}

/// Serves the requests a node receives.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request from the (certificate-verified) node `from`.
    fn handle(&self, from: NodeId, msg: Message) -> BoxFuture<'static, Reply>;
}

/// Drops or delays messages to and from chosen peers (fault injection in tests).
#[derive(Default)]
pub struct FaultSwitch {
    blocked: RwLock<HashSet<NodeId>>,
    drop_replies: RwLock<HashSet<NodeId>>,
    delay_ms: RwLock<u64>,
}

impl FaultSwitch {
    /// Drops every message to and from `peers` until [`FaultSwitch::heal`].
    pub fn block(&self, peers: &[NodeId]) {
        self.blocked.write().extend(peers.iter().copied());
    }

    /// Handles requests from `peers` but loses the answers (the caller cannot tell
    /// whether its request was acted on).
    pub fn drop_replies_to(&self, peers: &[NodeId]) {
        self.drop_replies.write().extend(peers.iter().copied());
    }

    /// Lets all traffic through again.
    pub fn heal(&self) {
        self.blocked.write().clear();
        self.drop_replies.write().clear();
        *self.delay_ms.write() = 0;
    }

    /// Delays every outgoing message by `ms`.
    pub fn delay(&self, ms: u64) {
        *self.delay_ms.write() = ms;
    }

    fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked.read().contains(&peer)
    }
}

/// One node's end of the cluster port.
pub struct Transport {
    id: NodeId,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    conns: Mutex<HashMap<NodeId, (SocketAddr, quinn::Connection)>>,
    /// Serialises connection set-up per peer so concurrent callers share one.
    dialing: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>,
    pub faults: FaultSwitch,
    handler: RwLock<Option<Arc<dyn Handler>>>,
}

fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(STREAMS_PER_CONNECTION_MAX.into())
        .max_concurrent_uni_streams(0u32.into())
        // Raft batches are megabytes: windows large enough for loopback and LAN bursts.
        .stream_receive_window((16u32 << 20).into())
        .receive_window((64u32 << 20).into())
        .send_window(64 << 20)
        .keep_alive_interval(Some(Duration::from_millis(250)))
        .max_idle_timeout(quinn::IdleTimeout::try_from(Duration::from_secs(2)).ok());
    t
}

impl Transport {
    /// Binds the cluster port on `addr` (port 0: an ephemeral port) with the node's TLS.
    pub fn bind(addr: SocketAddr, tls: &NodeTls) -> std::io::Result<Arc<Transport>> {
        let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let transport = Arc::new(transport_config());
        let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.server.clone())
            .map_err(|e| bad(format!("TLS server config: {e}")))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls.client.clone())
            .map_err(|e| bad(format!("TLS client config: {e}")))?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
        client_config.transport_config(transport);
        let endpoint = quinn::Endpoint::server(server, addr)?;
        Ok(Arc::new(Transport {
            id: tls.id,
            endpoint,
            client_config,
            conns: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashMap::new()),
            faults: FaultSwitch::default(),
            handler: RwLock::new(None),
        }))
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// This node's id (from its certificate).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Starts accepting connections, handing requests to `handler`.
    pub fn serve(self: &Arc<Self>, handler: Arc<dyn Handler>) {
        *self.handler.write() = Some(handler);
        let me = self.clone();
        tokio::spawn(async move { me.accept_loop().await });
    }

    /// Closes the port: peers see the connection end at once.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutting down");
    }

    async fn accept_loop(self: Arc<Self>) {
        let live = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
        while let Some(incoming) = self.endpoint.accept().await {
            let Ok(permit) = live.clone().try_acquire_owned() else {
                incoming.refuse();
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                    Ok(Ok(conn)) => me.serve_connection(conn).await,
                    Ok(Err(e)) => tracing::debug!("cluster connection failed: {e}"),
                    Err(_) => tracing::debug!("cluster handshake timed out"),
                }
            });
        }
    }

    /// The peer's leaf certificate (TLS already verified it against the CA).
    fn peer_cert(conn: &quinn::Connection) -> Result<CertificateDer<'static>, String> {
        conn.peer_identity()
            .and_then(|b| b.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|certs| certs.first().cloned())
            .ok_or_else(|| "the peer presented no certificate".to_string())
    }

    async fn serve_connection(self: Arc<Self>, conn: quinn::Connection) {
        let cert = match Self::peer_cert(&conn) {
            Ok(c) => c,
            Err(e) => {
                conn.close(1u32.into(), e.as_bytes());
                return;
            }
        };
        // The handshake stream comes first.
        let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.accept_bi()).await;
        let Ok(Ok((mut send, mut recv))) = hello else {
            conn.close(1u32.into(), b"no handshake");
            return;
        };
        let mut peer: NodeId = 0;
        let reply = match read_message::<Envelope>(&mut recv).await {
            Ok(Envelope {
                from,
                group,
                body: Message::Hello { version, to, .. },
            }) => {
                peer = from;
                if version != WIRE_VERSION {
                    Err(format!(
                        "wire version {version}, this node speaks {WIRE_VERSION}"
                    ))
                } else if group != GROUP {
                    Err(format!("unknown raft group {group}"))
                } else if !names_node(&cert, from) {
                    Err(format!(
                        "sender id {from} differs from its certificate's node id ({})",
                        crate::tls::node_id_of(&cert)
                            .map(|i| i.to_string())
                            .unwrap_or_else(|e| e.to_string())
                    ))
                } else if to != self.id {
                    Err(format!("this is node {}, not node {to}", self.id))
                } else {
                    Ok(())
                }
            }
            Ok(_) => Err("the first message must be a handshake".to_string()),
            Err(e) => Err(e),
        };
        let ok = reply.is_ok();
        let answer = match reply {
            Ok(()) => Reply::HelloAck {
                version: WIRE_VERSION,
                node: self.id,
            },
            Err(e) => {
                tracing::warn!("refused a cluster connection from node {peer}: {e}");
                Reply::Refused(e)
            }
        };
        let _ = write_message(&mut send, &answer).await;
        if !ok {
            // Let the refusal reach the peer before closing.
            let _ = tokio::time::timeout(Duration::from_millis(200), send.stopped()).await;
            conn.close(1u32.into(), b"handshake refused");
            return;
        }
        loop {
            let (mut send, mut recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(_) => return,
            };
            let me = self.clone();
            tokio::spawn(async move {
                let env = match read_message::<Envelope>(&mut recv).await {
                    Ok(env) => env,
                    Err(e) => {
                        let _ = write_message(&mut send, &Reply::Refused(e)).await;
                        return;
                    }
                };
                if me.faults.is_blocked(peer) {
                    // A partition: the message is lost, the caller times out.
                    let _ = send.reset(0u32.into());
                    return;
                }
                let reply = if env.from != peer {
                    Reply::Refused(format!(
                        "sender id {} differs from its certificate's node id {peer}",
                        env.from
                    ))
                } else if env.group != GROUP {
                    Reply::Refused(format!("unknown raft group {}", env.group))
                } else if matches!(env.body, Message::Hello { .. }) {
                    Reply::Refused("handshake repeated".into())
                } else {
                    let handler = me.handler.read().clone();
                    match handler {
                        // A caller that gave up (its RPC timed out) stops the stream: drop
                        // the work, so queued forwarded writes are withdrawn, not proposed
                        // for nobody while new ones pile up behind them.
                        Some(h) => tokio::select! {
                            r = h.handle(peer, env.body) => r,
                            _ = send.stopped() => return,
                        },
                        None => Reply::Refused("node is starting".into()),
                    }
                };
                if me.faults.drop_replies.read().contains(&peer) {
                    let _ = send.reset(0u32.into());
                    return;
                }
                let _ = write_message(&mut send, &reply).await;
            });
        }
    }

    /// Sends `msg` to node `to` at `addr` and waits up to `timeout` for the answer.
    pub async fn call(
        &self,
        to: NodeId,
        addr: &str,
        msg: Message,
        timeout: Duration,
    ) -> Result<Reply, RpcError> {
        self.call_from(self.id, to, addr, msg, timeout).await
    }

    /// Like [`Transport::call`], but the envelope claims sender `claimed` (tests of the
    /// receiver's sender check; a real node never lies about itself).
    #[doc(hidden)]
    pub async fn call_as_for_test(
        &self,
        claimed: NodeId,
        to: NodeId,
        addr: &str,
        msg: Message,
        timeout: Duration,
    ) -> Result<Reply, RpcError> {
        self.call_from(claimed, to, addr, msg, timeout).await
    }

    async fn call_from(
        &self,
        from: NodeId,
        to: NodeId,
        addr: &str,
        msg: Message,
        timeout: Duration,
    ) -> Result<Reply, RpcError> {
        if self.faults.is_blocked(to) {
            return Err(RpcError::Unreachable(
                to,
                "blocked by a fault switch".into(),
            ));
        }
        let delay = *self.faults.delay_ms.read();
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let env = Envelope {
            from,
            group: GROUP,
            body: msg,
        };
        let bytes = wire::encode(&env).map_err(|e| RpcError::Refused(to, e))?;
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(RpcError::Refused(
                to,
                format!(
                    "message of {} bytes exceeds the bound of {MESSAGE_BYTES_MAX}",
                    bytes.len()
                ),
            ));
        }
        // The connection this call used, with the datagrams it had received before.
        let used: Mutex<Option<(quinn::Connection, u64)>> = Mutex::new(None);
        let fut = async {
            let conn = self.connection(to, addr).await?;
            *used.lock() = Some((conn.clone(), conn.stats().udp_rx.datagrams));
            match self.exchange(to, &conn, &bytes).await {
                Err(RpcError::Unreachable(..)) => {
                    // The cached connection was dead: one fresh try.
                    self.forget(to, &conn);
                    let conn = self.connection(to, addr).await?;
                    self.exchange(to, &conn, &bytes).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                // A peer that was killed or restarted leaves our connection to it
                // silently dead (its new process cannot reset it) until the idle timeout:
                // every call on it would time out. A live peer acknowledges our request
                // within milliseconds, so nothing received during the whole call means
                // dead: drop it, and the next call dials afresh.
                if let Some((conn, rx_before)) = used.lock().take() {
                    if conn.stats().udp_rx.datagrams == rx_before {
                        tracing::debug!(
                            "connection to node {to} silent for {timeout:?}: redialing next time"
                        );
                        self.forget(to, &conn);
                    }
                }
                Err(RpcError::Timeout(to, timeout))
            }
        }
    }

    async fn exchange(
        &self,
        to: NodeId,
        conn: &quinn::Connection,
        bytes: &[u8],
    ) -> Result<Reply, RpcError> {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| RpcError::Unreachable(to, e.to_string()))?;
        send.write_all(bytes)
            .await
            .map_err(|e| RpcError::Broken(to, e.to_string()))?;
        send.finish()
            .map_err(|e| RpcError::Broken(to, e.to_string()))?;
        let reply: Reply = read_message(&mut recv)
            .await
            .map_err(|e| RpcError::Broken(to, e))?;
        if let Reply::Refused(why) = reply {
            return Err(RpcError::Refused(to, why));
        }
        Ok(reply)
    }

    fn forget(&self, to: NodeId, conn: &quinn::Connection) {
        let mut conns = self.conns.lock();
        if conns
            .get(&to)
            .is_some_and(|(_, c)| c.stable_id() == conn.stable_id())
        {
            conns.remove(&to);
        }
    }

    async fn connection(&self, to: NodeId, addr: &str) -> Result<quinn::Connection, RpcError> {
        let sock: SocketAddr = addr
            .parse()
            .map_err(|e| RpcError::Unreachable(to, format!("bad address `{addr}`: {e}")))?;
        if let Some(c) = self.cached(to, sock) {
            return Ok(c);
        }
        let gate = self.dialing.lock().entry(to).or_default().clone();
        let _g = gate.lock().await;
        if let Some(c) = self.cached(to, sock) {
            return Ok(c);
        }
        let conn = self
            .endpoint
            .connect_with(self.client_config.clone(), sock, &node_name(to))
            .map_err(|e| RpcError::Unreachable(to, e.to_string()))?
            .await
            .map_err(|e| RpcError::Unreachable(to, e.to_string()))?;
        let hello = wire::encode(&Envelope {
            from: self.id,
            group: GROUP,
            body: Message::Hello {
                version: WIRE_VERSION,
                from: self.id,
                to,
            },
        })
        .map_err(|e| RpcError::Refused(to, e))?;
        match self.exchange(to, &conn, &hello).await {
            Ok(Reply::HelloAck { version, node }) if version == WIRE_VERSION && node == to => {}
            Ok(other) => {
                conn.close(1u32.into(), b"bad handshake");
                return Err(RpcError::Refused(
                    to,
                    format!("unexpected handshake answer {other:?}"),
                ));
            }
            Err(RpcError::Broken(_, e)) => return Err(RpcError::Unreachable(to, e)),
            Err(e) => return Err(e),
        }
        self.conns.lock().insert(to, (sock, conn.clone()));
        Ok(conn)
    }

    fn cached(&self, to: NodeId, sock: SocketAddr) -> Option<quinn::Connection> {
        let mut conns = self.conns.lock();
        match conns.get(&to) {
            Some((a, c)) if *a == sock && c.close_reason().is_none() => Some(c.clone()),
            Some(_) => {
                conns.remove(&to);
                None
            }
            None => None,
        }
    }
}

async fn read_message<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<T, String> {
    let bytes = recv
        .read_to_end(MESSAGE_BYTES_MAX)
        .await
        .map_err(|e| format!("cannot read a cluster message: {e}"))?;
    wire::decode(&bytes)
}

async fn write_message<T: serde::Serialize>(
    send: &mut quinn::SendStream,
    msg: &T,
) -> Result<(), String> {
    let bytes = wire::encode(msg)?;
    send.write_all(&bytes).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())
}
