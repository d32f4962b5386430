//! A batch of items and its outcomes ([`Batch`]), and the handle to one asynchronous result
//! ([`AsyncResult`]).
//!
//! ```text
//! Batch: runs of outcomes by first index (BTreeMap: first -> Run), the order runs arrived in,
//!        the count completed, a cancelled flag
//!   Run:      the results packed end to end (one buffer), the failures by position,
//!             how many of its items were taken (taken all: removed)
//!   engine:   complete_run(first, results, ends, failures), complete(i, outcome)
//!   readers:  wait for a count; take item i (decoded); take the next to arrive; take all
//! ```
//! Outcomes stay encoded until taken, and a run of many items is one allocation: a `map` of a
//! million small items costs the parent a few nanoseconds per item.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::engine::Engine;
use crate::error::{PoolError, TaskError};

/// What the engine reports for one item: its encoded result, or why there is none.
pub type ItemOutcome = Result<Vec<u8>, TaskError>;

/// The items of one submission (a `map`, an `imap`, an `apply`) and their outcomes as they
/// arrive; the [`Engine`] reports to it.
#[derive(Default)]
pub struct Batch {
    /// Which batch this is: unique in the process (an address may be reused at once).
    serial: u64,
    state: Mutex<State>,
    changed: Condvar,
    /// `completed`, readable without the lock, for a waiter's brief spin.
    completed_hint: AtomicU64,
    /// Adaptive chunking ([`Chunking::Adaptive`](crate::Chunking::Adaptive)): the target time
    /// of a chunk (0: fixed chunks), the measured time per item (0: not yet), and the items
    /// submitted but not yet given to a worker. Kept by the engine.
    target_ns: AtomicU64,
    item_ns: AtomicU64,
    undispatched: AtomicU64,
    /// Told the count of items done after each completion (a progress bar).
    #[cfg(feature = "progress")]
    observer: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
}

/// How long a waiter polls before it sleeps: a result that comes within it (a short task on a
/// running worker) costs no futex wake-up, which takes 18-34 us on this kind of VM.
const SPIN: Duration = Duration::from_micros(50);

/// Run once when a batch has all its outcomes (or is cancelled), outside its lock.
type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    /// Waiters on several batches at once ([`wait_any`]), woken by every completion.
    watchers: Vec<Arc<Signal>>,
    /// Futures and streams waiting on the batch, woken by every completion (they look again).
    wakers: Vec<std::task::Waker>,
    /// What to run when `completed` reaches the count (callbacks of an [`AsyncResult`]).
    hook: Option<(u64, Hook)>,
    runs: BTreeMap<u64, Run>,
    /// For a batch read in arrival order only: runs in the order they arrived (first index,
    /// items not yet taken).
    arrivals: Option<VecDeque<(u64, u32)>>,
    completed: u64,
    /// A sleeper needs `completed` to reach this (u64::MAX: nobody sleeps): a completion
    /// below it wakes nobody, so a `map` of many items costs one wake-up, not one per report.
    wake_at: u64,
    failed: bool,
    cancelled: bool,
}

impl State {
    fn take_hook_if_done(&mut self) -> Option<Hook> {
        match &self.hook {
            Some((n, _)) if self.completed >= *n || self.cancelled => self.hook.take().map(|h| h.1),
            _ => None,
        }
    }
}

/// Consecutive items' outcomes.
struct Run {
    data: Vec<u8>,
    ends: Vec<u32>,
    /// (position in the run, error), by position.
    failures: Vec<(u32, TaskError)>,
    taken: u32,
}

impl Run {
    fn len(&self) -> u32 {
        self.ends.len() as u32
    }

    /// Item `k`'s outcome, decoded.
    fn decode<R: DeserializeOwned>(&mut self, first: u64, k: u32) -> Result<R, TaskError> {
        if let Ok(i) = self.failures.binary_search_by_key(&k, |f| f.0) {
            let index = first + u64::from(k);
            return Err(std::mem::replace(
                &mut self.failures[i].1,
                TaskError::Cancelled { index },
            ));
        }
        let start = if k == 0 {
            0
        } else {
            self.ends[k as usize - 1] as usize
        };
        let bytes = &self.data[start..self.ends[k as usize] as usize];
        decode_bytes(first + u64::from(k), bytes)
    }

    /// Items `0..len` decoded, in order, onto `dest`; the first failure stops it (its index
    /// and error). A run without failures is decoded in one go.
    fn decode_into<R: DeserializeOwned>(
        &mut self,
        first: u64,
        len: u32,
        dest: &mut Vec<R>,
    ) -> Result<(), (u64, TaskError)> {
        if !self.failures.is_empty() {
            for k in 0..len {
                dest.push(
                    self.decode(first, k)
                        .map_err(|e| (first + u64::from(k), e))?,
                );
            }
            return Ok(());
        }
        let before = dest.len();
        let mut start = 0;
        let items = self.ends[..len as usize].iter().map(|&end| {
            let bytes = &self.data[start..end as usize];
            start = end as usize;
            bytes
        });
        let mut failed = None;
        ipc_core::codec::decode_plain_each(items, |v: ipc_core::Result<R>| match v {
            Ok(v) => {
                dest.push(v);
                true
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        });
        match failed {
            None => Ok(()),
            Some(e) => {
                // The item after those decoded.
                let index = first + (dest.len() - before) as u64;
                Err((index, result_error(index, e)))
            }
        }
    }
}

/// Decodes item `index`'s result.
fn decode_bytes<R: DeserializeOwned>(index: u64, bytes: &[u8]) -> Result<R, TaskError> {
    ipc_core::codec::decode_plain(bytes).map_err(|e| result_error(index, e))
}

/// Item `index`'s result that does not decode.
fn result_error(index: u64, e: ipc_core::Error) -> TaskError {
    TaskError::Result {
        index,
        message: format!("it does not decode here: {e}"),
    }
}

impl Batch {
    pub(crate) fn new() -> Arc<Batch> {
        Arc::new(Batch::numbered())
    }

    fn numbered() -> Batch {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Batch {
            serial: NEXT.fetch_add(1, Ordering::Relaxed),
            // Nobody sleeps yet: the first completion wakes nobody (a notify is a syscall).
            state: Mutex::new(State {
                wake_at: u64::MAX,
                ..State::default()
            }),
            ..Batch::default()
        }
    }

    /// Which batch this is: unique among this process's batches, never 0.
    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }

    /// Makes the batch's chunks adaptive: the engine cuts them into pieces of about `target`
    /// by the measured time per item.
    pub(crate) fn set_adaptive(&self, target: Duration) {
        self.target_ns
            .store(target.as_nanos().max(1) as u64, Ordering::Relaxed);
    }

    /// How many items the engine should give a worker at once, of a chunk of this batch that
    /// has `len` items (`len` if the batch is not adaptive): about the target time by the
    /// measured pace (1 until an item was measured), and, near the end, at most an even share
    /// of what is left for twice the workers (so the last pieces end together).
    pub(crate) fn piece(&self, len: usize, workers: usize) -> usize {
        let target = self.target_ns.load(Ordering::Relaxed);
        if target == 0 {
            return len;
        }
        let per = self.item_ns.load(Ordering::Relaxed);
        let by_time = target.checked_div(per).map_or(1, |n| n.max(1));
        let share = self.undispatched.load(Ordering::Relaxed) / (2 * workers.max(1) as u64);
        (by_time.min(share.max(1)) as usize).clamp(1, len.max(1))
    }

    /// The engine took `n` items of this batch (`submitted`) or gave them to a worker.
    pub(crate) fn undispatched(&self, n: usize, submitted: bool) {
        let n = n as u64;
        // Saturating: a piece whose worker died is given out again without being submitted.
        let _ = self
            .undispatched
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(if submitted {
                    u.saturating_add(n)
                } else {
                    u.saturating_sub(n)
                })
            });
    }

    /// A worker spent `busy` on `n` items of this batch: the pace moves a quarter of the way.
    pub(crate) fn paced(&self, n: usize, busy: Duration) {
        if n == 0 || self.target_ns.load(Ordering::Relaxed) == 0 {
            return;
        }
        let x = (busy.as_nanos() as u64 / n as u64).max(1);
        let old = self.item_ns.load(Ordering::Relaxed);
        let new = if old == 0 { x } else { (old * 3 + x) / 4 };
        self.item_ns.store(new.max(1), Ordering::Relaxed);
    }

    /// A batch whose items are taken in the order they arrive ([`take_next`](Self::take_next)).
    pub(crate) fn unordered() -> Arc<Batch> {
        let b = Batch::numbered();
        b.lock().arrivals = Some(VecDeque::new());
        Arc::new(b)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports the outcomes of items `first..first + ends.len()` (the engine's side): their
    /// encoded results end to end in `data` (item `k` ends at `ends[k]`; a failed item is
    /// empty), and the failures by position in the run, ascending. Ignored once the batch is
    /// cancelled. Each item is reported once.
    pub fn complete_run(
        &self,
        first: u64,
        data: Vec<u8>,
        ends: Vec<u32>,
        failures: Vec<(u32, TaskError)>,
    ) {
        if ends.is_empty() {
            return;
        }
        let mut s = self.lock();
        if s.cancelled {
            return;
        }
        let n = ends.len() as u32;
        s.failed |= !failures.is_empty();
        s.runs.insert(
            first,
            Run {
                data,
                ends,
                failures,
                taken: 0,
            },
        );
        if let Some(a) = &mut s.arrivals {
            a.push_back((first, n));
        }
        s.completed += u64::from(n);
        self.completed_hint.store(s.completed, Ordering::Release);
        let wake = s.completed >= s.wake_at;
        if wake {
            s.wake_at = u64::MAX;
        }
        let watchers = s.watchers.clone();
        let wakers = std::mem::take(&mut s.wakers);
        let hook = s.take_hook_if_done();
        drop(s);
        if wake {
            self.changed.notify_all();
        }
        for w in watchers {
            w.raise();
        }
        wakers.into_iter().for_each(std::task::Waker::wake);
        #[cfg(feature = "progress")]
        if let Some(o) = self.observer.get() {
            o(self.completed_hint.load(Ordering::Acquire));
        }
        if let Some(h) = hook {
            h();
        }
    }

    /// Calls `f` with the count of items done after each completion (at most one observer).
    #[cfg(feature = "progress")]
    pub(crate) fn observe(&self, f: Box<dyn Fn(u64) + Send + Sync>) {
        let _ = self.observer.set(f);
    }

    /// Whether `n` items have an outcome (or the batch is cancelled); if not, `waker` is woken
    /// at the next completion (checked and registered under one lock: no wake-up is lost).
    #[cfg(feature = "async")]
    pub(crate) fn ready_or_register(&self, n: u64, waker: &std::task::Waker) -> bool {
        let mut s = self.lock();
        if s.completed >= n || s.cancelled {
            return true;
        }
        if !s.wakers.iter().any(|w| w.will_wake(waker)) {
            s.wakers.push(waker.clone());
        }
        false
    }

    /// Runs `hook` once `n` items have an outcome (or the batch is cancelled): at once, here,
    /// if that is already so; else in the thread that completes the batch.
    pub(crate) fn on_complete(&self, n: u64, hook: Hook) {
        let mut s = self.lock();
        s.hook = Some((n, hook));
        let now = s.take_hook_if_done();
        drop(s);
        if let Some(h) = now {
            h();
        }
    }

    /// Reports one item's outcome (the engine's side).
    pub fn complete(&self, index: u64, outcome: ItemOutcome) {
        match outcome {
            Ok(bytes) => {
                let end = bytes.len() as u32;
                self.complete_run(index, bytes, vec![end], Vec::new());
            }
            Err(e) => self.complete_run(index, Vec::new(), vec![0], vec![(0, e)]),
        }
    }

    /// Whether the batch's outcomes are no longer wanted.
    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Marks the batch cancelled and drops what it holds.
    pub(crate) fn cancel(&self) {
        let mut s = self.lock();
        s.cancelled = true;
        s.runs.clear();
        if let Some(a) = &mut s.arrivals {
            a.clear();
        }
        let watchers = s.watchers.clone();
        let wakers = std::mem::take(&mut s.wakers);
        let hook = s.hook.take();
        drop(s);
        wakers.into_iter().for_each(std::task::Waker::wake);
        self.changed.notify_all();
        for w in watchers {
            w.raise();
        }
        if let Some((_, h)) = hook {
            h();
        }
    }

    fn watch(&self, w: &Arc<Signal>) {
        self.lock().watchers.push(w.clone());
    }

    fn unwatch(&self, w: &Arc<Signal>) {
        self.lock().watchers.retain(|x| !Arc::ptr_eq(x, w));
    }

    /// How many items have an outcome so far.
    pub(crate) fn completed(&self) -> u64 {
        self.lock().completed
    }

    /// Whether an item failed so far.
    pub(crate) fn any_failed(&self) -> bool {
        self.lock().failed
    }

    /// Waits until at least `n` items have an outcome (true), or `deadline` passes (false):
    /// first a moment of [`help`](Self::help), then asleep.
    pub(crate) fn wait_for(&self, n: u64, deadline: Option<Instant>, engine: &dyn Engine) -> bool {
        self.help(n, deadline, engine);
        let mut s = self.lock();
        while s.completed < n && !s.cancelled {
            s.wake_at = s.wake_at.min(n);
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

    /// Waits for item `index` and takes it, decoded.
    pub(crate) fn take<R: DeserializeOwned>(&self, index: u64) -> Result<R, TaskError> {
        let mut s = self.lock();
        loop {
            if let Some(out) = Self::take_in(&mut s, index) {
                return out;
            }
            s.wake_at = s.wake_at.min(s.completed + 1);
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits for the next outcome to arrive (any index) and takes it, decoded.
    pub(crate) fn take_next<R: DeserializeOwned>(&self) -> (u64, Result<R, TaskError>) {
        let mut s = self.lock();
        loop {
            if let Some(out) = Self::take_next_in(&mut s) {
                return out;
            }
            s.wake_at = s.wake_at.min(s.completed + 1);
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Item `index` if it is there (or the batch is cancelled); else `waker` is woken at the
    /// next completion (under one lock: no wake-up is lost). Ordered if `index` is given, the
    /// next arrival otherwise.
    #[cfg(feature = "async")]
    pub(crate) fn poll_take<R: DeserializeOwned>(
        &self,
        index: Option<u64>,
        waker: &std::task::Waker,
    ) -> Option<(u64, Result<R, TaskError>)> {
        let mut s = self.lock();
        let got = match index {
            Some(i) => Self::take_in(&mut s, i).map(|r| (i, r)),
            None => Self::take_next_in(&mut s),
        };
        if got.is_none() && !s.wakers.iter().any(|w| w.will_wake(waker)) {
            s.wakers.push(waker.clone());
        }
        got
    }

    /// Item `index`, decoded, if it arrived (or the batch was cancelled).
    fn take_in<R: DeserializeOwned>(s: &mut State, index: u64) -> Option<Result<R, TaskError>> {
        let found = s
            .runs
            .range_mut(..=index)
            .next_back()
            .filter(|(first, run)| index < **first + u64::from(run.len()))
            .map(|(first, run)| (*first, run));
        if let Some((first, run)) = found {
            let out = run.decode(first, (index - first) as u32);
            run.taken += 1;
            if run.taken == run.len() {
                s.runs.remove(&first);
            }
            return Some(out);
        }
        s.cancelled.then_some(Err(TaskError::Cancelled { index }))
    }

    /// The oldest arrival not yet taken, decoded (or a cancellation).
    fn take_next_in<R: DeserializeOwned>(s: &mut State) -> Option<(u64, Result<R, TaskError>)> {
        let State { arrivals, runs, .. } = s;
        let arrivals = arrivals.as_mut().expect("take_next on an unordered batch");
        if let Some((first, left)) = arrivals.front_mut() {
            let first = *first;
            let run = runs.get_mut(&first).expect("an arrival's run is held");
            let k = run.len() - *left;
            let out = run.decode::<R>(first, k);
            run.taken += 1;
            let done = run.taken == run.len();
            *left -= 1;
            if *left == 0 {
                arrivals.pop_front();
            }
            if done {
                runs.remove(&first);
            }
            return Some((first + u64::from(k), out));
        }
        s.cancelled
            .then_some((u64::MAX, Err(TaskError::Cancelled { index: u64::MAX })))
    }

    /// For a moment (`SPIN`, or until `deadline`), while fewer than `n` items have an
    /// outcome, lets `engine` use this thread to collect outcomes
    /// ([`Engine::help`]): a short task's result then costs no wake-up of a sleeping thread,
    /// which takes 18-34 us on this kind of VM. Not on a single CPU, where it would only delay
    /// the workers.
    pub(crate) fn help(&self, n: u64, deadline: Option<Instant>, engine: &dyn Engine) {
        if self.completed_hint.load(Ordering::Acquire) < n && ipc_core::spin::several_cpus() {
            let until = Instant::now() + SPIN;
            let until = deadline.map_or(until, |d| d.min(until));
            engine.help(&|| self.completed_hint.load(Ordering::Acquire) >= n, until);
        }
    }

    /// Waits for items `0..n` and takes their values in index order, or, once every item has
    /// ended, the failure of the first item that failed (an item without an outcome is
    /// cancelled). Runs are decoded as they arrive, in the time this thread would spend
    /// waiting, so a long `map` ends with little left to decode.
    pub(crate) fn gather<R: DeserializeOwned>(&self, n: u64) -> Result<Vec<R>, TaskError> {
        let mut out: Vec<R> = Vec::with_capacity(n.min(1 << 20) as usize);
        // Runs decoded ahead of a gap, by first index.
        let mut later: BTreeMap<u64, Vec<R>> = BTreeMap::new();
        let mut failure: Option<(u64, TaskError)> = None;
        let mut s = self.lock();
        loop {
            let runs = std::mem::take(&mut s.runs);
            if runs.is_empty() {
                if s.completed >= n || s.cancelled {
                    break;
                }
                // Woken when an eighth of what is left has come (the last few: each), not at
                // every report: a map of many one-item chunks costs a few wake-ups, not one
                // per item.
                let left = n - s.completed;
                s.wake_at = s.wake_at.min(s.completed + (left / 8).max(1));
                s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            drop(s);
            for (first, mut run) in runs {
                // After a failure only an earlier one matters.
                let end = failure.as_ref().map_or(n, |f| f.0);
                let len = u64::from(run.len()).min(end.saturating_sub(first));
                let in_order = first == out.len() as u64;
                let mut values = Vec::new();
                let dest = if in_order { &mut out } else { &mut values };
                if let Err(f) = run.decode_into(first, len as u32, dest) {
                    failure = Some(f);
                    continue;
                }
                if !in_order {
                    later.insert(first, values);
                }
                while let Some(entry) = later.first_entry() {
                    if *entry.key() != out.len() as u64 {
                        break;
                    }
                    out.extend(entry.remove());
                }
            }
            s = self.lock();
        }
        drop(s);
        if let Some((_, e)) = failure {
            return Err(e);
        }
        if out.len() as u64 != n {
            let index = out.len() as u64;
            return Err(TaskError::Cancelled { index });
        }
        Ok(out)
    }

    /// Takes the outcomes of items `0..n`, decoded, in index order (an item without one is
    /// cancelled).
    pub(crate) fn take_all<R: DeserializeOwned>(&self, n: u64) -> Vec<Result<R, TaskError>> {
        let runs = std::mem::take(&mut self.lock().runs);
        let mut out = Vec::with_capacity(n as usize);
        for (first, mut run) in runs {
            while (out.len() as u64) < first.min(n) {
                let index = out.len() as u64;
                out.push(Err(TaskError::Cancelled { index }));
            }
            for k in 0..run.len() {
                if first + u64::from(k) < n {
                    out.push(run.decode(first, k));
                }
            }
        }
        while (out.len() as u64) < n {
            let index = out.len() as u64;
            out.push(Err(TaskError::Cancelled { index }));
        }
        out
    }
}

/// A flag with a condition variable: raised by any of the batches a [`wait_any`] watches.
#[derive(Default)]
struct Signal {
    raised: Mutex<bool>,
    cond: Condvar,
}

impl Signal {
    fn raise(&self) {
        *self.raised.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
    }

    /// Waits until raised (then lowers it) or `deadline`.
    fn wait(&self, deadline: Option<Instant>) {
        let mut r = self.raised.lock().unwrap_or_else(|p| p.into_inner());
        while !*r {
            r = match deadline {
                None => self.cond.wait(r).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    self.cond
                        .wait_timeout(r, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        *r = false;
    }
}

/// Waits until one of `results` is ready, at most `timeout` (`None`: no limit); its position,
/// or `None` on timeout (Python's `concurrent.futures.wait(..., FIRST_COMPLETED)`).
///
/// ```
/// fn sleepy(ms: u64) -> u64 {
///     std::thread::sleep(std::time::Duration::from_millis(ms));
///     ms
/// }
/// let pool = ipc_pool::Pool::new(2)?;
/// let slow = pool.apply_async(sleepy, 3000)?;
/// let quick = pool.apply_async(sleepy, 10)?;
/// assert_eq!(ipc_pool::wait_any(&[&slow, &quick], None), Some(1));
/// slow.cancel();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn wait_any<T>(results: &[&AsyncResult<T>], timeout: Option<Duration>) -> Option<usize> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let signal = Arc::new(Signal::default());
    for r in results {
        r.batch.watch(&signal);
    }
    let found = loop {
        if let Some(i) = results.iter().position(|r| r.ready()) {
            break Some(i);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break None;
        }
        signal.wait(deadline);
    };
    for r in results {
        r.batch.unwatch(&signal);
    }
    found
}

/// The results in the order they become ready (Python's `as_completed`).
///
/// ```
/// fn sleepy(ms: u64) -> u64 {
///     std::thread::sleep(std::time::Duration::from_millis(ms));
///     ms
/// }
/// let pool = ipc_pool::Pool::new(2)?;
/// let rs = vec![pool.apply_async(sleepy, 400)?, pool.apply_async(sleepy, 10)?];
/// let order: Vec<u64> = ipc_pool::as_completed(rs).map(|r| r.get().unwrap()).collect();
/// assert_eq!(order, [10, 400]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn as_completed<T>(results: Vec<AsyncResult<T>>) -> impl Iterator<Item = AsyncResult<T>> {
    let mut left = results;
    std::iter::from_fn(move || {
        if left.is_empty() {
            return None;
        }
        let refs: Vec<&AsyncResult<T>> = left.iter().collect();
        let i = wait_any(&refs, None)?;
        Some(left.swap_remove(i))
    })
}

/// Waits for a batch of `n` items to finish (at once if it has) and turns it into the result
/// of a submission.
type Finish<T> = fn(&Batch, u64) -> Result<T, PoolError>;

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
    taken: AtomicBool,
    /// With callbacks: the result, once they made it (they see it before `get` takes it).
    made: Option<Arc<Made<T>>>,
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
            taken: AtomicBool::new(false),
            made: None,
            _t: PhantomData,
        }
    }

    /// Waits for the result and returns it (or the first failing item's error, once every
    /// item ended).
    pub fn get(self) -> Result<T, PoolError> {
        // The finishing function waits (a map's decodes its results as they come).
        self.batch.help(self.items, None, &*self.engine);
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
        if self.taken.swap(true, Ordering::AcqRel) {
            return Err(PoolError::Taken);
        }
        match &self.made {
            // The callbacks' hook makes the result: wait for it (it runs once the batch is
            // complete, a moment after the batch says so).
            Some(made) => made.wait(),
            None => (self.finish)(&self.batch, self.items),
        }
    }

    /// Waits until the result is ready.
    pub fn wait(&self) {
        self.batch.wait_for(self.items, None, &*self.engine);
    }

    /// Waits at most `timeout`; true if the result is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.batch
            .wait_for(self.items, Some(Instant::now() + timeout), &*self.engine)
    }

    /// `(done, total)`: the items that have an outcome so far, and how many there are.
    pub fn progress(&self) -> (u64, u64) {
        (self.batch.completed().min(self.items), self.items)
    }

    /// Whether the result is ready.
    pub fn ready(&self) -> bool {
        self.batch.completed() >= self.items
    }

    /// `None` while not ready; then whether every item succeeded (Python's `successful()`).
    pub fn successful(&self) -> Option<bool> {
        self.ready().then(|| !self.batch.any_failed())
    }

    /// Gives up the result: items that have not started never run, and a worker running one
    /// of its items is killed and replaced (the pool goes on); `get` then says
    /// [`TaskError::Cancelled`].
    pub fn cancel(&self) {
        // The batch first: a worker killed for it must find it cancelled.
        self.batch.cancel();
        self.engine.cancel(&self.batch);
    }
}

impl<T: Send + 'static> AsyncResult<T> {
    /// Runs `on_success` with the result, or `on_error` with the error, once it is ready
    /// (Python's `callback` and `error_callback`): exactly one of them, once, in the pool's
    /// collector thread, or here at once if the result is already ready. Keep them short, and
    /// never wait for another result in one: results wait meanwhile (submitting work is fine).
    /// [`get`](Self::get) still returns the result afterwards.
    ///
    /// ```
    /// let pool = ipc_pool::Pool::new(1)?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let r = pool
    ///     .apply_async(|x: u32| x + 1, 41)?
    ///     .callbacks(move |v| tx.send(*v).unwrap(), |e| panic!("{e}"));
    /// assert_eq!(rx.recv()?, 42);
    /// assert_eq!(r.get()?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn callbacks(
        mut self,
        on_success: impl FnOnce(&T) + Send + 'static,
        on_error: impl FnOnce(&PoolError) + Send + 'static,
    ) -> Self {
        if self.made.is_some() {
            // Callbacks once per result: the first set stays.
            return self;
        }
        let made = Arc::new(Made {
            result: Mutex::new(None),
            ready: Condvar::new(),
        });
        self.made = Some(made.clone());
        let (batch, finish, n) = (self.batch.clone(), self.finish, self.items);
        let weak = Arc::downgrade(&batch);
        self.batch.on_complete(
            n,
            Box::new(move || {
                let Some(batch) = weak.upgrade() else {
                    return;
                };
                let result = finish(&batch, n);
                match &result {
                    Ok(v) => on_success(v),
                    Err(e) => on_error(e),
                }
                made.set(result);
            }),
        );
        self
    }
}

/// With the `async` feature, an `AsyncResult` is a `Future` of what [`get`](AsyncResult::get)
/// returns: woken by the thread that completes it, on any runtime (no thread blocks). With
/// [`callbacks`](AsyncResult::callbacks), the output waits for them to have run.
///
/// ```
/// # #[cfg(feature = "async")] {
/// fn triple(x: u32) -> u32 {
///     3 * x
/// }
/// let pool = ipc_pool::Pool::new(2).unwrap();
/// let r = pool.apply_async(triple, 14).unwrap();
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// assert_eq!(rt.block_on(r).unwrap(), 42);
/// # }
/// ```
#[cfg(feature = "async")]
impl<T> std::future::Future for AsyncResult<T> {
    type Output = Result<T, PoolError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        if this.batch.ready_or_register(this.items, cx.waker()) {
            std::task::Poll::Ready(this.take())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// A result made by the callbacks' hook, for `get` to take.
struct Made<T> {
    result: Mutex<Option<Result<T, PoolError>>>,
    ready: Condvar,
}

impl<T> Made<T> {
    fn set(&self, r: Result<T, PoolError>) {
        *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        self.ready.notify_all();
    }

    fn wait(&self) -> Result<T, PoolError> {
        let mut g = self.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = g.take() {
                return r;
            }
            g = self.ready.wait(g).unwrap_or_else(|p| p.into_inner());
        }
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
