//! A short bounded spin before a waiter sleeps on the futex.
//!
//! Waking a process that sleeps on another vCPU costs 18-34 us here (a VM exit to wake the idle
//! vCPU), while the holder of a lock or the setter of an event is often done within a microsecond
//! or two. A waiter that polls its word for a few microseconds first catches those hand-offs with
//! no syscall on either side: the releaser sees no WAITERS bit and skips `futex_wake` too.
//!
//! Adaptive in the ways that matter:
//! - no spin at all when the system has one CPU online;
//! - a process that may run on several CPUs always spins (the scheduler keeps spinner and peer
//!   apart when it can); one pinned to a single CPU spins only while spins pay, learnt as it goes
//!   ([`ipc_core::spin::Adaptive`], one record per process): its peer may be pinned to another
//!   CPU (spinning pays) or to the same one (the peer cannot answer while we spin, and spinning
//!   burns the time slice it needs: 13-14 us per hand-off with a spin against 4-5 us without).
//!   A spin that was descheduled on the way (a gap of more than 4 us between two looks at the
//!   clock) or ran out of budget counts as a failure; a word that was already there at the
//!   first look counts as nothing;
//! - the state machines stop spinning as soon as somebody already sleeps (a WAITERS bit is set),
//!   as std's futex mutex does: the releaser will make a syscall anyway and queueing up behind a
//!   sleeper is fairer.
//!
//! The budget is `DEFAULT_LIMIT` iterations of `pause` (see the tuning notes on the constant);
//! when a wait is long, this is what it costs once per blocking call before sleeping.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipc_core::spin::Adaptive;

use crate::primitive::spin_loop;

/// Spin iterations before sleeping.
///
/// Measured by `examples/spin_tuning.rs` (2-process ping-pong through an `Event` pair, release
/// build; table in the crate's README, "Spin tuning"): one iteration costs ~25 ns on this EPYC
/// VM, so 200 iterations are ~5 us. The round trip falls from 25-37 us without a spin to
/// 0.26 us at 100 and 0.11-0.14 us from 200 on; 200 leaves a margin for a loaded machine. A
/// waiter whose wait is long pays those ~5 us of CPU once per blocking call, then sleeps.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const DEFAULT_LIMIT: u32 = 200;

#[cfg(not(loom))]
static LIMIT: AtomicU32 = AtomicU32::new(DEFAULT_LIMIT);
#[cfg(loom)]
static LIMIT: AtomicU32 = AtomicU32::new(0);

/// Whether spins of this process tend to catch what they wait for.
static RECORD: Adaptive = Adaptive::new();

/// Iterations between two looks at the clock while spinning.
const CLOCK_EVERY: u32 = 16;

/// A gap between two looks at the clock longer than this means the spinner was descheduled
/// ([`CLOCK_EVERY`] iterations take about 0.4 us).
const PREEMPTED: Duration = Duration::from_micros(4);

/// Sets the spin budget of this process (iterations of `pause`; 0 disables spinning).
///
/// For measurements (`examples/spin_tuning.rs`); programs have no need to call it.
#[doc(hidden)]
pub fn set_spin_limit(iterations: u32) {
    LIMIT.store(iterations, Ordering::Relaxed);
}

/// Polls `done` up to the budget, pausing between polls; true as soon as `done` returns true.
#[inline]
pub(crate) fn spin(mut done: impl FnMut() -> bool) -> bool {
    if done() {
        return true;
    }
    let max = LIMIT.load(Ordering::Relaxed);
    if max == 0 || !(several_allowed() || RECORD.should_spin()) {
        return done();
    }
    spin_slow(max, done)
}

/// As [`spin`], for a waiter that knows where its peer last ran: `peer_cpu` is that CPU + 1 (0:
/// unknown), as [`ipc_core::spin::cpu_tag`] gives it. A process pinned to one CPU then also
/// spins when the peer is known to run on another CPU, whatever its record says: the record
/// cannot learn that on
/// its own once both sides sleep, since a rare probe never catches a peer that is itself asleep
/// (ping-pong between two processes pinned to two CPUs settled there now and then, at 25-40 us
/// a round trip instead of 0.5).
#[cfg_attr(loom, allow(dead_code))]
#[inline]
pub(crate) fn spin_for_peer(peer_cpu: u32, mut done: impl FnMut() -> bool) -> bool {
    if done() {
        return true;
    }
    let max = LIMIT.load(Ordering::Relaxed);
    let pays = || {
        several_allowed()
            || RECORD.should_spin()
            || (peer_cpu != 0 && peer_cpu != ipc_core::spin::cpu_tag())
    };
    if max == 0 || !pays() {
        return done();
    }
    spin_slow(max, done)
}

/// Whether this process may run on several CPUs: then it always spins (the scheduler keeps
/// spinner and peer apart when it can). Pinned to one CPU, it spins only while
/// [`RECORD`] says spinning pays (the peer may be pinned to another CPU, or to ours).
fn several_allowed() -> bool {
    static SEVERAL: OnceLock<bool> = OnceLock::new();
    *SEVERAL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

#[cold]
fn spin_slow(max: u32, mut done: impl FnMut() -> bool) -> bool {
    let mut last = Instant::now();
    for i in 1..=max {
        spin_loop();
        if done() {
            RECORD.record(true);
            return true;
        }
        if i % CLOCK_EVERY == 0 {
            let now = Instant::now();
            if now - last > PREEMPTED {
                // Something else ran on our CPU, likely the peer we wait for: sleep instead.
                break;
            }
            last = now;
        }
    }
    // Ran out of budget or was descheduled: either way spinning did not pay.
    RECORD.record(false);
    done()
}
