//! The parent's record of one child: its pidfd, its result connection, how it is reaped.
//!
//! A child sends exactly one message (its [`Outcome`]) on its connection and then exits. The
//! parent must read that message *before* it can reap the child: a result larger than the socket
//! buffer keeps the child blocked in `send` until someone reads, so waiting for the exit first
//! would deadlock. [`ChildInner::wait`] therefore polls the connection and the exit notification
//! together, drains the message when it arrives, and reaps when the exit is reported.
//!
//! Every child is ours, whatever its start method (the forkserver forks with `CLONE_PARENT`):
//! `waitpid` reaps it and gives the status; its pidfd gives readiness and safe signalling.

use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions};
use serde::{Deserialize, Serialize};

use crate::conn::Connection;
use crate::error::{Error, Result};
use crate::process::StartMethod;

/// What a child reports before it exits.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome<R> {
    /// The function returned this value.
    Returned(R),
    /// The function panicked with this message.
    Panicked(String),
    /// The child could not run the function (argument decoding, result encoding, bootstrap).
    Failed(String),
}

/// The exit code reported when a wait status is neither an exit nor a signal (cannot happen
/// for a reaped child; Python uses 255 for unknown codes).
pub(crate) const UNKNOWN_EXIT: i32 = 255;

pub(crate) struct State {
    /// The child's end of the result pipe, until the outcome or end of file has been read.
    pub(crate) conn: Option<Connection>,
    /// The raw outcome frame, once read.
    pub(crate) outcome: Option<Result<(Vec<u8>, Vec<OwnedFd>)>>,
    /// Python-convention exit code, once reaped.
    pub(crate) exitcode: Option<i32>,
}

/// One child, shared by its `JoinHandle` and the process-wide registry.
pub(crate) struct ChildInner {
    pub(crate) pid: Pid,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) method: StartMethod,
    /// The pid of the process that started the child: only it may wait for or signal it.
    pub(crate) creator: i32,
    pub(crate) pidfd: OwnedFd,
    pub(crate) state: Mutex<State>,
}

impl ChildInner {
    pub(crate) fn new(
        pid: Pid,
        pidfd: OwnedFd,
        conn: Connection,
        name: String,
        daemon: bool,
        method: StartMethod,
    ) -> ChildInner {
        ChildInner {
            pid,
            name,
            daemon,
            method,
            creator: crate::process::pid(),
            pidfd,
            state: Mutex::new(State {
                conn: Some(conn),
                outcome: None,
                exitcode: None,
            }),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this process started the child (only it may wait for, reap or signal it).
    pub(crate) fn is_creator(&self) -> bool {
        crate::process::pid() == self.creator
    }

    /// Whether the child has exited, from its pidfd alone: no reaping, no reading of its result
    /// (for processes that hold a copy of the handle but did not start the child).
    pub(crate) fn has_exited(&self) -> bool {
        crate::conn::wait(&[&self.pidfd], Some(Duration::ZERO)).map_or(true, |r| !r.is_empty())
    }

    pub(crate) fn check_creator(&self, what: &str) -> Result<()> {
        if !self.is_creator() {
            return Err(Error::misuse(format!(
                "cannot {what} process {} ({}): only the process that started it can",
                self.pid.as_raw_nonzero(),
                self.name
            )));
        }
        Ok(())
    }

    /// Waits until the child has exited and is reaped, or until `deadline`. Returns the exit
    /// code, or `None` if the deadline passed first.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Result<Option<i32>> {
        let mut st = self.lock();
        loop {
            if let Some(code) = st.exitcode {
                return Ok(Some(code));
            }
            let State {
                conn,
                outcome,
                exitcode,
            } = &mut *st;
            // Poll the result connection (while unread) and the exit notification together.
            let mut fds = Vec::with_capacity(2);
            fds.push(PollFd::new(&self.pidfd, PollFlags::IN));
            if let Some(c) = conn.as_ref() {
                fds.push(PollFd::new(c, PollFlags::IN));
            }
            let ts = deadline.map(|d| {
                let left = d.saturating_duration_since(Instant::now());
                rustix::event::Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: i64::from(left.subsec_nanos()),
                }
            });
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let exited = !fds[0].revents().is_empty();
            let result_ready = fds.get(1).is_some_and(|f| !f.revents().is_empty());
            drop(fds);
            if result_ready || (exited && conn.is_some()) {
                // The child writes its outcome before exiting, so once it has exited a readable
                // connection already holds the whole frame (or nothing: end of file).
                let c = conn.take().expect("polled connection is present");
                let ready_now = exited && !result_ready;
                if !ready_now || c.poll(Some(Duration::ZERO))? {
                    *outcome = Some(match c.recv_frame(None, c.max_message_size()) {
                        Err(Error::Eof) => Err(Error::Eof),
                        other => other,
                    });
                } else {
                    *outcome = Some(Err(Error::Eof));
                }
            }
            if exited || (deadline.is_none() && conn.is_none()) {
                // Exited, or the outcome is in and there is no deadline: the child is on its way
                // out, so block in `waitpid` at once rather than polling the pidfd first.
                *exitcode = Some(reap(self.pid)?);
            }
        }
    }

    /// The exit code if the child has exited (reaping it), without blocking.
    pub(crate) fn poll_exit(&self) -> Result<Option<i32>> {
        self.wait(Some(Instant::now()))
    }

    pub(crate) fn signal(&self, sig: Signal) -> Result<()> {
        if self.lock().exitcode.is_some() {
            return Ok(()); // Already reaped: Python treats this as a no-op.
        }
        match rustix::process::pidfd_send_signal(&self.pidfd, sig) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Reaps our own child `pid`, which has exited; returns its Python-convention exit code.
pub(crate) fn reap(pid: Pid) -> Result<i32> {
    loop {
        match rustix::process::waitpid(Some(pid), WaitOptions::empty()) {
            Ok(Some((_, status))) => return Ok(exitcode_of(status)),
            Ok(None) => continue,
            Err(Errno::INTR) => continue,
            Err(Errno::CHILD) => {
                return Err(Error::Io(std::io::Error::other(format!(
                    "child {} was reaped by someone else, so its exit status is lost: SIGCHLD is \
                     ignored in this process (SIG_IGN or SA_NOCLDWAIT), or code here waits for \
                     any child (waitpid(-1))",
                    pid.as_raw_nonzero()
                ))));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Python's convention: the exit status, or minus the signal that killed the process.
pub(crate) fn exitcode_of(status: rustix::process::WaitStatus) -> i32 {
    if let Some(sig) = status.terminating_signal() {
        -sig
    } else {
        status.exit_status().unwrap_or(UNKNOWN_EXIT)
    }
}
