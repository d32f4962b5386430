//! The system calls under a [`Connection`](super::Connection): one `sendmsg` per frame, exact
//! reads, descriptor collection on a stack buffer, and readiness waits.
//!
//! Every loop here retries `EINTR` (a signal handler without `SA_RESTART` must not break a
//! blocking send or receive) and turns `EAGAIN` into a wait for readiness, so a descriptor that
//! arrived in non-blocking mode (inherited from an event loop, say) still behaves as a blocking
//! connection. When a deadline is given, every read first waits for readiness with the time
//! left, so no read can block past it.
//!
//! The first receive of a frame may poll without blocking for up to 15 us before it sleeps, when
//! the connection's adaptive record ([`crate::spin`]) says a peer on another CPU tends to answer
//! in that time: a cross-CPU wake-up costs 18-34 us on this kind of VM.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::codec::MAX_FDS_PER_MESSAGE;
use crate::error::{Error, Result};
use crate::spin::Adaptive;

/// The largest first record of a frame on a `SOCK_SEQPACKET` socket: the header and up to
/// 8180 payload bytes, received in one system call into the connection's scratch buffer.
pub(super) const FIRST_RECORD: usize = 8192;

/// The largest later record of a frame. Well below the default socket send buffer (208 KiB),
/// which bounds a record's size; large enough that a large message needs few system calls.
pub(super) const RECORD: usize = 128 << 10;

/// Bytes of control buffer that hold the largest descriptor batch the kernel delivers at once.
///
/// About 1 KiB: it lives on the stack of each receive, so the hot path allocates nothing.
const CMSG_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE));

/// What a readiness wait is for.
#[derive(Clone, Copy)]
pub(super) enum Interest {
    Read,
    Write,
}

/// Waits until `fd` is ready for `interest` (end of file and errors count as ready).
///
/// Returns `false` if `deadline` passed first.
pub(super) fn wait_fd(
    fd: BorrowedFd<'_>,
    interest: Interest,
    deadline: Option<Instant>,
) -> Result<bool> {
    let flags = match interest {
        Interest::Read => PollFlags::IN,
        Interest::Write => PollFlags::OUT,
    };
    let mut pfd = [PollFd::new(&fd, flags)];
    if crate::deadline::poll_until(&mut pfd, deadline)? == 0 {
        return Ok(false);
    }
    if pfd[0].revents().contains(PollFlags::NVAL) {
        return Err(Error::misuse("poll on a descriptor that is not open"));
    }
    Ok(true)
}

/// Runs `op` until it completes: retries `EINTR` (and one `ECONNRESET` on reads), waits out
/// `EAGAIN`, and, with a deadline,
/// waits for readiness before each attempt so that it cannot block past the deadline.
fn retry<T>(
    fd: BorrowedFd<'_>,
    interest: Interest,
    deadline: Option<Instant>,
    mut op: impl FnMut() -> rustix::io::Result<T>,
) -> Result<T> {
    let mut reset_seen = false;
    loop {
        if deadline.is_some() && !wait_fd(fd, interest, deadline)? {
            return Err(Error::Timeout);
        }
        match op() {
            Ok(v) => return Ok(v),
            Err(Errno::INTR) => continue,
            // A Unix socket whose peer closed with unread data reports ECONNRESET once (before
            // the queued data on SOCK_SEQPACKET, after it on SOCK_STREAM): the error is cleared
            // by reporting it, so read again to drain what the peer sent, then end of file.
            Err(Errno::CONNRESET) if matches!(interest, Interest::Read) && !reset_seen => {
                reset_seen = true;
            }
            Err(Errno::AGAIN) => {
                if !wait_fd(fd, interest, deadline)? {
                    return Err(Error::Timeout);
                }
            }
            Err(e) => return Err(Error::os(e)),
        }
    }
}

/// The bytes `[start, end)` of the frame `head ++ body`, as two slices.
fn frame_slices<'a>(head: &'a [u8], body: &'a [u8], start: usize, end: usize) -> [IoSlice<'a>; 2] {
    let h = head.len();
    let head_part = &head[start.min(h)..end.min(h)];
    let body_part = &body[start.saturating_sub(h)..end.saturating_sub(h)];
    [IoSlice::new(head_part), IoSlice::new(body_part)]
}

/// Writes `head` then `body` completely on a byte stream: on a socket with `sendmsg`
/// (descriptors ride on the first call that sends a byte), on a pipe with `writev`.
///
/// The whole frame normally leaves in one system call; a frame larger than the socket buffer
/// continues where the kernel stopped while the peer reads. `sent` reports how far it got, so
/// the caller can tell an error before the first byte (the stream is intact) from one inside the
/// frame (the stream is broken).
pub(super) fn write_stream(
    fd: BorrowedFd<'_>,
    socket: bool,
    head: &[u8],
    body: &[u8],
    fds: &[BorrowedFd<'_>],
    sent: &mut usize,
) -> Result<()> {
    let total = head.len() + body.len();
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
    while *sent < total {
        let iov = frame_slices(head, body, *sent, total);
        let n = if socket {
            retry(fd, Interest::Write, None, || {
                let mut control = SendAncillaryBuffer::new(&mut space);
                if *sent == 0 {
                    push_rights(&mut control, fds);
                }
                rustix::net::sendmsg(fd, &iov, &mut control, SendFlags::NOSIGNAL)
            })
        } else {
            retry(fd, Interest::Write, None, || rustix::io::writev(fd, &iov))
        };
        *sent += n?;
        if *sent < total {
            crate::failpoint::hit("conn.send.partial");
        }
    }
    Ok(())
}

/// Adds the descriptors (if any) to a control buffer sized for [`MAX_FDS_PER_MESSAGE`].
fn push_rights<'s, 'f>(control: &mut SendAncillaryBuffer<'_, 's, 'f>, fds: &'s [BorrowedFd<'f>]) {
    if !fds.is_empty() {
        // Cannot fail: the buffer holds MAX_FDS_PER_MESSAGE and the caller refuses more.
        let pushed = control.push(SendAncillaryMessage::ScmRights(fds));
        debug_assert!(pushed, "control buffer sized for MAX_FDS_PER_MESSAGE");
    }
}

/// Writes the frame `head ++ body` as records on a `SOCK_SEQPACKET` socket: the first record
/// holds the header and up to [`FIRST_RECORD`] bytes in all (with the descriptors), the others
/// up to [`RECORD`] bytes each.
///
/// A record is sent whole or not at all. If the socket's send buffer is too small for a record
/// (`EMSGSIZE`, possible on a socket whose `SO_SNDBUF` was lowered), the record is halved; the
/// receiver accepts records of any size up to those limits, so this needs no agreement.
pub(super) fn write_records(
    fd: BorrowedFd<'_>,
    head: &[u8],
    body: &[u8],
    fds: &[BorrowedFd<'_>],
    sent: &mut usize,
) -> Result<()> {
    let total = head.len() + body.len();
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
    let mut limit = FIRST_RECORD;
    while *sent < total {
        let end = total.min(*sent + limit);
        let want = end - *sent;
        let iov = frame_slices(head, body, *sent, end);
        let res = retry(fd, Interest::Write, None, || {
            let mut control = SendAncillaryBuffer::new(&mut space);
            if *sent == 0 {
                push_rights(&mut control, fds);
            }
            rustix::net::sendmsg(fd, &iov, &mut control, SendFlags::NOSIGNAL)
        });
        match res {
            Ok(n) if n == want => {
                *sent = end;
                limit = RECORD;
                if *sent < total {
                    crate::failpoint::hit("conn.send.partial");
                }
            }
            Ok(n) => {
                // A record is atomic on SOCK_SEQPACKET; a short send means the descriptor is
                // something else. Report it (the frame is broken if anything went out).
                *sent += n;
                return Err(Error::Io(std::io::Error::other(format!(
                    "the kernel sent {n} bytes of a {want}-byte record"
                ))));
            }
            // The first record must hold the whole header; later ones at least a byte.
            Err(Error::Io(e))
                if e.raw_os_error() == Some(Errno::MSGSIZE.raw_os_error())
                    && want / 2 >= if *sent == 0 { super::HEADER_LEN } else { 1 } =>
            {
                limit = want / 2;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `recvmsg` into `iov` that appends any descriptors that arrive to `fds`
/// (closed-on-exec). Returns the bytes received and whether the data was truncated (a record
/// longer than `iov`).
///
/// Used for the start of a frame: the kernel attaches a frame's descriptors to its first byte,
/// so they arrive with the header. The control buffer is on the stack.
pub(super) fn recv_collect(
    fd: BorrowedFd<'_>,
    iov: &mut [IoSliceMut<'_>],
    fds: &mut Vec<OwnedFd>,
    deadline: Option<Instant>,
    spin: Option<&Adaptive>,
) -> Result<(usize, bool)> {
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
    let mut once = |flags: RecvFlags| {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg =
            rustix::net::recvmsg(fd, &mut *iov, &mut control, RecvFlags::CMSG_CLOEXEC | flags)?;
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = m {
                fds.extend(rights);
            }
        }
        Ok((msg.bytes, msg.flags))
    };
    let mut got = None;
    if let Some(a) = spin.filter(|a| a.should_spin()) {
        got = spin_for(a, deadline, || once(RecvFlags::DONTWAIT));
    }
    let (n, flags) = match got {
        Some(v) => v,
        None => retry(fd, Interest::Read, deadline, || once(RecvFlags::empty()))?,
    };
    if flags.contains(ReturnFlags::CTRUNC) {
        return Err(Error::malformed(
            "descriptors were lost in transit: the peer sent more than 253 with one message, \
             or this process reached its open-file limit (RLIMIT_NOFILE)",
        ));
    }
    Ok((n, flags.contains(ReturnFlags::TRUNC)))
}

/// How long a receive polls (non-blocking) before it sleeps, when its [`Adaptive`] record says
/// to: a little longer than a peer running on another CPU needs to answer a small message
/// (2-5 us here), and shorter than the 18-34 us a cross-CPU wake-up costs.
const SPIN_BUDGET: Duration = Duration::from_micros(15);

/// A gap between two polls longer than this means this process was descheduled while it
/// polled: something else (most likely the very peer it waits for) ran on its CPU. A poll is a
/// system call of well under a microsecond.
const PREEMPTED: Duration = Duration::from_micros(4);

/// Runs the non-blocking `op` until it succeeds or [`SPIN_BUDGET`] (or `deadline`) passes.
///
/// Returns `None` when the blocking path should take over: nothing came in time, or `op` failed
/// with something other than `EAGAIN` or `EINTR` (the blocking path does it again and reports
/// it). Records the outcome in `a`: a catch counts only if the spin was not descheduled on the
/// way, since a peer that runs on our CPU while we poll answers faster when we sleep.
fn spin_for<T>(
    a: &Adaptive,
    deadline: Option<Instant>,
    mut op: impl FnMut() -> rustix::io::Result<T>,
) -> Option<T> {
    let start = Instant::now();
    let end = deadline.map_or(start + SPIN_BUDGET, |d| d.min(start + SPIN_BUDGET));
    let mut last = start;
    let mut preempted = false;
    let mut waited = false;
    loop {
        let res = op();
        let now = Instant::now();
        preempted |= now - last > PREEMPTED;
        last = now;
        match res {
            Ok(v) => {
                // What was there at the first poll says nothing about spinning.
                if waited {
                    a.record(!preempted);
                }
                return Some(v);
            }
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) if now < end && !preempted => {
                waited = true;
                std::hint::spin_loop();
            }
            Err(Errno::AGAIN) => {
                a.record(false);
                return None;
            }
            Err(_) => return None,
        }
    }
}

/// One plain read into `buf` (a payload on a byte stream: never carries descriptors).
pub(super) fn read_plain(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> Result<usize> {
    retry(fd, Interest::Read, deadline, || {
        rustix::io::read(fd, &mut *buf)
    })
}

/// One plain read appended to `body`, at most its spare capacity.
///
/// The caller sizes the capacity to the bytes left in the frame, so the read can never take
/// bytes of the next frame; the memory is not zeroed first.
pub(super) fn read_spare(
    fd: BorrowedFd<'_>,
    body: &mut Vec<u8>,
    deadline: Option<Instant>,
) -> Result<usize> {
    retry(fd, Interest::Read, deadline, || {
        rustix::io::read(fd, rustix::buffer::spare_capacity(body))
    })
}

/// Receives one record into `buf`. Returns its length and whether it was longer than `buf`
/// (the excess is lost: the caller treats that as a malformed stream).
pub(super) fn recv_record(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    deadline: Option<Instant>,
) -> Result<(usize, bool)> {
    let room = buf.len();
    let (n, real) = retry(fd, Interest::Read, deadline, || {
        rustix::net::recv(fd, &mut *buf, RecvFlags::TRUNC)
    })?;
    Ok((n, real > room))
}

/// Receives one record appended to `body`'s spare capacity (sized by the caller to what is
/// left of the frame; not zeroed first). Returns its length and whether it was truncated.
pub(super) fn recv_record_spare(
    fd: BorrowedFd<'_>,
    body: &mut Vec<u8>,
    deadline: Option<Instant>,
) -> Result<(usize, bool)> {
    let room = body.capacity() - body.len();
    let (n, real) = retry(fd, Interest::Read, deadline, || {
        rustix::net::recv(fd, rustix::buffer::spare_capacity(body), RecvFlags::TRUNC)
    })?;
    Ok((n, real > room))
}
