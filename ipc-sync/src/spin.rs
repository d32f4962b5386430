//! A short bounded spin before a waiter sleeps on the futex.
//!
//! Waking a process that sleeps on another vCPU costs 18-34 us here (a VM exit to wake the idle
//! vCPU), while the holder of a lock or the setter of an event is often done within a microsecond
//! or two. A waiter that polls its word for a few microseconds first catches those hand-offs with
//! no syscall on either side: the releaser sees no WAITERS bit and skips `futex_wake` too.
//!
//! Adaptive in the two ways that matter:
//! - no spin at all when this process may run on one CPU only (the spinner would burn the very
//!   time slice the holder needs: 13-14 us per hand-off with a spin against 4-5 us without);
//! - the state machines stop spinning as soon as somebody already sleeps (a WAITERS bit is set),
//!   as std's futex mutex does: the releaser will make a syscall anyway and queueing up behind a
//!   sleeper is fairer.
//!
//! The budget is `DEFAULT_LIMIT` iterations of `pause` (see the tuning notes on the constant);
//! when a wait is long, this is what it costs once per blocking call before sleeping.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

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

static MULTI_CPU: OnceLock<bool> = OnceLock::new();

fn limit() -> u32 {
    let multi =
        *MULTI_CPU.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1));
    if multi {
        LIMIT.load(Ordering::Relaxed)
    } else {
        0
    }
}

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
    let max = limit();
    for _ in 0..max {
        if done() {
            return true;
        }
        spin_loop();
    }
    done()
}
