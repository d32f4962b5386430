//! Who is calling: this process's pid and a thread token unique across processes, both cheap.
//!
//! A lock's fast path writes the caller's pid into the lock word, so it needs the pid on every
//! acquire; `getpid()` is a real syscall on this machine (~140 ns against a 4.5 ns CAS). The pid
//! is therefore cached, and the cache must not survive `fork`, where the child gets a new pid but
//! a copy of the parent's memory. We keep the cache in a private anonymous page marked
//! `MADV_WIPEONFORK`: the kernel hands a forked child that page zero-filled, so the child's first
//! call sees 0 and asks the kernel again. This holds for every fork (ipc-core's, a raw
//! `libc::fork`, a `clone` from another library), with no hook to register and one relaxed load
//! per call. If the page cannot be set up (an old kernel without `MADV_WIPEONFORK`), every call
//! asks the kernel: slower, never wrong.
//!
//! The thread token (for `RLock` ownership) is `pid << 32 | n` where `n` numbers the threads of
//! this process from 1. The pid part keeps tokens of different processes apart (a forked child's
//! thread keeps its parent's `n` but has a new pid), and `n` is never reused within a process,
//! unlike kernel thread ids, so a thread that exits holding an `RLock` can't be impersonated.
//!
//! # Safety
//! The unsafe code maps one anonymous page and advises the kernel about it. The page is never
//! unmapped, so the `&'static AtomicU32` into it stays valid for the life of the process.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The page holding the cached pid, or `None` where the kernel refused `MADV_WIPEONFORK`.
static PID_CELL: OnceLock<Option<&'static AtomicU32>> = OnceLock::new();

fn pid_cell() -> Option<&'static AtomicU32> {
    *PID_CELL.get_or_init(|| {
        use rustix::mm::{Advice, MapFlags, ProtFlags, madvise, mmap_anonymous};
        let len = rustix::param::page_size();
        // SAFETY: a fresh private anonymous mapping at a kernel-chosen address aliases no Rust
        // object; it is never unmapped, so the reference below lives for the whole process.
        let page = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE,
            )
        }
        .ok()?;
        // SAFETY: `page` is the whole mapping we just created; advising it changes only what a
        // forked child sees (zeroes), not this process's view.
        if unsafe { madvise(page, len, Advice::LinuxWipeOnFork) }.is_err() {
            // Without the wipe, a cached pid would be wrong in a forked child: don't cache.
            // SAFETY: the mapping is ours and nothing refers to it yet.
            let _ = unsafe { rustix::mm::munmap(page, len) };
            return None;
        }
        // SAFETY: the page is zero-filled, page aligned (so aligned for u32), readable and
        // writable, and lives forever; zero is a valid AtomicU32.
        Some(unsafe { &*(page as *const AtomicU32) })
    })
}

fn getpid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// This process's pid, from the fork-wiped cache.
#[inline]
pub(crate) fn pid() -> u32 {
    match pid_cell() {
        Some(cell) => {
            let p = cell.load(Ordering::Relaxed);
            if p != 0 {
                return p;
            }
            let p = getpid();
            cell.store(p, Ordering::Relaxed);
            p
        }
        None => getpid(),
    }
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
        assert_eq!(pid(), getpid());
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
