//! Helpers shared by the multi-process tests of ipc-core and ipc-sync (whose `tests/common`
//! includes this file): a builder per start method, cleanup guards, liveness polling, and a
//! signal pesterer for `EINTR` tests.
#![allow(dead_code, unreachable_pub)]

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipc_core::process::{Builder, JoinHandle, StartMethod};

/// Every start method, for tests that must pass under each.
pub const METHODS: [StartMethod; 3] = [
    StartMethod::Fork,
    StartMethod::Spawn,
    StartMethod::ForkServer,
];

/// Generous bound for liveness on a loaded 2-core machine.
pub const LONG: Duration = Duration::from_secs(30);

/// A builder for `method`. The test harness runs tests on several threads, so the fork method
/// needs the opt-in.
pub fn builder(method: StartMethod) -> Builder {
    let b = Builder::new().start_method(method);
    if method == StartMethod::Fork {
        // SAFETY: the other threads of the test harness run other tests; the forked child only
        // runs this crate's code and the test's function, which allocate (glibc's fork resets
        // the allocator's locks in the child) and never take a lock those threads may hold.
        unsafe { b.allow_fork_with_threads() }
    } else {
        b
    }
}

/// Kills and reaps a child when a test fails (panics) before joining it.
pub struct Reap<'a, R>(pub &'a JoinHandle<R>);

impl<R> Drop for Reap<'_, R> {
    fn drop(&mut self) {
        if std::thread::panicking() && self.0.is_alive() {
            let _ = self.0.kill();
            let _ = self.0.join_timeout(Duration::from_secs(10));
        }
    }
}

/// Polls `f` until it is true or `LONG` passes; returns its last value.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + LONG;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills the processes `pids` if the test fails (panics) before they are joined; for tests
/// that must move their handles into `join`.
pub struct KillOnPanic(pub Vec<u32>);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for &pid in &self.0 {
                kill_pid(pid);
            }
        }
    }
}

/// Waits up to `timeout` for an arbitrary process (not necessarily our child) to be gone.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let Some(p) = raw_pid(pid) else {
        return true;
    };
    let fd: OwnedFd = match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(_) => return true, // No such process.
    };
    poll_readable(fd.as_fd(), timeout) || is_zombie_or_gone(pid)
}

fn is_zombie_or_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Sends SIGKILL to any pid (used to kill grandchildren that are not our children).
pub fn kill_pid(pid: u32) {
    if let Some(p) = raw_pid(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// A pid as the kernel calls take it (`None` for 0 or out of range).
pub fn raw_pid(pid: u32) -> Option<rustix::process::Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
}

/// Whether `fd` becomes readable within `timeout` (a pidfd: the process exited).
pub fn poll_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as i64,
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(n) => return n > 0,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

/// SIGUSR1 deliveries counted by the handler of `install_handler`.
static DELIVERED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    // Only an atomic increment: async-signal-safe.
    DELIVERED.fetch_add(1, Ordering::Relaxed);
}

/// Installs the counting SIGUSR1 handler, deliberately without `SA_RESTART`.
pub fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags); we then set a
        // handler that is an `extern "C" fn(c_int)` doing only async-signal-safe work.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = count_signal as *const () as libc::sighandler_t;
        action.sa_flags = 0; // No SA_RESTART: blocking calls fail with EINTR.
        // SAFETY: `action` is fully initialised and outlives the call; a null old-action pointer
        // is allowed.
        let rc = unsafe { libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "sigaction failed");
    });
}

/// Sends SIGUSR1 to `thread` every few milliseconds for `period`; returns how many the handler
/// counted meanwhile. The thread must stay alive for the whole period.
pub fn pester<T>(thread: &std::thread::JoinHandle<T>, period: Duration) -> usize {
    let before = DELIVERED.load(Ordering::Relaxed);
    let end = Instant::now() + period;
    while Instant::now() < end {
        // SAFETY: the pthread_t comes from a JoinHandle we hold and have not joined, so the
        // thread has not been reaped and the id is valid (the callers keep it blocked meanwhile).
        let rc = unsafe { libc::pthread_kill(thread.as_pthread_t(), libc::SIGUSR1) };
        assert_eq!(rc, 0, "pthread_kill failed");
        std::thread::sleep(Duration::from_millis(3));
    }
    // Let the last signal land before counting.
    std::thread::sleep(Duration::from_millis(20));
    DELIVERED.load(Ordering::Relaxed) - before
}

/// Every process whose parent is `pid`, with its state (Z = zombie).
pub fn children_of(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if f.next().and_then(|s| s.parse::<u32>().ok()) == Some(pid) {
            out.push((p, state));
        }
    }
    out
}

/// The system call number (x86-64) a thread sleeps in for a futex wait, and for poll/ppoll.
pub const SYS_FUTEX: u64 = 202;
/// See [`SYS_FUTEX`].
pub const SYS_POLL: [u64; 2] = [7, 271];

/// The calling thread's id.
pub fn current_tid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// The system call thread `tid` of process `pid` is blocked in, as the kernel reports it in
/// `/proc/PID/task/TID/syscall` (`None` while it runs): lets a test wait until another thread
/// or process really sleeps, instead of sleeping and hoping.
pub fn blocked_in(pid: u32, tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// CPU time the calling thread has used.
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Runs `wait`, a wait of `timeout` that says whether it timed out, and checks that it did,
/// after `timeout`, using less than a tenth of it on a CPU: a timed wait sleeps (its spin
/// before each sleep costs microseconds), where one that spins uses all of it. CPU time, not
/// wall time, is measured, so a loaded machine does not make it fail.
#[track_caller]
pub fn sleeps(what: &str, timeout: Duration, wait: impl FnOnce() -> bool) {
    let (cpu, t0) = (thread_cpu(), Instant::now());
    let timed_out = wait();
    let (cpu, waited) = (thread_cpu() - cpu, t0.elapsed());
    assert!(timed_out, "{what}: did not time out");
    assert!(waited >= timeout, "{what}: returned after {waited:?}");
    assert!(cpu < timeout / 10, "{what}: {cpu:?} of CPU over {waited:?}");
}
