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
//! transfer   a proxy serialized for another process: a connection of a *new* session,
//!            given a reference through Share/Claim, travels as a descriptor (never the key)
//! ```
//! A client belongs to the process that made it: a copy inherited through `fork` would share
//! sockets with its parent, so it refuses to call (proxies travel as arguments instead, which
//! gives the child connections of its own).

use std::sync::Arc;

use ipc_core::conn::{Address, Connection};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::wire::{self, Fault, Hello, MANAGER, Op, Out, Request, Welcome};

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
    server_pid: u32,
    control: Mutex<Connection>,
    idle: Mutex<Vec<Connection>>,
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
                server_pid: welcome.pid,
                reconnect: Some(Reconnect {
                    address: address.clone(),
                    authkey: authkey.to_vec(),
                    welcome,
                }),
                control: Mutex::new(conn),
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A client on a connection the server made (a proxy received from another process).
    fn adopt(conn: Connection, server_pid: u32) -> Client {
        Client {
            inner: Arc::new(Inner {
                pid: std::process::id(),
                server_pid,
                reconnect: None,
                control: Mutex::new(conn),
                idle: Mutex::new(Vec::new()),
            }),
        }
    }

    pub(crate) fn server_pid(&self) -> u32 {
        self.inner.server_pid
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

    /// One call: the request, then its reply.
    pub(crate) fn call(&self, obj: u64, op: Op) -> Result<Out> {
        self.check_process()?;
        let req = Request { obj, op };
        if !req.op.blocks()
            && let Some(control) = self.inner.control.try_lock()
        {
            return round_trip(&control, &req);
        }
        let conn = match self.inner.idle.lock().pop() {
            Some(c) => c,
            None => match self.open_more() {
                Ok(c) => c,
                // No way to another connection (a key-less client over TCP): wait for the
                // first one.
                Err(Error::Refused(_)) => return round_trip(&self.inner.control.lock(), &req),
                Err(e) => return Err(e),
            },
        };
        let out = round_trip(&conn, &req);
        if !matches!(out, Err(Error::ServerGone(_) | Error::Core(_))) {
            self.inner.idle.lock().push(conn);
        }
        out
    }

    /// Another connection of this session.
    fn open_more(&self) -> Result<Connection> {
        if let Some(r) = &self.inner.reconnect {
            let hello = Hello::Join {
                version: wire::VERSION,
                session: r.welcome.session,
                ticket: r.welcome.ticket,
            };
            return open(&r.address, &r.authkey, hello).map(|(c, _)| c);
        }
        let control = self.inner.control.lock();
        match round_trip(
            &control,
            &Request {
                obj: MANAGER,
                op: Op::Split { same_session: true },
            },
        )? {
            Out::Conn(c) => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    /// A connection of a new session holding one reference to `obj`, for another process.
    pub(crate) fn transfer(&self, obj: u64) -> Result<Connection> {
        self.check_process()?;
        let token = match self.call(MANAGER, Op::Share(vec![obj]))? {
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
                )?
                .0
            }
            None => match round_trip(
                &self.inner.control.lock(),
                &Request {
                    obj: MANAGER,
                    op: Op::Split {
                        same_session: false,
                    },
                },
            )? {
                Out::Conn(c) => c,
                other => return Err(unexpected(&other)),
            },
        };
        match round_trip(
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
fn open(address: &Address, authkey: &[u8], hello: Hello) -> Result<(Connection, Welcome)> {
    let conn = ipc_core::conn::connect(address, Some(authkey)).map_err(|e| match e {
        ipc_core::Error::Io(io) => Error::ServerGone(format!("cannot connect to {address}: {io}")),
        e => Error::from(e),
    })?;
    conn.send(&hello)?;
    let welcome: std::result::Result<Welcome, Fault> = conn.recv()?;
    Ok((conn, welcome?))
}

fn round_trip(conn: &Connection, req: &Request) -> Result<Out> {
    conn.send(req)?;
    let reply: std::result::Result<Out, Fault> = conn.recv()?;
    Ok(reply?)
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
    pub(crate) fn call(&self, op: Op) -> Result<Out> {
        self.client.call(self.obj, op)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if self.client.check_process().is_ok() {
            let _ = self.client.call(self.obj, Op::Release);
        }
    }
}

/// A proxy's bytes: the object and a connection of its own (as a descriptor).
#[derive(Serialize, Deserialize)]
struct Wire<C> {
    obj: u64,
    server_pid: u32,
    conn: C,
}

impl Serialize for Handle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let conn = self
            .client
            .transfer(self.obj)
            .map_err(|e| serde::ser::Error::custom(format!("a proxy cannot travel: {e}")))?;
        // The connection's descriptor is duplicated into the message; ours closes on return.
        Wire {
            obj: self.obj,
            server_pid: self.client.server_pid(),
            conn: &conn,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = Wire::<Connection>::deserialize(d)?;
        Ok(Handle {
            client: Client::adopt(w.conn, w.server_pid),
            obj: w.obj,
        })
    }
}
