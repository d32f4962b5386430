//! The connection cases: [`ipc_core::conn`] between two processes (see `benches/README.md`).
//!
//! Each case starts its peer and waits for it to report ready before the clock starts, times only
//! the steady state, checks what came back, and joins the peer after the clock stops.

use std::time::{Duration, Instant};

use anyhow::ensure;
use ipc_core::conn::{Connection, pipe};

use crate::peer::{Peer, handshake};
use crate::pin::Placement;

/// Bytes of the `pipe_bytes_pingpong` message.
pub const PINGPONG_BYTES: usize = 16;
/// Bytes of one `pipe_throughput_1m` block.
pub const THROUGHPUT_BLOCK: usize = 1 << 20;
/// The byte every throughput block is filled with, checked at both ends of each received block.
const FILL: u8 = 0xa5;

/// `pipe_pingpong`: `n` round trips of a typed `u64` (`send` / `recv`, the child echoes it).
pub fn pipe_pingpong(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    let (conn, theirs) = pipe()?;
    let peer = Peer::start(placement, 1, "pipe_echo", move || pipe_echo(theirs, n))?;
    handshake(&conn)?;
    let t0 = Instant::now();
    for i in 0..n {
        conn.send(&i)?;
        let back: u64 = conn.recv()?;
        ensure!(back == i, "echoed {back}, expected {i}");
    }
    let dt = t0.elapsed();
    peer.join()?;
    Ok(dt)
}

/// `pipe_bytes_pingpong`: `n` round trips of a 16-byte message (`send_bytes` / `recv_bytes`).
pub fn pipe_bytes_pingpong(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    let (conn, theirs) = pipe()?;
    let peer = Peer::start(placement, 1, "pipe_bytes_echo", move || {
        pipe_bytes_echo(theirs, n)
    })?;
    handshake(&conn)?;
    let mut msg = [0u8; PINGPONG_BYTES];
    let t0 = Instant::now();
    for i in 0..n {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        conn.send_bytes(&msg)?;
        let back = conn.recv_bytes()?;
        ensure!(back == msg, "echoed message {i} differs");
    }
    let dt = t0.elapsed();
    peer.join()?;
    Ok(dt)
}

/// `pipe_throughput_1m`: the child sends `n` blocks of 1 MiB, the parent receives them all.
/// Timed from the parent's "go" to the last block received.
pub fn pipe_throughput_1m(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    let (conn, theirs) = pipe()?;
    let size = THROUGHPUT_BLOCK as u64;
    let peer = Peer::start(placement, 1, "pipe_producer", move || {
        pipe_producer(theirs, n, THROUGHPUT_BLOCK)
    })?;
    handshake(&conn)?;
    let t0 = Instant::now();
    conn.send_bytes(b"go")?;
    let mut total = 0u64;
    for i in 0..n {
        let block = conn.recv_bytes()?;
        ensure!(
            block.len() == THROUGHPUT_BLOCK && block[0] == FILL && block[block.len() - 1] == FILL,
            "block {i} is wrong ({} bytes)",
            block.len()
        );
        total += block.len() as u64;
    }
    let dt = t0.elapsed();
    peer.join()?;
    ensure!(
        total == n * size,
        "received {total} bytes, expected {}",
        n * size
    );
    Ok(dt)
}

/// Peer of `pipe_pingpong`: receives `n` values and sends each one back.
fn pipe_echo(conn: Connection, n: u64) -> anyhow::Result<()> {
    conn.send_bytes(b"ready")?;
    for _ in 0..n {
        let v: u64 = conn.recv()?;
        conn.send(&v)?;
    }
    Ok(())
}

/// Peer of `pipe_bytes_pingpong`: receives `n` byte messages and sends each one back.
fn pipe_bytes_echo(conn: Connection, n: u64) -> anyhow::Result<()> {
    conn.send_bytes(b"ready")?;
    for _ in 0..n {
        let msg = conn.recv_bytes()?;
        conn.send_bytes(&msg)?;
    }
    Ok(())
}

/// Peer of `pipe_throughput_1m`: after "go", sends `n` blocks of `size` bytes.
fn pipe_producer(conn: Connection, n: u64, size: usize) -> anyhow::Result<()> {
    let block = vec![FILL; size];
    conn.send_bytes(b"ready")?;
    let go = conn.recv_bytes()?;
    ensure!(go == b"go", "expected go, got {go:?}");
    for _ in 0..n {
        conn.send_bytes(&block)?;
    }
    Ok(())
}
