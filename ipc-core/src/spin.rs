//! Adaptive spinning: whether a waiter should poll for a while before it sleeps.
//!
//! Waking a process that sleeps on another vCPU costs 18-34 us on this kind of VM (the idle vCPU
//! has to be woken through the hypervisor), while a peer that is running answers within a
//! microsecond or two. A waiter that polls briefly first catches those answers without any
//! sleep or wake-up on either side. Polling is a loss in two cases, which this type detects:
//! - the system has a single CPU online: the peer cannot run while we poll;
//! - the peer shares our CPU (both pinned to one CPU, or placed together by the scheduler): our
//!   poll burns the time slice the peer needs, and the hand-off gets slower (13-14 us per round
//!   trip against 4-5 us without a spin, measured on one vCPU).
//!
//! The second case is not visible from the affinity mask (a process pinned to one CPU may talk
//! to a peer pinned to another), so the policy learns it, as adaptive mutexes do: spin while
//! spins succeed; after [`FAIL_STREAK`] spins in a row that ended empty-handed, spin only once in
//! [`PROBE_EVERY`] waits, to notice when the peer moves to another CPU. The counters are plain
//! relaxed loads and stores: a lost update only shifts a heuristic.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Failed spins in a row after which spinning becomes a rare probe.
pub const FAIL_STREAK: u32 = 4;

/// While spins fail, one wait in this many spins (a probe).
pub const PROBE_EVERY: u32 = 64;

/// The spinning record of one kind of wait (per object or per process).
#[derive(Debug, Default)]
pub struct Adaptive {
    fails: AtomicU32,
    waits: AtomicU32,
}

impl Adaptive {
    /// A record that starts by spinning.
    pub const fn new() -> Adaptive {
        Adaptive {
            fails: AtomicU32::new(0),
            waits: AtomicU32::new(0),
        }
    }

    /// Whether the next wait should spin before sleeping.
    #[inline]
    pub fn should_spin(&self) -> bool {
        if !several_cpus() {
            return false;
        }
        if self.fails.load(Ordering::Relaxed) < FAIL_STREAK {
            return true;
        }
        let w = self.waits.load(Ordering::Relaxed).wrapping_add(1);
        self.waits.store(w, Ordering::Relaxed);
        w.is_multiple_of(PROBE_EVERY)
    }

    /// Records how a spin ended: `true` if what it waited for arrived while spinning.
    #[inline]
    pub fn record(&self, caught: bool) {
        let f = if caught {
            0
        } else {
            self.fails.load(Ordering::Relaxed).saturating_add(1)
        };
        self.fails.store(f, Ordering::Relaxed);
    }
}

/// The CPU the calling thread runs on, plus one, so that 0 can mean "unknown" in shared memory
/// (a waiter that knows where its peer runs can tell whether spinning may pay). Cheap: no
/// system call.
#[inline]
pub fn cpu_tag() -> u32 {
    crate::sys::current_cpu().map_or(0, |c| c.saturating_add(1))
}

/// Whether more than one CPU is online in the system (whatever this process's affinity).
pub fn several_cpus() -> bool {
    static SEVERAL: OnceLock<bool> = OnceLock::new();
    *SEVERAL.get_or_init(|| crate::sys::online_cpus() > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_turn_spinning_into_probes_and_a_catch_turns_it_back() {
        if !several_cpus() {
            return;
        }
        let a = Adaptive::new();
        assert!(a.should_spin());
        for _ in 0..FAIL_STREAK {
            a.record(false);
        }
        let spins = (0..PROBE_EVERY * 4).filter(|_| a.should_spin()).count();
        assert_eq!(spins, 4, "one probe per {PROBE_EVERY} waits");
        a.record(true);
        assert!(a.should_spin());
    }
}
