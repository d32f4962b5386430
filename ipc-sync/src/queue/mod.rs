//! Queues of typed items in shared memory: `Queue<T>`, `JoinableQueue<T>`, `SimpleQueue<T>`.
//!
//! Items are postcard records in a byte ring (see [`ring`](self::ring) for the layout, the
//! robustness argument and the memory ordering). Items are encoded with
//! [`ipc_core::codec::encode_plain`]: bytes only, so an item that holds a shared object (a lock,
//! a connection, a queue: anything that travels by file descriptor) is refused with a clear
//! error instead of arriving as a number that means nothing to the reader.
//!
//! Close is per handle, as in Python: `close()` says this process (this handle and its clones
//! here) will use the queue no more; its `put` and `get` then fail with `Closed`. Other
//! processes' handles are unaffected. `shutdown(immediate)` is for everybody (Python 3.13's
//! `Queue.shutdown`, proposed for multiprocessing in CPython PR #138828): puts fail, gets drain
//! then fail (or fail at once, discarding the rest), and every blocked caller wakes up, so a
//! pool of consumers can be stopped without sentinel items.

mod joinable;
pub(crate) mod ring;
mod simple;

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use joinable::{JoinableQueue, QueueJoinError, TaskDoneError};
use ring::{Ring, Wait};
pub use simple::SimpleQueue;

/// The default ring size: 1 MiB (records larger than half of it stream through it).
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// Why an item was not put; every variant gives the item back.
#[non_exhaustive]
pub enum PutError<T> {
    /// No room within the time allowed (the maxsize was reached or the ring is full).
    Full(T),
    /// This handle was closed.
    Closed(T),
    /// The queue was shut down (by any process).
    ShutDown(T),
    /// The item could not be encoded (for example it holds a shared object); the queue is
    /// untouched.
    Encode(T, ipc_core::Error),
}

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(t)
            | PutError::Closed(t)
            | PutError::ShutDown(t)
            | PutError::Encode(t, _) => t,
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::ShutDown(_) => f.write_str("ShutDown(..)"),
            PutError::Encode(_, e) => write!(f, "Encode(.., {e:?})"),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str(
                "the queue is full (maxsize reached or no room in its ring); the item is in the error",
            ),
            PutError::Closed(_) => f.write_str("put on a closed queue; the item is in the error"),
            PutError::ShutDown(_) => {
                f.write_str("put on a queue that was shut down; the item is in the error")
            }
            PutError::Encode(_, e) => write!(f, "the item cannot go through a queue: {e}"),
        }
    }
}

impl<T> std::error::Error for PutError<T> {}

/// Why no item was taken.
#[derive(Debug)]
#[non_exhaustive]
pub enum GetError {
    /// Nothing arrived within the time allowed.
    Empty,
    /// This handle was closed.
    Closed,
    /// The queue was shut down and (unless immediately) drained.
    ShutDown,
    /// A record was taken but did not decode as `T` (a peer used another item type).
    Decode(ipc_core::Error),
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Empty => f.write_str("the queue is empty"),
            GetError::Closed => f.write_str("get on a closed queue"),
            GetError::ShutDown => f.write_str("the queue was shut down and holds nothing more"),
            GetError::Decode(e) => write!(f, "a record in the queue is not of this type: {e}"),
        }
    }
}

impl std::error::Error for GetError {}

thread_local! {
    // One encoding buffer per thread, reused: puts allocate nothing in the steady state.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The machinery the three queue types share: a ring, a local closed flag, the item type.
pub(crate) struct Core<T> {
    ring: Ring,
    closed: Arc<AtomicBool>,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Core<T> {
    fn clone(&self) -> Self {
        Core {
            ring: self.ring.clone(),
            closed: self.closed.clone(),
            _items: PhantomData,
        }
    }
}

impl<T> Serialize for Core<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.ring.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Core<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Core {
            ring: Ring::deserialize(d)?,
            closed: Arc::new(AtomicBool::new(false)),
            _items: PhantomData,
        })
    }
}

/// Test support (the `failpoints` feature), for the fuzzer of `cargo xtask chaos`: a queue's
/// shared words and bytes, written and read as a hostile process with the memory could.
#[cfg(feature = "failpoints")]
#[doc(hidden)]
impl<T> Queue<T> {
    pub fn __scribble(&self, head: u64, tail: u64, data: &[u8]) {
        self.core.ring.scribble(head, tail, data);
    }

    pub fn __snapshot(&self) -> (u64, u64, Vec<u8>) {
        self.core.ring.snapshot()
    }
}

impl<T: Serialize + DeserializeOwned> Core<T> {
    pub(crate) fn new(capacity: usize, maxsize: usize) -> ipc_core::Result<Self> {
        let max = u32::try_from(maxsize)
            .ok()
            .filter(|&m| u64::from(m) < ring::REC_MASK)
            .ok_or_else(|| {
                ipc_core::Error::Misuse(format!(
                    "a queue's maxsize is at most {}, {maxsize} requested",
                    ring::REC_MASK - 1
                ))
            })?;
        Ok(Core {
            ring: Ring::new(capacity, max)?,
            closed: Arc::new(AtomicBool::new(false)),
            _items: PhantomData,
        })
    }

    pub(crate) fn put(&self, item: T, wait: Wait) -> Result<(), PutError<T>> {
        if self.is_closed() {
            return Err(PutError::Closed(item));
        }
        // Take the thread's buffer out (not borrow it): an item whose Serialize impl puts into
        // a queue itself then just encodes into a fresh buffer.
        let mut buf = BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        buf.clear();
        let res = match ipc_core::codec::encode_plain(&item, &mut buf) {
            Err(e) => Err(PutError::Encode(item, e)),
            Ok(()) => match self.ring.put(&buf, wait) {
                Ok(()) => Ok(()),
                Err(ring::Stop::TimedOut) => Err(PutError::Full(item)),
                Err(ring::Stop::ShutDown) => Err(PutError::ShutDown(item)),
            },
        };
        // Keep the buffer for the next put, unless one record made it huge.
        if buf.capacity() <= DEFAULT_CAPACITY {
            BUF.with(|b| *b.borrow_mut() = buf);
        }
        res
    }

    pub(crate) fn get(&self, wait: Wait) -> Result<T, GetError> {
        if self.is_closed() {
            return Err(GetError::Closed);
        }
        match self
            .ring
            .get(wait, |bytes| ipc_core::codec::decode_plain::<T>(bytes))
        {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(e)) => Err(GetError::Decode(e)),
            Err(ring::Stop::TimedOut) => Err(GetError::Empty),
            Err(ring::Stop::ShutDown) => Err(GetError::ShutDown),
        }
    }

    /// [`put`](Self::put) waiting at most `timeout`. The deadline is set only if the put has
    /// to wait: reading the clock doubled the cost of a put or get that did not.
    pub(crate) fn put_within(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        match self.put(item, Wait::No) {
            Err(PutError::Full(item)) => self.put(item, Wait::timeout(timeout)),
            done => done,
        }
    }

    /// [`get`](Self::get) waiting at most `timeout`, the deadline set only if it has to wait
    /// (see [`put_within`](Self::put_within)).
    pub(crate) fn get_within(&self, timeout: Duration) -> Result<T, GetError> {
        match self.get(Wait::No) {
            Err(GetError::Empty) => self.get(Wait::timeout(timeout)),
            done => done,
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

/// A multi-producer multi-consumer FIFO queue of `T`s in shared memory (Python's `Queue`).
///
/// Bounded in bytes by its ring (default [`DEFAULT_CAPACITY`]) and optionally in items
/// (`maxsize`). Records larger than half the ring stream through it. Clones and copies sent to
/// other processes are the same queue.
///
/// ```
/// let q = ipc_sync::Queue::<String>::new()?;
/// q.put("hello".to_string()).unwrap();
/// assert_eq!(q.len(), 1);
/// assert_eq!(q.get().unwrap(), "hello");
/// assert!(matches!(q.try_get(), Err(ipc_sync::GetError::Empty)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Queue<T> {
    core: Core<T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            core: self.core.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// An unbounded queue (in items) with the default 1 MiB ring.
    pub fn new() -> ipc_core::Result<Self> {
        Self::with_capacity(DEFAULT_CAPACITY, 0)
    }

    /// A queue holding at most `maxsize` items (Python's `Queue(maxsize)`; 0 = unbounded).
    pub fn with_maxsize(maxsize: usize) -> ipc_core::Result<Self> {
        Self::with_capacity(DEFAULT_CAPACITY, maxsize)
    }

    /// A queue whose ring holds `bytes` (rounded up to a power of two, at least 4 KiB) and at
    /// most `maxsize` items (0 = unbounded).
    pub fn with_capacity(bytes: usize, maxsize: usize) -> ipc_core::Result<Self> {
        Ok(Queue {
            core: Core::new(bytes, maxsize)?,
        })
    }

    /// Puts `item`, blocking while the queue is full.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.core.put(item, Wait::Forever)
    }

    /// Puts `item`, blocking at most `timeout` (Python's `put(x, timeout=t)`).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.core.put_within(item, timeout)
    }

    /// Puts `item` if that needs no waiting (Python's `put_nowait`, `put(x, False)`).
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        self.core.put(item, Wait::No)
    }

    /// Takes the oldest item, blocking until there is one.
    pub fn get(&self) -> Result<T, GetError> {
        self.core.get(Wait::Forever)
    }

    /// Takes the oldest item, blocking at most `timeout` (Python's `get(timeout=t)`).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.core.get_within(timeout)
    }

    /// Takes the oldest item if there is one now (Python's `get_nowait`, `get(False)`).
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T, GetError> {
        self.core.get(Wait::No)
    }

    /// Waits until an item is there (or a streamed one has started), the queue is shut down,
    /// or `timeout` (`None`: no limit) passes, without taking anything: true unless it timed
    /// out. For a consumer that takes with [`try_get`](Self::try_get) under a lock of its own
    /// (to keep several consumers' processing in the queue's order): unlike a blocked `get`,
    /// the waiter holds nothing that keeps others from taking. Another consumer may take the
    /// item first, so look again with `try_get`: a waiter that slept returns as soon as a put
    /// wakes it, even if the item is gone by then (it does not sleep on, to be woken by every
    /// put that the other consumer takes first).
    ///
    /// ```
    /// let q = ipc_sync::Queue::<u32>::new()?;
    /// assert!(!q.wait_ready(Some(std::time::Duration::from_millis(10))));
    /// q.put(7).unwrap();
    /// assert!(q.wait_ready(None));
    /// assert_eq!(q.try_get().unwrap(), 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_ready(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        if timeout.is_some() && deadline.is_none() {
            return self.core.ring.wait_ready(None);
        }
        self.core.ring.wait_ready(deadline)
    }

    /// Items in the queue (complete records; a snapshot; Python's `qsize()`).
    #[doc(alias = "qsize")]
    pub fn len(&self) -> usize {
        self.core.ring.len() as usize
    }

    /// Whether the queue holds no complete item (a snapshot; Python's `empty()`).
    #[doc(alias = "empty")]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `maxsize` items are in the queue (never, if unbounded; Python's `full()`).
    #[doc(alias = "full")]
    pub fn is_full(&self) -> bool {
        self.core.ring.full()
    }

    /// The item bound (0 = unbounded).
    pub fn maxsize(&self) -> usize {
        self.core.ring.maxsize() as usize
    }

    /// The ring's size in bytes.
    pub fn capacity(&self) -> usize {
        self.core.ring.capacity()
    }

    /// Closes this process's handle: its `put` and `get` fail with `Closed` from now on.
    pub fn close(&self) {
        self.core.close();
    }

    /// Shuts the queue down for every process (Python 3.13's `Queue.shutdown`): puts fail with
    /// `ShutDown` at once; gets return what is left, then `ShutDown`; with `immediate`, gets
    /// fail at once and the items left are discarded (on a [`JoinableQueue`], they count as
    /// done, so `join` waits only for the items consumers already took). Blocked callers wake
    /// up.
    pub fn shutdown(&self, immediate: bool) {
        self.core.ring.shutdown(immediate);
    }

    /// Wakes every process blocked in a get or a put on this queue, to look again (Python has
    /// no equivalent). Call it when you learn that a process using the queue died, as a pool's
    /// supervisor does after reaping a worker: a producer killed between committing an item and
    /// waking the consumer would otherwise leave a consumer blocked in an untimed `get` beside
    /// that item until the next put. Harmless at any time (one spurious wake-up).
    pub fn wake_waiters(&self) {
        self.core.ring.wake_everybody();
    }

    /// Whether the queue was shut down (by any process).
    pub fn is_shut_down(&self) -> bool {
        self.core.ring.is_shut_down()
    }

    /// Whether this handle was closed.
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &(self.core.ring.len()))
            .field("maxsize", &self.core.ring.maxsize())
            .field("capacity", &self.core.ring.capacity())
            .finish()
    }
}
