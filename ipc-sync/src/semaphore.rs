//! `Semaphore` and `BoundedSemaphore`: a counter that blocks at zero (Python's `Semaphore`).
//!
//! # Shared-memory layout
//! ```text
//! RawSemaphore  (#[repr(C)], 8 bytes, align 4, all-zero = value 0, unbounded)
//! +--------------------------------+---------------------------------------+
//! | word: AtomicU32                | bound: AtomicU32                      |
//! | bit 31 WAITERS, bits 0-30 value| 0 = unbounded, else max value + 1     |
//! +--------------------------------+---------------------------------------+
//! ```
//! # States and transitions
//! ```text
//! AVAILABLE(v)   v > 0                acquire: CAS v -> v-1 (one CAS, no syscall)
//! EMPTY          0                    a waiter: CAS 0 -> WAITERS, then sleeps on the word
//! EMPTY_WAITED   WAITERS              release: v+n with WAITERS cleared; wake n if it was set
//!
//! A waiter that slept takes its unit with CAS v -> (v-1) | WAITERS: it cannot know whether
//! other sleepers remain, so it keeps the next release waking (as std's mutex re-locks as
//! CONTENDED). A waiter whose deadline passes takes a unit if one is there, so a wake aimed
//! at it is never dropped while another sleeper waits.
//! ```
//! The value has 31 bits: releasing past 2^31 - 1 (or past a bound) is an error, not a wrap.
//!
//! # Memory ordering
//! Taking a unit is `Acquire` and releasing is `Release`, so what a releaser wrote before
//! `release` is visible to whoever takes that unit (a semaphore used as a lock or a signal).
//! Setting WAITERS is `Relaxed`: the futex's atomic compare-and-sleep closes the race with a
//! release in between.
//!
//! # Robustness
//! A semaphore has no owner (any process may release), so a holder that dies cannot be
//! detected: its unit is lost, as with POSIX semaphores. Use a `Lock` where holders may die,
//! or bound every wait with a timeout.

use std::time::Instant;

use crate::primitive::{AtomicU32, Ordering, WaitOutcome, futex};
use crate::spin;

/// Bits 0-30 of the word: the value.
pub const VALUE_MASK: u32 = 0x7FFF_FFFF;
const WAITERS: u32 = 0x8000_0000;

/// A counting semaphore, usable inside any shared mapping (all-zero bytes = value 0, unbounded).
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawSemaphore {
    word: AtomicU32,
    bound: AtomicU32,
}

impl RawSemaphore {
    /// A semaphore holding `value` (at most [`VALUE_MASK`]), bounded by `bound` if given.
    pub fn new(value: u32, bound: Option<u32>) -> Self {
        RawSemaphore {
            word: AtomicU32::new(value.min(VALUE_MASK)),
            bound: AtomicU32::new(bound.map_or(0, |b| b.min(VALUE_MASK) + 1)),
        }
    }

    /// Initialises a zeroed semaphore in place before it is shared.
    pub fn init(&self, value: u32, bound: Option<u32>) {
        self.word.store(value.min(VALUE_MASK), Ordering::Relaxed);
        self.bound.store(
            bound.map_or(0, |b| b.min(VALUE_MASK) + 1),
            Ordering::Relaxed,
        );
    }

    /// The largest value a release may produce.
    pub fn max_value(&self) -> u32 {
        match self.bound.load(Ordering::Relaxed) {
            0 => VALUE_MASK,
            b => b - 1,
        }
    }

    /// The current value (a snapshot).
    pub fn value(&self) -> u32 {
        self.word.load(Ordering::Relaxed) & VALUE_MASK
    }

    /// Takes one unit if there is one; never sleeps.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let mut s = self.word.load(Ordering::Relaxed);
        while s & VALUE_MASK > 0 {
            match self
                .word
                .compare_exchange_weak(s, s - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
        false
    }

    /// Takes one unit, sleeping until one is released or `deadline` passes; false on timeout.
    pub fn acquire(&self, deadline: Option<Instant>) -> bool {
        if self.try_acquire() {
            return true;
        }
        self.acquire_contended(deadline)
    }

    #[cold]
    fn acquire_contended(&self, deadline: Option<Instant>) -> bool {
        let mut took = false;
        spin::spin(|| {
            let s = self.word.load(Ordering::Relaxed);
            took = s & VALUE_MASK > 0 && self.try_acquire();
            // Stop when we hold a unit, or when somebody already sleeps (queue up behind them).
            took || s & WAITERS != 0
        });
        if took {
            return true;
        }
        let mut slept = false;
        loop {
            let s = self.word.load(Ordering::Relaxed);
            if s & VALUE_MASK > 0 {
                let new = (s - 1) | if slept { WAITERS } else { 0 };
                if self
                    .word
                    .compare_exchange(s, new, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if s & WAITERS == 0
                && self
                    .word
                    .compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let out = futex::wait(&self.word, s | WAITERS, deadline);
            slept = true;
            if out == WaitOutcome::TimedOut || deadline.is_some_and(|d| Instant::now() >= d) {
                // A release may have woken us as we timed out: take its unit rather than drop it.
                return self.try_acquire();
            }
        }
    }

    /// Adds `n` units, waking up to `n` sleepers; refuses to pass the bound or 2^31 - 1.
    pub fn release(&self, n: u32) -> Result<(), u32> {
        let max = self.max_value();
        let mut s = self.word.load(Ordering::Relaxed);
        loop {
            let v = s & VALUE_MASK;
            if n > max || v > max - n {
                return Err(max);
            }
            match self
                .word
                .compare_exchange_weak(s, v + n, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        if s & WAITERS != 0 {
            futex::wake(&self.word, n);
        }
        Ok(())
    }
}
