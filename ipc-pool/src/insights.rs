//! [`Insights`]: what a pool did so far, for progress displays and tuning (mpire's insights):
//! items submitted and ended, each worker's tasks and busy time, the chunk sizes dispatched.
//!
//! ```text
//! the ledger (engine) counts:  submitted items       at submit
//!                              completed, failed      at each outcome
//!                              per worker: tasks, busy time (the worker measures each group
//!                                of outcomes it reports), started, ended
//!                              chunks dispatched: count, sum, min, max, the last 1024 sizes
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// What a pool did so far ([`Pool::insights`](crate::Pool::insights)). A snapshot.
#[derive(Debug, Clone, Default)]
pub struct Insights {
    /// Items submitted so far.
    pub submitted: u64,
    /// Items that have an outcome (a value or an error), and of those the errors.
    pub completed: u64,
    /// Items that failed.
    pub failed: u64,
    /// The workers the pool started, in start order: every live one and the last
    /// [`KEPT_GONE`] that ended (a pool that recycles its workers would otherwise keep a
    /// record per worker forever).
    pub workers: Vec<WorkerInsight>,
    /// The workers that ended before those (their tasks and busy time, summed): with
    /// `workers`, every task reported is counted once.
    pub earlier: EarlierWorkers,
    /// The chunks given to workers.
    pub chunks: ChunkSizes,
}

/// One worker's part ([`Insights::workers`]).
#[derive(Debug, Clone)]
pub struct WorkerInsight {
    /// Its pid.
    pub pid: u32,
    /// Tasks it reported (values and errors; a task that died with it is not counted).
    pub tasks: u64,
    /// Time it spent running tasks.
    pub busy: Duration,
    /// How long it has lived (until now, or until it ended).
    pub lifetime: Duration,
    /// Whether it is still running.
    pub alive: bool,
}

impl WorkerInsight {
    /// The part of its life it spent waiting for work.
    pub fn idle(&self) -> Duration {
        self.lifetime.saturating_sub(self.busy)
    }
}

/// How many ended workers [`Insights::workers`] lists one by one.
pub const KEPT_GONE: usize = 256;

/// The workers that ended before those [`Insights::workers`] lists, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EarlierWorkers {
    /// How many.
    pub count: u64,
    /// The tasks they reported.
    pub tasks: u64,
    /// The time they spent running tasks.
    pub busy: Duration,
}

/// The sizes (items) of the chunks given to workers.
#[derive(Debug, Clone, Default)]
pub struct ChunkSizes {
    /// How many chunks.
    pub count: u64,
    /// Their items, all together.
    pub items: u64,
    /// The smallest and the largest.
    pub min: u32,
    /// The largest.
    pub max: u32,
    /// The sizes of the last (up to) 1024 chunks, oldest first.
    pub recent: Vec<u32>,
}

impl ChunkSizes {
    /// The median of the recent sizes (0 when there are none).
    pub fn recent_median(&self) -> u32 {
        let mut s = self.recent.clone();
        s.sort_unstable();
        s.get(s.len() / 2).copied().unwrap_or(0)
    }
}

impl fmt::Display for Insights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "items: {} submitted, {} done ({} failed); chunks: {} (sizes {}-{}, recent median {})",
            self.submitted,
            self.completed,
            self.failed,
            self.chunks.count,
            self.chunks.min,
            self.chunks.max,
            self.chunks.recent_median()
        )?;
        if self.earlier.count > 0 {
            writeln!(
                f,
                "  {} earlier workers: {} tasks, busy {:.3?}",
                self.earlier.count, self.earlier.tasks, self.earlier.busy
            )?;
        }
        for w in &self.workers {
            writeln!(
                f,
                "  worker {:>7} {:>5}: {:>7} tasks, busy {:>9.3?}, idle {:>9.3?}",
                w.pid,
                if w.alive { "live" } else { "gone" },
                w.tasks,
                w.busy,
                w.idle()
            )?;
        }
        Ok(())
    }
}

/// The ledger's counters (kept by the local engine under its lock).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    submitted: u64,
    completed: u64,
    failed: u64,
    workers: Vec<(u32, u64, Duration, Instant, Option<Instant>)>,
    earlier: EarlierWorkers,
    chunks: ChunkSizes,
    recent: VecDeque<u32>,
}

/// Chunk sizes kept for the median.
const RECENT: usize = 1024;

impl Counters {
    pub(crate) fn submitted(&mut self, items: usize) {
        self.submitted += items as u64;
    }

    pub(crate) fn completed(&mut self, items: usize, failed: usize) {
        self.completed += items as u64;
        self.failed += failed as u64;
    }

    pub(crate) fn worker_started(&mut self, pid: u32) {
        self.workers
            .push((pid, 0, Duration::ZERO, Instant::now(), None));
    }

    pub(crate) fn worker_ended(&mut self, pid: u32) {
        if let Some(w) = self.workers.iter_mut().rev().find(|w| w.0 == pid) {
            w.4.get_or_insert_with(Instant::now);
        }
        // Past KEPT_GONE ended records, the oldest one goes into the sums.
        let gone = self.workers.iter().filter(|w| w.4.is_some()).count();
        if gone > KEPT_GONE
            && let Some(i) = self.workers.iter().position(|w| w.4.is_some())
        {
            let (_, tasks, busy, _, _) = self.workers.remove(i);
            self.earlier.count += 1;
            self.earlier.tasks += tasks;
            self.earlier.busy += busy;
        }
    }

    pub(crate) fn ran(&mut self, pid: u32, tasks: usize, busy: Duration) {
        if let Some(w) = self.workers.iter_mut().rev().find(|w| w.0 == pid) {
            w.1 += tasks as u64;
            w.2 += busy;
        }
    }

    pub(crate) fn dispatched(&mut self, items: usize) {
        let n = items as u32;
        let c = &mut self.chunks;
        c.min = if c.count == 0 { n } else { c.min.min(n) };
        c.max = c.max.max(n);
        c.count += 1;
        c.items += items as u64;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(n);
    }

    pub(crate) fn snapshot(&self) -> Insights {
        let now = Instant::now();
        Insights {
            submitted: self.submitted,
            completed: self.completed,
            failed: self.failed,
            workers: self
                .workers
                .iter()
                .map(|&(pid, tasks, busy, started, ended)| WorkerInsight {
                    pid,
                    tasks,
                    busy,
                    lifetime: ended.unwrap_or(now).saturating_duration_since(started),
                    alive: ended.is_none(),
                })
                .collect(),
            earlier: self.earlier,
            chunks: ChunkSizes {
                recent: self.recent.iter().copied().collect(),
                ..self.chunks.clone()
            },
        }
    }
}
