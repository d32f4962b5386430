//! The manager's wire protocol: what a client and the server say to each other.
//!
//! ```text
//! client                                   server (one thread per connection)
//!   connect ── ipc-core HMAC handshake, both ways (Listener/connect) ──> accepted
//!   Hello::New{version} or Hello::Join{version, session, ticket} ──>
//!                    <── Result<Welcome{version, session, ticket, pid}, Fault>
//!   Request{obj, op} ──>                                     (strictly alternating:
//!                    <── Result<Out, Fault>                   one request, one reply)
//!   ... until either side closes the socket
//! ```
//! A connection the server made itself ([`Op::Split`], handed over as a descriptor) skips the
//! handshake and the hello: it belongs to a session from birth. That is how a proxy reaches a
//! child process without the authkey: the proxy's bytes carry such a descriptor, never the key.
//!
//! Every message is one postcard frame of ipc-core's [`Connection`]; the server caps a frame's
//! size before it allocates anything ([`DEFAULT_MAX_MESSAGE`], configurable), and a frame that
//! does not decode ends that connection only.
//!
//! # Sessions and references
//! A session is one client process's standing with the server: the objects it references (a
//! count per object) and the locks it holds. A process may use several connections of one
//! session (one per thread that blocks). The session ends when its last connection closes,
//! whether the client shut down or was killed: its references are released (an object nobody
//! references is freed) and its locks are released as *owner died* for the next holder.
//!
//! ```text
//! object states:  created (one reference, by its creator's session)
//!   --Share/Claim, Lookup--> more references --Release/session end--> fewer
//!   --last reference gone--> freed (a later call naming it: Fault::NoSuchObject)
//! ```
//!
//! Values are postcard bytes that the server stores and compares but never interprets: keys
//! compare by their encoding (equal values of the usual key types, integers, strings, tuples,
//! encode equally). The only code the server runs for a client is a [`RemoteFn`] of the server's
//! own executable ([`Op::Apply`]), identified by ipc-core's function handle; a client built as
//! another binary gets [`Fault::Function`] for it, never a jump to a foreign address.

use ipc_core::conn::Connection;
use ipc_core::process::RemoteFn;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The protocol version; a client and a server of different versions refuse each other in the
/// hello.
pub(crate) const VERSION: u32 = 1;

/// The largest frame the server accepts by default (64 MiB); a larger one ends the connection.
pub const DEFAULT_MAX_MESSAGE: u64 = 64 << 20;

/// How long a token from [`Op::Share`] can be claimed.
pub(crate) const LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// The object id that names the manager itself.
pub(crate) const MANAGER: u64 = 0;

/// An encoded value, key or item.
pub(crate) type Blob = ByteBuf;

/// A session's secret: joining it from another connection takes the id and this.
pub(crate) type Ticket = [u8; 16];

/// The client's first message on a connection it opened.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Hello {
    /// A new session.
    New { version: u32 },
    /// Another connection of an existing session.
    Join {
        version: u32,
        session: u64,
        ticket: Ticket,
    },
}

/// The server's answer to a [`Hello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Welcome {
    pub version: u32,
    pub session: u64,
    pub ticket: Ticket,
    pub pid: u32,
}

/// One call: an operation on an object ([`MANAGER`] for the manager's own).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub obj: u64,
    pub op: Op,
}

/// What an object is, with what it starts with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Init {
    Dict,
    List(Vec<Blob>),
    Namespace,
    Value(Blob),
    Array(Vec<Blob>),
    Queue { maxsize: u64, joinable: bool },
    Lock { reentrant: bool },
    Semaphore { value: u64, bounded: bool },
    Event,
    Condition { lock: Option<u64> },
    Barrier { parties: u64 },
}

/// A server-side update: the function the server runs under the object's lock, and the
/// operand it is given beside the current value. The function is
/// `fn((Option<Blob>, Blob)) -> Result<Option<Blob>, String>`: from the current encoding (none
/// for an absent key) to the new one (none removes the key), or a message for the caller.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Update {
    /// An [`UpdateFn`], encoded apart so that the server can refuse one that is not of its
    /// executable with [`Fault::Function`] instead of failing the whole frame.
    pub f: Blob,
    pub operand: Blob,
}

/// The function of an [`Update`], as the client writes it.
pub(crate) type ServerFn = fn((Option<Blob>, Blob)) -> Result<Option<Blob>, String>;

/// The function of an [`Update`], as it travels.
pub(crate) type UpdateFn = RemoteFn<(Option<Blob>, Blob), Result<Option<Blob>, String>>;

/// The operations. Each kind of object accepts its own; any other is [`Fault::NoSuchMethod`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    // The manager's.
    /// A new object, referenced once by the caller's session.
    Create(Init),
    /// One reference fewer.
    Release,
    /// A connection made by the server, handed over as a descriptor (Unix sockets only): of
    /// the caller's session, or of a new session.
    Split {
        same_session: bool,
    },
    /// A one-time token that gives one reference to each of these objects (which the caller
    /// references) to the session that claims it within [`LEASE`].
    Share(Vec<u64>),
    /// Takes the references of a token from `Share`.
    Claim(Ticket),
    /// Gives `obj` a name any client can look up; the name holds a reference until
    /// unpublished or replaced.
    Publish(String),
    /// Removes a name (the manager's op).
    Unpublish(String),
    /// The object of a name, with one more reference for the caller's session.
    Lookup(String),
    /// The server's counters.
    Stats,
    /// Stop the server (it exits with code 0 once its connections are closed).
    Shutdown,

    // Keyed objects (Dict, Namespace); Value and sequences use `None`/index forms below.
    Get(Blob),
    Insert(Blob, Blob),
    Remove(Blob),
    Contains(Blob),
    SetDefault(Blob, Blob),
    Extend(Vec<(Blob, Blob)>),
    Keys,
    Values,
    Items,

    // Every container.
    Len,
    Clear,
    /// Replace the value at `at` (a key, an index, or nothing for a Value) with `new` if its
    /// encoding is `expected` (`None`: absent).
    CompareSet {
        at: At,
        expected: Option<Blob>,
        new: Option<Blob>,
    },
    /// Run an update under the object's lock.
    Apply {
        at: At,
        update: Update,
    },

    // Sequences (List, Array) and Value.
    Load,
    Store(Blob),
    Index(i64),
    SetIndex(i64, Blob),
    Slice {
        start: i64,
        stop: i64,
    },
    Push(Blob),
    Append(Vec<Blob>),
    Pop(Option<i64>),
    InsertAt(i64, Blob),

    // Queues.
    Put {
        item: Blob,
        timeout_ms: Option<u64>,
    },
    Take {
        timeout_ms: Option<u64>,
    },
    Full,
    TaskDone,
    Join {
        timeout_ms: Option<u64>,
    },

    // Locks, semaphores, conditions, events, barriers.
    Acquire {
        timeout_ms: Option<u64>,
        owner: u64,
    },
    ReleaseLock {
        owner: u64,
    },
    SetFlag,
    ClearFlag,
    IsSet,
    Wait {
        timeout_ms: Option<u64>,
        owner: u64,
    },
    Notify {
        n: u64,
        owner: u64,
    },
    Abort,
    Reset,
    Describe,
}

impl Op {
    /// Whether the call may wait on the server (for a client: not on a connection that others
    /// need soon).
    pub(crate) fn blocks(&self) -> bool {
        match self {
            Op::Put { timeout_ms, .. }
            | Op::Take { timeout_ms }
            | Op::Acquire { timeout_ms, .. } => *timeout_ms != Some(0),
            Op::Join { .. } | Op::Wait { .. } => true,
            _ => false,
        }
    }
}

/// Where in an object an update or compare-and-set applies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum At {
    /// The whole object (a Value).
    Whole,
    /// A key (Dict, Namespace).
    Key(Blob),
    /// An index (List, Array); negative counts from the end.
    Index(i64),
}

/// A successful reply.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Out {
    Unit,
    Object(u64),
    Blob(Blob),
    Maybe(Option<Blob>),
    Blobs(Vec<Blob>),
    Pairs(Vec<(Blob, Blob)>),
    Count(u64),
    Flag(bool),
    /// A compare-and-set's outcome: swapped, or the current encoding.
    Swap(Result<(), Option<Blob>>),
    /// An update's outcome: the encodings before and after.
    Updated(Option<Blob>, Option<Blob>),
    Conn(Connection),
    Token(Ticket),
    /// A looked-up object: its id and kind.
    Named {
        obj: u64,
        kind: String,
    },
    Stats(crate::Stats),
    /// A lock's, semaphore's or barrier's counters (see each object's `Describe`).
    Counts(Vec<u64>),
}

/// Why a call failed on the server. Each becomes an [`Error`](crate::Error) in the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Fault {
    /// The protocol versions differ.
    Version { server: u32 },
    /// A `Join` named a session that does not exist (or with the wrong ticket).
    NoSuchSession,
    /// The object was freed (or never existed).
    NoSuchObject(u64),
    /// The object has no such operation.
    NoSuchMethod { kind: String, op: String },
    /// No object is published under this name.
    NoSuchName(String),
    /// An index outside the sequence.
    IndexOutOfRange { index: i64, len: u64 },
    /// A blocking call's timeout passed.
    Timeout,
    /// A non-blocking get on an empty queue.
    Empty,
    /// A non-blocking put on a full queue.
    Full,
    /// The lock was held by a session that ended (its process died): the caller holds it now.
    OwnerDied,
    /// Release of a lock the caller does not hold, or of a semaphore past its bound, or
    /// `task_done` more times than items were put.
    NotHeld(String),
    /// The barrier is broken (aborted, or a party timed out or died).
    Broken,
    /// The update function panicked or returned an error; the value is unchanged.
    Function(String),
    /// A misuse the server refuses with this message.
    Refused(String),
    /// The server is shutting down.
    ShuttingDown,
}
