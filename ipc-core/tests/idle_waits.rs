//! Every timed wait of ipc-core sleeps while it waits: one that times out uses a small fraction
//! of its time on a CPU (a connection spins for a few microseconds before it sleeps). A timed
//! queue get of ipc-sync once spun for its whole timeout (see CHANGELOG.md); ipc-sync's
//! `sync_idle_waits.rs` covers its primitives, this file the connections and the processes.
//! CPU time, not wall time, is measured, so a loaded machine does not make them fail.

mod common;

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use common::{LONG, Reap, builder};
use ipc_core::Error;
use ipc_core::conn::{pipe, wait};
use ipc_core::process::StartMethod;

/// How long each wait lasts.
const WAIT: Duration = Duration::from_millis(300);

/// The most CPU one such wait may use: a tenth of it (a spinning wait uses all of it).
const BUDGET: Duration = Duration::from_millis(30);

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Runs `wait`, which says whether it timed out, and checks that it did, after `WAIT`, within
/// the CPU budget.
#[track_caller]
fn sleeps(what: &str, wait: impl FnOnce() -> bool) {
    let (cpu, t0) = (thread_cpu(), Instant::now());
    let timed_out = wait();
    let (cpu, waited) = (thread_cpu() - cpu, t0.elapsed());
    assert!(timed_out, "{what}: did not time out");
    assert!(waited >= WAIT, "{what}: returned after {waited:?}");
    assert!(cpu < BUDGET, "{what}: {cpu:?} of CPU over {waited:?}");
}

fn sleep_long((): ()) {
    std::thread::sleep(LONG);
}

#[test]
fn timed_connection_waits_sleep() {
    let (a, b) = pipe().unwrap();
    sleeps("Connection::recv_timeout", || {
        matches!(b.recv_timeout::<u32>(WAIT), Err(Error::Timeout))
    });
    sleeps("Connection::poll", || !b.poll(Some(WAIT)).unwrap());
    sleeps("conn::wait", || wait(&[&b], Some(WAIT)).unwrap().is_empty());
    sleeps("conn::wait on nothing", || {
        wait::<BorrowedFd<'_>>(&[], Some(WAIT)).unwrap().is_empty()
    });
    drop(a);
}

#[test]
fn a_timed_join_sleeps() {
    let child = builder(StartMethod::ForkServer)
        .spawn((), sleep_long)
        .unwrap();
    let _reap = Reap(&child);
    sleeps("JoinHandle::join_timeout", || {
        matches!(child.join_timeout(WAIT), Err(Error::Timeout))
    });
    child.kill().unwrap();
    assert_eq!(child.join_timeout(LONG).unwrap(), -9);
}
