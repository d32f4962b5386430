//! The few operating-system calls that rustix does not wrap safely.
//!
//! Everything else goes through rustix's safe API. This module is the whole unsafe surface of the
//! crate's system calls: `fork` (and `clone3`/`clone` for the forkserver), `_exit`,
//! `mmap`/`munmap` (shared segments, the fork-wiped page of what a process knows about itself),
//! `atexit`, glibc's `sched_getcpu`, closing a descriptor by number, editing the environment,
//! and the `fcntl`s that make a descriptor's hang-up kill its process.
//! (The dynamic loader's tables, which name functions across processes, are read in
//! `process/function.rs`.) A leaf: it imports no other module of the crate.
//!
//! # Safety
//! Each function documents the contract that makes its call sound; callers uphold it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// What [`fork`] returned in this process.
pub(crate) enum Forked {
    /// We are the new child.
    Child,
    /// We are the parent; the child's pid.
    Parent(rustix::process::Pid),
}

/// `fork(2)` through glibc, so its atfork handlers (malloc's arena locks) run.
///
/// # Safety
/// In the child, only the calling thread exists. If the parent had other threads, any lock they
/// held is held forever in the child; the caller must have checked the parent was single-threaded
/// or the user must have accepted that risk through an `unsafe` opt-in.
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: the caller upholds this function's contract (see above); fork itself takes no
    // pointers.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        // A positive pid from fork is a valid, non-zero pid.
        p => Ok(Forked::Parent(
            rustix::process::Pid::from_raw(p).expect("fork returned a positive pid"),
        )),
    }
}

/// `clone3(CLONE_PARENT)`: a fork whose child belongs to *our* parent, as a sibling of ours.
///
/// The forkserver forks its children this way, so they are children of the process that
/// started the server: it reaps them itself and reads their exit status first hand. glibc's
/// `fork` cannot pass the flag, so the two things glibc's fork does for the child by hand are
/// done here too: the child's thread descriptor gets its own tid (`CLONE_CHILD_SETTID` on the
/// address glibc registered with `set_tid_address`, read back with `PR_GET_TID_ADDRESS`), and
/// the robust-futex list is registered again (the kernel clears it in a new process). What
/// glibc's fork does besides (resetting locks other threads may hold, running `pthread_atfork`
/// handlers) only matters in a multithreaded process, and the caller has one thread.
pub(crate) struct SiblingFork {
    /// The address of glibc's `tid` field of this thread, or 0 if it could not be found (the
    /// child then keeps ours there, which under glibc only `pthread_*` calls naming the main
    /// thread read; musl registers another address, so there the child's `raise` and `abort`
    /// would signal the server: the forkserver is meant for glibc targets).
    tid_address: u64,
    /// This thread's robust-futex list head and its size, as `get_robust_list` gave them.
    robust: (usize, usize),
}

/// `struct clone_args` up to `tls` (`CLONE_ARGS_SIZE_VER0`, Linux 5.3).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

impl SiblingFork {
    /// Captures what the child needs from the calling thread (call it on the forking thread).
    pub(crate) fn new() -> SiblingFork {
        let mut addr: *mut libc::c_int = std::ptr::null_mut();
        // SAFETY: PR_GET_TID_ADDRESS stores one pointer at the address passed, a live local.
        let rc = unsafe {
            libc::prctl(
                libc::PR_GET_TID_ADDRESS,
                &mut addr as *mut *mut libc::c_int as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        // glibc registers its `tid` field as this thread's `clear_child_tid` at thread start.
        // SAFETY: a non-null address from PR_GET_TID_ADDRESS points into this thread's
        // descriptor, which lives as long as the thread: reading an i32 there is a plain load.
        let ours = rc == 0 && !addr.is_null() && unsafe { addr.read_volatile() } == tid;
        let mut head: usize = 0;
        let mut len: usize = 0;
        // SAFETY: get_robust_list(0, ..) writes one pointer and one size into the two live
        // locals passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_get_robust_list,
                0,
                &mut head as *mut usize,
                &mut len as *mut usize,
            )
        };
        SiblingFork {
            tid_address: if ours { addr as u64 } else { 0 },
            robust: if rc == 0 { (head, len) } else { (0, 0) },
        }
    }

    /// Forks; the child is our parent's.
    ///
    /// `clone3` first; where it is refused (`ENOSYS`: older kernels, and the default seccomp
    /// profiles of Docker, containerd and podman), the classic `clone` from then on.
    ///
    /// # Safety
    /// As [`fork`], and more strictly: the calling process must have a single thread (the one
    /// that called [`SiblingFork::new`]), since no lock of another thread is reset in the child.
    pub(crate) unsafe fn fork(&self) -> io::Result<Forked> {
        static NO_CLONE3: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !NO_CLONE3.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: our caller's contract is this function's.
            match unsafe { self.fork_with(CloneCall::Clone3) } {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    NO_CLONE3.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                other => return other,
            }
        }
        // SAFETY: as above.
        unsafe { self.fork_with(CloneCall::Classic) }
    }

    /// Forks with the given system call.
    ///
    /// # Safety
    /// As [`SiblingFork::fork`].
    unsafe fn fork_with(&self, call: CloneCall) -> io::Result<Forked> {
        let mut flags = libc::CLONE_PARENT as u64;
        if self.tid_address != 0 {
            flags |= (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64;
        }
        let pid = match call {
            CloneCall::Clone3 => {
                let mut args = CloneArgs {
                    // No exit signal of its own: with CLONE_PARENT the child inherits ours
                    // (SIGCHLD), and clone3 refuses one.
                    flags,
                    child_tid: self.tid_address,
                    ..CloneArgs::default()
                };
                // Without CLONE_VM the child gets a copy of our memory, so the kernel's write of
                // its tid at `child_tid` lands in the child's copy of our thread descriptor.
                // SAFETY: `args` is a valid clone_args of the size passed; the caller guarantees
                // no other thread exists whose state the copy could catch half-changed.
                unsafe {
                    libc::syscall(
                        libc::SYS_clone3,
                        &mut args as *mut CloneArgs,
                        std::mem::size_of::<CloneArgs>(),
                    )
                }
            }
            CloneCall::Classic => classic_clone(flags, self.tid_address)?,
        };
        match pid {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                let (head, len) = self.robust;
                if head != 0 {
                    // SAFETY: re-registers the list head our thread had (its memory is copied
                    // into this process at the same address), exactly what glibc's fork does.
                    unsafe { libc::syscall(libc::SYS_set_robust_list, head, len) };
                }
                Ok(Forked::Child)
            }
            p => Ok(Forked::Parent(
                rustix::process::Pid::from_raw(p as i32).expect("clone returned a positive pid"),
            )),
        }
    }
}

/// Which system call [`SiblingFork`] uses.
#[derive(Clone, Copy, Debug)]
enum CloneCall {
    Clone3,
    Classic,
}

/// The classic `clone(flags, stack, parent_tid, child_tid, tls)` (this argument order is the
/// one of x86-64, arm64 and riscv64; other architectures have it differently and get an error).
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
))]
fn classic_clone(flags: u64, child_tid: u64) -> io::Result<libc::c_long> {
    // The exit signal goes in the low byte; with CLONE_PARENT the kernel uses ours instead.
    let flags = flags | libc::SIGCHLD as u64;
    // SAFETY: no new stack (0: the child runs on its copy of ours, as after fork), no parent
    // tid, `child_tid` as in the clone3 call, no TLS change; the caller of `fork_with` upholds
    // the single-thread contract.
    Ok(unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, child_tid, 0usize) })
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
fn classic_clone(_flags: u64, _child_tid: u64) -> io::Result<libc::c_long> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "clone3 is refused and the classic clone is not wired for this architecture",
    ))
}

/// `_exit(2)`: ends the process at once, without running atexit handlers or destructors.
///
/// A forked child must leave this way: the parent's atexit handlers (and ours, which join the
/// parent's children) belong to the parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// Registers `f` to run at normal process exit (`main` returning or `std::process::exit`).
pub(crate) fn at_exit(f: extern "C" fn()) -> io::Result<()> {
    // SAFETY: `f` is a plain `extern "C" fn()` with 'static lifetime, which is what atexit takes.
    let rc = unsafe { libc::atexit(f) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::other("atexit refused the handler"))
    }
}

/// This process's pid, cached: `getpid()` is a real system call (~140 ns here, against a few
/// ns for a lock's compare-and-swap, whose fast path writes the pid).
///
/// The cache must not survive a fork, where the child gets a new pid but a copy of our memory.
/// It lives in a private anonymous page marked `MADV_WIPEONFORK`: the kernel hands every forked
/// child that page zero-filled, so the child's first call sees 0 and asks the kernel again.
/// That holds for every fork (ours, a raw `libc::fork`, the forkserver's `clone`, another
/// library's), with no hook to register and one relaxed load per call. Where the page cannot be
/// set up (a kernel without `MADV_WIPEONFORK`), every call asks the kernel: slower, never wrong.
#[inline]
pub(crate) fn pid() -> i32 {
    let Some(cell) = fork_local() else {
        return rustix::process::getpid().as_raw_nonzero().get();
    };
    let p = cell.pid.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    let p = rustix::process::getpid().as_raw_nonzero().get();
    cell.pid.store(p, Ordering::Relaxed);
    p
}

/// This process's pid namespace, as the inode of `/proc/self/ns/pid`; 0 if that cannot be read
/// (no `/proc`, or one mounted for a namespace this process is not in). Pids mean something
/// only inside one namespace, so shared objects whose locks name their holders by pid carry it
/// and refuse to cross (see `shm::heap`). Cached beside the pid, and wiped on fork as it is: a
/// process's own namespace never changes (`unshare` and `setns` move only later children), but
/// a child forked after either is in another.
pub(crate) fn pid_namespace() -> u64 {
    fn read() -> u64 {
        namespace_link(c"/proc/self/ns/pid").unwrap_or(0)
    }
    let Some(cell) = fork_local() else {
        return read();
    };
    match cell.pid_ns.load(Ordering::Relaxed) {
        0 => {
            let ns = read();
            cell.pid_ns.store(ns, Ordering::Relaxed);
            ns
        }
        ns => ns,
    }
}

/// The pid namespace this process's next children will be in (`/proc/self/ns/pid_for_children`,
/// which `unshare(CLONE_NEWPID)` and `setns` change); 0 if unknown, `u64::MAX` for a namespace
/// `unshare` made that has no process yet (the link is missing until its first child). Not
/// cached: it can change at any time.
pub(crate) fn pid_namespace_for_children() -> u64 {
    match namespace_link(c"/proc/self/ns/pid_for_children") {
        Ok(ino) => ino,
        Err(rustix::io::Errno::NOENT) if pid_namespace() != 0 => u64::MAX,
        Err(_) => 0,
    }
}

/// The inode of the namespace a `/proc/self/ns/` link names, from the link's text
/// (`pid:[4026531836]`): `readlink` takes 2.5 us here where `stat`, which resolves the link to
/// the namespace's file, takes 4.8 us, and the fork start asks at every fork.
fn namespace_link(path: &std::ffi::CStr) -> rustix::io::Result<u64> {
    let mut buf = [0u8; 40];
    let len = rustix::fs::readlinkat_raw(rustix::fs::CWD, path, &mut buf[..])?;
    let text = &buf[..len.min(buf.len())];
    let start = text.iter().position(|&b| b == b'[').map_or(0, |k| k + 1);
    let digits = text[start..].strip_suffix(b"]").unwrap_or(&[]);
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or(rustix::io::Errno::INVAL)
}

/// What a process knows about itself that a forked child must learn again: zero-filled in
/// every child (all-zero means "ask the kernel").
#[repr(C)]
struct ForkLocal {
    pid: AtomicI32,
    pid_ns: AtomicU64,
}

/// The wipe-on-fork page holding [`ForkLocal`], or `None` where the kernel refused the advice.
fn fork_local() -> Option<&'static ForkLocal> {
    static CELL: std::sync::OnceLock<Option<&'static ForkLocal>> = std::sync::OnceLock::new();
    *CELL.get_or_init(|| {
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
        // SAFETY: `page` is the whole mapping just created; the advice changes only what a
        // forked child sees (zeroes), not this process's view.
        if unsafe { madvise(page, len, Advice::LinuxWipeOnFork) }.is_err() {
            // SAFETY: the mapping is ours and nothing refers to it yet.
            let _ = unsafe { rustix::mm::munmap(page, len) };
            return None;
        }
        // SAFETY: the page is zero-filled, page aligned (so aligned for ForkLocal, 16 bytes),
        // readable and writable, and lives forever; all-zero atomics are valid.
        Some(unsafe { &*(page as *const ForkLocal) })
    })
}

/// Maps `len` bytes of `fd` shared and read-write.
pub(crate) fn map_shared(fd: BorrowedFd<'_>, len: usize) -> io::Result<NonNull<u8>> {
    use rustix::mm::{MapFlags, ProtFlags, mmap};
    // SAFETY: a null hint lets the kernel pick an address that overlaps no existing mapping, so
    // no Rust object is aliased; the mapping stays valid until `unmap` with the same length.
    let ptr = unsafe {
        mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )
    }?;
    NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))
}

/// Unmaps a region returned by [`map_shared`].
///
/// # Safety
/// `ptr`/`len` must come from one [`map_shared`] call, unmapped once, and no reference into the
/// region may be used afterwards.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: guaranteed by the caller: the region is ours and no longer referenced.
    let _ = unsafe { rustix::mm::munmap(ptr.as_ptr().cast(), len) };
}

/// The CPU the calling thread runs on, through glibc, which reads it from the thread's rseq
/// area (3 ns here) rather than making the `getcpu` system call (146 ns); `None` if unknown.
pub(crate) fn current_cpu() -> Option<u32> {
    // SAFETY: sched_getcpu takes no arguments and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).ok()
}

/// The number of CPUs online in the system (at least 1), whatever this process's affinity.
pub(crate) fn online_cpus() -> usize {
    // SAFETY: sysconf takes a constant name and touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// The number of threads in this process.
///
/// Asked before every fork, so it is one `statx` of `/proc/self/task`: procfs reports that
/// directory's link count as 2 plus the number of threads (`proc_task_getattr`), which costs
/// about 1 us here against 10 us to open, read and parse `/proc/self/stat`. A link count that
/// cannot be that (below 3) falls back to field 20 of `/proc/self/stat`.
pub(crate) fn thread_count() -> io::Result<usize> {
    let nlink = rustix::fs::stat("/proc/self/task")?.st_nlink;
    if nlink >= 3 {
        return Ok((nlink - 2) as usize);
    }
    thread_count_from_stat()
}

/// The number of threads in this process, from `/proc/self/stat` (field 20).
fn thread_count_from_stat() -> io::Result<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace()
        .nth(17)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("cannot read the thread count from /proc/self/stat"))
}

/// Removes a variable from this process's environment.
///
/// # Safety
/// No other thread may exist (or read the environment) during the call, as for
/// `std::env::remove_var`.
pub(crate) unsafe fn remove_env(key: &str) {
    // SAFETY: the caller guarantees that no other thread reads the environment meanwhile.
    unsafe { std::env::remove_var(key) };
}

/// Closes descriptor `fd` by number.
///
/// # Safety
/// Nothing may own `fd` (no `OwnedFd`, `File` ...) or use it afterwards: the number may be
/// reused at once by the next descriptor this process opens.
pub(crate) unsafe fn close_raw(fd: std::os::fd::RawFd) {
    // SAFETY: by the caller's contract nothing owns or uses the descriptor any more.
    unsafe { libc::close(fd) };
}

/// Has the kernel send this process SIGKILL when `fd` (the read end of a pipe, or a socket) sees
/// an event, such as the hang-up of its last writer: `F_SETOWN` to this process, `F_SETSIG` to
/// SIGKILL, then `O_ASYNC`. The settings belong to the open file description, which must be
/// this process's own (not shared with another process that also sets them).
pub(crate) fn kill_me_on_event(fd: BorrowedFd<'_>) -> io::Result<()> {
    // <asm-generic/fcntl.h>'s F_SETSIG (the libc crate does not export it).
    const F_SETSIG: libc::c_int = 10;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let check = |r: libc::c_int| {
        if r == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: `fd` is a valid open descriptor for the duration of the borrow, and these fcntl
    // commands take integer arguments and touch no memory of ours.
    unsafe {
        check(libc::fcntl(raw, libc::F_SETOWN, libc::getpid()))?;
        check(libc::fcntl(raw, F_SETSIG, libc::SIGKILL))?;
        let flags = check(libc::fcntl(raw, libc::F_GETFL))?;
        check(libc::fcntl(raw, libc::F_SETFL, flags | libc::O_ASYNC))?;
    }
    Ok(())
}

/// Ignores SIGPIPE, as Rust's runtime does before `main` (a spawned child never reaches `main`),
/// so writing to a closed pipe is an `EPIPE` error instead of death.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN for SIGPIPE touches no memory and is what std does at start-up.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_links_name_the_namespace_files() {
        for (link, path) in [
            (c"/proc/self/ns/pid", "/proc/self/ns/pid"),
            (
                c"/proc/self/ns/pid_for_children",
                "/proc/self/ns/pid_for_children",
            ),
        ] {
            let ino = rustix::fs::stat(path).unwrap().st_ino;
            assert_eq!(namespace_link(link), Ok(ino), "{path}");
        }
        assert_eq!(
            namespace_link(c"/proc/self/exe"),
            Err(rustix::io::Errno::INVAL)
        );
    }

    /// Runs in a spawned helper (single-threaded: a spawned child runs its function before
    /// `main`): forks a sibling with `call`, which checks that glibc's descriptor holds its own
    /// tid; returns the sibling's pid, to be reaped by the helper's parent (0: clone3 refused).
    fn sibling_of_helper(classic: bool) -> i32 {
        let f = SiblingFork::new();
        assert_ne!(
            f.tid_address, 0,
            "PR_GET_TID_ADDRESS gave glibc's tid field"
        );
        let call = if classic {
            CloneCall::Classic
        } else {
            CloneCall::Clone3
        };
        // SAFETY: this spawned helper has one thread, the one that made `f`.
        let forked = match unsafe { f.fork_with(call) } {
            // clone3 refused (a container's seccomp profile): the case cannot be tried here.
            Err(e) if !classic && matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                return 0;
            }
            other => other.unwrap(),
        };
        match forked {
            Forked::Child => {
                let tid = rustix::thread::gettid().as_raw_nonzero().get();
                // SAFETY: the address of glibc's tid field of this (copied) thread descriptor.
                let recorded = unsafe { (f.tid_address as *const i32).read_volatile() };
                exit_now(if recorded == tid { 0 } else { 3 })
            }
            Forked::Parent(pid) => pid.as_raw_nonzero().get(),
        }
    }

    /// Both system calls make the forking process's parent the parent of the new process (it
    /// reaps it here), and give the new process its own tid in glibc's thread descriptor.
    #[test]
    fn sibling_fork_by_clone3_and_by_classic_clone() {
        use crate::process::{Builder, StartMethod};
        for classic in [false, true] {
            let helper = Builder::new()
                .start_method(StartMethod::Spawn)
                .spawn(classic, sibling_of_helper)
                .unwrap();
            let sibling = helper.join().unwrap();
            if sibling == 0 {
                eprintln!("clone3 is refused here: only the classic clone was tried");
                continue;
            }
            let pid = rustix::process::Pid::from_raw(sibling).unwrap();
            let (_, status) =
                rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
                    .unwrap()
                    .expect("the sibling is our child");
            assert_eq!(status.exit_status(), Some(0), "classic clone: {classic}");
        }
    }

    /// The link count of `/proc/self/task` agrees with `/proc/self/stat` and sees a new thread.
    /// Other tests start threads concurrently, so agreement is sought over a few tries.
    #[test]
    fn thread_count_follows_threads() {
        let agree =
            || (0..100).any(|_| thread_count().unwrap() == thread_count_from_stat().unwrap());
        assert!(agree());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert!(
            thread_count().unwrap() >= 2,
            "this thread and the one just started"
        );
        assert!(agree());
        drop(tx);
        t.join().unwrap().unwrap_err();
    }
}
