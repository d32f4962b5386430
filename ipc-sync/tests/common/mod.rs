//! Helpers shared by the multi-process tests: a builder per start method, cleanup guards.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use ipc_core::process::{Builder, JoinHandle, StartMethod};

/// Every start method: each multi-process test runs under all three.
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
        // SAFETY: the harness's other threads run other tests; the forked child runs only this
        // crate's code and the test's function, which never take a lock those threads may hold
        // (glibc's fork resets the allocator's locks in the child).
        unsafe { b.allow_fork_with_threads() }
    } else {
        b
    }
}

/// Kills and reaps a child when a test fails (panics) before joining it, so no test leaves a
/// process behind.
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
pub struct KillOnPanic(pub Vec<i32>);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for &pid in &self.0 {
                if let Some(p) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                }
            }
        }
    }
}
