//! `SimpleQueue<T>`: an unbounded queue with just `put`, `get`, `empty` (Python's
//! `SimpleQueue`), on the same ring as [`Queue`](crate::Queue).

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ring::Wait;
use super::{Core, DEFAULT_CAPACITY, GetError, PutError};

/// A plain FIFO queue between processes (Python's `SimpleQueue`).
///
/// ```
/// let q = ipc_sync::SimpleQueue::new()?;
/// q.put(1u8).unwrap();
/// assert!(!q.is_empty());
/// assert_eq!(q.get().unwrap(), 1);
/// q.close();
/// q.close();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SimpleQueue<T> {
    core: Core<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            core: self.core.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A queue with the default 1 MiB ring.
    pub fn new() -> ipc_core::Result<Self> {
        Ok(SimpleQueue {
            core: Core::new(DEFAULT_CAPACITY, 0)?,
        })
    }

    /// Puts `item`, blocking while the ring is full.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.core.put(item, Wait::Forever)
    }

    /// Takes the oldest item, blocking until there is one.
    pub fn get(&self) -> Result<T, GetError> {
        self.core.get(Wait::Forever)
    }

    /// Takes the oldest item, blocking at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.core.get_within(timeout)
    }

    /// Whether the queue holds no complete item (Python's `empty()`).
    #[doc(alias = "empty")]
    pub fn is_empty(&self) -> bool {
        self.core.ring.len() == 0
    }

    /// Closes this process's handle (idempotent).
    pub fn close(&self) {
        self.core.close();
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue")
            .field("len", &self.core.ring.len())
            .finish()
    }
}
