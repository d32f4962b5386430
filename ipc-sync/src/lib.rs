//! ipc-sync: synchronization primitives, shared values and queues living in shared memory.
//!
//! Layer 1: depends only on ipc-core.
//!
//! # Raw states
//! [`raw`] holds the `#[repr(C)]` state machines (atomics only, all-zero bytes = the valid
//! initial state), each usable inside any shared mapping; the typed wrappers own their state in
//! ipc-core's shared heap and hand out guards.
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

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
    DEFAULT_CAPACITY, GetError, JoinableQueue, PutError, Queue, SimpleQueue, TaskDoneError,
};
#[cfg(not(loom))]
pub use rlock::{RLock, RLockGuard};
#[cfg(not(loom))]
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};
#[cfg(not(loom))]
pub use value::{AtomicInt, AtomicValue, Value, ValueGuard};

pub use error::{LockError, LockTimeoutError, ReleaseError, TryLockError};
pub use spin::set_spin_limit;

/// The raw `#[repr(C)]` states, for use inside any shared mapping.
pub mod raw {
    pub use crate::barrier::{Passage, RawBarrier};
    pub use crate::condition::{RawCondition, Wakeup};
    pub use crate::event::RawEvent;
    pub use crate::lock::{Acquire, OWNER_DIED, PID_MASK, RawLock, WAITERS};
    pub use crate::rlock::RawRLock;
    pub use crate::semaphore::{RawSemaphore, VALUE_MASK};
}
