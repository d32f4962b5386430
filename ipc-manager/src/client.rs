//! The client side: a process's connections to one server, and the handle a proxy holds.
//!
//! ```text
//! Client (one per Manager, or per proxy received from another process)
//!   control    the first connection; calls that cannot block use it when it is free
//!   idle       more connections of the same session, for calls that block (a queue get, a
//!              lock acquire) and for threads that find `control` busy; each goes back after
//!              its call. A new one comes from the authkey (connect + Hello::Join) or, for a
//!              client that has no key, from the server over `control` (Op::Split, Unix only)
//! Handle     (object id, Client): what a proxy and its clones share; dropped -> Op::Release
//! ```
//! A call with a deadline (a proxy's `with_timeout`) caps the timeout of a call that blocks on
//! the server, so the server answers by the deadline; if no answer came [`GRACE`] after it
//! (the server is stopped, swamped or gone), the call is `Error::Timeout` with its outcome
//! unknown, and the connection is not used again (an idle one is closed; the control
//! connection, which holds the session when it is the only one, skips the late answer before
//! its next call).
//! A proxy serializes in one of three ways, by what the thread is doing ([`Mode`]):
//! ```text
//! Travel  (default: a process argument, a Connection message) a connection of a *new*
//!         session, given a reference through Share/Claim, travels as a descriptor (never the
//!         key): Wire::Travel{obj, server, conn}
//! Store   (Client::store: a value for the server to keep) Wire::Held(obj), and the id joins
//!         the item's header (see the wire notes); a proxy of another server is refused
//! Plain   (a key, an update's operand) refused: the server compares keys as bytes and cannot
//!         decode a proxy
//! ```
//! and decodes `Held(obj)` only in Client::load, which turns the item's header into handles
//! first (the server gave the session a reference for each) and releases those the value
//! does not take.
//!
//! A client belongs to the process that made it: a copy inherited through `fork` would share
//! sockets with its parent, so it refuses to call (proxies travel as arguments instead, which
//! gives the child connections of its own).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipc_core::conn::{Address, Connection};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::link::{self, GRACE, Late, Link};
use crate::wire::{
    self, Fault, Hello, Item, MANAGER, Op, Out, Request, ServerId, Welcome, item_ids,
};

/// A process's connections to one server (cheap to clone).
#[derive(Clone)]
pub(crate) struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// The process these connections belong to.
    pid: u32,
    /// How to open another connection of this session: the address, the key, the session.
    reconnect: Option<Reconnect>,
    server: ServerId,
    control: Mutex<Link>,
    idle: Mutex<Vec<Link>>,
}

struct Reconnect {
    address: Address,
    authkey: Vec<u8>,
    welcome: Welcome,
}

impl Client {
    /// Connects to a server and opens a new session.
    pub(crate) fn connect(address: &Address, authkey: &[u8]) -> Result<Client> {
        let (conn, welcome) = open(
            address,
            authkey,
            Hello::New {
                version: wire::VERSION,
            },
            None,
        )?;
        Ok(Client::in_session(conn, address, authkey, welcome))
    }

    /// A client whose first connection `conn` is in the session `welcome` names (opened by
    /// `connect`, or the pipe a started manager's owner made), and that opens more with the
    /// key.
    pub(crate) fn in_session(
        conn: Connection,
        address: &Address,
        authkey: &[u8],
        welcome: Welcome,
    ) -> Client {
        Client {
            inner: Arc::new(Inner {
                pid: std::process::id(),
                server: welcome.server,
                reconnect: Some(Reconnect {
                    address: address.clone(),
                    authkey: authkey.to_vec(),
                    welcome,
                }),
                control: Mutex::new(Link::new(conn)),
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A client on a connection the server made (a proxy received from another process).
    fn adopt(conn: Connection, server: ServerId) -> Client {
        Client {
            inner: Arc::new(Inner {
                pid: std::process::id(),
                server,
                reconnect: None,
                control: Mutex::new(Link::new(conn)),
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    pub(crate) fn server_pid(&self) -> u32 {
        self.inner.server.pid
    }

    /// `value` as an item for this client's server to store (proxies of that server inside it
    /// become references).
    pub(crate) fn store<T: Serialize + ?Sized>(&self, value: &T) -> Result<Item> {
        self.store_with(|buf| Ok(ipc_core::codec::encode_plain(value, buf)?))
    }

    /// Each value as an item. The caller keeps `values` until the server has them: a proxy
    /// among them is what keeps its object alive until the server holds it.
    pub(crate) fn store_each<T: Serialize>(&self, values: &[T]) -> Result<Vec<Item>> {
        values.iter().map(|v| self.store(v)).collect()
    }

    /// An item for this client's server, encoded by `f` (appending to the buffer it is given):
    /// the proxies of that server it serializes become references.
    pub(crate) fn store_with(&self, f: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<Item> {
        let mut buf = wire::item_buffer();
        let guard = ModeGuard::set(Mode::Store {
            server: self.inner.server,
            ids: Vec::new(),
        });
        let res = f(&mut buf);
        let Mode::Store { ids, .. } = guard.finish() else {
            unreachable!("the mode is restored by its setter")
        };
        res.map_err(refusal)?;
        Ok(wire::finish_item(buf, ids.into_iter()))
    }

    /// A value from an item this client's server returned.
    pub(crate) fn load<T: DeserializeOwned>(&self, item: &[u8]) -> Result<T> {
        self.load_with(item, |bytes| Ok(ipc_core::codec::decode_plain(bytes)?))
    }

    /// Releases the references an item this client's server returned gave (every returned
    /// item is loaded or discarded).
    pub(crate) fn discard(&self, item: &[u8]) -> Result<()> {
        self.load_with(item, |_| Ok(()))
    }

    /// A value from an item this client's server returned, decoded by `f`: the proxies the
    /// item names are there for `f` to take; the ones it leaves are released.
    pub(crate) fn load_with<T>(
        &self,
        item: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        let (ids, bytes) = item_ids(item).ok_or_else(|| {
            Error::Refused("the server returned a value without its header".into())
        })?;
        if ids.is_empty() {
            return f(bytes);
        }
        let handles = ids
            .into_iter()
            .map(|obj| {
                Some(Handle {
                    client: self.clone(),
                    obj,
                })
            })
            .collect();
        let guard = ModeGuard::set(Mode::Load { handles });
        let res = f(bytes);
        let unused = guard.finish();
        drop(unused); // releases the references the value did not take
        res.map_err(refusal)
    }

    /// Whether this is the process the client was made in.
    fn check_process(&self) -> Result<()> {
        if std::process::id() == self.inner.pid {
            Ok(())
        } else {
            Err(Error::Refused(
                "this proxy was copied into a forked process, where its connections are \
                 its parent's; pass proxies to children as process arguments instead"
                    .into(),
            ))
        }
    }

    /// One call: the request, then its reply; by `timeout` from now, if given.
    pub(crate) fn call(&self, obj: u64, op: Op, timeout: Option<Duration>) -> Result<Out> {
        self.check_process()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut req = Request { obj, op };
        if let Some(t) = timeout {
            req.op.cap_timeout(t);
        }
        if deadline.is_none()
            && !req.op.blocks()
            && let Some(mut control) = self.inner.control.try_lock()
        {
            return control
                .call(req, None)
                .unwrap_or_else(|Late| Err(Error::Timeout));
        }
        let idle = self.inner.idle.lock().pop();
        let mut link = match idle {
            Some(l) => l,
            None => match self.open_more(deadline) {
                Ok(c) => Link::new(c),
                // No way to another connection (a key-less client over TCP): wait for the
                // first one (which skips a late answer before its next call).
                Err(Error::Refused(_)) => {
                    return self
                        .control(deadline)?
                        .call(req, deadline)
                        .unwrap_or_else(|Late| Err(Error::Timeout));
                }
                Err(e) => return Err(e),
            },
        };
        match link.call(req, deadline) {
            Ok(out) => {
                if !matches!(out, Err(Error::ServerGone(_) | Error::Core(_))) {
                    self.inner.idle.lock().push(link);
                }
                out
            }
            // The answer is still to come: the connection closes (the server's thread for it
            // ends when it has answered).
            Err(Late) => Err(Error::Timeout),
        }
    }

    /// The control connection, waited for until `deadline` (and [`GRACE`]) if given.
    fn control(&self, deadline: Option<Instant>) -> Result<parking_lot::MutexGuard<'_, Link>> {
        match deadline {
            None => Ok(self.inner.control.lock()),
            Some(d) => self
                .inner
                .control
                .try_lock_until(d + GRACE)
                .ok_or(Error::Timeout),
        }
    }

    /// Another connection of this session.
    fn open_more(&self, deadline: Option<Instant>) -> Result<Connection> {
        if let Some(r) = &self.inner.reconnect {
            let hello = Hello::Join {
                version: wire::VERSION,
                session: r.welcome.session,
                ticket: r.welcome.ticket,
            };
            return open(&r.address, &r.authkey, hello, deadline).map(|(c, _)| c);
        }
        let split = Request {
            obj: MANAGER,
            op: Op::Split { same_session: true },
        };
        let out = self
            .control(deadline)?
            .call(split, deadline)
            .unwrap_or_else(|Late| Err(Error::Timeout));
        match out? {
            Out::Conn(c) => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    /// A connection of a new session holding one reference to `obj`, for another process.
    pub(crate) fn transfer(&self, obj: u64) -> Result<Connection> {
        self.check_process()?;
        let token = match self.call(MANAGER, Op::Share(vec![obj]), None)? {
            Out::Token(t) => t,
            other => return Err(unexpected(&other)),
        };
        let conn = match &self.inner.reconnect {
            Some(r) => {
                open(
                    &r.address,
                    &r.authkey,
                    Hello::New {
                        version: wire::VERSION,
                    },
                    None,
                )?
                .0
            }
            None => match self
                .inner
                .control
                .lock()
                .call(
                    Request {
                        obj: MANAGER,
                        op: Op::Split {
                            same_session: false,
                        },
                    },
                    None,
                )
                .unwrap_or_else(|Late| Err(Error::Timeout))?
            {
                Out::Conn(c) => c,
                other => return Err(unexpected(&other)),
            },
        };
        // Over the socket: the connection's shared-memory path is for the process it goes to.
        match link::round_trip(
            &conn,
            &Request {
                obj: MANAGER,
                op: Op::Claim(token),
            },
        )? {
            Out::Unit => Ok(conn),
            other => Err(unexpected(&other)),
        }
    }
}

/// Connects, authenticates, says hello.
/// Connects, authenticates, says hello: by `deadline` (and [`GRACE`]) if given.
fn open(
    address: &Address,
    authkey: &[u8],
    hello: Hello,
    deadline: Option<Instant>,
) -> Result<(Connection, Welcome)> {
    let limit = match deadline {
        Some(d) => (d + GRACE).saturating_duration_since(Instant::now()),
        None => ipc_core::conn::DEFAULT_HANDSHAKE_TIMEOUT,
    };
    let conn = ipc_core::conn::connect_timeout(address, Some(authkey), Some(limit)).map_err(
        |e| match e {
            ipc_core::Error::Io(io) => {
                Error::ServerGone(format!("cannot connect to {address}: {io}"))
            }
            e => Error::from(e),
        },
    )?;
    conn.send(&hello)?;
    let welcome: std::result::Result<Welcome, Fault> = match deadline {
        None => conn.recv()?,
        Some(d) => conn.recv_timeout((d + GRACE).saturating_duration_since(Instant::now()))?,
    };
    Ok((conn, welcome?))
}

/// A reply of another shape than the call's (a server of another version, or a bug).
pub(crate) fn unexpected(out: &Out) -> Error {
    Error::Refused(format!("unexpected reply from the server: {out:?}"))
}

/// What a proxy and its clones share: the object, and the client that reaches it. The last
/// clone dropped releases the object on the server.
///
/// `pub` only because the sealed [`Proxy`](crate::Proxy) trait's hidden methods name it; the
/// module is private, so no user can.
#[allow(unreachable_pub)]
pub struct Handle {
    pub(crate) client: Client,
    pub(crate) obj: u64,
}

impl Handle {
    pub(crate) fn call(&self, op: Op, timeout: Option<Duration>) -> Result<Out> {
        self.client.call(self.obj, op, timeout)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.client.check_process().is_ok() {
            let _ = self.client.call(self.obj, Op::Release, None);
        }
    }
}

/// How this thread serializes and decodes proxies now (see the module notes).
enum Mode {
    Travel,
    Store { server: ServerId, ids: Vec<u64> },
    Load { handles: Vec<Option<Handle>> },
    Plain,
}

thread_local! {
    static MODE: RefCell<Mode> = const { RefCell::new(Mode::Travel) };
    // postcard drops the text of custom serde errors: the proxy hooks leave theirs here.
    static REFUSAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Sets the mode; restores the one before when finished or dropped (also on unwinding).
struct ModeGuard(Option<Mode>);

impl ModeGuard {
    fn set(mode: Mode) -> ModeGuard {
        let _ = REFUSAL.try_with(|r| r.borrow_mut().take());
        ModeGuard(Some(MODE.replace(mode)))
    }

    /// The mode as the work left it.
    fn finish(mut self) -> Mode {
        MODE.replace(self.0.take().expect("finished once"))
    }
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        if let Some(before) = self.0.take() {
            let _ = MODE.try_with(|m| m.replace(before));
        }
    }
}

/// Runs `f` with keys and operands in mind: a proxy inside is refused.
pub(crate) fn plain<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    let guard = ModeGuard::set(Mode::Plain);
    let res = f();
    drop(guard.finish());
    res.map_err(refusal)
}

/// A codec error, or the reason a proxy hook gave (which postcard drops).
fn refusal(e: Error) -> Error {
    match REFUSAL.try_with(|r| r.borrow_mut().take()).ok().flatten() {
        Some(msg) => Error::Refused(msg),
        None => e,
    }
}

fn refuse<E: serde::ser::Error>(msg: &str) -> E {
    let _ = REFUSAL.try_with(|r| *r.borrow_mut() = Some(msg.to_string()));
    E::custom(msg)
}

/// A proxy's bytes inside a stored value: its object's id.
pub(crate) fn held(obj: u64) -> impl Serialize {
    Wire::<()>::Held(obj)
}

/// A proxy's bytes: with a connection of its own (as a descriptor) for another process, or
/// its id inside a value its server stores.
#[derive(Serialize, Deserialize)]
enum Wire<C> {
    Travel { obj: u64, server: ServerId, conn: C },
    Held(u64),
}

impl Serialize for Handle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        enum Then {
            Travel,
            Held,
            Refuse(&'static str),
        }
        let then = MODE
            .try_with(|m| match &mut *m.borrow_mut() {
                Mode::Travel | Mode::Load { .. } => Then::Travel,
                Mode::Store { server, ids } if *server == self.client.inner.server => {
                    ids.push(self.obj);
                    Then::Held
                }
                Mode::Store { .. } => {
                    Then::Refuse("a proxy can be stored only in an object of its own manager")
                }
                Mode::Plain => {
                    Then::Refuse("a proxy cannot be part of a key or of an update's operand")
                }
            })
            .unwrap_or(Then::Travel);
        match then {
            Then::Held => Wire::<()>::Held(self.obj).serialize(s),
            Then::Refuse(msg) => Err(refuse(msg)),
            Then::Travel => {
                let conn = self.client.transfer(self.obj).map_err(|e| {
                    ipc_core::codec::ser_error(format!("a proxy cannot travel: {e}"))
                })?;
                // The connection's descriptor is duplicated into the message; ours closes on
                // return.
                Wire::Travel {
                    obj: self.obj,
                    server: self.client.inner.server,
                    conn: &conn,
                }
                .serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Wire::<Connection>::deserialize(d)? {
            Wire::Travel { obj, server, conn } => Ok(Handle {
                client: Client::adopt(conn, server),
                obj,
            }),
            Wire::Held(obj) => {
                let taken = MODE
                    .try_with(|m| match &mut *m.borrow_mut() {
                        Mode::Load { handles } => handles
                            .iter_mut()
                            .find(|h| h.as_ref().is_some_and(|h| h.obj == obj))
                            .and_then(Option::take),
                        _ => None,
                    })
                    .ok()
                    .flatten();
                taken.ok_or_else(|| {
                    let msg = "a proxy stored in a manager's object can be read only through a \
                               proxy of that manager";
                    let _ = REFUSAL.try_with(|r| *r.borrow_mut() = Some(msg.to_string()));
                    serde::de::Error::custom(msg)
                })
            }
        }
    }
}
