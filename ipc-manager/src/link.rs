//! One connection to the server, and how a call travels on it: over the socket, or through the
//! connection's shared-memory queues once it has them (see the wire notes).
//!
//! ```text
//! Link     the socket (always: liveness, descriptors, remote clients)
//!          + Fast{requests, replies}: ipc-sync queues, set up on the third call of a Unix
//!            connection (Op::Fast over the socket; a connection that makes one or two calls,
//!            a shutdown, a release, does not pay for the queues); a server that refuses
//!            keeps the socket
//! a call   drain late answers -> send (queue put, or socket send) -> wait for the answer:
//!          socket: recv (until the deadline + GRACE, if any)
//!          queue:  get in slices of LIVENESS; between slices a readable socket means the
//!                  server hung up (it sends nothing there while the queue path is in use)
//!          a deadline that passes first: Late, and the answer still to come is counted
//!          (`stale`) so that the next call on this link skips it
//! ```

use std::time::{Duration, Instant};

use ipc_core::conn::Connection;
use ipc_sync::{GetError, PutError, Queue};

use crate::error::{Error, Result};
use crate::wire::{Fault, MANAGER, Op, Out, Request};

/// How long after a call's deadline its client still waits for the server's answer (a call
/// that blocks on the server gives up there at the deadline itself).
pub(crate) const GRACE: Duration = Duration::from_millis(100);

/// How often a call waiting on the shared-memory path looks at the socket for a dead server.
const LIVENESS: Duration = Duration::from_millis(100);

/// The ring size of each of a connection's two queues (a larger message streams through).
const RING: usize = 64 << 10;

/// How many calls a connection makes over its socket before it sets up its queues. Setting
/// them up costs about half a millisecond (two rings in shared memory, a server thread): a
/// started manager that is shut down at once took 0.74 ms before the path existed and 1.19 ms
/// when its one call set it up.
const SOCKET_CALLS_FIRST: u32 = 2;

/// An answer, as the server sends it.
type Answer = std::result::Result<Out, Fault>;

/// A call's deadline (and [`GRACE`]) passed with its answer still to come.
pub(crate) struct Late;

/// A connection's shared-memory queues.
struct Fast {
    requests: Queue<Request>,
    replies: Queue<Answer>,
}

/// One connection to the server.
pub(crate) struct Link {
    conn: Connection,
    fast: Option<Fast>,
    /// Whether the shared-memory path was tried (it is tried once).
    tried: bool,
    /// Calls made over the socket so far (up to [`SOCKET_CALLS_FIRST`]).
    socket_calls: u32,
    /// Late answers still to come, on the socket and on the queue.
    stale_socket: usize,
    stale_fast: usize,
}

impl Link {
    pub(crate) fn new(conn: Connection) -> Link {
        Link {
            conn,
            fast: None,
            tried: false,
            socket_calls: 0,
            stale_socket: 0,
            stale_fast: 0,
        }
    }

    /// One call: `req`, then its answer, by `deadline` (and [`GRACE`]) if given.
    pub(crate) fn call(
        &mut self,
        req: Request,
        deadline: Option<Instant>,
    ) -> std::result::Result<Result<Out>, Late> {
        if let Err(e) = self.skip_late(deadline)? {
            return Ok(Err(e));
        }
        if !self.tried && !req.op.needs_socket() {
            if self.socket_calls < SOCKET_CALLS_FIRST {
                self.socket_calls += 1;
            } else {
                self.attach(deadline)?;
            }
        }
        let answer = match &self.fast {
            Some(fast) if !req.op.needs_socket() => {
                let answer = fast_call(fast, &self.conn, req, deadline);
                if answer.is_err() {
                    self.stale_fast += 1;
                }
                answer?
            }
            _ => {
                let answer = socket_call(&self.conn, &req, deadline);
                if answer.is_err() {
                    self.stale_socket += 1;
                }
                answer?
            }
        };
        Ok(answer.and_then(|a| a.map_err(Error::from)))
    }

    /// Skips the late answers of earlier calls.
    fn skip_late(&mut self, deadline: Option<Instant>) -> std::result::Result<Result<()>, Late> {
        while self.stale_socket > 0 {
            if let Err(e) = socket_wait(&self.conn, deadline)? {
                return Ok(Err(e));
            }
            self.stale_socket -= 1;
        }
        while self.stale_fast > 0 {
            let Some(fast) = &self.fast else { break };
            if let Err(e) = fast_wait(fast, &self.conn, deadline)? {
                return Ok(Err(e));
            }
            self.stale_fast -= 1;
        }
        Ok(Ok(()))
    }

    /// Sets up the shared-memory path on a Unix connection (best effort: on any failure the
    /// link keeps the socket).
    fn attach(&mut self, deadline: Option<Instant>) -> std::result::Result<(), Late> {
        self.tried = true;
        let local =
            rustix::net::sockopt::socket_domain(&self.conn) == Ok(rustix::net::AddressFamily::UNIX);
        if !local {
            return Ok(());
        }
        let (Ok(requests), Ok(replies)) =
            (Queue::with_capacity(RING, 0), Queue::with_capacity(RING, 0))
        else {
            return Ok(());
        };
        let req = Request {
            obj: MANAGER,
            op: Op::Fast {
                requests: requests.clone(),
                replies: replies.clone(),
            },
        };
        match socket_call(&self.conn, &req, deadline) {
            Ok(Ok(Ok(Out::Unit))) => {
                self.fast = Some(Fast { requests, replies });
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(Late) => {
                self.stale_socket += 1;
                Err(Late)
            }
        }
    }
}

/// A call over the socket without a deadline (for a connection that is not a link yet).
pub(crate) fn round_trip(conn: &Connection, req: &Request) -> Result<Out> {
    match socket_call(conn, req, None) {
        Ok(answer) => Ok(answer?.map_err(Error::from)?),
        Err(Late) => Err(Error::Timeout),
    }
}

/// The time left until `deadline` and [`GRACE`].
fn left(deadline: Instant) -> Duration {
    (deadline + GRACE).saturating_duration_since(Instant::now())
}

/// A call over the socket.
fn socket_call(
    conn: &Connection,
    req: &Request,
    deadline: Option<Instant>,
) -> std::result::Result<Result<Answer>, Late> {
    if let Err(e) = conn.send(req) {
        return Ok(Err(e.into()));
    }
    ipc_core::failpoint::hit("manager.client.sent");
    socket_wait(conn, deadline)
}

/// The next answer on the socket.
fn socket_wait(
    conn: &Connection,
    deadline: Option<Instant>,
) -> std::result::Result<Result<Answer>, Late> {
    let answer = match deadline {
        None => conn.recv::<Answer>(),
        Some(d) => conn.recv_timeout(left(d)),
    };
    match answer {
        Ok(a) => Ok(Ok(a)),
        Err(ipc_core::Error::Timeout) => Err(Late),
        Err(e) => Ok(Err(e.into())),
    }
}

/// A call through the queues.
fn fast_call(
    fast: &Fast,
    conn: &Connection,
    req: Request,
    deadline: Option<Instant>,
) -> std::result::Result<Result<Answer>, Late> {
    let mut req = req;
    loop {
        let slice = deadline.map_or(LIVENESS, |d| left(d).min(LIVENESS));
        match fast.requests.put_timeout(req, slice) {
            Ok(()) => break,
            Err(PutError::Full(r)) => {
                if let Some(gone) = server_gone(conn) {
                    return Ok(Err(gone));
                }
                if deadline.is_some_and(|d| left(d).is_zero()) {
                    // Never sent: nothing will come back.
                    return Ok(Err(Error::Timeout));
                }
                req = r;
            }
            Err(PutError::Encode(_, e)) => return Ok(Err(e.into())),
            Err(_) => return Ok(Err(gone())),
        }
    }
    ipc_core::failpoint::hit("manager.client.sent");
    fast_wait(fast, conn, deadline)
}

/// The next answer on the replies queue.
fn fast_wait(
    fast: &Fast,
    conn: &Connection,
    deadline: Option<Instant>,
) -> std::result::Result<Result<Answer>, Late> {
    loop {
        let slice = deadline.map_or(LIVENESS, |d| left(d).min(LIVENESS));
        match fast.replies.get_timeout(slice) {
            Ok(a) => return Ok(Ok(a)),
            Err(GetError::Empty) => {
                if let Some(gone) = server_gone(conn) {
                    return Ok(Err(gone));
                }
                if deadline.is_some_and(|d| left(d).is_zero()) {
                    return Err(Late);
                }
            }
            Err(GetError::Decode(e)) => return Ok(Err(e.into())),
            Err(_) => return Ok(Err(gone())),
        }
    }
}

/// `Some(ServerGone)` if the socket says the server hung up (readable while the queue path is
/// in use: end of file, or its last words before hanging up).
fn server_gone(conn: &Connection) -> Option<Error> {
    match conn.poll(Some(Duration::ZERO)) {
        Ok(false) => None,
        Ok(true) => Some(match conn.recv::<Answer>() {
            Ok(Err(fault)) => Error::from(fault),
            _ => gone(),
        }),
        Err(e) => Some(e.into()),
    }
}

fn gone() -> Error {
    Error::ServerGone("the server closed the connection".into())
}
