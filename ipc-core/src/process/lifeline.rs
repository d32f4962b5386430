//! A daemon child's lifeline: it dies with its parent *process*, whichever thread started it.
//!
//! ```text
//! parent                                   daemon child
//!   pipe (both ends close-on-exec)
//!   keeps the write end in the child's     gets the read end (inherited by fork, sent beside
//!   record; never writes to it             the boot message under spawn and forkserver), arms
//!                                          it: F_SETOWN self, F_SETSIG SIGKILL, O_ASYNC; then
//!                                          checks once for a hang-up that came before (poll)
//!   exits or is killed: its last copy
//!   of the write end closes ------------>  the pipe hangs up: the kernel sends SIGKILL
//! ```
//! Only the parent holds the write end: exec closes it (spawned children, the forkserver), and
//! a child forked by this crate closes the copies it inherited ([`global`]'s `become_child`),
//! so the hang-up comes exactly when the parent process ends, at any moment and by any means
//! (a process forked outside this crate keeps the copies it inherited until it exits or execs,
//! and the parent's daemons live on with it meanwhile). Each daemon has a pipe of its own, so
//! its read end is an open file description nobody else arms.
//!
//! A parent-death signal (`PR_SET_PDEATHSIG`) cannot do this: it follows the parent *thread*,
//! so a daemon started from a short-lived thread would die with that thread, and forkserver
//! children (forked with `CLONE_PARENT`) have as parent the thread that started the server.
//!
//! [`global`]: super::global

use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use crate::error::Result;
use crate::sys;

/// A new lifeline: `(write end, kept by the parent; read end, for the daemon)`.
pub(crate) fn new() -> Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(crate::error::Error::os)?;
    Ok((write, read))
}

/// In the daemon child, before its function runs: from now on it dies when the parent's end
/// closes. False if the parent is already gone, or cannot be followed: then the daemon must
/// not run (the caller exits). The read end stays open for the rest of the child's life.
#[must_use = "a daemon whose lifeline does not hold must not run"]
pub(crate) fn hold(read: OwnedFd) -> bool {
    if sys::kill_me_on_event(read.as_fd()).is_err() {
        return false;
    }
    // A hang-up before the arming sent no signal: look once.
    if crate::conn::wait(&[&read], Some(Duration::ZERO)).is_ok_and(|r| !r.is_empty()) {
        return false;
    }
    let _ = read.into_raw_fd();
    true
}
