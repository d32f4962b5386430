//! The machine's floor for a case: the same operation done by the most direct means, from the
//! same process, in the same run (`compare --floor`), so that `cargo xtask compare` can say how
//! far a figure is from what this machine allows, not only how far from CPython.
//!
//! ```text
//! case                          floor
//! process_start_join_fork       fork() + _exit(0) in the child + waitpid(), from this process
//! pipe_pingpong                 8 bytes there and back over a raw SOCK_SEQPACKET socketpair
//! pipe_bytes_pingpong           16 bytes there and back, the same way
//! pipe_throughput_1m            1 MiB writes into a raw SOCK_STREAM socketpair, read whole
//! lock_uncontended              a compare-and-swap 0 -> 1 and a store of 0 (a lock pair)
//! semaphore_uncontended         a compare-and-swap decrement and an increment
//! shared_memory_create_unlink   shm_open + ftruncate + mmap + munmap + close + shm_unlink
//! ```
//! Cases whose figure already beats the naive floor say so instead ([`note`]): the ping-pongs
//! through shared memory spin before they sleep, so they beat a futex ping-pong.
//! `pipe_throughput_1m` keeps its socket floor although it beats it (a connection's large
//! payloads go through a shared ring, not the socket): the floor says what the socket allows,
//! and the ratio below 1 says by how much the ring beats it.
//!
//! Children here are raw forks that run only system calls (no allocation, no lock) and leave
//! with `_exit`; every wait on them is bounded by the socket closing.
#![allow(unsafe_code)]

use std::hint::black_box;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};

use crate::cases::CaseFn;
use crate::pin::Placement;

/// The floors: case name, what the floor is, the function that measures it.
pub const FLOORS: &[(&str, &str, CaseFn)] = &[
    (
        "process_start_join_fork",
        "fork + _exit + waitpid",
        fork_exit_wait,
    ),
    (
        "pipe_pingpong",
        "raw socketpair ping-pong",
        seqpacket_pingpong_8,
    ),
    (
        "pipe_bytes_pingpong",
        "raw socketpair ping-pong",
        seqpacket_pingpong_16,
    ),
    ("pipe_throughput_1m", "raw 1 MiB socket writes", stream_1m),
    ("lock_uncontended", "CAS lock pair", cas_lock_pair),
    ("semaphore_uncontended", "CAS count pair", cas_count_pair),
    (
        "shared_memory_create_unlink",
        "raw shm_open..shm_unlink",
        raw_shm_cycle,
    ),
];

/// Cases that beat the naive floor, and why (shown instead of a floor).
pub const NOTES: &[(&str, &str)] = &[
    (
        "queue_pingpong",
        "spins before it sleeps: beats a futex ping-pong",
    ),
    (
        "event_pingpong",
        "spins before it sleeps: beats a futex ping-pong",
    ),
    (
        "condition_pingpong",
        "spins before it sleeps: beats a futex ping-pong",
    ),
];

/// The floor of `case`: what it is and its function.
pub fn of(case: &str) -> Option<(&'static str, CaseFn)> {
    FLOORS.iter().find(|f| f.0 == case).map(|f| (f.1, f.2))
}

/// Why `case` shows no floor, when it beats the naive one.
pub fn note(case: &str) -> Option<&'static str> {
    NOTES.iter().find(|n| n.0 == case).map(|n| n.1)
}

/// Forks a child that runs `child` and then `_exit(0)`s; the child's pid (also used by
/// `examples/fork_bounds.rs`).
///
/// # Safety
/// `child` may only make system calls and touch memory it was given: no allocation, no lock
/// that another thread of this process could hold at the fork. It must not unwind.
pub unsafe fn fork_child(child: impl FnOnce()) -> anyhow::Result<libc::pid_t> {
    // SAFETY: the child runs only `child`, which keeps to the contract above, and leaves with
    // `_exit`, which runs no atexit handler and no destructor.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(std::io::Error::last_os_error()).context("fork"),
        0 => {
            child();
            // SAFETY: `_exit` ends the child at once; nothing of the parent's runs in it.
            unsafe { libc::_exit(0) }
        }
        pid => Ok(pid),
    }
}

/// Closes, in a forked child, its copy of the parent's end of a socket pair (so that the
/// parent closing its own is the end of file the child waits for).
fn close_in_child(fd: RawFd) {
    // SAFETY: called only in a child made by `fork_child`, which never returns to the code that
    // owns `fd` (it `_exit`s), so closing its copy cannot close a descriptor someone still uses.
    unsafe { libc::close(fd) };
}

/// Reaps `pid` (a child made by [`fork_child`]) and checks that it exited with 0.
pub fn reap(pid: libc::pid_t) -> anyhow::Result<()> {
    let mut status = 0;
    // SAFETY: `pid` is a child of this process that nobody else reaps; `status` is writable.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(r == pid, "waitpid: {}", std::io::Error::last_os_error());
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "floor child ended with status {status:#x}"
    );
    Ok(())
}

/// `process_start_join_fork`'s floor: `n` x (fork, `_exit(0)` in the child, `waitpid`).
fn fork_exit_wait(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    for _ in 0..n {
        // SAFETY: the child does nothing.
        reap(unsafe { fork_child(|| {}) }?)?;
    }
    Ok(t0.elapsed())
}

fn seqpacket() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("socketpair")
}

/// `n` round trips of `LEN` bytes through a raw SOCK_SEQPACKET socketpair to an echoing child.
fn seqpacket_pingpong<const LEN: usize>(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    let (ours, theirs) = seqpacket()?;
    let ours_fd = ours.as_raw_fd();
    // SAFETY: the child closes a descriptor, reads and writes a socket it owns, into a buffer
    // on its stack: system calls only.
    let pid = unsafe {
        fork_child(|| {
            close_in_child(ours_fd);
            let mut buf = [0u8; LEN];
            while let Ok(k) = rustix::io::read(&theirs, &mut buf) {
                if k == 0 || rustix::io::write(&theirs, &buf[..k]).is_err() {
                    break;
                }
            }
        })
    }?;
    drop(theirs);
    placement.child_started(pid as u32, 1)?;
    let mut msg = [0u8; LEN];
    let mut back = [0u8; LEN];
    let t0 = Instant::now();
    for i in 0..n {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        rustix::io::write(&ours, &msg).context("write")?;
        let k = rustix::io::read(&ours, &mut back).context("read")?;
        ensure!(k == LEN && back == msg, "echo {i} is wrong");
    }
    let dt = t0.elapsed();
    drop(ours);
    reap(pid)?;
    Ok(dt)
}

fn seqpacket_pingpong_8(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    seqpacket_pingpong::<8>(placement, n)
}

fn seqpacket_pingpong_16(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    seqpacket_pingpong::<16>(placement, n)
}

/// `pipe_throughput_1m`'s floor: a child writes `n` blocks of 1 MiB into a raw SOCK_STREAM
/// socketpair (after a go byte), this process reads them whole.
fn stream_1m(placement: &Placement, n: u64) -> anyhow::Result<Duration> {
    const BLOCK: usize = 1 << 20;
    const FILL: u8 = 0x5a;
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .context("socketpair")?;
    // Allocated before the fork: the child must not allocate.
    let block = vec![FILL; BLOCK];
    let ours_fd = ours.as_raw_fd();
    // SAFETY: the child closes a descriptor and reads and writes a socket it owns, from the
    // block allocated before the fork: system calls only.
    let pid = unsafe {
        fork_child(|| {
            close_in_child(ours_fd);
            let mut go = [0u8; 1];
            if rustix::io::read(&theirs, &mut go) != Ok(1) {
                return;
            }
            'blocks: for _ in 0..n {
                let mut off = 0;
                while off < BLOCK {
                    match rustix::io::write(&theirs, &block[off..]) {
                        Ok(k) if k > 0 => off += k,
                        _ => break 'blocks,
                    }
                }
            }
        })
    }?;
    drop(theirs);
    placement.child_started(pid as u32, 1)?;
    let mut buf = vec![0u8; BLOCK];
    let t0 = Instant::now();
    rustix::io::write(&ours, b"g").context("write")?;
    let mut total = 0u64;
    for i in 0..n {
        let mut off = 0;
        while off < BLOCK {
            let k = rustix::io::read(&ours, &mut buf[off..]).context("read")?;
            if k == 0 {
                bail!("the writer stopped at block {i}");
            }
            off += k;
        }
        ensure!(
            buf[0] == FILL && buf[BLOCK - 1] == FILL,
            "block {i} is wrong"
        );
        total += BLOCK as u64;
    }
    let dt = t0.elapsed();
    reap(pid)?;
    ensure!(total == n * BLOCK as u64, "received {total} bytes");
    Ok(dt)
}

/// `lock_uncontended`'s floor: `n` x (compare-and-swap 0 -> 1, store 0).
fn cas_lock_pair(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let word = AtomicU32::new(0);
    let w = black_box(&word);
    let t0 = Instant::now();
    for _ in 0..n {
        ensure!(
            w.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok(),
            "the floor lock was held"
        );
        w.store(0, Ordering::Release);
    }
    Ok(t0.elapsed())
}

/// `semaphore_uncontended`'s floor: `n` x (compare-and-swap decrement from 1, increment).
fn cas_count_pair(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    let word = AtomicU32::new(1);
    let w = black_box(&word);
    let t0 = Instant::now();
    for _ in 0..n {
        let v = w.load(Ordering::Relaxed);
        ensure!(
            v > 0
                && w.compare_exchange(v, v - 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok(),
            "the floor count was taken"
        );
        w.fetch_add(1, Ordering::Release);
    }
    ensure!(word.load(Ordering::Relaxed) == 1, "the floor count drifted");
    Ok(t0.elapsed())
}

/// `shared_memory_create_unlink`'s floor: `n` x (shm_open, ftruncate to 1 MiB, mmap, munmap,
/// close, shm_unlink) under one name per run.
fn raw_shm_cycle(_: &Placement, n: u64) -> anyhow::Result<Duration> {
    use rustix::mm::{MapFlags, ProtFlags};
    use rustix::shm;
    let size = crate::sync::SEGMENT_SIZE;
    let name = format!("/ipc-floor-{}", std::process::id());
    let t0 = Instant::now();
    for _ in 0..n {
        let fd = shm::open(
            name.as_str(),
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .context("shm_open")?;
        rustix::fs::ftruncate(&fd, size as u64).context("ftruncate")?;
        // SAFETY: a fresh shared mapping of a descriptor we own, of the size just set; nothing
        // else refers to it, and it is unmapped below before anything else happens.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                size,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd.as_fd(),
                0,
            )
        }
        .context("mmap")?;
        // SAFETY: `p` is the mapping of `size` bytes made above, unmapped once.
        unsafe { rustix::mm::munmap(p, size) }.context("munmap")?;
        drop(fd);
        shm::unlink(name.as_str()).context("shm_unlink")?;
    }
    Ok(t0.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pin::Pin;

    // Every floor runs a few operations for real (forks, sockets, segments) and checks what it
    // got, so none rots between full compare runs; a case named twice or unknown is refused.
    #[test]
    fn every_floor_runs_and_names_a_case() {
        let placement = Placement::new(Pin::None).unwrap();
        for (name, _, f) in FLOORS {
            assert!(crate::cases::get(name).is_some(), "{name} is no case");
            assert_eq!(FLOORS.iter().filter(|g| g.0 == *name).count(), 1);
            let dt = f(&placement, 3).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(dt > Duration::ZERO, "{name}");
            placement.case_done().unwrap();
        }
        for (name, _) in NOTES {
            assert!(
                crate::cases::get(name).is_some() && of(name).is_none(),
                "{name}"
            );
        }
    }
}
