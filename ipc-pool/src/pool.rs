//! [`Pool`]: the user-facing API, written against an [`Engine`] (the local one by default).
//!
//! ```text
//! map / map_results / map_async:  encode every argument first (an argument that cannot travel
//!                                 fails the call at once, before anything runs), cut into
//!                                 chunks (Python's rule: len / (4 x processes), rounded up),
//!                                 submit all, wait for all
//! apply / apply_async:            one item, one chunk
//! imap / imap_unordered:          lazy: see `imap.rs`
//! close -> join                   no more work; wait for what was submitted; stop the workers
//! terminate (and Drop)            kill the workers now; what did not end fails as cancelled
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ipc_core::process::{RemoteFn, StartMethod};
use ipc_core::shm::{Frozen, ShmSafe};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::{Batch, Engine};
use crate::error::{PoolError, TaskError};
use crate::imap::Imap;
use crate::job::AsyncResult;
use crate::local::{LocalEngine, WorkerConfig};
use crate::stateful::{Stateful, WorkerExit};
use crate::wire::{MAX_CHUNK, Packed, encode_all_into, encode_into, remote};

/// How `map` and its kin cut their input into chunks when the call names no chunk size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Chunking {
    /// Python's rule: `len / (4 x processes)` items per chunk, rounded up.
    #[default]
    Python,
    /// Chunks sized by how long items take: each worker is given about `target` of work at
    /// once (by the pace measured so far, one item at a time until an item was measured), and
    /// smaller pieces near the end so that the workers finish together. Tiny tasks travel by
    /// the hundred, slow ones one by one, without choosing a size; [`Chunking::ADAPTIVE`]
    /// aims at 0.5 ms.
    Adaptive {
        /// The work to give a worker at once.
        target: Duration,
    },
}

impl Chunking {
    /// [`Chunking::Adaptive`] with a 0.5 ms target.
    pub const ADAPTIVE: Chunking = Chunking::Adaptive {
        target: Duration::from_micros(500),
    };
}

/// Items encoded and submitted together under [`Chunking::Adaptive`] (the engine cuts them
/// into pieces as it gives them out).
const ADAPTIVE_BLOCK: usize = 4096;

/// Configures a [`Pool`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    processes: Option<usize>,
    method: Option<StartMethod>,
    chunking: Chunking,
    progress: bool,
    config: WorkerConfig,
    /// A setting that could not be taken (reported by `build`).
    error: Option<String>,
}

impl Builder {
    /// A builder with the defaults: one worker per CPU this process may use, ipc-core's default
    /// start method.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The number of workers (at least 1).
    pub fn processes(mut self, n: usize) -> Builder {
        self.processes = Some(n);
        self
    }

    /// The start method of the workers. Under `Fork` the workers come from a zygote forked when
    /// the pool is built (so the process must have one thread then): they are copies of this
    /// process as it was at that moment, replacements included (see the crate doc).
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// Replaces each worker after it ran `n` tasks (Python's `maxtasksperchild`): tasks are
    /// counted, not chunks (a chunk is split at the limit; its other items run on another
    /// worker), and a retiring worker reports every outcome first. Bounds what a worker that
    /// leaks can accumulate.
    #[doc(alias = "maxtasksperchild")]
    pub fn max_tasks_per_worker(mut self, n: u64) -> Builder {
        self.config.max_tasks = Some(n);
        self
    }

    /// Retires a worker whose resident memory grew past `bytes`: after a task, if its resident
    /// set is larger, it reports what it ran, runs the exit hook and leaves, and a fresh
    /// worker takes its place (no task fails). For tasks that leak, or fragment the heap.
    /// Checked after each task that ran 0.1 ms or more, and after at most 1 ms of shorter
    /// ones (reading `/proc/self/statm` costs a few microseconds).
    pub fn max_memory_per_worker(mut self, bytes: u64) -> Builder {
        self.config.max_memory = Some(bytes);
        self
    }

    /// Runs `f(arg)` once in each worker, replacements included, before its first task
    /// (Python's `initializer` and `initargs`; several arguments go as a tuple; the argument
    /// may hold shared objects, a lock, a queue, a segment: each worker gets them, as
    /// Python's users pass them through `initargs`). What it
    /// returns is that worker's state: the tasks of [`Pool::stateful`] borrow it (a model, a
    /// connection, a cache: made once per worker, never sent anywhere). If it panics, the
    /// worker still runs plain tasks, and each task that needs the state fails with
    /// [`TaskError::WorkerState`] carrying the panic message (no worker is restarted in a
    /// loop).
    #[doc(alias = "initargs")]
    pub fn initializer<I, S>(mut self, f: fn(I) -> S, arg: I) -> Builder
    where
        I: Serialize + DeserializeOwned,
        S: 'static,
    {
        let mut bytes = Vec::new();
        match RemoteFn::initializer(f)
            .and_then(|f| ipc_core::codec::encode(&arg, &mut bytes).map(|fds| (f, fds)))
        {
            Ok((f, fds)) => self.config.init = Some((f.erase(), bytes, Arc::new(fds))),
            Err(e) => self.error = Some(format!("the initializer cannot be used: {e}")),
        }
        self
    }

    /// Gives every worker the read-only `table` as its state: the tasks of
    /// [`Pool::stateful`] take `&mut Frozen<T>` and read it in place (`table[i]`, slices). The
    /// table lives once in shared memory, sealed read-only: each worker maps it (no copy, no
    /// decoding), whatever the start method, and memory counts it once across the pool. For
    /// a table and a state of your own, put the `Frozen` in the state your
    /// [`initializer`](Self::initializer) makes.
    ///
    /// ```
    /// use ipc_core::shm::Frozen;
    ///
    /// fn weight(table: &mut Frozen<f64>, i: usize) -> f64 {
    ///     table[i] * 2.0
    /// }
    ///
    /// let table = Frozen::new(&[0.5, 1.5, 2.5])?;
    /// let pool = ipc_pool::Pool::builder().processes(2).context(table).build()?;
    /// assert_eq!(pool.stateful().map(weight, [2, 0])?, [5.0, 1.0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn context<T: ShmSafe + Copy>(self, table: Frozen<T>) -> Builder {
        fn keep<X>(x: X) -> X {
            x
        }
        self.initializer(keep::<Frozen<T>>, table)
    }

    /// Runs `f` with the worker's state when a worker leaves in order (the pool is joined, or
    /// the worker retires: `max_tasks_per_worker`); what it returns is collected by
    /// [`Pool::worker_exits`]. A worker that is killed (terminate, a cancelled or dead task)
    /// does not run it. `S` must be what the [`initializer`](Self::initializer) returns
    /// (otherwise that worker's exit is an error that says so).
    #[doc(alias = "worker_exit")]
    pub fn on_exit<S, X>(mut self, f: fn(S) -> X) -> Builder
    where
        S: 'static,
        X: Serialize,
    {
        match RemoteFn::finisher(f) {
            Ok(f) => self.config.exit = Some(f.erase()),
            Err(e) => self.error = Some(format!("the exit hook cannot be used: {e}")),
        }
        self
    }

    /// How `map`, `map_async` and `map_results` cut their input when the call names no chunk
    /// size ([`Chunking::Python`] by default).
    pub fn chunking(mut self, chunking: Chunking) -> Builder {
        self.chunking = chunking;
        self
    }

    /// Shows a progress bar on standard error for each `map` (of its length) and `imap` (a
    /// count), drawn only when standard error is a terminal: nothing is written when it is
    /// piped or redirected. Feature `progress` (indicatif).
    #[cfg(feature = "progress")]
    pub fn progress_bar(mut self, on: bool) -> Builder {
        self.progress = on;
        self
    }

    /// Bounds each task's run time: a task still running after `limit` has its worker
    /// killed and replaced, and fails with [`TaskError::TimedOut`]; the other items go on
    /// (those of its chunk that had not started run elsewhere). Checked by the supervisor
    /// every quarter of `limit` (between 1 and 100 ms), so a task stops between `limit` and
    /// `limit` plus that tick.
    pub fn task_timeout(mut self, limit: Duration) -> Builder {
        self.config.task_timeout = Some(limit);
        self
    }

    /// Runs an item whose worker died while running it (killed, crashed, exited) again, on
    /// another worker, up to `n` more times, for idempotent tasks; the last failure, a
    /// [`TaskError::WorkerDied`], lists every earlier attempt. A panic is not retried (the
    /// worker lived and reported it), nor a timeout.
    pub fn retries(mut self, n: u32) -> Builder {
        self.config.retries = n;
        self
    }

    /// Names the workers `{prefix}-1`, `{prefix}-2`, ... in start order, replacements
    /// included (`PoolWorker` by default, as Python's): what
    /// `ipc_core::process::current_process().name` says in a worker, and what the tour and
    /// logs show.
    pub fn worker_names(mut self, prefix: impl Into<String>) -> Builder {
        self.config.name = prefix.into();
        self
    }

    /// Pins worker `k` (counting replacements: the `k`-th worker started) to CPU
    /// `cpus[k % cpus.len()]` (mpire's `cpu_ids`). A CPU this process may not use is reported
    /// by the worker on its standard error, and it runs unpinned.
    pub fn cpu_affinity(mut self, cpus: impl IntoIterator<Item = usize>) -> Builder {
        self.config.cpus = cpus.into_iter().collect();
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool, PoolError> {
        if let Some(e) = self.error {
            return Err(PoolError::Misuse(e));
        }
        if let Some(&cpu) = self.config.cpus.iter().find(|&&c| c >= 1024) {
            return Err(PoolError::Misuse(format!(
                "CPU {cpu} is beyond what an affinity mask can name (1024)"
            )));
        }
        if self.config.task_timeout == Some(Duration::ZERO) {
            return Err(PoolError::Misuse(
                "a task timeout must be longer than 0".into(),
            ));
        }
        if self.config.max_tasks == Some(0) {
            return Err(PoolError::Misuse(
                "max_tasks_per_worker must be at least 1".into(),
            ));
        }
        let processes = match self.processes {
            Some(0) => {
                return Err(PoolError::Misuse(
                    "a pool needs at least one process".into(),
                ));
            }
            Some(n) => n,
            None => ipc_core::process::process_cpu_count(),
        };
        let method = self
            .method
            .unwrap_or_else(ipc_core::process::default_start_method);
        if matches!(self.chunking, Chunking::Adaptive { target } if target.is_zero()) {
            return Err(PoolError::Misuse(
                "an adaptive chunk target must be longer than 0".into(),
            ));
        }
        let engine = LocalEngine::start(processes, method, self.config)?;
        Ok(Pool {
            engine: Arc::new(engine),
            chunking: self.chunking,
            progress: self.progress,
        })
    }
}

/// A pool of worker processes (Python's `multiprocessing.Pool`); see the crate doc.
///
/// `Pool` is `Send + Sync`: threads may submit work to one pool at once.
#[doc(alias = "multiprocessing.Pool")]
pub struct Pool {
    engine: Arc<dyn Engine>,
    chunking: Chunking,
    progress: bool,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Pool>();
};

impl Pool {
    /// A pool of `processes` workers under ipc-core's default start method.
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        Builder::new().processes(processes).build()
    }

    /// A builder (number of workers, start method).
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The same API on another engine (for example MPI ranks, from a crate of a higher layer).
    pub fn with_engine(engine: Arc<dyn Engine>) -> Pool {
        Pool {
            engine,
            chunking: Chunking::Python,
            progress: false,
        }
    }

    /// The number of workers.
    pub fn processes(&self) -> usize {
        self.engine.processes()
    }

    /// The same calls for tasks that borrow the worker's state (`fn(&mut S, A) -> R`), made by
    /// the [`initializer`](Builder::initializer).
    ///
    /// ```
    /// use std::collections::HashMap;
    ///
    /// /// Made once in each worker: a table too costly to build per task.
    /// fn load(size: u64) -> HashMap<u64, u64> {
    ///     (0..size).map(|k| (k, k * k)).collect()
    /// }
    /// fn look_up(table: &mut HashMap<u64, u64>, k: u64) -> Option<u64> {
    ///     table.get(&k).copied()
    /// }
    /// fn size(table: HashMap<u64, u64>) -> usize {
    ///     table.len()
    /// }
    ///
    /// let pool = ipc_pool::Pool::builder()
    ///     .processes(2)
    ///     .initializer(load, 1000)
    ///     .on_exit(size)
    ///     .build()?;
    /// let found = pool.stateful().map(look_up, [3, 999, 5000])?;
    /// assert_eq!(found, [Some(9), Some(998_001), None]);
    /// pool.close();
    /// pool.join()?;
    /// let exits = pool.worker_exits::<usize>();
    /// assert_eq!(exits.len(), 2);
    /// assert!(exits.iter().all(|e| e.output == Ok(1000)));
    /// assert!(pool.worker_exits::<usize>().is_empty(), "each output is given once");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "worker_state")]
    pub fn stateful(&self) -> Stateful<'_> {
        Stateful { pool: self }
    }

    /// What the pool did so far: items submitted and ended, each worker's tasks and busy
    /// time, the chunk sizes it dispatched (mpire's insights).
    ///
    /// ```
    /// fn double(x: u64) -> u64 {
    ///     2 * x
    /// }
    /// let pool = ipc_pool::Pool::new(2)?;
    /// pool.map(double, 0..1000)?;
    /// let seen = pool.insights();
    /// assert_eq!((seen.submitted, seen.completed), (1000, 1000));
    /// assert_eq!(seen.workers.iter().map(|w| w.tasks).sum::<u64>(), 1000);
    /// println!("{seen}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insights(&self) -> crate::Insights {
        self.engine.insights()
    }

    /// Takes what the workers' exit hook ([`Builder::on_exit`]) returned since the last call,
    /// one entry per worker that left in order (after [`join`](Self::join): every worker
    /// left), decoded as `X`. Each output is given once, so a pool that recycles its workers
    /// keeps only those not taken yet.
    pub fn worker_exits<X: DeserializeOwned>(&self) -> Vec<WorkerExit<X>> {
        self.engine
            .take_worker_exits()
            .into_iter()
            .map(|(pid, out)| WorkerExit {
                pid,
                output: out.and_then(|bytes| {
                    ipc_core::codec::decode_plain(&bytes)
                        .map_err(|e| format!("the exit hook's output does not decode: {e}"))
                }),
            })
            .collect()
    }

    /// Runs `f` on every item, in parallel, and returns the results in order. If any item
    /// failed, the first failing item's error, once every item ended (Python checklist 135):
    /// [`map_results`](Self::map_results) gives each item its own `Result`.
    ///
    /// A function of several arguments takes a tuple (Python's `starmap`).
    #[doc(alias = "starmap")]
    pub fn map<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_async(f, items, None)?.get()
    }

    /// [`map`](Self::map) with an explicit chunk size (items sent to a worker at once).
    pub fn map_chunked<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_async(f, items, Some(chunksize))?.get()
    }

    /// Runs `f` on every item; one `Result` per item, in order: a failed item does not hide
    /// the others' results.
    pub fn map_results<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.results_of(remote(f), items, None)
    }

    /// [`map_results`](Self::map_results) with an explicit chunk size.
    pub fn map_results_chunked<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: usize,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.results_of(remote(f), items, Some(chunksize))
    }

    pub(crate) fn results_of<A, R>(
        &self,
        func: Result<RemoteFn<(), ()>, PoolError>,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<Vec<Result<R, TaskError>>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let (batch, n) = self.submit_all(func?, items, chunksize)?;
        batch.wait_for(n, None, &*self.engine);
        Ok(batch.take_all(n))
    }

    /// Starts a `map` and returns at once; `chunksize` `None` is Python's rule.
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_async_of(remote(f), items, chunksize)
    }

    pub(crate) fn map_async_of<A, R>(
        &self,
        func: Result<RemoteFn<(), ()>, PoolError>,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let (batch, n) = self.submit_all(func?, items, chunksize)?;
        Ok(AsyncResult::new(
            batch,
            n,
            self.engine.clone(),
            finish_all::<R>,
        ))
    }

    /// Runs `f(arg)` in a worker and waits for the result.
    pub fn apply<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<R, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.apply_async(f, arg)?.get()
    }

    /// Runs `f(arg)` in a worker; returns at once.
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<AsyncResult<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.apply_async_of(remote(f), arg)
    }

    pub(crate) fn apply_async_of<A, R>(
        &self,
        func: Result<RemoteFn<(), ()>, PoolError>,
        arg: A,
    ) -> Result<AsyncResult<R>, PoolError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let func = func?;
        let mut args = Packed::default();
        encode_into(0, &arg, &mut args)?;
        let batch = Batch::new();
        self.engine.submit(&batch, func, 0, args)?;
        Ok(AsyncResult::new(
            batch,
            1,
            self.engine.clone(),
            finish_one::<R>,
        ))
    }

    /// The results of `f` over `items`, in order, lazily: the input is read only as results
    /// are taken, and at most a bounded number of items are in flight (submitted and not yet
    /// taken), so an endless input works. Each item is a `Result` of its own.
    pub fn imap<'p, A, R, I>(&'p self, f: fn(A) -> R, items: I) -> Imap<'p, A, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'p,
    {
        self.lazily(remote(f), items, 1, true)
    }

    /// [`imap`](Self::imap) with `chunksize` items sent to a worker at once.
    pub fn imap_chunked<'p, A, R, I>(
        &'p self,
        f: fn(A) -> R,
        items: I,
        chunksize: usize,
    ) -> Imap<'p, A, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'p,
    {
        self.lazily(remote(f), items, chunksize, true)
    }

    /// [`imap`](Self::imap), yielding results as they come (any order); each says its index.
    pub fn imap_unordered<'p, A, R, I>(&'p self, f: fn(A) -> R, items: I) -> Imap<'p, A, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'p,
    {
        self.lazily(remote(f), items, 1, false)
    }

    pub(crate) fn lazily<'p, A, R, I>(
        &'p self,
        func: Result<RemoteFn<(), ()>, PoolError>,
        items: I,
        chunksize: usize,
        ordered: bool,
    ) -> Imap<'p, A, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'p,
    {
        let input = Box::new(items.into_iter());
        Imap::new(
            self.engine.clone(),
            func,
            input,
            chunksize,
            ordered,
            self.progress,
        )
    }

    /// Takes no more work; what was submitted still runs (then [`join`](Self::join)).
    pub fn close(&self) {
        self.engine.close();
    }

    /// After [`close`](Self::close): waits for every task, then stops and reaps the workers.
    pub fn join(&self) -> Result<(), PoolError> {
        self.engine.join()
    }

    /// Stops now: workers are killed and reaped, what did not end fails as cancelled. Also
    /// what dropping the pool does (once the last [`AsyncResult`] or [`Imap`] of it is gone).
    pub fn terminate(&self) {
        self.engine.terminate();
    }

    /// Encodes every item, chunks them and submits the chunks; the batch and its size.
    fn submit_all<A: Serialize>(
        &self,
        func: RemoteFn<(), ()>,
        items: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<(Arc<Batch>, u64), PoolError> {
        let items: Vec<A> = items.into_iter().collect();
        let n = items.len();
        let batch = Batch::new();
        #[cfg(feature = "progress")]
        if self.progress {
            crate::progress::attach(&batch, Some(n as u64));
        }
        let size = match (chunksize, self.chunking) {
            (Some(0), _) => {
                return Err(PoolError::Misuse("a chunk size must be at least 1".into()));
            }
            (Some(c), _) => c,
            (None, Chunking::Python) => python_chunksize(n, self.processes()),
            (None, Chunking::Adaptive { target }) => {
                batch.set_adaptive(target);
                ADAPTIVE_BLOCK
            }
        }
        .min(MAX_CHUNK);
        // Chunks go as soon as they are encoded, so the workers start while the rest is
        // encoded: one by one when they are large, in groups of at least `group` items when
        // they are small (one submission, so one lock, per group; the groups grow, so the
        // first items still leave at once). An argument that cannot travel cancels the batch
        // (what started is stopped, as `cancel` does) and is the caller's error.
        let mut group: Vec<(u64, Packed)> = Vec::new();
        let (mut grouped, mut group_items) = (0, FIRST_GROUP);
        let mut submitted_any = false;
        let chunks = items.chunks(size).enumerate();
        let last = chunks.len();
        // Room for a chunk's bytes as the previous chunk's took (no copies as a chunk grows).
        let mut bytes_per_item = 0;
        for (c, part) in chunks {
            let mut args = Packed::with_capacity(part.len(), part.len() * bytes_per_item);
            let mut step = encode_all_into((c * size) as u64, part, &mut args);
            if step.is_ok() {
                bytes_per_item = args.bytes().div_ceil(args.len().max(1));
                grouped += args.len();
                group.push(((c * size) as u64, args));
                if grouped >= group_items || c + 1 == last {
                    step = self
                        .engine
                        .submit_many(&batch, func, std::mem::take(&mut group));
                    submitted_any = true;
                    grouped = 0;
                    group_items = (group_items * 2).min(MAX_GROUP);
                }
            }
            if let Err(e) = step {
                if submitted_any {
                    batch.cancel();
                    self.engine.cancel(&batch);
                }
                return Err(e);
            }
        }
        Ok((batch, n as u64))
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes())
            .finish()
    }
}

/// The items of the first group of small chunks a `map` submits at once, and the most (see
/// `Pool::submit_all`).
const FIRST_GROUP: usize = 64;
const MAX_GROUP: usize = 4096;

/// Python's default chunk size for `map`: `len / (4 x processes)`, rounded up (0 items: 1).
pub(crate) fn python_chunksize(items: usize, processes: usize) -> usize {
    items.div_ceil(4 * processes.max(1)).max(1)
}

fn finish_all<R: DeserializeOwned>(batch: &Batch, n: u64) -> Result<Vec<R>, PoolError> {
    batch.gather(n).map_err(PoolError::Task)
}

fn finish_one<R: DeserializeOwned>(batch: &Batch, _: u64) -> Result<R, PoolError> {
    batch.take(0).map_err(PoolError::Task)
}

#[cfg(test)]
mod tests {
    use super::python_chunksize;

    // Python: chunksize, extra = divmod(len, 4 * processes); if extra: chunksize += 1.
    #[test]
    fn the_default_chunk_size_is_pythons() {
        assert_eq!(python_chunksize(100, 2), 13);
        assert_eq!(python_chunksize(8, 2), 1);
        assert_eq!(python_chunksize(9, 2), 2);
        assert_eq!(python_chunksize(1000, 4), 63);
        assert_eq!(python_chunksize(0, 4), 1);
    }
}
