//! The one door through which the state machines touch atomics and the futex.
//!
//! Normally these are `std::sync::atomic` and [`ipc_core::futex`]. Built with `--cfg loom`, they
//! are loom's atomics and a futex emulated on loom's `Mutex` + `Condvar`, so `tests/loom_*.rs`
//! can model-check the lock and condition protocols over every interleaving (the crossbeam-epoch
//! `primitive` and tokio `loom` facade pattern).
//!
//! The loom futex keeps the kernel's contract: the word is compared with `expected` under the
//! same mutex that `wake` takes, so a wake between a waiter's check and its sleep is never lost.
//! Deadlines are not modelled (loom has no clock): a wait with a deadline returns `TimedOut`
//! only if its deadline has really passed when it is called, otherwise it sleeps until woken.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub(crate) use ipc_core::futex::WaitOutcome;

/// A spin-wait hint (`pause`); under loom a yield, so spin loops stay explorable.
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

#[cfg(not(loom))]
pub(crate) mod futex {
    //! The shared futex of ipc-core.
    pub(crate) use ipc_core::futex::{wait, wake, wake_all, wake_one};
}

#[cfg(loom)]
pub(crate) mod futex {
    //! A futex emulated on loom's `Mutex` + `Condvar`, keyed by the word's address.
    use super::{AtomicU32, Ordering, WaitOutcome};
    use loom::sync::{Condvar, Mutex};
    use std::time::Instant;

    struct Parking {
        // (address, ticket, woken) for every sleeper.
        sleepers: Mutex<(u64, Vec<(usize, u64, bool)>)>,
        cv: Condvar,
    }

    loom::lazy_static! {
        static ref PARKING: Parking = Parking {
            sleepers: Mutex::new((0, Vec::new())),
            cv: Condvar::new(),
        };
    }

    pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitOutcome {
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return WaitOutcome::TimedOut;
        }
        let addr = word as *const AtomicU32 as usize;
        let mut g = PARKING.sleepers.lock().unwrap();
        if word.load(Ordering::SeqCst) != expected {
            return WaitOutcome::Woken;
        }
        g.0 += 1;
        let ticket = g.0;
        g.1.push((addr, ticket, false));
        loop {
            g = PARKING.cv.wait(g).unwrap();
            if let Some(i) = g.1.iter().position(|e| e.1 == ticket && e.2) {
                g.1.remove(i);
                return WaitOutcome::Woken;
            }
        }
    }

    pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
        let addr = word as *const AtomicU32 as usize;
        let mut g = PARKING.sleepers.lock().unwrap();
        let mut woken = 0;
        for e in g.1.iter_mut() {
            if woken as u32 == n {
                break;
            }
            if e.0 == addr && !e.2 {
                e.2 = true;
                woken += 1;
            }
        }
        if woken > 0 {
            PARKING.cv.notify_all();
        }
        woken
    }

    pub(crate) fn wake_one(word: &AtomicU32) -> usize {
        wake(word, 1)
    }

    pub(crate) fn wake_all(word: &AtomicU32) -> usize {
        wake(word, u32::MAX)
    }
}
