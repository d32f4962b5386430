//! `Condition`: wait until notified, over a `Lock` or an `RLock` (Python's `Condition`).
//!
//! # Shared-memory layout
//! ```text
//! RawCondition  (#[repr(C)], 12 bytes, align 4, all-zero = nobody waiting)
//! +-----------------+---------------------+---------------------+
//! | seq: AtomicU32  | waiters: AtomicU32  | signals: AtomicU32  |
//! | futex word      | registered, not yet | selected by notify, |
//! | bumped by notify| selected            | not yet departed    |
//! +-----------------+---------------------+---------------------+
//! ```
//! `waiters` and `signals` change only while the condition's lock is held; `seq` is the futex.
//!
//! # Transitions (all under the lock except the sleep)
//! ```text
//! wait:     waiters += 1; ticket = seq; release lock; sleep while seq == ticket;
//!           re-acquire lock; then
//!             signals > 0  -> signals -= 1, return notified          (a token is ours)
//!             timed out    -> waiters -= 1, return timed out
//!             otherwise    -> spurious: ticket = seq, sleep again
//! notify(n): k = min(n, waiters); waiters -= k; signals += k; seq += 1; futex_wake(k)
//! ```
//! Invariant: `waiters + signals` = waiters registered and not departed. A notify selects at most
//! as many as are registered, and every selected one departs through exactly one token, so
//! `notify(n)` wakes exactly `min(n, waiting)` waiters (Python checklist 76, 78) even when a
//! waiter is between releasing the lock and sleeping (it sees `seq` moved and does not sleep)
//! or times out as it is notified (it finds a token and reports notified).
//!
//! # Memory ordering
//! The bookkeeping is `Relaxed`: the lock orders it. The futex compare makes the sleep atomic
//! with the ticket check, and the ticket is read under the lock that `notify` also holds, so a
//! notify that follows our registration always moves `seq` past our ticket.
//!
//! # Robustness
//! A waiter that dies while registered leaves `waiters` one too high: a later notify may select
//! the dead waiter, which shows up as one spurious wake for a future waiter (harmless for code
//! that waits in a predicate loop, as `wait_for` does).

use std::time::Instant;

use crate::primitive::{AtomicU32, Ordering, WaitOutcome, futex};
use crate::spin;

/// A condition's words, usable inside any shared mapping (all-zero bytes = nobody waiting).
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawCondition {
    seq: AtomicU32,
    waiters: AtomicU32,
    signals: AtomicU32,
}

/// What a waiter learns after re-acquiring the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// A notify selected this waiter.
    Notified,
    /// The deadline passed without a notify.
    TimedOut,
    /// Nothing for us yet: wait again with a fresh ticket.
    Spurious,
}

impl RawCondition {
    /// A condition nobody waits on (the all-zero state).
    pub fn new() -> Self {
        RawCondition {
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            signals: AtomicU32::new(0),
        }
    }

    /// With the lock held: registers the caller as a waiter; returns its ticket.
    pub fn register(&self) -> u32 {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        self.seq.load(Ordering::Relaxed)
    }

    /// With the lock held, after a spurious wake-up: a fresh ticket (still registered).
    pub fn ticket(&self) -> u32 {
        self.seq.load(Ordering::Relaxed)
    }

    /// Without the lock: sleeps while no notify happened since `ticket` or until `deadline`.
    pub fn sleep(&self, ticket: u32, deadline: Option<Instant>) -> WaitOutcome {
        if spin::spin(|| self.seq.load(Ordering::Relaxed) != ticket) {
            return WaitOutcome::Woken;
        }
        let out = futex::wait(&self.seq, ticket, deadline);
        if out == WaitOutcome::Woken && deadline.is_some_and(|d| Instant::now() >= d) {
            return WaitOutcome::TimedOut;
        }
        out
    }

    /// With the lock re-acquired: takes a token, or departs on timeout, or asks to wait again.
    pub fn resolve(&self, deadline_passed: bool) -> Wakeup {
        let s = self.signals.load(Ordering::Relaxed);
        if s > 0 {
            self.signals.store(s - 1, Ordering::Relaxed);
            return Wakeup::Notified;
        }
        if deadline_passed {
            let w = self.waiters.load(Ordering::Relaxed);
            self.waiters.store(w.saturating_sub(1), Ordering::Relaxed);
            return Wakeup::TimedOut;
        }
        Wakeup::Spurious
    }

    /// With the lock held: selects up to `n` waiters and wakes them; returns how many.
    pub fn notify(&self, n: u32) -> u32 {
        let w = self.waiters.load(Ordering::Relaxed);
        let k = w.min(n);
        if k == 0 {
            return 0;
        }
        self.waiters.store(w - k, Ordering::Relaxed);
        let s = self.signals.load(Ordering::Relaxed);
        self.signals.store(s.saturating_add(k), Ordering::Relaxed);
        self.seq.fetch_add(1, Ordering::Relaxed);
        futex::wake(&self.seq, k);
        k
    }

    /// Waiters registered and not yet selected (a snapshot; exact under the lock).
    pub fn waiting(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }
}
