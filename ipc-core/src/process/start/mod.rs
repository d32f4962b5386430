//! Start methods: one file per method, dispatched by [`StartMethod`](super::StartMethod).
//!
//! - [`fork`]: `fork(2)` and run the closure in the copy.
//! - [`spawn`]: re-execute the current binary; the child is routed to its function before `main`.
//! - [`forkserver`]: a clean, single-threaded server process (itself spawned) forks children on
//!   request.

pub(crate) mod fork;
pub(crate) mod forkserver;
pub(crate) mod spawn;

use std::os::fd::OwnedFd;

use rustix::process::Pid;

use crate::conn::Connection;

/// A child that exists and awaits its instructions on `conn`.
pub(crate) struct Launched {
    pub(crate) pid: Pid,
    pub(crate) pidfd: OwnedFd,
    pub(crate) conn: Connection,
}
