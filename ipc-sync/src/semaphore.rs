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
//! CONTENDED), and if units are left it wakes one more sleeper (a release that came while the
//! bit was clear woke nobody). A waiter whose deadline passes takes a unit if one is there, so a
//! wake aimed at it is never dropped while another sleeper waits.
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
                    if slept {
                        self.pass_on(new);
                    }
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
                // A release may have woken us as we timed out: take its unit rather than drop
                // it (and pass on any other unit, as below).
                let mut s = self.word.load(Ordering::Relaxed);
                while s & VALUE_MASK > 0 {
                    match self.word.compare_exchange_weak(
                        s,
                        (s - 1) | WAITERS,
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            self.pass_on((s - 1) | WAITERS);
                            return true;
                        }
                        Err(now) => s = now,
                    }
                }
                return false;
            }
        }
    }

    /// A waiter that was woken took a unit and more are left: wake the next sleeper.
    ///
    /// A release wakes as many sleepers as it adds units, but only if WAITERS was set, and it
    /// clears the bit. A second release that comes before the woken waiter re-sets the bit
    /// wakes nobody, so its unit would sit there while a sleeper sleeps: the woken waiter
    /// hands it on (found by loom: `tests/loom_lock_condition.rs`).
    fn pass_on(&self, after: u32) {
        if after & VALUE_MASK > 0 {
            futex::wake_one(&self.word);
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

#[cfg(not(loom))]
pub use typed::{BoundedSemaphore, Semaphore, SemaphoreGuard};

#[cfg(not(loom))]
mod typed {
    use std::fmt;
    use std::time::{Duration, Instant};

    use ipc_core::shm::ShmBox;
    use serde::{Deserialize, Serialize};

    use super::{RawSemaphore, VALUE_MASK};
    use crate::error::ReleaseError;

    /// A counting semaphore shared by processes (Python's `Semaphore`); releases may raise the
    /// value past its initial value (up to 2^31 - 1).
    ///
    /// ```
    /// let sem = ipc_sync::Semaphore::new(1)?;
    /// let unit = sem.acquire();
    /// assert!(sem.try_acquire().is_none());
    /// drop(unit);
    /// assert_eq!(sem.value(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[derive(Clone, Serialize, Deserialize)]
    pub struct Semaphore {
        raw: ShmBox<RawSemaphore>,
    }

    /// A semaphore whose value may never exceed its initial value (Python's
    /// `BoundedSemaphore`): an extra release is [`ReleaseError::Overflow`].
    #[derive(Clone, Serialize, Deserialize)]
    pub struct BoundedSemaphore {
        inner: Semaphore,
    }

    /// One unit taken from a semaphore; given back when dropped (or kept with
    /// [`forget`](Self::forget), to be released later by anyone with `release`).
    #[must_use = "the unit is given back as soon as the guard is dropped"]
    pub struct SemaphoreGuard<'a> {
        raw: &'a RawSemaphore,
        _not_send: crate::NotSend,
    }

    impl SemaphoreGuard<'_> {
        /// Keeps the unit taken (Python's bare `acquire()`).
        pub fn forget(self) {
            std::mem::forget(self);
        }
    }

    impl Drop for SemaphoreGuard<'_> {
        fn drop(&mut self) {
            // The unit was ours, so giving it back cannot pass any bound.
            let _ = self.raw.release(1);
        }
    }

    impl Semaphore {
        /// A semaphore holding `value` units (at most 2^31 - 1).
        pub fn new(value: u32) -> ipc_core::Result<Semaphore> {
            Self::with_bound(value, None)
        }

        fn with_bound(value: u32, bound: Option<u32>) -> ipc_core::Result<Semaphore> {
            if value > VALUE_MASK {
                return Err(ipc_core::Error::Misuse(format!(
                    "a semaphore holds at most {VALUE_MASK} units, {value} requested"
                )));
            }
            let raw = ShmBox::<RawSemaphore>::new()?;
            // Nobody else sees the fresh state yet.
            raw.init(value, bound);
            Ok(Semaphore { raw })
        }

        fn guard(&self) -> SemaphoreGuard<'_> {
            SemaphoreGuard {
                raw: &self.raw,
                _not_send: crate::NotSend::default(),
            }
        }

        /// Takes a unit, blocking until one is available.
        #[doc(alias = "P")]
        pub fn acquire(&self) -> SemaphoreGuard<'_> {
            self.raw.acquire(None);
            self.guard()
        }

        /// Takes a unit if one is available now (Python's `acquire(False)`).
        pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
            self.raw.try_acquire().then(|| self.guard())
        }

        /// Takes a unit, blocking at most `timeout` (Python's `acquire(timeout=t)`).
        pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphoreGuard<'_>> {
            self.raw
                .acquire(Some(Instant::now() + timeout))
                .then(|| self.guard())
        }

        /// Adds a unit, waking a waiter.
        pub fn release(&self) -> Result<(), ReleaseError> {
            self.release_n(1)
        }

        /// Adds `n` units, waking up to `n` waiters (Python's `release(n)`).
        pub fn release_n(&self, n: u32) -> Result<(), ReleaseError> {
            if n == 0 {
                return Err(ReleaseError::Zero);
            }
            self.raw
                .release(n)
                .map_err(|max| ReleaseError::Overflow { max })
        }

        /// The current value (Python's `get_value()`; a snapshot).
        #[doc(alias = "get_value")]
        pub fn value(&self) -> u32 {
            self.raw.value()
        }
    }

    impl BoundedSemaphore {
        /// A semaphore holding `value` units that may never hold more.
        pub fn new(value: u32) -> ipc_core::Result<BoundedSemaphore> {
            Ok(BoundedSemaphore {
                inner: Semaphore::with_bound(value, Some(value))?,
            })
        }

        /// Takes a unit, blocking until one is available.
        pub fn acquire(&self) -> SemaphoreGuard<'_> {
            self.inner.acquire()
        }

        /// Takes a unit if one is available now.
        pub fn try_acquire(&self) -> Option<SemaphoreGuard<'_>> {
            self.inner.try_acquire()
        }

        /// Takes a unit, blocking at most `timeout`.
        pub fn acquire_timeout(&self, timeout: Duration) -> Option<SemaphoreGuard<'_>> {
            self.inner.acquire_timeout(timeout)
        }

        /// Gives a unit back; [`ReleaseError::Overflow`] if that would pass the initial value.
        pub fn release(&self) -> Result<(), ReleaseError> {
            self.inner.release()
        }

        /// The current value (a snapshot).
        pub fn value(&self) -> u32 {
            self.inner.value()
        }

        /// The initial (and largest) value.
        pub fn bound(&self) -> u32 {
            self.inner.raw.max_value()
        }
    }

    impl fmt::Debug for Semaphore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Semaphore")
                .field("value", &self.value())
                .finish()
        }
    }

    impl fmt::Debug for BoundedSemaphore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("BoundedSemaphore")
                .field("value", &self.value())
                .field("bound", &self.bound())
                .finish()
        }
    }

    impl fmt::Debug for SemaphoreGuard<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("SemaphoreGuard")
        }
    }
}
