//! The spawn start method: fork+exec of the current executable.
//!
//! `std::process::Command` starts `/proc/self/exe` (glibc's `posix_spawn`, a vfork+exec, which
//! stays cheap however large the parent is: no `pre_exec`, which would force a real fork) with
//! the control socket as the child's stdin and [`SPAWN_ENV`] naming the parent. The load-time
//! hook in the child takes it from there (see [`bootstrap`](crate::process::bootstrap)).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use rustix::process::{Pid, PidfdFlags};

use super::Launched;
use crate::conn::pipe;
use crate::error::{Error, Result};
use crate::process::bootstrap::SPAWN_ENV;

/// Starts a fresh copy of this executable waiting for its [`BootInfo`](crate::process::bootstrap::BootInfo).
pub(crate) fn launch() -> Result<Launched> {
    let (ours, theirs) = pipe()?;
    let mut cmd = Command::new("/proc/self/exe");
    // The child sees this process's arguments, as Python's spawn children see its `sys.argv`
    // (its `main` never runs, so nothing parses them but the user's function).
    let mut args = std::env::args_os();
    if let Some(argv0) = args.next() {
        cmd.arg0(argv0);
    }
    cmd.args(args);
    #[cfg(feature = "failpoints")]
    if let Some(point) = crate::failpoint::encoded() {
        cmd.env(crate::failpoint::ENV, point);
    }
    let child = cmd
        .env(SPAWN_ENV, crate::sys::pid().to_string())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .spawn()
        .map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot spawn /proc/self/exe: {e}"),
            ))
        })?;
    let pid =
        Pid::from_raw(child.id() as i32).ok_or_else(|| Error::misuse("spawned child has pid 0"))?;
    // `child` is dropped without waiting: std does not reap on drop, the pid stays ours to reap.
    drop(child);
    let pidfd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            let _ = crate::process::child::reap(pid);
            return Err(Error::os(e));
        }
    };
    Ok(Launched {
        pid,
        pidfd,
        conn: ours,
    })
}
