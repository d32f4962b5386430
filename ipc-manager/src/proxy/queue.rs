//! `Queue` and `JoinableQueue` proxies: FIFO queues held by the server.
//!
//! ```text
//! put      waits while the queue is full (maxsize > 0)      try_put: Error::Full at once
//! get      waits while it is empty                          try_get: Ok(None) at once
//! joinable put +1 unfinished, task_done -1, join waits for 0
//! ```
//! A consumer killed after the server handed it an item has that item (the queue is
//! at-most-once for a consumer that dies), as with any queue.

use std::marker::PhantomData;
use std::ops::Deref;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Shared, blob, count, flag, millis, or_none, proxy_traits, unit};
use crate::error::Result;
use crate::wire::Op;

/// A FIFO queue held by the manager's server (Python's `manager.Queue()`).
///
/// ```
/// let m = ipc_manager::Manager::start()?;
/// let q = m.queue::<String>(0)?; // 0: unbounded
/// q.put("job".into())?;
/// assert_eq!(q.get()?, "job");
/// assert_eq!(q.try_get()?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue<T> {
    pub(crate) h: Shared,
    pub(crate) _t: PhantomData<fn() -> T>,
}

proxy_traits!(Queue<T>, ["Queue", "JoinableQueue"]);

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Appends `item`, waiting while the queue is full.
    pub fn put(&self, item: T) -> Result<()> {
        unit(
            &self.h,
            Op::Put {
                item: self.h.store(&item)?,
                timeout_ms: None,
            },
        )
    }

    /// [`put`](Self::put), giving up with [`Error::Timeout`](crate::Error::Timeout) after
    /// `timeout`.
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<()> {
        unit(
            &self.h,
            Op::Put {
                item: self.h.store(&item)?,
                timeout_ms: millis(timeout),
            },
        )
    }

    /// Appends `item` if there is room, else [`Error::Full`](crate::Error::Full).
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: T) -> Result<()> {
        unit(
            &self.h,
            Op::Put {
                item: self.h.store(&item)?,
                timeout_ms: Some(0),
            },
        )
    }

    /// Takes the oldest item, waiting while the queue is empty.
    pub fn get(&self) -> Result<T> {
        blob(&self.h, Op::Take { timeout_ms: None })
    }

    /// [`get`](Self::get), giving up with [`Error::Timeout`](crate::Error::Timeout) after
    /// `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        blob(
            &self.h,
            Op::Take {
                timeout_ms: millis(timeout),
            },
        )
    }

    /// Takes the oldest item if there is one.
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<Option<T>> {
        or_none(blob(
            &self.h,
            Op::Take {
                timeout_ms: Some(0),
            },
        ))
    }

    /// The number of items.
    #[doc(alias = "qsize")]
    pub fn len(&self) -> Result<usize> {
        count(&self.h, Op::Len).map(|n| n as usize)
    }

    /// Whether the queue is empty.
    #[doc(alias = "empty")]
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Whether the queue is full.
    #[doc(alias = "full")]
    pub fn is_full(&self) -> Result<bool> {
        flag(&self.h, Op::Full)
    }
}

/// A [`Queue`] that counts unfinished items (Python's `manager.JoinableQueue()`).
///
/// ```
/// let m = ipc_manager::Manager::start()?;
/// let q = m.joinable_queue::<u32>(0)?;
/// q.put(1)?;
/// let item = q.get()?;
/// q.task_done()?;
/// q.join()?; // every item put was marked done
/// assert_eq!(item, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JoinableQueue<T> {
    q: Queue<T>,
}

impl<T> JoinableQueue<T> {
    pub(crate) fn new(q: Queue<T>) -> Self {
        JoinableQueue { q }
    }
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { q: self.q.clone() }
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.q.serialize(s)
    }
}

impl<'de, T> serde::Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Queue::deserialize(d).map(JoinableQueue::new)
    }
}

impl<T> std::fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("JoinableQueue").field(&self.q).finish()
    }
}

impl<T> super::internal::Internal for JoinableQueue<T> {
    const KINDS: &'static [&'static str] = &["JoinableQueue"];
    fn from_shared(h: super::Shared) -> Self {
        JoinableQueue::new(Queue::from_shared(h))
    }
    fn shared(&self) -> &super::Shared {
        &self.q.h
    }
}

impl<T> super::Proxy for JoinableQueue<T> {}

/// Every [`Queue`] method.
impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.q
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// Marks one item taken from the queue as done; more calls than items put is
    /// [`Error::NotHeld`](crate::Error::NotHeld).
    pub fn task_done(&self) -> Result<()> {
        unit(&self.q.h, Op::TaskDone)
    }

    /// Waits until every item put was marked done.
    pub fn join(&self) -> Result<()> {
        unit(&self.q.h, Op::Join { timeout_ms: None })
    }

    /// [`join`](Self::join), giving up with [`Error::Timeout`](crate::Error::Timeout) after
    /// `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        unit(
            &self.q.h,
            Op::Join {
                timeout_ms: millis(timeout),
            },
        )
    }
}
