//! The local engine: worker processes on this host, a collector thread and a supervisor thread
//! (the protocol and a chunk's life are in the crate doc).
//!
//! ```text
//! State (one mutex): workers (serial, handle, mailbox, slot, chunks assigned in order, pace),
//!                    chunks (id -> batch, func, first index, arguments, items done),
//!                    pending chunk ids (front first), closed / terminated
//! take_one (under the state lock; by the collector or a helping caller):
//!             Items  -> each run to its batch (consecutive runs of a batch as one); a
//!                       finished chunk leaves its worker; the worker's pace; one dispatch
//! dispatch:   the front pending chunk to the least loaded worker with room, in a parcel with
//!             the pending chunks behind it of the same function (room, half the depth, 64 KiB)
//!             none pending and a worker idle: the next parcel in the busiest worker's mailbox
//!             (not taken yet) goes back to the front of the pending chunks, for it (steal)
//!             Died   -> account for the dead worker's chunks (crate doc); replace it; dispatch
//! collector:  loop { take_one until empty or a caller collects (shut down: leave);
//!                    linger while callers help (1 ms after the last), else wait_ready }
//! caller:     help(done, until): take_one while the queue has records, until done or until
//! supervisor: poll(control, every worker's pidfd) -> Died on the result queue, once per worker
//! ```
//! Outcomes reach their batch after the state lock is released: a batch may run callbacks
//! ([`AsyncResult::callbacks`](crate::AsyncResult::callbacks)), and those may submit work.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle as Thread;
use std::time::{Duration, Instant};

use ipc_core::conn::{Connection, pipe};
use ipc_core::process::{Builder, JoinHandle, RemoteFn, StartMethod, Zygote};
use ipc_sync::{AtomicValue, GetError, PutError, Queue};

use crate::engine::{Batch, Engine};
use crate::error::{Death, PoolError, TaskError};
use crate::insights::{Counters, Insights};
use crate::wire::{
    Chunk, Failure, Outcomes, Packed, Parcel, PassFd, Report, SharedArgs, WorkerBoot, unpack,
};

/// Chunks given to one worker at once, by its recent pace (its own time per chunk, as it
/// reports): the one it runs, the next (so it never waits for the collector between two: a
/// refill costs tens of microseconds here), and as many more as `AHEAD_TIME` of its work, at
/// most `MAX_AHEAD` (one-item chunks of a trivial task: a few hundred nanoseconds each); two
/// until its first chunk is measured. They travel in parcels of at most half that many. Chunks of `LONG` or more go one at a time, each to the first worker that is
/// free: the refill is then under 1% of a chunk, and the last chunks end together (a chunk
/// given ahead could wait behind a long one while another worker idles).
const MAX_AHEAD: usize = 256;
const AHEAD_TIME: Duration = Duration::from_micros(100);
const LONG: Duration = Duration::from_millis(5);

/// The most argument bytes of the chunks sent to a worker in one parcel (one mailbox record);
/// a chunk larger than this goes alone.
const PARCEL_BYTES: usize = 64 << 10;

/// How long a dead worker's reaping may take (its pidfd already said it exited).
const REAP: Duration = Duration::from_secs(10);

/// How long the collector keeps away from the result queue after a caller collected (see
/// `Shared::linger`): a result nobody waits for (callbacks, another thread's batch) may wait
/// that long while callers keep collecting.
const LINGER: Duration = Duration::from_millis(1);

/// The hash of a chunk id (ids are consecutive numbers: a multiply spreads them, where the
/// default SipHash cost a fifth of the collector's lookups).
#[derive(Default)]
struct IdHash(u64);

impl Hasher for IdHash {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What `take_one` did.
enum Took {
    One,
    Nothing,
    Shut,
}

/// Outcomes to hand to their batches once the state lock is released (a batch may run
/// callbacks, which may submit work).
enum Delivery {
    Run(Arc<Batch>, u64, Vec<u8>, Vec<u32>, Vec<(u32, TaskError)>),
    One(Arc<Batch>, u64, TaskError),
}

/// Consecutive runs of a report being gathered into one delivery: their batch, the index of
/// their first item, which of the report's values they are, and their failures (by position in
/// the group).
struct Group {
    batch: Arc<Batch>,
    base: u64,
    range: std::ops::Range<usize>,
    failures: Vec<(u32, TaskError)>,
}

impl Group {
    /// Joins `next` to this group if it continues it (same batch, consecutive indices and
    /// values); otherwise gives it back.
    fn join(&mut self, next: Group) -> Option<Group> {
        let continues = Arc::ptr_eq(&self.batch, &next.batch)
            && self.range.end == next.range.start
            && self.base + self.range.len() as u64 == next.base;
        if !continues {
            return Some(next);
        }
        let shift = self.range.len() as u32;
        self.failures
            .extend(next.failures.into_iter().map(|(k, e)| (k + shift, e)));
        self.range.end = next.range.end;
        None
    }

    /// The delivery of the group's values (moved out of `values` when they are all of it).
    fn deliver(self, values: &mut Packed) -> Delivery {
        let (data, ends) = values.take_range(self.range);
        Delivery::Run(self.batch, self.base, data, ends, self.failures)
    }
}

impl Delivery {
    fn deliver(self) {
        match self {
            Delivery::Run(batch, first, data, ends, failures) => {
                batch.complete_run(first, data, ends, failures)
            }
            Delivery::One(batch, index, e) => batch.complete(index, Err(e)),
        }
    }
}

/// The initializer, its encoded argument and the descriptors of the shared objects in it.
pub(crate) type Init = (RemoteFn<(), ()>, Vec<u8>, Arc<Vec<OwnedFd>>);

/// What every worker starts with (see [`WorkerBoot`]).
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    pub(crate) max_tasks: Option<u64>,
    pub(crate) init: Option<Init>,
    pub(crate) exit: Option<RemoteFn<(), ()>>,
    /// Worker `k` (its serial) is pinned to `cpus[k % len]`.
    pub(crate) cpus: Vec<usize>,
    /// A task running longer has its worker killed (see `Shared::check_timeouts`).
    pub(crate) task_timeout: Option<Duration>,
    /// How many times an item whose worker died runs again before it fails.
    pub(crate) retries: u32,
    /// A worker whose resident set grows past this (bytes) retires.
    pub(crate) max_memory: Option<u64>,
    /// Worker `k` is named `{name}-{k + 1}` (its `current_process().name`).
    pub(crate) name: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            max_tasks: None,
            init: None,
            exit: None,
            cpus: Vec::new(),
            task_timeout: None,
            retries: 0,
            max_memory: None,
            name: "PoolWorker".into(),
        }
    }
}

/// The local engine (see the module doc).
pub(crate) struct LocalEngine {
    shared: Arc<Shared>,
    threads: Mutex<Vec<Thread<()>>>,
}

struct Shared {
    results: Queue<Report>,
    method: StartMethod,
    /// Under the fork start method: where workers come from (forked before the pool's threads).
    zygote: Option<Zygote>,
    processes: usize,
    config: WorkerConfig,
    state: Mutex<State>,
    /// Signalled when the last outstanding chunk ends (for `join`).
    idle: Condvar,
    /// Tells the supervisor to look again at the workers (a byte), or to leave (end of file).
    control: Mutex<Option<Connection>>,
    /// Callers collecting now ([`Engine::help`]), and how many times one started.
    helpers: AtomicUsize,
    helped: AtomicU64,
    /// Where the collector lingers (see `Shared::linger`): set to send it back to the queue.
    park: Mutex<bool>,
    parked: Condvar,
}

#[derive(Default)]
struct State {
    workers: Vec<Worker>,
    chunks: HashMap<u64, ChunkRec, BuildHasherDefault<IdHash>>,
    pending: VecDeque<u64>,
    next_chunk: u64,
    next_worker: u64,
    closed: bool,
    terminated: bool,
    /// Threads in `join`, waiting on `idle` (a notify is a syscall even when nobody waits:
    /// without them, the end of every `apply` paid one).
    joining: usize,
    /// The exit hook's outputs not taken yet, by worker pid, in the order the workers left.
    exits: Vec<(u32, Result<Vec<u8>, String>)>,
    counters: Counters,
}

struct Worker {
    serial: u64,
    handle: JoinHandle<()>,
    mailbox: Queue<Parcel>,
    slot: AtomicValue<u64>,
    assigned: VecDeque<u64>,
    /// Killed by the pool to stop a cancelled task: the item it ran when it died is not a
    /// failure of its own (it runs again unless its batch was cancelled).
    killed_for_cancel: bool,
    /// Its time per chunk (a moving average) for the batch whose chunks it measured (its
    /// serial), and the time it reported since its last chunk ended (as it measures: running
    /// items, not waiting for them).
    pace: Option<Duration>,
    pace_of: u64,
    busy: Duration,
    /// The slot value the supervisor last saw running and since when (task timeouts).
    watch: Option<(u64, Instant)>,
    /// Killed by the supervisor: its item ran this long, past the task timeout.
    timed_out: Option<Duration>,
}

impl Worker {
    /// How many chunks of `batch` it may hold (see `AHEAD_TIME`): by its pace on that batch
    /// (a pace measured on tiny tasks would hand all of a new batch's long chunks to one
    /// worker).
    fn depth(&self, batch: &Arc<Batch>) -> usize {
        match self.pace {
            _ if self.pace_of != batch_key(batch) => 2,
            None => 2,
            Some(pace) if pace >= LONG => 1,
            Some(pace) => {
                let ahead = AHEAD_TIME.as_nanos() / pace.as_nanos().max(1);
                (2 + ahead as usize).min(MAX_AHEAD)
            }
        }
    }

    /// It reported items it spent `busy` on, and the last of them ended `n` of its chunks: the
    /// pace moves a quarter of the way to the time it ran each of those chunks (the first
    /// chunk sets it). Its own time, not the time between reports: that would count its waits
    /// for work, make its mailbox shallower, and so its waits longer.
    /// A new batch (`batch`, the one of the chunks that ended) starts a new pace.
    fn paced(&mut self, busy: Duration, n: usize, batch: u64) {
        self.busy += busy;
        if n == 0 {
            return;
        }
        let took = std::mem::take(&mut self.busy) / n as u32;
        if self.pace_of != batch {
            (self.pace, self.pace_of) = (None, batch);
        }
        self.pace = Some(self.pace.map_or(took, |p| (p * 3 + took) / 4));
    }
}

/// A batch's key for a worker's pace: its serial (not its address, which the next batch often
/// takes: a warm-up's pace on tiny tasks then sent a whole map of long ones to one worker).
fn batch_key(batch: &Arc<Batch>) -> u64 {
    batch.serial()
}

struct ChunkRec {
    batch: Arc<Batch>,
    func: RemoteFn<(), ()>,
    first: u64,
    args: SharedArgs,
    done: Vec<bool>,
    left: usize,
    /// Items (by position) that ran before on workers that died (retries).
    earlier: Vec<(u32, Vec<Death>)>,
    /// Given to a worker before (and taken back from its mailbox: see `Shared::steal`):
    /// counted in the insights once.
    counted: bool,
}

impl LocalEngine {
    /// Starts `processes` workers under `method`, and the two threads.
    pub(crate) fn start(
        processes: usize,
        method: StartMethod,
        config: WorkerConfig,
    ) -> Result<LocalEngine, PoolError> {
        let zygote = match method {
            StartMethod::Fork => Some(Zygote::new().map_err(|e| {
                PoolError::Misuse(format!(
                    "a pool under the fork start method forks a zygote when it is built, and \
                     this process cannot fork now ({e}); build the pool before starting threads, \
                     or use StartMethod::ForkServer (the default) or StartMethod::Spawn"
                ))
            })?),
            _ => None,
        };
        let (ours, theirs) = pipe()?;
        let shared = Arc::new(Shared {
            results: Queue::new()?,
            method,
            zygote,
            processes,
            config,
            state: Mutex::new(State {
                next_chunk: 1,
                ..State::default()
            }),
            idle: Condvar::new(),
            control: Mutex::new(Some(ours)),
            helpers: AtomicUsize::new(0),
            helped: AtomicU64::new(0),
            park: Mutex::new(false),
            parked: Condvar::new(),
        });
        {
            let mut st = shared.lock();
            for _ in 0..processes {
                match shared.start_worker(&mut st) {
                    Ok(w) => st.workers.push(w),
                    Err(e) => {
                        // Checklist 143: the workers started so far are stopped.
                        drop(st);
                        shared.stop_workers(true);
                        return Err(e);
                    }
                }
            }
        }
        let s1 = shared.clone();
        let s2 = shared.clone();
        let threads = vec![
            std::thread::Builder::new()
                .name("ipc-pool-collector".into())
                .spawn(move || s1.collect())
                .map_err(|e| PoolError::Os(ipc_core::Error::Io(e)))?,
            std::thread::Builder::new()
                .name("ipc-pool-supervisor".into())
                .spawn(move || s2.supervise(theirs))
                .map_err(|e| PoolError::Os(ipc_core::Error::Io(e)))?,
        ];
        Ok(LocalEngine {
            shared,
            threads: Mutex::new(threads),
        })
    }

    /// Stops the threads (after the workers are gone or going).
    fn stop_threads(&self) {
        // The collector drains what is left, then leaves.
        self.shared.results.shutdown(false);
        self.shared.rouse();
        // End of file on the control channel: the supervisor leaves.
        drop(
            self.shared
                .control
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Engine for LocalEngine {
    fn processes(&self) -> usize {
        self.shared.processes
    }

    fn submit_many(
        &self,
        batch: &Arc<Batch>,
        func: RemoteFn<(), ()>,
        chunks: Vec<(u64, Packed)>,
    ) -> Result<(), PoolError> {
        let mut st = self.shared.lock();
        if st.closed || st.terminated {
            return Err(PoolError::Closed);
        }
        for (first, args) in chunks {
            if args.is_empty() {
                continue;
            }
            st.counters.submitted(args.len());
            batch.undispatched(args.len(), true);
            let id = st.new_chunk(batch.clone(), func, first, args);
            st.pending.push_back(id);
        }
        self.shared.dispatch(&mut st);
        Ok(())
    }

    fn insights(&self) -> Insights {
        self.shared.lock().counters.snapshot()
    }

    fn take_worker_exits(&self) -> Vec<(u32, Result<Vec<u8>, String>)> {
        std::mem::take(&mut self.shared.lock().exits)
    }

    fn help(&self, done: &dyn Fn() -> bool, until: Instant) {
        let sh = &*self.shared;
        sh.helpers.fetch_add(1, Ordering::SeqCst);
        sh.helped.fetch_add(1, Ordering::Release);
        let mut i = 0u32;
        while !done() {
            if !sh.results.is_empty() {
                if let Took::Shut = sh.take_one() {
                    break;
                }
                continue;
            }
            i = i.wrapping_add(1);
            if i.is_multiple_of(64) && Instant::now() >= until {
                break;
            }
            std::hint::spin_loop();
        }
        sh.helpers.fetch_sub(1, Ordering::SeqCst);
        if !done() {
            // The caller goes to sleep: the collector must not linger.
            sh.rouse();
        }
    }

    fn cancel(&self, batch: &Arc<Batch>) {
        let mut st = self.shared.lock();
        let State {
            pending, chunks, ..
        } = &mut *st;
        pending.retain(|id| {
            let drop_it = chunks.get(id).is_some_and(|c| Arc::ptr_eq(&c.batch, batch));
            if drop_it {
                chunks.remove(id);
            }
            !drop_it
        });
        // Its chunks waiting in a worker's mailbox are taken back: the mailbox is emptied
        // (what comes out, the worker did not take) and the other chunks go back in their
        // order (or, if the mailbox refuses one, to the front of the pending ones). A worker
        // running one of its items is killed (and replaced, as any dead worker). A worker that
        // took a chunk of it a moment ago and has not named it in its slot yet runs it to no
        // one's use.
        let State {
            workers,
            chunks,
            pending,
            ..
        } = &mut *st;
        let of_batch = |chunks: &HashMap<u64, ChunkRec, BuildHasherDefault<IdHash>>, id: &u64| {
            chunks.get(id).is_some_and(|c| Arc::ptr_eq(&c.batch, batch))
        };
        for w in workers.iter_mut() {
            if w.assigned.iter().any(|id| of_batch(chunks, id)) {
                let mut queued = Vec::new();
                while let Ok(parcel) = w.mailbox.try_get() {
                    queued.push(parcel);
                }
                let mut refused = Vec::new();
                for mut parcel in queued {
                    parcel.chunks.retain(|c| {
                        let theirs = of_batch(chunks, &c.id);
                        if theirs {
                            w.assigned.retain(|&a| a != c.id);
                            chunks.remove(&c.id);
                        }
                        !theirs
                    });
                    if parcel.chunks.is_empty() {
                        continue;
                    }
                    if let Err(e) = w.mailbox.try_put(parcel) {
                        for c in e.into_inner().chunks {
                            w.assigned.retain(|&a| a != c.id);
                            refused.push(c.id);
                        }
                    }
                }
                for id in refused.into_iter().rev() {
                    pending.push_front(id);
                }
            }
            let (running, _) = unpack(w.slot.load());
            let runs_it = w.assigned.front() == Some(&running)
                && chunks
                    .get(&running)
                    .is_some_and(|c| Arc::ptr_eq(&c.batch, batch));
            if runs_it && !w.killed_for_cancel {
                w.killed_for_cancel = true;
                let _ = w.handle.kill();
            }
        }
        self.shared.idle_if_done(&st);
        self.shared.dispatch(&mut st);
    }

    fn close(&self) {
        self.shared.lock().closed = true;
    }

    fn join(&self) -> Result<(), PoolError> {
        let mut st = self.shared.lock();
        if !st.closed && !st.terminated {
            return Err(PoolError::Misuse(
                "join() before close() (or terminate()) would wait forever".into(),
            ));
        }
        st.joining += 1;
        while !st.chunks.is_empty() && !st.terminated {
            st = self.shared.idle.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.joining -= 1;
        drop(st);
        self.shared.stop_workers(false);
        self.stop_threads();
        Ok(())
    }

    fn terminate(&self) {
        let dropped = {
            let mut st = self.shared.lock();
            st.terminated = true;
            st.closed = true;
            st.drop_all()
        };
        self.shared.idle.notify_all();
        for (batch, index, e) in dropped {
            batch.complete(index, Err(e));
        }
        self.shared.stop_workers(true);
        self.stop_threads();
    }
}

impl Drop for LocalEngine {
    fn drop(&mut self) {
        if !self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            self.terminate();
        }
    }
}

impl State {
    /// Forgets every chunk; what they had not reported, as cancelled items for their batches
    /// (to be completed once the lock is released).
    fn drop_all(&mut self) -> Vec<(Arc<Batch>, u64, TaskError)> {
        self.pending.clear();
        let mut dropped = Vec::new();
        for (_, c) in std::mem::take(&mut self.chunks) {
            for (k, done) in c.done.iter().enumerate() {
                if !done {
                    let index = c.first + k as u64;
                    dropped.push((c.batch.clone(), index, TaskError::Cancelled { index }));
                }
            }
        }
        dropped
    }

    fn new_chunk(
        &mut self,
        batch: Arc<Batch>,
        func: RemoteFn<(), ()>,
        first: u64,
        args: Packed,
    ) -> u64 {
        let id = self.next_chunk;
        self.next_chunk += 1;
        let n = args.len();
        self.chunks.insert(
            id,
            ChunkRec {
                batch,
                func,
                first,
                args: SharedArgs::new(args),
                done: vec![false; n],
                left: n,
                earlier: Vec::new(),
                counted: false,
            },
        );
        id
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts one worker (its serial is taken from the state).
    fn start_worker(&self, st: &mut State) -> Result<Worker, PoolError> {
        let serial = st.next_worker;
        st.next_worker += 1;
        let mailbox = Queue::new()?;
        let slot = AtomicValue::new(0u64)?;
        let boot = WorkerBoot {
            mailbox: mailbox.clone(),
            results: self.results.clone(),
            slot: slot.clone(),
            max_tasks: self.config.max_tasks,
            init: match &self.config.init {
                None => None,
                Some((f, arg, fds)) => Some((
                    *f,
                    serde_bytes::ByteBuf::from(arg.clone()),
                    fds.iter()
                        .map(|fd| fd.try_clone().map(PassFd))
                        .collect::<Result<_, _>>()
                        .map_err(|e| PoolError::Os(ipc_core::Error::Io(e)))?,
                )),
            },
            exit: self.config.exit,
            max_memory: self.config.max_memory,
            cpu: (!self.config.cpus.is_empty())
                .then(|| self.config.cpus[(serial % self.config.cpus.len() as u64) as usize]),
        };
        let mut builder = Builder::new()
            .name(format!("{}-{}", self.config.name, serial + 1))
            .daemon(true)
            .start_method(self.method);
        if let Some(z) = &self.zygote {
            builder = builder.zygote(z);
        }
        let handle = builder.spawn(boot, crate::worker::main)?;
        st.counters.worker_started(handle.pid());
        Ok(Worker {
            serial,
            handle,
            mailbox,
            slot,
            assigned: VecDeque::new(),
            killed_for_cancel: false,
            pace: None,
            pace_of: 0,
            busy: Duration::ZERO,
            watch: None,
            timed_out: None,
        })
    }

    /// Gives pending chunks to workers with room ([`Worker::depth`]), least loaded first; then,
    /// if none is left and a worker has nothing to run, takes chunks back from a busy worker's
    /// mailbox for it (`steal`).
    fn dispatch(&self, st: &mut State) {
        self.dispatch_pending(st);
        if st.pending.is_empty() && Self::steal(st) {
            self.dispatch_pending(st);
        }
    }

    /// Nothing is pending, and a worker has nothing to run while another holds chunks it has
    /// not taken from its mailbox yet, behind the one it runs (given ahead, so that it never
    /// waits for the collector between two). The next parcel in that mailbox goes back to the
    /// front of the pending chunks, for the idle worker: otherwise chunks wait behind a long
    /// item (or a worker that shares its CPU with the caller) while the other worker idles. A
    /// parcel the worker took first is no longer in the mailbox: nothing is moved, nothing runs
    /// twice. True if chunks were moved.
    fn steal(st: &mut State) -> bool {
        let State {
            workers,
            chunks,
            pending,
            ..
        } = st;
        if !workers.iter().any(|w| w.assigned.is_empty()) {
            return false;
        }
        let Some(victim) = workers
            .iter_mut()
            .filter(|w| w.assigned.len() >= 2)
            .max_by_key(|w| w.assigned.len())
        else {
            return false;
        };
        let Ok(parcel) = victim.mailbox.try_get() else {
            return false;
        };
        for c in parcel.chunks.iter().rev() {
            victim.assigned.retain(|&a| a != c.id);
            if let Some(rec) = chunks.get(&c.id) {
                rec.batch.undispatched(rec.args.len(), true);
                pending.push_front(c.id);
            }
        }
        true
    }

    /// Gives pending chunks to workers with room ([`Worker::depth`]), least loaded first.
    fn dispatch_pending(&self, st: &mut State) {
        let State {
            workers,
            chunks,
            pending,
            counters,
            next_chunk,
            ..
        } = st;
        // Workers whose mailbox refused the chunk at the front (allocated only then).
        let mut refused: Vec<usize> = Vec::new();
        let workers_len = workers.len();
        while let Some(&front) = pending.front() {
            let Some(rec) = chunks.get_mut(&front) else {
                pending.pop_front();
                continue;
            };
            // An adaptive batch's chunk goes in pieces (see `Batch::piece`): the piece gets an
            // id of its own, the rest stays at the front.
            let piece = rec.batch.piece(rec.args.len(), workers.len());
            let fresh = rec.left == rec.args.len() && rec.earlier.is_empty();
            let id = if piece < rec.args.len() && fresh {
                let (head, tail) = std::mem::take(&mut rec.args).split(piece);
                let head_rec = ChunkRec {
                    batch: rec.batch.clone(),
                    func: rec.func,
                    first: rec.first,
                    done: vec![false; head.len()],
                    left: head.len(),
                    earlier: Vec::new(),
                    counted: false,
                    args: head,
                };
                rec.first += piece as u64;
                rec.args = tail;
                rec.done.truncate(rec.args.len());
                rec.left = rec.args.len();
                let id = *next_chunk;
                *next_chunk += 1;
                chunks.insert(id, head_rec);
                pending.push_front(id);
                id
            } else {
                front
            };
            let rec = &chunks[&id];
            let Some(i) = (0..workers.len())
                .filter(|&i| {
                    workers[i].assigned.len() < workers[i].depth(&rec.batch)
                        && !refused.contains(&i)
                })
                .min_by_key(|&i| workers[i].assigned.len())
            else {
                break;
            };
            let w = &mut workers[i];
            // The parcel: this chunk, and the pending ones behind it of the same function that
            // go whole, while the worker has room (at most half its depth, so that the next
            // parcel arrives while it runs this one) and the parcel stays small.
            let func = rec.func;
            let mut ids = vec![id];
            let mut bytes = rec.args.bytes();
            let depth = w.depth(&rec.batch);
            let room = (depth - w.assigned.len()).min(depth / 2);
            // (`id` is at the front now, whether or not it was cut from the front chunk.)
            for &next in pending.iter().skip(1) {
                if ids.len() >= room {
                    break;
                }
                let Some(r) = chunks.get(&next) else { break };
                let whole = r.left == r.args.len()
                    && r.earlier.is_empty()
                    && r.batch.piece(r.args.len(), workers_len) >= r.args.len();
                if r.func != func || !whole || bytes + r.args.bytes() > PARCEL_BYTES {
                    break;
                }
                bytes += r.args.bytes();
                ids.push(next);
            }
            let parcel = Parcel {
                cpu: ipc_core::spin::cpu_tag(),
                func,
                chunks: ids
                    .iter()
                    .map(|id| Chunk {
                        id: *id,
                        args: chunks[id].args.clone(),
                    })
                    .collect(),
            };
            let sent = match w.mailbox.try_put(parcel) {
                Ok(()) => true,
                // A parcel larger than the free room: an idle worker takes it as it streams in
                // (bounded by the worker's life).
                Err(PutError::Full(parcel)) if w.assigned.is_empty() => put_while_alive(w, parcel),
                Err(_) => false,
            };
            if sent {
                for id in &ids {
                    if let Some(rec) = chunks.get_mut(id) {
                        if !std::mem::replace(&mut rec.counted, true) {
                            counters.dispatched(rec.args.len());
                        }
                        rec.batch.undispatched(rec.args.len(), false);
                    }
                    w.assigned.push_back(*id);
                    pending.pop_front();
                }
                refused.clear();
            } else {
                refused.push(i);
            }
        }
    }

    /// Wakes the threads in `join` if no chunk is left.
    fn idle_if_done(&self, st: &State) {
        if st.chunks.is_empty() && st.joining > 0 {
            self.idle.notify_all();
        }
    }

    /// The collector thread (see the module doc).
    fn collect(&self) {
        let mut seen = self.helped.load(Ordering::Acquire);
        loop {
            // A caller collecting now takes every record: racing it for the lock (and being
            // woken by each report) only slows both.
            while self.helpers.load(Ordering::Acquire) == 0 {
                match self.take_one() {
                    Took::One => {}
                    Took::Nothing => break,
                    Took::Shut => return,
                }
            }
            if !self.linger(&mut seen) {
                self.results.wait_ready(None);
            }
        }
    }

    /// While callers collect ([`Engine::help`]), or did within the last `LINGER`, the
    /// collector sleeps away from the result queue, so that a worker's report wakes nobody:
    /// true when a caller that gave up rouses it (look at the queue now), false when nobody
    /// helped for `LINGER` (sleep on the queue).
    fn linger(&self, seen: &mut u64) -> bool {
        let mut roused = self.park.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if std::mem::take(&mut *roused) {
                // The help that roused it is over: not a reason to linger again (which slept
                // a whole `LINGER` while nobody collected).
                *seen = self.helped.load(Ordering::Acquire);
                return true;
            }
            let now = self.helped.load(Ordering::Acquire);
            if now == *seen && self.helpers.load(Ordering::Acquire) == 0 {
                return false;
            }
            *seen = now;
            roused = self
                .parked
                .wait_timeout(roused, LINGER)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Sends the collector back to the result queue at once (a caller stopped collecting
    /// before its wait was over, or the pool stops).
    fn rouse(&self) {
        *self.park.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.parked.notify_one();
    }

    /// Takes the next report and accounts for it, under the state lock: whoever collects
    /// (the collector or a helping caller), reports are accounted for in the queue's order,
    /// so a worker's death comes after every report it put. Outcomes are delivered after the
    /// lock is released.
    fn take_one(&self) -> Took {
        let mut st = self.lock();
        let report = match self.results.try_get() {
            Ok(r) => r,
            Err(GetError::Empty) => return Took::Nothing,
            // A record that does not decode (no worker writes one): skipped.
            Err(GetError::Decode(_)) => return Took::One,
            Err(_) => return Took::Shut,
        };
        let out: Vec<Delivery> = match report {
            Report::Items {
                pid,
                mut values,
                runs,
                busy_ns,
            } => {
                let busy = Duration::from_nanos(busy_ns);
                let total = values.len();
                st.counters.ran(pid, total, busy);
                let mut out: Vec<Delivery> = Vec::new();
                let (mut ended, mut ended_batch) = (0, 0);
                // Runs accepted one after the other, of one batch, with consecutive indices and
                // values: delivered as one (`values` itself when they are all of it).
                let mut group: Option<Group> = None;
                let mut at = 0;
                for run in runs {
                    let range = at..at + run.count as usize;
                    if range.end > total {
                        // A report that does not add up (no worker writes one): the rest is
                        // left to the worker's death or retirement.
                        break;
                    }
                    at = range.end;
                    let mut batch = 0;
                    if let Some(rec) = st.chunks.get(&run.chunk) {
                        let share = busy.mul_f64(range.len() as f64 / total.max(1) as f64);
                        rec.batch.paced(range.len(), share);
                        batch = batch_key(&rec.batch);
                    }
                    let (accepted, chunk_ended) = self.on_items(&mut st, pid, run, range);
                    if chunk_ended {
                        ended += 1;
                        ended_batch = batch;
                    }
                    let rest = match (&mut group, accepted) {
                        (_, None) => None,
                        (Some(g), Some(next)) => g.join(next),
                        (None, next) => next,
                    };
                    if let Some(next) = rest
                        && let Some(g) = group.replace(next)
                    {
                        out.push(g.deliver(&mut values));
                    }
                }
                if let Some(g) = group {
                    out.push(g.deliver(&mut values));
                }
                if let Some(w) = st.workers.iter_mut().find(|w| w.handle.pid() == pid) {
                    w.paced(busy, ended, ended_batch);
                }
                if ended > 0 {
                    self.dispatch(&mut st);
                }
                out
            }
            Report::Died { worker } => self.on_death(&mut st, worker),
            Report::Exited { pid, output } => {
                st.exits.push((pid, output.map(|b| b.into_vec())));
                Vec::new()
            }
        };
        drop(st);
        for d in out {
            d.deliver();
        }
        Took::One
    }

    /// Accounts for a run of outcomes, whose results are the report's values `range`: what to
    /// deliver (`None`: cancelled, or already reported), and whether its chunk ended (the
    /// caller then dispatches, once for all the runs of a report).
    fn on_items(
        &self,
        st: &mut State,
        pid: u32,
        run: Outcomes,
        range: std::ops::Range<usize>,
    ) -> (Option<Group>, bool) {
        let Outcomes {
            chunk,
            first,
            count,
            failures,
        } = run;
        let Some(rec) = st.chunks.get_mut(&chunk) else {
            // Cancelled, or the pool was terminated.
            return (None, false);
        };
        let (start, n) = (first as usize, count as usize);
        if start + n > rec.done.len() || rec.done[start..start + n].iter().any(|&d| d) {
            return (None, false);
        }
        rec.done[start..start + n].fill(true);
        rec.left -= n;
        let failed = failures.len();
        let base = rec.first + u64::from(first);
        let failures = failures
            .into_iter()
            .map(|(k, f)| (k - first, task_error(base + u64::from(k - first), pid, f)))
            .collect();
        let batch = rec.batch.clone();
        st.counters.completed(n, failed);
        let ended = rec.left == 0;
        if ended {
            st.chunks.remove(&chunk);
            if let Some(w) = st
                .workers
                .iter_mut()
                .find(|w| w.assigned.front() == Some(&chunk))
            {
                w.assigned.pop_front();
            }
            self.idle_if_done(st);
        }
        let group = Group {
            batch,
            base,
            range,
            failures,
        };
        (Some(group), ended)
    }

    fn on_death(&self, st: &mut State, serial: u64) -> Vec<Delivery> {
        let Some(pos) = st.workers.iter().position(|w| w.serial == serial) else {
            return Vec::new();
        };
        let w = st.workers.swap_remove(pos);
        let code = w.handle.join_timeout(REAP).ok();
        let pid = w.handle.pid();
        st.counters.worker_ended(pid);
        let (running, item) = unpack(w.slot.load());
        let mut requeue = Vec::new();
        // Delivered once the lock is released (see `on_items`).
        let mut failed: Vec<Delivery> = Vec::new();
        for id in &w.assigned {
            let Some(rec) = st.chunks.remove(id) else {
                continue;
            };
            if rec.batch.is_cancelled() {
                continue;
            }
            let started = (*id == running).then_some(item as usize);
            let mut rest = Vec::new();
            for k in 0..rec.args.len() {
                if rec.done[k] {
                    continue;
                }
                let index = rec.first + k as u64;
                let mut earlier = rec
                    .earlier
                    .iter()
                    .find(|e| e.0 as usize == k)
                    .map(|e| e.1.clone())
                    .unwrap_or_default();
                if started == Some(k) && !w.killed_for_cancel {
                    let death = Death {
                        pid,
                        signal: code.filter(|c| *c < 0).map(|c| -c),
                        exit_code: code.filter(|c| *c >= 0),
                    };
                    let error = if let Some(after) = w.timed_out {
                        Some(TaskError::TimedOut { index, pid, after })
                    } else if earlier.len() < self.config.retries as usize {
                        // Retried (opt-in): it runs again on another worker.
                        earlier.push(death);
                        None
                    } else {
                        Some(TaskError::WorkerDied {
                            index,
                            pid: death.pid,
                            signal: death.signal,
                            exit_code: death.exit_code,
                            earlier: std::mem::take(&mut earlier),
                        })
                    };
                    if let Some(e) = error {
                        failed.push(Delivery::One(rec.batch.clone(), index, e));
                        continue;
                    }
                }
                rest.push((index, rec.args.get(k), earlier));
            }
            // The items left run again, as chunks of consecutive indices.
            for run in consecutive(rest) {
                requeue.push((rec.batch.clone(), rec.func, run));
            }
        }
        let mut ids = Vec::new();
        for (batch, func, (first, items, earlier)) in requeue {
            let id = st.new_chunk(batch, func, first, items);
            if let Some(rec) = st.chunks.get_mut(&id) {
                rec.earlier = earlier;
            }
            ids.push(id);
        }
        for id in ids.into_iter().rev() {
            st.pending.push_front(id);
        }
        if !st.terminated {
            match self.start_worker(st) {
                Ok(nw) => st.workers.push(nw),
                Err(e) => eprintln!("ipc-pool: a replacement worker could not start: {e}"),
            }
            self.wake_supervisor();
        }
        if st.workers.is_empty() {
            // Nobody left to run what waits: it fails rather than waiting forever.
            failed.extend(
                st.drop_all()
                    .into_iter()
                    .map(|(b, i, e)| Delivery::One(b, i, e)),
            );
        }
        self.idle_if_done(st);
        self.dispatch(st);
        st.counters.completed(failed.len(), failed.len());
        failed
    }

    fn wake_supervisor(&self) {
        if let Some(c) = self
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = c.send(&());
        }
    }

    /// The supervisor thread (see the module doc).
    fn supervise(&self, control: Connection) {
        let mut told: Vec<u64> = Vec::new();
        loop {
            let watched: Vec<(u64, OwnedFd)> = self
                .lock()
                .workers
                .iter()
                .filter(|w| !told.contains(&w.serial))
                .filter_map(|w| {
                    let fd = w.handle.sentinel().try_clone_to_owned().ok()?;
                    Some((w.serial, fd))
                })
                .collect();
            let mut fds: Vec<std::os::fd::BorrowedFd<'_>> = vec![control.as_fd()];
            fds.extend(watched.iter().map(|(_, fd)| fd.as_fd()));
            let tick = self
                .config
                .task_timeout
                .map(|t| (t / 4).clamp(Duration::from_millis(1), Duration::from_millis(100)));
            let Ok(ready) = ipc_core::conn::wait(&fds, tick) else {
                return;
            };
            if let Some(limit) = self.config.task_timeout {
                self.check_timeouts(limit);
            }
            for i in ready {
                if i == 0 {
                    if control.recv::<()>().is_err() {
                        return;
                    }
                    continue;
                }
                let serial = watched[i - 1].0;
                told.push(serial);
                if self.results.put(Report::Died { worker: serial }).is_err() {
                    return;
                }
            }
            let live: Vec<u64> = self.lock().workers.iter().map(|w| w.serial).collect();
            told.retain(|s| live.contains(s));
        }
    }

    /// Kills the workers whose item has run `limit` or longer. An item runs while its slot
    /// names it and it is not reported (a worker that finished its chunk reported it: an idle
    /// worker's slot names a done item); its time counts from when the supervisor first saw
    /// the slot name it, so a task is stopped between `limit` and `limit` plus a tick.
    fn check_timeouts(&self, limit: Duration) {
        let mut st = self.lock();
        let now = Instant::now();
        let State {
            workers, chunks, ..
        } = &mut *st;
        for w in workers.iter_mut() {
            if w.timed_out.is_some() || w.killed_for_cancel {
                continue;
            }
            let slot = w.slot.load();
            let (c, k) = unpack(slot);
            let running = w.assigned.contains(&c)
                && chunks
                    .get(&c)
                    .is_some_and(|rec| rec.done.get(k as usize) == Some(&false));
            match w.watch {
                _ if !running => w.watch = None,
                Some((seen, since)) if seen == slot => {
                    let ran = now.saturating_duration_since(since);
                    if ran >= limit {
                        w.timed_out = Some(ran);
                        let _ = w.handle.kill();
                    }
                }
                _ => w.watch = Some((slot, now)),
            }
        }
    }

    /// Ends every worker: shuts their mailboxes (they leave after what they hold), or kills
    /// them (`kill`); then reaps them.
    fn stop_workers(&self, kill: bool) {
        let workers = std::mem::take(&mut self.lock().workers);
        let mut ended = Vec::new();
        for w in &workers {
            w.mailbox.shutdown(kill);
            if kill {
                let _ = w.handle.kill();
            }
        }
        for w in workers {
            if w.handle.join_timeout(REAP).is_err() {
                let _ = w.handle.kill();
                let _ = w.handle.join_timeout(REAP);
            }
            ended.push(w.handle.pid());
        }
        let mut st = self.lock();
        for pid in ended {
            st.counters.worker_ended(pid);
        }
    }
}

/// Puts a parcel into an idle worker's mailbox as it streams in; false if the worker died.
fn put_while_alive(w: &Worker, mut parcel: Parcel) -> bool {
    loop {
        match w.mailbox.put_timeout(parcel, Duration::from_millis(100)) {
            Ok(()) => return true,
            Err(PutError::Full(p)) if w.handle.is_alive() => parcel = p,
            Err(_) => return false,
        }
    }
}

/// A worker's failure of item `index`, as the pool reports it.
pub(crate) fn task_error(index: u64, pid: u32, f: Failure) -> TaskError {
    match f {
        Failure::Panicked { message, backtrace } => TaskError::Panicked {
            index,
            pid,
            message,
            backtrace,
        },
        Failure::Argument(message) => TaskError::Argument { index, message },
        Failure::Result(message) => TaskError::Result { index, message },
        Failure::State(message) => TaskError::WorkerState {
            index,
            pid,
            message,
        },
    }
}

/// Earlier attempts of a chunk's items, by position.
type Earlier = Vec<(u32, Vec<Death>)>;

/// Groups `(index, argument, earlier attempts)` (ascending) into runs of consecutive indices.
fn consecutive(items: Vec<(u64, &[u8], Vec<Death>)>) -> Vec<(u64, Packed, Earlier)> {
    let mut runs: Vec<(u64, Packed, Earlier)> = Vec::new();
    for (index, arg, deaths) in items {
        match runs.last_mut() {
            Some((first, args, _)) if *first + args.len() as u64 == index => {}
            _ => runs.push((index, Packed::default(), Vec::new())),
        }
        let (_, args, earlier) = runs.last_mut().expect("just pushed");
        if !deaths.is_empty() {
            earlier.push((args.len() as u32, deaths));
        }
        args.push(arg);
    }
    runs
}
