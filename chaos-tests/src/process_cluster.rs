//! A cluster of real `thicket serve` processes on loopback.
//!
//! Ports are ephemeral (a free TCP port whose UDP twin is free too); data and
//! certificates live under one directory. Processes are stopped only by the pid this
//! harness started: SIGKILL for crash drills, SIGTERM on drop so they flush.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a node may take to report its HTTP address (bootstrap waits for a majority).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A free loopback port for TCP (HTTP) and UDP (QUIC) alike.
pub fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port found in 100 tries")
}

/// One `thicket serve` process and the flags it is (re)started with.
pub struct Node {
    pub id: u64,
    /// HTTP address, `127.0.0.1:<port>`.
    pub http: String,
    pub args: Vec<String>,
    bin: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts the process and waits until it listens on HTTP.
    pub fn spawn(&mut self) -> Result<()> {
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let out = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let id = self.id;
        std::thread::spawn(move || {
            // The node logs to stdout: pass its lines on (as `node N: ...`) so a failing
            // test or a drill with RUST_LOG raised shows what each node did.
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.starts_with("listening on ") {
                    let _ = tx.send(());
                } else {
                    eprintln!("node {id}: {line}");
                }
            }
        });
        self.child = Some(child);
        rx.recv_timeout(START_TIMEOUT)
            .with_context(|| format!("node {} did not start", self.id))
    }

    /// Whether the process runs (as far as this harness knows).
    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, by the pid this harness started.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
    }

    /// SIGTERM (drain, stop Raft, flush), then wait for the exit.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
    }

    fn signal(&mut self, sig: i32) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signals only the child this harness started, by its pid.
            unsafe { libc::kill(c.id() as i32, sig) };
            let _ = c.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// N nodes of one cluster.
pub struct ProcessCluster {
    pub root: PathBuf,
    /// Declared before the temp dir: fields drop in order, so the nodes stop (and flush)
    /// before their data dirs are removed.
    pub nodes: BTreeMap<u64, Node>,
    _tmp: Option<tempfile::TempDir>,
}

impl ProcessCluster {
    /// Creates certificates and starts nodes 1..=n at once (each waits for a majority),
    /// with `extra` flags on every node. `root` defaults to a temp dir.
    pub fn start(bin: &Path, n: u64, root: Option<PathBuf>, extra: &[&str]) -> Result<Self> {
        let (tmp, root) = match root {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let certs = root.join("certs");
        let ids = (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let st = Command::new(bin)
            .args(["certs", "--dir"])
            .arg(&certs)
            .args(["--nodes", &ids])
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("thicket certs failed");
        }
        let mut ports = Vec::new();
        for _ in 0..n {
            ports.push((free_port()?, free_port()?));
        }
        let peers = (1..=n)
            .map(|i| format!("{i}=127.0.0.1:{}", ports[i as usize - 1].1))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let (http, cluster) = ports[id as usize - 1];
            let mut args: Vec<String> = [
                "serve",
                "--node-id",
                &id.to_string(),
                "--data-dir",
                &root.join(format!("n{id}")).display().to_string(),
                "--http",
                &format!("127.0.0.1:{http}"),
                "--cluster",
                &format!("127.0.0.1:{cluster}"),
                "--peers",
                &peers,
                "--certs-dir",
                &certs.display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            nodes.insert(
                id,
                Node {
                    id,
                    http: format!("127.0.0.1:{http}"),
                    args,
                    bin: bin.to_path_buf(),
                    child: None,
                },
            );
        }
        // All at once: bootstrap needs a majority of the initial members up.
        let handles: Vec<_> = nodes
            .values()
            .map(|n| {
                let mut n2 = Node {
                    id: n.id,
                    http: n.http.clone(),
                    args: n.args.clone(),
                    bin: n.bin.clone(),
                    child: None,
                };
                std::thread::spawn(move || n2.spawn().map(|_| n2.child.take()))
            })
            .collect();
        for (n, h) in nodes.values_mut().zip(handles) {
            n.child = h
                .join()
                .map_err(|_| anyhow::anyhow!("a start thread panicked"))??;
        }
        Ok(ProcessCluster {
            root,
            _tmp: tmp,
            nodes,
        })
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).expect("no such node")
    }
}
