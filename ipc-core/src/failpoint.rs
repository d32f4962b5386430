//! Named points where a test can have a process killed (SIGKILL) at a precise step of a
//! protocol, to reproduce a death that a random kill would almost never hit. Compiled in only
//! with the `failpoints` feature (ipc-sync's `failpoints` turns it on, and `cargo xtask test`
//! turns that on); without it, `hit` is empty and disappears.
//!
//! A test arms one point in the process that should die (a child, after it starts):
//! `ipc_core::failpoint::arm("queue.wake.announced")`. Children inherit it: a fork copies it,
//! a spawned child (the forkserver included) finds it in its environment. Points:
//! - `queue.wake.announced` (ipc-sync's queue ring): a publisher (put or get) saw a sleeper's
//!   announcement, after it published its position and before it woke the sleeper.
//! - `forkserver.forked`: the forkserver and the child it just forked, both before they told
//!   anybody (the server its answer, the child its hello): a double death that leaves a child
//!   of ours nobody knows of.
//!
//! A leaf: it imports no other module of the crate.

/// The environment variable that carries an armed point to a spawned child.
#[cfg(feature = "failpoints")]
pub(crate) const ENV: &str = "IPC_CORE_FAILPOINT";

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::Mutex;

    static ARMED: Mutex<Option<&'static str>> = Mutex::new(None);

    /// Arms `name` in this process (and the children it starts from now on): the next
    /// `hit(name)` kills the process that hits it.
    pub fn arm(name: &'static str) {
        *ARMED.lock().unwrap_or_else(|p| p.into_inner()) = Some(name);
    }

    /// Disarms the armed point, if any.
    pub fn disarm() {
        *ARMED.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The armed point, if any.
    pub fn armed() -> Option<&'static str> {
        *ARMED.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Kills this process if `name` is armed.
    pub fn hit(name: &str) {
        if armed() == Some(name) {
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
pub use armed::{arm, armed, disarm, hit};

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
