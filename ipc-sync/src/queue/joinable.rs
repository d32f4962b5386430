//! `JoinableQueue<T>`: a [`Queue`](crate::Queue) whose consumers mark items done, so a producer
//! can wait until all were processed (Python's `JoinableQueue`).
//!
//! The count of unfinished items is `records put - task_done calls`: the records-put counter is
//! the high bits of the ring's `tail` word, published in the same store as the record itself,
//! so a producer killed mid-put can never leave the count one too high; `task_done` bumps
//! `done` (a futex word that `join` sleeps on) with a CAS that refuses to pass the puts.
//!
//! A consumer that dies owing `task_done` would make Python's `join` wait forever. Here each
//! get is counted against its process in a [roster](crate::roster), and `join` ends with
//! [`QueueJoinError::Abandoned`] (naming the items and the dead processes, and writing those
//! items off) once everything still unfinished is owed by processes that died:
//! ```text
//! get by P      hold in P's slot BEFORE taking the record; release if no record was taken
//! task_done     drop_any (Python lets any process mark an item done, so work handed on is
//!               still paid off)
//! join          while items are unfinished: if the queue is empty and processes that died owe
//!               at least as many items as are unfinished, nothing left can ever be marked done:
//!               write the unfinished items off (done += n), forget those slots, report them
//! ```
//! The count before the take is what makes a death anywhere in `get` safe: killed after it,
//! the dead process owes an item it may not have taken, but that item is still in the queue
//! (so `join` waits: the queue is not empty), and once another consumer takes and marks it, the
//! dead process's phantom debt can only make a later write-off cover items that are indeed lost
//! (the write-off is the unfinished count, never more). Items taken through the plain `Queue`
//! view of a `JoinableQueue` are not counted.

use std::fmt;
use std::ops::Deref;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ring::Wait;
use ipc_core::shm::ShmBox;

use super::{DEFAULT_CAPACITY, GetError, Queue};
use crate::lock::SLICE;
use crate::roster::Roster;

/// An extra `task_done` (Python's `ValueError: task_done() called too many times`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskDoneError;

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task_done() called more times than items were put")
    }
}
impl std::error::Error for TaskDoneError {}

/// Why [`JoinableQueue::join`] returned without every item marked done.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueJoinError {
    /// The timeout passed first.
    TimedOut,
    /// Everything still unfinished was taken by processes that died before marking it done,
    /// so it never will be. These items were written off (a later `join` does not wait for
    /// them); the work they stood for was lost with its consumer.
    Abandoned {
        /// How many items were written off.
        tasks: u64,
        /// The dead processes that owed them.
        pids: Vec<u32>,
    },
}

impl fmt::Display for QueueJoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueJoinError::TimedOut => f.write_str("timed out waiting for task_done calls"),
            QueueJoinError::Abandoned { tasks, pids } => write!(
                f,
                "{tasks} item(s) will never be marked done: the processes that took them died \
                 (pids {pids:?}); they were written off"
            ),
        }
    }
}

impl std::error::Error for QueueJoinError {}

/// A queue with `task_done` and `join` (Python's `JoinableQueue`): a [`Queue`] (every queue
/// method, through `Deref`) whose consumers mark items done.
///
/// Take items with this type's own `get`, `get_timeout` and `try_get` (they shadow the
/// [`Queue`] ones and count each item against the taking process, which is how `join` learns
/// that a consumer died owing work).
///
/// ```
/// let q = ipc_sync::JoinableQueue::<u32>::new()?;
/// q.put(7).unwrap();
/// assert_eq!(q.get().unwrap(), 7);
/// q.task_done().unwrap();
/// q.join()?;
/// assert!(q.task_done().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct JoinableQueue<T> {
    queue: Queue<T>,
    owed: ShmBox<Roster>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
            owed: self.owed.clone(),
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
            owed: ShmBox::new()?,
        })
    }

    /// Takes the oldest item, blocking until there is one; this process owes its `task_done`.
    pub fn get(&self) -> Result<T, GetError> {
        self.owing(|q| q.get())
    }

    /// Takes the oldest item, blocking at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.owing(|q| q.get_timeout(timeout))
    }

    /// Takes the oldest item if there is one now (Python's `get_nowait`).
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T, GetError> {
        self.owing(|q| q.try_get())
    }

    /// Runs a get with the item counted against this process first (see the module doc).
    fn owing(&self, get: impl FnOnce(&Queue<T>) -> Result<T, GetError>) -> Result<T, GetError> {
        let slot = self.owed.claim();
        if let Some(s) = slot {
            s.hold();
        }
        let got = get(&self.queue);
        if got.is_err()
            && let Some(s) = slot
        {
            s.release();
        }
        got
    }
}

impl<T> JoinableQueue<T> {
    /// Marks one item taken by `get` as processed (by any process, as in Python).
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        ipc_core::failpoint::hit("queue.task_done.before");
        if self.ring().task_done() {
            self.owed.drop_any();
            Ok(())
        } else {
            Err(TaskDoneError)
        }
    }

    /// Blocks until every item put was marked done, or until what is left can never be
    /// ([`QueueJoinError::Abandoned`]: its consumers died).
    pub fn join(&self) -> Result<(), QueueJoinError> {
        self.join_until(None)
    }

    /// [`join`](Self::join), waiting at most `timeout` ([`QueueJoinError::TimedOut`]).
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), QueueJoinError> {
        self.join_until(Some(Instant::now() + timeout))
    }

    fn join_until(&self, deadline: Option<Instant>) -> Result<(), QueueJoinError> {
        loop {
            // Sleep in slices: a consumer's death wakes nobody, so look at the roster between.
            let slice_end = Instant::now() + SLICE;
            let until = deadline.map_or(slice_end, |d| d.min(slice_end));
            if self.ring().join(Wait::Until(until)).is_ok() {
                return Ok(());
            }
            if let Some((tasks, pids)) = self.abandoned() {
                return Err(QueueJoinError::Abandoned { tasks, pids });
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(QueueJoinError::TimedOut);
            }
        }
    }

    /// If nothing is left to take and the dead owe at least all that is unfinished, writes the
    /// unfinished items off and returns them with the dead owers.
    fn abandoned(&self) -> Option<(u64, Vec<u32>)> {
        let unfinished = self.ring().unfinished();
        if unfinished == 0 || self.ring().len() != 0 {
            return None;
        }
        let (owed, pids) = self.owed.held_by_the_dead();
        if owed < unfinished {
            return None;
        }
        let mut written_off = 0;
        while written_off < unfinished && self.ring().task_done() {
            written_off += 1;
        }
        self.owed.forget(&pids);
        Some((written_off, pids))
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
