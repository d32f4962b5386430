//! [`Listener`] and [`connect`]: connections between processes that did not create them
//! together (Python's `multiprocessing.connection.Listener` and `Client`).
//!
//! Unix and abstract addresses use `SOCK_SEQPACKET` sockets (one system call per small message,
//! descriptor passing); a client falls back to `SOCK_STREAM` when the listener is a stream socket
//! of another program. TCP connections disable Nagle's algorithm, since every frame leaves in one
//! write and waiting for more only adds latency to request/response traffic.
//!
//! # Concurrent handshakes
//! An authenticated listener runs the handshakes of all connecting clients at once, so one
//! client that connects and says nothing (or a hundred) never delays another. [`accept`] keeps
//! the clients whose handshake is under way, each at a step of the server's side:
//! ```text
//! accepted --send challenge--> Answer --answer read, verdict sent--> Challenge
//!   --their challenge read, our answer sent--> Verdict --welcome read--> returned by accept
//! any step: wrong key, garbage, end of file -> Err(Authentication) from accept, socket closed
//!           handshake deadline passed        -> Err(Timeout) from accept, socket closed
//! ```
//! and polls the listening socket and every pending client together. A step runs only once its
//! client's message has started to arrive; it then waits at most [`STEP_GRACE`] for the rest (a
//! handshake message is one small write, so only a peer that stalls inside a message waits that
//! long). At most [`MAX_PENDING`] handshakes are kept: beyond, the oldest is dropped.
//!
//! [`accept`]: Listener::accept

use std::collections::VecDeque;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use rustix::event::{PollFd, PollFlags};

use super::address::Address;
use super::auth::{self, DEFAULT_HANDSHAKE_TIMEOUT};
use super::connection::Connection;
use super::io::{Interest, wait_fd};
use crate::error::{Error, Os, Result};

/// Pending connections the kernel queues before `accept` (capped by `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

/// How long a handshake step waits for the rest of a message that has started to arrive.
pub const STEP_GRACE: Duration = Duration::from_secs(1);

/// The most handshakes an authenticated listener keeps under way; a new client beyond it makes
/// the oldest one be dropped.
pub const MAX_PENDING: usize = 1024;

/// What a client's handshake waits for next (the server's side, see the module doc).
enum Awaiting {
    /// The answer to the challenge we sent.
    Answer(auth::Challenge),
    /// The client's challenge to us.
    Challenge,
    /// The client's verdict on our answer.
    Verdict,
}

/// A client whose handshake is under way.
struct Pending {
    conn: Connection,
    awaiting: Awaiting,
    deadline: Option<Instant>,
}

/// A socket accepting connections at an [`Address`], authenticating each with an authkey when
/// one is given.
///
/// A Unix-path listener removes its socket file when dropped (in the process that bound it, and
/// only if the file is still the one it created).
///
/// ```
/// use ipc_core::conn::{Listener, connect};
/// let listener = Listener::bind(&"127.0.0.1:0".parse().unwrap(), Some(b"key")).unwrap();
/// let addr = listener.address().clone(); // the port the kernel picked
/// let client = std::thread::spawn(move || {
///     let c = connect(&addr, Some(b"key")).unwrap();
///     c.send(&"hello").unwrap();
/// });
/// let conn = listener.accept().unwrap();
/// assert_eq!(conn.recv::<String>().unwrap(), "hello");
/// client.join().unwrap();
/// ```
pub struct Listener {
    fd: OwnedFd,
    address: Address,
    authkey: Option<Vec<u8>>,
    handshake_timeout: Option<Duration>,
    unlink: Option<SocketFile>,
    /// Clients whose handshake is under way, oldest first.
    pending: Mutex<VecDeque<Pending>>,
}

/// The socket file a Unix-path listener created, to remove on drop.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    pid: rustix::process::Pid,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the authkey.
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

fn context(e: impl Into<std::io::Error>, what: &str, address: &Address) -> Error {
    let e: std::io::Error = e.into();
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("cannot {what} {address}: {e}"),
    ))
}

fn unix_addr(address: &Address) -> Option<Result<SocketAddrUnix>> {
    let a = match address {
        Address::Unix(path) => SocketAddrUnix::new(path.as_path()),
        Address::Abstract(name) => SocketAddrUnix::new_abstract_name(name.as_bytes()),
        Address::Tcp(_) => return None,
    };
    Some(a.map_err(|e| context(e, "use the address", address)))
}

impl Listener {
    /// Binds a listener at `address`; with `authkey`, every accepted connection must pass the
    /// handshake in both directions. An empty key is a valid key.
    ///
    /// An address in use (another listener, or a leftover socket file at a Unix path) is an
    /// [`Error::Io`] of kind `AddrInUse`. TCP listeners set `SO_REUSEADDR`, so a server can
    /// restart on its port at once.
    pub fn bind(address: &Address, authkey: Option<&[u8]>) -> Result<Listener> {
        address.validate()?;
        let authkey = authkey.map(<[u8]>::to_vec);
        let handshake_timeout = Some(DEFAULT_HANDSHAKE_TIMEOUT);
        let Some(sa) = unix_addr(address) else {
            let Address::Tcp(sa) = address else {
                unreachable!("unix_addr handles every non-TCP address")
            };
            let l = TcpListener::bind(sa).map_err(|e| context(e, "bind", address))?;
            let actual = l
                .local_addr()
                .map_err(|e| context(e, "read the bound address of", address))?;
            return Ok(Listener {
                fd: OwnedFd::from(l),
                address: Address::Tcp(actual),
                authkey,
                handshake_timeout,
                unlink: None,
                pending: Mutex::default(),
            });
        };
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .os()?;
        rustix::net::bind(&fd, &sa?).map_err(|e| context(e, "bind", address))?;
        let unlink = match address {
            Address::Unix(path) => match rustix::fs::stat(path.as_path()) {
                Ok(st) => Some(SocketFile {
                    path: path.clone(),
                    dev: st.st_dev,
                    ino: st.st_ino,
                    pid: rustix::process::getpid(),
                }),
                Err(e) => {
                    // We just created it: do not leave it behind.
                    let _ = std::fs::remove_file(path);
                    return Err(context(e, "inspect the socket file of", address));
                }
            },
            _ => None,
        };
        // Built before `listen`, so that its Drop removes the socket file if `listen` fails.
        let listener = Listener {
            fd,
            address: address.clone(),
            authkey,
            handshake_timeout,
            unlink,
            pending: Mutex::default(),
        };
        rustix::net::listen(&listener.fd, BACKLOG).map_err(|e| context(e, "listen on", address))?;
        Ok(listener)
    }

    /// Waits for a connection and returns it, after the handshake when the listener has an
    /// authkey.
    ///
    /// Handshakes run concurrently (see the module doc): a client that connects and stays
    /// silent never delays another. A client that fails its handshake (wrong key, garbage,
    /// silence past the handshake timeout) is [`Error::Authentication`] or [`Error::Timeout`]
    /// from one call; its connection is closed and the listener stays usable, so a server
    /// loops on `accept` and carries on. Interrupted waits (`EINTR`) are retried.
    pub fn accept(&self) -> Result<Connection> {
        let Some(key) = &self.authkey else {
            return self.accept_socket();
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Handshakes past their deadline end first, each as one call's error.
            let now = Instant::now();
            if let Some(i) = pending
                .iter()
                .position(|p| p.deadline.is_some_and(|d| d <= now))
            {
                drop(pending.remove(i));
                return Err(Error::Timeout);
            }
            let soonest = pending.iter().filter_map(|p| p.deadline).min();
            let (listener_ready, ready) = {
                let mut fds = Vec::with_capacity(pending.len() + 1);
                fds.push(PollFd::new(&self.fd, PollFlags::IN));
                fds.extend(pending.iter().map(|p| PollFd::new(&p.conn, PollFlags::IN)));
                crate::deadline::poll_until(&mut fds, soonest)?;
                let ready: Vec<usize> = fds[1..]
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| !f.revents().is_empty())
                    .map(|(i, _)| i)
                    .collect();
                (!fds[0].revents().is_empty(), ready)
            };
            // Advance every client whose next message has started to arrive (from the last, so
            // removals keep the earlier indices valid).
            for &i in ready.iter().rev() {
                match advance(&mut pending[i], key) {
                    Ok(false) => {}
                    Ok(true) => {
                        let done = pending.remove(i).expect("an index from this poll");
                        return Ok(done.conn);
                    }
                    Err(e) => {
                        drop(pending.remove(i));
                        return Err(e);
                    }
                }
            }
            if listener_ready {
                let conn = self.accept_socket()?;
                let challenge = auth::send_challenge(&conn)?;
                if pending.len() >= MAX_PENDING {
                    drop(pending.pop_front());
                }
                pending.push_back(Pending {
                    conn,
                    awaiting: Awaiting::Answer(challenge),
                    deadline: self
                        .handshake_timeout
                        .map(|t| crate::deadline::after(Instant::now(), t)),
                });
            }
        }
    }

    /// Takes one connection from the kernel's queue (no handshake).
    fn accept_socket(&self) -> Result<Connection> {
        let fd = loop {
            match rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC) {
                Ok(fd) => break fd,
                Err(Errno::INTR | Errno::CONNABORTED) => continue,
                Err(Errno::AGAIN) => {
                    wait_fd(self.fd.as_fd(), Interest::Read, None)?;
                }
                Err(e) => return Err(context(e, "accept on", &self.address)),
            }
        };
        if let Address::Tcp(_) = self.address {
            rustix::net::sockopt::set_tcp_nodelay(&fd, true).os()?;
        }
        Ok(Connection::from_socket(fd))
    }

    /// The address the listener is bound to; for TCP port 0, the port the kernel picked.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// How long [`accept`](Self::accept) gives a client to complete the handshake
    /// (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn handshake_timeout(&self) -> Option<Duration> {
        self.handshake_timeout
    }

    /// Sets how long [`accept`](Self::accept) gives a client to complete the handshake;
    /// `None` waits as long as the client takes (a silent client then keeps its socket, and a
    /// place among the [`MAX_PENDING`] handshakes, until it hangs up; it delays nobody).
    pub fn set_handshake_timeout(&mut self, timeout: Option<Duration>) {
        self.handshake_timeout = timeout;
    }
}

/// Runs the step of `p`'s handshake whose message has started to arrive; `Ok(true)` when the
/// handshake is complete.
fn advance(p: &mut Pending, key: &[u8]) -> Result<bool> {
    let grace = crate::deadline::after(Instant::now(), STEP_GRACE);
    let deadline = Some(p.deadline.map_or(grace, |d| d.min(grace)));
    match &p.awaiting {
        Awaiting::Answer(challenge) => {
            let answer = auth::recv_step(&p.conn, deadline, "an answer to the challenge")?;
            auth::judge_answer(&p.conn, key, challenge, &answer)?;
            p.awaiting = Awaiting::Challenge;
            Ok(false)
        }
        Awaiting::Challenge => {
            let challenge = auth::recv_step(&p.conn, deadline, "a challenge")?;
            auth::send_answer(&p.conn, key, &challenge)?;
            p.awaiting = Awaiting::Verdict;
            Ok(false)
        }
        Awaiting::Verdict => {
            let verdict = auth::recv_step(&p.conn, deadline, "a verdict")?;
            auth::read_verdict(&verdict)?;
            Ok(true)
        }
    }
}

impl AsFd for Listener {
    /// The listening socket: readable when a connection is waiting (usable with
    /// [`wait`](super::wait)).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let Some(file) = &self.unlink else { return };
        // A forked child that drops a copy must not remove the parent's socket, and a file that
        // replaced ours since (another listener bound there after a restart) is not ours.
        if rustix::process::getpid() != file.pid {
            return;
        }
        if let Ok(st) = rustix::fs::stat(file.path.as_path())
            && st.st_dev == file.dev
            && st.st_ino == file.ino
        {
            let _ = std::fs::remove_file(&file.path);
        }
    }
}

/// Connects to a [`Listener`] at `address` (Python's `Client`), answering and then delivering
/// the authkey challenge when `authkey` is given. The handshake must complete within
/// [`DEFAULT_HANDSHAKE_TIMEOUT`], so the listener must accept within that time.
///
/// A wrong key is [`Error::Authentication`] (on both sides); the connection is closed.
#[doc(alias = "Client")]
pub fn connect(address: &Address, authkey: Option<&[u8]>) -> Result<Connection> {
    connect_timeout(address, authkey, Some(DEFAULT_HANDSHAKE_TIMEOUT))
}

/// [`connect`] with a bound on the whole operation: establishing a TCP connection and the
/// handshake. `None` waits as long as it takes.
pub fn connect_timeout(
    address: &Address,
    authkey: Option<&[u8]>,
    timeout: Option<Duration>,
) -> Result<Connection> {
    address.validate()?;
    let start = Instant::now();
    let deadline = timeout.map(|t| crate::deadline::after(start, t));
    let fd = match unix_addr(address) {
        Some(sa) => connect_unix(&sa?, address, deadline)?,
        None => {
            let Address::Tcp(sa) = address else {
                unreachable!("unix_addr handles every non-TCP address")
            };
            let stream = match timeout {
                // std refuses a zero timeout; the smallest positive one fails just as fast.
                Some(t) => TcpStream::connect_timeout(sa, t.max(Duration::from_millis(1))),
                None => TcpStream::connect(sa),
            }
            .map_err(|e| context(e, "connect to", address))?;
            stream.set_nodelay(true)?;
            OwnedFd::from(stream)
        }
    };
    let conn = Connection::from_socket(fd);
    if let Some(key) = authkey {
        conn.answer_challenge_until(key, deadline)?;
        conn.deliver_challenge_until(key, deadline)?;
    }
    Ok(conn)
}

/// Connects a Unix socket: `SOCK_SEQPACKET` first, `SOCK_STREAM` if the listener is a stream
/// socket (`EPROTOTYPE`).
///
/// A listener whose backlog is full makes a blocking `connect` wait without limit; with a
/// deadline the socket connects in non-blocking mode and retries (`EAGAIN`) until it passes,
/// then goes back to blocking mode.
fn connect_unix(
    sa: &SocketAddrUnix,
    address: &Address,
    deadline: Option<Instant>,
) -> Result<OwnedFd> {
    let flags = if deadline.is_some() {
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK
    } else {
        SocketFlags::CLOEXEC
    };
    for ty in [SocketType::SEQPACKET, SocketType::STREAM] {
        let fd = rustix::net::socket_with(AddressFamily::UNIX, ty, flags, None).os()?;
        let mut pause = Duration::from_micros(100);
        loop {
            match rustix::net::connect(&fd, sa) {
                // A Unix connect interrupted by a signal may still have completed.
                Ok(()) | Err(Errno::ISCONN) => {
                    if deadline.is_some() {
                        rustix::io::ioctl_fionbio(&fd, false).os()?;
                    }
                    return Ok(fd);
                }
                Err(Errno::INTR) => continue,
                // The backlog is full (only in non-blocking mode): wait a little, within the
                // deadline. An unconnected Unix socket polls writable at once, so poll cannot
                // tell when room appears.
                Err(Errno::AGAIN) => match deadline {
                    Some(d) if Instant::now() < d => {
                        std::thread::sleep(pause.min(d.saturating_duration_since(Instant::now())));
                        pause = (pause * 2).min(Duration::from_millis(10));
                    }
                    Some(_) => {
                        return Err(Error::Timeout);
                    }
                    None => continue,
                },
                Err(Errno::PROTOTYPE) if ty == SocketType::SEQPACKET => break,
                Err(e) => return Err(context(e, "connect to", address)),
            }
        }
    }
    Err(context(Errno::PROTOTYPE, "connect to", address))
}
