//! `JoinableQueue` accounting on the ring: unfinished = records put - `task_done` calls.
//!
//! The records-put counter is the high bits of `tail`, published in the same store as each
//! record, so a producer killed mid-put never leaves the count one too high; `done` is a futex
//! word that `join` sleeps on.

use super::*;

impl Ring {
    /// JoinableQueue: records put and not yet marked done (modulo 2^24).
    pub(crate) fn unfinished(&self) -> u64 {
        let t = recs(self.header.tail.load(Ordering::SeqCst));
        let d = u64::from(self.header.done.load(Ordering::SeqCst));
        t.wrapping_sub(d) & REC_MASK
    }

    /// JoinableQueue: marks one record done; false if none is unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let h = &*self.header;
        let mut d = h.done.load(Ordering::SeqCst);
        loop {
            let t = recs(h.tail.load(Ordering::SeqCst));
            let left = t.wrapping_sub(u64::from(d)) & REC_MASK;
            if left == 0 {
                return false;
            }
            let nd = ((u64::from(d) + 1) & REC_MASK) as u32;
            match h
                .done
                .compare_exchange(d, nd, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    if left == 1 && h.join_waiters.load(Ordering::SeqCst) > 0 {
                        futex::wake_all(&h.done);
                    }
                    return true;
                }
                Err(now) => d = now,
            }
        }
    }

    /// JoinableQueue: waits until every record put was marked done.
    pub(crate) fn join(&self, wait: Wait) -> Result<(), Stop> {
        let h = &*self.header;
        loop {
            let d = h.done.load(Ordering::SeqCst);
            if self.unfinished() == 0 {
                return Ok(());
            }
            if wait == Wait::No {
                return Err(Stop::TimedOut);
            }
            h.join_waiters.fetch_add(1, Ordering::SeqCst);
            let out = if self.unfinished() != 0 {
                futex::wait(&h.done, d, wait.deadline())
            } else {
                WaitOutcome::Woken
            };
            h.join_waiters.fetch_sub(1, Ordering::SeqCst);
            if out == WaitOutcome::TimedOut && self.unfinished() != 0 {
                return Err(Stop::TimedOut);
            }
        }
    }
}
