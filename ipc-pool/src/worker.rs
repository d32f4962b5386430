//! A worker process's life: take a parcel of chunks from its mailbox, run each item, report
//! the outcomes, until the mailbox is shut down (see the crate doc for the slot protocol).
//!
//! ```text
//! per parcel: for each chunk, for each item k: slot = (chunk, k); run it; append its result
//!             (or failure)
//!             flush (one Items report for every item since the last, of one chunk or several)
//!             when FLUSH_AGE has passed since the oldest unreported one (on the coarse clock: a
//!             tick of up to 4 ms), when FLUSH_BYTES are buffered, at the end of a chunk that
//!             ends GROUP_AGE or more after the last report, or at the end of the parcel
//!             a short parcel (under ASIDE_SHORT) ran on the CPU of the thread that sent it:
//!             move off that CPU (StepAside; at most once per ASIDE_EVERY)
//! ```
//! Outcomes are reported in groups so that a chunk of many small items, or a parcel of many
//! one-item chunks, costs one report per millisecond (or per parcel) instead of one per item;
//! a slow chunk is reported when it ends. An item whose outcome was buffered when the worker
//! died runs again elsewhere (see the crate doc).

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::Duration;

use ipc_core::process::RemoteFn;

use crate::wire::{Chunk, Failure, Outcomes, Packed, Parcel, Report, WorkerBoot, pack};

/// The longest an outcome waits in the worker before it is reported.
const FLUSH_AGE: Duration = Duration::from_millis(1);
/// A chunk that ends this long after the last report is reported at once, even with more of
/// its parcel to run (a parcel of slow one-item chunks reports each; of fast ones, in groups).
const GROUP_AGE: Duration = Duration::from_micros(50);
/// The most result bytes buffered before a report.
const FLUSH_BYTES: usize = 256 << 10;

/// How often at most a worker moves off its sender's CPU.
const ASIDE_EVERY: Duration = Duration::from_millis(10);
/// A worker steps aside only after a parcel shorter than this.
const ASIDE_SHORT: Duration = Duration::from_micros(100);

/// Moves the worker off the CPU of the thread that sent it a parcel when it finds itself
/// there. A worker that slept is woken onto its waker's CPU (on this kind of VM an idle vCPU
/// does not count as idle to the scheduler), where the caller spinning for its result keeps
/// it waiting: both then take turns on one CPU for good, 12-30 us an `apply` instead of 1.5,
/// while the other CPU idles. Narrowing the worker's affinity for a moment migrates it; the
/// full affinity is given back at once.
///
/// Only after a short parcel, when waiting for work (and so idle CPUs) is what the pool
/// mostly does and the sender spins for the result; with long tasks the other CPUs are busy
/// with the other workers, and moving there at the start of a `map` crowded one
/// (`pool_map_cpu`'s speedup fell from about 1.95 to 1.8). And at most once per
/// `ASIDE_EVERY`, so that more workers than CPUs cost nothing that matters.
#[derive(Default)]
struct StepAside {
    last: Option<Duration>,
}

impl StepAside {
    /// A parcel from a thread on CPU `sender` (a `cpu_tag`) took `took` to run.
    fn after(&mut self, took: Duration, sender: u32) {
        if took >= ASIDE_SHORT || sender == 0 {
            return;
        }
        let me = ipc_core::spin::cpu_tag();
        if me != sender {
            return;
        }
        let now = coarse_now();
        if self
            .last
            .is_some_and(|t| now.saturating_sub(t) < ASIDE_EVERY)
        {
            return;
        }
        self.last = Some(now);
        let Ok(all) = rustix::thread::sched_getaffinity(None) else {
            return;
        };
        let mut others = all;
        others.unset((me - 1) as usize);
        if others.count() > 0 && rustix::thread::sched_setaffinity(None, &others).is_ok() {
            let _ = rustix::thread::sched_setaffinity(None, &all);
        }
    }
}

/// The coarse monotonic clock (a few nanoseconds to read, where `Instant::now` takes tens
/// here; it moves in ticks of a few milliseconds, so an outcome may wait one tick more).
fn coarse_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

thread_local! {
    /// The last panic's message and backtrace, left by the hook for the item that raised it.
    static PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Makes a task's panic the item's error, reported to the pool: the hook records the message and
/// the backtrace for [`run`] instead of printing them.
pub(crate) fn record_panics() {
    std::panic::set_hook(Box::new(|info| {
        let bt = std::backtrace::Backtrace::force_capture().to_string();
        PANIC.with(|p| *p.borrow_mut() = Some((info.to_string(), bt)));
    }));
}

/// The worker's main function (started by the pool under its start method).
pub(crate) fn main(mut boot: WorkerBoot) {
    record_panics();
    let pid = ipc_core::process::pid();
    if let Some(cpu) = boot.cpu {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
            eprintln!("ipc-pool worker {pid}: cannot pin to CPU {cpu}: {e}");
        }
    }
    // A failed initializer leaves the worker up: tasks that need its state fail with why.
    let init_failure = boot.init.take().and_then(|(f, arg, fds)| {
        let fds = fds.into_iter().map(|p| p.0).collect();
        let mut out = Vec::new();
        let called = catch_unwind(AssertUnwindSafe(|| {
            f.call_encoded_into(&arg, fds, &mut out)
        }));
        called_to(called).err().map(|f| match f {
            Failure::Panicked { message, .. } => format!("the initializer panicked: {message}"),
            Failure::Argument(m) => format!("the initializer's argument did not decode: {m}"),
            Failure::Result(m) | Failure::State(m) => format!("the initializer failed: {m}"),
        })
    });
    let mut left = boot.max_tasks.unwrap_or(u64::MAX);
    let mut reporter = Reporter {
        boot: &boot,
        pid,
        data: Vec::new(),
        ends: Vec::new(),
        runs: Vec::new(),
        since: None,
        group_start: std::time::Instant::now(),
    };
    let mut aside = StepAside::default();
    'parcels: while let Ok(parcel) = boot.mailbox.get() {
        ipc_core::failpoint::hit("pool.task.taken");
        reporter.group_start = std::time::Instant::now();
        let began = reporter.group_start;
        for chunk in &parcel.chunks {
            let ran = run_chunk(
                &mut reporter,
                &parcel,
                chunk,
                &mut left,
                init_failure.as_deref(),
            );
            match ran {
                Ok(()) if left > 0 => {}
                // Retired (maxtasksperchild), its last outcome reported: the pool sees the
                // exit, gives what is left of its chunks to another worker and replaces it.
                Ok(()) => break 'parcels,
                // The pool shut its result queue: it is going away.
                Err(()) => return,
            }
        }
        if reporter.flush_held().is_err() {
            return;
        }
        aside.after(began.elapsed(), parcel.cpu);
    }
    // Leaving in order (retired, or the pool closed the mailbox): the exit hook.
    if let Some(f) = &boot.exit {
        let mut out = Vec::new();
        let output = match run(f, &[], &mut out) {
            Ok(()) => Ok(serde_bytes::ByteBuf::from(out)),
            Err(Failure::Panicked { message, .. }) => {
                Err(format!("the exit hook panicked: {message}"))
            }
            Err(Failure::Argument(m) | Failure::Result(m) | Failure::State(m)) => Err(m),
        };
        let _ = boot.results.put(Report::Exited { pid, output });
    }
}

/// When to look at the resident set (see `Builder::max_memory_per_worker`): after a task of
/// 0.1 ms or more, or 1 ms after the last look (a look costs a few microseconds). Reads the
/// fine clock once per task, only when a ceiling is set.
struct MemoryCheck {
    task_start: std::time::Instant,
    last_look: std::time::Instant,
}

impl MemoryCheck {
    fn new() -> MemoryCheck {
        let now = std::time::Instant::now();
        MemoryCheck {
            task_start: now,
            last_look: now,
        }
    }

    /// A task ended: whether to look now (and the next task starts now).
    fn due(&mut self) -> bool {
        let now = std::time::Instant::now();
        let long = now - self.task_start >= Duration::from_micros(100);
        let stale = now - self.last_look >= Duration::from_millis(1);
        self.task_start = now;
        if long || stale {
            self.last_look = now;
        }
        long || stale
    }
}

/// This process's resident set, from `/proc/self/statm` (its second field, in pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// Outcomes not reported yet, of whole chunks and of the running one, in the order they ran:
/// their results end to end in one buffer (the running chunk's loop writes into it), where each
/// ends, and the runs of chunks they make.
struct Reporter<'a> {
    boot: &'a WorkerBoot,
    pid: u32,
    /// The results (moved into the chunk loop while it runs).
    data: Vec<u8>,
    ends: Vec<u32>,
    runs: Vec<Outcomes>,
    /// When the oldest unreported outcome came (coarse clock).
    since: Option<Duration>,
    /// When the items since the last report began.
    group_start: std::time::Instant,
}

impl Reporter<'_> {
    /// Reports the runs handed over (nothing to do if none), with their results, which `data`
    /// holds; an error if the pool shut the result queue.
    fn flush(&mut self, data: &mut Vec<u8>) -> Result<(), ()> {
        if self.runs.is_empty() {
            return Ok(());
        }
        let now = std::time::Instant::now();
        let report = Report::Items {
            pid: self.pid,
            values: Packed::from_parts(std::mem::take(data), std::mem::take(&mut self.ends)),
            runs: std::mem::take(&mut self.runs),
            busy_ns: (now - self.group_start).as_nanos() as u64,
        };
        self.group_start = now;
        self.since = None;
        self.boot.results.put(report).map_err(drop)?;
        ipc_core::failpoint::hit("pool.result.committed");
        Ok(())
    }

    /// [`flush`](Self::flush) between chunks (the results are in `data`).
    fn flush_held(&mut self) -> Result<(), ()> {
        let mut data = std::mem::take(&mut self.data);
        let flushed = self.flush(&mut data);
        self.data = data;
        flushed
    }
}

/// A chunk being run: the run of its outcomes not yet handed to the reporter, and what ends
/// the loop.
struct ChunkRun<'a, 'r> {
    reporter: &'r mut Reporter<'a>,
    chunk: &'r Chunk,
    /// Items this worker may still run (counted down).
    left: &'r mut u64,
    init_failure: Option<&'r str>,
    memory: Option<MemoryCheck>,
    /// The first item not handed over, and the failures since.
    first: u32,
    failures: Vec<(u32, Failure)>,
    /// The next item to run.
    next: usize,
    /// The result queue was shut: the pool is going away.
    shut: bool,
    /// The worker's slot, and when the oldest unreported outcome is due (coarse clock; zero
    /// when there is none): what an item that ends with nothing else to do looks at.
    slot: &'r std::sync::atomic::AtomicU64,
    due: Duration,
}

impl ChunkRun<'_, '_> {
    /// Room for the rest of the chunk's outcomes (at most `FLUSH_BYTES` of results, as large
    /// as the arguments): no copies as they grow.
    fn reserve(&mut self, out: &mut Vec<u8>) {
        let (args, items) = self.chunk.args.packed();
        let rest = items.len() - self.next.min(items.len());
        let start = match items.start + self.next {
            0 => 0,
            k => args.ends.get(k - 1).map_or(0, |&e| e as usize),
        };
        let arg_bytes = args
            .ends
            .get(items.end.wrapping_sub(1))
            .map_or(0, |&e| e as usize);
        self.reporter.ends.reserve(rest.min(FLUSH_BYTES));
        out.reserve(arg_bytes.saturating_sub(start).min(FLUSH_BYTES));
    }

    /// Item `k` ended: its result is at the end of `out`, or `outcome` says why there is none.
    /// Reports when due, and names the next item in the slot before it runs; whether to run it.
    ///
    /// Most items end with nothing else to do (they succeeded, their chunk goes on, no report
    /// is due, no memory ceiling to watch): they take the short way, a few nanoseconds.
    #[inline]
    fn after(&mut self, k: usize, outcome: Result<(), Failure>, out: &mut Vec<u8>) -> bool {
        if outcome.is_ok()
            && *self.left > 1
            && k + 1 < self.chunk.args.len()
            && out.len() < FLUSH_BYTES
            && self.memory.is_none()
            && coarse_now() < self.due
        {
            self.reporter.ends.push(out.len() as u32);
            self.next = k + 1;
            *self.left -= 1;
            self.slot
                .store(pack(self.chunk.id, k as u32 + 1), Ordering::Release);
            ipc_core::failpoint::hit("pool.task.running");
            return true;
        }
        self.after_slow(k, outcome, out)
    }

    /// [`after`](Self::after) when there is something to do besides.
    #[cold]
    fn after_slow(&mut self, k: usize, outcome: Result<(), Failure>, out: &mut Vec<u8>) -> bool {
        let item = k as u32;
        if let Err(f) = outcome {
            let f = match (f, self.init_failure) {
                (Failure::State(m), Some(why)) => Failure::State(format!("{why} ({m})")),
                (f, _) => f,
            };
            self.failures.push((item, f));
        }
        self.reporter.ends.push(out.len() as u32);
        self.next = k + 1;
        *self.left -= 1;
        let now = coarse_now();
        if let (Some(max), Some(m)) = (self.reporter.boot.max_memory, self.memory.as_mut())
            && m.due()
            && resident_bytes().is_some_and(|r| r > max)
        {
            // Retires now: reported, then the exit hook, as with max_tasks.
            *self.left = 0;
        }
        let last = self.next == self.chunk.args.len() || *self.left == 0;
        let since = *self.reporter.since.get_or_insert(now);
        self.due = since + FLUSH_AGE;
        let old = now >= self.due;
        let full = out.len() >= FLUSH_BYTES;
        if last || old || full {
            self.reporter.runs.push(Outcomes {
                chunk: self.chunk.id,
                first: self.first,
                count: item + 1 - self.first,
                failures: std::mem::take(&mut self.failures),
            });
            self.first = item + 1;
            // A chunk's end is reported at once when its items took a while, or when the
            // worker retires.
            let due = old
                || full
                || *self.left == 0
                || (last && self.reporter.group_start.elapsed() >= GROUP_AGE);
            if due {
                self.due = Duration::ZERO;
                if self.reporter.flush(out).is_err() {
                    self.shut = true;
                    return false;
                }
            }
            if last {
                return false;
            }
            self.reserve(out);
        }
        self.slot
            .store(pack(self.chunk.id, item + 1), Ordering::Release);
        ipc_core::failpoint::hit("pool.task.running");
        true
    }
}

/// Runs a chunk's items (at most `left` of them, counted down), handing their outcomes to the
/// reporter: the items go through the function's trampoline in one loop
/// ([`RemoteFn::call_plain_each`]), which calls [`ChunkRun::after`] after each; a panic
/// unwinds out of the loop, is that item's failure, and the loop starts again after it. An
/// error: the pool shut the result queue.
fn run_chunk<'a, 'r>(
    reporter: &'r mut Reporter<'a>,
    parcel: &'r Parcel,
    chunk: &'r Chunk,
    left: &'r mut u64,
    init_failure: Option<&'r str>,
) -> Result<(), ()> {
    if chunk.args.len() == 0 {
        return Ok(());
    }
    let boot = reporter.boot;
    let memory = boot.max_memory.map(|_| MemoryCheck::new());
    let due = reporter.since.map_or(Duration::ZERO, |t| t + FLUSH_AGE);
    let mut out = std::mem::take(&mut reporter.data);
    let mut run = ChunkRun {
        reporter,
        chunk,
        left,
        init_failure,
        memory,
        first: 0,
        failures: Vec::new(),
        next: 0,
        shut: false,
        slot: boot.slot.atomic(),
        due,
    };
    run.reserve(&mut out);
    let (args, items) = chunk.args.packed();
    boot.slot
        .atomic()
        .store(pack(chunk.id, 0), Ordering::Release);
    ipc_core::failpoint::hit("pool.task.running");
    loop {
        let from = items.start + run.next;
        let called = catch_unwind(AssertUnwindSafe(|| {
            parcel
                .func
                .call_plain_each(args, from..items.end, &mut out, &mut |k, outcome, out| {
                    run.after(k - items.start, outcome.map_err(failure_of), out)
                })
        }));
        match called {
            // Every item ran, or `after` stopped the run.
            Ok(()) => break,
            Err(payload) => {
                // Item `next` panicked, maybe after writing part of its result.
                let end = run.reporter.ends.last().map_or(0, |&e| e as usize);
                out.truncate(end);
                if !run.after(run.next, Err(panicked(&*payload)), &mut out) {
                    break;
                }
            }
        }
    }
    let shut = run.shut;
    run.reporter.data = out;
    if shut { Err(()) } else { Ok(()) }
}

/// Runs one item, appending its encoded result to `out`, catching a panic.
pub(crate) fn run(func: &RemoteFn<(), ()>, arg: &[u8], out: &mut Vec<u8>) -> Result<(), Failure> {
    called_to(catch_unwind(AssertUnwindSafe(|| {
        func.call_plain_into(arg, out)
    })))
}

/// A caught call's outcome as a failure.
fn called_to<T>(called: std::thread::Result<ipc_core::Result<T>>) -> Result<(), Failure> {
    match called {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(failure_of(e)),
        Err(payload) => Err(panicked(&*payload)),
    }
}

/// A call's error as the item's failure.
fn failure_of(e: ipc_core::Error) -> Failure {
    match e {
        ipc_core::Error::Decode(e) => Failure::Argument(e.to_string()),
        ipc_core::Error::Misuse(m) => Failure::State(m),
        e => Failure::Result(e.to_string()),
    }
}

/// A caught panic as the item's failure, with what the hook recorded.
fn panicked(payload: &(dyn std::any::Any + Send)) -> Failure {
    let (message, backtrace) = PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_else(|| (panic_text(payload), String::new()));
    Failure::Panicked { message, backtrace }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".into()
    }
}
