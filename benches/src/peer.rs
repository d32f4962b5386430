//! The child processes that the cross-process cases talk to.
//!
//! A peer is forked with [`ipc_core::process::Builder`] under the fork start method (so this
//! project's own process API is what the cases use, and a peer costs one fork, outside the timed
//! region). It is a daemon: if the runner dies, so does the peer. It reports ready over its
//! connection before the clock starts, and is joined after the clock stops; its function's error
//! comes back through the join. A peer that is not joined (the case failed) is killed and reaped
//! when its [`Peer`] drops, so a failing case leaves no process behind.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use ipc_core::conn::Connection;
use ipc_core::process::{Builder, JoinHandle, StartMethod};

use crate::HANDSHAKE_TIMEOUT;
use crate::pin::Placement;

/// What a peer's function returns: the error as text, since it crosses a process boundary.
type PeerResult = Result<(), String>;

/// A running peer process.
#[derive(Debug)]
pub struct Peer {
    handle: Option<JoinHandle<PeerResult>>,
    name: &'static str,
}

impl Peer {
    /// Forks a peer running `f(conn)`, placed per `placement` as the case's `live`-th live child.
    pub fn start<F>(
        placement: &Placement,
        live: usize,
        name: &'static str,
        f: F,
    ) -> anyhow::Result<Peer>
    where
        F: FnOnce() -> anyhow::Result<()> + Send + 'static,
    {
        let handle = Builder::new()
            .name(name)
            .daemon(true)
            .start_method(StartMethod::Fork)
            .fork(move || f().map_err(|e| format!("{e:#}")))
            .with_context(|| format!("starting peer {name}"))?;
        let peer = Peer {
            handle: Some(handle),
            name,
        };
        placement.child_started(peer.pid(), live)?;
        Ok(peer)
    }

    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.handle.as_ref().map_or(0, JoinHandle::pid)
    }

    /// Waits (up to the handshake timeout) for the peer to finish and checks that it succeeded.
    pub fn join(mut self) -> anyhow::Result<()> {
        let handle = self.handle.take().expect("a peer is joined once");
        if let Err(ipc_core::Error::Timeout) = handle.join_timeout(HANDSHAKE_TIMEOUT) {
            let _ = handle.kill();
            let _ = handle.join_timeout(Duration::from_secs(5));
            bail!(
                "peer {} did not finish within {HANDSHAKE_TIMEOUT:?}",
                self.name
            );
        }
        match handle.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow!("peer {} failed: {e}", self.name)),
            Err(e) => Err(anyhow!("peer {}: {e}", self.name)),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = handle.kill();
            let _ = handle.join_timeout(Duration::from_secs(5));
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
