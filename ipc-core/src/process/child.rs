//! The parent's record of one child: its pidfd, its result connection, how it is reaped.
//!
//! A child sends exactly one message (its [`Outcome`]) on its connection and then exits. The
//! parent must read that message *before* it can reap the child: a result larger than the socket
//! buffer keeps the child blocked in `send` until someone reads, so waiting for the exit first
//! would deadlock. [`ChildInner::wait`] therefore polls the connection and the exit notification
//! together, drains the message when it arrives, and reaps when the exit is reported.
//!
//! A child started by fork leaves a small outcome in a slot of shared memory instead, and
//! sends nothing (`process::slot`): the parent holds a copy of the child's end of the
//! connection until it sees the child send or exit, so that the exit is no hang-up on the
//! connection, and wakes once, at the exit.
//!
//! Every child is ours, whatever its start method (the forkserver forks with `CLONE_PARENT`):
//! `waitpid` reaps it and gives the status; its pidfd gives readiness and safe signalling.
//!
//! # Locking
//! The record's state is behind a mutex that is never held across a wait: a waiter polls (on
//! the pidfd and a duplicate of the result connection's descriptor) without it, and takes it
//! only to read a result already complete or to reap a child that has exited, both immediate.
//! A result still streaming in (larger than the socket buffer) is read with the connection
//! taken out of the state (`reading`), also unlocked. So `kill`, `terminate`, `exitcode`,
//! `is_alive` and `Debug` answer at once while another thread is in `join_timeout`.
//!
//! ```text
//! RUNNING --result readable--> READING (conn taken out, read unlocked) --> RUNNING (outcome in)
//! RUNNING --pidfd readable--> read the slot or what is in the connection, reap --> EXITED
//! a waiter returns when EXITED and not READING (the outcome is settled), or at its deadline
//! ```

use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions};
use serde::{Deserialize, Serialize};

use crate::conn::Connection;
use crate::error::{Error, Result};
use crate::process::StartMethod;
use crate::process::slot::Slot;

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
    /// A waiter took `conn` out and is reading the outcome without the lock.
    reading: bool,
    /// A fork child's outcome slot and our copy of the child's end of `conn` (see
    /// `process::slot`), until the child is seen sending on `conn` or exiting.
    quiet: Option<(Slot, Connection)>,
}

impl State {
    /// Reaped, with the outcome read (or known to be missing): nothing more will change.
    fn settled(&self) -> Option<i32> {
        self.exitcode.filter(|_| !self.reading)
    }
}

/// One child, shared by its `JoinHandle` and the process-wide registry.
pub(crate) struct ChildInner {
    pub(crate) pid: Pid,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) method: StartMethod,
    /// A daemon's lifeline: our end of the pipe whose hang-up kills it (see `lifeline`).
    lifeline: Mutex<Option<OwnedFd>>,
    /// The pid of the process that started the child: only it may wait for or signal it.
    pub(crate) creator: i32,
    pub(crate) pidfd: OwnedFd,
    pub(crate) state: Mutex<State>,
    /// Signalled when a reader puts the outcome back (`reading` ends).
    read_done: Condvar,
}

impl ChildInner {
    pub(crate) fn new(
        pid: Pid,
        pidfd: OwnedFd,
        conn: Connection,
        name: String,
        method: StartMethod,
        lifeline: Option<OwnedFd>,
    ) -> ChildInner {
        ChildInner {
            pid,
            name,
            daemon: lifeline.is_some(),
            method,
            lifeline: Mutex::new(lifeline),
            creator: crate::sys::pid(),
            pidfd,
            state: Mutex::new(State {
                conn: Some(conn),
                outcome: None,
                exitcode: None,
                reading: false,
                quiet: None,
            }),
            read_done: Condvar::new(),
        }
    }

    /// A fork child that reports a small outcome in `slot`: we keep `peer`, the child's end of
    /// the connection, too, so that its exit does not wake us as a hang-up (module doc).
    pub(crate) fn reporting_in(mut self, slot: Slot, peer: Connection) -> ChildInner {
        self.state
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .quiet = Some((slot, peer));
        self
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// In a child forked from this child's parent: closes this process's copies of the
    /// daemon's lifeline (whose hang-up must come with the parent's death alone) and of the
    /// child's end of its connection (whose hang-up tells the parent of a cut outcome).
    pub(crate) fn cut_in_fork(&self) {
        drop(
            self.lifeline
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        // The slot is the parent's to release: dropped here without releasing. Not waited
        // for: under `allow_fork_with_threads` another thread may have held the state at the
        // fork, and it does not exist here to release it (the copy then stays open, and only
        // a message cut by the child's death could wait for this process to end).
        match self.state.try_lock() {
            Ok(mut st) => drop(st.quiet.take()),
            Err(std::sync::TryLockError::Poisoned(p)) => drop(p.into_inner().quiet.take()),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
    }

    /// Whether this process started the child (only it may wait for, reap or signal it).
    pub(crate) fn is_creator(&self) -> bool {
        crate::sys::pid() == self.creator
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
    /// code, or `None` if the deadline passed first. Never holds the state lock while it waits
    /// (see the module doc).
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Result<Option<i32>> {
        let mut short = false;
        loop {
            // Look, under the lock.
            let conn_fd = {
                let mut st = self.lock();
                while st.exitcode.is_some() && st.reading {
                    // Exited: the reader meets end of file at once and puts the outcome back.
                    st = match deadline {
                        None => self.read_done.wait(st).unwrap_or_else(|p| p.into_inner()),
                        Some(d) => {
                            let left = d.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                return Ok(None);
                            }
                            let (st, _) = self
                                .read_done
                                .wait_timeout(st, left)
                                .unwrap_or_else(|p| p.into_inner());
                            st
                        }
                    };
                }
                if let Some(code) = st.settled() {
                    return Ok(Some(code));
                }
                match (&st.conn, st.reading) {
                    // Out of descriptors (EMFILE): watch the exit alone for a slice, then try
                    // the copy again (a child writing a large result waits for us meanwhile;
                    // giving up here instead would leave it unreaped).
                    (Some(c), false) => match c.as_fd().try_clone_to_owned() {
                        Ok(fd) => Some(fd),
                        Err(_) => {
                            short = true;
                            None
                        }
                    },
                    _ => None,
                }
            };
            // Wait, without it: for the result (while unread) and the exit notification.
            let mut fds = Vec::with_capacity(2);
            fds.push(PollFd::new(&self.pidfd, PollFlags::IN));
            if let Some(fd) = conn_fd.as_ref() {
                fds.push(PollFd::new(fd, PollFlags::IN));
            }
            let slice = Instant::now() + Duration::from_millis(10);
            let until = match (short, deadline) {
                (false, d) => d,
                (true, None) => Some(slice),
                (true, Some(d)) => Some(d.min(slice)),
            };
            if crate::deadline::poll_until(&mut fds, until)? == 0 {
                if short && deadline.is_none_or(|d| Instant::now() < d) {
                    short = false;
                    continue;
                }
                return Ok(None);
            }
            let exited = !fds[0].revents().is_empty();
            let result_ready = fds.get(1).is_some_and(|f| !f.revents().is_empty());
            drop(fds);
            drop(conn_fd);
            // Act, under the lock only for what cannot block.
            let mut st = self.lock();
            if st.exitcode.is_some() || st.reading {
                continue; // Another waiter got there first.
            }
            if exited {
                // The child left its outcome in its slot, or wrote it on the connection before
                // exiting: then the connection holds the whole frame, or a cut one, or nothing,
                // and reading it cannot block once our copy of the child's end is closed.
                let in_slot = st.quiet.take().and_then(|(slot, _)| slot.take());
                if let Some(c) = st.conn.take() {
                    st.outcome = Some(match in_slot {
                        Some(bytes) => Ok((bytes, Vec::new())),
                        None if c.poll(Some(Duration::ZERO))? => {
                            c.recv_frame(None, c.max_message_size())
                        }
                        None => Err(Error::Eof),
                    });
                }
                st.exitcode = Some(reap(self.pid)?);
            } else if result_ready && let Some(c) = st.conn.take() {
                // The outcome is arriving and may be larger than the socket buffer: the child
                // exits only once it is read, so read it now, without the lock. It did not use
                // its slot, and our copy of its end must go, for its death mid-message to be an
                // end of file.
                if let Some((slot, _)) = st.quiet.take() {
                    slot.release();
                }
                st.reading = true;
                drop(st);
                let outcome = c.recv_frame(None, c.max_message_size());
                let mut st = self.lock();
                st.outcome = Some(outcome);
                st.reading = false;
                self.read_done.notify_all();
            }
        }
    }

    /// The exit code if the child has exited (reaping it), without blocking.
    pub(crate) fn try_wait(&self) -> Result<Option<i32>> {
        self.wait(Some(Instant::now()))
    }

    pub(crate) fn signal(&self, sig: Signal) -> Result<()> {
        if self.lock().exitcode.is_some() {
            return Ok(()); // Already reaped: Python treats this as a no-op.
        }
        match rustix::process::pidfd_send_signal(&self.pidfd, sig) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(Error::os(e)),
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
            Err(e) => return Err(Error::os(e)),
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
