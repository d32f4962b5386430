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
