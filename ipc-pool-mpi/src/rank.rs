//! A serving rank's life: wait for the driver's `Welcome`, answer `Hello`, then run bundles of
//! chunks until `Stop`.
//!
//! ```text
//! link thread:       probe (yield, then naps growing to 1 ms); a message -> the main thread;
//!                    while slot != IDLE, every heartbeat period: send Heartbeat { slot }
//! main thread:       Bundle: for each chunk, for each item: slot = (chunk, item); run it;
//!                    buffer its outcome; send Reports when FLUSH_AGE passed since the oldest
//!                    buffered outcome, FLUSH_BYTES are buffered, or the bundle ends;
//!                    slot = IDLE.  Stop: leave.
//! ```
//! The link thread is always ready to receive: a large MPI message is sent only when its
//! receiver takes it, so a driver sending a large bundle while this rank sends a large report
//! would otherwise wait for each other forever.
//!
//! Reports leave in the order the items ran, so the driver always knows every outcome before
//! the item after it; the heartbeat tells it which item runs now, which it needs only if the
//! rank dies (see the crate doc).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipc_pool::{Packed, TaskRunner};
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::Communicator;

use crate::Nap;
use crate::wire::{FromRank, IDLE, Run, ToRank, encode, slot};

/// The longest an outcome waits in the rank before it is reported.
const FLUSH_AGE: Duration = Duration::from_millis(1);
/// The most result bytes buffered before a report.
const FLUSH_BYTES: usize = 256 << 10;

/// Waits for the next message from the driver (`driver` in `comm`), polling with [`Nap`]'s
/// back-off (a blocking MPI receive would spin a core the whole time the rank is idle).
fn next_message<C: Communicator>(comm: &C, driver: i32) -> Vec<u8> {
    let peer = comm.process_at_rank(driver);
    let mut nap = Nap::new();
    loop {
        if let Some(probed) = peer.immediate_matched_probe() {
            return probed.matched_receive_vec::<u8>().0;
        }
        nap.idle();
    }
}

/// Serves the driver (rank `driver` of the communicator `link` makes: each thread makes its own
/// handle) until it says `Stop`; the process's exit code.
///
/// The handles are never dropped: rsmpi's handle of the parent communicator (spawn mode)
/// disconnects it when dropped, which is collective with the driver; the `Universe` does it
/// once, at the end, as the driver disconnects its side.
pub(crate) fn serve<C: Communicator>(link: fn() -> C, driver: i32) -> i32 {
    let comm = &*std::mem::ManuallyDrop::new(link());
    let Ok(ToRank::Welcome { key, heartbeat_ms }) =
        postcard::from_bytes::<ToRank>(&next_message(comm, driver))
    else {
        eprintln!(
            "ipc-pool-mpi: rank {}: the driver's first message was not Welcome",
            comm.rank()
        );
        return 2;
    };
    let to_driver = comm.process_at_rank(driver);
    let refused = ipc_core::process::join_family(key)
        .err()
        .map(|e| e.to_string());
    let failed = refused.is_some();
    to_driver.send(
        &encode(&FromRank::Hello {
            pid: std::process::id(),
            host: host_name(),
            refused,
        })[..],
    );
    if failed {
        return 2;
    }
    let runner = TaskRunner::new();
    let slot_now = AtomicU64::new(IDLE);
    let (inbox, messages) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let slot_now = &slot_now;
        // The link thread: always ready to receive (so the driver's sends, which block until
        // a large message is taken, always end), and the heartbeat while busy.
        s.spawn(move || {
            let period = Duration::from_millis(heartbeat_ms.max(1));
            let comm = std::mem::ManuallyDrop::new(link());
            let peer = comm.process_at_rank(driver);
            let mut nap = Nap::new();
            let mut beat = Instant::now();
            loop {
                if let Some(probed) = peer.immediate_matched_probe() {
                    let bytes = probed.matched_receive_vec::<u8>().0;
                    let stop = matches!(postcard::from_bytes::<ToRank>(&bytes), Ok(ToRank::Stop));
                    if inbox.send(bytes).is_err() || stop {
                        return;
                    }
                    nap = Nap::new();
                    continue;
                }
                let now = slot_now.load(Ordering::Acquire);
                if now == IDLE {
                    beat = Instant::now();
                } else if beat.elapsed() >= period {
                    peer.send(&encode(&FromRank::Heartbeat { slot: now })[..]);
                    beat = Instant::now();
                }
                nap.idle();
            }
        });
        while let Ok(bytes) = messages.recv() {
            match postcard::from_bytes::<ToRank>(&bytes) {
                Ok(ToRank::Bundle { funcs, chunks }) => {
                    run_bundle(&runner, &funcs, chunks, slot_now, |m| {
                        to_driver.send(&encode(m)[..])
                    });
                    slot_now.store(IDLE, Ordering::Release);
                }
                Ok(ToRank::Stop) => break,
                Ok(ToRank::Welcome { .. }) | Err(_) => {
                    eprintln!(
                        "ipc-pool-mpi: rank {}: a message from the driver did not decode",
                        comm.rank()
                    );
                }
            }
        }
    });
    0
}

/// Runs a bundle's chunks in order, reporting outcomes in groups through `send`.
fn run_bundle(
    runner: &TaskRunner,
    funcs: &[ipc_core::process::RemoteFn<(), ()>],
    chunks: Vec<(u64, u32, u64, Packed)>,
    slot_now: &AtomicU64,
    send: impl Fn(&FromRank),
) {
    let mut runs: Vec<Run> = Vec::new();
    let mut bytes = 0;
    let mut oldest: Option<Instant> = None;
    let mut group_start = Instant::now();
    let last_chunk = chunks.len().saturating_sub(1);
    for (c, (id, f, base, args)) in chunks.into_iter().enumerate() {
        let func = &funcs[f as usize];
        let mut values = Packed::default();
        let mut failures = Vec::new();
        let mut first = 0u32;
        for k in 0..args.len() {
            let item = k as u32;
            slot_now.store(slot(id, item), Ordering::Release);
            if let Err(e) = runner.run(func, args.get(k), base + u64::from(item), &mut values) {
                failures.push((item - first, e));
            }
            let now = Instant::now();
            let old = now.duration_since(*oldest.get_or_insert(now)) >= FLUSH_AGE;
            let end_of_chunk = k + 1 == args.len();
            let full = bytes + values.bytes() >= FLUSH_BYTES;
            if old || full || (end_of_chunk && c == last_chunk) {
                runs.push((
                    id,
                    first,
                    std::mem::take(&mut values),
                    std::mem::take(&mut failures),
                ));
                send(&FromRank::Reports {
                    runs: std::mem::take(&mut runs),
                    busy_ns: now.duration_since(group_start).as_nanos() as u64,
                });
                group_start = now;
                bytes = 0;
                oldest = None;
                first = item + 1;
            } else if end_of_chunk {
                bytes += values.bytes();
                runs.push((
                    id,
                    first,
                    std::mem::take(&mut values),
                    std::mem::take(&mut failures),
                ));
            }
        }
    }
}

/// This host's name, for the driver's messages about this rank.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}
