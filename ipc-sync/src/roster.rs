//! A roster of processes and what each holds, so that what a dead process held can be told
//! from what a live one is late with: a `JoinableQueue`'s items taken and not yet marked done,
//! a `Condition`'s waiters registered and not yet departed.
//!
//! # Shared-memory layout
//! ```text
//! Roster  (#[repr(C)], 64 slots x 8 bytes = 512 bytes, all-zero = nobody holds anything)
//! slot: | pid: AtomicU32 (0 = free) | held: AtomicU32 |
//! ```
//! # Transitions
//! ```text
//! claim by P    P's own slot, else a free one by CAS 0 -> P, else a dead process's that holds
//!               nothing by CAS pid -> P
//! hold/release held += 1 / held -= 1 in P's slot (never below 0)
//! drop_any      held -= 1 in the caller's slot, else in any slot that holds (a JoinableQueue
//!               item may be marked done by another process than the one that took it)
//! held_by_the_dead / forget
//!               the total held by processes that certainly died (a pidfd says so), and their
//!               pids; then clear those slots once the owner of the roster settled for them
//! ```
//! Each user orders `hold` before the act it counts (a get, a registration) and `release` after
//! the act or its undoing, so a death anywhere in between leaves the dead process counted for at
//! most one act it may not have completed; the users' module docs say why that is safe.
//!
//! A roster used by more than [`SLOTS`] live processes at once tracks the others best-effort:
//! [`claim`](Roster::claim) returns `None` and their acts go uncounted.
//!
//! # Memory ordering
//! All `SeqCst`: a roster is touched once per counted act, next to the user's own `SeqCst`
//! operations or under its lock, and read in slices of 100 ms.

use std::sync::atomic::{AtomicU32, Ordering};

/// Processes tracked at once.
pub(crate) const SLOTS: usize = 64;

/// One process and what it holds.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pid: AtomicU32,
    held: AtomicU32,
}

/// The roster (see the module doc; its `ShmSafe` and `ShmSync` impls are in `shm_safe.rs`).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Roster {
    slots: [Slot; SLOTS],
}

impl Roster {
    /// This process's slot, claimed if it has none; `None` if the roster is full of live
    /// processes (the caller's acts go uncounted).
    pub(crate) fn claim(&self) -> Option<&Slot> {
        let me = crate::ident::pid();
        if let Some(s) = self.mine(me) {
            return Some(s);
        }
        for s in &self.slots {
            if s.pid
                .compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Some(s);
            }
        }
        // Full: take over the slot of a dead process that holds nothing.
        self.slots.iter().find(|s| {
            let pid = s.pid.load(Ordering::SeqCst);
            s.held.load(Ordering::SeqCst) == 0
                && crate::liveness::is_dead(pid)
                && s.pid
                    .compare_exchange(pid, me, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
        })
    }

    fn mine(&self, me: u32) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|s| s.pid.load(Ordering::SeqCst) == me)
    }

    /// One act undone by whoever may: in the caller's slot, else in any slot that holds.
    pub(crate) fn drop_any(&self) {
        let mine = self.mine(crate::ident::pid());
        for s in mine.into_iter().chain(self.slots.iter()) {
            if s.try_drop() {
                return;
            }
        }
    }

    /// What processes that died still hold: the total, and their pids.
    pub(crate) fn held_by_the_dead(&self) -> (u64, Vec<u32>) {
        let mut total = 0u64;
        let mut pids = Vec::new();
        for s in &self.slots {
            let held = s.held.load(Ordering::SeqCst);
            let pid = s.pid.load(Ordering::SeqCst);
            if held > 0 && pid != 0 && crate::liveness::is_dead(pid) {
                total += u64::from(held);
                pids.push(pid);
            }
        }
        (total, pids)
    }

    /// Forgets what the dead processes `pids` held (the caller settled for it) and frees
    /// their slots.
    pub(crate) fn forget(&self, pids: &[u32]) {
        for s in &self.slots {
            let pid = s.pid.load(Ordering::SeqCst);
            if pid != 0 && pids.contains(&pid) {
                s.held.store(0, Ordering::SeqCst);
                let _ = s
                    .pid
                    .compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
            }
        }
    }
}

impl Slot {
    /// One more act counted (before the act: see the module doc).
    pub(crate) fn hold(&self) {
        self.held.fetch_add(1, Ordering::SeqCst);
    }

    /// One act undone, or counted and not done.
    pub(crate) fn release(&self) {
        self.try_drop();
    }

    fn try_drop(&self) -> bool {
        self.held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}
