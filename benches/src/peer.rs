//! The child processes that the cross-process cases talk to.
//!
//! A peer is this same executable, started again with [`PEER_ENV`] naming the peer function and
//! its arguments, with its end of the case's connection as its standard input. Every binary that
//! starts peers calls [`serve_if_peer`] first thing in `main`, which runs the peer function and
//! exits instead of running the benchmarks again.
//!
//! Peers start outside the timed region, report ready over their connection, and are joined (exit
//! status checked) after it. A peer that is not joined (the case failed) is killed and reaped
//! when its [`Peer`] drops, so a failing case leaves no process behind.

use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use ipc_core::conn::Connection;

use crate::HANDSHAKE_TIMEOUT;
use crate::pin::Placement;

/// The environment variable that makes this executable run a peer function instead of `main`.
pub const PEER_ENV: &str = "IPC_BENCHES_PEER";

/// A peer function: runs in the child with its connection and the case's numeric arguments.
pub type PeerFn = fn(Connection, &[u64]) -> anyhow::Result<()>;

/// Every peer function, by name.
static PEERS: &[(&str, PeerFn)] = &[
    ("pipe_echo", crate::conn::pipe_echo),
    ("pipe_bytes_echo", crate::conn::pipe_bytes_echo),
    ("pipe_producer", crate::conn::pipe_producer),
];

/// In a peer child: runs the peer named in [`PEER_ENV`] and exits (status 0 on success, 1 with
/// the error on stderr otherwise). Elsewhere: returns at once.
pub fn serve_if_peer() {
    let Some(spec) = std::env::var_os(PEER_ENV) else {
        return;
    };
    let spec = spec.to_string_lossy().into_owned();
    let code = match run_peer(&spec) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("benchmark peer {spec:?} failed: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run_peer(spec: &str) -> anyhow::Result<()> {
    let mut words = spec.split_whitespace();
    let name = words.next().context("empty peer specification")?;
    let args = words
        .map(|w| {
            w.parse::<u64>()
                .with_context(|| format!("bad argument {w:?}"))
        })
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let (_, f) = PEERS
        .iter()
        .find(|(n, _)| *n == name)
        .with_context(|| format!("no peer function named {name:?}"))?;
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("taking the connection from standard input")?;
    f(Connection::from_socket(fd), &args)
}

/// A running peer process.
#[derive(Debug)]
pub struct Peer {
    child: Option<Child>,
    name: &'static str,
}

impl Peer {
    /// Starts the peer function `name` with `args`, handing it `conn` (one end of a socketpair),
    /// and places it per `placement` as the case's `live`-th live child.
    pub fn start(
        placement: &Placement,
        live: usize,
        name: &'static str,
        args: &[u64],
        conn: Connection,
    ) -> anyhow::Result<Peer> {
        anyhow::ensure!(
            PEERS.iter().any(|(n, _)| *n == name),
            "no peer function named {name:?}"
        );
        let spec = std::iter::once(name.to_string())
            .chain(args.iter().map(u64::to_string))
            .collect::<Vec<_>>()
            .join(" ");
        let exe = std::env::current_exe().context("finding this executable")?;
        let child = Command::new(&exe)
            .env(PEER_ENV, spec)
            .stdin(Stdio::from(OwnedFd::from(conn)))
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting peer {name} ({})", exe.display()))?;
        let peer = Peer {
            child: Some(child),
            name,
        };
        placement.child_started(peer.pid(), live)?;
        Ok(peer)
    }

    /// The peer's process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Waits (up to the handshake timeout) for the peer to exit and checks that it succeeded.
    pub fn join(mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().expect("a peer is joined once");
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("waiting for a peer")? {
                if status.success() {
                    return Ok(());
                }
                bail!("peer {} exited with {status}", self.name);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "peer {} did not exit within {HANDSHAKE_TIMEOUT:?}",
                    self.name
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for the peer's "ready" message on `conn` (bounded by the handshake timeout).
pub fn handshake(conn: &Connection) -> anyhow::Result<()> {
    anyhow::ensure!(
        conn.poll(Some(HANDSHAKE_TIMEOUT))?,
        "the peer did not report ready within {HANDSHAKE_TIMEOUT:?}"
    );
    let msg = conn
        .recv_bytes()
        .context("receiving the peer's ready message")?;
    anyhow::ensure!(msg == b"ready", "bad handshake message {msg:?}");
    Ok(())
}
