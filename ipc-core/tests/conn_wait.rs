//! `wait` on connections, listeners and process sentinels (pidfds). Ports CPython checklist
//! item 52 (and the sentinel half of item 9).

mod conn_support;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use conn_support::{LIVENESS, unique_path};
use ipc_core::Error;
use ipc_core::conn::{Address, Listener, connect, pipe, pipe_oneway, wait};

/// A pidfd for a `sleep` child; the child is killed and reaped on drop.
struct Sleeper {
    child: std::process::Child,
    pidfd: OwnedFd,
}

impl Sleeper {
    fn new(seconds: &str) -> Sleeper {
        let child = Command::new("sleep")
            .arg(seconds)
            .spawn()
            .expect("spawn sleep");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a positive pid");
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
            .expect("pidfd_open");
        Sleeper { child, pidfd }
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_ready_reader_is_returned_by_one_call() {
    // cpython checklist 52: multiple ready objects are all returned by one call.
    let pairs: Vec<_> = (0..5).map(|_| pipe().unwrap()).collect();
    for i in [0, 2, 3] {
        pairs[i].0.send(&(i as u32)).unwrap();
    }
    let readers: Vec<_> = pairs.iter().map(|(_, b)| b).collect();
    assert_eq!(wait(&readers, Some(LIVENESS)).unwrap(), vec![0, 2, 3]);
    // Nothing was consumed.
    assert_eq!(wait(&readers, Some(Duration::ZERO)).unwrap(), vec![0, 2, 3]);
    for i in [0, 2, 3] {
        assert_eq!(readers[i].recv::<u32>().unwrap(), i as u32);
    }
    assert!(wait(&readers, Some(Duration::ZERO)).unwrap().is_empty());
}

#[test]
fn end_of_file_counts_as_ready() {
    // cpython checklist 52: EOF is "ready".
    let (a, b) = pipe().unwrap();
    let (r, w) = pipe_oneway().unwrap();
    let (_c, d) = pipe().unwrap();
    drop(a);
    drop(w);
    assert_eq!(
        wait(&[b.as_fd(), r.as_fd(), d.as_fd()], Some(LIVENESS)).unwrap(),
        vec![0, 1]
    );
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
    assert!(matches!(r.recv_bytes(), Err(Error::Eof)));
}

#[test]
fn a_timeout_returns_nothing_after_at_least_the_timeout_and_zero_returns_at_once() {
    // cpython checklist 52: timeout returns [] after >= timeout; a zero (Python: negative)
    // timeout returns [] immediately.
    let (_a, b) = pipe().unwrap();
    let t = Duration::from_millis(150);
    let start = Instant::now();
    assert!(wait(&[&b], Some(t)).unwrap().is_empty());
    assert!(start.elapsed() >= t, "returned after {:?}", start.elapsed());
    assert!(wait(&[&b], Some(Duration::ZERO)).unwrap().is_empty());
    // Waiting on nothing: sleeps for the timeout; without one it could never return.
    let start = Instant::now();
    assert!(wait::<BorrowedFd<'_>>(&[], Some(t)).unwrap().is_empty());
    assert!(start.elapsed() >= t);
    assert!(matches!(
        wait::<BorrowedFd<'_>>(&[], None),
        Err(Error::Misuse(_))
    ));
}

#[test]
fn wait_returns_as_soon_as_a_message_arrives() {
    let (a, b) = pipe().unwrap();
    let (_c, d) = pipe().unwrap();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        a.send_bytes(b"now").unwrap();
        a
    });
    assert_eq!(wait(&[&d, &b], None).unwrap(), vec![1]);
    let _a = sender.join().unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"now");
}

#[test]
fn a_listener_is_ready_when_a_client_waits() {
    let listener = Listener::bind(&Address::Unix(unique_path("wait")), None).unwrap();
    assert!(wait(&[&listener], Some(Duration::ZERO)).unwrap().is_empty());
    let client = connect(listener.address(), None).unwrap();
    assert_eq!(wait(&[&listener], Some(LIVENESS)).unwrap(), vec![0]);
    let served = listener.accept().unwrap();
    assert!(wait(&[&listener], Some(Duration::ZERO)).unwrap().is_empty());
    client.send(&1u8).unwrap();
    assert_eq!(wait(&[&served], Some(LIVENESS)).unwrap(), vec![0]);
}

#[test]
fn a_process_sentinel_is_ready_once_the_process_exits_even_unreaped() {
    // cpython checklist 52 (sentinels) and 9: not ready while the child runs, ready after.
    let running = Sleeper::new("30");
    let quick = Sleeper::new("0.05");
    let (_a, b) = pipe().unwrap();
    assert!(
        wait(&[running.pidfd.as_fd(), b.as_fd()], Some(Duration::ZERO))
            .unwrap()
            .is_empty()
    );
    // The quick child exits; nobody has reaped it yet (it is a zombie), and it is ready.
    let objects = [running.pidfd.as_fd(), quick.pidfd.as_fd(), b.as_fd()];
    assert_eq!(wait(&objects, Some(LIVENESS)).unwrap(), vec![1]);
    // Killing the other one makes both ready, in one call.
    let mut running = running;
    running.child.kill().unwrap();
    let objects = [running.pidfd.as_fd(), quick.pidfd.as_fd(), b.as_fd()];
    let start = Instant::now();
    let mut ready = wait(&objects, Some(LIVENESS)).unwrap();
    while ready != vec![0, 1] && start.elapsed() < LIVENESS {
        ready = wait(&objects, Some(LIVENESS)).unwrap();
    }
    assert_eq!(ready, vec![0, 1]);
}
