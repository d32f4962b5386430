//! [`Connection`]: one end of a stream of whole messages, and [`pipe`], which makes a pair.
//!
//! The frame format, the read discipline and the error rules are described in the
//! [module documentation](super).

use std::cell::{Cell, OnceCell};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::fs::FileType;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::io::{self as cio, Interest};
use super::ring::{self, Incoming, Outgoing};
use crate::codec::{self, MAX_FDS_PER_MESSAGE, TransferFd};
use crate::error::{Error, Os, Result};
use crate::spin::Adaptive;

/// Bytes in a frame header: the payload length (`u64`) and the descriptor count (`u32`).
pub const HEADER_LEN: usize = 12;

/// Frames up to this size (header included) are encoded on the stack by [`Connection::send`].
const SMALL_MESSAGE: usize = 256;

/// The default maximum message size: 1 GiB. Raise it with [`Connection::set_max_message_size`].
pub const DEFAULT_MAX_MESSAGE: u64 = 1 << 30;

const BROKEN_RECV: &str = "this connection lost its place in the incoming stream after an \
     earlier error (a malformed or oversized frame, or a failure inside a frame); drop it";
const BROKEN_SEND: &str = "this connection stopped inside an outgoing frame after an earlier \
     error, so the peer could not tell where the next message starts; drop it";

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
/// Created by [`pipe`], by [`Listener::accept`](super::Listener::accept) and
/// [`connect`](super::connect), or from a connected socket or pipe ([`from_socket`],
/// [`from_fd`]). A `Connection` can travel to another process: as an argument of a spawned
/// process or inside a message sent through another `Connection` (its descriptor goes along).
///
/// One thread at a time may use a `Connection` (it is `Send`, not `Sync`): a frame must not
/// interleave with another thread's.
///
/// ```
/// let (a, b) = ipc_core::conn::pipe().unwrap();
/// a.send(&("task", 7u32)).unwrap();
/// let (name, n): (String, u32) = b.recv().unwrap();
/// assert_eq!((name.as_str(), n), ("task", 7));
/// ```
///
/// [`from_socket`]: Connection::from_socket
/// [`from_fd`]: Connection::from_fd
pub struct Connection {
    fd: OwnedFd,
    kind: Kind,
    max_message: Cell<u64>,
    // A SOCK_SEQPACKET socket: frames travel as records (see the module documentation).
    records: bool,
    // Where the first record of a frame lands (records only); taken out while in use, so a
    // nested receive can never find it borrowed.
    scratch: Cell<Vec<u8>>,
    // Set when an error stopped a read inside a frame: the next bytes are not a header.
    recv_broken: Cell<bool>,
    // Set when an error stopped a write inside a frame: the peer will misread what follows.
    send_broken: Cell<bool>,
    // Whether a receive polls briefly before it sleeps (see `crate::spin`); not sent along.
    spin: Adaptive,
    // The ring this end sends large payloads through (records only; made on first use, not
    // sent along: a connection sent to another process makes its own).
    outgoing: OnceCell<Outgoing>,
    // The mapping of the peer's ring, kept between large messages (taken out while in use).
    incoming: Cell<Option<Incoming>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd.as_raw_fd())
            .field("kind", &self.kind)
            .field("records", &self.records)
            .field("max_message", &self.max_message.get())
            .field("recv_broken", &self.recv_broken.get())
            .field("send_broken", &self.send_broken.get())
            .finish()
    }
}

/// Creates a connected duplex pair (a Unix `SOCK_SEQPACKET` socketpair): Python's `Pipe()`.
///
/// Both ends are close-on-exec; they reach other processes as process arguments or messages,
/// and can carry descriptors (and so shared objects).
///
/// ```
/// let (a, b) = ipc_core::conn::pipe().unwrap();
/// a.send(&"there").unwrap();
/// b.send(&"back").unwrap();
/// assert_eq!((b.recv::<String>().unwrap(), a.recv::<String>().unwrap()), ("there".into(), "back".into()));
/// ```
#[doc(alias = "Pipe")]
pub fn pipe() -> Result<(Connection, Connection)> {
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .os()?;
    Ok((
        Connection::with_framing(a, Kind::Socket, true),
        Connection::with_framing(b, Kind::Socket, true),
    ))
}

/// Creates a one-way pair `(reader, writer)` over a pipe: Python's `Pipe(duplex=False)`.
///
/// Both ends are close-on-exec. A pipe cannot carry descriptors, so shared objects need
/// [`pipe`].
///
/// ```
/// let (reader, writer) = ipc_core::conn::pipe_oneway().unwrap();
/// writer.send_bytes(b"one way").unwrap();
/// assert_eq!(reader.recv_bytes().unwrap(), b"one way");
/// assert!(reader.send_bytes(b"back").is_err()); // wrong direction: Error::Misuse
/// ```
#[doc(alias = "Pipe")]
pub fn pipe_oneway() -> Result<(Connection, Connection)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).os()?;
    Ok((
        Connection::new(r, Kind::PipeReader),
        Connection::new(w, Kind::PipeWriter),
    ))
}

impl Connection {
    fn new(fd: OwnedFd, kind: Kind) -> Self {
        Self::with_framing(fd, kind, false)
    }

    fn with_framing(fd: OwnedFd, kind: Kind, records: bool) -> Self {
        Connection {
            fd,
            kind,
            max_message: Cell::new(DEFAULT_MAX_MESSAGE),
            records,
            scratch: Cell::new(Vec::new()),
            recv_broken: Cell::new(false),
            send_broken: Cell::new(false),
            spin: Adaptive::new(),
            outgoing: OnceCell::new(),
            incoming: Cell::new(None),
        }
    }

    /// Wraps a connected socket: a stream (Unix or TCP) or a Unix `SOCK_SEQPACKET` socket.
    ///
    /// The descriptor is trusted to be one; [`from_fd`](Self::from_fd) checks.
    pub fn from_socket(fd: OwnedFd) -> Self {
        let records = rustix::net::sockopt::socket_type(&fd) == Ok(SocketType::SEQPACKET);
        Self::with_framing(fd, Kind::Socket, records)
    }

    /// Wraps a descriptor after checking what it is: a stream or `SOCK_SEQPACKET` socket
    /// becomes a duplex connection, a pipe opened for reading or writing one end of a one-way
    /// pipe.
    ///
    /// Anything else (a regular file, a datagram socket, a pipe opened read-write) is
    /// [`Error::Misuse`]; the descriptor is closed.
    ///
    /// ```
    /// use std::os::fd::OwnedFd;
    /// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let conn = ipc_core::conn::Connection::from_fd(OwnedFd::from(a)).unwrap();
    /// assert_eq!(conn.kind(), ipc_core::conn::Kind::Socket);
    /// let file = std::fs::File::open("/proc/self/stat").unwrap();
    /// assert!(ipc_core::conn::Connection::from_fd(OwnedFd::from(file)).is_err());
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        let stat = rustix::fs::fstat(&fd).os()?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Socket => {
                let ty = rustix::net::sockopt::socket_type(&fd).os()?;
                if ty != SocketType::STREAM && ty != SocketType::SEQPACKET {
                    return Err(Error::misuse(
                        "a Connection needs a connected SOCK_STREAM or SOCK_SEQPACKET socket; \
                         this socket is of another type",
                    ));
                }
                Ok(Self::with_framing(
                    fd,
                    Kind::Socket,
                    ty == SocketType::SEQPACKET,
                ))
            }
            FileType::Fifo => {
                let mode = rustix::fs::fcntl_getfl(&fd).os()? & rustix::fs::OFlags::RWMODE;
                if mode == rustix::fs::OFlags::RDONLY {
                    Ok(Self::new(fd, Kind::PipeReader))
                } else if mode == rustix::fs::OFlags::WRONLY {
                    Ok(Self::new(fd, Kind::PipeWriter))
                } else {
                    Err(Error::misuse(
                        "a pipe opened for both reading and writing has no direction; open it \
                         read-only or write-only",
                    ))
                }
            }
            other => Err(Error::misuse(format!(
                "a Connection wraps a stream socket or a pipe, not a {other:?}"
            ))),
        }
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

    /// The largest message this end accepts, in bytes.
    pub fn max_message_size(&self) -> u64 {
        self.max_message.get()
    }

    /// Sets the largest message this end accepts; larger frames are
    /// [`Error::MessageTooLarge`], refused before any memory is reserved for them.
    ///
    /// It limits what a peer can make this process allocate. It is a property of the receiving
    /// end and travels with the connection when it is sent to another process.
    pub fn set_max_message_size(&self, bytes: u64) {
        self.max_message.set(bytes);
    }

    /// Sends `value` as one postcard message, with any descriptors it carries.
    ///
    /// Descriptors (connections, shared segments, anything built on them) can only travel over
    /// a Unix socket connection; over a pipe or TCP this is [`Error::Encode`] and nothing is sent.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.check_writable()?;
        // Small messages (most of them) are encoded on the stack: no allocation.
        let mut small = [0u8; SMALL_MESSAGE];
        if let Some((n, fds)) = codec::encode_to_slice(value, &mut small[HEADER_LEN..])? {
            small[..8].copy_from_slice(&(n as u64).to_le_bytes());
            small[8..HEADER_LEN].copy_from_slice(&(fds.len() as u32).to_le_bytes());
            return self.write_frame(&small[..HEADER_LEN + n], &[], &fds);
        }
        let mut buf = Vec::with_capacity(2 * SMALL_MESSAGE);
        buf.extend_from_slice(&[0u8; HEADER_LEN]);
        let fds = codec::encode(value, &mut buf)?;
        let len = (buf.len() - HEADER_LEN) as u64;
        buf[..8].copy_from_slice(&len.to_le_bytes());
        buf[8..HEADER_LEN].copy_from_slice(&(fds.len() as u32).to_le_bytes());
        self.write_frame(&buf, &[], &fds)
    }

    /// Receives one message and decodes it as a `T`, with the descriptors it carries.
    ///
    /// A message that does not decode as a `T` is [`Error::Decode`]; it has been consumed, and
    /// the connection stays usable.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.recv_until(None)
    }

    /// [`recv`](Self::recv), waiting at most `timeout` for the whole message:
    /// [`Error::Timeout`] if it has not arrived by then.
    ///
    /// A timeout before the message started to arrive leaves the connection as it was. One in
    /// the middle of a message (a peer that stalled inside a send) breaks its receive side,
    /// since where the next message starts is lost: later receives are errors.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = ipc_core::conn::pipe()?;
    /// let nothing = b.recv_timeout::<u32>(Duration::from_millis(10));
    /// assert!(matches!(nothing, Err(ipc_core::Error::Timeout)));
    /// a.send(&7u32)?;
    /// assert_eq!(b.recv_timeout::<u32>(Duration::from_secs(30))?, 7);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.recv_until(Some(crate::deadline::after(Instant::now(), timeout)))
    }

    fn recv_until<T: DeserializeOwned>(&self, deadline: Option<Instant>) -> Result<T> {
        let head = self.read_header(deadline, self.max_message.get())?;
        if head.in_scratch == head.len {
            // The whole message came with the header: decode it where it landed.
            let scratch = self.scratch.take();
            let res = codec::decode(&scratch[..head.len], head.fds);
            self.scratch.set(scratch);
            return res;
        }
        let mut head = head;
        let bytes = self.read_payload_vec(&mut head, deadline)?;
        codec::decode(&bytes, head.fds)
    }

    /// Splits a duplex connection into a half that sends and a half that receives, each
    /// usable from its own thread at the same time (a `Connection` is one thread's at a time).
    /// Both halves wrap the same socket (the receive half a duplicate of its descriptor); the
    /// socket closes when both are dropped. [`Error::Misuse`] for one end of a one-way pipe.
    ///
    /// ```
    /// let (a, b) = ipc_core::conn::pipe()?;
    /// let (tx, rx) = a.split()?;
    /// let echo = std::thread::spawn(move || {
    ///     while let Ok(n) = b.recv::<u32>() {
    ///         b.send(&(n * 2)).unwrap();
    ///     }
    /// });
    /// let sender = std::thread::spawn(move || (0..100u32).try_for_each(|n| tx.send(&n)));
    /// let doubled: Vec<u32> = (0..100).map(|_| rx.recv().unwrap()).collect();
    /// sender.join().unwrap()?;
    /// assert_eq!(doubled, (0..100).map(|n| n * 2).collect::<Vec<_>>());
    /// drop(rx);
    /// echo.join().unwrap();
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn split(self) -> Result<(SendHalf, RecvHalf)> {
        if self.kind != Kind::Socket {
            return Err(Error::misuse(
                "only a duplex connection splits into a send half and a receive half; one end \
                 of a one-way pipe already goes one way",
            ));
        }
        let fd = self.fd.try_clone()?;
        let rx = Connection::with_framing(fd, Kind::Socket, self.records);
        rx.incoming.set(self.incoming.take());
        rx.max_message.set(self.max_message.get());
        Ok((SendHalf(self), RecvHalf(rx)))
    }

    /// Sends `bytes` as one message (no encoding). An empty slice is a real, empty message.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.check_writable()?;
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.write_frame(&header, bytes, &[])
    }

    /// Sends `size` bytes of `buf` starting at `offset` (all the rest when `size` is `None`),
    /// as Python's `send_bytes(buf, offset, size)`.
    ///
    /// A range outside `buf` is [`Error::Misuse`] and nothing is sent. `offset == buf.len()`
    /// sends an empty message.
    ///
    /// ```
    /// let (a, b) = ipc_core::conn::pipe().unwrap();
    /// a.send_bytes_range(b"abcdef", 2, Some(3)).unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), b"cde");
    /// assert!(a.send_bytes_range(b"abc", 2, Some(5)).is_err());
    /// ```
    pub fn send_bytes_range(&self, buf: &[u8], offset: usize, size: Option<usize>) -> Result<()> {
        if offset > buf.len() {
            return Err(Error::misuse(format!(
                "offset {offset} is past the end of a buffer of {} bytes",
                buf.len()
            )));
        }
        let end = match size {
            None => buf.len(),
            Some(size) => match offset.checked_add(size) {
                Some(end) if end <= buf.len() => end,
                _ => {
                    return Err(Error::misuse(format!(
                        "offset {offset} + size {size} is past the end of a buffer of {} bytes",
                        buf.len()
                    )));
                }
            },
        };
        self.send_bytes(&buf[offset..end])
    }

    /// Receives one message as bytes.
    ///
    /// A message that carried descriptors (a typed message holding shared objects) is
    /// [`Error::Decode`]: it is consumed and its descriptors are closed.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        let (bytes, fds) = self.recv_frame(None, self.max_message.get())?;
        refuse_fds(&fds)?;
        Ok(bytes)
    }

    /// Receives one message into `buf`; returns its length. The payload is read straight into
    /// `buf`, without an intermediate allocation.
    ///
    /// If `buf` is too small, the whole message is consumed and returned in
    /// [`Error::BufferTooShort`] (Python's `BufferTooShort`). To receive at an offset, pass
    /// `&mut buf[offset..]`.
    ///
    /// ```
    /// use ipc_core::Error;
    /// let (a, b) = ipc_core::conn::pipe().unwrap();
    /// a.send_bytes(b"hello").unwrap();
    /// let mut buf = [0u8; 16];
    /// assert_eq!(b.recv_bytes_into(&mut buf[4..]).unwrap(), 5);
    /// assert_eq!(&buf[4..9], b"hello");
    /// a.send_bytes(b"too long for three").unwrap();
    /// match b.recv_bytes_into(&mut buf[..3]) {
    ///     Err(Error::BufferTooShort(whole)) => assert_eq!(whole, b"too long for three"),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        let mut head = self.read_header(None, self.max_message.get())?;
        if head.len > buf.len() {
            let whole = self.read_payload_vec(&mut head, None)?;
            refuse_fds(&head.fds)?;
            return Err(Error::BufferTooShort(whole));
        }
        let len = head.len;
        self.read_payload_into(&mut head, &mut buf[..len], None)?;
        refuse_fds(&head.fds)?;
        Ok(head.len)
    }

    /// Sends a duplicate of a file descriptor as one message (Python's `send_handle`).
    ///
    /// The receiver gets it with [`recv_fd`](Self::recv_fd). Unix socket connections only.
    #[doc(alias = "send_handle")]
    pub fn send_fd(&self, fd: BorrowedFd<'_>) -> Result<()> {
        self.send(&FdRef(fd))
    }

    /// Receives a descriptor sent with [`send_fd`](Self::send_fd) (Python's `recv_handle`).
    ///
    /// A message without a descriptor is [`Error::Decode`].
    #[doc(alias = "recv_handle")]
    pub fn recv_fd(&self) -> Result<OwnedFd> {
        self.recv::<TransferFd>().map(|t| t.0)
    }

    /// Whether a message (or end of file) is ready to read, waiting up to `timeout`
    /// (`None` waits forever, zero does not wait). Never consumes anything.
    ///
    /// `true` means a frame has started to arrive (or the peer is gone): a following receive
    /// takes at most as long as the peer needs to finish sending it.
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        if !self.readable() {
            return Err(Error::misuse("poll on the write end of a one-way pipe"));
        }
        let deadline = timeout.map(|t| crate::deadline::after(Instant::now(), t));
        cio::wait_fd(self.fd.as_fd(), Interest::Read, deadline)
    }

    fn check_writable(&self) -> Result<()> {
        if !self.writable() {
            return Err(Error::misuse("send on the read end of a one-way pipe"));
        }
        if self.send_broken.get() {
            return Err(Error::misuse(BROKEN_SEND));
        }
        Ok(())
    }

    /// Writes one frame; an error after the first byte marks the send side broken.
    /// Sends a message already encoded with [`codec::encode`] (payload and descriptors).
    pub(crate) fn send_encoded(&self, payload: &[u8], fds: &[OwnedFd]) -> Result<()> {
        let mut head = [0u8; HEADER_LEN];
        head[..8].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        head[8..].copy_from_slice(&(fds.len() as u32).to_le_bytes());
        self.write_frame(&head, payload, fds)
    }

    fn write_frame(&self, head: &[u8], body: &[u8], fds: &[OwnedFd]) -> Result<()> {
        self.check_writable()?;
        if !fds.is_empty() && self.kind != Kind::Socket {
            return Err(Error::Encode(
                "file descriptors can only travel over a socket connection, not a one-way pipe \
                 (make it with pipe())"
                    .into(),
            ));
        }
        // TCP accepts SCM_RIGHTS control messages and silently drops them: ask the socket's
        // domain (one system call, only for messages that carry descriptors).
        if !fds.is_empty()
            && rustix::net::sockopt::socket_domain(&self.fd).os()? != AddressFamily::UNIX
        {
            return Err(Error::Encode(
                "file descriptors can only travel over a Unix socket connection, not over TCP"
                    .into(),
            ));
        }
        if fds.len() > MAX_FDS_PER_MESSAGE {
            return Err(Error::Encode(
                format!(
                    "{} file descriptors in one message; at most {MAX_FDS_PER_MESSAGE}",
                    fds.len()
                )
                .into(),
            ));
        }
        let mut sent = 0;
        let fd = self.fd.as_fd();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        let payload = head.len() - HEADER_LEN + body.len();
        let res = if self.records && payload >= ring::RING_MIN && fds.len() < MAX_FDS_PER_MESSAGE {
            self.write_ring_frame(head, body, borrowed, &mut sent)
        } else if self.records {
            cio::write_records(fd, head, body, &borrowed, &mut sent)
        } else {
            cio::write_stream(
                fd,
                self.kind == Kind::Socket,
                head,
                body,
                &borrowed,
                &mut sent,
            )
        };
        if res.is_err() && sent > 0 {
            self.send_broken.set(true);
        }
        res
    }

    /// Sends a frame whose payload (`head` after the header, then `body`) goes through this
    /// end's ring: one header record with the payload's start, and the first time the ring's
    /// descriptor after the message's own (see [`ring`]). Without a ring (no memfd could be
    /// made: a descriptor limit, a sandbox), the frame goes as records.
    fn write_ring_frame<'a>(
        &'a self,
        head: &[u8],
        body: &[u8],
        mut fds: Vec<BorrowedFd<'a>>,
        sent: &mut usize,
    ) -> Result<()> {
        let out = match self.outgoing.get() {
            Some(out) => out,
            None => match Outgoing::new() {
                Ok(out) => self.outgoing.get_or_init(|| out),
                Err(_) => return cio::write_records(self.fd.as_fd(), head, body, &fds, sent),
            },
        };
        let writer = out.begin([&head[HEADER_LEN..], body])?;
        let mut record = [0u8; HEADER_LEN + ring::START_LEN];
        record[..8].copy_from_slice(&head[..8]);
        let with_fd = !out.announced();
        let mut count = fds.len() as u32 | ring::RING_FLAG;
        if with_fd {
            count |= ring::FD_FLAG;
            fds.push(out.fd());
        }
        record[8..HEADER_LEN].copy_from_slice(&count.to_le_bytes());
        record[HEADER_LEN..].copy_from_slice(&writer.start().to_le_bytes());
        cio::write_records(self.fd.as_fd(), &record, &[], &fds, sent)?;
        out.set_announced();
        writer.finish(self.fd.as_fd())
    }

    /// Receives one whole frame: its payload and descriptors.
    ///
    /// `deadline` bounds the whole receive ([`Error::Timeout`]); `max` is the largest payload
    /// accepted. Used by the handshake with a small `max` and a deadline.
    pub(crate) fn recv_frame(
        &self,
        deadline: Option<Instant>,
        max: u64,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut head = self.read_header(deadline, max)?;
        let body = self.read_payload_vec(&mut head, deadline)?;
        Ok((body, head.fds))
    }

    fn broken_recv<T>(&self, e: Error) -> Result<T> {
        self.recv_broken.set(true);
        Err(e)
    }

    /// Reads a frame header and the descriptors that came with it; checks both.
    fn read_header(&self, deadline: Option<Instant>, max: u64) -> Result<Header> {
        if !self.readable() {
            return Err(Error::misuse("recv on the write end of a one-way pipe"));
        }
        if self.recv_broken.get() {
            return Err(Error::misuse(BROKEN_RECV));
        }
        let mut header = [0u8; HEADER_LEN];
        let mut fds = Vec::new();
        let in_scratch = if self.records {
            self.read_first_record(&mut header, &mut fds, deadline)?
        } else {
            self.read_stream_header(&mut header, &mut fds, deadline)?;
            0
        };
        let len = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let mut nfds = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
        let mut ring = None;
        if nfds & ring::RING_FLAG != 0 {
            let with_fd = nfds & ring::FD_FLAG != 0;
            nfds &= !(ring::RING_FLAG | ring::FD_FLAG);
            ring = match self.ring_start(in_scratch, &mut fds, with_fd) {
                Ok(r) => Some(r),
                Err(e) => return self.broken_recv(e),
            };
        }
        if len > max {
            return self.broken_recv(Error::MessageTooLarge { len, max });
        }
        if nfds as usize != fds.len() {
            // The descriptors that did arrive are closed when `fds` drops.
            return self.broken_recv(Error::malformed(format!(
                "the header announced {nfds} descriptors but {} arrived",
                fds.len()
            )));
        }
        let Ok(len) = usize::try_from(len) else {
            return self.broken_recv(Error::MessageTooLarge {
                len,
                max: usize::MAX as u64,
            });
        };
        if ring.is_none() && in_scratch > len {
            return self.broken_recv(Error::malformed(format!(
                "the first record holds {in_scratch} payload bytes of a {len}-byte message"
            )));
        }
        Ok(Header {
            len,
            fds,
            in_scratch: if ring.is_some() { 0 } else { in_scratch },
            ring,
        })
    }

    /// A ring frame's start position (in the scratch buffer after the header) and the ring's
    /// descriptor (the last one that came).
    fn ring_start(
        &self,
        in_scratch: usize,
        fds: &mut Vec<OwnedFd>,
        with_fd: bool,
    ) -> Result<(u64, Option<OwnedFd>)> {
        if !self.records || in_scratch != ring::START_LEN {
            return Err(Error::malformed(
                "a ring frame on a byte stream, or with a first record of the wrong size",
            ));
        }
        let fd = match (with_fd, fds.pop()) {
            (false, fd) => {
                fds.extend(fd);
                None
            }
            (true, Some(fd)) => Some(fd),
            (true, None) => {
                return Err(Error::malformed(
                    "a ring frame without the ring's descriptor",
                ));
            }
        };
        let scratch = self.scratch.take();
        let start = u64::from_le_bytes(scratch[..8].try_into().expect("8 bytes"));
        self.scratch.set(scratch);
        Ok((start, fd))
    }

    /// Reads a ring frame's payload with `read` (given the ring, the payload's start and the
    /// socket): maps the ring or finds it mapped, keeps the mapping, and breaks the receive side
    /// on an error (the place in the stream is lost).
    fn read_ring(
        &self,
        (start, fd): (u64, Option<OwnedFd>),
        read: impl FnOnce(&Incoming, u64, BorrowedFd<'_>) -> Result<()>,
    ) -> Result<()> {
        let ring = match (fd, self.incoming.take()) {
            (Some(fd), current) => Incoming::get(current, fd),
            (None, Some(current)) => Ok(current),
            (None, None) => Err(Error::malformed(
                "a large message in a ring this end was never given (was it rebuilt from its \
                 descriptor while its peer was sending large messages?)",
            )),
        };
        let res = ring.and_then(|ring| {
            let res = read(&ring, start, self.fd.as_fd());
            self.incoming.set(Some(ring));
            res
        });
        res.or_else(|e| self.broken_recv(e))
    }

    /// Reads exactly a header from a byte stream, with the descriptors that come with it.
    fn read_stream_header(
        &self,
        header: &mut [u8; HEADER_LEN],
        fds: &mut Vec<OwnedFd>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let socket = self.kind == Kind::Socket;
        let mut got = 0;
        while got < HEADER_LEN {
            let res = if socket {
                let mut iov = [IoSliceMut::new(&mut header[got..])];
                let spin = (got == 0).then_some(&self.spin);
                cio::recv_collect(self.fd.as_fd(), &mut iov, fds, deadline, spin).map(|(n, _)| n)
            } else {
                cio::read_plain(self.fd.as_fd(), &mut header[got..], deadline)
            };
            match res {
                Ok(0) if got == 0 => return Err(Error::Eof),
                Ok(0) => {
                    return self.broken_recv(Error::malformed(format!(
                        "the stream ended inside a frame header ({got} of {HEADER_LEN} bytes)"
                    )));
                }
                Ok(n) => got += n,
                Err(e) if got == 0 => return self.unstarted(e),
                Err(e) => return self.broken_recv(e),
            }
        }
        Ok(())
    }

    /// Reads the first record of a frame: the header into `header`, the payload bytes that
    /// follow it into the scratch buffer (returns how many).
    fn read_first_record(
        &self,
        header: &mut [u8; HEADER_LEN],
        fds: &mut Vec<OwnedFd>,
        deadline: Option<Instant>,
    ) -> Result<usize> {
        let mut scratch = self.scratch.take();
        if scratch.is_empty() {
            scratch = vec![0u8; cio::FIRST_RECORD - HEADER_LEN];
        }
        let mut iov = [IoSliceMut::new(header), IoSliceMut::new(&mut scratch)];
        let res = cio::recv_collect(self.fd.as_fd(), &mut iov, fds, deadline, Some(&self.spin));
        self.scratch.set(scratch);
        match res {
            Ok((0, _)) => Err(Error::Eof),
            Ok((_, true)) => self.broken_recv(Error::malformed(format!(
                "a record longer than the {}-byte limit of a first record",
                cio::FIRST_RECORD
            ))),
            Ok((n, false)) if n < HEADER_LEN => self.broken_recv(Error::malformed(format!(
                "a first record of {n} bytes cannot hold a {HEADER_LEN}-byte header"
            ))),
            Ok((n, false)) => Ok(n - HEADER_LEN),
            Err(e @ Error::Malformed(_)) => self.broken_recv(e),
            Err(e) => self.unstarted(e),
        }
    }

    /// An error before the first byte of a frame: the stream is still at a frame boundary.
    fn unstarted<T>(&self, e: Error) -> Result<T> {
        match e {
            // A Unix socket whose peer closed with unread data reports ECONNRESET instead of
            // end of file; between frames both mean the same: the peer is gone.
            Error::Io(io) if io.kind() == io::ErrorKind::ConnectionReset => Err(Error::Eof),
            e @ (Error::Io(_) | Error::Timeout) => Err(e),
            e => self.broken_recv(e),
        }
    }

    /// Fills `dst` (exactly the payload's length) with the payload.
    fn read_payload_into(
        &self,
        head: &mut Header,
        dst: &mut [u8],
        deadline: Option<Instant>,
    ) -> Result<()> {
        if let Some(ring) = head.ring.take() {
            return self.read_ring(ring, |inc, start, socket| {
                inc.read_to_slice(start, dst, deadline, socket)
            });
        }
        let mut got = head.in_scratch;
        if got > 0 {
            let scratch = self.scratch.take();
            dst[..got].copy_from_slice(&scratch[..got]);
            self.scratch.set(scratch);
        }
        while got < dst.len() {
            let res = if self.records {
                cio::recv_record(self.fd.as_fd(), &mut dst[got..], deadline)
            } else {
                cio::read_plain(self.fd.as_fd(), &mut dst[got..], deadline).map(|n| (n, false))
            };
            match res {
                Ok((0, _)) => return self.broken_recv(payload_ended(got, dst.len())),
                Ok((_, true)) => return self.broken_recv(record_overflow(dst.len())),
                Ok((n, false)) => got += n,
                Err(e) => return self.broken_recv(e),
            }
        }
        Ok(())
    }

    /// Reads the payload into a new vector.
    ///
    /// The memory is reserved once (the length is at most the maximum message size, checked
    /// with the header) and filled by the reads without being zeroed first; the kernel backs
    /// large reservations lazily, so a peer that announces much and sends little costs address
    /// space, not memory.
    fn read_payload_vec(&self, head: &mut Header, deadline: Option<Instant>) -> Result<Vec<u8>> {
        let len = head.len;
        let mut body: Vec<u8> = Vec::new();
        if body.try_reserve_exact(len).is_err() {
            return self.broken_recv(Error::Io(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot reserve {len} bytes for an incoming message"),
            )));
        }
        if body.capacity() != len {
            // Reads into spare capacity must stop at the frame's end; with more capacity than
            // asked for (no allocator does this today) fall back to an exact, zeroed buffer.
            body.resize(len, 0);
            self.read_payload_into(head, &mut body, deadline)?;
            return Ok(body);
        }
        if let Some(ring) = head.ring.take() {
            self.read_ring(ring, |inc, start, socket| {
                inc.read_to_vec(start, len, &mut body, deadline, socket)
            })?;
            return Ok(body);
        }
        if head.in_scratch > 0 {
            let scratch = self.scratch.take();
            body.extend_from_slice(&scratch[..head.in_scratch]);
            self.scratch.set(scratch);
        }
        while body.len() < len {
            let res = if self.records {
                cio::recv_record_spare(self.fd.as_fd(), &mut body, deadline)
            } else {
                cio::read_spare(self.fd.as_fd(), &mut body, deadline).map(|n| (n, false))
            };
            match res {
                Ok((0, _)) => return self.broken_recv(payload_ended(body.len(), len)),
                Ok((_, true)) => return self.broken_recv(record_overflow(len)),
                Ok((_, false)) => {}
                Err(e) => return self.broken_recv(e),
            }
        }
        Ok(body)
    }
}

/// A frame header that passed its checks.
struct Header {
    /// Payload bytes.
    len: usize,
    /// The descriptors that came with the frame, as many as the header announced.
    fds: Vec<OwnedFd>,
    /// Payload bytes already received into the scratch buffer with the header (records only).
    in_scratch: usize,
    /// Where the payload starts in the peer's ring, and the ring (ring frames only).
    ring: Option<(u64, Option<OwnedFd>)>,
}

fn record_overflow(len: usize) -> Error {
    Error::malformed(format!(
        "a record runs past the end of its {len}-byte message"
    ))
}

fn payload_ended(got: usize, len: usize) -> Error {
    Error::malformed(format!(
        "the stream ended after {got} of {len} payload bytes"
    ))
}

fn refuse_fds(fds: &[OwnedFd]) -> Result<()> {
    if fds.is_empty() {
        Ok(())
    } else {
        Err(Error::Decode(
            format!(
                "the message carried {} file descriptors, which raw bytes cannot hold (they were \
                 closed); receive it with recv::<T>()",
                fds.len()
            )
            .into(),
        ))
    }
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Connection {
    /// The descriptor number (Python's `fileno()`).
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Connection> for OwnedFd {
    fn from(c: Connection) -> OwnedFd {
        c.fd
    }
}

/// A borrowed descriptor that serializes through the codec's descriptor table.
struct FdRef<'a>(BorrowedFd<'a>);

impl Serialize for FdRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        codec::serialize_fd(self.0, s)
    }
}

// The wire form of a Connection: its descriptor travels beside the bytes, its state inside them
// (a connection broken mid-frame stays broken in the process that receives it).
#[derive(Serialize)]
struct WireRef<'a> {
    fd: FdRef<'a>,
    ring: Option<FdRef<'a>>,
    kind: Kind,
    max_message: u64,
    records: bool,
    recv_broken: bool,
    send_broken: bool,
}

#[derive(Deserialize)]
struct Wire {
    fd: TransferFd,
    ring: Option<TransferFd>,
    kind: Kind,
    max_message: u64,
    records: bool,
    recv_broken: bool,
    send_broken: bool,
}

impl Serialize for Connection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // The mapping of the peer's ring goes along: its sender announced it once.
        let incoming = self.incoming.take();
        let res = WireRef {
            fd: FdRef(self.fd.as_fd()),
            ring: incoming.as_ref().map(|i| FdRef(i.fd())),
            kind: self.kind,
            max_message: self.max_message.get(),
            records: self.records,
            recv_broken: self.recv_broken.get(),
            send_broken: self.send_broken.get(),
        }
        .serialize(s);
        self.incoming.set(incoming);
        res
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let c = Connection::with_framing(w.fd.0, w.kind, w.records);
        c.max_message.set(w.max_message);
        c.recv_broken.set(w.recv_broken);
        c.send_broken.set(w.send_broken);
        if let Some(fd) = w.ring {
            let ring = Incoming::get(None, fd.0).map_err(serde::de::Error::custom)?;
            c.incoming.set(Some(ring));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    #[test]
    fn errno_reset_maps_to_connection_reset() {
        let e: Error = Error::os(Errno::CONNRESET);
        assert!(matches!(e, Error::Io(ref io) if io.kind() == io::ErrorKind::ConnectionReset));
    }
}

/// The sending half of a split [`Connection`] (see [`Connection::split`]).
#[derive(Debug)]
pub struct SendHalf(Connection);

/// The receiving half of a split [`Connection`] (see [`Connection::split`]).
#[derive(Debug)]
pub struct RecvHalf(Connection);

impl SendHalf {
    /// As [`Connection::send`].
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.0.send(value)
    }

    /// As [`Connection::send_bytes`].
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.0.send_bytes(bytes)
    }

    /// As [`Connection::send_fd`].
    pub fn send_fd(&self, fd: BorrowedFd<'_>) -> Result<()> {
        self.0.send_fd(fd)
    }
}

impl RecvHalf {
    /// As [`Connection::recv`].
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.0.recv()
    }

    /// As [`Connection::recv_timeout`].
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.0.recv_timeout(timeout)
    }

    /// As [`Connection::recv_bytes`].
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.0.recv_bytes()
    }

    /// As [`Connection::recv_fd`].
    pub fn recv_fd(&self) -> Result<OwnedFd> {
        self.0.recv_fd()
    }

    /// As [`Connection::poll`].
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        self.0.poll(timeout)
    }

    /// As [`Connection::set_max_message_size`].
    pub fn set_max_message_size(&self, bytes: u64) {
        self.0.set_max_message_size(bytes)
    }
}

impl AsFd for RecvHalf {
    /// The descriptor to wait on (with [`wait`](super::wait)) for incoming messages.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
