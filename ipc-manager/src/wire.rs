//! The manager's wire protocol: what a client and the server say to each other.
//!
//! ```text
//! client                                   server (one thread per connection)
//!   connect ── ipc-core HMAC handshake, both ways (Listener/connect) ──> accepted
//!   Hello::New{version} or Hello::Join{version, session, ticket} ──>
//!                    <── Result<Welcome{version, session, ticket, server}, Fault>
//!   Request{obj, op} ──>                                     (strictly alternating:
//!                    <── Result<Out, Fault>                   one request, one reply)
//!   ... until either side closes the socket
//! ```
//! # The shared-memory path
//! A client on the same host (a Unix socket) moves its connection's calls to shared memory
//! with [`Op::Fast`]: two of ipc-sync's queues, requests and replies, in memory both
//! processes map, woken by futexes.
//! ```text
//! client  Request --requests queue--> server's fast thread (one per such connection)
//!         <--replies queue-- Result<Out, Fault>             (still one call at a time)
//! socket  stays open: the server's socket thread reads `Split`/`Fast` (descriptors) and end
//!         of file; at end of file it shuts the requests queue down, which ends the fast
//!         thread, and the connection leaves its session as before
//! waits   the client waits for a reply in slices of 100 ms and looks at the socket between
//!         them: a dead server (its socket closed by the kernel) is ServerGone within one
//!         slice; the server's blocked calls look at the socket as on the socket path
//! ```
//!
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
//! # Values, and proxies inside them
//! Keys are postcard bytes. A value (an item, an element, a stored value) is an [`Item`]: the
//! ids of the objects whose proxies it holds, then the value's postcard bytes, in which each
//! such proxy is `Held{obj}` (a proxy that travels to a process is `Travel{..}` instead):
//! ```text
//! item:  varint n, n x varint object id, postcard bytes     (n = 0 for a plain value: 1 byte)
//! ```
//! The server stores and compares values as bytes and never interprets them: keys compare by
//! their encoding (equal values of the usual key types, integers, strings, tuples, encode
//! equally). It reads only an item's ids, and the ownership rule for proxies in transit is:
//! ```text
//! stored    an item's ids must name live objects of this server: the item holds one
//!           reference to each for as long as it is stored (overwritten, removed, taken from a
//!           queue, its container freed -> the references go)
//! read      an item returned by a call gives the caller's session one reference per id
//!           before the reply leaves; the client turns each into a proxy, and releases the
//!           ones the value it decodes does not use
//! sent      a proxy sent to a process holds a reference in a Share lease until claimed
//! ```
//! So an object is never freed while a stored value, a reply or a lease names it, and is freed
//! once none does. A container that holds itself (directly or through others) is freed only
//! when the server stops.
//! The only code the server runs for a client is a [`RemoteFn`] of the server's
//! own executable ([`Op::Apply`]), identified by ipc-core's function handle; a client built as
//! another binary gets [`Fault::Function`] for it, never a jump to a foreign address.

use ipc_core::conn::Connection;
use ipc_core::process::RemoteFn;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The protocol version; a client and a server of different versions refuse each other in the
/// hello.
pub(crate) const VERSION: u32 = 2;

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
    pub server: ServerId,
}

/// Which server: its process, and a random number drawn when it was bound (two servers of one
/// process differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServerId {
    pub pid: u32,
    pub instance: u64,
}

/// A value as it travels and is stored: see [`item_ids`].
pub(crate) type Item = Blob;

/// The item of a value whose postcard bytes are `bytes` and which holds the proxies of
/// `ids` (the one place an item's header is written; [`item_ids`] reads it).
pub(crate) fn item(ids: impl ExactSizeIterator<Item = u64>, bytes: &[u8]) -> Item {
    let mut item = Vec::with_capacity(bytes.len() + 1 + 10 * ids.len());
    put_varint(&mut item, ids.len() as u64);
    for id in ids {
        put_varint(&mut item, id);
    }
    item.extend_from_slice(bytes);
    Blob::from(item)
}

/// An item built in place: `buf` starts as the header of an item without proxies, the value's
/// bytes are appended to it, and [`finish_item`] puts the real header in (a copy only when the
/// value holds proxies).
pub(crate) fn item_buffer() -> Vec<u8> {
    vec![0]
}

/// The item of a buffer from [`item_buffer`] whose value holds the proxies of `ids`.
pub(crate) fn finish_item(buf: Vec<u8>, ids: impl ExactSizeIterator<Item = u64>) -> Item {
    if ids.len() == 0 {
        Blob::from(buf)
    } else {
        item(ids, &buf[1..])
    }
}

/// Appends `n` as a LEB128 varint (postcard's integer encoding).
fn put_varint(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// A LEB128 varint at the start of `bytes`, and the bytes after it.
fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

/// The object ids at the head of an item, and its postcard bytes; `None` for bytes that are
/// not an item.
pub(crate) fn item_ids(item: &[u8]) -> Option<(Vec<u64>, &[u8])> {
    let (n, mut rest) = take_varint(item)?;
    if n == 0 {
        return Some((Vec::new(), rest));
    }
    // Each id takes at least one byte: a count beyond the bytes left is garbage.
    if n > rest.len() as u64 {
        return None;
    }
    let mut ids = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (id, r) = take_varint(rest)?;
        ids.push(id);
        rest = r;
    }
    Some((ids, rest))
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
    /// Members are keys (plain bytes); each value is the empty item.
    Set,
    List(Vec<Item>),
    Namespace,
    Value(Item),
    Array(Vec<Item>),
    Queue {
        maxsize: u64,
        joinable: bool,
    },
    Lock {
        reentrant: bool,
    },
    Semaphore {
        value: u64,
        bounded: bool,
    },
    Event,
    Condition {
        lock: Option<u64>,
    },
    Barrier {
        parties: u64,
    },
    /// A registered custom type, from its state (postcard, no proxies inside).
    Custom {
        name: String,
        state: Blob,
    },
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
    /// Moves this connection's calls to shared memory (Unix sockets only): the client's
    /// requests come through `requests`, the replies go through `replies`; the socket stays
    /// for liveness (its end of file ends the path) and for operations that carry descriptors.
    Fast {
        requests: ipc_sync::Queue<Request>,
        replies: ipc_sync::Queue<Result<Out, Fault>>,
    },
    /// Stop the server (it exits with code 0 once its connections are closed).
    Shutdown,

    // Keyed objects (Dict, Namespace): keys are plain postcard bytes, values are items.
    Get(Blob),
    Insert(Blob, Item),
    Remove(Blob),
    Contains(Blob),
    SetDefault(Blob, Item),
    Extend(Vec<(Blob, Item)>),
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
        expected: Option<Item>,
        new: Option<Item>,
    },
    /// Run an update under the object's lock.
    Apply {
        at: At,
        update: Update,
    },

    // Sequences (List, Array) and Value (`Remove` and `Contains` of a sequence take an item).
    Load,
    Store(Item),
    Index(i64),
    SetIndex(i64, Item),
    Slice {
        start: i64,
        stop: i64,
    },
    Push(Item),
    Append(Vec<Item>),
    Pop(Option<i64>),
    InsertAt(i64, Item),

    // Queues.
    Put {
        item: Item,
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

    // Custom types.
    /// Method `method` of version `version`, with its argument tuple; the reply is its
    /// result, an item.
    Invoke {
        method: String,
        version: u32,
        args: Blob,
    },
}

impl Op {
    /// Whether the call must go over the socket, not the shared-memory path: it carries
    /// descriptors (`Fast`) or its reply does (`Split`).
    pub(crate) fn needs_socket(&self) -> bool {
        matches!(self, Op::Split { .. } | Op::Fast { .. })
    }

    /// Caps how long the call may wait on the server at `t` (a call with a deadline); a
    /// nonzero `t` never becomes a poll.
    pub(crate) fn cap_timeout(&mut self, t: std::time::Duration) {
        let ms = u64::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        match self {
            Op::Put { timeout_ms, .. }
            | Op::Take { timeout_ms }
            | Op::Join { timeout_ms }
            | Op::Acquire { timeout_ms, .. }
            | Op::Wait { timeout_ms, .. } => {
                *timeout_ms = Some(timeout_ms.map_or(ms, |m| m.min(ms)));
            }
            _ => {}
        }
    }

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
    Blob(Item),
    Maybe(Option<Item>),
    /// Items, or the keys of `Keys`.
    Blobs(Vec<Blob>),
    /// Keys and their items.
    Pairs(Vec<(Blob, Item)>),
    Count(u64),
    Flag(bool),
    /// A compare-and-set's outcome: swapped, or the current encoding.
    Swap(Result<(), Option<Item>>),
    /// An update's outcome: the encodings before and after.
    Updated(Option<Item>, Option<Item>),
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
    /// No custom type of this name is registered in the server's process.
    NoSuchType(String),
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
