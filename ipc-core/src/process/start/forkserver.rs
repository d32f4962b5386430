//! The forkserver start method: a clean server process forks children on request.
//!
//! The server is started once per process (lazily, on the first forkserver start) with the spawn
//! method, so it is a fresh, single-threaded copy of the executable whatever threads the parent
//! has: forking it is always sound, and each start costs a fork of a small process instead of an
//! `exec`. Its control channel is a socketpair whose other end only this process holds: no
//! address exists that another user could connect to (the flaw of CVE-2022-42919 cannot arise).
//!
//! The server forks with `CLONE_PARENT` ([`SiblingFork`]): its children are *ours*, siblings of
//! the server. We reap them ourselves and read their exit status first hand, as under fork and
//! spawn. (So a process that ignores SIGCHLD loses their exit codes, as it does for fork and
//! spawn children: `join` then says so.)
//!
//! Protocol:
//! ```text
//! parent -> server, control channel: Prepare(conn)  fork a child that waits on `conn`
//! server -> parent, control channel: Forked { pid } or Failed(why), one per Prepare, in order
//! child  -> parent, on conn: Hello { pid }, first thing
//! parent -> child,  on conn: boot message, argument  (as under spawn)
//! ```
//! We keep one child *prepared* ahead: the `Prepare` for the next start goes out as a start takes
//! the current one, so the server forks while the child runs and no fork lies on the path of a
//! start (its response and hello are waiting by the time the next start reads them). A start
//! sends the boot message and the argument only to a child it knows: a function runs only
//! there, and a start is never repeated after its argument went out, so a function never runs
//! twice. Each child is known two ways, by its hello and by the server's response, so the death
//! of either at any moment leaves no child of ours unknown (hence unreaped): without both, the
//! server died before forking, no child holds the connection, and the start is repeated on a
//! new server. If the server and the new child die within the same microseconds, before either
//! spoke, the child is ours and unknown: the server leads a process group of its own, which its
//! children leave for ours just before their hello, so replacing a server kills and reaps its
//! group, and with it every child nobody could know of ([`ForkServer::discard`]).
//!
//! Daemon children die with us through their [lifeline](crate::process::lifeline), sent with
//! the boot message as under spawn: the server plays no part in it, so a daemon outlives
//! neither us nor a killed server's absence. The server leaves when our end of the control
//! channel closes (we exited or were killed) or an answer to us fails.
//!
//! Measured with `cargo xtask compare --only process_start_join_forkserver` (2 vCPUs, unpinned),
//! start+join took 346-430 us when the server forked on request and reported exit codes, 277-353
//! us with a spare forked ahead (still the server's child, its exit code reported by the server),
//! and 197-248 us (medians of four runs; CPython's forkserver 9.8-13.4 ms in the same runs) in
//! this design, which takes the server's reply and its exit report off the path of a start.
//! What remains is mostly the kernel's work for a process's life: the fork itself (in the
//! server, while the previous child runs), about 28 page faults in the child (the server warms
//! up what every child would otherwise do once: see [`serve`]), and the exit.
//!
//! # Safety
//! The one `unsafe` call is the fork in the server, which is single-threaded by construction.
#![allow(unsafe_code)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal};
use serde::{Deserialize, Serialize};

use super::Launched;
use crate::conn::{Connection, pipe};
use crate::error::{Error, Result};
use crate::process::bootstrap::{
    BOOT_FAILED, BootInfo, close_boot_connection, run_child, trampoline,
};
use crate::process::child::{ChildInner, reap};
use crate::process::global::{self, Identity};
use crate::process::{StartMethod, start};
use crate::sys::{self, Forked, SiblingFork};

#[derive(Serialize, Deserialize)]
enum Request {
    /// Fork a child that says hello on this connection and waits for its instructions.
    Prepare(Connection),
}

/// The server's answer to each `Prepare`, in order, on the control channel.
#[derive(Serialize, Deserialize)]
enum Response {
    /// The child exists, with this pid (ours, unreaped).
    Forked { pid: i32 },
    /// The server could not fork.
    Failed(String),
}

/// The first message on a prepared child's connection, from the child itself: it exists, is
/// ours, and waits for the boot message.
#[derive(Serialize, Deserialize)]
struct Hello {
    pid: i32,
}

/// How long a start waits for the server's answer and its prepared child's hello before it
/// gives the server up (and replaces it). Both come in microseconds from a running server.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

// The policy: when to start and replace this process's server.

/// This process's forkserver, behind a lock of its own: a start waiting on the server (a slow
/// or stopped one) holds only this, never the process lock, so `current_process`,
/// `active_children` and the other start methods go on meanwhile. Lock order: this one first,
/// then the process lock (`global::lock`), never the other way round. The fork start method
/// holds both across its `fork`, so a forked child finds this lock in a state it can release.
static SERVER: Mutex<Option<ForkServer>> = Mutex::new(None);

/// Locks this process's forkserver slot (see [`SERVER`]).
pub(crate) fn lock() -> MutexGuard<'static, Option<ForkServer>> {
    let mut slot = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    // A server inherited through a fork made outside this crate is our parent's.
    if slot.as_ref().is_some_and(|s| !s.is_creator()) {
        *slot = None;
    }
    slot
}

/// Starts a child through this process's forkserver, starting the server first if needed.
///
/// There is no liveness check up front (a poll per start): a server that was killed is noticed
/// when a message to it fails or a prepared child never says hello, and is then replaced at
/// once (so that the next start finds a child prepared). A start whose child never said hello
/// is repeated: no child ran for it.
pub(crate) fn launch() -> Result<Launched> {
    let mut slot = lock();
    let mut lost = None;
    for _ in 0..2 {
        let launched = running_forkserver(&mut slot)?.launch();
        // A server found broken is replaced at once, whatever this start's outcome.
        if slot.as_ref().is_some_and(|s| s.is_broken()) {
            replace_forkserver(&mut slot);
        }
        match launched {
            Launch::Done(done) => return done,
            // Replaced above (a server gone is broken).
            Launch::ServerGone(e) => lost = Some(e),
        }
    }
    Err(lost.expect("set on every path that repeats"))
}

/// This process's forkserver, started if there is none.
fn running_forkserver(slot: &mut Option<ForkServer>) -> Result<&mut ForkServer> {
    if slot.is_none() {
        // The process lock only for a copy of what the new server needs (lock order above).
        let id = global::lock().identity.clone();
        *slot = Some(ForkServer::start(&id)?);
    }
    Ok(slot.as_mut().expect("started above"))
}

/// Stops a forkserver that broke and starts another (if it can: otherwise the next start tries).
fn replace_forkserver(slot: &mut Option<ForkServer>) {
    if let Some(dead) = slot.take() {
        dead.discard();
    }
    let _ = running_forkserver(slot);
}

/// This process's forkserver: the control channel, the server's own record, the next child.
pub(crate) struct ForkServer {
    ctrl: Connection,
    server: Arc<ChildInner>,
    /// Our end of the connection of the child prepared for the next start.
    prepared: Option<Connection>,
    /// A message to the server failed: it is gone (or misbehaves) and must be replaced.
    broken: bool,
}

impl ForkServer {
    /// Starts a server (spawned, so it is clean whatever this process looks like) and asks it
    /// for a first child.
    pub(crate) fn start(id: &Identity) -> Result<ForkServer> {
        let (ours, theirs) = pipe()?;
        let Launched {
            pid, pidfd, conn, ..
        } = start::spawn::launch()?;
        let boot = BootInfo::new(
            trampoline::<Connection, ()>,
            serve as fn(Connection) as *const (),
            &Identity {
                name: "ForkServer".into(),
                daemon: false,
                ..id.clone()
            },
            StartMethod::Spawn,
        )?;
        let told = conn.send(&boot).and_then(|()| conn.send(&theirs));
        drop(theirs);
        let server = Arc::new(ChildInner::new(
            pid,
            pidfd,
            conn,
            "ForkServer".into(),
            StartMethod::Spawn,
            None,
        ));
        Self::with_first_child(ours, server, told)
    }

    /// A server whose control channel is `ctrl`, told its boot (`told`), asked for its first
    /// child; discarded on failure.
    fn with_first_child(
        ctrl: Connection,
        server: Arc<ChildInner>,
        told: Result<()>,
    ) -> Result<Self> {
        let mut s = ForkServer {
            ctrl,
            server,
            prepared: None,
            broken: false,
        };
        match told.and_then(|()| s.prepare()) {
            Ok(c) => {
                s.prepared = Some(c);
                Ok(s)
            }
            Err(e) => {
                s.discard();
                Err(e)
            }
        }
    }

    /// A server forked from this process now (a zygote): its children are copies of this
    /// process as it is at this moment, made by a single-threaded process whatever threads we
    /// start later. Refused (as `fork` is) if this process has several threads now.
    pub(crate) fn fork_now() -> Result<ForkServer> {
        let (ours, theirs) = pipe()?;
        let ours_fd = std::os::fd::AsRawFd::as_raw_fd(&ours);
        let server_lock = lock();
        let mut g = global::lock();
        let id = g.next_child(Some("Zygote".into()), false, StartMethod::Fork);
        let (g, server) = start::fork::start(server_lock, g, id, false, move || {
            // The zygote is a copy of this process, `ours` included: that copy would keep the
            // control channel open after our death, and the zygote would wait on it forever
            // (found by `cargo xtask chaos`, scenario pool-owner under fork). Close it first.
            // SAFETY: in the forked child, `ours_fd` belongs only to the copy of `ours` in this
            // function's frame, which the child never uses and never drops: `serve` runs until
            // the channel ends and the child then exits without returning here.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ours_fd) });
            serve(theirs)
        })?;
        drop(g);
        Self::with_first_child(ours, server, Ok(()))
    }

    /// Asks the server for a child waiting on a new connection; returns our end. If the server
    /// cannot be told, it is marked broken.
    fn prepare(&mut self) -> Result<Connection> {
        let (ours, theirs) = pipe()?;
        self.ctrl
            .send(&Request::Prepare(theirs))
            .inspect_err(|_| self.broken = true)?;
        Ok(ours)
    }

    /// Whether the server must be replaced: a message to it failed, or it has exited (a poll of
    /// its pidfd, about a microsecond, so that the next start finds a child prepared).
    pub(crate) fn is_broken(&self) -> bool {
        self.broken || self.server.has_exited()
    }

    /// The server's response to the oldest unanswered `Prepare`; an error if the server is gone
    /// or has not answered by `deadline` (stopped, or hopelessly overloaded: then it is broken,
    /// and replaced).
    fn response(&mut self, deadline: Instant) -> Result<Response> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.ctrl
            .recv_timeout::<Response>(left)
            .map_err(|e| self.unanswered(e))
            .inspect_err(|_| self.broken = true)
    }

    /// A timeout waiting on the server, as an error that says what happened.
    fn unanswered(&self, e: Error) -> Error {
        match e {
            Error::Timeout => Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the forkserver (pid {}) did not answer within {} s: it is stopped or \
                     overloaded, and is replaced",
                    self.pid(),
                    ANSWER_TIMEOUT.as_secs()
                ),
            )),
            other => other,
        }
    }

    /// Takes the prepared child (asking for the next one at once), waiting for it if need be.
    ///
    /// Each child is known two ways: its own hello on its connection, and the server's response
    /// on the control channel. Either is enough, so one process dying at any moment (the
    /// server, or the child before its hello) leaves no child of ours unknown, hence none
    /// unreaped; both dying is repaired when the server is discarded.
    pub(crate) fn launch(&mut self) -> Launch {
        // A prepared child killed while it waited is reaped and replaced, once or twice.
        for _ in 0..3 {
            let conn = match self.prepared.take().map_or_else(|| self.prepare(), Ok) {
                Ok(c) => c,
                Err(e) if self.broken => return Launch::ServerGone(e),
                Err(e) => return Launch::Done(Err(e)),
            };
            // The server forks the next child while this one starts and runs. If it cannot be
            // told, it is marked broken, and replaced after this start.
            self.prepared = self.prepare().ok();
            // A server (or prepared child) that cannot answer, for example because it was
            // stopped (SIGSTOP), is given up after ANSWER_TIMEOUT: the start is then made on a
            // new server instead of waiting forever.
            let deadline = Instant::now() + ANSWER_TIMEOUT;
            let hello = conn.recv_timeout::<Hello>(ANSWER_TIMEOUT);
            let pid = match (hello, self.response(deadline)) {
                (Ok(Hello { pid }), Ok(Response::Forked { pid: forked })) if pid == forked => pid,
                // The server died after the fork: the child is ours all the same.
                (Ok(Hello { pid }), Err(_)) => pid,
                (Ok(Hello { pid }), Ok(_)) => {
                    // Not the child the server reports: our protocol is out of step. Stop the
                    // child if it is ours, and the server.
                    if let Some(pid) = Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, Signal::KILL);
                        let _ = reap(pid);
                    }
                    self.broken = true;
                    return Launch::ServerGone(Error::malformed(
                        "forkserver answered for another child",
                    ));
                }
                // The child died before its hello (or somebody else took it): make sure it is
                // gone (ours and unreaped, so the pid is still its own), reap it, take the next.
                (Err(_), Ok(Response::Forked { pid })) => {
                    if let Some(pid) = Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, Signal::KILL);
                        let _ = reap(pid);
                    }
                    continue;
                }
                (Err(_), Ok(Response::Failed(msg))) => {
                    return Launch::Done(Err(Error::Io(std::io::Error::other(format!(
                        "forkserver: {msg}"
                    )))));
                }
                // Neither: the server died before forking, so no child exists for this start,
                // and none will run.
                (Err(e), Err(_)) => return Launch::ServerGone(self.unanswered(e)),
            };
            let Some(pid) = Pid::from_raw(pid) else {
                self.broken = true;
                return Launch::ServerGone(Error::malformed("forkserver child said pid 0"));
            };
            // Our own child, not yet reaped (only we reap it): its pid cannot have been reused.
            let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
                Ok(fd) => fd,
                Err(e) => {
                    let _ = rustix::process::kill_process(pid, Signal::KILL);
                    let _ = reap(pid);
                    return Launch::Done(Err(Error::os(e)));
                }
            };
            if crate::conn::wait(&[&pidfd], Some(Duration::ZERO)).is_ok_and(|r| !r.is_empty()) {
                // Killed while it waited: reap it, take the next.
                let _ = reap(pid);
                continue;
            }
            return Launch::Done(Ok(Launched { pid, pidfd, conn }));
        }
        Launch::Done(Err(Error::Io(std::io::Error::other(
            "forkserver: every prepared child died before it could start",
        ))))
    }

    /// Whether this process started the server (a process forked from ours holds a copy).
    pub(crate) fn is_creator(&self) -> bool {
        self.server.is_creator()
    }

    /// The server's pid.
    pub(crate) fn pid(&self) -> i32 {
        self.server.pid.as_raw_nonzero().get()
    }

    /// Closes the control channel (the server leaves when it sees end of file), reaps the server
    /// and the prepared child.
    ///
    /// Nothing here waits for a descriptor to close: a process forked from ours outside this
    /// crate may hold copies of them. The prepared child (ours and unreaped, so its pid is its
    /// own) is killed, and the control channel is shut down for every holder.
    pub(crate) fn stop(mut self) {
        // The prepared child is ours: learn its pid (from the server, or from the child if the
        // server died after forking it), then stop it and reap it.
        if let Some(conn) = self.prepared.take() {
            let deadline = Instant::now() + ANSWER_TIMEOUT;
            let pid = match self.response(deadline) {
                Ok(Response::Forked { pid }) => Some(pid),
                _ => conn
                    .recv_timeout::<Hello>(deadline.saturating_duration_since(Instant::now()))
                    .ok()
                    .map(|h| h.pid),
            };
            drop(conn);
            if let Some(pid) = pid.and_then(Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
                let _ = reap(pid);
            }
        }
        let _ = rustix::net::shutdown(&self.ctrl, rustix::net::Shutdown::Both);
        drop(self.ctrl);
        let _ = self.server.wait(None);
    }

    /// Stops a server whose control channel broke: it may still run (a protocol error), so it
    /// is killed before it is reaped, and with it every child of its that never said hello.
    ///
    /// Such a child is ours (forked with `CLONE_PARENT`) but may be unknown: if it and the
    /// server die before either tells us its pid, nobody would reap it. The server leads a
    /// process group of its own, which its children leave (for our parent's group) just before
    /// their hello; so the children still in it are exactly those we may not know. The whole
    /// group is killed while the server is unreaped (its pid, which names the group, cannot be
    /// reused meanwhile), then every child of ours left in the group is reaped, the server
    /// with them.
    pub(crate) fn discard(self) {
        let group = self.server.pid;
        if rustix::process::kill_process_group(group, Signal::KILL).is_err() {
            // No group (the server died before making it): the server alone.
            let _ = self.server.signal(Signal::KILL);
        }
        while let Ok(Some(_)) | Err(Errno::INTR) =
            rustix::process::waitpgid(group, rustix::process::WaitOptions::empty())
        {}
        self.stop();
    }
}

/// A zygote: a copy of this process made now, single-threaded, that forks children on request
/// (the fork start method for a process that will have threads, as a pool does: the children
/// are copies of this process as it was when the zygote was made, not as it is when they
/// start). Its children are this process's own, as under every start method.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # // Doc tests run on a thread of their own: a zygote needs a single-threaded process.
/// # let worker = ipc_core::process::Builder::new()
/// #     .start_method(ipc_core::process::StartMethod::Spawn)
/// #     .spawn((), |()| {
/// use ipc_core::process::{Builder, Zygote};
/// let zygote = Zygote::new().unwrap(); // while this process has one thread
/// let helper = std::thread::spawn(|| ()); // threads may come now
/// let child = Builder::new().zygote(&zygote).spawn(20u32, |x| x + 1).unwrap();
/// assert_eq!(child.join().unwrap(), 21);
/// helper.join().unwrap();
/// # })?;
/// # worker.join()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Zygote {
    inner: Arc<ZygoteInner>,
}

struct ZygoteInner {
    server: Mutex<Option<ForkServer>>,
    pid: u32,
}

impl Zygote {
    /// Forks the zygote now; an error if this process has several threads (the fork would copy
    /// locks held by the others: start the zygote before the threads).
    pub fn new() -> Result<Zygote> {
        let server = ForkServer::fork_now()?;
        let pid = server.pid() as u32;
        Ok(Zygote {
            inner: Arc::new(ZygoteInner {
                server: Mutex::new(Some(server)),
                pid,
            }),
        })
    }

    /// The zygote's pid.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// Starts a child through the zygote (see [`launch`](ForkServer::launch)). A zygote that
    /// died cannot be replaced (this process may have threads now): an error says so.
    pub(crate) fn launch(&self) -> Result<Launched> {
        let mut slot = self.inner.server.lock().unwrap_or_else(|p| p.into_inner());
        let Some(server) = slot.as_mut() else {
            return Err(Error::Io(std::io::Error::other(format!(
                "the zygote (pid {}) is gone: a zygote cannot be replaced once this process \
                 has threads",
                self.inner.pid
            ))));
        };
        match server.launch() {
            Launch::Done(done) => {
                if server.is_broken()
                    && let Some(dead) = slot.take()
                {
                    dead.discard();
                }
                done
            }
            Launch::ServerGone(e) => {
                if let Some(dead) = slot.take() {
                    dead.discard();
                }
                Err(e)
            }
        }
    }
}

impl std::fmt::Debug for Zygote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zygote")
            .field("pid", &self.inner.pid)
            .finish()
    }
}

impl Drop for ZygoteInner {
    fn drop(&mut self) {
        let slot = self.server.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(server) = slot.take()
            && server.is_creator()
        {
            server.stop();
        }
    }
}

/// How a request to the server ended.
pub(crate) enum Launch {
    /// The server answered: a child, or the reason there is none.
    Done(Result<Launched>),
    /// The server is gone and no child of this request exists: replace it and ask again.
    ServerGone(Error),
}

/// A prepared child's life before its start: say hello, wait for the boot message, run. End of
/// file before the boot message (the parent stopped or died) ends it quietly. It never returns
/// into the server's frames, nor unwinds into them: a panic ends the process here.
fn prepared_main(conn: Connection, group: Pid) -> ! {
    // SAFETY: this function never returns, and a panic below is caught before it could unwind
    // into the server's frames, which own the boot connection.
    unsafe { close_boot_connection() };
    let outcome = catch_unwind(AssertUnwindSafe(move || {
        crate::failpoint::hit("forkserver.forked");
        // Leave the server's process group before we are known (see [`serve`]).
        if rustix::process::setpgid(None, Some(group)).is_err() {
            sys::exit_now(BOOT_FAILED);
        }
        let pid = rustix::process::getpid().as_raw_nonzero().get();
        if conn.send(&Hello { pid }).is_err() {
            sys::exit_now(0);
        }
        match conn.recv::<BootInfo>() {
            Ok(boot) => run_child(conn, boot),
            Err(Error::Eof) => sys::exit_now(0),
            Err(e) => {
                eprintln!("ipc-core: child could not read its instructions: {e}");
                sys::exit_now(BOOT_FAILED)
            }
        }
    }));
    // Dropping a panic payload may panic again and unwind: leak it instead.
    let Err(payload) = outcome;
    std::mem::forget(payload);
    sys::exit_now(BOOT_FAILED)
}

/// The server's main loop: runs in the spawned server process until the control channel closes.
fn serve(ctrl: Connection) {
    let forker = SiblingFork::new();
    // What every child does once would otherwise be done (and its pages written) in each child:
    // register the codec's thread-local destructors, set up the standard streams.
    crate::codec::prepare_for_fork();
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let _ = std::io::Write::flush(&mut std::io::stderr());
    // A process group of our own, which our children share until they said hello and move to
    // our parent's group (see [`ForkServer::discard`]).
    let group = rustix::process::getpgrp();
    let _ = rustix::process::setpgid(None, None);
    // Until the control channel ends: our parent exited or was killed (end of file), or can
    // no longer hear us (a response failed), or sent what we cannot read (say, its descriptors
    // were dropped for want of free ones: our parent sees the channel break and replaces us).
    while let Ok(Request::Prepare(conn)) = ctrl.recv::<Request>() {
        // SAFETY: the server is single-threaded (it runs nothing but this loop, on the thread
        // that made `forker`), so the fork cannot leave a lock held by another thread in the
        // child.
        let response = match unsafe { forker.fork() } {
            Ok(Forked::Child) => {
                // The child keeps nothing of the server's but the standard streams: a copy of
                // the control channel would hide our parent's death from the server.
                drop(ctrl);
                prepared_main(conn, group)
            }
            Ok(Forked::Parent(pid)) => {
                crate::failpoint::hit("forkserver.forked");
                Response::Forked {
                    pid: pid.as_raw_nonzero().get(),
                }
            }
            Err(e) => Response::Failed(format!("fork failed: {e}")),
        };
        drop(conn);
        if ctrl.send(&response).is_err() {
            break;
        }
    }
}
