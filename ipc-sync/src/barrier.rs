//! `Barrier`: `parties` processes or threads meet, then all go on (Python's `Barrier`).
//!
//! # Shared-memory layout
//! ```text
//! RawBarrier  (#[repr(C)], 32 bytes, align 8, all-zero = a 1-party barrier, generation 0)
//! +---------------+----------------------------+------------------+-------------------+
//! | lock: RawLock | word: AtomicU32 (futex)    | count: AtomicU32 | parties: AtomicU32|
//! | guards count, | generation << 1 | BROKEN   | arrived in this  | 0 reads as 1      |
//! | history       |                            | generation       |                   |
//! +---------------+----------------------------+------------------+-------------------+
//! | timeout_ns: AtomicU64 (default wait timeout; 0 = none)                            |
//! | history: AtomicU64 (bit g % 64: generation g ended broken (reset), not passed)    |
//! +-----------------------------------------------------------------------------------+
//! ```
//! # States and transitions (under `lock`, except the sleep and a timed-out break)
//! ```text
//! FILLING(g, c)   word = g<<1, count = c < parties
//! BROKEN(g)       word = g<<1 | BROKEN        arrivals fail at once
//!
//! wait:   FILLING(g, c) and c+1 < parties -> FILLING(g, c+1); sleep while word == g<<1
//!         FILLING(g, parties-1) -> run the action, clear history bit g, then
//!                                  CAS word g<<1 -> (g+1)<<1; wake all (the generation passes)
//!                                  (the CAS fails only if a timed-out party broke g meanwhile:
//!                                  then g ends broken, and so does this wait)
//! abort, an action that panics, a holder of `lock` that died:
//!         FILLING(g, c) -> BROKEN(g); wake all
//! timeout (no lock taken): CAS word g<<1 -> g<<1 | BROKEN; wake all
//! reset:  FILLING(g, c > 0) or BROKEN(g) -> set history bit g, FILLING(g+1, 0), wake all
//! ```
//! A deadline bounds the whole call: a party that cannot take the lock in time (the last party
//! may hold it for as long as its action runs) breaks the generation it sees without the lock
//! and returns, and a waiter reads how its generation ended without the lock. Breaking is the
//! only change made without the lock, and every store of the word under the lock either sets
//! BROKEN too (abort), moves the generation on (reset: it marks g broken in any case), or is a
//! CAS that notices the break (pass).
//!
//! Waiters sleep in 100 ms slices; a party that dies holding the internal lock (running the
//! action, say) is found by the next slice's pidfd check, and the waiter that takes the lock
//! over breaks the barrier, so nobody hangs even without a timeout.
//!
//! A waiter of generation g wakes when the word changes. If it still reads generation g, the
//! barrier broke; if the generation moved on, history bit `g % 64` says whether g ended by
//! passing or by a reset. So waiters need not leave before the next generation fills (unlike
//! CPython's draining phase), and a waiter that dies holds nobody up. A waiter that sleeps
//! through 64 later generations (possible only with more threads than parties) is reported as
//! having passed.
//!
//! # Memory ordering
//! Every change but a timed-out break happens under `lock` (Acquire/Release); the word is
//! stored with `Release` after the bookkeeping, the history bit and the action, and waiters read
//! it with `Acquire` before the history, so the action's writes are visible to every party that
//! passes, and a waiter that sees generation g end sees how it ended.

use std::time::Instant;

use crate::lock::{Acquire, RawLock, SLICE};
use crate::primitive::{AtomicU32, AtomicU64, Ordering, WaitOutcome, futex};
use crate::spin;

const BROKEN: u32 = 1;

/// How a raw barrier wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passage {
    /// The generation passed; the caller arrived `index`-th (0-based).
    Passed(u32),
    /// The barrier is or became broken (abort, reset, timeout, dead lock holder).
    Broken,
    /// The deadline passed first: the caller broke the barrier for everybody.
    TimedOut,
}

/// A barrier's words, usable inside any shared mapping.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawBarrier {
    lock: RawLock,
    word: AtomicU32,
    count: AtomicU32,
    parties: AtomicU32,
    timeout_ns: AtomicU64,
    history: AtomicU64,
}

impl RawBarrier {
    /// A barrier for `parties` (0 reads as 1) with no default timeout.
    pub fn new(parties: u32) -> Self {
        let b = RawBarrier::default();
        b.init(parties, None);
        b
    }

    /// Initialises a zeroed barrier in place before it is shared.
    pub fn init(&self, parties: u32, timeout: Option<std::time::Duration>) {
        self.parties.store(parties, Ordering::Relaxed);
        let ns = timeout.map_or(0, |d| {
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
        });
        self.timeout_ns.store(ns, Ordering::Relaxed);
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        self.parties.load(Ordering::Relaxed).max(1)
    }

    /// The default timeout of [`wait`](Self::wait) given at creation.
    pub fn default_timeout(&self) -> Option<std::time::Duration> {
        match self.timeout_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(std::time::Duration::from_nanos(ns)),
        }
    }

    /// Takes the internal lock by `deadline` (false if it passed first); a holder that died
    /// leaves the count unknown, so its successor breaks the barrier.
    fn enter(&self, deadline: Option<Instant>) -> bool {
        match self.lock.lock(deadline) {
            Acquire::Acquired => true,
            Acquire::OwnerDied => {
                self.break_locked();
                true
            }
            Acquire::Failed => false,
        }
    }

    fn break_locked(&self) {
        if self.word.fetch_or(BROKEN, Ordering::Release) & BROKEN == 0 {
            futex::wake_all(&self.word);
        }
    }

    /// Without the lock: breaks generation `w` if the word still reads it, unbroken.
    fn break_timed_out(&self, w: u32) -> bool {
        let broke = w & BROKEN == 0
            && self
                .word
                .compare_exchange(w, w | BROKEN, Ordering::Release, Ordering::Relaxed)
                .is_ok();
        if broke {
            futex::wake_all(&self.word);
        }
        broke
    }

    /// History bit of generation `g` (see the module doc).
    fn history_bit(g: u32) -> u64 {
        1 << (g % 64)
    }

    /// Arrives and waits for the others until `deadline`; the last to arrive runs `action`
    /// (with the internal lock held) before anybody is released.
    ///
    /// The deadline bounds the whole call, even while another party's action holds the lock.
    /// If the action panics, the barrier breaks and the panic continues in the caller.
    pub fn wait(&self, deadline: Option<Instant>, action: impl FnOnce()) -> Passage {
        if !self.enter(deadline) {
            // We could not even arrive: break the generation we would have joined.
            self.break_timed_out(self.word.load(Ordering::Relaxed));
            return Passage::TimedOut;
        }
        let w = self.word.load(Ordering::Relaxed);
        if w & BROKEN != 0 {
            self.lock.unlock_held();
            return Passage::Broken;
        }
        let index = self.count.load(Ordering::Relaxed);
        if index + 1 >= self.parties() {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(action));
            if let Err(panic) = run {
                self.break_locked();
                self.lock.unlock_held();
                std::panic::resume_unwind(panic);
            }
            self.count.store(0, Ordering::Relaxed);
            self.history
                .fetch_and(!Self::history_bit(w >> 1), Ordering::Relaxed);
            let next = (w >> 1).wrapping_add(1) << 1;
            let passed = self
                .word
                .compare_exchange(w, next, Ordering::Release, Ordering::Relaxed)
                .is_ok();
            if passed {
                futex::wake_all(&self.word);
            }
            self.lock.unlock_held();
            // A party timed out during the action and broke the generation (and woke all).
            return if passed {
                Passage::Passed(index)
            } else {
                Passage::Broken
            };
        }
        self.count.store(index + 1, Ordering::Relaxed);
        ipc_core::failpoint::hit("barrier.arrived");
        self.lock.unlock_held();

        spin::spin(|| self.word.load(Ordering::Acquire) != w);
        while self.word.load(Ordering::Acquire) == w {
            // Sleep in slices: the last party runs the action holding the internal lock, and
            // if it dies there nobody else would ever wake us. When a slice ends and the lock's
            // holder is dead, taking the lock over (`enter`) breaks the barrier.
            let slice_end = Instant::now() + SLICE;
            let until = deadline.map_or(slice_end, |d| d.min(slice_end));
            if futex::wait(&self.word, w, Some(until)) != WaitOutcome::TimedOut {
                continue;
            }
            if deadline.is_none_or(|d| Instant::now() < d) {
                if self.lock.owner().is_some_and(crate::liveness::is_dead) && self.enter(deadline) {
                    self.lock.unlock_held();
                }
            } else if self.break_timed_out(w) {
                return Passage::TimedOut;
            }
        }
        // How generation g ended, read without the lock (the next generation's last party may
        // hold it through a long action).
        let now = self.word.load(Ordering::Acquire);
        let history = self.history.load(Ordering::Relaxed);
        let (g, g_now) = (w >> 1, now >> 1);
        if g_now == g {
            return Passage::Broken;
        }
        let later = g_now.wrapping_sub(g) & (u32::MAX >> 1);
        if later <= 64 && history & Self::history_bit(g) != 0 {
            Passage::Broken
        } else {
            Passage::Passed(index)
        }
    }

    /// Breaks the barrier: current and future waiters fail until [`reset`](Self::reset).
    pub fn abort(&self) {
        self.enter(None);
        self.break_locked();
        self.lock.unlock_held();
    }

    /// Returns the barrier to its initial state; current waiters fail with `Broken`.
    pub fn reset(&self) {
        self.enter(None);
        let w = self.word.load(Ordering::Relaxed);
        if w & BROKEN != 0 || self.count.load(Ordering::Relaxed) > 0 {
            self.history
                .fetch_or(Self::history_bit(w >> 1), Ordering::Relaxed);
            self.count.store(0, Ordering::Relaxed);
            self.word
                .store((w >> 1).wrapping_add(1) << 1, Ordering::Release);
            futex::wake_all(&self.word);
        }
        self.lock.unlock_held();
    }

    /// Parties waiting in the current generation (0 if broken).
    pub fn n_waiting(&self) -> u32 {
        if self.is_broken() {
            0
        } else {
            self.count.load(Ordering::Relaxed)
        }
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.word.load(Ordering::Acquire) & BROKEN != 0
    }
}

#[cfg(not(loom))]
pub use typed::{Barrier, BarrierError};

#[cfg(not(loom))]
mod typed {
    use std::fmt;
    use std::time::{Duration, Instant};

    use ipc_core::shm::ShmBox;
    use serde::{Deserialize, Serialize};

    use super::{Passage, RawBarrier};

    /// Why a barrier wait did not pass (Python's `BrokenBarrierError`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[non_exhaustive]
    pub enum BarrierError {
        /// The barrier is broken (abort, reset, another party's timeout, an action that
        /// panicked, a party that died inside the barrier's bookkeeping); `reset` repairs it.
        Broken,
        /// This caller's timeout passed; it broke the barrier for every party.
        Timeout,
    }

    impl fmt::Display for BarrierError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                BarrierError::Broken => "the barrier is broken; reset() makes it usable again",
                BarrierError::Timeout => {
                    "timed out waiting at the barrier; it is now broken for every party"
                }
            })
        }
    }
    impl std::error::Error for BarrierError {}

    /// `parties` processes or threads meet here, then all go on (Python's `Barrier`).
    ///
    /// ```
    /// let b = ipc_sync::Barrier::new(1)?;
    /// assert_eq!(b.wait(), Ok(0));
    /// assert_eq!(b.wait_with(None, || println!("last one in")), Ok(0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[derive(Clone, Serialize, Deserialize)]
    pub struct Barrier {
        raw: ShmBox<RawBarrier>,
    }

    impl Barrier {
        /// A barrier for `parties` (at least 1) with no default timeout.
        pub fn new(parties: u32) -> ipc_core::Result<Barrier> {
            Self::with_timeout(parties, None)
        }

        /// A barrier whose [`wait`](Self::wait) gives up after `timeout` (Python's
        /// `Barrier(parties, timeout=t)`), which also bounds the wait when a party died.
        pub fn with_timeout(parties: u32, timeout: Option<Duration>) -> ipc_core::Result<Barrier> {
            if parties == 0 {
                return Err(ipc_core::Error::Misuse(
                    "a barrier needs at least one party".into(),
                ));
            }
            let raw = ShmBox::<RawBarrier>::new()?;
            raw.init(parties, timeout);
            Ok(Barrier { raw })
        }

        /// Waits for all parties (up to the default timeout); returns the arrival index, 0 for
        /// exactly one party of each generation.
        pub fn wait(&self) -> Result<u32, BarrierError> {
            self.wait_with(self.raw.default_timeout(), || {})
        }

        /// Waits for all parties for at most `timeout`.
        pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, BarrierError> {
            self.wait_with(Some(timeout), || {})
        }

        /// Waits; if this caller arrives last, it runs `action` before anybody is released
        /// (Python's `action`, run once per generation). A panic in the action breaks the
        /// barrier and continues in the caller.
        pub fn wait_with(
            &self,
            timeout: Option<Duration>,
            action: impl FnOnce(),
        ) -> Result<u32, BarrierError> {
            match self.raw.wait(timeout.map(|t| Instant::now() + t), action) {
                Passage::Passed(i) => Ok(i),
                Passage::Broken => Err(BarrierError::Broken),
                Passage::TimedOut => Err(BarrierError::Timeout),
            }
        }

        /// Breaks the barrier: waiting and future parties fail until [`reset`](Self::reset).
        pub fn abort(&self) {
            self.raw.abort();
        }

        /// Returns the barrier to its initial state; parties waiting now fail with `Broken`.
        pub fn reset(&self) {
            self.raw.reset();
        }

        /// The number of parties.
        pub fn parties(&self) -> u32 {
            self.raw.parties()
        }

        /// Parties waiting in the current generation.
        pub fn n_waiting(&self) -> u32 {
            self.raw.n_waiting()
        }

        /// Whether the barrier is broken.
        pub fn broken(&self) -> bool {
            self.raw.is_broken()
        }
    }

    impl fmt::Debug for Barrier {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Barrier")
                .field("parties", &self.parties())
                .field("n_waiting", &self.n_waiting())
                .field("broken", &self.broken())
                .finish()
        }
    }
}
