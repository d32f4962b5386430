//! A batch of items and its outcomes ([`Batch`]), and the handle to one asynchronous result
//! ([`AsyncResult`]).
//!
//! ```text
//! Batch: outcomes by index (BTreeMap), arrival order, count completed, cancelled flag
//!   engine   complete(i, outcome)   first outcome of i wins; ignored once cancelled
//!   readers  wait for a count, take one index, take the next arrival, take all
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::engine::Engine;
use crate::error::{PoolError, TaskError};

/// What the engine reports for one item: the encoded result, or why there is none.
pub type ItemOutcome = Result<Vec<u8>, TaskError>;

/// The items of one submission (a `map`, an `imap`, an `apply`) and their outcomes as they
/// arrive; the [`Engine`] reports to it.
#[derive(Default)]
pub struct Batch {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    outcomes: BTreeMap<u64, ItemOutcome>,
    arrivals: VecDeque<u64>,
    completed: u64,
    cancelled: bool,
}

impl Batch {
    pub(crate) fn new() -> Arc<Batch> {
        Arc::new(Batch::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports item `index`'s outcome (the engine's side). A second report of the same item,
    /// or one after the batch was cancelled, is ignored.
    pub fn complete(&self, index: u64, outcome: ItemOutcome) {
        let mut s = self.lock();
        if s.cancelled || s.outcomes.contains_key(&index) {
            return;
        }
        s.outcomes.insert(index, outcome);
        s.arrivals.push_back(index);
        s.completed += 1;
        drop(s);
        self.changed.notify_all();
    }

    /// Whether the batch's outcomes are no longer wanted.
    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Marks the batch cancelled and drops what it holds; returns nothing.
    pub(crate) fn cancel(&self) {
        let mut s = self.lock();
        s.cancelled = true;
        s.outcomes.clear();
        s.arrivals.clear();
        drop(s);
        self.changed.notify_all();
    }

    /// How many items have an outcome so far.
    pub(crate) fn completed(&self) -> u64 {
        self.lock().completed
    }

    /// Waits until at least `n` items have an outcome, or `deadline` passes (false).
    pub(crate) fn wait_for(&self, n: u64, deadline: Option<Instant>) -> bool {
        let mut s = self.lock();
        while s.completed < n && !s.cancelled {
            s = match deadline {
                None => self.changed.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.changed
                        .wait_timeout(s, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        true
    }

    /// Waits for item `index` and takes its outcome.
    pub(crate) fn take(&self, index: u64) -> ItemOutcome {
        let mut s = self.lock();
        loop {
            if let Some(o) = s.outcomes.remove(&index) {
                return o;
            }
            if s.cancelled {
                return Err(TaskError::Cancelled { index });
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits for the next outcome to arrive (any index) and takes it.
    pub(crate) fn take_next(&self) -> (u64, ItemOutcome) {
        let mut s = self.lock();
        loop {
            while let Some(i) = s.arrivals.pop_front() {
                if let Some(o) = s.outcomes.remove(&i) {
                    return (i, o);
                }
            }
            if s.cancelled {
                return (u64::MAX, Err(TaskError::Cancelled { index: u64::MAX }));
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Takes the outcomes of items `0..n` (all present), in index order.
    pub(crate) fn take_all(&self, n: u64) -> Vec<ItemOutcome> {
        let mut s = self.lock();
        (0..n)
            .map(|i| {
                s.outcomes
                    .remove(&i)
                    .unwrap_or(Err(TaskError::Cancelled { index: i }))
            })
            .collect()
    }
}

/// Decodes one item's encoded result.
pub(crate) fn decode<R: DeserializeOwned>(
    index: u64,
    outcome: ItemOutcome,
) -> Result<R, TaskError> {
    let bytes = outcome?;
    ipc_core::codec::decode(&bytes, Vec::new()).map_err(|e| TaskError::Result {
        index,
        message: format!("it does not decode here: {e}"),
    })
}

/// Turns all outcomes into the result of a submission.
type Finish<T> = fn(Vec<ItemOutcome>) -> Result<T, PoolError>;

/// A result that will be ready later (Python's `AsyncResult`), from
/// [`Pool::apply_async`](crate::Pool::apply_async) or [`Pool::map_async`](crate::Pool::map_async).
///
/// ```
/// fn slow_double(x: u32) -> u32 {
///     std::thread::sleep(std::time::Duration::from_millis(50));
///     x * 2
/// }
/// let pool = ipc_pool::Pool::new(1)?;
/// let r = pool.apply_async(slow_double, 21)?;
/// assert!(r.wait_timeout(std::time::Duration::from_secs(30)));
/// assert_eq!(r.successful(), Some(true));
/// assert_eq!(r.get()?, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AsyncResult<T> {
    batch: Arc<Batch>,
    items: u64,
    engine: Arc<dyn Engine>,
    finish: Finish<T>,
    taken: std::sync::atomic::AtomicBool,
    _t: PhantomData<fn() -> T>,
}

impl<T> AsyncResult<T> {
    pub(crate) fn new(
        batch: Arc<Batch>,
        items: u64,
        engine: Arc<dyn Engine>,
        finish: Finish<T>,
    ) -> Self {
        AsyncResult {
            batch,
            items,
            engine,
            finish,
            taken: std::sync::atomic::AtomicBool::new(false),
            _t: PhantomData,
        }
    }

    /// Waits for the result and returns it (or the first failing item's error, once every
    /// item ended).
    pub fn get(self) -> Result<T, PoolError> {
        self.batch.wait_for(self.items, None);
        self.take()
    }

    /// Waits at most `timeout`: the result ([`PoolError::Timeout`] if it is not ready; it can
    /// be asked again). Once given, a later call says [`PoolError::Taken`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, PoolError> {
        if !self.wait_timeout(timeout) {
            return Err(PoolError::Timeout);
        }
        self.take()
    }

    fn take(&self) -> Result<T, PoolError> {
        if self.taken.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Err(PoolError::Taken);
        }
        (self.finish)(self.batch.take_all(self.items))
    }

    /// Waits until the result is ready.
    pub fn wait(&self) {
        self.batch.wait_for(self.items, None);
    }

    /// Waits at most `timeout`; true if the result is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.batch
            .wait_for(self.items, Some(Instant::now() + timeout))
    }

    /// Whether the result is ready.
    pub fn ready(&self) -> bool {
        self.batch.completed() >= self.items
    }

    /// `None` while not ready; then whether every item succeeded (Python's `successful()`).
    pub fn successful(&self) -> Option<bool> {
        if !self.ready() {
            return None;
        }
        let s = self.batch.lock();
        Some(s.outcomes.values().all(Result::is_ok))
    }

    /// Gives up the result: items that have not started never run (their outcome is
    /// [`TaskError::Cancelled`]).
    pub fn cancel(&self) {
        self.engine.cancel(&self.batch);
        self.batch.cancel();
    }
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("items", &self.items)
            .field("completed", &self.batch.completed())
            .finish()
    }
}
