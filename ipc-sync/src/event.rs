//! `Event`: a flag that processes wait for (Python's `Event`).
//!
//! # Shared-memory layout
//! ```text
//! RawEvent  (#[repr(C)], 4 bytes, align 4, all-zero = clear, nobody waiting)
//! +--------------------------------------------------+
//! | word: AtomicU32                                  |
//! | bits 2-31 generation | bit 1 WAITERS | bit 0 SET |
//! +--------------------------------------------------+
//! ```
//! # States and transitions
//! ```text
//! CLEAR(g)          g<<2                  wait: spin, then CAS to CLEAR_WAITED(g), sleep
//! CLEAR_WAITED(g)   g<<2 | WAITERS
//! SET(g+1)          (g+1)<<2 | SET        set: from CLEAR*(g) bump the generation, set SET,
//!                                              drop WAITERS, futex_wake(all) if it was there
//! clear: SET(g) -> CLEAR(g) (fetch_and), keeps the generation
//! ```
//! The generation makes a set-then-clear pulse count: a waiter that saw generation g returns
//! true once the generation moved, even if the flag was cleared again before it woke (Python's
//! `threading.Event` behaves so; a waiter never misses a `set` that happened after it started).
//!
//! # Robustness
//! A setter SIGKILLed between its store and its wake would leave the sleepers asleep beside a
//! set flag (found by `cargo xtask chaos`, failpoint `event.set.before_wake`): waiters sleep
//! in slices of 100 ms and look at the word between them, so they return within a slice. An
//! idle waiter costs about ten wake-ups a second.
//!
//! # Memory ordering
//! `set` is `Release` (AcqRel CAS) and every load that can end a wait with `true` is `Acquire`,
//! so what the setter wrote before `set()` is visible to a waiter that returns true. WAITERS is
//! set with `Relaxed`: the futex compares the word atomically with sleeping.

use std::time::Instant;

use crate::lock::SLICE;
use crate::primitive::{AtomicU32, Ordering, WaitOutcome, futex};
use crate::spin;

const SET: u32 = 1;
const WAITERS: u32 = 2;
const GEN_ONE: u32 = 4;

/// An event flag, usable inside any shared mapping (all-zero bytes = clear).
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawEvent {
    word: AtomicU32,
}

impl RawEvent {
    /// A clear event (the all-zero state).
    pub fn new() -> Self {
        RawEvent {
            word: AtomicU32::new(0),
        }
    }

    /// Whether the flag is set.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.word.load(Ordering::Acquire) & SET != 0
    }

    /// Sets the flag and wakes every waiter (a no-op if already set).
    pub fn set(&self) {
        let mut s = self.word.load(Ordering::Relaxed);
        loop {
            if s & SET != 0 {
                // Already set: synchronise with the earlier setter as a no-op RMW would.
                self.word.fetch_or(0, Ordering::Release);
                return;
            }
            let new = ((s & !WAITERS).wrapping_add(GEN_ONE)) | SET;
            match self
                .word
                .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        ipc_core::failpoint::hit("event.set.before_wake");
        if s & WAITERS != 0 {
            futex::wake_all(&self.word);
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.word.fetch_and(!SET, Ordering::Relaxed);
    }

    /// Waits until the flag is set (or a set happened since the call began) or `deadline`
    /// passes; returns whether it was set.
    pub fn wait(&self, deadline: Option<Instant>) -> bool {
        let start = self.word.load(Ordering::Acquire);
        if start & SET != 0 {
            return true;
        }
        let generation = start & !(SET | WAITERS);
        let fired = |s: u32| s & SET != 0 || s & !(SET | WAITERS) != generation;
        if spin::spin(|| {
            let s = self.word.load(Ordering::Acquire);
            fired(s) || s & WAITERS != 0
        }) && fired(self.word.load(Ordering::Acquire))
        {
            return true;
        }
        loop {
            let s = self.word.load(Ordering::Acquire);
            if fired(s) {
                return true;
            }
            if s & WAITERS == 0
                && self
                    .word
                    .compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            // In slices: a setter killed between its store and its wake leaves us asleep
            // beside a set flag, and nobody else would wake us.
            let slice_end = Instant::now() + SLICE;
            let until = deadline.map_or(slice_end, |d| d.min(slice_end));
            if futex::wait(&self.word, s | WAITERS, Some(until)) == WaitOutcome::TimedOut
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                return fired(self.word.load(Ordering::Acquire));
            }
        }
    }
}

#[cfg(not(loom))]
pub use typed::Event;

#[cfg(not(loom))]
mod typed {
    use std::fmt;
    use std::time::{Duration, Instant};

    use ipc_core::shm::ShmBox;
    use serde::{Deserialize, Serialize};

    use super::RawEvent;

    /// A flag shared by processes that they can wait for (Python's `Event`).
    ///
    /// ```
    /// let ev = ipc_sync::Event::new()?;
    /// assert!(!ev.wait_timeout(std::time::Duration::ZERO));
    /// ev.set();
    /// ev.wait();
    /// assert!(ev.is_set());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[derive(Clone, Serialize, Deserialize)]
    pub struct Event {
        raw: ShmBox<RawEvent>,
    }

    impl Event {
        /// A new, clear event in shared memory.
        pub fn new() -> ipc_core::Result<Event> {
            Ok(Event {
                raw: ShmBox::new()?,
            })
        }

        /// Sets the flag and wakes every waiter.
        pub fn set(&self) {
            self.raw.set();
        }

        /// Clears the flag.
        pub fn clear(&self) {
            self.raw.clear();
        }

        /// Whether the flag is set.
        pub fn is_set(&self) -> bool {
            self.raw.is_set()
        }

        /// Blocks until the flag is set.
        pub fn wait(&self) {
            self.raw.wait(None);
        }

        /// Blocks until the flag is set or `timeout` passes; whether it was set (Python's
        /// `wait(t)`). A set that happens during the wait counts even if cleared at once.
        pub fn wait_timeout(&self, timeout: Duration) -> bool {
            self.raw.wait(Some(Instant::now() + timeout))
        }
    }

    impl fmt::Debug for Event {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(if self.is_set() {
                "Event(set)"
            } else {
                "Event(unset)"
            })
        }
    }
}
