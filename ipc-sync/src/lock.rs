//! `Lock`: a robust mutual-exclusion lock shared by processes (Python's `multiprocessing.Lock`).
//!
//! # Shared-memory layout
//! ```text
//! RawLock  (#[repr(C)], 4 bytes, align 4, all-zero = unlocked)
//! +-------------------------------+
//! | word: AtomicU32               |   bit 31   bit 30      bit 29      bits 0-28
//! +-------------------------------+   WAITERS  OWNER_DIED  RELEASABLE  owner pid (0 = nobody)
//! ```
//! The bits are laid out as the kernel lays out robust futexes (`FUTEX_WAITERS`,
//! `FUTEX_OWNER_DIED`, `FUTEX_TID_MASK`), with the owner's *process* id; Linux pids stay below
//! 2^22, which leaves bit 29 for `RELEASABLE`: the holder gave up its guard
//! ([`LockGuard::leak`]), so another party may release the lock.
//!
//! # States and transitions
//! ```text
//! UNLOCKED     0
//! LOCKED       pid                 no one sleeps: unlock is a bare swap, no syscall
//! CONTENDED    pid | WAITERS       somebody may sleep: unlock wakes one
//! RECOVERED    pid | OWNER_DIED | WAITERS   taken over from a dead owner (until unlocked)
//!
//! acquire   UNLOCKED --CAS--> LOCKED                        (the whole fast path: one CAS)
//! contended spin; then LOCKED --CAS--> CONTENDED; sleep on the word in 100 ms slices;
//!           UNLOCKED --CAS--> CONTENDED (we can't know whether others still sleep)
//! owner dead  (a pidfd says the pid in the word has exited, checked when a slice ends; or,
//!           once a second, the live process under that pid does not map the lock's memory:
//!           the pid was recycled)
//!           pid(dead) [| ..] --CAS--> me | OWNER_DIED | WAITERS, reported as OwnerDied
//! leak      pid [| ..] --fetch_or--> pid | RELEASABLE [| ..]   (the guard is gone)
//! release   guard drop: any --swap--> UNLOCKED; Lock::release: only a RELEASABLE word
//!           --CAS--> UNLOCKED; futex_wake(1) only if WAITERS was set
//! ```
//! A takeover is a CAS from the exact word the waiter judged dead, so two waiters that both see
//! the owner die cannot both win, and a lock released and re-taken meanwhile is never stolen.
//!
//! # Memory ordering (the model is std's futex mutex)
//! Acquiring CASes use `Acquire` and releasing swaps use `Release`, so everything written under
//! the lock happens-before the next holder's critical section, in this process or another (the
//! atomics are plain cache-coherent memory in a shared mapping). Setting the WAITERS bit is
//! `Relaxed`: it publishes nothing; the futex compares the word atomically with going to sleep,
//! so a release between our CAS and our sleep makes the sleep return at once.
//!
//! # Who may release
//! Python lets any thread or process release a `Lock` (it is a semaphore, not owned); so does
//! [`Lock::release`], for a lock whose holder gave up its guard ([`LockGuard::leak`]). While a
//! guard lives, only its drop releases: a foreign release would let a second guard be granted,
//! and guards of a [`Value`](crate::Value) or [`Array`](crate::Array) hand out `&mut T`. The
//! owner pid is for robustness, not for ownership checks: [`RLock`](crate::RLock) is the owned
//! lock. [`RawLock::unlock`] releases unconditionally and [`RawLock::mark_releasable`] gives a
//! holder's right away, so both are `unsafe fn` (as lock_api's `RawMutex::unlock`): the caller
//! promises that no guard, in any process, still relies on the lock being held. The typed
//! [`Lock`] never hands its raw word out.

use std::time::{Duration, Instant};

use crate::liveness;
use crate::primitive::{AtomicU32, Ordering, WaitOutcome, futex};
use crate::spin;

/// Bits 0-28: the pid of the owning process (0 when unlocked).
pub const PID_MASK: u32 = 0x1FFF_FFFF;
/// Bit 29: the holder gave up its guard; another party may release the lock.
pub const RELEASABLE: u32 = 0x2000_0000;
/// Bit 30: the holder took the lock over from a dead owner.
pub const OWNER_DIED: u32 = 0x4000_0000;
/// Bit 31: somebody may sleep on the word; the releaser must wake one.
pub const WAITERS: u32 = 0x8000_0000;

/// How long a waiter sleeps before it checks whether the owner is still alive.
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// Every this many slices (a second), a waiter whose owner is alive also checks that the owner
/// maps the lock's memory (its pid may have been recycled: see [`liveness`]).
const MAPS_CHECK_EVERY: u32 = 10;

/// How a raw acquire ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// The caller holds the lock.
    Acquired,
    /// The caller holds the lock, taken over from an owner that died holding it.
    OwnerDied,
    /// Not acquired: held by a live owner (try) or until the deadline (timed).
    Failed,
}

/// The lock word, usable inside any shared mapping (all-zero bytes = unlocked).
#[repr(C)]
#[derive(Debug)]
pub struct RawLock {
    word: AtomicU32,
}

impl Default for RawLock {
    fn default() -> Self {
        Self::new()
    }
}

impl RawLock {
    /// An unlocked lock (the all-zero state).
    pub fn new() -> Self {
        RawLock {
            word: AtomicU32::new(0),
        }
    }

    /// Acquires the lock, blocking until `deadline` (forever if `None`).
    #[inline]
    pub fn lock(&self, deadline: Option<Instant>) -> Acquire {
        let me = crate::ident::pid();
        let got = if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            Acquire::Acquired
        } else {
            self.lock_contended(me, deadline)
        };
        if got != Acquire::Failed {
            ipc_core::failpoint::hit("lock.acquired");
        }
        got
    }

    /// Acquires the lock if it is free or its owner is dead; never sleeps.
    pub fn try_lock(&self) -> Acquire {
        let me = crate::ident::pid();
        let mut s = self.word.load(Ordering::Relaxed);
        loop {
            let new = if s & PID_MASK == 0 {
                me | (s & WAITERS)
            } else if liveness::is_dead(s & PID_MASK) {
                me | OWNER_DIED | WAITERS
            } else {
                return Acquire::Failed;
            };
            match self
                .word
                .compare_exchange(s, new, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) if new & OWNER_DIED != 0 => return Acquire::OwnerDied,
                Ok(_) => return Acquire::Acquired,
                Err(now) => s = now,
            }
        }
    }

    /// Acquires the lock only if nobody holds it, dead or alive: never takes a dead owner's
    /// lock over, so an `OWNER_DIED` report stays for the next real acquirer.
    #[cfg(not(loom))]
    pub(crate) fn try_lock_free(&self) -> bool {
        let me = crate::ident::pid();
        let mut s = self.word.load(Ordering::Relaxed);
        while s & PID_MASK == 0 {
            match self.word.compare_exchange(
                s,
                me | (s & WAITERS),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
        false
    }

    /// Whether the word names an owner that has died (a snapshot: it may be taken over at once).
    #[cfg(not(loom))]
    pub(crate) fn owner_is_dead(&self) -> bool {
        let owner = self.word.load(Ordering::Relaxed) & PID_MASK;
        owner != 0 && liveness::is_dead(owner)
    }

    #[cold]
    fn lock_contended(&self, me: u32, deadline: Option<Instant>) -> Acquire {
        // Spin while the lock is held and nobody sleeps: the holder may be about to release.
        let mut s = self.word.load(Ordering::Relaxed);
        spin::spin(|| {
            s = self.word.load(Ordering::Relaxed);
            s & PID_MASK == 0 || s & WAITERS != 0
        });
        if s == 0
            && self
                .word
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return Acquire::Acquired;
        }
        let mut next_check = Instant::now() + SLICE;
        let mut slices = 0u32;
        loop {
            s = self.word.load(Ordering::Relaxed);
            if s & PID_MASK == 0 {
                // Free. Take it as CONTENDED: other sleepers may exist and must get their wake.
                match self.word.compare_exchange(
                    s,
                    me | WAITERS,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Acquire::Acquired,
                    Err(_) => continue,
                }
            }
            if s & WAITERS == 0 {
                if self
                    .word
                    .compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                s |= WAITERS;
            }
            let until = match deadline {
                Some(d) if d < next_check => d,
                _ => next_check,
            };
            let outcome = futex::wait(&self.word, s, Some(until));
            if outcome == WaitOutcome::TimedOut || Instant::now() >= until {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Acquire::Failed;
                }
                if Instant::now() >= next_check {
                    next_check = Instant::now() + SLICE;
                    slices = slices.wrapping_add(1);
                    let deep = slices.is_multiple_of(MAPS_CHECK_EVERY);
                    if let Some(a) = self.take_over_if_dead(me, deep) {
                        return a;
                    }
                }
            }
        }
    }

    /// If the pid in the word names a dead process, CAS the word to ours; `None` otherwise.
    /// With `deep`, a live process under that pid that does not map the lock's memory counts as
    /// dead too: the owner's pid was recycled (see [`liveness`]). A lock whose guard was given
    /// up (`RELEASABLE`) is left to whoever releases it.
    fn take_over_if_dead(&self, me: u32, deep: bool) -> Option<Acquire> {
        let s = self.word.load(Ordering::Relaxed);
        let owner = s & PID_MASK;
        if owner == 0 {
            return None;
        }
        let dead = liveness::is_dead(owner)
            || (deep
                && s & RELEASABLE == 0
                && liveness::maps_object_at(owner, &self.word as *const AtomicU32 as usize)
                    == Some(false));
        if !dead {
            return None;
        }
        self.word
            .compare_exchange(
                s,
                me | OWNER_DIED | WAITERS,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()
            .map(|_| Acquire::OwnerDied)
    }

    /// Releases the lock, held by this process or any other; false if it was not locked.
    ///
    /// # Safety
    /// Whoever holds the lock (this thread, another, or another process) must not rely on
    /// holding it any more: no guard or critical section built on this word may still be live.
    /// Otherwise the next `lock` grants a second holder while the first still works under it.
    #[inline]
    #[allow(unsafe_code)] // A contract with no unsafe operation inside: see Safety.
    pub unsafe fn unlock(&self) -> bool {
        self.unlock_when(|_| true).is_ok()
    }

    /// Marks a held lock as releasable by another party (its holder gave up its guard), so that
    /// [`unlock_releasable`](Self::unlock_releasable) will release it.
    ///
    /// # Safety
    /// The same contract as [`unlock`](Self::unlock): the holder must no longer rely on holding
    /// the lock, since any party may now release it.
    #[allow(unsafe_code)] // A contract with no unsafe operation inside: see Safety.
    pub unsafe fn mark_releasable(&self) {
        // Release: the holder's critical section heads the release sequence that the later
        // releaser's RMW continues, so the next acquirer sees it.
        self.word.fetch_or(RELEASABLE, Ordering::Release);
    }

    /// Releases the lock only if it is [`RELEASABLE`]; `Err(true)` if it is held through a
    /// guard, `Err(false)` if it is not locked. Safe: only a holder that gave up its right
    /// ([`LockGuard::leak`](crate::LockGuard::leak), or the unsafe `mark_releasable`) makes a
    /// word releasable.
    pub fn unlock_releasable(&self) -> Result<(), bool> {
        self.unlock_when(|s| s & RELEASABLE != 0)
    }

    /// Releases a locked word that `allowed` accepts; `Err(true)` if it refused the word,
    /// `Err(false)` if the lock was not locked. Wakes one sleeper if WAITERS was set.
    #[inline]
    fn unlock_when(&self, allowed: impl Fn(u32) -> bool) -> Result<(), bool> {
        let mut s = self.word.load(Ordering::Relaxed);
        loop {
            if s & PID_MASK == 0 {
                return Err(false);
            }
            if !allowed(s) {
                return Err(true);
            }
            match self
                .word
                .compare_exchange_weak(s, 0, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        ipc_core::failpoint::hit("lock.releasing");
        if s & WAITERS != 0 {
            futex::wake_one(&self.word);
        }
        Ok(())
    }

    /// Releases a lock the caller is known to hold (a guard's drop): one swap, no check.
    #[inline]
    pub(crate) fn unlock_held(&self) {
        let s = self.word.swap(0, Ordering::Release);
        ipc_core::failpoint::hit("lock.releasing");
        if s & WAITERS != 0 {
            futex::wake_one(&self.word);
        }
    }

    /// Whether some process holds the lock (a snapshot, as Python's `locked()`).
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) & PID_MASK != 0
    }

    /// The pid of the process holding the lock, if any (a snapshot).
    pub fn owner(&self) -> Option<u32> {
        match self.word.load(Ordering::Relaxed) & PID_MASK {
            0 => None,
            pid => Some(pid),
        }
    }

    /// The raw word (for diagnostics and tests).
    pub fn word(&self) -> u32 {
        self.word.load(Ordering::Relaxed)
    }
}

#[cfg(not(loom))]
pub use typed::{Lock, LockGuard};

#[cfg(not(loom))]
mod typed {
    use std::fmt;
    use std::time::{Duration, Instant};

    use ipc_core::shm::ShmBox;
    use serde::{Deserialize, Serialize};

    use super::{Acquire, RawLock};
    use crate::NotSend;
    use crate::error::{LockError, LockTimeoutError, ReleaseError, TryLockError};

    /// A robust lock shared by processes; clones and copies sent to children are the same lock.
    ///
    /// Its 4-byte state lives in ipc-core's shared heap. Pass it to a child as a process argument
    /// or through a `Connection` (it travels by descriptor); sending it through a [`Queue`]
    /// is refused with a clear error.
    ///
    /// If the holder dies, the next acquirer gets [`LockError::OwnerDied`] holding the guard
    /// (within about 100 ms of the death while it waits).
    ///
    /// ```
    /// use ipc_sync::LockError;
    ///
    /// let lock = ipc_sync::Lock::new()?;
    /// {
    ///     // A holder that died is reported, with the lock: here we accept the state as is.
    ///     let _guard = lock.acquire().unwrap_or_else(LockError::into_guard);
    ///     assert!(lock.locked());
    ///     assert!(lock.try_acquire().is_err());
    /// }
    /// assert!(!lock.locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// [`Queue`]: crate::Queue
    #[derive(Clone, Serialize, Deserialize)]
    pub struct Lock {
        raw: ShmBox<RawLock>,
    }

    /// Holds a [`Lock`]; releases it when dropped.
    ///
    /// Not `Send`, as std's `MutexGuard`: a guard moved into a forked child would be released
    /// by this process's copy while the child still worked under it. To release from another
    /// thread or process, give the guard up with [`leak`](Self::leak) and call
    /// [`Lock::release`] there.
    /// ```compile_fail
    /// fn send<T: Send>(_: T) {}
    /// let lock = ipc_sync::Lock::new()?;
    /// send(lock.acquire().unwrap());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    /// The raw word is not reachable, so nothing can unlock under a guard:
    /// ```compile_fail
    /// let v = ipc_sync::Value::new(0u64)?;
    /// let _g = v.lock().unwrap();
    /// v.get_lock().raw().unlock();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "the lock is released as soon as the guard is dropped"]
    pub struct LockGuard<'a> {
        lock: &'a Lock,
        _not_send: NotSend,
    }

    impl Lock {
        /// A new unlocked lock in shared memory.
        pub fn new() -> ipc_core::Result<Lock> {
            Ok(Lock {
                raw: ShmBox::new()?,
            })
        }

        /// Blocks until the lock is acquired.
        #[doc(alias = "lock")]
        pub fn acquire(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
            match self.raw.lock(None) {
                Acquire::OwnerDied => Err(LockError::OwnerDied(LockGuard::new(self))),
                _ => Ok(LockGuard::new(self)),
            }
        }

        /// Acquires the lock if no live process holds it (Python's `acquire(False)`).
        #[doc(alias = "try_lock")]
        pub fn try_acquire(&self) -> Result<LockGuard<'_>, TryLockError<LockGuard<'_>>> {
            // Build a guard only when the lock is ours: dropping a guard releases the lock.
            match self.raw.try_lock() {
                Acquire::Acquired => Ok(LockGuard::new(self)),
                Acquire::OwnerDied => Err(TryLockError::OwnerDied(LockGuard::new(self))),
                Acquire::Failed => Err(TryLockError::WouldBlock),
            }
        }

        /// Blocks until the lock is acquired or `timeout` passes (Python's `acquire(timeout=t)`).
        pub fn acquire_timeout(
            &self,
            timeout: Duration,
        ) -> Result<LockGuard<'_>, LockTimeoutError<LockGuard<'_>>> {
            match self.raw.lock(Some(Instant::now() + timeout)) {
                Acquire::Acquired => Ok(LockGuard::new(self)),
                Acquire::OwnerDied => Err(LockTimeoutError::OwnerDied(LockGuard::new(self))),
                Acquire::Failed => Err(LockTimeoutError::Timeout),
            }
        }

        /// A guard if nobody holds the lock, without taking over from a dead holder (whose
        /// report is left for the next real acquirer): for looking, as `Debug` does.
        pub(crate) fn try_acquire_free(&self) -> Option<LockGuard<'_>> {
            self.raw.try_lock_free().then(|| LockGuard::new(self))
        }

        /// What a look at the value found instead of a guard: `"<owner died>"` or
        /// `"<locked>"`.
        pub(crate) fn busy_label(&self) -> &'static str {
            if self.raw.owner_is_dead() {
                "<owner died>"
            } else {
                "<locked>"
            }
        }

        /// Whether some process holds the lock (Python's `locked()`).
        pub fn locked(&self) -> bool {
            self.raw.is_locked()
        }

        /// The pid of the holding process, if any.
        pub fn owner(&self) -> Option<u32> {
            self.raw.owner()
        }

        /// Releases the lock whoever holds it, as Python's `Lock.release()` may (a lock is not
        /// owned), once its holder gave up its guard with [`LockGuard::leak`]. Refuses an
        /// unlocked lock ([`ReleaseError::NotLocked`]) and a lock held through a live guard
        /// ([`ReleaseError::GuardAlive`]): releasing under a guard would let a second guard be
        /// granted while the first lives.
        pub fn release(&self) -> Result<(), ReleaseError> {
            match self.raw.unlock_releasable() {
                Ok(()) => Ok(()),
                Err(true) => Err(ReleaseError::GuardAlive),
                Err(false) => Err(ReleaseError::NotLocked),
            }
        }

        /// The raw state (for primitives built on this lock). Crate-private: a raw word
        /// handed out would let safe code lock or unlock under a [`Value`](crate::Value)'s
        /// guard.
        pub(crate) fn raw(&self) -> &RawLock {
            &self.raw
        }
    }

    impl<'a> LockGuard<'a> {
        fn new(lock: &'a Lock) -> Self {
            LockGuard {
                lock,
                _not_send: NotSend::default(),
            }
        }

        /// Keeps the lock held after the guard is gone; release it with [`Lock::release`]
        /// (possibly from another thread or process, as Python allows).
        pub fn leak(self) {
            // SAFETY: the guard is forgotten right here, so nothing relies on the lock being
            // held any more.
            #[allow(unsafe_code)]
            unsafe {
                self.lock.raw.mark_releasable()
            };
            std::mem::forget(self);
        }

        /// The lock this guard holds.
        pub fn lock(&self) -> &Lock {
            self.lock
        }
    }

    impl Drop for LockGuard<'_> {
        fn drop(&mut self) {
            self.lock.raw.unlock_held();
        }
    }

    impl fmt::Debug for Lock {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let w = self.raw.word();
            f.debug_struct("Lock")
                .field("owner", &self.raw.owner())
                .field("waiters", &(w & super::WAITERS != 0))
                .field("recovered", &(w & super::OWNER_DIED != 0))
                .finish()
        }
    }

    impl fmt::Debug for LockGuard<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("LockGuard")
                .field("lock", self.lock)
                .finish()
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use ipc_core::shm::ShmBox;

    /// Holds the lock for a few seconds in a child process.
    fn hold(lock: ShmBox<RawLock>) {
        assert_eq!(lock.lock(None), Acquire::Acquired);
        std::thread::sleep(Duration::from_secs(5));
    }

    /// An owner whose pid went to an unrelated live process (which does not map the lock's
    /// memory) is taken for dead by a waiter within about a second.
    #[test]
    fn a_lock_held_under_a_recycled_pid_is_taken_over() {
        let lock = ShmBox::<RawLock>::new().unwrap();
        let mut impostor = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        lock.word.store(impostor.id(), Ordering::Relaxed);
        let got = lock.lock(Some(Instant::now() + Duration::from_secs(30)));
        let _ = impostor.kill();
        let _ = impostor.wait();
        assert_eq!(got, Acquire::OwnerDied);
        // A releasable lock (its guard given up) is left to whoever releases it.
        let mut impostor = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let lock = ShmBox::<RawLock>::new().unwrap();
        lock.word
            .store(impostor.id() | RELEASABLE, Ordering::Relaxed);
        let got = lock.lock(Some(Instant::now() + Duration::from_millis(1500)));
        let _ = impostor.kill();
        let _ = impostor.wait();
        assert_eq!(got, Acquire::Failed);
    }

    /// A live owner that maps the lock's memory keeps the lock past the second check.
    #[test]
    fn a_live_owner_that_maps_the_lock_keeps_it() {
        use ipc_core::process::{Builder, StartMethod};
        let lock = ShmBox::<RawLock>::new().unwrap();
        let h = Builder::new()
            .start_method(StartMethod::Spawn)
            .spawn(lock.clone(), hold)
            .unwrap();
        let t = Instant::now();
        while lock.owner() != Some(h.pid()) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the child never took the lock"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let got = lock.lock(Some(Instant::now() + Duration::from_millis(1500)));
        let _ = h.kill();
        let _ = h.join_timeout(Duration::from_secs(30));
        assert_eq!(got, Acquire::Failed);
    }
}
