//! Connections: whole messages over socketpairs, pipes and sockets, between threads, related
//! processes and unrelated ones (Python's `multiprocessing.connection`).
//!
//! # Map
//! - [`Connection`]: one end; typed messages ([`send`](Connection::send) /
//!   [`recv`](Connection::recv), postcard), raw bytes ([`send_bytes`](Connection::send_bytes) /
//!   [`recv_bytes`](Connection::recv_bytes) / [`recv_bytes_into`](Connection::recv_bytes_into)),
//!   [`poll`](Connection::poll), descriptors ([`send_fd`](Connection::send_fd), and any shared
//!   object inside a message). A `Connection` is itself `Serialize`: it travels to other
//!   processes with its descriptor.
//! - [`pipe`]: a connected pair, duplex or one-way.
//! - [`Listener`], [`connect`], [`Address`]: rendezvous at a Unix path, an abstract name or a TCP
//!   address, with an optional authkey.
//! - [`Connection::deliver_challenge`], [`Connection::answer_challenge`]: the authkey handshake,
//!   for protocols that run it themselves (the forkserver, the manager).
//! - [`wait`]: block until any of several connections, listeners or process sentinels is ready.
//!
//! ```
//! use ipc_core::conn::pipe;
//! let (parent, child) = pipe().unwrap();
//! let worker = std::thread::spawn(move || {
//!     while let Ok(n) = child.recv::<u64>() {
//!         child.send(&(n * n)).unwrap();
//!     }
//! });
//! parent.send(&12u64).unwrap();
//! assert_eq!(parent.recv::<u64>().unwrap(), 144);
//! drop(parent); // the worker sees end of file
//! worker.join().unwrap();
//! ```
//!
//! # Frame
//! ```text
//! +----------------------+------------------+---------------------+
//! | payload length: u64  | descriptors: u32 | payload (length B)  |
//! | little endian        | little endian    | postcard or raw     |
//! +----------------------+------------------+---------------------+
//! ```
//! Descriptors (`SCM_RIGHTS`) ride on the system call that sends the frame's first byte, so the
//! kernel attaches them to it and the receiver collects them while it reads the header (a
//! `recvmsg` with a control buffer on the stack), then checks their number against the header's
//! count. Lengths are 64-bit: messages above 4 GiB are representable (the maximum message size
//! decides what a receiver accepts). Frames use a length prefix, not COBS: COBS was 60-100x
//! slower on large byte payloads here.
//!
//! The receiver never reads past the end of the current frame, so a connection's descriptor is
//! readable exactly when a message is waiting ([`wait`] on descriptors is truthful) and a
//! connection can be handed to another process between any two messages without losing bytes
//! in a buffer. How the frame is cut into system calls depends on the socket:
//!
//! - **Records** (`SOCK_SEQPACKET`: [`pipe()`](pipe) and Unix [`Listener`]s). The frame is
//!   sent as records: the first holds the header and up to 8180 payload bytes, each later one up
//!   to 128 KiB. A small message is one `sendmsg` and one `recvmsg`, the same count as a raw
//!   socket write and read, which is what small-message ping-pong costs. Record boundaries keep
//!   every read inside its frame; a record that would cross one is [`Error::Malformed`].
//! - **Large payloads on records** (32 KiB and more): the payload goes through a ring of shared
//!   memory that the sending end owns, and the socket carries only the header record, with the
//!   payload's place in the ring (and, the first time, the ring's memfd). Ordering, end of file
//!   and [`wait`] stay the socket's; a peer that dies in the middle of a payload is an error on
//!   the other side within 50 ms, never a hang. A 1 MiB message goes about 4x faster than
//!   through the socket (27 GB/s against 4.5-6.7 here); the ring costs 2 MiB of shared memory
//!   per direction that has sent a large message. The layout, frame and waits are in the
//!   `ring` module (`src/conn/ring.rs`).
//! - **Byte streams** (TCP, another program's Unix stream socket, one-way pipes). The header and
//!   the payload leave in one `sendmsg` (`writev` on a pipe); the receiver reads exactly the
//!   header, then exactly the payload (two reads per message).
//!
//! Payloads are read straight into their final buffer, which is reserved once and not zeroed.
//! Every call retries `EINTR`, and a descriptor found in non-blocking mode waits for readiness
//! instead of failing with `EAGAIN`.
//!
//! # Errors
//! A length above the connection's maximum (default [`DEFAULT_MAX_MESSAGE`]) is
//! [`Error::MessageTooLarge`] before anything is allocated; a stream that ends inside a frame is
//! [`Error::Malformed`]; a stream that ends between frames is [`Error::Eof`]. After an error that
//! stops inside a frame the connection has lost its place in the stream: later calls on that side
//! are [`Error::Misuse`] (instead of reading payload bytes as a header); drop it. A message that
//! does not decode ([`Error::Decode`]) or does not fit ([`Error::BufferTooShort`]) is consumed
//! whole and the connection stays usable. A wrong-direction call on a one-way pipe is
//! [`Error::Misuse`].
//!
//! # Authentication
//! With an authkey, [`Listener::accept`] and [`connect`] run Python's (3.12+) challenge in both
//! directions: the listener challenges the client, then the client challenges the listener.
//! ```text
//! challenger                                           answerer
//!   #CHALLENGE# {sha256} nonce (32 random bytes)   ->
//!                   <-  {sha256} HMAC-SHA256(authkey, "{sha256}" nonce)
//!   #WELCOME#  or  #FAILURE#                        ->
//! ```
//! The MAC covers the digest name with the nonce, so the answerer cannot be talked into another
//! digest; only `{sha256}` is accepted and tags are compared in constant time. A wrong key is
//! [`Error::Authentication`] on both sides (the verdict tells the peer). During the handshake
//! frames are limited to [`HANDSHAKE_MAX_MESSAGE`] bytes and the exchange to a deadline
//! ([`DEFAULT_HANDSHAKE_TIMEOUT`] by default), so garbage, a giant length, descriptors or silence
//! from the peer end in an error, never a hang. The handshake authenticates the peer, it does not
//! encrypt the connection or bind it to an endpoint: over untrusted networks, tunnel it.
//!
//! [`Error::MessageTooLarge`]: crate::Error::MessageTooLarge
//! [`Error::Malformed`]: crate::Error::Malformed
//! [`Error::Eof`]: crate::Error::Eof
//! [`Error::Misuse`]: crate::Error::Misuse
//! [`Error::Decode`]: crate::Error::Decode
//! [`Error::BufferTooShort`]: crate::Error::BufferTooShort
//! [`Error::Authentication`]: crate::Error::Authentication

mod address;
mod auth;
mod connection;
mod io;
mod listener;
mod ring;
mod wait;

pub use address::{Address, MAX_ABSTRACT_NAME};
pub use auth::{DEFAULT_HANDSHAKE_TIMEOUT, HANDSHAKE_MAX_MESSAGE};
pub use connection::{
    Connection, DEFAULT_MAX_MESSAGE, HEADER_LEN, Kind, RecvHalf, SendHalf, pipe, pipe_oneway,
};
pub use listener::{Listener, MAX_PENDING, STEP_GRACE, connect, connect_timeout};
pub use wait::wait;
