//! ipc-pool: a pool of worker processes (Python's `multiprocessing.Pool`), with a failure
//! contract: a task that panics, or whose worker is killed, fails alone; the pool stays usable
//! and nothing waits forever.
//!
//! ```
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let pool = ipc_pool::Pool::new(2)?;
//! assert_eq!(pool.map(square, 1..=4)?, [1, 4, 9, 16]);
//! let r = pool.apply_async(square, 12)?;
//! assert_eq!(r.get()?, 144);
//! let firsts: Vec<u64> = pool.imap(square, 1..).take(3).collect::<Result<_, _>>()?;
//! assert_eq!(firsts, [1, 4, 9]);
//! pool.close();
//! pool.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # For real workloads
//! - **Worker state**: [`Builder::initializer`] runs once per worker and makes a state (a
//!   model, a connection) that the tasks of [`Pool::stateful`] borrow (`fn(&mut S, A) -> R`);
//!   [`Builder::on_exit`] hands it to an exit hook whose outputs [`Pool::worker_exits`]
//!   collects. The state lives in ipc-core's per-thread worker state (`process::state`).
//! - **A shared read-only context**: [`Builder::context`] gives every worker an
//!   [`ipc_core::shm::Frozen`] table (sealed read-only shared memory, read in place: one copy
//!   for the whole pool, whatever the start method).
//! - **Bounds**: [`Builder::task_timeout`] (the supervisor kills a worker whose item runs past
//!   it; the item fails with [`TaskError::TimedOut`]), [`Builder::retries`] (an item whose
//!   worker died runs again), [`Builder::max_memory_per_worker`] and
//!   [`Builder::max_tasks_per_worker`] (a worker retires: it reports, runs the exit hook and
//!   leaves), [`Builder::cpu_affinity`].
//! - **Chunking**: Python's rule, an explicit size, or [`Chunking::Adaptive`]: the engine cuts
//!   an adaptive batch's chunks at dispatch into pieces of about a target time by the pace its
//!   workers report (smaller near the end), so tiny tasks travel by the hundred and slow ones
//!   one by one. Workers are given work as they finish it (a mailbox holds about 100 us of a
//!   worker's pace), never round-robin.
//! - **async** (cargo feature `async`): [`AsyncResult`] is a `Future` and [`Imap`] a `Stream`,
//!   woken by the thread that completes their items, on any runtime.
//! - **Insights**: [`Pool::insights`] (items submitted and done, per-worker tasks and busy
//!   time, chunk sizes) and [`AsyncResult::progress`]; with the cargo feature `progress`,
//!   `Builder::progress_bar` draws a bar for `map` and `imap` on a terminal (nothing
//!   otherwise).
//!
//! Tasks are plain functions (or non-capturing closures) `fn(A) -> R`: a worker is another
//! process, and the function reaches it as an [`ipc_core::process::RemoteFn`], checked to come
//! from this program and this process family. Arguments and results travel as postcard bytes,
//! so they are `Serialize + DeserializeOwned`; an argument that holds a shared object (a lock, a
//! queue, a segment: anything that travels by file descriptor) is refused when it is submitted.
//!
//! # Wire protocol (shared-memory queues of ipc-sync)
//! ```text
//! parent -> worker w   mailbox_w: Parcel { cpu (the sender's), func, chunks: [Chunk { id,
//!                                  args (packed) }] }
//!                                  (w holds the chunk it runs + about 100 us of its work, at
//!                                  most 256 chunks; a parcel is at most half of that and
//!                                  64 KiB of arguments, so the next one comes while w works)
//! worker -> parent     results:   Items { pid, results (packed), runs: [Outcomes { chunk,
//!                                         first, count, failures }], busy time }
//!                                  (a group of items: about 1-5 ms or 256 KiB of them; a
//!                                  chunk that took 50 us or more when it ends; the rest of a
//!                                  parcel when it ends)
//! supervisor -> parent results:   Died { worker }      (after every record the dead one put)
//! worker w, before each item:     slot_w = chunk << 24 | item              (shared atomic)
//! the pool stops:                 results shut down (the collector drains it and leaves)
//! ```
//! # A chunk's life (the ledger, in the parent)
//! ```text
//! PENDING --dispatch to the least loaded worker--> ASSIGNED(w) --every item reported--> gone
//! ASSIGNED(w), still in w's mailbox, while another worker has nothing --steal--> PENDING (front)
//! ASSIGNED(w) and w dies: slot_w says (chunk c, item k)
//!     chunk c:            items reported are kept; item k, unless reported, fails
//!                         (WorkerDied: its signal or exit code); every other item not
//!                         reported goes back to PENDING (front), as chunks of consecutive items
//!     chunks after c:     not started: back to PENDING (front), whole
//! ```
//! A worker writes its slot before it runs an item, so at its death the slot names the item it
//! was running (or had run last). Outcomes are reported in groups (about 1-5 ms old, so a slow
//! item is reported at once): an item that had finished but whose outcome was still in the
//! worker runs again elsewhere. So an item runs to its end twice only if its worker died within
//! those few milliseconds after it; the item the worker was running when it died never runs
//! again. A worker that retires (`max_tasks_per_worker`) reports first, then exits: the same
//! path with nothing to fail. `cancel` kills a worker that runs the cancelled task: its item is
//! then not a failure.
//! The supervisor thread, which watches the workers' pidfds, posts `Died` on the result queue
//! after the worker is dead, hence after every record it put. Records are taken from the queue
//! and accounted for under one lock, whoever takes them (the collector thread, or a caller
//! waiting for a result: see below), so a worker's reports are all accounted for before its
//! death, and every item gets exactly one outcome. The death then starts a replacement.
//!
//! # Threads and processes
//! The parent runs two threads per pool: the collector (results and deaths, completes jobs,
//! dispatches chunks) and the supervisor (waits on the workers' pidfds: Linux cannot wait on a
//! futex and a pidfd at once). A caller about to wait for a result first collects for up to
//! 50 us itself ([`Engine::help`]): a short task's result then reaches it without waking a
//! sleeping thread (18-34 us each on this kind of VM). Meanwhile, and for 1 ms after the last
//! such caller, the collector sleeps away from the result queue, so a worker's report wakes
//! nobody; a result nobody waits for (a callback's) may then wait that millisecond. Workers
//! are daemons: they die with the pool's owner (see ipc-core's lifeline), whichever way it
//! ends. A pool at rest costs no CPU: workers sleep on their mailbox's futex, the collector on
//! the result queue's, the supervisor in `poll`.
//!
//! Under the fork start method the pool forks a zygote when it is built
//! ([`ipc_core::process::Zygote`]): the pool has threads, and forking a threaded process is
//! refused, so every worker, replacements included, is forked by that single-threaded copy. Its
//! workers see this process as it was when the pool was built. Build such a pool before the
//! process starts threads (or use `ForkServer`, the default, or `Spawn`).
#![forbid(unsafe_code)]

mod engine;
mod error;
mod imap;
mod insights;
mod job;
mod local;
mod pool;
#[cfg(feature = "progress")]
mod progress;
mod serve;
mod stateful;
mod wire;
mod worker;

pub use engine::{Batch, Engine, Packed};
pub use error::{Death, PoolError, TaskError};
pub use imap::Imap;
pub use insights::{ChunkSizes, EarlierWorkers, Insights, KEPT_GONE, WorkerInsight};
pub use job::{AsyncResult, ItemOutcome, as_completed, wait_any};
pub use pool::{Builder, Chunking, Pool};
pub use serve::TaskRunner;
pub use stateful::{Stateful, WorkerExit};
