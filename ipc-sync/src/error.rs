//! Per-operation errors, shaped like Python's exceptions, that give back what they hold.
//!
//! Locking can succeed "dirty": the previous holder died while holding the lock, and the lock is
//! now yours, but the state it protects may be half-updated. That outcome carries the guard
//! (`OwnerDied(guard)`), as `EOWNERDEAD` does for pthread robust mutexes, so the caller can
//! repair the state and carry on, or just take the guard with [`LockError::into_guard`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// The error of a blocking acquire (`acquire`, `Condition::wait`).
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum LockError<G> {
    /// The holder died while holding the lock; the lock is now held by the caller through `G`.
    OwnerDied(G),
}

impl<G> LockError<G> {
    /// The guard, which holds the lock: the caller decides whether the protected state is sound.
    pub fn into_guard(self) -> G {
        match self {
            LockError::OwnerDied(g) => g,
        }
    }
}

/// The error of a non-blocking acquire (`try_acquire`).
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum TryLockError<G> {
    /// Held by a live process or thread: acquiring would block.
    WouldBlock,
    /// The holder died while holding the lock; the lock is now held by the caller through `G`.
    OwnerDied(G),
}

impl<G> TryLockError<G> {
    /// The guard if the lock was taken over from a dead owner.
    pub fn into_guard(self) -> Option<G> {
        match self {
            TryLockError::OwnerDied(g) => Some(g),
            TryLockError::WouldBlock => None,
        }
    }
}

/// The error of an acquire with a timeout (`acquire_timeout`, `Condition::wait_timeout` ...).
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum LockTimeoutError<G> {
    /// The timeout passed while another live process or thread held the lock.
    Timeout,
    /// The holder died while holding the lock; the lock is now held by the caller through `G`.
    OwnerDied(G),
}

impl<G> LockTimeoutError<G> {
    /// The guard if the lock was taken over from a dead owner.
    pub fn into_guard(self) -> Option<G> {
        match self {
            LockTimeoutError::OwnerDied(g) => Some(g),
            LockTimeoutError::Timeout => None,
        }
    }
}

const OWNER_DIED: &str = "the previous holder of the lock died while holding it; the lock is \
     now yours (the error holds the guard): check the state it protects, then carry on";

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnerDied(..)")
    }
}
impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(OWNER_DIED)
    }
}
impl<G> std::error::Error for LockError<G> {}

impl<G> fmt::Debug for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::WouldBlock => f.write_str("WouldBlock"),
            TryLockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
        }
    }
}
impl<G> fmt::Display for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::WouldBlock => f.write_str(
                "the lock is held by a live process or thread; acquire it blocking or retry later",
            ),
            TryLockError::OwnerDied(_) => f.write_str(OWNER_DIED),
        }
    }
}
impl<G> std::error::Error for TryLockError<G> {}

impl<G> fmt::Debug for LockTimeoutError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockTimeoutError::Timeout => f.write_str("Timeout"),
            LockTimeoutError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
        }
    }
}
impl<G> fmt::Display for LockTimeoutError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockTimeoutError::Timeout => f.write_str(
                "timed out: the lock stayed held by a live process or thread for the whole timeout",
            ),
            LockTimeoutError::OwnerDied(_) => f.write_str(OWNER_DIED),
        }
    }
}
impl<G> std::error::Error for LockTimeoutError<G> {}

impl<G> From<LockError<G>> for TryLockError<G> {
    fn from(e: LockError<G>) -> Self {
        TryLockError::OwnerDied(e.into_guard())
    }
}
impl<G> From<LockError<G>> for LockTimeoutError<G> {
    fn from(e: LockError<G>) -> Self {
        LockTimeoutError::OwnerDied(e.into_guard())
    }
}

/// Releasing something that was not held: Python's `RuntimeError`/`ValueError` on `release()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The lock was not locked.
    NotLocked,
    /// The `RLock` is held by another thread or process (or by nobody).
    NotOwner,
    /// A `BoundedSemaphore` would exceed its initial value, or a semaphore its maximum.
    Overflow {
        /// The largest value the semaphore may hold.
        max: u32,
    },
    /// `release_n(0)`: a release adds at least one unit (Python raises `ValueError`).
    Zero,
    /// The lock is held through a live guard: drop the guard, or give it up with `leak` first.
    GuardAlive,
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseError::NotLocked => f.write_str("release of an unlocked lock"),
            ReleaseError::NotOwner => f.write_str(
                "release of an RLock by a thread that does not hold it (only the owner may release)",
            ),
            ReleaseError::Overflow { max } => write!(
                f,
                "semaphore released too many times (its value may not exceed {max})"
            ),
            ReleaseError::Zero => f.write_str("release_n(0): n must be one or more"),
            ReleaseError::GuardAlive => f.write_str(
                "release of a lock held through a live guard (drop the guard, or leak() it so \
                 that another party may release)",
            ),
        }
    }
}
impl std::error::Error for ReleaseError {}
