//! `RLock`: a robust re-entrant lock owned by one thread of one process (Python's `RLock`).
//!
//! # Shared-memory layout
//! ```text
//! RawRLock  (#[repr(C)], 16 bytes, align 8, all-zero = unlocked)
//! +------------------+------------------+-----------------------------------+
//! | lock: RawLock    | count: AtomicU32 | owner: AtomicU64                  |
//! | pid + flags      | nesting depth    | thread token: pid << 32 | thread# |
//! +------------------+------------------+-----------------------------------+
//! ```
//! # States and transitions
//! ```text
//! FREE        lock UNLOCKED, count 0, owner 0
//! HELD(t, n)  lock LOCKED/CONTENDED by t's pid, owner t, count n >= 1
//!
//! acquire by t:   owner == t                      -> count += 1    (no atomic RMW at all)
//!                 otherwise: RawLock::lock, then owner = t, count = 1
//! release by t:   owner != t                      -> NotOwner error
//!                 count > 1                       -> count -= 1
//!                 count == 1 -> owner = 0, count = 0, RawLock release
//! owner's process died: RawLock reports OwnerDied; the taker sets owner = t, count = 1
//! ```
//! # Memory ordering
//! `count` and `owner` are only written by the holder, so `Relaxed` suffices; the inner lock's
//! Acquire/Release orders them between holders. The re-entrancy test `owner == me` is sound with
//! a `Relaxed` load for the reason std's `ReentrantLock` gives: a thread's token is written only
//! by that thread (tokens are unique across processes: the pid is in the high half), and it writes
//! 0 before releasing, so reading its own token means it still holds the lock.

use std::time::Instant;

use crate::lock::{Acquire, RawLock};
use crate::primitive::{AtomicU32, AtomicU64, Ordering};

/// A re-entrant lock word set, usable inside any shared mapping (all-zero bytes = unlocked).
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawRLock {
    lock: RawLock,
    count: AtomicU32,
    owner: AtomicU64,
}

impl RawRLock {
    /// An unlocked re-entrant lock (the all-zero state).
    pub fn new() -> Self {
        RawRLock {
            lock: RawLock::new(),
            count: AtomicU32::new(0),
            owner: AtomicU64::new(0),
        }
    }

    fn is_mine(&self) -> bool {
        self.owner.load(Ordering::Relaxed) == crate::ident::thread_token()
    }

    fn enter(&self, a: Acquire) -> Acquire {
        if a != Acquire::Failed {
            self.owner
                .store(crate::ident::thread_token(), Ordering::Relaxed);
            self.count.store(1, Ordering::Relaxed);
        }
        a
    }

    fn nest(&self) -> Acquire {
        let n = self.count.load(Ordering::Relaxed);
        // As std's ReentrantLock: 2^32 - 1 nested holds of one lock is a bug in the caller.
        let n = n
            .checked_add(1)
            .expect("RLock acquired 2^32 times without release");
        self.count.store(n, Ordering::Relaxed);
        Acquire::Acquired
    }

    /// Acquires (or re-enters) the lock, blocking until `deadline` (forever if `None`).
    pub fn lock(&self, deadline: Option<Instant>) -> Acquire {
        if self.is_mine() {
            return self.nest();
        }
        self.enter(self.lock.lock(deadline))
    }

    /// Acquires (or re-enters) the lock if that needs no waiting.
    pub fn try_lock(&self) -> Acquire {
        if self.is_mine() {
            return self.nest();
        }
        self.enter(self.lock.try_lock())
    }

    /// Releases one level; `false` if the calling thread does not hold the lock.
    pub fn unlock(&self) -> bool {
        if !self.is_mine() {
            return false;
        }
        let n = self.count.load(Ordering::Relaxed);
        if n > 1 {
            self.count.store(n - 1, Ordering::Relaxed);
        } else {
            self.owner.store(0, Ordering::Relaxed);
            self.count.store(0, Ordering::Relaxed);
            self.lock.unlock_held();
        }
        true
    }

    /// Releases every level at once (a condition wait); returns the depth to restore, or `None`
    /// if the calling thread does not hold the lock.
    pub fn unlock_all(&self) -> Option<u32> {
        if !self.is_mine() {
            return None;
        }
        let n = self.count.load(Ordering::Relaxed);
        self.owner.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        self.lock.unlock_held();
        Some(n)
    }

    /// Acquires the lock and restores a depth saved by [`unlock_all`](Self::unlock_all).
    pub fn lock_restore(&self, depth: u32, deadline: Option<Instant>) -> Acquire {
        let a = self.enter(self.lock.lock(deadline));
        if a != Acquire::Failed {
            self.count.store(depth.max(1), Ordering::Relaxed);
        }
        a
    }

    /// Whether any thread of any process holds the lock.
    pub fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }

    /// Whether the calling thread holds the lock.
    pub fn is_owned_by_current_thread(&self) -> bool {
        self.is_mine()
    }

    /// The nesting depth (meaningful to the owner; a snapshot for others).
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// The pid of the owning process, if any (a snapshot).
    pub fn owner_pid(&self) -> Option<u32> {
        self.lock.owner()
    }
}

#[cfg(not(loom))]
pub use typed::{RLock, RLockGuard};

#[cfg(not(loom))]
mod typed {
    use std::fmt;
    use std::marker::PhantomData;
    use std::time::{Duration, Instant};

    use ipc_core::shm::ShmBox;
    use serde::{Deserialize, Serialize};

    use super::RawRLock;
    use crate::error::{LockError, LockTimeoutError, ReleaseError, TryLockError};
    use crate::lock::Acquire;

    /// A robust re-entrant lock shared by processes, owned by one thread (Python's `RLock`).
    ///
    /// The owning thread may acquire it again (each guard releases one level); another thread
    /// or process blocks. [`RLock::release`] by a non-owner is an error.
    ///
    /// ```
    /// let r = ipc_sync::RLock::new()?;
    /// let a = r.acquire().unwrap_or_else(ipc_sync::LockError::into_guard);
    /// let b = r.acquire().unwrap_or_else(ipc_sync::LockError::into_guard);
    /// assert_eq!(r.count(), 2);
    /// drop(b);
    /// assert!(r.locked());
    /// drop(a);
    /// assert!(!r.locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[derive(Clone, Serialize, Deserialize)]
    pub struct RLock {
        raw: ShmBox<RawRLock>,
    }

    /// Holds one level of an [`RLock`]; releases it when dropped. Not `Send`: the lock belongs
    /// to the thread that acquired it.
    #[must_use = "the level is released as soon as the guard is dropped"]
    pub struct RLockGuard<'a> {
        lock: &'a RLock,
        _owned_by_this_thread: PhantomData<*const ()>,
    }

    impl<'a> RLockGuard<'a> {
        fn new(lock: &'a RLock) -> Self {
            RLockGuard {
                lock,
                _owned_by_this_thread: PhantomData,
            }
        }

        /// Keeps this level held after the guard is gone; release it with [`RLock::release`]
        /// from this same thread.
        pub fn leak(self) {
            std::mem::forget(self);
        }
    }

    impl RLock {
        /// A new unlocked re-entrant lock in shared memory.
        pub fn new() -> ipc_core::Result<RLock> {
            Ok(RLock {
                raw: ShmBox::new()?,
            })
        }

        /// Blocks until the calling thread holds the lock (at once if it already does).
        #[doc(alias = "lock")]
        pub fn acquire(&self) -> Result<RLockGuard<'_>, LockError<RLockGuard<'_>>> {
            match self.raw.lock(None) {
                Acquire::OwnerDied => Err(LockError::OwnerDied(RLockGuard::new(self))),
                _ => Ok(RLockGuard::new(self)),
            }
        }

        /// Acquires without waiting, if free, already ours, or held by a dead process.
        #[doc(alias = "try_lock")]
        pub fn try_acquire(&self) -> Result<RLockGuard<'_>, TryLockError<RLockGuard<'_>>> {
            match self.raw.try_lock() {
                Acquire::Acquired => Ok(RLockGuard::new(self)),
                Acquire::OwnerDied => Err(TryLockError::OwnerDied(RLockGuard::new(self))),
                Acquire::Failed => Err(TryLockError::WouldBlock),
            }
        }

        /// Blocks until acquired or `timeout` passes.
        pub fn acquire_timeout(
            &self,
            timeout: Duration,
        ) -> Result<RLockGuard<'_>, LockTimeoutError<RLockGuard<'_>>> {
            match self.raw.lock(Some(Instant::now() + timeout)) {
                Acquire::Acquired => Ok(RLockGuard::new(self)),
                Acquire::OwnerDied => Err(LockTimeoutError::OwnerDied(RLockGuard::new(self))),
                Acquire::Failed => Err(LockTimeoutError::Timeout),
            }
        }

        /// Releases one level held by the calling thread (pair with [`RLockGuard::leak`]);
        /// [`ReleaseError::NotOwner`] if this thread does not hold it.
        pub fn release(&self) -> Result<(), ReleaseError> {
            if self.raw.unlock() {
                Ok(())
            } else {
                Err(ReleaseError::NotOwner)
            }
        }

        /// Whether any thread of any process holds the lock.
        pub fn locked(&self) -> bool {
            self.raw.is_locked()
        }

        /// Whether the calling thread holds the lock.
        pub fn is_owned(&self) -> bool {
            self.raw.is_owned_by_current_thread()
        }

        /// The nesting depth (exact for the owner, a snapshot for others).
        pub fn count(&self) -> u32 {
            self.raw.count()
        }

        /// The pid of the owning process, if any.
        pub fn owner(&self) -> Option<u32> {
            self.raw.owner_pid()
        }

        pub(crate) fn raw(&self) -> &RawRLock {
            &self.raw
        }
    }

    impl Drop for RLockGuard<'_> {
        fn drop(&mut self) {
            self.lock.raw.unlock();
        }
    }

    impl fmt::Debug for RLock {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RLock")
                .field("owner", &self.owner())
                .field("count", &self.count())
                .finish()
        }
    }

    impl fmt::Debug for RLockGuard<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RLockGuard")
                .field("lock", self.lock)
                .finish()
        }
    }
}
