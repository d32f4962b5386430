//! Is the process that holds a lock still alive? Asked through a pidfd.
//!
//! `kill(pid, 0)` is not enough: it reports an exited but unreaped child (a zombie) as alive, and
//! a holder killed by SIGKILL stays a zombie until its parent reaps it, which may be never if the
//! parent is the very process waiting for the lock. A pidfd polls readable as soon as the process
//! has exited, zombie or not (measured: ~4 us per check, so waiters ask only when a sleep slice
//! ends, never on the fast path).
//!
//! Pid reuse: a pid names a new process only after the old one was reaped and the kernel cycled
//! through the pid space (`pid_max`: 4 194 304 by default, 32 768 on some machines, this
//! development VM included). Within a waiter's sleep slice that is no practical concern. But an
//! owner that died while nobody waited is only noticed at the next acquire, which may come
//! after its pid was recycled: the lock then looks held by an unrelated live process. So a
//! waiter that keeps finding the owner alive also asks, once a second, whether that process
//! maps the memory the lock lives in ([`maps_object_at`]: the same file, by device and inode,
//! in its `/proc/<pid>/maps`). A process that does not cannot have taken the lock, nor hold it
//! (a holder that unmapped its lock, say after forgetting the guard, abandoned it). What is
//! left: a recycled pid that went to a process that does map the memory (a later child of a
//! process that shares it), which keeps the lock until it exits.
//!
//! # Proof, not likelihood
//! A takeover grants the lock, and with a [`Value`](crate::Value) a `&mut T`, so each "dead"
//! answer here must be a proof within this process's pid namespace:
//! - `pidfd_open` fails with `ESRCH` only when no process has that pid, and its pidfd polls
//!   readable only once that process has exited.
//! - `/proc/<pid>/maps` is not read atomically, but the kernel documents what a walk guarantees
//!   (Documentation/filesystems/proc.rst, since Linux 4.9): "if there is something at a given
//!   vaddr during the entirety of the life of the smaps/maps walk, there will be some output for
//!   it". A live holder keeps its lock's mapping, at one address, for as long as it holds it (its
//!   guard holds the handle that holds the mapping), so its walk lists the file; a walk that
//!   does not list it proves the process is not the holder. Unreadable maps (`hidepid`, a
//!   non-dumpable process, `EACCES`) answer `None`, never "not mapped".
//! - Both speak of this process's pid namespace: the `pidfd` calls by construction, `/proc` only
//!   if it was mounted for that namespace, which [`proc_is_ours`] checks before any maps read.
//!   Shared objects refuse to cross pid namespaces (ipc-core's heap checks each one received, and
//!   `fork` into another namespace is refused), so a holder is always a pid of our namespace.
//!
//! A waiter that cannot ask (`EMFILE`, a kernel without `pidfd_open`) assumes the owner is alive
//! and asks again at its next slice: it may wait longer, it never steals a live owner's lock.

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open};

/// True if process `pid` has certainly exited (zombie or reaped); false if alive or unknown.
pub(crate) fn is_dead(pid: u32) -> bool {
    if pid == crate::ident::pid() {
        return false;
    }
    let Some(p) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        // Not a pid at all (0 or out of range): nobody can hold a lock under it.
        return true;
    };
    match pidfd_open(p, PidfdFlags::empty()) {
        Ok(fd) => {
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            let zero = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        }
        // No such process: it exited and was reaped.
        Err(Errno::SRCH) => true,
        Err(_) => false,
    }
}

/// Whether process `pid` maps the memory object (file, memfd, or shared anonymous memory) that
/// holds `addr` in this process: `Some(false)` means it cannot be the holder of a lock at
/// `addr`; `None` when that cannot be told (maps unreadable, or `addr` in private memory).
pub(crate) fn maps_object_at(pid: u32, addr: usize) -> Option<bool> {
    if !proc_is_ours() {
        return None;
    }
    let ours = std::fs::read_to_string("/proc/self/maps").ok()?;
    let object = ours.lines().find_map(|l| {
        let m = Mapping::parse(l)?;
        (m.start <= addr && addr < m.end && m.inode != 0).then_some((m.dev, m.inode))
    })?;
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(
        theirs
            .lines()
            .filter_map(Mapping::parse)
            .any(|m| (m.dev, m.inode) == object),
    )
}

/// Whether `/proc` was mounted for this process's pid namespace, so that `/proc/<pid>` names the
/// process our pids name. `NSpid` in `/proc/self/status` lists our pid in every namespace from
/// the mount's down to ours: exactly one entry, equal to our pid, means the mount is ours.
pub(crate) fn proc_is_ours() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let Some(nspid) = status.lines().find_map(|l| l.strip_prefix("NSpid:")) else {
        return false;
    };
    let mut pids = nspid.split_ascii_whitespace();
    let first = pids.next().and_then(|p| p.parse::<u32>().ok());
    pids.next().is_none() && first == Some(crate::ident::pid())
}

/// One line of `/proc/<pid>/maps`: `start-end perms offset dev inode [path]`.
struct Mapping<'a> {
    start: usize,
    end: usize,
    dev: &'a str,
    inode: u64,
}

impl<'a> Mapping<'a> {
    fn parse(line: &'a str) -> Option<Mapping<'a>> {
        let mut f = line.split_ascii_whitespace();
        let (start, end) = f.next()?.split_once('-')?;
        let (_perms, _offset) = (f.next()?, f.next()?);
        Some(Mapping {
            start: usize::from_str_radix(start, 16).ok()?,
            end: usize::from_str_radix(end, 16).ok()?,
            dev: f.next()?,
            inode: f.next()?.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process maps its shared memory; an unrelated process does not; private memory
    /// cannot be told.
    #[test]
    fn who_maps_a_shared_object() {
        let shared = ipc_core::shm::ShmBox::<u32>::new().unwrap();
        let addr = shared.as_ptr() as usize;
        assert_eq!(maps_object_at(std::process::id(), addr), Some(true));
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let theirs = maps_object_at(other.id(), addr);
        let _ = other.kill();
        let _ = other.wait();
        assert_eq!(theirs, Some(false));
        let private = Box::new(0u32);
        assert_eq!(
            maps_object_at(std::process::id(), &*private as *const u32 as usize),
            None
        );
    }

    #[test]
    fn this_processs_proc_is_its_own() {
        // The test machines mount /proc for the namespace the tests run in.
        assert!(proc_is_ours());
    }

    fn probe_proc((): ()) -> bool {
        proc_is_ours()
    }

    /// In a new pid namespace without its own /proc mount, `/proc/<pid>` names other processes
    /// than our pids do: the maps check must not trust it.
    #[test]
    #[allow(unsafe_code)] // Test scaffolding: unshare and the forking opt-in, argued below.
    fn a_proc_of_another_pid_namespace_is_not_trusted() {
        use ipc_core::process::{Builder, StartMethod};
        let in_new_namespace = || -> Option<bool> {
            // SAFETY: CLONE_NEWPID changes only where later children go; this single-threaded
            // forked child's memory and descriptors are untouched.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWPID) }.ok()?;
            let h = Builder::new()
                .start_method(StartMethod::Spawn)
                .spawn((), probe_proc)
                .ok()?;
            h.join().ok()
        };
        // SAFETY: the harness's other threads run other tests; the child runs this closure
        // (unshare, a spawn and a join), which takes no lock they may hold.
        let b = unsafe {
            Builder::new()
                .start_method(StartMethod::Fork)
                .allow_fork_with_threads()
        };
        match b.fork(in_new_namespace).unwrap().join().unwrap() {
            Some(trusted) => assert!(!trusted, "a /proc of the parent namespace was trusted"),
            None => eprintln!("skipped: this process may not create a pid namespace"),
        }
    }

    #[test]
    fn this_process_is_alive() {
        assert!(!is_dead(std::process::id()));
    }

    #[test]
    fn a_zombie_is_dead() {
        // `true` exits at once; until we reap it, it is a zombie that `kill(pid, 0)` calls alive.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !is_dead(pid) {
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Still unreaped here: is_dead saw the zombie.
        assert!(rustix::process::test_kill_process(Pid::from_raw(pid as i32).unwrap()).is_ok());
        child.wait().unwrap();
        assert!(is_dead(pid));
    }

    #[test]
    fn a_running_child_is_alive() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let alive = !is_dead(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(alive);
    }
}
