//! Who is calling: this process's pid and a thread token unique across processes, both cheap.
//!
//! A lock's fast path writes the caller's pid into the lock word, so it needs the pid on every
//! acquire: [`ipc_core::process::pid`] caches it in a page the kernel wipes in forked children
//! (right after any fork, one relaxed load per call).
//!
//! The thread token (for `RLock` ownership) is `pid << 32 | n` where `n` numbers the threads of
//! this process from 1. The pid part keeps tokens of different processes apart (a forked child's
//! thread keeps its parent's `n` but has a new pid), and `n` is never reused within a process,
//! unlike kernel thread ids, so a thread that exits holding an `RLock` can't be impersonated.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};

/// This process's pid (cached by ipc-core, right after any fork).
#[inline]
pub(crate) fn pid() -> u32 {
    ipc_core::process::pid()
}

static NEXT_THREAD: AtomicU32 = AtomicU32::new(1);

#[cfg(not(loom))]
thread_local! {
    static THREAD_NO: Cell<u32> = const { Cell::new(0) };
}

// Loom runs its model threads on one OS thread: their thread-locals must be loom's.
#[cfg(loom)]
loom::thread_local! {
    static THREAD_NO: Cell<u32> = Cell::new(0);
}

/// A token naming the calling thread, unique among all threads of all live processes.
#[inline]
pub(crate) fn thread_token() -> u64 {
    let n = THREAD_NO.with(|c| {
        let mut n = c.get();
        if n == 0 {
            n = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
            c.set(n);
        }
        n
    });
    (u64::from(pid()) << 32) | u64::from(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_matches_the_kernel() {
        assert_eq!(pid(), std::process::id());
    }

    #[test]
    fn thread_tokens_differ_between_threads() {
        let here = thread_token();
        assert_eq!(here, thread_token());
        let there = std::thread::spawn(thread_token).join().unwrap();
        assert_ne!(here, there);
        assert_eq!(here >> 32, there >> 32);
    }
}
