//! The error type of ipc-manager: one enum, each variant saying what happened on which side.

use std::fmt;

use crate::wire::Fault;

/// A specialised `Result` for manager operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a manager or a proxy.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The server is gone: it was shut down, it died, or the connection to it broke. Every
    /// call on its proxies fails this way, at once, instead of hanging.
    ServerGone(String),
    /// A transport or encoding error (a value that cannot be encoded, a reply that does not
    /// decode as the proxy's type, a refused connection, a wrong authkey).
    Core(ipc_core::Error),
    /// A blocking call's timeout passed.
    Timeout,
    /// A non-blocking get found the queue empty (or `pop` found the list empty).
    Empty,
    /// A non-blocking put found the queue full.
    Full,
    /// The lock's previous holder died holding it (its process's connections closed). **The
    /// caller now holds the lock**; what it protects may be half-updated. Release it when done.
    OwnerDied,
    /// Release of a lock the caller does not hold, a bounded semaphore released too often, a
    /// condition used without its lock, `task_done` called too often.
    NotHeld(String),
    /// The barrier is broken (aborted, reset while parties waited, or a party timed out or
    /// left).
    Broken,
    /// An index outside the list or array.
    IndexOutOfRange {
        /// The index asked for (negative ones count from the end).
        index: i64,
        /// The length at the time of the call.
        len: u64,
    },
    /// The object no longer exists on the server (every reference to it was dropped).
    NoSuchObject(u64),
    /// The object has no such operation (a proxy of the wrong kind for the object).
    NoSuchMethod {
        /// The object's kind on the server.
        kind: String,
        /// The operation asked for.
        op: String,
    },
    /// No object is published under this name ([`Manager::lookup`](crate::Manager::lookup)).
    NoSuchName(String),
    /// No custom type of this name is registered in the server's process
    /// ([`Manager::create`](crate::Manager::create)).
    NoSuchType(String),
    /// A published object is of another kind than the proxy asked for.
    WrongKind {
        /// The object's kind on the server.
        found: String,
        /// The kinds the proxy type accepts.
        expected: String,
    },
    /// A namespace attribute that does not exist.
    NoSuchAttribute(String),
    /// A namespace attribute read as a type it does not hold.
    WrongType {
        /// The attribute.
        name: String,
        /// What did not fit.
        detail: String,
    },
    /// An update function failed on the server (it panicked or could not run there; the value
    /// is unchanged), or a custom type's method failed (it panicked, or returned the error of
    /// its `Result<T>`).
    Function(String),
    /// Client and server speak different protocol versions.
    Version {
        /// The client's version.
        client: u32,
        /// The server's version.
        server: u32,
    },
    /// The server refused the call or the start failed, for the reason given.
    Refused(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ServerGone(why) => write!(f, "the manager's server is gone: {why}"),
            Error::Core(e) => write!(f, "{e}"),
            Error::Timeout => f.write_str("the call timed out"),
            Error::Empty => f.write_str("empty"),
            Error::Full => f.write_str("the queue is full"),
            Error::OwnerDied => {
                f.write_str("the lock's previous holder died holding it; the caller holds it now")
            }
            Error::NotHeld(why) => f.write_str(why),
            Error::Broken => f.write_str("the barrier is broken"),
            Error::IndexOutOfRange { index, len } => {
                write!(f, "index {index} is out of range for length {len}")
            }
            Error::NoSuchObject(id) => write!(
                f,
                "object {id} does not exist on the server (every reference to it was dropped)"
            ),
            Error::NoSuchMethod { kind, op } => write!(f, "a {kind} has no operation {op}"),
            Error::NoSuchName(name) => write!(f, "no object is published as {name:?}"),
            Error::NoSuchType(name) => write!(
                f,
                "the server's process has no type registered as {name:?} (ipc_manager::register)"
            ),
            Error::WrongKind { found, expected } => {
                write!(f, "the object is a {found}, not a {expected}")
            }
            Error::NoSuchAttribute(name) => write!(f, "the namespace has no attribute {name:?}"),
            Error::WrongType { name, detail } => {
                write!(f, "namespace attribute {name:?} has another type: {detail}")
            }
            Error::Function(why) => write!(f, "the update failed on the server: {why}"),
            Error::Version { client, server } => write!(
                f,
                "protocol version mismatch: this client speaks {client}, the server {server}"
            ),
            Error::Refused(why) => write!(f, "the manager refused: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Core(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ipc_core::Error> for Error {
    fn from(e: ipc_core::Error) -> Error {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, NotConnected};
        match e {
            ipc_core::Error::Eof => Error::ServerGone("the connection was closed".into()),
            ipc_core::Error::Io(io)
                if matches!(
                    io.kind(),
                    BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected
                ) =>
            {
                Error::ServerGone(io.to_string())
            }
            ipc_core::Error::Timeout => Error::Timeout,
            e => Error::Core(e),
        }
    }
}

impl From<Fault> for Error {
    fn from(f: Fault) -> Error {
        match f {
            Fault::Version { server } => Error::Version {
                client: crate::wire::VERSION,
                server,
            },
            Fault::NoSuchSession => {
                Error::Refused("the session to join does not exist (anymore)".into())
            }
            Fault::NoSuchObject(id) => Error::NoSuchObject(id),
            Fault::NoSuchMethod { kind, op } => Error::NoSuchMethod { kind, op },
            Fault::NoSuchName(name) => Error::NoSuchName(name),
            Fault::NoSuchType(name) => Error::NoSuchType(name),
            Fault::IndexOutOfRange { index, len } => Error::IndexOutOfRange { index, len },
            Fault::Timeout => Error::Timeout,
            Fault::Empty => Error::Empty,
            Fault::Full => Error::Full,
            Fault::OwnerDied => Error::OwnerDied,
            Fault::NotHeld(why) => Error::NotHeld(why),
            Fault::Broken => Error::Broken,
            Fault::Function(why) => Error::Function(why),
            Fault::Refused(why) => Error::Refused(why),
            Fault::ShuttingDown => Error::ServerGone("the server is shutting down".into()),
        }
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}
