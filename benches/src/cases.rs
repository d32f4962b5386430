//! The registry of named cases, shared by the criterion benches, the compare binary and (by name,
//! unit and size) the CPython script `benches/python/mp_bench.py`.
//!
//! Every case of issue #4 is listed, in the CPython script's order. A case whose Rust side does
//! not exist yet has [`Run::NotYet`] with what it waits for: the compare table shows it as "not
//! yet" instead of a figure, never a stand-in.

use std::time::Duration;

use serde::Serialize;

use crate::pin::Placement;

/// Whether a lower or a higher figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Times: lower is better.
    Lower,
    /// Rates: higher is better.
    Higher,
}

/// How a repetition's elapsed time over `n` operations becomes the case's figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Figure {
    /// Milliseconds per operation.
    MillisPerOp,
    /// Milliseconds for the whole timed region (a workload, whatever its `n`).
    Millis,
    /// Microseconds per operation.
    MicrosPerOp,
    /// Nanoseconds per operation.
    NanosPerOp,
    /// Operations per second, counting `per_op` operations for each of the `n`
    /// (e.g. 2 for two processes doing `n` each).
    PerSecond {
        /// Operations counted per unit of `n`.
        per_op: u64,
    },
    /// Megabytes (10^6 bytes) of payload per second, `bytes` per operation.
    MegabytesPerSecond {
        /// Payload bytes per operation.
        bytes: u64,
    },
    /// A ratio the case measured itself (a speedup), returned as that many seconds.
    Ratio,
}

impl Figure {
    /// The figure for `n` operations that took `elapsed`.
    pub fn of(self, elapsed: Duration, n: u64) -> f64 {
        let secs = elapsed.as_secs_f64();
        let n = n as f64;
        match self {
            Figure::MillisPerOp => secs / n * 1e3,
            Figure::Millis => secs * 1e3,
            Figure::MicrosPerOp => secs / n * 1e6,
            Figure::NanosPerOp => secs / n * 1e9,
            Figure::PerSecond { per_op } => n * per_op as f64 / secs,
            Figure::MegabytesPerSecond { bytes } => n * bytes as f64 / secs / 1e6,
            Figure::Ratio => secs,
        }
    }
}

/// One repetition of a case: `n` operations, returning the time of the timed region.
///
/// The function starts its peers and fixtures before the clock, checks its result (a wrong
/// count or echo is an error, never a figure), and leaves nothing running when it returns.
pub type CaseFn = fn(&Placement, u64) -> anyhow::Result<Duration>;

/// Whether this project can run a case yet.
#[derive(Debug, Clone, Copy)]
pub enum Run {
    /// The Rust side of the case.
    Ready(CaseFn),
    /// Not written yet: waits for the named part of the project.
    NotYet(&'static str),
}

/// A named case.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// The name shared with the CPython script.
    pub name: &'static str,
    /// The unit of the figure, as the CPython script spells it.
    pub unit: &'static str,
    /// Whether lower or higher is better.
    pub better: Better,
    /// Operations per repetition (the CPython script's `n`; the same in full and quick runs).
    pub n: u64,
    /// The problem size, as the CPython script's `params` (besides `n`).
    pub params: &'static [(&'static str, u64)],
    /// How elapsed time becomes the figure.
    pub figure: Figure,
    /// The target ratio against CPython, in the better direction, and the issue that sets it.
    pub target: Option<(f64, &'static str)>,
    /// The Rust side, or what it waits for.
    pub run: Run,
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

macro_rules! case {
    ($name:literal, $unit:literal, $better:ident, n = $n:expr, [$($k:literal = $v:expr),*],
     $figure:expr, $target:expr, $run:expr) => {
        Case {
            name: $name,
            unit: $unit,
            better: Better::$better,
            n: $n,
            params: &[$(($k, $v)),*],
            figure: $figure,
            target: $target,
            run: $run,
        }
    };
}

/// Every case, in the CPython script's order.
pub static CASES: &[Case] = &[
    case!(
        "process_start_join_fork",
        "us/process",
        Lower,
        n = 100,
        [],
        Figure::MicrosPerOp,
        Some((15.0, "#2")),
        Run::Ready(crate::process::start_join_fork)
    ),
    case!(
        "process_start_join_spawn",
        "us/process",
        Lower,
        n = 6,
        [],
        Figure::MicrosPerOp,
        Some((40.0, "#2")),
        Run::Ready(crate::process::start_join_spawn)
    ),
    case!(
        "process_start_join_forkserver",
        "us/process",
        Lower,
        n = 25,
        [],
        Figure::MicrosPerOp,
        Some((40.0, "#2")),
        Run::Ready(crate::process::start_join_forkserver)
    ),
    case!(
        "queue_throughput_small",
        "items/s",
        Higher,
        n = 50_000,
        ["payload_size" = 0],
        Figure::PerSecond { per_op: 1 },
        Some((40.0, "#3")),
        Run::Ready(crate::sync::queue_throughput_small)
    ),
    case!(
        "queue_throughput_64k",
        "MB/s",
        Higher,
        n = 4_000,
        ["payload_size" = 64 * KIB],
        Figure::MegabytesPerSecond { bytes: 64 * KIB },
        Some((5.0, "#3")),
        Run::Ready(crate::sync::queue_throughput_64k)
    ),
    case!(
        "simplequeue_throughput_small",
        "items/s",
        Higher,
        n = 50_000,
        ["payload_size" = 0],
        Figure::PerSecond { per_op: 1 },
        None,
        Run::Ready(crate::sync::simplequeue_throughput_small)
    ),
    case!(
        "queue_pingpong",
        "us/round-trip",
        Lower,
        n = 4_000,
        [],
        Figure::MicrosPerOp,
        Some((50.0, "#3")),
        Run::Ready(crate::sync::queue_pingpong)
    ),
    case!(
        "pipe_pingpong",
        "us/round-trip",
        Lower,
        n = 10_000,
        [],
        Figure::MicrosPerOp,
        Some((3.0, "#2")),
        Run::Ready(crate::conn::pipe_pingpong)
    ),
    case!(
        "pipe_bytes_pingpong",
        "us/round-trip",
        Lower,
        n = 10_000,
        ["payload_size" = crate::conn::PINGPONG_BYTES as u64],
        Figure::MicrosPerOp,
        None,
        Run::Ready(crate::conn::pipe_bytes_pingpong)
    ),
    case!(
        "pipe_throughput_1m",
        "MB/s",
        Higher,
        n = 256,
        ["size" = MIB],
        Figure::MegabytesPerSecond { bytes: MIB },
        Some((2.0, "#2")),
        Run::Ready(crate::conn::pipe_throughput_1m)
    ),
    case!(
        "lock_uncontended",
        "ns/pair",
        Lower,
        n = 2_000_000,
        [],
        Figure::NanosPerOp,
        Some((5.0, "#3")),
        Run::Ready(crate::sync::lock_uncontended)
    ),
    case!(
        "lock_contended_2proc",
        "ops/s",
        Higher,
        n = 200_000,
        ["processes" = 2],
        Figure::PerSecond { per_op: 2 },
        Some((5.0, "#3")),
        Run::Ready(crate::sync::lock_contended_2proc)
    ),
    case!(
        "event_pingpong",
        "us/round-trip",
        Lower,
        n = 5_000,
        [],
        Figure::MicrosPerOp,
        Some((50.0, "#3")),
        Run::Ready(crate::sync::event_pingpong)
    ),
    case!(
        "condition_pingpong",
        "us/round-trip",
        Lower,
        n = 5_000,
        [],
        Figure::MicrosPerOp,
        Some((50.0, "#3")),
        Run::Ready(crate::sync::condition_pingpong)
    ),
    case!(
        "semaphore_uncontended",
        "ns/pair",
        Lower,
        n = 2_000_000,
        [],
        Figure::NanosPerOp,
        Some((5.0, "#3")),
        Run::Ready(crate::sync::semaphore_uncontended)
    ),
    case!(
        "value_increment_locked",
        "ns/op",
        Lower,
        n = 300_000,
        [],
        Figure::NanosPerOp,
        Some((30.0, "#3")),
        Run::Ready(crate::sync::value_increment_locked)
    ),
    case!(
        "pool_map_trivial",
        "us/task",
        Lower,
        n = 100_000,
        ["processes" = 2, "rounds" = 20],
        Figure::MicrosPerOp,
        Some((5.0, "#12")),
        Run::Ready(crate::pool::pool_map_trivial)
    ),
    case!(
        "pool_map_trivial_chunk1",
        "us/task",
        Lower,
        n = 10_000,
        ["processes" = 2, "chunksize" = 1],
        Figure::MicrosPerOp,
        Some((20.0, "#12")),
        Run::Ready(crate::pool::pool_map_trivial_chunk1)
    ),
    case!(
        "pool_apply_async_latency",
        "us/call",
        Lower,
        n = 2_000,
        ["processes" = 2],
        Figure::MicrosPerOp,
        Some((100.0, "#12")),
        Run::Ready(crate::pool::pool_apply_async_latency)
    ),
    case!(
        "pool_map_cpu",
        "x speedup",
        Higher,
        n = 32,
        ["work" = 200_000, "processes" = 2],
        Figure::Ratio,
        None,
        Run::Ready(crate::pool::pool_map_cpu)
    ),
    case!(
        "pool_imap_rss",
        "MiB",
        Lower,
        n = 2_000_000,
        ["processes" = 2, "chunksize" = 1000],
        Figure::Ratio,
        None,
        Run::Ready(crate::pool::pool_imap_rss)
    ),
    case!(
        "pool_skewed",
        "ms",
        Lower,
        n = 400,
        ["processes" = 2],
        Figure::Millis,
        None,
        Run::Ready(crate::pool::pool_skewed)
    ),
    case!(
        "pool_cyclic",
        "ms",
        Lower,
        n = 600,
        ["processes" = 2],
        Figure::Millis,
        None,
        Run::Ready(crate::pool::pool_cyclic)
    ),
    case!(
        "pool_expensive_init",
        "ms",
        Lower,
        n = 1_000,
        ["processes" = 2, "init_ms" = 200],
        Figure::Millis,
        None,
        Run::Ready(crate::pool::pool_expensive_init)
    ),
    case!(
        "pool_worker_state",
        "us/task",
        Lower,
        n = 20_000,
        ["processes" = 2, "table" = 100_000],
        Figure::MicrosPerOp,
        None,
        Run::Ready(crate::pool::pool_worker_state)
    ),
    case!(
        "pool_shared_data",
        "ms",
        Lower,
        n = 64,
        ["processes" = 2, "mib" = 64],
        Figure::Millis,
        None,
        Run::Ready(crate::pool::pool_shared_data)
    ),
    case!(
        "cpu_two_processes",
        "x speedup",
        Higher,
        n = 32,
        ["work" = 200_000, "processes" = 2],
        Figure::Ratio,
        None,
        Run::Ready(crate::pool::cpu_two_processes)
    ),
    case!(
        "pool_idle_cpu",
        "% of a core",
        Lower,
        n = 1_000,
        ["processes" = 2, "idle_ms" = 1_000],
        Figure::Ratio,
        None,
        Run::Ready(crate::pool::pool_idle_cpu)
    ),
    case!(
        "manager_dict_setget",
        "us/set+get",
        Lower,
        n = 4_000,
        [],
        Figure::MicrosPerOp,
        Some((20.0, "#15")),
        Run::Ready(crate::manager::manager_dict_setget)
    ),
    case!(
        "manager_dict_setget_socket",
        "us/set+get",
        Lower,
        n = 4_000,
        [],
        Figure::MicrosPerOp,
        Some((5.0, "#14")),
        Run::Ready(crate::manager::manager_dict_setget_socket)
    ),
    case!(
        "manager_namespace_setattr_getattr",
        "us/set+get",
        Lower,
        n = 4_000,
        [],
        Figure::MicrosPerOp,
        Some((20.0, "#15")),
        Run::Ready(crate::manager::manager_namespace_setattr_getattr)
    ),
    case!(
        "manager_namespace_setattr_getattr_socket",
        "us/set+get",
        Lower,
        n = 4_000,
        [],
        Figure::MicrosPerOp,
        Some((5.0, "#14")),
        Run::Ready(crate::manager::manager_namespace_setattr_getattr_socket)
    ),
    case!(
        "manager_start",
        "ms/start+shutdown",
        Lower,
        n = 20,
        [],
        Figure::MillisPerOp,
        Some((10.0, "#14")),
        Run::Ready(crate::manager::manager_start)
    ),
    case!(
        "manager_idle_cpu",
        "% of a core",
        Lower,
        n = 1_000,
        ["idle_ms" = 1_000],
        Figure::Ratio,
        None,
        Run::Ready(crate::manager::manager_idle_cpu)
    ),
    case!(
        "shared_memory_create_unlink",
        "us/cycle",
        Lower,
        n = 5_000,
        ["size" = MIB],
        Figure::MicrosPerOp,
        None,
        Run::Ready(crate::sync::shared_memory_create_unlink)
    ),
    case!(
        "task_handle_roundtrip",
        "ns/task",
        Lower,
        n = 200_000,
        [],
        Figure::NanosPerOp,
        None,
        Run::Ready(crate::process::task_handle_roundtrip)
    ),
];

/// The case named `name`.
pub fn get(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.name == name)
}

impl Case {
    /// Runs one repetition of `n` operations and returns its figure in the case's unit.
    pub fn once(&self, placement: &Placement, n: u64) -> anyhow::Result<f64> {
        match self.run {
            Run::Ready(f) => {
                let result = f(placement, n);
                placement.case_done()?;
                Ok(self.figure.of(result?, n))
            }
            Run::NotYet(what) => anyhow::bail!("{} is not available yet: needs {what}", self.name),
        }
    }

    /// Whether the Rust side exists.
    pub fn available(&self) -> bool {
        matches!(self.run, Run::Ready(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_known() {
        for (i, c) in CASES.iter().enumerate() {
            assert!(
                CASES[..i].iter().all(|d| d.name != c.name),
                "{} twice",
                c.name
            );
            assert_eq!(get(c.name).map(|d| d.name), Some(c.name));
        }
        assert!(get("no_such_case").is_none());
    }

    #[test]
    fn figures_convert_elapsed_time() {
        let s = Duration::from_secs(2);
        assert_eq!(Figure::MicrosPerOp.of(s, 1000), 2000.0);
        assert_eq!(Figure::NanosPerOp.of(s, 1000), 2e6);
        assert_eq!(Figure::MillisPerOp.of(s, 4), 500.0);
        assert_eq!(Figure::PerSecond { per_op: 2 }.of(s, 1000), 1000.0);
        assert_eq!(
            Figure::MegabytesPerSecond { bytes: 1_000_000 }.of(s, 10),
            5.0
        );
    }
}
