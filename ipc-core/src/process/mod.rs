//! Processes that run your functions, like `std::thread` but with real OS processes.
//!
//! ```
//! use ipc_core::process::{Builder, StartMethod};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let child = Builder::new().name("squarer").start_method(StartMethod::Spawn).spawn(7, square)?;
//! assert_eq!(child.join()?, 49);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Start methods
//! - [`StartMethod::Fork`]: `fork(2)`; the copy runs the function (or any closure, with
//!   [`Builder::fork`]). Fastest; refused in a multithreaded process unless you opt in.
//! - [`StartMethod::Spawn`]: re-executes the current binary; the child is routed to the function
//!   before `main`, so it needs no code in `main` and works in tests and doc tests. The function
//!   runs from an `.init_array` constructor, before std's `main` machinery: `std::env::args()`
//!   (this process's arguments) and panics (caught, reported to `join` with their message)
//!   work, but the main thread has no name, constructors that run after ipc-core's (the `ctor`
//!   crate's, in link order) have not run, and std's stack-overflow handler is not installed,
//!   so a stack overflow there ends the child with SIGSEGV (exit code -11) and no message.
//! - [`StartMethod::ForkServer`] (the default): a clean single-threaded server process, spawned
//!   once, forks each child. Nearly as fast as fork and safe in multithreaded programs.
//!
//! Why the default is the forkserver: measured on the 2-vCPU development VM (release build,
//! `cargo xtask compare`, medians of several runs), start+join of a trivial function costs
//! 0.2-0.3 ms by fork, 0.2-0.25 ms through the forkserver and 1.0-1.15 ms by spawn (CPython
//! 3.11 in the same runs: 1.7-2.4 ms, 10-14 ms and 57-68 ms). The forkserver is even faster
//! than fork here: it forks a small process, ahead of time, while fork copies the caller's
//! page tables on the caller's path. Fork is refused once a process has threads (a test harness,
//! a logging thread, an async runtime), so a default that breaks when a thread appears would be
//! a trap; the forkserver works everywhere fork is unsound and costs one spawn the first time.
//!
//! # Exit codes
//! [`JoinHandle::exitcode`] follows Python: `None` while running, `0` after a normal return, `1`
//! when the function panicked (the message is on the child's stderr and in [`JoinError`]), `-N`
//! when a signal `N` killed the process.
//!
//! # Daemons
//! When this process exits normally (`main` returns or `std::process::exit`), daemon children are
//! terminated (SIGTERM, then SIGKILL after 2 s) and the others joined. When this process is
//! killed, daemon children die too, under every start method and whichever thread started them:
//! each holds a [lifeline](lifeline) whose hang-up at our death makes the kernel kill it. (A
//! process forked from ours outside this crate, say by `libc::fork` without an exec, keeps our
//! daemons alive for as long as it lives.) A daemon cannot start children.

pub(crate) mod bootstrap;
pub(crate) mod child;
pub(crate) mod function;
pub(crate) mod global;
pub(crate) mod lifeline;
pub(crate) mod slot;
pub(crate) mod start;
pub mod state;

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use child::{ChildInner, Outcome};
pub use function::{AfterCall, PackedArgs, RemoteFn, family_key, join_family};
use start::Launched;
pub use start::forkserver::Zygote;

/// How a child process is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// `fork(2)`: the child is a copy of this process.
    Fork,
    /// fork+exec of the current executable (Python's "spawn").
    Spawn,
    /// A clean server process forks children on request (Python's "forkserver").
    ForkServer,
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        })
    }
}

impl std::str::FromStr for StartMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fork" => Ok(StartMethod::Fork),
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::ForkServer),
            other => Err(Error::misuse(format!(
                "unknown start method {other:?}: expected fork, spawn or forkserver"
            ))),
        }
    }
}

/// The start method used when a [`Builder`] names none (see the module docs for why).
pub fn default_start_method() -> StartMethod {
    global::lock()
        .default_method
        .unwrap_or(StartMethod::ForkServer)
}

/// Changes the start method used when a [`Builder`] names none, for this process.
#[doc(alias = "set_start_method")]
pub fn set_default_start_method(method: StartMethod) {
    global::lock().default_method = Some(method);
}

/// Configures and starts a child process (Python's `Process(...)`, with `start` as
/// [`spawn`](Builder::spawn)).
#[doc(alias = "Process")]
#[derive(Debug, Clone, Default)]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
    allow_threads: bool,
    zygote: Option<Zygote>,
}

impl Builder {
    /// A builder with defaults: generated name (`Process-N`), not a daemon, default start method.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The child's name, as [`current_process`] reports it in the child.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// A daemon child is terminated when this process exits and killed when it dies; it cannot
    /// start children of its own.
    pub fn daemon(mut self, daemon: bool) -> Builder {
        self.daemon = daemon;
        self
    }

    /// How to start the child.
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// Starts the child through `zygote` (a copy of this process made earlier, while it had one
    /// thread): the fork start method for a process that has threads now. Overrides the start
    /// method.
    pub fn zygote(mut self, zygote: &Zygote) -> Builder {
        self.zygote = Some(zygote.clone());
        self
    }

    /// Allows the fork start method in a process that has several threads.
    ///
    /// # Safety
    /// After `fork` only the calling thread exists in the child. Any lock another thread held at
    /// that moment (inside the allocator, stdout, a logger, your own mutexes) stays locked in the
    /// child forever. The caller guarantees that the child's code never needs such a lock, for
    /// example because the other threads are known to be idle.
    #[allow(unsafe_code)] // An unsafe contract with no unsafe operation inside: see Safety.
    pub unsafe fn allow_fork_with_threads(mut self) -> Builder {
        self.allow_threads = true;
        self
    }

    /// Starts a child running `f(arg)` and returns a handle to join it for the result.
    ///
    /// `f` is a function or a non-capturing closure: under spawn and forkserver it is found in the
    /// child by its position in the executable, and `arg` (postcard) carries the data. Shared
    /// objects (connections, segments, ipc-sync's locks and queues) can be part of `arg`.
    #[doc(alias = "start")]
    pub fn spawn<A, R>(self, arg: A, f: fn(A) -> R) -> Result<JoinHandle<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let zygote = self.zygote.clone();
        let method = match &zygote {
            Some(_) => StartMethod::Fork,
            None => self.method.unwrap_or_else(default_start_method),
        };
        // Encode first: an argument that cannot travel is the caller's error, and no child is
        // started for it.
        let mut arg_frame = Vec::new();
        let fds = codec::encode(&arg, &mut arg_frame)?;
        if method == StartMethod::Fork && zygote.is_none() {
            // The argument travels by its encoding under fork too, so that every shared object
            // reaches the child the same way under every start method (a manager proxy makes
            // a connection of its own for the child instead of sharing its parent's socket).
            // The child decodes the inherited bytes with its inherited copies of the
            // descriptors.
            drop(arg);
            return self.fork_closure(move || {
                let arg: A = match codec::decode(&arg_frame, fds) {
                    Ok(a) => a,
                    Err(e) => panic!("the argument did not decode in the forked child: {e}"),
                };
                // Freeing the bytes would write to two pages shared with the parent (the
                // allocator's and the block's), each then copied for the child: they go with
                // the child's exit instead.
                std::mem::forget(arg_frame);
                f(arg)
            });
        }
        let mut g = global::lock();
        self.check_may_start(&g)?;
        let id = g.next_child(self.name, self.daemon, method);
        let mut boot =
            bootstrap::BootInfo::new(bootstrap::trampoline::<A, R>, f as *const (), &id, method)?;
        // The child exists (and is ours) before it is told anything: the boot message and the
        // argument go out only now, after the lock is released.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let launched = match (&zygote, method) {
                // A zygote has a lock of its own too.
                (Some(z), _) => {
                    drop(g);
                    let launched = z.launch();
                    g = global::lock();
                    launched?
                }
                // fork+exec of this executable touches no process-wide state: other threads'
                // `current_process` and `active_children` need not wait for it.
                (None, StartMethod::Spawn) => {
                    drop(g);
                    let launched = start::spawn::launch();
                    g = global::lock();
                    launched?
                }
                // Neither does a start through the forkserver, which has a lock of its own.
                (None, _) => {
                    drop(g);
                    let launched = start::forkserver::launch();
                    g = global::lock();
                    launched?
                }
            };
            let Launched { pid, pidfd, conn } = launched;
            // A daemon's lifeline goes out with its boot message (a new one per attempt: the
            // record of a failed attempt closes its end).
            let (keep, give) = match self.daemon {
                true => match lifeline::new() {
                    Ok((k, g)) => (Some(k), Some(g)),
                    Err(e) => {
                        // Out of descriptors, say: the child exists and is ours to end.
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                        let _ = child::reap(pid);
                        return Err(e);
                    }
                },
                false => (None, None),
            };
            boot.lifeline = give.map(codec::TransferFd);
            let inner = Arc::new(ChildInner::new(
                pid,
                pidfd,
                conn,
                id.name.clone(),
                method,
                keep,
            ));
            g.register(inner.clone());
            drop(g);
            let sent = {
                let st = inner.lock();
                let c = st.conn.as_ref().expect("fresh child has its connection");
                c.send(&boot)
                    .and_then(|()| c.send_encoded(&arg_frame, &fds))
            };
            let Err(e) = sent else {
                return Ok(JoinHandle {
                    inner,
                    _result: PhantomData,
                });
            };
            // The child cannot run (it died, or the descriptors could not be sent): make sure
            // it is gone before reporting.
            let _ = inner.signal(rustix::process::Signal::KILL);
            let _ = inner.wait(None);
            g = global::lock();
            g.forget(&inner);
            // A prepared forkserver child that was killed while it waited may still look alive
            // when it is taken, and only its closed connection tells: it never read its
            // argument, so the start is made again with the next one.
            let peer_gone = matches!(&e, Error::Io(io) if matches!(
                io.raw_os_error(),
                Some(libc::EPIPE | libc::ECONNRESET)
            ));
            if method != StartMethod::ForkServer || !peer_gone || attempts == 3 {
                return Err(e);
            }
        }
    }

    /// Forks a child running the closure `f` (fork start method only: the closure's captures are
    /// copied with the whole address space, not serialized).
    ///
    /// ```
    /// let greeting = String::from("hello");
    /// let child = ipc_core::process::Builder::new().fork(move || greeting.len())?;
    /// assert_eq!(child.join()?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// The closure is `Send + 'static`, as `std::thread::spawn`'s: this process drops its own
    /// copy of the captures when the child starts, so a captured borrow or lock guard would be
    /// released here while the child still uses it. A guard does not compile:
    /// ```compile_fail
    /// let m = std::sync::Mutex::new(0);
    /// let mut g = m.lock().unwrap();
    /// let child = ipc_core::process::fork(move || { *g += 1; })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    /// and neither does a borrow:
    /// ```compile_fail
    /// let mut total = 0u64;
    /// let r = &mut total;
    /// let child = ipc_core::process::fork(move || { *r += 1; })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fork<F, R>(self, f: F) -> Result<JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        self.fork_closure(f)
    }

    /// [`fork`](Self::fork) without its bounds, for closures known to capture nothing that
    /// this process's drop could release under the child.
    fn fork_closure<F, R>(self, f: F) -> Result<JoinHandle<R>>
    where
        F: FnOnce() -> R,
        R: Serialize + DeserializeOwned,
    {
        if let Some(m) = self.method.filter(|m| *m != StartMethod::Fork) {
            return Err(Error::misuse(format!(
                "Builder::fork runs a closure by forking; it cannot use the {m} start method \
                 (use Builder::spawn with a function)"
            )));
        }
        // Both locks, in their order, held across the fork (see `start::fork`).
        let server = start::forkserver::lock();
        let mut g = global::lock();
        self.check_may_start(&g)?;
        let id = g.next_child(self.name, self.daemon, StartMethod::Fork);
        let (mut g, inner) = start::fork::start(server, g, id, self.allow_threads, f)?;
        g.register(inner.clone());
        Ok(JoinHandle {
            inner,
            _result: PhantomData,
        })
    }

    fn check_may_start(&self, g: &global::Global) -> Result<()> {
        if g.identity.daemon {
            return Err(Error::misuse(format!(
                "{} is a daemon process and cannot start child processes (as in Python): \
                 start it with daemon(false) if it needs children",
                g.name()
            )));
        }
        Ok(())
    }
}

/// Starts a child running `f(arg)` with the default [`Builder`].
///
/// ```
/// let child = ipc_core::process::spawn((2u32, 3u32), |(a, b)| a + b)?;
/// assert_eq!(child.join()?, 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn spawn<A, R>(arg: A, f: fn(A) -> R) -> Result<JoinHandle<R>>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    Builder::new().spawn(arg, f)
}

/// Forks a child running the closure `f` (see [`Builder::fork`]).
pub fn fork<F, R>(f: F) -> Result<JoinHandle<R>>
where
    F: FnOnce() -> R + Send + 'static,
    R: Serialize + DeserializeOwned,
{
    Builder::new().fork(f)
}

/// Why [`JoinHandle::join`] has no result.
#[derive(Debug)]
#[non_exhaustive]
pub enum JoinError {
    /// The function panicked (exit code 1); the panic message.
    Panicked(String),
    /// A signal killed the process (exit code `-signal`).
    Signaled(i32),
    /// The process exited with this code without returning a result (for example it called
    /// `std::process::exit`).
    Exited(i32),
    /// The child could not run the function or send its result (the reason).
    Failed(String),
    /// Waiting or reading the result failed.
    Io(Error),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(m) => write!(f, "the child process panicked: {m}"),
            JoinError::Signaled(s) => write!(f, "the child process was killed by signal {s}"),
            JoinError::Exited(c) => {
                write!(f, "the child process exited with code {c} without a result")
            }
            JoinError::Failed(m) => write!(f, "the child process could not run: {m}"),
            JoinError::Io(e) => write!(f, "joining the child process failed: {e}"),
        }
    }
}

impl std::error::Error for JoinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JoinError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Error> for JoinError {
    fn from(e: Error) -> Self {
        JoinError::Io(e)
    }
}

/// An owned permission to join a child process and get its result, like
/// `std::thread::JoinHandle`.
///
/// Dropping the handle detaches the child: it keeps running, and is reaped when it exits (at the
/// next start, at [`active_children`], or at this process's exit, which also joins it unless it
/// is a daemon).
#[doc(alias = "Process")]
pub struct JoinHandle<R> {
    inner: Arc<ChildInner>,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for JoinHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("pid", &self.pid())
            .field("name", &self.name())
            .field("daemon", &self.inner.daemon)
            .field("start_method", &self.inner.method)
            .field("exitcode", &self.inner.lock().exitcode)
            .finish()
    }
}

impl<R> Drop for JoinHandle<R> {
    fn drop(&mut self) {
        // A child that has been reaped (joined, or polled to its end) needs no record any more:
        // forget it now, so that its pidfd and connections close with the handle instead of
        // waiting for the next start. A running child stays registered, to be reaped later.
        // `try_lock`: whoever holds the state (another thread's `active_children`) is brief, and
        // the record is pruned at the next start anyway.
        let reaped = self
            .inner
            .state
            .try_lock()
            .is_ok_and(|st| st.exitcode.is_some());
        if reaped && self.inner.is_creator() {
            global::lock().forget(&self.inner);
        }
    }
}

impl<R: DeserializeOwned> JoinHandle<R> {
    /// Waits for the child to finish and returns its function's result.
    ///
    /// The result is the function's whenever it returned one, even if the process was killed
    /// on its way out afterwards ([`exitcode`](Self::exitcode) then says `-9`); a child killed
    /// before its function returned gives [`JoinError::Signaled`]. That includes a forkserver
    /// child killed while it waited, idle, for its start: whoever kills processes of ours that
    /// they do not know about gets the same answer as for any other kill.
    pub fn join(self) -> Result<R, JoinError> {
        self.inner.check_creator("join")?;
        let code = self
            .inner
            .wait(None)?
            .expect("waiting without a deadline ends with an exit code");
        let outcome = self.inner.lock().outcome.take();
        match outcome {
            Some(Ok((bytes, fds))) => match codec::decode::<Outcome<R>>(&bytes, fds) {
                Ok(Outcome::Returned(r)) => Ok(r),
                Ok(Outcome::Panicked(m)) => Err(JoinError::Panicked(m)),
                Ok(Outcome::Failed(m)) => Err(JoinError::Failed(m)),
                Err(e) => Err(JoinError::Io(e)),
            },
            _ if code < 0 => Err(JoinError::Signaled(-code)),
            Some(Err(Error::Eof)) | None => Err(JoinError::Exited(code)),
            Some(Err(e)) => Err(JoinError::Io(e)),
        }
    }
}

impl<R> JoinHandle<R> {
    /// Waits up to `timeout` for the child to exit; returns its exit code (Python's
    /// `join(timeout)` followed by `exitcode`), or [`Error::Timeout`] if it is still running.
    /// The result stays available to [`join`](Self::join).
    ///
    /// Every `join_timeout` of the workspace has this shape: `Ok` with what the join gives, or
    /// a timeout error (as `Connection::recv_timeout`); [`try_wait`](Self::try_wait) is the
    /// non-blocking form with `std`'s `Option`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<i32> {
        self.inner.check_creator("join")?;
        self.inner
            .wait(Some(Instant::now() + timeout))?
            .ok_or(Error::Timeout)
    }

    /// The exit code if the child has finished (reaping it), else `None`; never blocks, as
    /// `std::process::Child::try_wait`. The result stays available to [`join`](Self::join).
    /// Unlike [`exitcode`](Self::exitcode), errors are reported, and only the process that
    /// started the child may ask.
    ///
    /// ```
    /// use std::time::Duration;
    /// let child = ipc_core::process::spawn(50u64, |ms| std::thread::sleep(Duration::from_millis(ms)))?;
    /// assert_eq!(child.try_wait()?, None); // still sleeping
    /// assert_eq!(child.join_timeout(Duration::from_secs(30))?, 0);
    /// assert_eq!(child.try_wait()?, Some(0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_wait(&self) -> Result<Option<i32>> {
        self.inner.check_creator("wait for")?;
        self.inner.try_wait()
    }

    /// The exit code if the child has finished, else `None` (never blocks).
    ///
    /// Only the process that started the child reaps it and learns its exit code; in another
    /// process (a fork child holding a copy of this handle) this is the code known at the fork,
    /// if any, and the child's result is left for its creator to join.
    pub fn exitcode(&self) -> Option<i32> {
        if self.inner.is_creator() {
            self.inner.try_wait().ok().flatten()
        } else {
            self.inner.lock().exitcode
        }
    }

    /// Whether the child is still running (in any process holding the handle: a process that
    /// did not start the child asks the kernel without reaping it). Python's `is_alive()`; the
    /// Rust name for the opposite is [`is_finished`](Self::is_finished).
    pub fn is_alive(&self) -> bool {
        if self.inner.is_creator() {
            self.exitcode().is_none()
        } else {
            self.inner.lock().exitcode.is_none() && !self.inner.has_exited()
        }
    }

    /// Whether the child has finished (the negation of [`is_alive`](Self::is_alive), named as
    /// `std::thread::JoinHandle::is_finished`): `join` will not block.
    pub fn is_finished(&self) -> bool {
        !self.is_alive()
    }

    /// Asks the child to stop (SIGTERM). The exit code becomes `-15` unless it handles the
    /// signal. A child that has already finished is left alone.
    pub fn terminate(&self) -> Result<()> {
        self.inner.check_creator("terminate")?;
        self.inner.signal(rustix::process::Signal::TERM)
    }

    /// Interrupts the child as Ctrl-C would (SIGINT): its exit code becomes `-2` unless it
    /// handles the signal (Rust has no `KeyboardInterrupt`, so a child that does not handle it
    /// ends as with the signal's default action). A child that has already finished is left
    /// alone.
    pub fn interrupt(&self) -> Result<()> {
        self.inner.check_creator("interrupt")?;
        self.inner.signal(rustix::process::Signal::INT)
    }

    /// Kills the child (SIGKILL): its exit code becomes `-9`.
    pub fn kill(&self) -> Result<()> {
        self.inner.check_creator("kill")?;
        self.inner.signal(rustix::process::Signal::KILL)
    }

    /// The child's process id (`u32`, as `std::process::Child::id`).
    pub fn pid(&self) -> u32 {
        self.inner.pid.as_raw_nonzero().get() as u32
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether the child is a daemon.
    pub fn daemon(&self) -> bool {
        self.inner.daemon
    }

    /// How the child was started.
    pub fn start_method(&self) -> StartMethod {
        self.inner.method
    }

    /// A descriptor that polls readable once the child has exited (a pidfd), for
    /// `ipc_core::conn::wait` (Python's `Process.sentinel`).
    pub fn sentinel(&self) -> BorrowedFd<'_> {
        self.inner.pidfd.as_fd()
    }
}

/// What a process knows about itself (Python's `current_process()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// "MainProcess" in the root, else the name its parent gave it.
    pub name: String,
    /// The process id.
    pub pid: u32,
    /// Whether it is a daemon.
    pub daemon: bool,
    /// How it was started (`None` in the root).
    pub start_method: Option<StartMethod>,
    /// Python's `_identity`: child counters from the root (empty in the root).
    pub identity: Vec<u32>,
}

/// This process: its name, pid and daemon flag.
///
/// ```
/// let me = ipc_core::process::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id());
/// ```
pub fn current_process() -> ProcessInfo {
    let g = global::lock();
    ProcessInfo {
        name: g.name(),
        pid: pid(),
        daemon: g.identity.daemon,
        start_method: g.identity.start_method,
        identity: g.identity.path.clone(),
    }
}

/// The process that started this one, if this process was started by ipc-core.
#[derive(Debug)]
pub struct ParentProcess {
    pid: i32,
    name: String,
    pidfd: Option<OwnedFd>,
}

impl ParentProcess {
    /// The parent's pid.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// The parent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the parent is still running.
    pub fn is_alive(&self) -> bool {
        matches!(self.join_timeout(Duration::ZERO), Err(Error::Timeout))
    }

    /// Waits up to `timeout` for the parent to exit: `Ok` once it has, [`Error::Timeout`] if it
    /// still runs (its exit code belongs to its own parent).
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        let Some(fd) = &self.pidfd else {
            return Ok(());
        };
        match crate::conn::wait(&[fd], Some(timeout))?.is_empty() {
            true => Err(Error::Timeout),
            false => Ok(()),
        }
    }
}

/// The parent of this process (Python's `parent_process()`): `None` in a process not started by
/// ipc-core.
pub fn parent_process() -> Option<ParentProcess> {
    let g = global::lock();
    let (pid, name) = g.identity.parent.clone()?;
    let pidfd = rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    // If the parent already exited and was reaped, pidfd_open fails: report it as gone.
    Some(ParentProcess { pid, name, pidfd })
}

/// This process's pid, as `std::process::id()` gives it, but cached: a relaxed load instead
/// of a system call, and right in the child of any fork, however it was made (the cache lives
/// in a page the kernel wipes in forked children).
///
/// ```
/// assert_eq!(ipc_core::process::pid(), std::process::id());
/// ```
#[inline]
pub fn pid() -> u32 {
    crate::sys::pid() as u32
}

/// The pid of this process's forkserver, if it has started one (it starts with the first
/// forkserver child).
pub fn forkserver_pid() -> Option<u32> {
    start::forkserver::lock().as_ref().map(|s| s.pid() as u32)
}

/// A live child of this process, as [`active_children`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// The child's pid.
    pub pid: u32,
    /// The child's name.
    pub name: String,
    /// Whether it is a daemon.
    pub daemon: bool,
}

/// The children of this process that are still running. Children that have finished are reaped
/// on the way, as in Python.
pub fn active_children() -> Vec<ChildInfo> {
    let children: Vec<Arc<ChildInner>> = {
        let mut g = global::lock();
        g.forget_inherited();
        g.children.clone()
    };
    let mut finished = Vec::new();
    let mut alive = Vec::new();
    for c in children {
        // Never blocks: a join in another thread holds the child's state only for instants.
        match c.try_wait() {
            // Exited but being settled by another thread's join (its outcome still being read),
            // or unknown: not active, and its record stays until that join is done.
            Ok(None) if c.has_exited() => {}
            Ok(None) => alive.push(ChildInfo {
                pid: c.pid.as_raw_nonzero().get() as u32,
                name: c.name.clone(),
                daemon: c.daemon,
            }),
            _ => finished.push(c),
        }
    }
    // Reaped children whose handles were dropped: nobody can ask about them again, so their
    // records (and descriptors) go. One count is ours (`finished`), one the registry's.
    let mut g = global::lock();
    for c in finished {
        if Arc::strong_count(&c) == 2 {
            g.forget(&c);
        }
    }
    alive
}

/// The number of CPUs in the system (online logical CPUs), at least 1: Python's `cpu_count()`.
/// How many this process may use is [`process_cpu_count`].
pub fn cpu_count() -> usize {
    crate::sys::online_cpus()
}

/// The number of CPUs this process may run on (its affinity mask), at least 1: Python 3.13's
/// `process_cpu_count()`, and the number of workers a pool should start by default.
///
/// ```
/// let (system, mine) = (ipc_core::process::cpu_count(), ipc_core::process::process_cpu_count());
/// assert!(1 <= mine && mine <= system);
/// ```
pub fn process_cpu_count() -> usize {
    rustix::thread::sched_getaffinity(None).map_or_else(
        |_| std::thread::available_parallelism().map_or(1, |n| n.get()),
        |set| (set.count() as usize).max(1),
    )
}
