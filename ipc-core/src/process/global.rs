//! Process-wide state: who this process is and the children it started (its forkserver has a
//! lock of its own: `start::forkserver::lock`, taken before this one when both are needed).
//!
//! One `std::sync::Mutex` guards it all. The fork start method holds this lock across `fork`, so
//! the child inherits it in a known state (held by the forking thread, which is the child's only
//! thread) and resets it; no other thread can be inside it at the moment of the fork. std's
//! futex mutex, unlike parking_lot's, unlocks with one atomic operation and at most a futex wake,
//! which is sound in the child.
//!
//! At normal exit (`main` returns or `std::process::exit`), an `atexit` handler terminates daemon
//! children and joins the others, as Python does. A child started by this crate runs the same
//! shutdown explicitly before it leaves with `_exit`.

use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::process::StartMethod;
use crate::process::child::ChildInner;
use crate::process::slot::Region;

/// Who this process is, as its parent described it (or "MainProcess" in the root).
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) name: String,
    /// Python's `_identity`: the path of child counters from the root, empty in the root.
    pub(crate) path: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) parent: Option<(i32, String)>,
    pub(crate) start_method: Option<StartMethod>,
}

pub(crate) struct Global {
    pub(crate) identity: Identity,
    pub(crate) children: Vec<Arc<ChildInner>>,
    pub(crate) counter: u32,
    pub(crate) default_method: Option<StartMethod>,
    /// Where fork children leave small outcomes (`process::slot`), once this process forked.
    pub(crate) slots: Option<&'static Region>,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global {
    identity: Identity {
        name: String::new(),
        path: Vec::new(),
        daemon: false,
        parent: None,
        start_method: None,
    },
    children: Vec::new(),
    counter: 0,
    default_method: None,
    slots: None,
});

static AT_EXIT: Once = Once::new();

pub(crate) fn lock() -> MutexGuard<'static, Global> {
    GLOBAL.lock().unwrap_or_else(|p| p.into_inner())
}

impl Global {
    /// Replaces the state inherited from the parent, in a new child (fork or bootstrap).
    pub(crate) fn become_child(&mut self, identity: Identity) {
        self.identity = identity;
        // The parent's children are not ours. Dropping their records closes our copies of their
        // descriptors, which does not affect the parent. (Its forkserver is forgotten by the
        // fork start method, or was never in this fresh process.) Handles copied with the
        // parent's memory may keep a record alive: close the copies of the daemons' lifelines
        // now, or the daemons would outlive their parent for as long as we live (and of the
        // children's ends held for their slots).
        for c in &self.children {
            c.cut_in_fork();
        }
        self.children.clear();
        self.counter = 0;
    }

    pub(crate) fn name(&self) -> String {
        if self.identity.path.is_empty() && self.identity.name.is_empty() {
            "MainProcess".to_string()
        } else {
            self.identity.name.clone()
        }
    }

    /// The identity of this process's next child.
    pub(crate) fn next_child(
        &mut self,
        name: Option<String>,
        daemon: bool,
        method: StartMethod,
    ) -> Identity {
        self.counter += 1;
        let mut path = self.identity.path.clone();
        path.push(self.counter);
        let default_name = format!(
            "Process-{}",
            path.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(":")
        );
        Identity {
            name: name.unwrap_or(default_name),
            path,
            daemon,
            parent: Some((crate::sys::pid(), self.name())),
            start_method: Some(method),
        }
    }

    /// Records a started child and makes sure the exit handler is installed.
    pub(crate) fn register(&mut self, child: Arc<ChildInner>) {
        AT_EXIT.call_once(|| {
            // If atexit refuses, children are still reaped by their handles; nothing to undo.
            let _ = crate::sys::at_exit(on_exit);
        });
        self.reap_detached();
        self.children.push(child);
    }

    /// Reaps children whose handles were dropped and which have exited, so detached children
    /// do not stay zombies (Python does the same on every start), and forgets their records.
    pub(crate) fn reap_detached(&mut self) {
        self.forget_inherited();
        // Only records nobody else holds are polled: a live handle's owner may be blocked in a
        // wait on it, and that owner reaps it anyway.
        self.children
            .retain(|c| Arc::strong_count(c) > 1 || !matches!(c.try_wait(), Ok(Some(_))));
    }

    /// In a process forked outside this crate (`libc::fork`, nix), forgets the records it
    /// inherited: the children are its parent's, not its own (dropping the records closes only
    /// this process's copies of their descriptors; `forkserver::lock` does the same for the
    /// server).
    pub(crate) fn forget_inherited(&mut self) {
        // (Nothing to look at: no `getpid`, whose answer a forked child would store in a page
        // of its own, copied for it.)
        if self.children.is_empty() {
            return;
        }
        let mine = crate::sys::pid();
        self.children.retain(|c| c.creator == mine);
    }
}

impl Global {
    /// Drops the record of a child that has been reaped.
    pub(crate) fn forget(&mut self, child: &Arc<ChildInner>) {
        self.children.retain(|c| !Arc::ptr_eq(c, child));
    }
}

extern "C" fn on_exit() {
    shutdown();
}

/// How long a daemon child gets between SIGTERM and SIGKILL at exit.
const DAEMON_GRACE: Duration = Duration::from_secs(2);

/// Terminates daemon children, joins the others, stops the forkserver. Runs at normal exit.
pub(crate) fn shutdown() {
    // The server first: lock order (see `start::forkserver::lock`).
    let server = crate::process::start::forkserver::lock().take();
    let children = {
        let mut g = lock();
        g.forget_inherited();
        // (An empty list stays: a forked child inherits its parent's buffer, and freeing it
        // would copy two pages for the child.)
        if g.children.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut g.children)
        }
    };
    if children.is_empty() && server.is_none() {
        // The common case in a child that started nobody: nothing to stop or join.
        return;
    }
    for c in children.iter().filter(|c| c.daemon) {
        let _ = c.signal(Signal::TERM);
    }
    let deadline = Instant::now() + DAEMON_GRACE;
    for c in &children {
        if c.daemon {
            if !matches!(c.wait(Some(deadline)), Ok(Some(_))) {
                let _ = c.signal(Signal::KILL);
                let _ = c.wait(None);
            }
        } else {
            let _ = c.wait(None);
        }
    }
    if let Some(server) = server {
        server.stop();
    }
}
