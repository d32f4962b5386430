//! The fork start method: `fork(2)`, and the copy runs the closure.
//!
//! Fastest, and the only method that runs capturing closures, but only sound when this process
//! has a single thread: a lock held by another thread at the moment of the fork stays held
//! forever in the child. Starting is refused in a multithreaded process unless the caller took
//! responsibility through [`Builder::allow_fork_with_threads`](crate::process::Builder::allow_fork_with_threads).
//!
//! # Safety
//! The one `unsafe` call is `fork` itself, made only when the process has a single thread (or the
//! caller opted in through an `unsafe` method), with this crate's global lock held.
#![allow(unsafe_code)]

use std::io::Write;
use std::sync::Arc;

use rustix::process::PidfdFlags;
use serde::Serialize;

use crate::conn::pipe;
use crate::error::{Error, Result};
use crate::process::StartMethod;
use crate::process::bootstrap::{finish, run_and_report};
use crate::process::child::ChildInner;
use crate::process::global::{Global, Identity};
use crate::process::lifeline;
use crate::process::slot::Slot;
use crate::sys::{self, Forked};

/// The global lock, held across the fork.
type Guard = std::sync::MutexGuard<'static, Global>;

/// The forkserver's lock, held across the fork too.
type ServerGuard = std::sync::MutexGuard<'static, Option<super::forkserver::ForkServer>>;

/// Forks a child that runs `body`. The caller passes the forkserver's lock and the global lock,
/// held, so no thread is inside this crate's state at the fork (each lock is then in a state the
/// child can release); the parent gets the global lock back with the child's record.
pub(crate) fn start<F, R>(
    mut server: ServerGuard,
    mut g: Guard,
    id: Identity,
    allow_threads: bool,
    body: F,
) -> Result<(Guard, Arc<ChildInner>)>
where
    F: FnOnce() -> R,
    R: Serialize,
{
    if !allow_threads {
        let threads = sys::thread_count()?;
        if threads > 1 {
            return Err(Error::misuse(format!(
                "refusing to fork: this process has {threads} threads, and a lock held by another \
                 thread at the fork stays held forever in the child. Use StartMethod::ForkServer \
                 or StartMethod::Spawn, or opt in with Builder::allow_fork_with_threads (unsafe)"
            )));
        }
    }
    // A forked child keeps every shared object of ours without going through their wire form,
    // which refuses to cross pid namespaces (see `shm::heap`): refuse the fork instead.
    let children_ns = sys::pid_namespace_for_children();
    if children_ns != 0 && children_ns != sys::pid_namespace() {
        return Err(Error::misuse(
            "refusing to fork into another pid namespace (this process called \
             unshare(CLONE_NEWPID) or setns): the child would keep this process's shared objects, \
             whose locks name holders by pid, which the new namespace reads as someone else. \
             Use StartMethod::Spawn, whose arguments are checked as they cross",
        ));
    }
    // Every page either process writes after the fork is copied (or at least faults) once:
    // leave the child as little to do as possible. Records of finished children would be
    // dropped by the child (and again here later); thread-local destructors would be registered
    // by the child's first encode, which allocates.
    g.reap_detached();
    crate::codec::prepare_for_fork();
    // The child must share our family key (to accept our `RemoteFn`s): make it before the copy.
    crate::process::function::family_key_ref();
    // Unflushed output would be printed twice, once by each process (stdout's: std's stderr
    // is unbuffered, and taking its lock to flush nothing would cost the child a page copy).
    let _ = std::io::stdout().flush();
    let (ours, theirs) = pipe()?;
    let (keep, give) = match id.daemon {
        true => lifeline::new().map(|(k, g)| (Some(k), Some(g)))?,
        false => (None, None),
    };
    let name = id.name.clone();
    // A small outcome comes back through a slot (see `process::slot`), waking us only once.
    let slot = Slot::claim(&mut g.slots);
    // SAFETY: either this process has one thread (checked above, and we hold the global lock so
    // this crate's own state is consistent), or the caller accepted the multithreaded risk
    // through the unsafe `allow_fork_with_threads`.
    let forked = unsafe { sys::fork() }.inspect_err(|_| {
        let _ = slot.as_ref().map(Slot::release);
    })?;
    match forked {
        Forked::Child => {
            drop(ours);
            // The parent's forkserver is not ours: forget our copy of its record.
            *server = None;
            drop(server);
            g.become_child(id);
            // The child's copy of the lock was taken by the forking thread, which is this one:
            // releasing it here leaves the child's state consistent and unlocked.
            drop(g);
            drop(keep);
            if let Some(read) = give
                && !lifeline::hold(read)
            {
                sys::exit_now(crate::process::bootstrap::BOOT_FAILED);
            }
            let code = run_and_report(&theirs, slot, body);
            drop(theirs);
            finish(code)
        }
        Forked::Parent(pid) => {
            drop(server);
            drop(give);
            let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    let _ = crate::process::child::reap(pid);
                    let _ = slot.as_ref().map(Slot::release);
                    return Err(Error::os(e));
                }
            };
            let child = ChildInner::new(pid, pidfd, ours, name, StartMethod::Fork, keep);
            let child = match slot {
                Some(slot) => child.reporting_in(slot, theirs),
                None => child,
            };
            Ok((g, Arc::new(child)))
        }
    }
}
