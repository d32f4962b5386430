//! The error type of ipc-core.
//!
//! One enum for the layer, shaped like Python's exceptions (`EOFError`, `AuthenticationError`,
//! `BufferTooShort`, `TimeoutError`, `ValueError` for misuse), each message saying what happened
//! and, where it helps, what to do.

use std::fmt;
use std::io;

/// A specialised `Result` for ipc-core operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ipc-core.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error.
    Io(io::Error),
    /// The peer closed its end and everything it sent has been read (Python's `EOFError`).
    Eof,
    /// A frame announced more bytes than the connection's maximum message size.
    MessageTooLarge {
        /// Announced length in bytes.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The peer sent bytes that are not a valid frame, or the stream ended inside one.
    Malformed(String),
    /// A value could not be encoded (postcard) or could not travel (a shared object outside a
    /// [`Connection`](crate::conn::Connection) or process argument).
    Encode(CodecError),
    /// Received bytes did not decode as the expected type.
    Decode(CodecError),
    /// The authentication handshake failed (wrong authkey or a peer that is not ours).
    Authentication(String),
    /// `recv_bytes_into` got a buffer smaller than the message; the message is returned whole.
    BufferTooShort(Vec<u8>),
    /// The operation did not complete before its timeout.
    Timeout,
    /// The object was used in a way its contract forbids (start twice, join before start, wrong
    /// direction on a one-way pipe, use after close, ...).
    Misuse(String),
}

/// Why a value did not encode or decode: what happened, in words, and the serializer's own
/// error where there is one (as [`source`](std::error::Error::source)).
#[derive(Debug)]
pub struct CodecError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl CodecError {
    /// What happened (also the `Display` text).
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn new(message: impl Into<String>) -> Self {
        CodecError {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        CodecError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl From<&str> for CodecError {
    fn from(message: &str) -> Self {
        CodecError::new(message)
    }
}

impl From<String> for CodecError {
    fn from(message: String) -> Self {
        CodecError::new(message)
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    pub(crate) fn misuse(msg: impl Into<String>) -> Self {
        Error::Misuse(msg.into())
    }
    pub(crate) fn malformed(msg: impl Into<String>) -> Self {
        Error::Malformed(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "operating-system error: {e}"),
            Error::Eof => f.write_str("the peer closed the connection (end of file)"),
            Error::MessageTooLarge { len, max } => write!(
                f,
                "message of {len} bytes exceeds the maximum of {max} bytes \
                 (raise it with set_max_message_size on both ends)"
            ),
            Error::Malformed(m) => write!(f, "malformed frame: {m}"),
            Error::Encode(m) => write!(f, "cannot encode the value: {m}"),
            Error::Decode(m) => write!(f, "cannot decode the received bytes: {m}"),
            Error::Authentication(m) => write!(f, "authentication failed: {m}"),
            Error::BufferTooShort(msg) => write!(
                f,
                "buffer too short for a message of {} bytes (the message is in the error)",
                msg.len()
            ),
            Error::Timeout => f.write_str("timed out"),
            Error::Misuse(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Encode(e) | Error::Decode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// `.os()?` turns a failed system call (rustix's `Errno`) into [`Error::Io`]. A crate-private
/// trait rather than `From<Errno> for Error`, which would make rustix part of the public API.
pub(crate) trait Os<T> {
    fn os(self) -> Result<T>;
}

impl<T> Os<T> for std::result::Result<T, rustix::io::Errno> {
    fn os(self) -> Result<T> {
        self.map_err(|e| Error::Io(e.into()))
    }
}

impl Error {
    /// [`Error::Io`] from a failed system call.
    pub(crate) fn os(e: rustix::io::Errno) -> Self {
        Error::Io(e.into())
    }
}
