//! A worker process's life: take a chunk from its mailbox, run each item, report the outcomes,
//! until the mailbox is shut down (see the crate doc for the slot protocol).
//!
//! ```text
//! per chunk:  for each item k: slot = (chunk, k); run it; append its result (or failure)
//!             flush (one Items report for the items since the last) when FLUSH_AGE has passed
//!             since the oldest unreported one (on the coarse clock: a tick of up to 4 ms),
//!             when FLUSH_BYTES are buffered, or at the end of the chunk
//! ```
//! Outcomes are reported in groups so that a chunk of many small items costs one report per
//! millisecond instead of one per item; an item whose outcome was buffered when the worker
//! died runs again elsewhere (see the crate doc).

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::Duration;

use ipc_core::process::RemoteFn;

use crate::wire::{Chunk, Failure, Packed, Report, WorkerBoot, pack};

/// The longest an outcome waits in the worker before it is reported.
const FLUSH_AGE: Duration = Duration::from_millis(1);
/// The most result bytes buffered before a report.
const FLUSH_BYTES: usize = 256 << 10;

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
    while let Ok(chunk) = boot.mailbox.get() {
        ipc_core::failpoint::hit("pool.task.taken");
        match run_chunk(&boot, pid, &chunk, &mut left, init_failure.as_deref()) {
            Ok(()) if left > 0 => {}
            // Retired (maxtasksperchild), its last outcome reported: the pool sees the exit,
            // gives what is left of the chunk to another worker and replaces this one.
            Ok(()) => break,
            // The pool shut its result queue: it is going away.
            Err(()) => return,
        }
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

/// A chunk being run: the outcomes not reported yet, and what ends the run.
struct ChunkRun<'a> {
    boot: &'a WorkerBoot,
    pid: u32,
    chunk: &'a Chunk,
    /// Items this worker may still run (counted down).
    left: &'a mut u64,
    init_failure: Option<&'a str>,
    memory: Option<MemoryCheck>,
    /// The first item not reported, where each item since ends in the result buffer, and the
    /// failures among them.
    first: u32,
    ends: Vec<u32>,
    failures: Vec<(u32, Failure)>,
    /// When the oldest unreported outcome came (coarse clock).
    since: Option<Duration>,
    group_start: std::time::Instant,
    /// The next item to run.
    next: usize,
    /// The result queue was shut: the pool is going away.
    shut: bool,
}

impl ChunkRun<'_> {
    /// Room for the next report's outcomes (at most the rest of the chunk, and its results
    /// at most as large as its arguments, up to `FLUSH_BYTES`): no copies as they grow.
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
        self.ends.reserve(rest.min(FLUSH_BYTES));
        out.reserve(arg_bytes.saturating_sub(start).min(FLUSH_BYTES));
    }

    /// Item `k` ended: its result is at the end of `out`, or `outcome` says why there is none.
    /// Reports when due, and names the next item in the slot before it runs; whether to run it.
    fn after(&mut self, k: usize, outcome: Result<(), Failure>, out: &mut Vec<u8>) -> bool {
        let item = k as u32;
        if let Err(f) = outcome {
            let f = match (f, self.init_failure) {
                (Failure::State(m), Some(why)) => Failure::State(format!("{why} ({m})")),
                (f, _) => f,
            };
            self.failures.push((item, f));
        }
        self.ends.push(out.len() as u32);
        self.next = k + 1;
        *self.left -= 1;
        let now = coarse_now();
        if let (Some(max), Some(m)) = (self.boot.max_memory, self.memory.as_mut())
            && m.due()
            && resident_bytes().is_some_and(|r| r > max)
        {
            // Retires now: reported, then the exit hook, as with max_tasks.
            *self.left = 0;
        }
        let last = self.next == self.chunk.args.len() || *self.left == 0;
        let old = now.saturating_sub(*self.since.get_or_insert(now)) >= FLUSH_AGE;
        if last || old || out.len() >= FLUSH_BYTES {
            let values = Packed::from_parts(std::mem::take(out), std::mem::take(&mut self.ends));
            self.reserve(out);
            let report = Report::Items {
                chunk: self.chunk.id,
                first: self.first,
                pid: self.pid,
                values,
                failures: std::mem::take(&mut self.failures),
                busy_ns: {
                    let now = std::time::Instant::now();
                    let busy = now - self.group_start;
                    self.group_start = now;
                    busy.as_nanos() as u64
                },
            };
            if self.boot.results.put(report).is_err() {
                self.shut = true;
                return false;
            }
            ipc_core::failpoint::hit("pool.result.committed");
            self.first = item + 1;
            self.since = None;
        }
        if last {
            return false;
        }
        self.boot
            .slot
            .atomic()
            .store(pack(self.chunk.id, item + 1), Ordering::Release);
        ipc_core::failpoint::hit("pool.task.running");
        true
    }
}

/// Runs a chunk's items (at most `left` of them, counted down), reporting them in groups: the
/// items go through the function's trampoline in one loop ([`RemoteFn::call_plain_each`]),
/// which calls [`ChunkRun::after`] after each; a panic unwinds out of the loop, is that
/// item's failure, and the loop starts again after it. An error: the pool shut the result
/// queue.
fn run_chunk(
    boot: &WorkerBoot,
    pid: u32,
    chunk: &Chunk,
    left: &mut u64,
    init_failure: Option<&str>,
) -> Result<(), ()> {
    if chunk.args.len() == 0 {
        return Ok(());
    }
    let mut run = ChunkRun {
        boot,
        pid,
        chunk,
        left,
        init_failure,
        memory: boot.max_memory.map(|_| MemoryCheck::new()),
        first: 0,
        ends: Vec::new(),
        failures: Vec::new(),
        since: None,
        group_start: std::time::Instant::now(),
        next: 0,
        shut: false,
    };
    let mut out = Vec::new();
    run.reserve(&mut out);
    let (args, items) = chunk.args.packed();
    boot.slot
        .atomic()
        .store(pack(chunk.id, 0), Ordering::Release);
    ipc_core::failpoint::hit("pool.task.running");
    loop {
        let from = items.start + run.next;
        let called = catch_unwind(AssertUnwindSafe(|| {
            chunk
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
                out.truncate(run.ends.last().map_or(0, |&e| e as usize));
                if !run.after(run.next, Err(panicked(&*payload)), &mut out) {
                    break;
                }
            }
        }
    }
    if run.shut { Err(()) } else { Ok(()) }
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
