//! The child side: from a fresh process to the user's function and back out.
//!
//! Under spawn, the executable is started again (`/proc/self/exe`) with `IPC_CORE_SPAWN_CHILD`
//! in its environment and its control socket as stdin. A load-time hook ([`on_load`], run from
//! `.init_array` before `main` and before any test harness) sees the variable and never returns:
//! it reads a [`BootInfo`] and the argument from the socket, runs the function through its
//! monomorphized [`trampoline`], sends the [`Outcome`] back and exits. So spawn works in binaries,
//! examples, integration tests, doc tests and benches with no line in `main`, and a child can
//! never fall through into the program's `main` (no fork bomb).
//!
//! Under forkserver, the server forks and the child enters [`run_child`] with the same socket
//! protocol. Under fork, the child runs the closure directly and only shares [`finish`].
//!
//! Functions are named across `exec` by their offset from a fixed function of the binary
//! ([`function`]); the trampoline is instantiated for the argument and result types in the
//! parent, so the child decodes exactly the types the parent encoded.
//!
//! # Safety
//! Two `unsafe` calls rebuild function pointers from offsets received from the parent; they are
//! sound because the parent runs the same executable and pairs each function with the
//! trampoline instantiated for its exact type (see [`BootInfo::new`]). One edits the
//! environment before `main` (one thread), one closes an inherited descriptor nobody owns here
//! ([`close_boot_connection`]).
#![allow(unsafe_code)]

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicI32, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::conn::Connection;
use crate::process::StartMethod;
use crate::process::child::Outcome;
use crate::process::function;
use crate::process::global::{self, Identity};
use crate::process::slot::Slot;
use crate::sys;

/// The environment variable that marks a spawned child; its value is the parent's pid.
pub(crate) const SPAWN_ENV: &str = "IPC_CORE_SPAWN_CHILD";

/// Exit code of a child whose bootstrap failed before the function ran.
pub(crate) const BOOT_FAILED: i32 = 70;

/// A monomorphized entry point: reads the argument from the connection, runs the function whose
/// offset it is given, reports the outcome; returns the exit code.
pub(crate) type Trampoline = fn(i64, &Connection) -> i32;

/// Everything a spawned or forkserver child needs to know before it runs the function.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BootInfo {
    pub(crate) trampoline: i64,
    pub(crate) func: i64,
    pub(crate) name: String,
    pub(crate) path: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) parent_pid: i32,
    pub(crate) parent_name: String,
    pub(crate) start_method: StartMethod,
    /// A daemon's end of its lifeline (see [`lifeline`](super::lifeline)).
    pub(crate) lifeline: Option<crate::codec::TransferFd>,
    /// The process family's key, so that the child accepts our `RemoteFn`s and we its own.
    pub(crate) family_key: [u8; 32],
}

impl BootInfo {
    /// The boot message for a child running `func` through `t`; an error if `func` cannot be
    /// named in another process (see [`function::offset_of`]).
    pub(crate) fn new(
        t: Trampoline,
        func: *const (),
        id: &Identity,
        method: StartMethod,
    ) -> crate::Result<Self> {
        let (parent_pid, parent_name) = id.parent.clone().unwrap_or((0, String::new()));
        Ok(BootInfo {
            trampoline: function::offset_of(t as *const ())?,
            func: function::offset_of(func)?,
            name: id.name.clone(),
            path: id.path.clone(),
            daemon: id.daemon,
            parent_pid,
            parent_name,
            start_method: method,
            lifeline: None,
            family_key: *function::family_key_ref(),
        })
    }

    fn identity(&self) -> Identity {
        Identity {
            name: self.name.clone(),
            path: self.path.clone(),
            daemon: self.daemon,
            parent: Some((self.parent_pid, self.parent_name.clone())),
            start_method: Some(self.start_method),
        }
    }
}

/// The trampoline for `fn(A) -> R`.
pub(crate) fn trampoline<A: DeserializeOwned, R: Serialize>(func: i64, conn: &Connection) -> i32 {
    let arg: A = match conn.recv() {
        Ok(a) => a,
        Err(e) => {
            return report(
                conn,
                None,
                Outcome::<()>::Failed(format!("cannot receive the argument: {e}")),
                1,
            );
        }
    };
    // SAFETY: the parent computed `func` as the offset of an `fn(A) -> R` in this very executable
    // and paired it with this trampoline instantiated for the same `A` and `R` (Builder::spawn
    // takes both from one generic call).
    let f = unsafe { function::fn_at::<fn(A) -> R>(func) };
    run_and_report(conn, None, move || f(arg))
}

/// Runs `body`, catching a panic, and sends its outcome on `conn`; returns the exit code.
pub(crate) fn run_and_report<R: Serialize>(
    conn: &Connection,
    slot: Option<Slot>,
    body: impl FnOnce() -> R,
) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => report(conn, slot, Outcome::Returned(value), 0),
        Err(payload) => {
            // The panic hook has already printed the message and location on stderr.
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".to_string());
            report(conn, slot, Outcome::<()>::Panicked(msg), 1)
        }
    }
}

/// Reports `outcome` in the child's slot (fork only) if it fits there, else on `conn`.
fn report<R: Serialize>(
    conn: &Connection,
    slot: Option<Slot>,
    outcome: Outcome<R>,
    code: i32,
) -> i32 {
    let sent = match slot.map(|s| s.write(&outcome)) {
        Some(Ok(true)) => Ok(()),
        Some(Err(e)) => Err(e),
        Some(Ok(false)) | None => conn.send(&outcome),
    };
    match sent {
        Ok(()) => code,
        Err(crate::Error::Encode(e)) => {
            let msg = format!("cannot send the result back: {e}");
            eprintln!("ipc-core: {msg}");
            let _ = conn.send(&Outcome::<()>::Failed(msg));
            1
        }
        // The parent is gone or stopped listening: nothing to report to.
        Err(_) => code,
    }
}

/// Leaves a child process: flush stdout, stop our own children as at normal exit, `_exit`.
/// (std's stderr is unbuffered: flushing it writes nothing, but takes its lock, and in a forked
/// child that write copies a page, a few microseconds of every fork start here.)
pub(crate) fn finish(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    global::shutdown();
    sys::exit_now(code)
}

/// Reads the boot message and runs the child: the spawned child's path.
pub(crate) fn child_main(conn: Connection) -> ! {
    let boot: BootInfo = match conn.recv() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ipc-core: child could not read its instructions: {e}");
            sys::exit_now(BOOT_FAILED)
        }
    };
    run_child(conn, boot)
}

/// Sets up a child from its [`BootInfo`] and runs it: the common path of spawn and forkserver.
///
/// A daemon takes hold of its lifeline first: it dies with its parent from then on, and at
/// once if the parent is already gone.
pub(crate) fn run_child(conn: Connection, mut boot: BootInfo) -> ! {
    // Before any code of the child's own could make a key: joining cannot fail here.
    let _ = function::join_family(boot.family_key);
    global::lock().become_child(boot.identity());
    if let Some(line) = boot.lifeline.take()
        && !super::lifeline::hold(line.0)
    {
        sys::exit_now(BOOT_FAILED);
    }
    // SAFETY: `boot.trampoline` was computed by the parent as the offset of a `Trampoline` in
    // this same executable (spawn re-executes /proc/self/exe; forkserver children are forks of
    // a process spawned that way).
    let t = unsafe { function::fn_at::<Trampoline>(boot.trampoline) };
    let code = t(boot.func, &conn);
    drop(conn);
    finish(code)
}

/// Called before `main` in every process that links ipc-core (see [`function`]'s load-time
/// hook).
pub(crate) fn on_load() {
    if std::env::var_os(SPAWN_ENV).is_none() {
        return;
    }
    // Before main: this process has one thread, so editing the environment is sound; the
    // variable must not leak into processes the child starts on its own.
    // SAFETY: we run from the `.init_array` hook, before `main` and before any constructor
    // that could start a thread, so this process has exactly one thread.
    unsafe { sys::remove_env(SPAWN_ENV) };
    #[cfg(feature = "failpoints")]
    if let Some(point) = std::env::var_os(crate::failpoint::ENV) {
        // SAFETY: as above, this process has exactly one thread.
        unsafe { sys::remove_env(crate::failpoint::ENV) };
        crate::failpoint::arm_encoded(&point.to_string_lossy());
    }
    sys::ignore_sigpipe();
    // The control socket arrived as stdin; move it aside and give the child /dev/null instead,
    // as Python does for its children.
    let conn = match take_stdin() {
        Ok(fd) => Connection::from_socket(fd),
        Err(e) => {
            eprintln!("ipc-core: spawned child has no control socket: {e}");
            sys::exit_now(BOOT_FAILED)
        }
    };
    child_main(conn)
}

fn take_stdin() -> std::io::Result<OwnedFd> {
    let stdin = std::io::stdin();
    let fd = rustix::io::fcntl_dupfd_cloexec(stdin.as_fd(), 3)?;
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    BOOT_FD.store(fd.as_raw_fd(), Ordering::Relaxed);
    Ok(fd)
}

/// The descriptor of this spawned process's boot connection (its link to its parent), or -1.
static BOOT_FD: AtomicI32 = AtomicI32::new(-1);

/// Closes the boot connection inherited from the spawned process we were forked from (the
/// forkserver): it is the server's link to its parent, and a copy in a child would keep it
/// open after the server is gone.
///
/// # Safety
/// The caller never returns nor unwinds into the frames that own the connection (they belong
/// to the process we were forked from), so nothing uses or closes the descriptor again.
pub(crate) unsafe fn close_boot_connection() {
    let fd = BOOT_FD.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: by the caller's contract, the descriptor's owner is never used again here.
        unsafe { sys::close_raw(fd) };
    }
}
