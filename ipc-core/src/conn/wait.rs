//! [`wait`]: block until any of several connections, listeners or process sentinels is ready
//! (Python's `multiprocessing.connection.wait`).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use crate::error::{Error, Result};

/// Waits until at least one of `objects` is ready, or `timeout` passes; returns the indexes of
/// every ready object, in order (empty after a timeout).
///
/// Ready means: a [`Connection`](super::Connection) has a message or its peer is gone (end of
/// file counts, so a dead peer is noticed), a [`Listener`](super::Listener) has a client
/// waiting, a pidfd (a process sentinel) belongs to a process that exited. Anything with a
/// descriptor that polls readable works (`&[BorrowedFd]`, `&[&Connection]`, ...).
///
/// `timeout` of zero checks and returns at once; `None` waits as long as it takes. Nothing is
/// consumed. Signals (`EINTR`) do not cut the wait short. Waiting on nothing with no timeout is
/// [`Error::Misuse`] (it could never return).
///
/// ```
/// use std::time::Duration;
/// use ipc_core::conn::{pipe, wait};
/// let (a1, b1) = pipe().unwrap();
/// let (_a2, b2) = pipe().unwrap();
/// a1.send(&1u8).unwrap();
/// assert_eq!(wait(&[&b1, &b2], Some(Duration::from_secs(5))).unwrap(), vec![0]);
/// assert!(wait(&[&b2], Some(Duration::ZERO)).unwrap().is_empty());
/// ```
pub fn wait<F: AsFd>(objects: &[F], timeout: Option<Duration>) -> Result<Vec<usize>> {
    if objects.is_empty() && timeout.is_none() {
        return Err(Error::misuse(
            "wait on no objects without a timeout would never return",
        ));
    }
    let fds: Vec<_> = objects.iter().map(AsFd::as_fd).collect();
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    let deadline = timeout.map(|t| crate::deadline::after(Instant::now(), t));
    if crate::deadline::poll_until(&mut pfds, deadline)? == 0 {
        return Ok(Vec::new());
    }
    let mut ready = Vec::new();
    for (i, p) in pfds.iter().enumerate() {
        let r = p.revents();
        if r.contains(PollFlags::NVAL) {
            return Err(Error::misuse(format!(
                "object {i} of wait has no open descriptor"
            )));
        }
        if !r.is_empty() {
            ready.push(i);
        }
    }
    Ok(ready)
}
