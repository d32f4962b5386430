//! Futex wait and wake on an `AtomicU32` that may live in memory shared between processes.
//!
//! Every call here uses the *shared* futex flavour (`Flags::empty()`), never `FUTEX_PRIVATE_FLAG`.
//! A private futex is keyed by (address space, virtual address): a waiter in one process and a
//! waker in another never meet, so `wake` returns 0 and the waiter sleeps until its timeout (this
//! was measured on this machine, see `shared/reference/linux-notes.md`). A shared futex is keyed
//! by the backing page (inode + offset for a memfd), so it works across `fork`, across `exec`, and
//! across two different mappings of one segment at different addresses. std, parking_lot and
//! atomic-wait all use private futexes, which is right for threads and wrong for us.
//!
//! `EINTR` and spurious wake-ups are absorbed by [`wait`]'s loop-free contract: it returns after
//! *a* wake-up, a value mismatch, a signal or the deadline, and callers always re-check their
//! word in a loop. Only the deadline is reported, so callers can stop looping.

use std::sync::atomic::AtomicU32;
use std::time::Instant;

use rustix::io::Errno;
use rustix::thread::futex;

/// Why [`wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken, interrupted, or the word no longer held `expected`: re-check the word.
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, until woken or until `deadline` (if any) passes.
///
/// Returns at once with [`WaitOutcome::Woken`] if the word does not hold `expected` (the kernel
/// compares atomically with the sleep, so a wake between the caller's check and this call is never
/// lost). Spurious returns are possible: callers re-check their condition in a loop.
///
/// ```
/// use std::sync::atomic::AtomicU32;
/// use std::time::{Duration, Instant};
/// use ipc_core::futex::{wait, WaitOutcome};
///
/// let word = AtomicU32::new(0);
/// // The word is not 1, so this returns at once.
/// assert_eq!(wait(&word, 1, None), WaitOutcome::Woken);
/// // The word is 0 and nobody wakes us: the deadline ends the wait.
/// let deadline = Instant::now() + Duration::from_millis(10);
/// assert_eq!(wait(&word, 0, Some(deadline)), WaitOutcome::TimedOut);
/// ```
pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitOutcome {
    let timeout = match deadline {
        None => None,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return WaitOutcome::TimedOut;
            }
            Some(crate::deadline::timespec(left))
        }
    };
    match futex::wait(word, futex::Flags::empty(), expected, timeout.as_ref()) {
        Ok(()) => WaitOutcome::Woken,
        // The word changed before we slept, or a signal arrived: the caller re-checks.
        Err(Errno::AGAIN) | Err(Errno::INTR) => WaitOutcome::Woken,
        Err(Errno::TIMEDOUT) => WaitOutcome::TimedOut,
        // EFAULT/EINVAL would mean a bad address, impossible for a `&AtomicU32`. Treat any other
        // error as a wake-up: the caller's loop re-checks and the deadline still bounds it.
        Err(_) => WaitOutcome::Woken,
    }
}

/// Wakes at most `n` waiters sleeping on `word`; returns how many were woken.
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), n).unwrap_or(0)
}

/// Wakes one waiter sleeping on `word`; returns how many were woken (0 or 1).
pub fn wake_one(word: &AtomicU32) -> usize {
    wake(word, 1)
}

/// Wakes every waiter sleeping on `word`; returns how many were woken.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    #[test]
    fn wake_reaches_a_sleeping_thread() {
        let word = Arc::new(AtomicU32::new(0));
        let w = word.clone();
        let t = std::thread::spawn(move || {
            while w.load(Ordering::Acquire) == 0 {
                wait(&w, 0, Some(Instant::now() + Duration::from_secs(30)));
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        word.store(1, Ordering::Release);
        wake_all(&word);
        t.join().unwrap();
    }

    #[test]
    fn past_deadline_times_out_without_sleeping() {
        let word = AtomicU32::new(0);
        assert_eq!(wait(&word, 0, Some(Instant::now())), WaitOutcome::TimedOut);
        assert_eq!(wake_one(&word), 0);
    }
}
