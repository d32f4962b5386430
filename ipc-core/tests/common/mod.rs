//! Helpers shared by the process tests: a builder per start method and cleanup guards.
#![allow(dead_code, unreachable_pub)]

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use ipc_core::process::{Builder, JoinHandle, StartMethod};

/// Every start method, for tests that must pass under each.
pub const METHODS: [StartMethod; 3] = [
    StartMethod::Fork,
    StartMethod::Spawn,
    StartMethod::ForkServer,
];

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

/// Waits up to `timeout` for an arbitrary process (not necessarily our child) to be gone.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return true;
    };
    let fd: OwnedFd = match rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(_) => return true, // No such process.
    };
    poll_readable(fd.as_fd(), timeout) || is_zombie_or_gone(pid)
}

fn is_zombie_or_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Sends SIGKILL to any pid (used to kill grandchildren that are not our children).
pub fn kill_pid(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
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
