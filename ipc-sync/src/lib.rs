//! ipc-sync: synchronization primitives, shared values and queues living in shared memory.
//!
//! Layer 1 of multiprocessing for Rust: depends only on ipc-core. Every object here keeps its
//! state in ipc-core's shared heap (100 000 locks do not cost 100 000 file descriptors), is
//! `Clone` (a clone is the same object), and travels to a child process as an argument under
//! every start method, or through a `Connection`; putting one into a [`Queue`] is a clear error.
//!
//! # Map
//! Locks (robust: a holder that dies is reported to the next acquirer as
//! [`LockError::OwnerDied`], which still grants the lock):
//! - [`Lock`]: mutual exclusion; any process may release it, as in Python.
//! - [`RLock`]: re-entrant, owned by one thread of one process.
//!
//! Signals and counters:
//! - [`Semaphore`], [`BoundedSemaphore`]: counting semaphores (the bounded one refuses extra
//!   releases).
//! - [`Event`]: a flag processes wait for.
//! - [`Condition`]: wait/notify over a [`Lock`] or an [`RLock`], with `wait_for`.
//! - [`Barrier`]: parties meet, with an action, timeouts, `abort` and `reset`.
//!
//! Shared data:
//! - [`Value`], [`Array`]: plain-old-data behind a lock ([`ipc_core::shm::ShmSafe`] types).
//! - [`AtomicValue`]: an integer with lock-free `fetch_add` and friends.
//!
//! Queues (postcard records in a shared ring, robust to a SIGKILLed producer or consumer):
//! - [`Queue`], [`JoinableQueue`] (`task_done`, `join`), [`SimpleQueue`].
//!
//! Every blocking call has a `*_timeout` variant; guards release on drop; errors give back what
//! they hold ([`PutError`], [`LockError`]). [`raw`] holds the `#[repr(C)]` state machines
//! themselves (atomics only, all-zero bytes = the initial state), for use in any mapping.
//!
//! ```
//! use ipc_core::process;
//! use ipc_sync::{Lock, Queue, Value};
//!
//! fn work((lock, total, results): (Lock, Value<u64>, Queue<String>)) {
//!     let _g = lock.acquire().unwrap();
//!     total.update(|t| *t += 1);
//!     results.put(format!("done by {}", std::process::id())).unwrap();
//! }
//!
//! let (lock, total, results) = (Lock::new()?, Value::new(0u64)?, Queue::new()?);
//! let child = process::spawn((lock.clone(), total.clone(), results.clone()), work)?;
//! child.join()?;
//! assert_eq!(total.get(), 1);
//! assert!(results.get()?.starts_with("done by"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Waiting
//! A blocked waiter sleeps on a shared futex and uses no CPU; before sleeping it spins for
//! about 5 us (200 `pause`s), which turns a 25-37 us cross-vCPU wake-up into a sub-microsecond
//! hand-off; the spin is skipped when only one CPU is available and when somebody already
//! sleeps (see the README's "Spin tuning").
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "ipc-sync supports Linux only: it is built on shared futexes and pidfds (through ipc-core)"
);

#[cfg(not(loom))]
mod array;
mod barrier;
mod condition;
pub mod error;
mod event;
mod ident;
mod liveness;
mod lock;
mod primitive;
#[cfg(not(loom))]
mod queue;
mod rlock;
#[cfg(not(loom))]
mod roster;
mod semaphore;
#[cfg(not(loom))]
mod shm_safe;
mod spin;
#[cfg(not(loom))]
mod value;

#[cfg(not(loom))]
pub use array::{Array, ArrayGuard};
#[cfg(not(loom))]
pub use barrier::{Barrier, BarrierError};
#[cfg(not(loom))]
pub use condition::{Condition, ConditionGuard};
#[cfg(not(loom))]
pub use event::Event;
#[cfg(not(loom))]
pub use lock::{Lock, LockGuard};
#[cfg(not(loom))]
pub use queue::{
    DEFAULT_CAPACITY, GetError, JoinableQueue, PutError, Queue, QueueJoinError, SimpleQueue,
    TaskDoneError,
};
#[cfg(not(loom))]
pub use rlock::{RLock, RLockGuard};
#[cfg(not(loom))]
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};
#[cfg(not(loom))]
pub use value::{AtomicInt, AtomicValue, Value, ValueGuard};

pub use error::{LockError, LockTimeoutError, ReleaseError, TryLockError};

/// Makes a guard `!Send` (and keeps it `Sync`), as std's `MutexGuard`: a guard moved into a
/// forked child or another thread would be released twice, once by each copy's owner, and the
/// second release would free the lock under a live `&mut T`.
#[cfg(not(loom))]
type NotSend = std::marker::PhantomData<std::sync::MutexGuard<'static, ()>>;
pub use spin::set_spin_limit;

/// The raw `#[repr(C)]` states, for use inside any shared mapping.
pub mod raw {
    pub use crate::barrier::{Passage, RawBarrier};
    pub use crate::condition::{RawCondition, Wakeup};
    pub use crate::event::RawEvent;
    pub use crate::lock::{Acquire, OWNER_DIED, PID_MASK, RELEASABLE, RawLock, WAITERS};
    pub use crate::rlock::RawRLock;
    pub use crate::semaphore::{RawSemaphore, VALUE_MASK};
}
