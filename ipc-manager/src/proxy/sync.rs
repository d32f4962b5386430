//! Server-held synchronization: `Lock`, `RLock`, `Semaphore` (and bounded), `Event`,
//! `Condition`, `Barrier`.
//!
//! ```text
//! Lock/RLock  held by a process (a Lock: any of its threads may release it; an RLock: the
//!             thread that took it, recursively). A process that dies holding one has it
//!             released by the server, and the next acquirer gets Error::OwnerDied *holding
//!             the lock*, as a robust mutex's EOWNERDEAD.
//! Condition   a wait lets go of the condition's lock and takes it back before returning;
//!             notify and wait need the lock held (else Error::NotHeld)
//! Barrier     a party that times out or whose process dies breaks it: Error::Broken for all
//! ```
//! These objects live in the server; for locks between processes of one host without a
//! server, ipc-sync's shared-memory primitives are much faster.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use super::{Shared, count, counts, flag, millis, proxy_traits, unit};
use crate::error::Result;
use crate::wire::{Op, Out};

/// This thread's owner number (an RLock is held by a thread of a process).
fn owner() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ME: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ME.with(|m| *m)
}

/// Acquires: `Ok(true)` taken, `Ok(false)` timed out.
fn acquire(h: &Shared, timeout_ms: Option<u64>) -> Result<bool> {
    match h.call(Op::Acquire {
        timeout_ms,
        owner: owner(),
    })? {
        Out::Flag(b) => Ok(b),
        Out::Unit => Ok(true), // a recursive RLock acquire
        other => Err(crate::client::unexpected(&other)),
    }
}

fn release(h: &Shared) -> Result<()> {
    unit(h, Op::ReleaseLock { owner: owner() })
}

/// `acquire`, `try_acquire`, `acquire_timeout` and `release`: of [`Lock`], [`RLock`],
/// [`Condition`] (its lock) and [`Semaphore`] (one unit).
macro_rules! acquire_methods {
    ($name:ident) => {
        impl $name {
            /// Takes it, waiting as long as it takes. For a lock, [`Error::OwnerDied`](crate::Error::OwnerDied): taken,
            /// but its previous holder died holding it.
            pub fn acquire(&self) -> Result<()> {
                acquire(&self.h, None).map(drop)
            }

            /// Takes it if it is free; whether it was taken.
            pub fn try_acquire(&self) -> Result<bool> {
                acquire(&self.h, Some(0))
            }

            /// Takes it, waiting at most `timeout`; whether it was taken.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
                acquire(&self.h, millis(timeout))
            }

            /// Gives it back: [`Error::NotHeld`](crate::Error::NotHeld) for a lock this process (for an RLock: this
            /// thread) does not hold, or a bounded semaphore past its initial value.
            pub fn release(&self) -> Result<()> {
                release(&self.h)
            }
        }
    };
}

/// The guard and the snapshot of [`Lock`], [`RLock`] and [`Condition`] (its lock).
macro_rules! lock_methods {
    ($name:ident) => {
        acquire_methods!($name);

        impl $name {
            /// Takes the lock and returns a guard that releases it when dropped.
            #[doc(alias = "__enter__")]
            pub fn lock(&self) -> Result<LockGuard<'_>> {
                acquire(&self.h, None)?;
                Ok(LockGuard { h: &self.h })
            }

            /// Whether someone holds the lock (a snapshot, for diagnostics).
            pub fn is_locked(&self) -> Result<bool> {
                Ok(counts(&self.h)?[0] == 1)
            }
        }
    };
}

/// A guard from `lock()`: the lock is released when it is dropped (an error while releasing,
/// the server being gone, is ignored then; call [`release`](LockGuard::release) to see it).
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    h: &'a Shared,
}

impl LockGuard<'_> {
    /// Releases the lock now, reporting an error.
    pub fn release(self) -> Result<()> {
        let h = self.h;
        std::mem::forget(self);
        release(h)
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = release(self.h);
    }
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("lock", &self.h.handle.obj)
            .finish()
    }
}

/// A lock held by the manager's server (Python's `manager.Lock()`).
///
/// ```
/// let m = ipc_manager::Manager::start()?;
/// let lock = m.lock()?;
/// {
///     let _held = lock.lock()?;
///     assert!(!lock.try_acquire()?); // not reentrant
/// }
/// assert!(lock.release().is_err()); // not held: Error::NotHeld
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Lock {
    pub(crate) h: Shared,
    pub(crate) _t: PhantomData<()>,
}
proxy_traits!(Lock, ["Lock"]);
lock_methods!(Lock);

/// A reentrant lock held by the manager's server (Python's `manager.RLock()`): the thread
/// that holds it may take it again, and must release it as many times.
pub struct RLock {
    pub(crate) h: Shared,
    pub(crate) _t: PhantomData<()>,
}
proxy_traits!(RLock, ["RLock"]);
lock_methods!(RLock);

/// A counting semaphore held by the manager's server (Python's `manager.Semaphore()` and
/// `manager.BoundedSemaphore()`).
///
/// ```
/// let m = ipc_manager::Manager::start()?;
/// let s = m.bounded_semaphore(1)?;
/// s.acquire()?;
/// assert!(!s.try_acquire()?);
/// s.release()?;
/// assert!(s.release().is_err()); // bounded: not above its initial value
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "BoundedSemaphore")]
pub struct Semaphore {
    pub(crate) h: Shared,
    pub(crate) _t: PhantomData<()>,
}
proxy_traits!(Semaphore, ["Semaphore", "BoundedSemaphore"]);

acquire_methods!(Semaphore);

impl Semaphore {
    /// The units available now.
    pub fn value(&self) -> Result<u64> {
        Ok(counts(&self.h)?[0])
    }
}

/// An event flag held by the manager's server (Python's `manager.Event()`).
///
/// ```
/// let m = ipc_manager::Manager::start()?;
/// let e = m.event()?;
/// assert!(!e.wait_timeout(std::time::Duration::from_millis(1))?);
/// e.set()?;
/// e.wait()?;
/// assert!(e.is_set()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Event {
    pub(crate) h: Shared,
    pub(crate) _t: PhantomData<()>,
}
proxy_traits!(Event, ["Event"]);

impl Event {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<()> {
        unit(&self.h, Op::SetFlag)
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<()> {
        unit(&self.h, Op::ClearFlag)
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool> {
        flag(&self.h, Op::IsSet)
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<()> {
        flag(
            &self.h,
            Op::Wait {
                timeout_ms: None,
                owner: 0,
            },
        )
        .map(drop)
    }

    /// Waits at most `timeout` for the flag; whether it is set.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        flag(
            &self.h,
            Op::Wait {
                timeout_ms: millis(timeout),
                owner: 0,
            },
        )
    }
}

/// A condition variable held by the manager's server, with its lock (Python's
/// `manager.Condition()`); made with its own RLock or around a given [`Lock`] or [`RLock`].
///
/// ```
/// use std::time::Duration;
/// let m = ipc_manager::Manager::start()?;
/// let c = m.condition()?;
/// let _held = c.lock()?;
/// assert!(!c.wait_timeout(Duration::from_millis(5))?); // nobody notified
/// c.notify_all()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Condition {
    pub(crate) h: Shared,
    pub(crate) _t: PhantomData<()>,
}
proxy_traits!(Condition, ["Condition"]);
lock_methods!(Condition);

impl Condition {
    /// Lets go of the lock, waits for a notify, takes the lock back.
    pub fn wait(&self) -> Result<()> {
        self.wait_ms(None).map(drop)
    }

    /// [`wait`](Self::wait) for at most `timeout`; whether it was notified (the lock is held
    /// again either way).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_ms(millis(timeout))
    }

    fn wait_ms(&self, timeout_ms: Option<u64>) -> Result<bool> {
        flag(
            &self.h,
            Op::Wait {
                timeout_ms,
                owner: owner(),
            },
        )
    }

    /// Waits until `predicate` holds (checked with the lock held, before each wait), at most
    /// `timeout` (`None`: no limit); the predicate's last value.
    pub fn wait_for(
        &self,
        mut predicate: impl FnMut() -> Result<bool>,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if predicate()? {
                return Ok(true);
            }
            match deadline {
                None => self.wait()?,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return predicate();
                    }
                    self.wait_timeout(left)?;
                }
            }
        }
    }

    /// Wakes one waiter.
    pub fn notify(&self) -> Result<()> {
        self.notify_n(1)
    }

    /// Wakes up to `n` waiters.
    pub fn notify_n(&self, n: u64) -> Result<()> {
        unit(&self.h, Op::Notify { n, owner: owner() })
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) -> Result<()> {
        self.notify_n(u64::MAX)
    }
}

/// A barrier held by the manager's server (Python's `manager.Barrier()`).
///
/// ```
/// let m = ipc_manager::Manager::start()?;
/// let b = m.barrier(1)?;
/// assert_eq!(b.wait()?, 0); // one party: passes at once
/// assert_eq!(b.parties()?, 1);
/// b.abort()?;
/// assert!(b.wait().is_err()); // Error::Broken
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Barrier {
    pub(crate) h: Shared,
    pub(crate) _t: PhantomData<()>,
}
proxy_traits!(Barrier, ["Barrier"]);

impl Barrier {
    /// Waits until every party arrived; returns this party's arrival index (0 first).
    pub fn wait(&self) -> Result<u64> {
        count(
            &self.h,
            Op::Wait {
                timeout_ms: None,
                owner: 0,
            },
        )
    }

    /// [`wait`](Self::wait) for at most `timeout`; a timeout breaks the barrier
    /// ([`Error::Broken`](crate::Error::Broken) here and for every party).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u64> {
        count(
            &self.h,
            Op::Wait {
                timeout_ms: millis(timeout),
                owner: 0,
            },
        )
    }

    /// Breaks the barrier: waiting and later parties get [`Error::Broken`](crate::Error::Broken).
    pub fn abort(&self) -> Result<()> {
        unit(&self.h, Op::Abort)
    }

    /// Returns the barrier to its initial state; parties waiting get [`Error::Broken`](crate::Error::Broken).
    pub fn reset(&self) -> Result<()> {
        unit(&self.h, Op::Reset)
    }

    /// The number of parties.
    pub fn parties(&self) -> Result<u64> {
        Ok(counts(&self.h)?[0])
    }

    /// The parties waiting now.
    pub fn n_waiting(&self) -> Result<u64> {
        Ok(counts(&self.h)?[1])
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> Result<bool> {
        Ok(counts(&self.h)?[2] == 1)
    }
}
