//! The shared-memory path of local clients: calls travel through a connection's ipc-sync
//! queues, not its socket (counted by the server per path), and every failure promise of the
//! socket path holds on it: a server or a client SIGKILLed mid-call is an error or a cleanup
//! within a second, never a hang.

use std::time::{Duration, Instant};

use ipc_core::process::{Builder, StartMethod};
use ipc_manager::{Dict, Error, Lock, Manager, Queue, Stats};

mod common;
use common::{LONG, under_each};

fn start(method: StartMethod) -> Manager {
    Manager::builder().start_method(method).start().unwrap()
}

fn delta(before: &Stats, after: &Stats) -> (u64, u64) {
    (
        after.socket_calls - before.socket_calls,
        after.shared_memory_calls - before.shared_memory_calls,
    )
}

fn thousand_calls(d: &Dict<u32, u32>) {
    for i in 0..500 {
        d.insert(i, i).unwrap();
        assert_eq!(d.get(&i).unwrap(), Some(i));
    }
}

fn child_calls(d: Dict<u32, u32>) {
    thousand_calls(&d);
}

fn paths(method: StartMethod) {
    let m = start(method);
    let d = m.dict::<u32, u32>().unwrap();
    // A connection's first two calls go over its socket; the third sets up its queues.
    d.insert(0, 0).unwrap();
    assert_eq!(
        m.stats().unwrap().socket_calls,
        3,
        "two calls, then Op::Fast"
    );
    let before = m.stats().unwrap();
    thousand_calls(&d);
    let after = m.stats().unwrap();
    // 1000 calls and the second `stats`: none read from a socket.
    assert_eq!(delta(&before, &after), (0, 1001), "{before:?} -> {after:?}");

    // A child's proxy: the owner's claim for it, the child's first two calls and the setup
    // of its path read the socket; the rest of its thousand calls, and its release, do not.
    let before = m.stats().unwrap();
    let child = Builder::new()
        .start_method(method)
        .spawn(d.clone(), child_calls)
        .unwrap();
    let reap = common::Reap(&child);
    child.join_timeout(LONG).unwrap();
    drop(reap);
    child.join().unwrap();
    let after = m.stats().unwrap();
    let (socket, shm) = delta(&before, &after);
    assert_eq!(socket, 4, "{before:?} -> {after:?}");
    assert!(shm >= 1001, "{before:?} -> {after:?}");

    // Over TCP there is no shared memory: every call reads the socket.
    let tcp = Manager::builder()
        .start_method(method)
        .address("127.0.0.1:0".parse().unwrap())
        .start()
        .unwrap();
    let remote = Manager::connect(tcp.address(), tcp.authkey()).unwrap();
    let rd = remote.dict::<u32, u32>().unwrap();
    let before = remote.stats().unwrap();
    for i in 0..100 {
        rd.insert(i, i).unwrap();
    }
    let after = remote.stats().unwrap();
    assert_eq!(delta(&before, &after), (101, 0));
    drop(rd);
    drop(remote);
    tcp.shutdown().unwrap();
    m.shutdown().unwrap();
}

#[test]
fn local_calls_travel_through_shared_memory_and_tcp_calls_through_the_socket() {
    under_each(paths);
}

// The server SIGKILLed while a call waits on the shared-memory path (a blocking get) and
// while another thread calls in a loop: both fail with ServerGone within a second.
fn server_killed(method: StartMethod) {
    let m = start(method);
    let q = m.queue::<u8>(0).unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    d.insert(0, 0).unwrap();
    let waiter = std::thread::spawn({
        let q = q.clone();
        move || {
            let r = q.get();
            (Instant::now(), r.map(drop))
        }
    });
    let caller = std::thread::spawn(move || {
        loop {
            if let Err(e) = d.get(&0) {
                return (Instant::now(), e);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200)); // both are in their calls
    let killed = Instant::now();
    common::kill_pid(m.server_pid());
    let (at, r) = waiter.join().unwrap();
    assert!(matches!(r, Err(Error::ServerGone(_))), "{r:?}");
    assert!(at - killed < Duration::from_secs(1), "{:?}", at - killed);
    let (at, e) = caller.join().unwrap();
    assert!(matches!(e, Error::ServerGone(_)), "{e:?}");
    assert!(at - killed < Duration::from_secs(1), "{:?}", at - killed);
    drop(m);
}

#[test]
fn a_server_killed_mid_call_is_an_error_within_a_second() {
    under_each(server_killed);
}

// A client SIGKILLed while it holds a lock and waits in a blocking get on the shared-memory
// path: the server gives up its call, ends its session (the lock is released as owner-died),
// and its connections and threads are gone within a second or so.
fn hold_and_wait((lock, q, ready): (Lock, Queue<u8>, Queue<u8>)) {
    lock.acquire().unwrap();
    ready.put(1).unwrap();
    let _ = q.get();
}

fn client_killed(method: StartMethod) {
    let m = start(method);
    let (lock, q, ready) = (
        m.lock().unwrap(),
        m.queue::<u8>(0).unwrap(),
        m.queue::<u8>(0).unwrap(),
    );
    // A blocking call opens the owner's second connection first: the baseline counts it.
    assert!(matches!(
        ready.get_timeout(Duration::from_millis(1)),
        Err(Error::Timeout)
    ));
    let baseline = m.stats().unwrap();
    let child = Builder::new()
        .start_method(method)
        .spawn((lock.clone(), q.clone(), ready.clone()), hold_and_wait)
        .unwrap();
    let reap = common::Reap(&child);
    assert_eq!(ready.get_timeout(LONG).unwrap(), 1);
    std::thread::sleep(Duration::from_millis(100)); // the child is in its get
    child.kill().unwrap();
    let killed = Instant::now();
    child.join_timeout(LONG).unwrap();
    drop(reap);
    let r = lock.acquire_timeout(LONG);
    assert!(matches!(r, Err(Error::OwnerDied)), "{r:?}");
    let released = killed.elapsed();
    lock.release().unwrap();
    assert!(released < Duration::from_secs(2), "{released:?}");
    assert!(
        common::eventually(|| {
            let now = m.stats().unwrap();
            now.connections == baseline.connections && now.sessions == baseline.sessions
        }),
        "{baseline:?} -> {:?}",
        m.stats()
    );
    // The queue the child waited on lost nothing and serves the next consumer.
    q.put(7).unwrap();
    assert_eq!(q.get().unwrap(), 7);
    m.shutdown().unwrap();
}

#[test]
fn a_client_killed_mid_call_leaves_nothing_behind() {
    under_each(client_killed);
}

// A client whose call blocks on the server (a get on an empty managed queue) sleeps while it
// waits for the answer on its replies queue: it used to spin for the whole wait, since a timed
// get of ipc-sync did.
#[test]
fn a_client_waiting_on_the_shared_memory_path_sleeps() {
    let m = start(StartMethod::ForkServer);
    let q = m.queue::<u32>(0).unwrap();
    // The first calls go over the socket and set up the queues.
    for i in 0..3 {
        q.put(i).unwrap();
        assert_eq!(q.get().unwrap(), i);
    }
    let before = m.stats().unwrap();
    let wait = Duration::from_millis(300);
    common::sleeps("a managed queue's get_timeout", wait, || {
        matches!(q.get_timeout(wait), Err(Error::Timeout))
    });
    // The get went through the queues.
    let (_, shared) = delta(&before, &m.stats().unwrap());
    assert!(shared >= 2, "the get and the second stats: {shared}");
    m.shutdown().unwrap();
}
