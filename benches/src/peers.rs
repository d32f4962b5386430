//! Rust peers measured next to this project by `cargo xtask compare --peers` (cargo feature
//! `peers`): procspawn for start-up and pools, ipc-channel for connections.
//!
//! Each peer function performs one repetition of the named case with the other crate, with the
//! same sizes and the same checks, and returns the time of the timed region; the figure comes
//! from the case's unit as for this project.
//! - procspawn: `process_start_join_spawn` (`procspawn::spawn(i, echo)` + `join`, checked) and
//!   `pool_map_trivial_chunk1` (a 2-process `procspawn::Pool`, created outside the clock,
//!   `n` tasks submitted one by one, at most 64 in flight, all joined and checked: procspawn has
//!   no map, so one task is one chunk, as with `chunksize=1`).
//! - ipc-channel: `pipe_pingpong` (typed `u64` round trips over two `ipc::channel`s) and
//!   `pipe_throughput_1m` (1 MiB blocks over an `ipc::bytes_channel`), with the other end in a
//!   child forked by ipc-core (as for this project's own cases).
//!
//! procspawn re-executes the binary: `main` of the compare binary calls [`init`] first.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use ipc_channel::ipc;

use crate::cases::CaseFn;
use crate::peer::Peer;
use crate::pin::Placement;

/// (case, peer crate, one repetition).
pub static PEERS: &[(&str, &str, CaseFn)] = &[
    (
        "process_start_join_spawn",
        "procspawn",
        procspawn_start_join,
    ),
    ("pool_map_trivial_chunk1", "procspawn", procspawn_pool_map),
    ("pipe_pingpong", "ipc-channel", ipc_channel_pingpong),
    ("pipe_throughput_1m", "ipc-channel", ipc_channel_throughput),
];

/// procspawn's child entry: must run first in `main` (a procspawn child never returns from it).
pub fn init() {
    procspawn::init();
}

/// Tasks in flight in `procspawn_pool_map`.
const PROCSPAWN_WINDOW: usize = 64;

fn echo(x: u64) -> u64 {
    x
}

fn procspawn_start_join(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    for i in 0..n {
        let back = procspawn::spawn(i, echo)
            .join()
            .map_err(|e| anyhow!("procspawn child: {e}"))?;
        ensure!(back == i, "procspawn child returned {back}, expected {i}");
    }
    Ok(t0.elapsed())
}

fn procspawn_pool_map(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let pool = procspawn::Pool::new(2).map_err(|e| anyhow!("procspawn pool: {e}"))?;
    let t0 = Instant::now();
    // Every queued procspawn task holds two ipc-channels (four descriptors) until it is joined,
    // so submitting all n at once runs out of descriptors: keep a bounded window in flight.
    let mut window = std::collections::VecDeque::new();
    let join = |(i, h): (u64, procspawn::JoinHandle<u64>)| -> anyhow::Result<()> {
        let back = h.join().map_err(|e| anyhow!("procspawn task: {e}"))?;
        ensure!(back == i, "task {i} returned {back}");
        Ok(())
    };
    for i in 0..n {
        window.push_back((i, pool.spawn(i, echo)));
        if window.len() >= PROCSPAWN_WINDOW {
            join(window.pop_front().expect("the window is full"))?;
        }
    }
    window.into_iter().try_for_each(join)?;
    let dt = t0.elapsed();
    pool.shutdown();
    Ok(dt)
}

fn ipc_channel_pingpong(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    let (to_child, child_rx) = ipc::channel::<u64>().context("ipc-channel")?;
    let (child_tx, from_child) = ipc::channel::<u64>().context("ipc-channel")?;
    let peer = Peer::start(placement, 1, "ipc_channel_echo", move || {
        child_tx.send(u64::MAX)?;
        for _ in 0..n {
            child_tx.send(child_rx.recv()?)?;
        }
        Ok(())
    })?;
    let ready = from_child
        .try_recv_timeout(crate::HANDSHAKE_TIMEOUT)
        .map_err(|e| anyhow!("ipc-channel peer did not report ready: {e:?}"))?;
    ensure!(ready == u64::MAX, "bad handshake");
    let t0 = Instant::now();
    for i in 0..n {
        to_child.send(i)?;
        let back = from_child.recv()?;
        ensure!(back == i, "echoed {back}, expected {i}");
    }
    let dt = t0.elapsed();
    peer.join()?;
    Ok(dt)
}

fn ipc_channel_throughput(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    const SIZE: usize = crate::conn::THROUGHPUT_BLOCK;
    let (go_tx, go_rx) = ipc::channel::<bool>().context("ipc-channel")?;
    let (ready_tx, ready_rx) = ipc::channel::<bool>().context("ipc-channel")?;
    let (data_tx, data_rx) = ipc::bytes_channel().context("ipc-channel")?;
    let peer = Peer::start(placement, 1, "ipc_channel_producer", move || {
        let block = vec![0xa5u8; SIZE];
        ready_tx.send(true)?;
        ensure!(go_rx.recv()?, "expected go");
        for _ in 0..n {
            data_tx.send(&block)?;
        }
        Ok(())
    })?;
    let ready = ready_rx
        .try_recv_timeout(crate::HANDSHAKE_TIMEOUT)
        .map_err(|e| anyhow!("ipc-channel peer did not report ready: {e:?}"))?;
    ensure!(ready, "bad handshake");
    let t0 = Instant::now();
    go_tx.send(true)?;
    let mut total = 0u64;
    for i in 0..n {
        let block = data_rx.recv()?;
        ensure!(
            block.len() == SIZE && block[0] == 0xa5 && block[SIZE - 1] == 0xa5,
            "block {i} is wrong ({} bytes)",
            block.len()
        );
        total += block.len() as u64;
    }
    let dt = t0.elapsed();
    peer.join()?;
    ensure!(total == n * SIZE as u64, "received {total} bytes");
    Ok(dt)
}
