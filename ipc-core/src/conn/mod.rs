//! Connections: length-framed messages over socketpairs, pipes and sockets.
//!
//! # Frame
//! ```text
//! +----------------------+------------------+---------------------+
//! | payload length: u64  | descriptors: u32 | payload (length B)  |
//! | little endian        | little endian    | postcard or raw     |
//! +----------------------+------------------+---------------------+
//! ```
//! The header and the payload go out in one `sendmsg` (`writev` on a pipe); descriptors
//! (`SCM_RIGHTS`) ride on that call, so the kernel attaches them to the frame's first byte and
//! the receiver collects them while it reads the header (a `recvmsg` with a control buffer on
//! the stack), then checks their number against the header's count. The payload is read with
//! plain `read`s, straight into its final buffer.
//!
//! The receiver never reads past the end of the current frame. That costs a second read per
//! message, and buys two properties: a connection's descriptor is readable exactly when a
//! message is waiting (so [`wait`](Connection::poll) on descriptors is truthful), and a
//! connection can be handed to another process between any two messages without losing
//! buffered bytes.
//!
//! # Errors
//! A length above the connection's maximum (default [`DEFAULT_MAX_MESSAGE`]) is
//! [`Error::MessageTooLarge`] before anything is allocated; a stream that ends inside a frame is
//! [`Error::Malformed`]; a stream that ends between frames is [`Error::Eof`]. After an error that
//! stops inside a frame the connection has lost its place in the stream: later calls on that side
//! are [`Error::Misuse`] (instead of reading payload bytes as a header); drop it. A message that
//! does not decode ([`Error::Decode`]) or does not fit ([`Error::BufferTooShort`]) is consumed
//! whole and the connection stays usable.
//!
//! Frames use a length prefix, not COBS: COBS was 60-100x slower on large byte payloads here.
//!
//! [`Error::MessageTooLarge`]: crate::Error::MessageTooLarge
//! [`Error::Malformed`]: crate::Error::Malformed
//! [`Error::Eof`]: crate::Error::Eof
//! [`Error::Misuse`]: crate::Error::Misuse
//! [`Error::Decode`]: crate::Error::Decode
//! [`Error::BufferTooShort`]: crate::Error::BufferTooShort

mod address;
mod auth;
mod connection;
mod io;
mod listener;
mod wait;

pub use address::{Address, MAX_ABSTRACT_NAME};
pub use auth::{DEFAULT_HANDSHAKE_TIMEOUT, HANDSHAKE_MAX_MESSAGE};
pub use connection::{Connection, DEFAULT_MAX_MESSAGE, HEADER_LEN, Kind, pipe};
pub use listener::{Listener, connect, connect_timeout};
pub use wait::wait;
