//! Connections: length-framed messages over socketpairs, pipes and sockets.
//!
//! # Frame
//! ```text
//! +----------------------+------------------+---------------------+
//! | payload length: u64  | descriptors: u32 | payload (length B)  |
//! | little endian        | little endian    | postcard or raw     |
//! +----------------------+------------------+---------------------+
//! ```
//! The header and the payload go out in one `sendmsg`; descriptors (`SCM_RIGHTS`) ride on the
//! header's first byte, so the receiver collects them while it reads the header and checks their
//! number against the header's count. A length above the connection's maximum (default
//! [`DEFAULT_MAX_MESSAGE`]) is [`Error::MessageTooLarge`] before anything is allocated; a stream
//! that ends inside a frame is [`Error::Malformed`]; a stream that ends between frames is
//! [`Error::Eof`]. After any of these errors the connection is unusable (the stream position is
//! lost) and should be dropped.
//!
//! Frames use a length prefix, not COBS: COBS was 60-100x slower on large byte payloads here.

use std::cell::Cell;
use std::io::{IoSlice, IoSliceMut};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, MAX_FDS_PER_MESSAGE, TransferFd};
use crate::error::{Error, Result};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 12;

/// The default maximum message size: 1 GiB. Raise it with [`Connection::set_max_message_size`].
pub const DEFAULT_MAX_MESSAGE: u64 = 1 << 30;

/// What kind of descriptor a [`Connection`] wraps, which decides what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A connected stream socket (Unix or TCP): both directions; descriptor passing on Unix.
    Socket,
    /// The read end of a one-way pipe.
    PipeReader,
    /// The write end of a one-way pipe.
    PipeWriter,
}

/// One end of a connection carrying whole messages: typed (postcard) or raw bytes.
///
/// Created by [`pipe`], by a [`Listener`](crate::conn) / `Client`, or from a connected socket.
/// A `Connection` can travel to another process: as an argument of a spawned process or inside a
/// message sent through another `Connection`.
///
/// ```
/// let (a, b) = ipc_core::conn::pipe(true).unwrap();
/// a.send(&("task", 7u32)).unwrap();
/// let (name, n): (String, u32) = b.recv().unwrap();
/// assert_eq!((name.as_str(), n), ("task", 7));
/// ```
#[derive(Debug)]
pub struct Connection {
    fd: OwnedFd,
    kind: Kind,
    max_message: Cell<u64>,
    // One reader and one writer at a time: a frame must not interleave with another thread's.
    _not_sync: PhantomData<Cell<()>>,
}

/// Creates a connected pair: duplex (a Unix socketpair) or one-way (`(reader, writer)`, a pipe).
///
/// Both ends are close-on-exec; they reach other processes as process arguments or messages.
pub fn pipe(duplex: bool) -> Result<(Connection, Connection)> {
    if duplex {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Connection::from_socket(a), Connection::from_socket(b)))
    } else {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok((
            Connection::new(r, Kind::PipeReader),
            Connection::new(w, Kind::PipeWriter),
        ))
    }
}

impl Connection {
    fn new(fd: OwnedFd, kind: Kind) -> Self {
        Connection {
            fd,
            kind,
            max_message: Cell::new(DEFAULT_MAX_MESSAGE),
            _not_sync: PhantomData,
        }
    }

    /// Wraps a connected stream socket (Unix or TCP).
    pub fn from_socket(fd: OwnedFd) -> Self {
        Self::new(fd, Kind::Socket)
    }

    /// What this connection wraps.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether this end can receive.
    pub fn readable(&self) -> bool {
        self.kind != Kind::PipeWriter
    }

    /// Whether this end can send.
    pub fn writable(&self) -> bool {
        self.kind != Kind::PipeReader
    }

    /// The largest message [`recv`](Self::recv) accepts, in bytes.
    pub fn max_message_size(&self) -> u64 {
        self.max_message.get()
    }

    /// Sets the largest message this end accepts; larger frames are [`Error::MessageTooLarge`].
    pub fn set_max_message_size(&self, bytes: u64) {
        self.max_message.set(bytes);
    }

    /// Sends `value` as one postcard message, with any descriptors it carries.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let mut buf = vec![0u8; HEADER_LEN];
        let fds = codec::encode(value, &mut buf)?;
        let len = (buf.len() - HEADER_LEN) as u64;
        buf[..8].copy_from_slice(&len.to_le_bytes());
        buf[8..12].copy_from_slice(&(fds.len() as u32).to_le_bytes());
        self.write_frame(&buf, &[], &fds)
    }

    /// Receives one message and decodes it as a `T`.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        let (bytes, fds) = self.recv_frame()?;
        codec::decode(&bytes, fds)
    }

    /// Sends `bytes` as one message (no encoding).
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.write_frame(&header, bytes, &[])
    }

    /// Receives one message as bytes.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        let (bytes, fds) = self.recv_frame()?;
        if !fds.is_empty() {
            return Err(Error::malformed(
                "a raw-bytes message carried file descriptors",
            ));
        }
        Ok(bytes)
    }

    /// Receives one message into `buf`; returns its length.
    ///
    /// If `buf` is too small the whole message is returned in [`Error::BufferTooShort`].
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        let bytes = self.recv_bytes()?;
        if bytes.len() > buf.len() {
            return Err(Error::BufferTooShort(bytes));
        }
        buf[..bytes.len()].copy_from_slice(&bytes);
        Ok(bytes.len())
    }

    /// Whether a message (or end of file) is ready to read, waiting up to `timeout`
    /// (`None` waits forever, zero does not wait). Never consumes anything.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        if !self.readable() {
            return Err(Error::misuse("poll on the write end of a one-way pipe"));
        }
        wait_readable(self.fd.as_fd(), timeout)
    }

    fn write_frame(&self, head: &[u8], body: &[u8], fds: &[OwnedFd]) -> Result<()> {
        if !self.writable() {
            return Err(Error::misuse("send on the read end of a one-way pipe"));
        }
        let total = head.len() + body.len();
        let mut sent = 0usize;
        if !fds.is_empty() {
            if self.kind != Kind::Socket {
                return Err(Error::Encode(
                    "file descriptors can only travel over a socket connection, not a pipe".into(),
                ));
            }
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            let mut space = vec![
                MaybeUninit::<u8>::uninit();
                rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))
            ];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
                return Err(Error::Encode(
                    "too many file descriptors for one message".into(),
                ));
            }
            loop {
                let iov = [IoSlice::new(head), IoSlice::new(body)];
                match rustix::net::sendmsg(&self.fd, &iov, &mut control, SendFlags::NOSIGNAL) {
                    Ok(n) => {
                        sent = n;
                        break;
                    }
                    Err(Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        while sent < total {
            let n = if sent < head.len() {
                let iov = [IoSlice::new(&head[sent..]), IoSlice::new(body)];
                self.write_vectored(&iov)
            } else {
                let iov = [IoSlice::new(&body[sent - head.len()..])];
                self.write_vectored(&iov)
            };
            match n {
                Ok(n) => sent += n,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn write_vectored(&self, iov: &[IoSlice<'_>]) -> rustix::io::Result<usize> {
        match self.kind {
            Kind::Socket => {
                let mut none = SendAncillaryBuffer::default();
                rustix::net::sendmsg(&self.fd, iov, &mut none, SendFlags::NOSIGNAL)
            }
            _ => rustix::io::writev(&self.fd, iov),
        }
    }

    /// Reads into `buf`, collecting descriptors into `fds` when `want_fds` (sockets only).
    fn read_some(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>, want_fds: bool) -> Result<usize> {
        loop {
            let r = if self.kind == Kind::Socket && want_fds {
                let mut space = vec![
                    MaybeUninit::<u8>::uninit();
                    rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))
                ];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let mut iov = [IoSliceMut::new(buf)];
                rustix::net::recvmsg(&self.fd, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC).map(
                    |msg| {
                        for m in control.drain() {
                            if let RecvAncillaryMessage::ScmRights(rights) = m {
                                fds.extend(rights);
                            }
                        }
                        (
                            msg.bytes,
                            msg.flags.contains(rustix::net::ReturnFlags::CTRUNC),
                        )
                    },
                )
            } else {
                rustix::io::read(&self.fd, &mut *buf).map(|n| (n, false))
            };
            match r {
                Ok((_, true)) => {
                    return Err(Error::malformed(
                        "descriptors were truncated (more than 253)",
                    ));
                }
                Ok((n, false)) => return Ok(n),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub(crate) fn recv_frame(&self) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        if !self.readable() {
            return Err(Error::misuse("recv on the write end of a one-way pipe"));
        }
        let mut header = [0u8; HEADER_LEN];
        let mut fds = Vec::new();
        let mut got = 0;
        while got < HEADER_LEN {
            let n = self.read_some(&mut header[got..], &mut fds, true)?;
            if n == 0 {
                return Err(if got == 0 {
                    Error::Eof
                } else {
                    Error::malformed("the stream ended inside a frame header")
                });
            }
            got += n;
        }
        let len = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let nfds = u32::from_le_bytes(header[8..].try_into().expect("4 bytes")) as usize;
        let max = self.max_message.get();
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        if nfds != fds.len() {
            return Err(Error::malformed(format!(
                "the header announced {nfds} descriptors but {} arrived",
                fds.len()
            )));
        }
        let len = usize::try_from(len).map_err(|_| Error::MessageTooLarge {
            len,
            max: usize::MAX as u64,
        })?;
        // Zeroed allocation of a large buffer is lazily backed by the kernel: a lying length
        // costs address space, not memory, and is bounded by the maximum above.
        let mut body = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = self.read_some(&mut body[got..], &mut fds, false)?;
            if n == 0 {
                return Err(Error::malformed(format!(
                    "the stream ended after {got} of {len} payload bytes"
                )));
            }
            got += n;
        }
        Ok((body, fds))
    }
}

/// Waits until `fd` is readable (data or end of file), up to `timeout`.
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool> {
    use rustix::event::{PollFd, PollFlags};
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let mut pfd = [PollFd::new(&fd, PollFlags::IN)];
        let ts = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            rustix::event::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            }
        });
        match rustix::event::poll(&mut pfd, ts.as_ref()) {
            Ok(0) => return Ok(false),
            Ok(_) => {
                let r = pfd[0].revents();
                if r.contains(PollFlags::NVAL) {
                    return Err(Error::misuse("poll on a closed descriptor"));
                }
                return Ok(true);
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Connection> for OwnedFd {
    fn from(c: Connection) -> OwnedFd {
        c.fd
    }
}

#[derive(Serialize)]
struct WireRef<'a> {
    fd: &'a TransferFdRef<'a>,
    kind: Kind,
    max_message: u64,
}

struct TransferFdRef<'a>(BorrowedFd<'a>);

impl Serialize for TransferFdRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        codec::serialize_fd(self.0, s)
    }
}

#[derive(Deserialize)]
struct Wire {
    fd: TransferFd,
    kind: Kind,
    max_message: u64,
}

impl Serialize for Connection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        WireRef {
            fd: &TransferFdRef(self.fd.as_fd()),
            kind: self.kind,
            max_message: self.max_message.get(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let c = Connection::new(w.fd.0, w.kind);
        c.max_message.set(w.max_message);
        Ok(c)
    }
}
