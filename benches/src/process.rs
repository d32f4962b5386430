//! The process cases: `process_start_join_{fork,spawn,forkserver}` (see `benches/README.md`).
//!
//! Starting is what is measured here, so the clock covers the whole start and join of each child.
//! Each child runs a function that returns its argument, and the join must give it back: a
//! child that failed to run cannot count as a fast one.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use ipc_core::process::{Builder, RemoteFn, StartMethod};

use crate::pin::Placement;

/// The child's function: the smallest one that still proves it ran.
fn echo(x: u64) -> u64 {
    x
}

fn start_join(method: StartMethod, n: u64) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    for i in 0..n {
        let child = Builder::new()
            .start_method(method)
            .spawn(i, echo)
            .with_context(|| format!("starting a child by {method}"))?;
        let back = child
            .join()
            .with_context(|| format!("joining a child started by {method}"))?;
        ensure!(back == i, "the child returned {back}, expected {i}");
    }
    Ok(t0.elapsed())
}

/// `process_start_join_fork`: `n` children started by fork and joined, one after another.
pub fn start_join_fork(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    start_join(StartMethod::Fork, n)
}

/// `process_start_join_spawn`: as above, started by spawn (fork+exec of this executable).
pub fn start_join_spawn(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    start_join(StartMethod::Spawn, n)
}

/// `process_start_join_forkserver`: as above, forked by the forkserver (started by the first
/// repetition, which is a warm-up: CPython's forkserver starts the same way).
pub fn start_join_forkserver(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    start_join(StartMethod::ForkServer, n)
}

fn identity(x: u64) -> u64 {
    x
}

/// `task_handle_roundtrip`: what a pool does per task, in one process: the task (a `RemoteFn`
/// and its encoded argument) encoded and decoded (which checks the handle's build id and family
/// tag), called through `call_encoded`, its result decoded.
pub fn task_handle_roundtrip(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let f = RemoteFn::new(identity)?.erase();
    let t0 = Instant::now();
    for i in 0..n {
        let wire = postcard::to_stdvec(&(f, postcard::to_stdvec(&i)?))?;
        let (g, arg): (RemoteFn<(), ()>, Vec<u8>) = postcard::from_bytes(&wire)?;
        let (out, _) = g.call_encoded(&arg, Vec::new())?;
        let r: u64 = postcard::from_bytes(&out)?;
        ensure!(r == i, "round trip gave {r} for {i}");
    }
    Ok(t0.elapsed())
}
