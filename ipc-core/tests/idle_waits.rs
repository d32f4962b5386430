//! Every timed wait of ipc-core sleeps while it waits: one that times out uses a small fraction
//! of its time on a CPU (`common::sleeps`). A timed queue get of ipc-sync once spun for its
//! whole timeout (see CHANGELOG.md); ipc-sync's `sync_idle_waits.rs` covers its primitives,
//! this file the connections and the processes.

mod common;

use std::os::fd::BorrowedFd;
use std::time::Duration;

use common::{LONG, Reap, builder, sleeps};
use ipc_core::Error;
use ipc_core::conn::{pipe, wait};
use ipc_core::process::StartMethod;

/// How long each wait lasts.
const WAIT: Duration = Duration::from_millis(300);

fn sleep_long((): ()) {
    std::thread::sleep(LONG);
}

#[test]
fn timed_connection_waits_sleep() {
    let (a, b) = pipe().unwrap();
    sleeps("Connection::recv_timeout", WAIT, || {
        matches!(b.recv_timeout::<u32>(WAIT), Err(Error::Timeout))
    });
    sleeps("Connection::poll", WAIT, || !b.poll(Some(WAIT)).unwrap());
    sleeps("conn::wait", WAIT, || {
        wait(&[&b], Some(WAIT)).unwrap().is_empty()
    });
    sleeps("conn::wait on nothing", WAIT, || {
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
    sleeps("JoinHandle::join_timeout", WAIT, || {
        matches!(child.join_timeout(WAIT), Err(Error::Timeout))
    });
    child.kill().unwrap();
    assert_eq!(child.join_timeout(LONG).unwrap(), -9);
}
