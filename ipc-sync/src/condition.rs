//! `Condition`: wait until notified, over a `Lock` or an `RLock` (Python's `Condition`).
//!
//! # Shared-memory layout
//! ```text
//! RawCondition  (#[repr(C)], 20 bytes, align 4, all-zero = nobody waiting)
//! +-----------------+---------------------+---------------------+----------------------+
//! | seq: AtomicU32  | waiters: AtomicU32  | signals: AtomicU32  | notifiers: 2 x       |
//! | futex word      | registered, not yet | selected by notify, | AtomicU32: CPU + 1   |
//! | bumped by notify| selected            | not yet departed    | of the last notify,  |
//! |                 |                     |                     | and of the last from |
//! |                 |                     |                     | another CPU (0: ?)   |
//! +-----------------+---------------------+---------------------+----------------------+
//! ```
//! `waiters`, `signals` and `notifiers` change only while the condition's lock is held; `seq`
//! is the futex. `notifiers` are a hint for the waiter's spin (see `spin::spin_for_peer`): a
//! process pinned to one CPU spins before it sleeps when its notifier runs on another CPU (in a
//! ping-pong the last notify is the waiter's own, hence the second CPU), whatever its record of
//! spins says. A record soured by slow waits at start-up made a pinned ping-pong sleep on every
//! turn: 24 us a round trip against 1.3 us.
//!
//! # Transitions (all under the lock except the sleep)
//! ```text
//! wait:     waiters += 1; registered = ticket = seq; release lock; sleep while seq == ticket;
//!           re-acquire lock; then
//!             signals > 0 and seq != registered
//!                          -> signals -= 1, return notified          (a token is ours)
//!             timed out    -> waiters -= 1, return timed out
//!             otherwise    -> spurious: ticket = seq, sleep again
//! notify(n): k = min(n, waiters); waiters -= k; signals += k; seq += 1; futex_wake(k)
//! ```
//! Invariant: `waiters + signals` = waiters registered and not departed. A notify selects at most
//! as many as are registered, and every selected one departs through exactly one token, so
//! `notify(n)` wakes exactly `min(n, waiting)` waiters (Python checklist 76, 78) even when a
//! waiter is between releasing the lock and sleeping (it sees `seq` moved and does not sleep)
//! or times out as it is notified (it finds a token and reports notified). Only a waiter that
//! was registered when a notify came (`seq` moved since its registration) may take a token: a
//! waiter that registered after the notify and times out before the selected one re-acquires
//! the lock would otherwise take its token, report "notified" and leave the selected waiter
//! asleep for good.
//!
//! # Memory ordering
//! The bookkeeping is `Relaxed`: the lock orders it. The futex compare makes the sleep atomic
//! with the ticket check, and the ticket is read under the lock that `notify` also holds, so a
//! notify that follows our registration always moves `seq` past our ticket.
//!
//! # Robustness
//! A waiter that dies while registered never departs. The typed [`Condition`] counts each
//! process's registrations in a [roster](crate::roster) (hold before `register`, release after
//! departing), and when a process in it has died, a waiter whose 100 ms sleep slice ended, or
//! [`ConditionGuard::waiting`], settles for it under the lock, once per dead registration:
//! ```text
//! signals == 0   -> waiters -= 1               (it cannot have been selected)
//! waiters == 0   -> signals -= 1               (it must have been selected)
//! both > 0       -> waiters -= 1; seq += 1; futex_wake(all)
//! ```
//! A waiter killed while asleep is taken out exactly, so `waiting()` is exact and notify never
//! selects it again. Only one killed in the instant between being selected and departing, while
//! others wait unselected, is ambiguous (a notify selects anonymously): the sum is still exact,
//! and the bump lets every live waiter take a token that is left, so a selected live waiter
//! never loses its wake-up; the price is at most one waiter more than asked for reporting
//! "notified" (harmless in a predicate loop, as `wait_for` is). A process that dies holding the
//! lock itself is reported as `OwnerDied`, and the count may then be off by one.

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
    notifiers: [AtomicU32; 2],
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
            notifiers: [AtomicU32::new(0), AtomicU32::new(0)],
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
        let [last, other] = &self.notifiers;
        let mut peer = last.load(Ordering::Relaxed);
        if peer == ipc_core::spin::cpu_tag() {
            peer = other.load(Ordering::Relaxed);
        }
        if spin::spin_for_peer(peer, || self.seq.load(Ordering::Relaxed) != ticket) {
            return WaitOutcome::Woken;
        }
        let out = futex::wait(&self.seq, ticket, deadline);
        if out == WaitOutcome::Woken && deadline.is_some_and(|d| Instant::now() >= d) {
            return WaitOutcome::TimedOut;
        }
        out
    }

    /// With the lock re-acquired: takes a token (if a notify came since `registered`, the
    /// ticket [`register`](Self::register) returned), or departs on timeout, or asks to wait
    /// again.
    pub fn resolve(&self, registered: u32, deadline_passed: bool) -> Wakeup {
        let s = self.signals.load(Ordering::Relaxed);
        if s > 0 && self.seq.load(Ordering::Relaxed) != registered {
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
        let ([last, other], me) = (&self.notifiers, ipc_core::spin::cpu_tag());
        let before = last.load(Ordering::Relaxed);
        if before != me {
            other.store(before, Ordering::Relaxed);
            last.store(me, Ordering::Relaxed);
        }
        self.seq.fetch_add(1, Ordering::Relaxed);
        ipc_core::failpoint::hit("condition.notified");
        futex::wake(&self.seq, k);
        k
    }

    /// With the lock held: `n` registered waiters died without departing (see the module
    /// doc).
    pub fn depart_dead(&self, n: u32) {
        let mut bump = false;
        for _ in 0..n {
            let w = self.waiters.load(Ordering::Relaxed);
            let s = self.signals.load(Ordering::Relaxed);
            if w == 0 {
                self.signals.store(s.saturating_sub(1), Ordering::Relaxed);
            } else {
                self.waiters.store(w - 1, Ordering::Relaxed);
                bump |= s > 0;
            }
        }
        if bump {
            self.seq.fetch_add(1, Ordering::Relaxed);
            futex::wake_all(&self.seq);
        }
    }

    /// Waiters registered and not yet selected (a snapshot; exact under the lock).
    pub fn waiting(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }
}

#[cfg(not(loom))]
pub use typed::{Condition, ConditionGuard};

#[cfg(not(loom))]
mod typed {
    use std::fmt;
    use std::marker::PhantomData;
    use std::time::{Duration, Instant};

    use ipc_core::shm::ShmBox;
    use serde::{Deserialize, Serialize};

    use super::{RawCondition, Wakeup};
    use crate::error::{LockError, LockTimeoutError, TryLockError};
    use crate::lock::{Acquire, Lock, SLICE};
    use crate::primitive::WaitOutcome;
    use crate::rlock::RLock;
    use crate::roster::Roster;

    /// The lock under a condition: a flavor enum, as Python's `Condition(lock)` takes either.
    #[derive(Clone, Serialize, Deserialize)]
    enum Flavor {
        Lock(Lock),
        RLock(RLock),
    }

    /// A condition variable shared by processes, with its lock (Python's `Condition`).
    ///
    /// Acquire it to get a [`ConditionGuard`], which holds the lock and can `wait` (releasing
    /// the lock while asleep) and `notify`. Holding the guard is what Python's "must own the
    /// lock" check becomes: you cannot notify or wait without it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = ipc_sync::Condition::new()?;
    /// let guard = cond.acquire().unwrap_or_else(ipc_sync::LockError::into_guard);
    /// let (guard, notified) = guard
    ///     .wait_timeout(Duration::from_millis(1))
    ///     .unwrap_or_else(ipc_sync::LockError::into_guard);
    /// assert!(!notified);
    /// assert_eq!(guard.notify_all(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[derive(Clone, Serialize, Deserialize)]
    pub struct Condition {
        raw: ShmBox<RawCondition>,
        /// Each process's registered waiters (see the module doc's Robustness).
        roster: ShmBox<Roster>,
        lock: Flavor,
    }

    /// Holds a [`Condition`]'s lock; releases it when dropped.
    #[must_use = "the lock is released as soon as the guard is dropped"]
    pub struct ConditionGuard<'a> {
        cond: &'a Condition,
        // An RLock belongs to its thread; keep the guard there whichever the flavor.
        _not_send: PhantomData<*const ()>,
    }

    impl Condition {
        /// A condition over a new [`Lock`].
        pub fn new() -> ipc_core::Result<Condition> {
            Self::with_lock(Lock::new()?)
        }

        /// A condition over an existing [`Lock`] (shared with other users of that lock).
        pub fn with_lock(lock: Lock) -> ipc_core::Result<Condition> {
            Self::over(Flavor::Lock(lock))
        }

        /// A condition over an [`RLock`]: a wait releases every level and restores them.
        pub fn with_rlock(lock: RLock) -> ipc_core::Result<Condition> {
            Self::over(Flavor::RLock(lock))
        }

        fn over(lock: Flavor) -> ipc_core::Result<Condition> {
            Ok(Condition {
                raw: ShmBox::new()?,
                roster: ShmBox::new()?,
                lock,
            })
        }

        fn guard(&self) -> ConditionGuard<'_> {
            ConditionGuard {
                cond: self,
                _not_send: PhantomData,
            }
        }

        fn lock_raw(&self, deadline: Option<Instant>) -> Acquire {
            match &self.lock {
                Flavor::Lock(l) => l.raw().lock(deadline),
                Flavor::RLock(r) => r.raw().lock(deadline),
            }
        }

        /// Blocks until the lock is acquired.
        #[doc(alias = "__enter__")]
        pub fn acquire(&self) -> Result<ConditionGuard<'_>, LockError<ConditionGuard<'_>>> {
            match self.lock_raw(None) {
                Acquire::OwnerDied => Err(LockError::OwnerDied(self.guard())),
                _ => Ok(self.guard()),
            }
        }

        /// Acquires the lock if that needs no waiting.
        pub fn try_acquire(&self) -> Result<ConditionGuard<'_>, TryLockError<ConditionGuard<'_>>> {
            let a = match &self.lock {
                Flavor::Lock(l) => l.raw().try_lock(),
                Flavor::RLock(r) => r.raw().try_lock(),
            };
            match a {
                Acquire::Acquired => Ok(self.guard()),
                Acquire::OwnerDied => Err(TryLockError::OwnerDied(self.guard())),
                Acquire::Failed => Err(TryLockError::WouldBlock),
            }
        }

        /// Blocks until the lock is acquired or `timeout` passes.
        pub fn acquire_timeout(
            &self,
            timeout: Duration,
        ) -> Result<ConditionGuard<'_>, LockTimeoutError<ConditionGuard<'_>>> {
            match self.lock_raw(Some(Instant::now() + timeout)) {
                Acquire::Acquired => Ok(self.guard()),
                Acquire::OwnerDied => Err(LockTimeoutError::OwnerDied(self.guard())),
                Acquire::Failed => Err(LockTimeoutError::Timeout),
            }
        }

        /// Whether the condition's lock is held by anybody.
        pub fn locked(&self) -> bool {
            match &self.lock {
                Flavor::Lock(l) => l.locked(),
                Flavor::RLock(r) => r.locked(),
            }
        }
    }

    type Timed<'a> = (ConditionGuard<'a>, bool);

    impl<'a> ConditionGuard<'a> {
        /// Releases the lock (all levels of an RLock); returns the depth to restore.
        fn release_all(&self) -> u32 {
            match &self.cond.lock {
                Flavor::Lock(l) => {
                    l.raw().unlock_held();
                    1
                }
                Flavor::RLock(r) => r.raw().unlock_all().unwrap_or(1),
            }
        }

        /// Re-acquires after a sleep; true if the holder meanwhile died holding it.
        fn reacquire(&self, depth: u32) -> bool {
            let a = match &self.cond.lock {
                Flavor::Lock(l) => l.raw().lock(None),
                Flavor::RLock(r) => r.raw().lock_restore(depth, None),
            };
            a == Acquire::OwnerDied
        }

        /// Waits for a notify or the deadline; (notified, a lock holder died meanwhile).
        fn wait_until(&self, deadline: Option<Instant>) -> (bool, bool) {
            let cond = self.cond;
            // Counted before registering, released after departing (see the module doc).
            let slot = cond.roster.claim();
            if let Some(s) = slot {
                s.hold();
            }
            let registered = cond.raw.register();
            let mut ticket = registered;
            let mut died = false;
            loop {
                let depth = self.release_all();
                let recheck = self.sleep(ticket, deadline);
                died |= self.reacquire(depth);
                if recheck {
                    self.settle_dead();
                }
                let late = deadline.is_some_and(|d| Instant::now() >= d);
                let wakeup = cond.raw.resolve(registered, late);
                if wakeup == Wakeup::Spurious {
                    ticket = cond.raw.ticket();
                    continue;
                }
                if let Some(s) = slot {
                    s.release();
                }
                return (wakeup == Wakeup::Notified, died);
            }
        }

        /// Without the lock: sleeps until a notify moves `seq` past `ticket` or `deadline`
        /// passes, in slices; true if it stopped because, when a slice ended, a process with
        /// registered waiters had died (see the module doc).
        fn sleep(&self, ticket: u32, deadline: Option<Instant>) -> bool {
            loop {
                let slice_end = Instant::now() + SLICE;
                let until = deadline.map_or(slice_end, |d| d.min(slice_end));
                let out = self.cond.raw.sleep(ticket, Some(until));
                if out != WaitOutcome::TimedOut || deadline.is_some_and(|d| Instant::now() >= d) {
                    return false;
                }
                if self.cond.roster.held_by_the_dead().0 > 0 {
                    return true;
                }
            }
        }

        /// With the lock held: departs the waiters of processes that died registered.
        fn settle_dead(&self) {
            let (n, pids) = self.cond.roster.held_by_the_dead();
            if n > 0 {
                self.cond
                    .raw
                    .depart_dead(u32::try_from(n).unwrap_or(u32::MAX));
                self.cond.roster.forget(&pids);
            }
        }

        fn timed(self, r: (bool, bool)) -> Result<Timed<'a>, LockError<Timed<'a>>> {
            match r {
                (notified, false) => Ok((self, notified)),
                (notified, true) => Err(LockError::OwnerDied((self, notified))),
            }
        }

        /// Releases the lock, sleeps until notified, re-acquires the lock.
        ///
        /// `Err(OwnerDied(guard))` if another holder died holding the lock while we slept: we
        /// hold it again, and were notified.
        pub fn wait(self) -> Result<Self, LockError<Self>> {
            let (_, died) = self.wait_until(None);
            if died {
                Err(LockError::OwnerDied(self))
            } else {
                Ok(self)
            }
        }

        /// As [`wait`](Self::wait), for at most `timeout`; the bool says whether we were
        /// notified (Python's `wait(t)` result).
        pub fn wait_timeout(self, timeout: Duration) -> Result<Timed<'a>, LockError<Timed<'a>>> {
            let r = self.wait_until(Some(Instant::now() + timeout));
            self.timed(r)
        }

        /// Waits until `predicate` (checked with the lock held) is true.
        pub fn wait_for(
            self,
            mut predicate: impl FnMut() -> bool,
        ) -> Result<Self, LockError<Self>> {
            let mut died = false;
            while !predicate() {
                died |= self.wait_until(None).1;
            }
            if died {
                Err(LockError::OwnerDied(self))
            } else {
                Ok(self)
            }
        }

        /// Waits until `predicate` is true or `timeout` passes; the bool is the predicate's last
        /// value (Python's `wait_for(pred, t)`).
        pub fn wait_for_timeout(
            self,
            timeout: Duration,
            mut predicate: impl FnMut() -> bool,
        ) -> Result<Timed<'a>, LockError<Timed<'a>>> {
            let deadline = Instant::now() + timeout;
            let mut died = false;
            let mut ok = predicate();
            while !ok && Instant::now() < deadline {
                died |= self.wait_until(Some(deadline)).1;
                ok = predicate();
            }
            self.timed((ok, died))
        }

        /// Wakes up to `n` waiters; returns how many were selected.
        pub fn notify(&self, n: u32) -> u32 {
            self.cond.raw.notify(n)
        }

        /// Wakes every waiter; returns how many.
        #[doc(alias = "notifyAll")]
        pub fn notify_all(&self) -> u32 {
            self.cond.raw.notify(u32::MAX)
        }

        /// Waiters registered and not yet notified (exact: waiters of processes that died
        /// are departed first).
        pub fn waiting(&self) -> u32 {
            self.settle_dead();
            self.cond.raw.waiting()
        }
    }

    impl Drop for ConditionGuard<'_> {
        fn drop(&mut self) {
            match &self.cond.lock {
                Flavor::Lock(l) => l.raw().unlock_held(),
                Flavor::RLock(r) => {
                    r.raw().unlock();
                }
            }
        }
    }

    impl fmt::Debug for Condition {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Condition")
                .field("locked", &self.locked())
                .field("waiting", &self.raw.waiting())
                .finish()
        }
    }

    impl fmt::Debug for ConditionGuard<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ConditionGuard")
                .field("cond", self.cond)
                .finish()
        }
    }
}
