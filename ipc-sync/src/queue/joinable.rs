//! `JoinableQueue<T>`: a [`Queue`](crate::Queue) whose consumers mark items done, so a producer
//! can wait until all were processed (Python's `JoinableQueue`).
//!
//! The count of unfinished items is `records put - task_done calls`: the records-put counter is
//! the high bits of the ring's `tail` word, published in the same store as the record itself,
//! so a producer killed mid-put can never leave the count one too high; `task_done` bumps
//! `done` (a futex word that `join` sleeps on) with a CAS that refuses to pass the puts.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ring::{Stop, Wait};
use super::{DEFAULT_CAPACITY, Queue};

/// An extra `task_done` (Python's `ValueError: task_done() called too many times`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskDoneError;

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task_done() called more times than items were put")
    }
}
impl std::error::Error for TaskDoneError {}

/// A queue with `task_done` and `join` (Python's `JoinableQueue`): a [`Queue`] (every queue
/// method, through `Deref`) whose consumers mark items done.
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
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
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
            queue: Queue::with_capacity(bytes, maxsize)?,
        })
    }
}

impl<T> JoinableQueue<T> {
    /// Marks one item taken by `get` as processed.
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        if self.ring().task_done() {
            Ok(())
        } else {
            Err(TaskDoneError)
        }
    }

    /// Blocks until every item put was marked done.
    pub fn join(&self) {
        let _ = self.ring().join(Wait::Forever);
    }

    /// Blocks until every item put was marked done or `timeout` passes; whether they were.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.ring().join(Wait::timeout(timeout)) != Err(Stop::TimedOut)
    }

    /// Items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        self.ring().unfinished() as usize
    }

    fn ring(&self) -> &super::ring::Ring {
        &self.queue.core.ring
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("len", &self.ring().len())
            .field("unfinished", &self.ring().unfinished())
            .finish()
    }
}
