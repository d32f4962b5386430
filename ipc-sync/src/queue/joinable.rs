//! `JoinableQueue<T>`: a [`Queue`](crate::Queue) whose consumers mark items done, so a producer
//! can wait until all were processed (Python's `JoinableQueue`).
//!
//! The count of unfinished items is `records put - task_done calls`: the records-put counter is
//! the high bits of the ring's `tail` word, published in the same store as the record itself,
//! so a producer killed mid-put can never leave the count one too high; `task_done` bumps
//! `done` (a futex word that `join` sleeps on) with a CAS that refuses to pass the puts.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ring::{Stop, Wait};
use super::{Core, DEFAULT_CAPACITY, GetError, PutError};

/// An extra `task_done` (Python's `ValueError: task_done() called too many times`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskDoneError;

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task_done() called more times than items were put")
    }
}
impl std::error::Error for TaskDoneError {}

/// A queue with `task_done` and `join` (Python's `JoinableQueue`).
///
/// ```
/// let q = ipc_sync::JoinableQueue::<u32>::new()?;
/// q.put(7).unwrap();
/// assert_eq!(q.get().unwrap(), 7);
/// q.task_done().unwrap();
/// q.join();
/// assert!(q.task_done().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct JoinableQueue<T> {
    core: Core<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            core: self.core.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// An unbounded queue with the default 1 MiB ring.
    pub fn new() -> ipc_core::Result<Self> {
        Self::with_capacity(DEFAULT_CAPACITY, 0)
    }

    /// A queue of at most `maxsize` items (0 = unbounded).
    pub fn with_maxsize(maxsize: usize) -> ipc_core::Result<Self> {
        Self::with_capacity(DEFAULT_CAPACITY, maxsize)
    }

    /// A queue with a ring of `bytes` and at most `maxsize` items (0 = unbounded).
    pub fn with_capacity(bytes: usize, maxsize: usize) -> ipc_core::Result<Self> {
        Ok(JoinableQueue {
            core: Core::new(bytes, maxsize)?,
        })
    }

    /// Puts `item`, blocking while the queue is full.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.core.put(item, Wait::Forever)
    }

    /// Puts `item`, blocking at most `timeout`.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.core.put(item, Wait::timeout(timeout))
    }

    /// Puts `item` if that needs no waiting.
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.core.put(item, Wait::No)
    }

    /// Takes the oldest item, blocking until there is one.
    pub fn get(&self) -> Result<T, GetError> {
        self.core.get(Wait::Forever)
    }

    /// Takes the oldest item, blocking at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.core.get(Wait::timeout(timeout))
    }

    /// Takes the oldest item if there is one now.
    pub fn get_nowait(&self) -> Result<T, GetError> {
        self.core.get(Wait::No)
    }

    /// Marks one item taken by `get` as processed.
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        if self.core.ring.task_done() {
            Ok(())
        } else {
            Err(TaskDoneError)
        }
    }

    /// Blocks until every item put was marked done.
    pub fn join(&self) {
        let _ = self.core.ring.join(Wait::Forever);
    }

    /// Blocks until every item put was marked done or `timeout` passes; whether they were.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.core.ring.join(Wait::timeout(timeout)) != Err(Stop::TimedOut)
    }

    /// Items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        self.core.ring.unfinished() as usize
    }

    /// Items in the queue (a snapshot).
    pub fn qsize(&self) -> usize {
        self.core.ring.len() as usize
    }

    /// Whether the queue holds no complete item.
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether `maxsize` items are in the queue.
    pub fn full(&self) -> bool {
        self.core.ring.full()
    }

    /// Closes this process's handle: its `put` and `get` fail with `Closed` from now on.
    pub fn close(&self) {
        self.core.close();
    }

    /// Shuts the queue down for every process (see [`Queue::shutdown`](crate::Queue::shutdown));
    /// with `immediate`, the discarded items count as done, so `join` waits only for the items
    /// consumers already took.
    pub fn shutdown(&self, immediate: bool) {
        self.core.ring.shutdown(immediate);
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("qsize", &self.core.ring.len())
            .field("unfinished", &self.core.ring.unfinished())
            .finish()
    }
}
