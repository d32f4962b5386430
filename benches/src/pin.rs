//! CPU placement of the benchmark's processes: `--pin none|same|split`, as in the CPython script.
//!
//! Latency between two processes depends on whether they share a CPU (a wake-up is a context
//! switch) or not (a cross-CPU wake-up, slow on a VM), so both sides of a comparison must be
//! placed alike:
//! - `none`: the OS decides.
//! - `same`: the runner pins itself to its first allowed CPU at start-up; children inherit it.
//! - `split`: when a case starts a child, the runner pins itself to its first CPU and the `k`-th
//!   live child to CPU `k mod count`; [`Placement::case_done`] undoes the runner's pinning.
//!
//! The mode reaches the criterion benches through the [`PIN_ENV`] environment variable, and the
//! compare binary through its `--pin` option.

use std::cell::Cell;

use anyhow::{Context, bail};
use rustix::process::Pid;
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// The environment variable holding the placement mode of the criterion benches.
pub const PIN_ENV: &str = "IPC_BENCH_PIN";

/// Where the benchmark's processes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// The OS decides.
    None,
    /// Every process on one CPU.
    Same,
    /// The runner on one CPU, each child on another.
    Split,
}

impl Pin {
    /// Parses `none`, `same` or `split`.
    pub fn parse(s: &str) -> anyhow::Result<Pin> {
        match s {
            "none" => Ok(Pin::None),
            "same" => Ok(Pin::Same),
            "split" => Ok(Pin::Split),
            other => bail!("unknown placement {other:?}: expected none, same or split"),
        }
    }

    /// The mode in [`PIN_ENV`], `none` when it is not set.
    pub fn from_env() -> anyhow::Result<Pin> {
        match std::env::var(PIN_ENV) {
            Ok(v) => Pin::parse(&v).with_context(|| format!("in ${PIN_ENV}")),
            Err(std::env::VarError::NotPresent) => Ok(Pin::None),
            Err(e) => bail!("${PIN_ENV}: {e}"),
        }
    }

    /// The option's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Pin::None => "none",
            Pin::Same => "same",
            Pin::Split => "split",
        }
    }
}

/// The placement in force for one run; the cases report the children they start to it.
#[derive(Debug)]
pub struct Placement {
    mode: Pin,
    cpus: Vec<usize>,
    parent_pinned: Cell<bool>,
}

impl Placement {
    /// Applies `mode` to this process (for `same`) and remembers the CPUs it may use.
    pub fn new(mode: Pin) -> anyhow::Result<Placement> {
        let set = sched_getaffinity(None).context("sched_getaffinity")?;
        let cpus: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect();
        if cpus.is_empty() {
            bail!("this process may run on no CPU at all");
        }
        if mode == Pin::Split && cpus.len() < 2 {
            bail!("--pin split needs at least 2 CPUs; this process may use {cpus:?}");
        }
        if mode == Pin::Same {
            pin(None, cpus[0])?;
        }
        Ok(Placement {
            mode,
            cpus,
            parent_pinned: Cell::new(false),
        })
    }

    /// The mode.
    pub fn mode(&self) -> Pin {
        self.mode
    }

    /// The CPUs this process was allowed to use when the placement was made.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Places a child the case just started; `live` counts the case's live children, this one
    /// included (so the first child of a case gets the runner's neighbour CPU).
    pub fn child_started(&self, pid: u32, live: usize) -> anyhow::Result<()> {
        if self.mode != Pin::Split {
            return Ok(());
        }
        if !self.parent_pinned.get() {
            pin(None, self.cpus[0])?;
            self.parent_pinned.set(true);
        }
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .with_context(|| format!("bad child pid {pid}"))?;
        pin(Some(pid), self.cpus[live % self.cpus.len()])
    }

    /// Called after every case: gives the runner back all its CPUs under `split`.
    pub fn case_done(&self) -> anyhow::Result<()> {
        if self.parent_pinned.replace(false) {
            let mut set = CpuSet::new();
            for &c in &self.cpus {
                set.set(c);
            }
            sched_setaffinity(None, &set).context("restoring the runner's CPU affinity")?;
        }
        Ok(())
    }
}

fn pin(pid: Option<Pid>, cpu: usize) -> anyhow::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(pid, &set).with_context(|| format!("pinning {pid:?} to CPU {cpu}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_bad_ones_are_named() {
        assert_eq!(Pin::parse("split").unwrap(), Pin::Split);
        assert_eq!(Pin::parse("none").unwrap().as_str(), "none");
        let e = Pin::parse("both").unwrap_err().to_string();
        assert!(e.contains("\"both\""), "{e}");
    }

    #[test]
    fn none_leaves_the_affinity_alone() {
        let before = sched_getaffinity(None).unwrap();
        let p = Placement::new(Pin::None).unwrap();
        p.child_started(std::process::id(), 1).unwrap();
        p.case_done().unwrap();
        assert_eq!(sched_getaffinity(None).unwrap(), before);
    }
}
