//! Named points where a test can have a process killed (SIGKILL) at a precise step of a
//! protocol, to reproduce a death that a random kill would almost never hit. Compiled in only
//! with the `failpoints` feature (ipc-sync's `failpoints` turns it on; `cargo xtask test` and
//! `cargo xtask chaos` turn that on); without it, `hit` is empty and disappears.
//!
//! ```text
//! state (per process):  DISARMED --arm(name) / arm_nth(name, n)--> ARMED(name, n)
//!                       ARMED(name, n) --hit(name), n > 1--> ARMED(name, n - 1)
//!                       ARMED(name, 1) --hit(name)--> log the name, SIGKILL ourselves
//!                       (or, armed with arm_pause, sleep once and disarm)
//! ```
//! A test arms one point in the process that should die (a child, after it starts):
//! `ipc_core::failpoint::arm("queue.wake.announced")`. Children inherit it with the count it
//! has at their start: a fork copies it, a spawned child (the forkserver included) finds it in
//! its environment (`IPC_CORE_FAILPOINT=name@n`). A firing point appends its name and a
//! newline to the file named by `IPC_CORE_FAILPOINT_LOG` (if set) before the kill, so that a
//! runner can tell which kills landed where. The points, by crate:
//! - ipc-core: `forkserver.forked` (the forkserver and the child it just forked, both before
//!   they told anybody: a double death that leaves a child of ours nobody knows of);
//!   `conn.send.partial` (a sender between two writes (or records) of one frame: the peer
//!   has part of it).
//! - ipc-sync: `lock.acquired` (a holder, right after taking a lock), `lock.releasing` (after
//!   the release store, before the wake); `queue.put.reserved` (the write lock held, space
//!   found), `queue.put.copied` (the frame written, not published), `queue.put.committed`
//!   (published, before the wake), `queue.wake.announced` (a publisher, put or get, saw a
//!   sleeper's announcement, before waking it); `queue.get.copied` (a consumer holds the
//!   record's bytes, the frame is not freed), `queue.get.taken` (freed, not yet returned);
//!   `queue.get.dry` (a consumer in the middle of a streamed record found the ring dry, before
//!   it asks whether the producer is gone); `queue.task_done.before`; `condition.notified` (a
//!   notifier, after it moved waiters, before the wake); `barrier.arrived` (a party counted
//!   in, not yet waiting); `event.set.before_wake`.
//! - ipc-pool: `pool.task.taken`, `pool.task.running`, `pool.result.committed`.
//! - ipc-manager: `manager.server.applied` (an operation applied, its reply not sent),
//!   `manager.client.sent` (a request sent, its reply not read).
//!
//! A leaf: it imports no other module of the crate.

/// The environment variable that carries an armed point to a spawned child.
#[cfg(feature = "failpoints")]
pub(crate) const ENV: &str = "IPC_CORE_FAILPOINT";
/// The environment variable naming the file a firing point appends its name to.
pub const LOG_ENV: &str = "IPC_CORE_FAILPOINT_LOG";

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// What an armed point does when its count runs out.
    #[derive(Clone, Copy)]
    enum Action {
        /// SIGKILL this process.
        Kill,
        /// Sleep this long, once, and disarm (a window held open for a test).
        Pause(Duration),
    }

    /// The armed point, the hits left until it fires (1: the next one), and its action.
    static ARMED: Mutex<Option<(&'static str, u32, Action)>> = Mutex::new(None);
    /// Whether anything is armed: keeps `hit` to one load when nothing is.
    static ANY: AtomicBool = AtomicBool::new(false);

    fn state() -> std::sync::MutexGuard<'static, Option<(&'static str, u32, Action)>> {
        ARMED.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(name: &'static str, n: u32, action: Action) {
        *state() = Some((name, n.max(1), action));
        ANY.store(true, Ordering::SeqCst);
    }

    /// Arms `name` in this process (and the children it starts from now on): the next
    /// `hit(name)` kills the process that hits it.
    pub fn arm(name: &'static str) {
        arm_nth(name, 1);
    }

    /// Arms `name` to kill at its `n`-th hit from now (`n` of 0 counts as 1).
    pub fn arm_nth(name: &'static str, n: u32) {
        set(name, n, Action::Kill);
    }

    /// Arms `name` to pause the thread that hits it next for `d`, once (then disarms): holds a
    /// window open so that another process can act inside it. Spawned children do not
    /// inherit it (a forked one gets a copy, as of every armed point).
    pub fn arm_pause(name: &'static str, d: Duration) {
        set(name, 1, Action::Pause(d));
    }

    /// Disarms the armed point, if any.
    pub fn disarm() {
        *state() = None;
        ANY.store(false, Ordering::SeqCst);
    }

    /// The armed point, if any.
    pub fn armed() -> Option<&'static str> {
        state().map(|(name, _, _)| name)
    }

    /// The armed kill point as a spawned child finds it in its environment: `name@n`.
    pub(crate) fn encoded() -> Option<String> {
        match *state() {
            Some((name, n, Action::Kill)) => Some(format!("{name}@{n}")),
            _ => None,
        }
    }

    /// Arms what [`encoded`] wrote (a bare name counts as `@1`).
    pub(crate) fn arm_encoded(s: &str) {
        let (name, n) = match s.rsplit_once('@') {
            Some((name, n)) => (name, n.parse().unwrap_or(1)),
            None => (s, 1),
        };
        arm_nth(Box::leak(name.to_owned().into_boxed_str()), n);
    }

    /// Fires `name`'s action if it is armed and this is the hit it counts down to.
    pub fn hit(name: &str) {
        if !ANY.load(Ordering::Relaxed) {
            return;
        }
        let fire = {
            let mut s = state();
            let fire = match s.as_mut() {
                Some((armed, left, action)) if *armed == name => {
                    *left -= 1;
                    (*left == 0).then_some(*action)
                }
                _ => None,
            };
            if matches!(fire, Some(Action::Pause(_))) {
                *s = None;
                ANY.store(false, Ordering::SeqCst);
            }
            fire
        };
        match fire {
            None => {}
            Some(Action::Pause(d)) => std::thread::sleep(d),
            Some(Action::Kill) => {
                if let Some(path) = std::env::var_os(super::LOG_ENV) {
                    use std::io::Write;
                    let line = format!("{name}\n");
                    if let Ok(mut f) = std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(path)
                    {
                        let _ = f.write_all(line.as_bytes());
                    }
                }
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::KILL,
                );
                // SIGKILL to ourselves is delivered before kill returns; never go on.
                std::process::abort();
            }
        }
    }
}

#[cfg(feature = "failpoints")]
pub use armed::{arm, arm_nth, arm_pause, armed, disarm, hit};
#[cfg(feature = "failpoints")]
pub(crate) use armed::{arm_encoded, encoded};

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
