//! Who owes `task_done`: a `JoinableQueue`'s roster of consumer processes and the items each has
//! taken and not yet marked done, so that `join` can tell work that is late from work that can
//! never be done (its consumer died).
//!
//! # Shared-memory layout
//! ```text
//! Owed  (#[repr(C)], 64 slots x 8 bytes = 512 bytes, all-zero = nobody owes anything)
//! slot: | pid: AtomicU32 (0 = free) | owed: AtomicU32 |
//! ```
//! # Transitions
//! ```text
//! get by P      claim a slot (P's own, else a free one by CAS 0 -> P, else a dead process's with
//!               nothing owed by CAS pid -> P); owed += 1 BEFORE taking the record, owed -= 1 if
//!               no record was taken
//! task_done     owed -= 1 in the caller's slot, else in any slot that owes (Python lets any
//!               process mark an item done, so work handed on is still paid off)
//! join          while items are unfinished: if the queue is empty and processes that died owe
//!               at least as many items as are unfinished, nothing left can ever be marked done:
//!               write the unfinished items off (done += n), clear those slots, report them
//! ```
//! The increment before the take is what makes a death anywhere in `get` safe: killed after it,
//! the dead process owes an item it may not have taken, but that item is still in the queue
//! (so `join` waits: the queue is not empty), and once another consumer takes and marks it, the
//! dead slot's phantom debt can only make a later write-off cover items that are indeed lost
//! (the write-off is the unfinished count, never more).
//!
//! A queue used by more than [`SLOTS`] live consumer processes at once tracks the others
//! best-effort (untracked gets are never reported), and items taken through the plain [`Queue`]
//! view of a `JoinableQueue` are not tracked either.
//!
//! # Memory ordering
//! All `SeqCst`: the roster is touched once per get and per `task_done`, next to the ring's own
//! `SeqCst` operations, and `join` reads it in slices of 100 ms.
//!
//! [`Queue`]: crate::Queue

use std::sync::atomic::{AtomicU32, Ordering};

/// Consumer processes tracked at once.
pub(crate) const SLOTS: usize = 64;

/// One consumer process and the items it owes.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pid: AtomicU32,
    owed: AtomicU32,
}

/// The roster (see the module doc; its `ShmSafe` and `ShmSync` impls are in `shm_safe.rs`).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Owed {
    slots: [Slot; SLOTS],
}

impl Owed {
    /// This process's slot, claimed if it has none; `None` if the roster is full of live
    /// processes (the caller's gets go untracked).
    pub(crate) fn claim(&self) -> Option<&Slot> {
        let me = crate::ident::pid();
        if let Some(s) = self
            .slots
            .iter()
            .find(|s| s.pid.load(Ordering::SeqCst) == me)
        {
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
        // Full: take over the slot of a dead process that owes nothing.
        self.slots.iter().find(|s| {
            let pid = s.pid.load(Ordering::SeqCst);
            s.owed.load(Ordering::SeqCst) == 0
                && crate::liveness::is_dead(pid)
                && s.pid
                    .compare_exchange(pid, me, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
        })
    }

    /// One item marked done: paid off in the caller's slot, else in any slot that owes.
    pub(crate) fn paid(&self) {
        let me = crate::ident::pid();
        let mine = self
            .slots
            .iter()
            .find(|s| s.pid.load(Ordering::SeqCst) == me);
        for s in mine.into_iter().chain(self.slots.iter()) {
            if s.owed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return;
            }
        }
    }

    /// What processes that died still owe: the total, and their pids.
    pub(crate) fn owed_by_the_dead(&self) -> (u64, Vec<u32>) {
        let mut total = 0u64;
        let mut pids = Vec::new();
        for s in &self.slots {
            let owed = s.owed.load(Ordering::SeqCst);
            let pid = s.pid.load(Ordering::SeqCst);
            if owed > 0 && pid != 0 && crate::liveness::is_dead(pid) {
                total += u64::from(owed);
                pids.push(pid);
            }
        }
        (total, pids)
    }

    /// Forgets what the dead processes `pids` owed (their items were written off).
    pub(crate) fn forgive(&self, pids: &[u32]) {
        for s in &self.slots {
            let pid = s.pid.load(Ordering::SeqCst);
            if pids.contains(&pid) {
                s.owed.store(0, Ordering::SeqCst);
                let _ = s
                    .pid
                    .compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst);
            }
        }
    }
}

impl Slot {
    /// One more item taken (counted before the take: see the module doc).
    pub(crate) fn owe(&self) {
        self.owed.fetch_add(1, Ordering::SeqCst);
    }

    /// The take it was counted for did not happen.
    pub(crate) fn unowe(&self) {
        let _ = self
            .owed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}
