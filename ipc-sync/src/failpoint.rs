//! Named points where a test can have this process killed (SIGKILL) at a precise step of a
//! protocol, to reproduce a death that a random kill would almost never hit. Compiled in only
//! with the `failpoints` feature (`cargo xtask test` turns it on); without it, `hit` is empty
//! and disappears.
//!
//! A test arms one point in the process that should die (a child, after it starts):
//! `ipc_sync::__failpoint_arm("queue.wake.announced")`. Points:
//! - `queue.wake.announced`: a publisher (put or get) saw a sleeper's announcement, after it
//!   published its position and before it woke the sleeper.

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::Mutex;

    static ARMED: Mutex<Option<&'static str>> = Mutex::new(None);

    /// Arms `name` in this process: the next `hit(name)` kills it.
    pub fn arm(name: &'static str) {
        *ARMED.lock().unwrap_or_else(|p| p.into_inner()) = Some(name);
    }

    /// Kills this process if `name` is armed.
    pub(crate) fn hit(name: &str) {
        if *ARMED.lock().unwrap_or_else(|p| p.into_inner()) == Some(name) {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            // SIGKILL to ourselves is delivered before kill returns; never go on.
            std::process::abort();
        }
    }
}

#[cfg(feature = "failpoints")]
pub use armed::arm;
#[cfg(feature = "failpoints")]
pub(crate) use armed::hit;

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(_name: &str) {}
