//! The forkserver start method: a clean server process forks children on request.
//!
//! The server is started once per process (lazily, on the first forkserver start) with the spawn
//! method, so it is a fresh, single-threaded copy of the executable whatever threads the parent
//! has: forking it is always sound, and each start costs a fork of a small process instead of an
//! `exec`. Its control channel is a socketpair whose other end only this process holds: no
//! address exists that another user could connect to (the flaw of CVE-2022-42919 cannot arise).
//!
//! Protocol on the control channel, one request at a time (the caller holds the global lock):
//! ```text
//! parent -> server: Request { child: Connection, status: Connection }
//! server -> parent: Reply { pid, pidfd }   (or an error message)
//! server -> status: exit code (i32), when the server has reaped the child
//! ```
//! A small boot message is already waiting in `child` when the request goes out; the argument
//! follows the reply, and only then can the child run its function.
//!
//! The server keeps one *spare*: a child forked ahead of time that waits on a socketpair of its
//! own. A request hands the spare its `child` connection, *then* is answered with the spare's
//! pid: a child the parent was told about has its connection even if the server dies at once
//! (running children survive the server). A server that dies between the two leaves an orphan
//! that never gets its argument (the parent, without a reply, drops its end and repeats the
//! request on a new server), so a function never runs twice. The server forks the next spare
//! while the child runs, so no fork lies on the path of a start: measured with
//! `cargo xtask compare --only process_start_join_forkserver`, start+join went from 346-430 us
//! to 277-353 us unpinned (the same within noise when both processes share one CPU). The spare
//! holds nothing of the server's but the standard streams, and leaves when its socketpair
//! closes (the server stopped or died).
//!
//! The child runs [`child_main`] on `child`, exactly like a spawned child. Daemon children ask for
//! SIGKILL when the server dies; the server is single-threaded, so the parent-death signal is
//! tied to the server process (it leaves when our end of the control channel closes, that is,
//! when this process exits or is killed), never to a short-lived thread of ours.
//!
//! # Safety
//! The one `unsafe` call is `fork` in the server, which is single-threaded by construction.
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, WaitOptions};
use serde::{Deserialize, Serialize};

use super::Launched;
use crate::codec::TransferFd;
use crate::conn::{Connection, pipe};
use crate::error::{Error, Result};
use crate::process::bootstrap::{BootInfo, child_main, trampoline};
use crate::process::child::{ChildInner, Reaper, exitcode_of};
use crate::process::global::{self, Identity};
use crate::process::{StartMethod, start};
use crate::sys::{self, Forked};

#[derive(Serialize, Deserialize)]
struct Request {
    child: Connection,
    status: Connection,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Started { pid: i32, pidfd: TransferFd },
    Failed(String),
}

/// This process's forkserver: the control channel and the server's own record.
pub(crate) struct ForkServer {
    ctrl: Connection,
    server: Arc<ChildInner>,
}

impl ForkServer {
    /// Starts a server (spawned, so it is clean whatever this process looks like).
    pub(crate) fn start(id: &Identity) -> Result<ForkServer> {
        let (ours, theirs) = pipe(true)?;
        let Launched {
            pid,
            pidfd,
            conn,
            reaper,
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
        );
        conn.send(&boot)?;
        conn.send(&theirs)?;
        drop(theirs);
        let server = Arc::new(ChildInner::new(
            pid,
            pidfd,
            conn,
            reaper,
            "ForkServer".into(),
            false,
            StartMethod::Spawn,
        ));
        Ok(ForkServer { ctrl: ours, server })
    }

    /// Asks the server for a child waiting for its instructions; `first` runs on our end of
    /// the child's connection before the request goes out (what it sends waits in the socket).
    pub(crate) fn launch(&self, first: &dyn Fn(&Connection) -> Result<()>) -> Launch {
        let prepared = pipe(true).and_then(|(ours, theirs)| {
            first(&ours)?;
            Ok((ours, theirs, pipe(true)?))
        });
        let (ours, theirs, (status_ours, status_theirs)) = match prepared {
            Ok(p) => p,
            Err(e) => return Launch::Done(Err(e)),
        };
        let reply = self
            .ctrl
            .send(&Request {
                child: theirs,
                status: status_theirs,
            })
            .and_then(|()| self.ctrl.recv::<Reply>());
        Launch::Done(match reply {
            // The control channel broke: the server died or misbehaved. No child of this
            // request can run its function: its argument goes out only after a reply.
            Err(e) => return Launch::ServerGone(e),
            Ok(Reply::Started { pid, pidfd }) => Pid::from_raw(pid)
                .ok_or_else(|| Error::malformed("forkserver sent pid 0"))
                .map(|pid| Launched {
                    pid,
                    pidfd: pidfd.0,
                    conn: ours,
                    reaper: Reaper::Server(status_ours),
                }),
            Ok(Reply::Failed(msg)) => Err(Error::Io(std::io::Error::other(format!(
                "forkserver: {msg}"
            )))),
        })
    }

    /// The server's pid.
    pub(crate) fn pid(&self) -> i32 {
        self.server.pid.as_raw_nonzero().get()
    }

    /// Closes the control channel (the server leaves when it sees end of file) and reaps it.
    pub(crate) fn stop(self) {
        drop(self.ctrl);
        let _ = self.server.wait(None);
    }

    /// Stops a server whose control channel broke: it may still run (a protocol error), so it
    /// is killed before it is reaped.
    pub(crate) fn discard(self) {
        let _ = self.server.signal(rustix::process::Signal::KILL);
        self.stop();
    }
}

/// How a request to the server ended.
pub(crate) enum Launch {
    /// The server answered: a child, or the reason there is none.
    Done(Result<Launched>),
    /// The control channel broke before an answer: replace the server and ask again.
    ServerGone(Error),
}

struct Served {
    pid: Pid,
    pidfd: OwnedFd,
    status: Connection,
}

/// A child forked ahead of time, idle until a request hands it its connection: the fork (the
/// costliest step of a start) happens while nobody waits for it.
struct Spare {
    pid: Pid,
    pidfd: OwnedFd,
    feed: Connection,
}

/// Gives the spare its child connection; returns the pidfd copy for our parent.
fn hand_over(s: &Spare, req: &Request) -> Result<OwnedFd> {
    s.feed.send(&req.child)?;
    Ok(s.pidfd.try_clone()?)
}

/// Stops an unused spare (it leaves when its feed closes) and reaps it.
fn retire(pid: Pid, feed: Connection) {
    drop(feed);
    let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
}

/// A spare's life before its assignment: wait for the child connection, then be that child.
/// End of file (the server stopped or died) ends it quietly.
fn spare_main(feed: Connection, server: i32) -> ! {
    match feed.recv::<Connection>() {
        Ok(conn) => {
            drop(feed);
            child_main(conn, server)
        }
        Err(_) => sys::exit_now(0),
    }
}

/// The server's main loop: runs in the spawned server process until the control channel closes.
fn serve(ctrl: Connection) {
    let me = global::pid();
    let mut children: Vec<Served> = Vec::new();
    let mut spare: Option<Spare> = None;
    // A request read but not yet served, and whether it already lost a spare.
    let mut pending: Option<(Request, bool)> = None;
    loop {
        // Keep a spare ready: the next request is served without a fork on its path.
        if spare.is_none()
            && let Ok((feed, theirs)) = pipe(true)
        {
            // SAFETY: the server is single-threaded (it runs nothing but this loop), so fork
            // cannot leave a lock held by another thread in the child.
            match unsafe { sys::fork() } {
                Ok(Forked::Child) => {
                    // The spare keeps nothing of the server's but the standard streams: a copy
                    // of the control channel or of a status connection would hide the server's
                    // death from our parent.
                    drop(feed);
                    drop(ctrl);
                    drop(children);
                    drop(pending);
                    spare_main(theirs, me)
                }
                Ok(Forked::Parent(pid)) => {
                    drop(theirs);
                    match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
                        Ok(pidfd) => spare = Some(Spare { pid, pidfd, feed }),
                        Err(_) => retire(pid, feed),
                    }
                }
                // No spare this time: a request finds none and is answered with the error.
                Err(_) => {}
            }
        }
        // A pending request is served before anything else (no poll: it was already read).
        if pending.is_none() {
            let mut fds = Vec::with_capacity(children.len() + 2);
            fds.push(PollFd::new(&ctrl, PollFlags::IN));
            for c in &children {
                fds.push(PollFd::new(&c.pidfd, PollFlags::IN));
            }
            if let Some(s) = &spare {
                fds.push(PollFd::new(&s.pidfd, PollFlags::IN));
            }
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(_) => break,
            }
            let request_ready = !fds[0].revents().is_empty();
            let spare_died = spare.is_some() && !fds[fds.len() - 1].revents().is_empty();
            let exited: Vec<usize> = (1..=children.len())
                .filter(|&i| !fds[i].revents().is_empty())
                .map(|i| i - 1)
                .collect();
            drop(fds);
            if spare_died {
                // Somebody killed the idle spare: reap it; the next turn forks another.
                let s = spare.take().expect("checked");
                retire(s.pid, s.feed);
            }
            for i in exited.into_iter().rev() {
                match rustix::process::waitpid(Some(children[i].pid), WaitOptions::NOHANG) {
                    Ok(Some((_, status))) => {
                        let c = children.swap_remove(i);
                        let _ = c.status.send(&exitcode_of(status));
                    }
                    // The pidfd reported the exit a moment before the child became reapable:
                    // keep it and poll again, rather than close its status connection unsent
                    // (its parent would read end of file and report exit code 255).
                    Ok(None) | Err(Errno::INTR) => {}
                    Err(_) => drop(children.swap_remove(i)),
                }
            }
            if request_ready {
                match ctrl.recv::<Request>() {
                    Ok(req) => pending = Some((req, false)),
                    // End of file: our parent exited or was killed. Leave; daemon children get
                    // their parent-death signal, the others are adopted by init.
                    Err(_) => break,
                }
            }
        }
        if let Some((req, retried)) = pending.take() {
            // The spare gets its connection first, then our parent hears of it: a child our
            // parent was told about always has its connection, even if the server dies at once.
            // (If the server dies between the two, the parent repeats the request elsewhere;
            // the orphan holds the boot message but never gets its argument, which the parent
            // sends only after a reply, so it leaves without running anything.)
            let handed = spare.take().map(|s| match hand_over(&s, &req) {
                Ok(theirs) => Ok((s, theirs)),
                Err(e) => {
                    let _ = rustix::process::kill_process(s.pid, rustix::process::Signal::KILL);
                    retire(s.pid, s.feed);
                    Err(e)
                }
            });
            let reply = match handed {
                Some(Ok((s, theirs))) => {
                    drop(s.feed);
                    children.push(Served {
                        pid: s.pid,
                        pidfd: s.pidfd,
                        status: req.status,
                    });
                    Reply::Started {
                        pid: s.pid.as_raw_nonzero().get(),
                        pidfd: TransferFd(theirs),
                    }
                }
                // The spare died (killed while idle) before or while taking the request: serve
                // it once more with the next spare, forked at the top of the loop.
                Some(Err(_)) | None if !retried => {
                    pending = Some((req, true));
                    continue;
                }
                Some(Err(e)) => Reply::Failed(format!("handing the child its connection: {e}")),
                None => Reply::Failed("fork failed: no child could be prepared".into()),
            };
            let _ = ctrl.send(&reply);
        }
    }
    if let Some(s) = spare {
        retire(s.pid, s.feed);
    }
}
