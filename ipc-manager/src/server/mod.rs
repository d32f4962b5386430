//! The server: a listener, one thread per connection, the objects and the sessions.
//!
//! ```text
//! accept thread:  Listener::accept (HMAC handshakes run concurrently) -> a connection thread
//! connection:     Hello -> session (new or joined)
//!                 loop { Request -> dispatch -> Reply }         (blocking calls block only here)
//!                 Op::Fast -> a second thread serves the connection's shared-memory queues
//!                 end of file / error -> the queues are shut down (their thread ends), the
//!                 connection leaves its session
//! session end:    its last connection left -> each object it referenced: locks it held are
//!                 released as owner-died, its references dropped, unreferenced objects freed
//! shutdown:       Op::Shutdown replied -> `stopping` set -> the listening socket is shut
//!                 down (accept wakes, fails) -> every connection's socket is shut down (their
//!                 threads see end of file, blocked calls see `stopping`) -> threads joined ->
//!                 `serve` returns (a started manager's server process then exits with 0)
//! ```
//! At rest every thread sleeps in `accept` or `recv`: the server costs no CPU. A thread blocked
//! in a call (a queue get, a lock acquire) wakes every [`HANGUP_CHECK`] to see whether its
//! client is gone or the server stops, so a killed client never leaves a waiter behind.
//!
//! Lock order: `Shared::sessions` before a `Session`; an object's own lock before a `Session`
//! (an operation gives its caller references) and before the `Registry` (it looks up the ids
//! of an item it stores). Nothing drops an object with the `Registry` locked (its `Drop` takes
//! that lock).

mod objects;
mod sync;

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ipc_core::conn::{Address, Connection, Listener};
use parking_lot::{Condvar, Mutex};

use crate::Stats;
use crate::error::{Error, Result};
use crate::wire::{
    self, Fault, Hello, Init, Item, MANAGER, Op, Out, Request, ServerId, Ticket, Welcome,
};
pub(crate) use objects::{Object, Registry, Stored};

/// How often a call blocked on the server checks that its client is still there.
pub(crate) const HANGUP_CHECK: Duration = Duration::from_millis(50);

/// How long a stopping server waits for its connections' threads to end.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// How long a connection may stay silent before its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves a manager at `address` for clients that know `authkey`, in the calling thread, until
/// a client asks for shutdown: [`Server::bind`] then [`Server::serve`] (bind first to learn a
/// TCP port picked by the kernel).
pub fn serve(address: &Address, authkey: &[u8]) -> Result<()> {
    Server::bind(address, authkey)?.serve()
}

/// A manager server bound to its address, not yet serving.
///
/// [`Manager::start`](crate::Manager::start) runs one in a child process; `Server` runs one in
/// the calling thread, for a standalone server that clients reach with
/// [`Manager::connect`](crate::Manager::connect).
///
/// ```
/// use ipc_manager::{Manager, Server};
/// let server = Server::bind(&"127.0.0.1:0".parse()?, b"secret")?;
/// let address = server.address().clone();
/// let serving = std::thread::spawn(move || server.serve());
///
/// let m = Manager::connect(&address, b"secret")?;
/// let d = m.dict::<String, u32>()?;
/// d.insert("answer".into(), 42)?;
/// assert_eq!(d.get("answer")?, Some(42));
/// m.shutdown()?; // asks the server to stop: `serve` returns
/// serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server {
    listener: Listener,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", self.listener.address())
            .finish_non_exhaustive()
    }
}

/// What every thread of the server shares.
pub(crate) struct Shared {
    /// A duplicate of the listening socket: `stop` shuts it down to wake the accept loop.
    listening: OwnedFd,
    max_message: u64,
    /// Which server this is (a proxy may be stored only in objects of its own server).
    id: ServerId,
    stopping: AtomicBool,
    /// Whether local clients may move their calls to shared memory (`Op::Fast`).
    shared_memory: AtomicBool,
    next_id: AtomicU64,
    /// Every live object by id.
    registry: Arc<Registry>,
    sessions: Mutex<HashMap<u64, Arc<Mutex<Session>>>>,
    /// A duplicate of each live connection's socket, to shut it down when the server stops.
    sockets: Mutex<HashMap<u64, OwnedFd>>,
    /// Notified when a connection's thread ends (its socket leaves `sockets`).
    closed: Condvar,
    calls: AtomicU64,
    socket_calls: AtomicU64,
    shared_memory_calls: AtomicU64,
    /// Tokens from `Share`, not yet claimed: their references and when they lapse.
    leases: Mutex<HashMap<Ticket, Lease>>,
    /// Published names and their objects (each holds one reference).
    names: Mutex<HashMap<String, (u64, Arc<Object>)>>,
}

/// The references a `Share` token gives, and when it lapses.
type Lease = (Vec<(u64, Arc<Object>)>, std::time::Instant);

/// One client process's standing with the server (see the crate's protocol notes).
pub(crate) struct Session {
    id: u64,
    ticket: Ticket,
    conns: usize,
    /// The objects this session references, and how many times.
    refs: HashMap<u64, (Arc<Object>, u64)>,
}

/// What a call needs to know about who makes it.
pub(crate) struct Caller<'a> {
    pub shared: &'a Arc<Shared>,
    /// The caller's session id (the owner of the locks it takes).
    pub session: u64,
    table: &'a Arc<Mutex<Session>>,
    /// The connection's socket (the shared-memory path's thread looks at it too).
    conn: std::os::fd::BorrowedFd<'a>,
}

impl Caller<'_> {
    /// An item to store: the objects it names, each referenced while it is stored.
    pub(crate) fn hold(&self, item: Item) -> Result<Stored, Fault> {
        let Some((ids, _)) = wire::item_ids(&item) else {
            return Err(Fault::Refused("a value without its item header".into()));
        };
        if ids.is_empty() {
            return Ok(Stored {
                bytes: item,
                held: Vec::new(),
            });
        }
        let held = ids
            .iter()
            .map(|id| lookup(self.shared, *id))
            .collect::<Result<Vec<_>, Fault>>()?;
        Ok(Stored { bytes: item, held })
    }

    /// A new object, referenced by nobody yet (a custom type's method makes it and holds it).
    pub(crate) fn create(&self, init: Init) -> Result<Arc<Object>, Fault> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        Object::create(self, id, init, None)
    }

    /// A stored value for the reply: the caller's session gets a reference to each object it
    /// names, which the client's proxies then own.
    pub(crate) fn give(&self, stored: &Stored) -> Item {
        if !stored.held.is_empty() {
            let mut s = self.table.lock();
            for object in &stored.held {
                s.refs
                    .entry(object.id)
                    .or_insert_with(|| (Arc::clone(object), 0))
                    .1 += 1;
            }
        }
        stored.bytes.clone()
    }

    /// Whether a blocked call should give up: the client hung up (or broke the protocol by
    /// sending while it waits) or the server stops.
    pub(crate) fn abandoned(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed) || {
            // Readable: end of file (the client hung up) or a request sent mid-call.
            let mut fds = [rustix::event::PollFd::new(
                &self.conn,
                rustix::event::PollFlags::IN,
            )];
            let now = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            rustix::event::poll(&mut fds, Some(&now)).map_or(true, |n| n > 0)
        }
    }
}

impl Server {
    /// Binds a server at `address` (Unix path, `@abstract` name or TCP `ip:port`; TCP port 0
    /// picks a free port, see [`address`](Self::address)); every client must prove it knows
    /// `authkey`.
    pub fn bind(address: &Address, authkey: &[u8]) -> Result<Server> {
        Server::bind_with(address, authkey, wire::DEFAULT_MAX_MESSAGE)
    }

    pub(crate) fn bind_with(address: &Address, authkey: &[u8], max_message: u64) -> Result<Server> {
        let listener = Listener::bind(address, Some(authkey))?;
        let listening = listener
            .as_fd()
            .try_clone_to_owned()
            .map_err(ipc_core::Error::Io)?;
        let mut instance = [0u8; 8];
        getrandom::fill(&mut instance).expect("the kernel's random source is unavailable");
        Ok(Server {
            shared: Arc::new(Shared {
                id: ServerId {
                    pid: std::process::id(),
                    instance: u64::from_ne_bytes(instance),
                },
                listening,
                max_message,
                stopping: AtomicBool::new(false),
                shared_memory: AtomicBool::new(true),
                next_id: AtomicU64::new(1),
                registry: Arc::new(Mutex::new(HashMap::new())),
                sessions: Mutex::new(HashMap::new()),
                sockets: Mutex::new(HashMap::new()),
                closed: Condvar::new(),
                calls: AtomicU64::new(0),
                socket_calls: AtomicU64::new(0),
                shared_memory_calls: AtomicU64::new(0),
                leases: Mutex::new(HashMap::new()),
                names: Mutex::new(HashMap::new()),
            }),
            listener,
        })
    }

    /// Serves `conn`, the pipe a started manager's owner made before the server existed
    /// (never reachable by anyone else: no handshake), in a new session, after sending the
    /// owner `Ok((address, welcome))` on it.
    pub(crate) fn adopt_owner(&self, conn: Connection) -> Result<()> {
        let session = new_session(&self.shared);
        let welcome = welcome(&self.shared, &session);
        conn.send(&Ok::<_, String>((self.address().to_string(), welcome)))?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        spawn_conn(Arc::clone(&self.shared), id, conn, Some(session))
            .map_err(|e| Error::Refused(format!("no thread for the owner's connection: {e}")))?;
        Ok(())
    }

    /// Whether local clients (on a Unix socket) may move their calls to shared memory (the
    /// default), or must keep using their sockets (for measuring or debugging the socket
    /// path). Applies to connections that ask from now on.
    pub fn set_shared_memory_path(&self, allowed: bool) {
        self.shared.shared_memory.store(allowed, Ordering::Relaxed);
    }

    /// The address clients connect to (with the port the kernel picked for TCP port 0).
    pub fn address(&self) -> &Address {
        self.listener.address()
    }

    /// Serves until a client asks for shutdown ([`Manager::shutdown`](crate::Manager::shutdown)).
    /// Returns once every connection is closed.
    pub fn serve(self) -> Result<()> {
        while !self.shared.stopping.load(Ordering::Acquire) {
            let conn = match self.listener.accept() {
                Ok(conn) => conn,
                // A client that failed its handshake (wrong key, garbage, silence): its
                // socket is closed; others carry on.
                Err(ipc_core::Error::Authentication(_) | ipc_core::Error::Timeout) => continue,
                Err(ipc_core::Error::Io(e)) if e.raw_os_error() == Some(libc_emfile()) => {
                    // Out of descriptors: let connections close, then accept again.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(e) if self.shared.stopping.load(Ordering::Acquire) => {
                    drop(e);
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            if self.shared.stopping.load(Ordering::Acquire) {
                break;
            }
            // Without a thread for it, the connection is closed: the client sees the error.
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            let _ = spawn_conn(Arc::clone(&self.shared), id, conn, None);
        }
        // Stop: every connection sees end of file (a call blocked on the server sees
        // `stopping` within HANGUP_CHECK); wait for their threads, a bounded time.
        let deadline = std::time::Instant::now() + STOP_WAIT;
        let mut sockets = self.shared.sockets.lock();
        while !sockets.is_empty() {
            for fd in sockets.values() {
                let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
            }
            if self
                .shared
                .closed
                .wait_until(&mut sockets, deadline)
                .timed_out()
            {
                break;
            }
        }
        Ok(())
    }
}

fn libc_emfile() -> i32 {
    rustix::io::Errno::MFILE.raw_os_error()
}

/// Starts the thread that serves one connection; `session` is set for a connection the server
/// made itself (`Split`), which skips the hello.
fn spawn_conn(
    shared: Arc<Shared>,
    id: u64,
    conn: Connection,
    session: Option<Arc<Mutex<Session>>>,
) -> std::io::Result<()> {
    conn.set_max_message_size(shared.max_message);
    if let Ok(dup) = conn.as_fd().try_clone_to_owned() {
        shared.sockets.lock().insert(id, dup);
    }
    let spawned = std::thread::Builder::new()
        .name(format!("ipc-manager-conn-{id}"))
        .spawn({
            let shared = Arc::clone(&shared);
            move || {
                serve_conn(&shared, conn, session);
                shared.sockets.lock().remove(&id);
                shared.closed.notify_all();
            }
        });
    match spawned {
        Ok(_) => Ok(()), // detached: `serve` waits for its socket to leave `sockets`
        Err(e) => {
            shared.sockets.lock().remove(&id);
            Err(e)
        }
    }
}

fn serve_conn(shared: &Arc<Shared>, conn: Connection, joined: Option<Arc<Mutex<Session>>>) {
    let session = match joined {
        Some(s) => s,
        None => match hello(shared, &conn) {
            Some(s) => s,
            None => return,
        },
    };
    let session_id = session.lock().id;
    let caller = Caller {
        shared,
        session: session_id,
        table: &session,
        conn: conn.as_fd(),
    };
    std::thread::scope(|scope| {
        // The connection's shared-memory path, once the client asks for it: shut down when
        // the socket ends, which ends its thread (joined by the scope).
        let mut fast: Option<FastPath> = None;
        loop {
            let req: Request = match conn.recv() {
                Ok(r) => r,
                Err(ipc_core::Error::Eof) => break,
                Err(e) => {
                    // Garbage, an oversize frame, a truncated one: say why, then hang up.
                    let _ = conn.send(&Err::<Out, _>(Fault::Refused(format!(
                        "the connection is closed: {e}"
                    ))));
                    break;
                }
            };
            shared.calls.fetch_add(1, Ordering::Relaxed);
            shared.socket_calls.fetch_add(1, Ordering::Relaxed);
            let reply = match req.op {
                Op::Fast { .. } if !shared.shared_memory.load(Ordering::Relaxed) => Err(
                    Fault::Refused("this server serves its clients over sockets only".into()),
                ),
                Op::Fast { requests, replies } if fast.is_none() => {
                    let path = FastPath {
                        requests: requests.clone(),
                        replies: replies.clone(),
                    };
                    let spawned = std::thread::Builder::new()
                        .name("ipc-manager-fast".into())
                        .spawn_scoped(scope, {
                            let caller = &caller;
                            let session = &session;
                            move || serve_fast(caller, session, &requests, &replies)
                        });
                    match spawned {
                        Ok(_) => {
                            fast = Some(path);
                            Ok(Out::Unit)
                        }
                        Err(e) => Err(Fault::Refused(format!("no thread for the path: {e}"))),
                    }
                }
                Op::Fast { .. } => Err(Fault::Refused(
                    "this connection has its shared-memory path already".into(),
                )),
                op => {
                    let stop = matches!((req.obj, &op), (MANAGER, Op::Shutdown));
                    let reply = dispatch(&caller, &session, Request { obj: req.obj, op });
                    if stop {
                        let _ = conn.send(&reply);
                        shared.stop();
                        continue;
                    }
                    reply
                }
            };
            if conn.send(&reply).is_err() {
                break;
            }
        }
        if let Some(path) = fast {
            path.requests.shutdown(true);
            path.replies.shutdown(true);
        }
    });
    leave(shared, &session);
}

/// A connection's shared-memory queues (see the wire notes).
struct FastPath {
    requests: ipc_sync::Queue<Request>,
    replies: ipc_sync::Queue<Result<Out, Fault>>,
}

/// Serves a connection's shared-memory path until its socket thread shuts it down.
fn serve_fast(
    caller: &Caller<'_>,
    session: &Arc<Mutex<Session>>,
    requests: &ipc_sync::Queue<Request>,
    replies: &ipc_sync::Queue<Result<Out, Fault>>,
) {
    let shared = caller.shared;
    loop {
        let reply = match requests.get() {
            Ok(req) => {
                shared.calls.fetch_add(1, Ordering::Relaxed);
                shared.shared_memory_calls.fetch_add(1, Ordering::Relaxed);
                let stop = matches!((req.obj, &req.op), (MANAGER, Op::Shutdown));
                let reply = if req.op.needs_socket() {
                    Err(Fault::Refused(
                        "this operation carries descriptors: it goes over the socket".into(),
                    ))
                } else {
                    dispatch(caller, session, req)
                };
                if stop {
                    let _ = replies.put(reply);
                    shared.stop();
                    continue;
                }
                reply
            }
            // A record that is not a request: say so (the client waits for an answer).
            Err(ipc_sync::GetError::Decode(e)) => Err(Fault::Refused(format!(
                "a request that does not decode: {e}"
            ))),
            // Shut down by the socket thread (the client hung up): done.
            Err(_) => return,
        };
        match replies.put(reply) {
            Ok(()) => {}
            Err(ipc_sync::PutError::Encode(_, e)) => {
                let why = Err(Fault::Refused(format!("the reply does not encode: {e}")));
                if replies.put(why).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

impl Shared {
    /// Marks the server as stopping and wakes its accept loop: a listening socket that is
    /// shut down polls readable and refuses `accept` (EINVAL), for Unix and TCP alike.
    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _ = rustix::net::shutdown(&self.listening, rustix::net::Shutdown::Both);
    }
}

/// Reads a connection's hello and puts it in its session.
fn hello(shared: &Shared, conn: &Connection) -> Option<Arc<Mutex<Session>>> {
    let hello: Hello = conn.recv_timeout(HELLO_TIMEOUT).ok()?;
    let (version, join) = match hello {
        Hello::New { version } => (version, None),
        Hello::Join {
            version,
            session,
            ticket,
        } => (version, Some((session, ticket))),
    };
    if version != wire::VERSION {
        let _ = conn.send(&Err::<Welcome, _>(Fault::Version {
            server: wire::VERSION,
        }));
        return None;
    }
    let session = match join {
        None => new_session(shared),
        Some((id, ticket)) => {
            let found = shared.sessions.lock().get(&id).cloned();
            match found {
                Some(s) if s.lock().ticket == ticket => {
                    s.lock().conns += 1;
                    s
                }
                _ => {
                    let _ = conn.send(&Err::<Welcome, _>(Fault::NoSuchSession));
                    return None;
                }
            }
        }
    };
    if conn
        .send(&Ok::<_, Fault>(welcome(shared, &session)))
        .is_err()
    {
        leave(shared, &session);
        return None;
    }
    Some(session)
}

/// What a client learns of its session.
fn welcome(shared: &Shared, session: &Mutex<Session>) -> Welcome {
    let s = session.lock();
    Welcome {
        version: wire::VERSION,
        session: s.id,
        ticket: s.ticket,
        server: shared.id,
    }
}

/// A new session with one connection.
fn new_session(shared: &Shared) -> Arc<Mutex<Session>> {
    let mut ticket = [0u8; 16];
    getrandom::fill(&mut ticket).expect("the kernel's random source is unavailable");
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let s = Arc::new(Mutex::new(Session {
        id,
        ticket,
        conns: 1,
        refs: HashMap::new(),
    }));
    shared.sessions.lock().insert(id, Arc::clone(&s));
    s
}

/// A connection leaves its session; the last one ends it.
fn leave(shared: &Shared, session: &Arc<Mutex<Session>>) {
    let mut sessions = shared.sessions.lock();
    let mut s = session.lock();
    s.conns -= 1;
    if s.conns > 0 {
        return;
    }
    sessions.remove(&s.id);
    drop(sessions);
    let refs = std::mem::take(&mut s.refs);
    let id = s.id;
    drop(s);
    for (object, _) in refs.values() {
        object.session_ended(id);
    }
    // `refs` drops here, with nothing locked: objects nobody else references are freed.
}

/// Runs one request.
fn dispatch(
    caller: &Caller<'_>,
    session: &Arc<Mutex<Session>>,
    req: Request,
) -> Result<Out, Fault> {
    let out = apply(caller, session, req);
    ipc_core::failpoint::hit("manager.server.applied");
    out
}

/// Applies one request (see [`dispatch`]).
fn apply(caller: &Caller<'_>, session: &Arc<Mutex<Session>>, req: Request) -> Result<Out, Fault> {
    if req.obj == MANAGER {
        return manager_op(caller, session, req.op);
    }
    let object = session
        .lock()
        .refs
        .get(&req.obj)
        .map(|(o, _)| Arc::clone(o))
        .ok_or(Fault::NoSuchObject(req.obj))?;
    match req.op {
        Op::Publish(name) => {
            let old = caller.shared.names.lock().insert(name, (req.obj, object));
            drop(old); // its reference goes, with nothing locked
            Ok(Out::Unit)
        }
        Op::Release => {
            let mut s = session.lock();
            let gone = match s.refs.get_mut(&req.obj) {
                Some((_, n)) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => true,
            };
            if gone {
                s.refs.remove(&req.obj);
            }
            drop(s);
            if gone {
                object.session_ended(caller.session);
            }
            Ok(Out::Unit)
        }
        op => {
            // A panic in an object's code (a bug) must not take the server down with it.
            std::panic::catch_unwind(AssertUnwindSafe(|| object.call(caller, op)))
                .unwrap_or_else(|p| Err(Fault::Function(crate::error::panic_message(&*p))))
        }
    }
}

// A custom type's method result is encoded on the server: its `Ref`s become the item's ids,
// each held by the stored value while it is encoded (see `custom`).
thread_local! {
    static REPLY_HELD: std::cell::RefCell<Option<Vec<Arc<Object>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Called by a `Ref` being serialized: holds its object for the item being encoded.
pub(crate) fn hold_in_reply(object: &Arc<Object>) -> std::result::Result<(), &'static str> {
    REPLY_HELD
        .try_with(|h| match &mut *h.borrow_mut() {
            Some(held) => {
                held.push(Arc::clone(object));
                Ok(())
            }
            None => Err("a Ref can travel only inside a method's result or a Context's object"),
        })
        .unwrap_or(Err("the thread is exiting"))
}

/// `value` as a stored value made on the server: its `Ref`s become references.
pub(crate) fn encode_stored<T: serde::Serialize + ?Sized>(
    value: &T,
) -> std::result::Result<Stored, String> {
    let before = REPLY_HELD.replace(Some(Vec::new()));
    let mut buf = wire::item_buffer();
    let res = ipc_core::codec::encode_plain(value, &mut buf);
    let held = REPLY_HELD.replace(before).unwrap_or_default();
    res.map_err(|e| format!("the result does not encode: {e}"))?;
    Ok(Stored {
        bytes: wire::finish_item(buf, held.iter().map(|o| o.id)),
        held,
    })
}

/// `value` as an item made on the server (the caller keeps `value`, and so its `Ref`s, until
/// the item is stored).
pub(crate) fn encode_item<T: serde::Serialize + ?Sized>(
    value: &T,
) -> std::result::Result<Item, String> {
    encode_stored(value).map(|s| s.bytes.clone())
}

/// One more reference to `obj` by `session`.
fn retain(session: &Mutex<Session>, obj: u64, object: Arc<Object>) {
    session
        .lock()
        .refs
        .entry(obj)
        .or_insert_with(|| (object, 0))
        .1 += 1;
}

/// The live object `obj` of this server.
fn lookup(shared: &Shared, obj: u64) -> Result<Arc<Object>, Fault> {
    let found = shared
        .registry
        .lock()
        .get(&obj)
        .and_then(std::sync::Weak::upgrade);
    found.ok_or(Fault::NoSuchObject(obj))
}

fn manager_op(caller: &Caller<'_>, session: &Arc<Mutex<Session>>, op: Op) -> Result<Out, Fault> {
    let shared = caller.shared;
    match op {
        Op::Create(init) => {
            let lock = match &init {
                Init::Condition { lock: Some(l) } => Some(lookup(shared, *l)?),
                _ => None,
            };
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            let object = Object::create(caller, id, init, lock)?;
            retain(session, id, object);
            Ok(Out::Object(id))
        }
        Op::Split { same_session } => {
            if !carries_descriptors(caller.conn) {
                return Err(Fault::Refused(
                    "a connection cannot be handed over a TCP socket".into(),
                ));
            }
            let (ours, theirs) =
                ipc_core::conn::pipe().map_err(|e| Fault::Refused(e.to_string()))?;
            let s = if same_session {
                session.lock().conns += 1;
                Arc::clone(session)
            } else {
                new_session(shared)
            };
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = spawn_conn(Arc::clone(shared), id, ours, Some(Arc::clone(&s))) {
                leave(shared, &s);
                return Err(Fault::Refused(format!("no thread for a connection: {e}")));
            }
            Ok(Out::Conn(theirs))
        }
        Op::Share(objs) => {
            let mut taken = Vec::with_capacity(objs.len());
            {
                let s = session.lock();
                for obj in objs {
                    let (o, _) = s.refs.get(&obj).ok_or(Fault::NoSuchObject(obj))?;
                    taken.push((obj, Arc::clone(o)));
                }
            }
            let mut token = [0u8; 16];
            getrandom::fill(&mut token).expect("the kernel's random source is unavailable");
            let now = std::time::Instant::now();
            let mut leases = shared.leases.lock();
            // Lapsed leases give their references back (dropped once nothing is locked).
            let lapsed: Vec<Lease> = leases
                .extract_if(|_, (_, until)| *until <= now)
                .map(|(_, lease)| lease)
                .collect();
            leases.insert(token, (taken, now + wire::LEASE));
            drop(leases);
            drop(lapsed);
            Ok(Out::Token(token))
        }
        Op::Claim(token) => {
            let (objs, _) = shared
                .leases
                .lock()
                .remove(&token)
                .ok_or_else(|| Fault::Refused("no such token (claimed, or lapsed)".into()))?;
            // The lease's references become the session's.
            let mut s = session.lock();
            for (obj, object) in objs {
                s.refs.entry(obj).or_insert_with(|| (object, 0)).1 += 1;
            }
            Ok(Out::Unit)
        }
        Op::Unpublish(name) => {
            let old = shared.names.lock().remove(&name);
            Ok(Out::Flag(old.is_some()))
        }
        Op::Lookup(name) => {
            let found = shared.names.lock().get(&name).cloned();
            let (obj, object) = found.ok_or(Fault::NoSuchName(name))?;
            let kind = object.kind().to_string();
            retain(session, obj, object);
            Ok(Out::Named { obj, kind })
        }
        Op::Stats => Ok(Out::Stats(Stats {
            objects: shared.registry.lock().len() as u64,
            sessions: shared.sessions.lock().len() as u64,
            connections: shared.sockets.lock().len() as u64,
            calls: shared.calls.load(Ordering::Relaxed),
            socket_calls: shared.socket_calls.load(Ordering::Relaxed),
            shared_memory_calls: shared.shared_memory_calls.load(Ordering::Relaxed),
            pid: shared.id.pid,
        })),
        Op::Shutdown => Ok(Out::Unit),
        other => Err(Fault::NoSuchMethod {
            kind: "manager".into(),
            op: op_name(&other),
        }),
    }
}

/// Whether a connection can carry descriptors (a Unix socket, not TCP).
fn carries_descriptors(conn: impl AsFd) -> bool {
    rustix::net::sockopt::socket_domain(conn) == Ok(rustix::net::AddressFamily::UNIX)
}

/// The name of an operation, for errors.
pub(crate) fn op_name(op: &Op) -> String {
    let dbg = format!("{op:?}");
    dbg.split(['(', ' ', '{']).next().unwrap_or("").to_string()
}

impl From<ipc_core::Error> for Fault {
    fn from(e: ipc_core::Error) -> Fault {
        Fault::Refused(e.to_string())
    }
}
