//! Connections across real processes. Each test re-runs this test binary on itself as the child
//! (an environment variable selects the child side), handing it one end of a connection as its
//! standard input. Ports CPython checklist items 39, 43 and 45.

mod conn_support;

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use conn_support::{TestChild, child_connection, every_family, is_child};
use ipc_core::Error;
use ipc_core::conn::{Address, Connection, Listener, connect, pipe, pipe_oneway};

#[test]
fn closing_the_parents_copy_of_the_child_end_right_after_start_is_safe() {
    // cpython checklist 39
    const NAME: &str = "closing_the_parents_copy_of_the_child_end_right_after_start_is_safe";
    if is_child(NAME) {
        let conn = child_connection();
        while let Ok(n) = conn.recv::<u64>() {
            conn.send(&(n * 2)).unwrap();
        }
        return;
    }
    let (parent, child_end) = pipe().unwrap();
    let child = TestChild::spawn(NAME, Some(OwnedFd::from(child_end)), &[]);
    // `child_end` was moved into the spawn and is closed in this process now.
    for n in 0..100u64 {
        parent.send(&n).unwrap();
        assert_eq!(parent.recv::<u64>().unwrap(), n * 2);
    }
    drop(parent); // The child sees end of file and exits.
    child.expect_success();
}

#[test]
fn connections_and_descriptors_sent_to_another_process_work_there() {
    // cpython checklist 43: a Connection, a socket and a raw descriptor numbered above 256 go
    // through a Connection to a child, which uses them.
    const NAME: &str = "connections_and_descriptors_sent_to_another_process_work_there";
    if is_child(NAME) {
        let carrier = child_connection();
        let conn: Connection = carrier.recv().unwrap();
        conn.send(&format!("hello from {}", std::process::id()))
            .unwrap();
        let (r, w): (Connection, Connection) = carrier.recv().unwrap();
        w.send_bytes(&r.recv_bytes().unwrap()).unwrap();
        let mut sock = UnixStream::from(carrier.recv_fd().unwrap());
        sock.write_all(b"raw socket").unwrap();
        // A message without a descriptor, where one is expected, is an error.
        assert!(matches!(carrier.recv_fd(), Err(Error::Decode(_))));
        carrier.send(&"done").unwrap();
        return;
    }
    let (carrier, child_end) = pipe().unwrap();
    let child = TestChild::spawn(NAME, Some(OwnedFd::from(child_end)), &[]);

    let (mine, theirs) = pipe().unwrap();
    carrier.send(&theirs).unwrap();
    drop(theirs);
    assert_eq!(
        mine.recv::<String>().unwrap(),
        format!("hello from {}", child.id())
    );

    // One-way pipe ends keep their direction in the other process.
    let (r1, w1) = pipe_oneway().unwrap();
    let (r2, w2) = pipe_oneway().unwrap();
    carrier.send(&(r1, w2)).unwrap();
    w1.send_bytes(b"echo me").unwrap();
    assert_eq!(r2.recv_bytes().unwrap(), b"echo me");

    let (mut s, t) = UnixStream::pair().unwrap();
    let high = rustix::io::fcntl_dupfd_cloexec(&t, 300).unwrap();
    drop(t);
    carrier.send_fd(high.as_fd()).unwrap();
    drop(high);
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"raw socket");

    carrier.send(&0u8).unwrap();
    assert_eq!(carrier.recv::<String>().unwrap(), "done");
    child.expect_success();
}

#[test]
fn a_child_process_connects_to_a_listener_of_every_family() {
    // cpython checklist 45: Listener/Client for every supported family with a child client.
    const NAME: &str = "a_child_process_connects_to_a_listener_of_every_family";
    if is_child(NAME) {
        let addr: Address = std::env::var("IPC_TEST_ADDRESS").unwrap().parse().unwrap();
        let key = std::env::var("IPC_TEST_KEY").unwrap();
        let conn = connect(&addr, Some(key.as_bytes())).unwrap();
        conn.send(&std::process::id()).unwrap();
        let echo: String = conn.recv().unwrap();
        conn.send(&echo).unwrap();
        return;
    }
    for addr in every_family("child") {
        let listener = Listener::bind(&addr, Some(b"child key")).unwrap();
        let child = TestChild::spawn(
            NAME,
            None,
            &[
                ("IPC_TEST_ADDRESS", listener.address().to_string()),
                ("IPC_TEST_KEY", "child key".to_string()),
            ],
        );
        let conn = listener.accept().unwrap();
        assert_eq!(conn.recv::<u32>().unwrap(), child.id(), "{addr}");
        conn.send(&"round trip").unwrap();
        assert_eq!(conn.recv::<String>().unwrap(), "round trip");
        child.expect_success();
    }
}

#[test]
fn a_child_with_the_wrong_key_is_refused_on_both_sides() {
    // cpython checklist 51 across processes: the child's connect fails too.
    const NAME: &str = "a_child_with_the_wrong_key_is_refused_on_both_sides";
    if is_child(NAME) {
        let addr: Address = std::env::var("IPC_TEST_ADDRESS").unwrap().parse().unwrap();
        let err = connect(&addr, Some(b"wrong")).unwrap_err();
        assert!(matches!(err, Error::Authentication(_)), "{err}");
        return;
    }
    let addr = every_family("childkey").remove(0);
    let listener = Listener::bind(&addr, Some(b"right")).unwrap();
    let child = TestChild::spawn(
        NAME,
        None,
        &[("IPC_TEST_ADDRESS", listener.address().to_string())],
    );
    assert!(matches!(listener.accept(), Err(Error::Authentication(_))));
    child.expect_success();
}

// A split connection: one thread sends 10 000 numbers to a child while another receives the
// child's answers, at the same time (what a pool's task and result threads do); the halves close
// the socket only once both are gone.
#[test]
fn a_split_connection_sends_and_receives_from_two_threads() {
    const NAME: &str = "a_split_connection_sends_and_receives_from_two_threads";
    const N: u64 = 10_000;
    if is_child(NAME) {
        let conn = child_connection();
        while let Ok(n) = conn.recv::<u64>() {
            conn.send(&(n + 1)).unwrap();
        }
        return;
    }
    let (parent, child_end) = pipe().unwrap();
    let child = TestChild::spawn(NAME, Some(OwnedFd::from(child_end)), &[]);
    let (tx, rx) = parent.split().unwrap();
    let sender = std::thread::spawn(move || {
        for n in 0..N {
            tx.send(&n).unwrap();
        }
        tx // Kept open until the answers are in: dropping it alone must not close the socket.
    });
    let answers: Vec<u64> = (0..N)
        .map(|_| rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap())
        .collect();
    let tx = sender.join().unwrap();
    assert_eq!(answers, (1..=N).collect::<Vec<_>>());
    drop(tx);
    drop(rx); // Now the child sees end of file and exits.
    child.expect_success();
}

// recv_timeout across processes: a timeout before anything arrives leaves the connection usable;
// the message that comes later is received whole.
#[test]
fn recv_timeout_waits_for_a_slow_peer_and_leaves_the_connection_usable() {
    const NAME: &str = "recv_timeout_waits_for_a_slow_peer_and_leaves_the_connection_usable";
    if is_child(NAME) {
        let conn = child_connection();
        let n: u32 = conn.recv().unwrap();
        conn.send(&vec![n; 100_000]).unwrap();
        return;
    }
    let (parent, child_end) = pipe().unwrap();
    let child = TestChild::spawn(NAME, Some(OwnedFd::from(child_end)), &[]);
    let early = parent.recv_timeout::<Vec<u32>>(std::time::Duration::from_millis(50));
    assert!(matches!(early, Err(Error::Timeout)), "{early:?}");
    parent.send(&9u32).unwrap();
    let v: Vec<u32> = parent
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!((v.len(), v[0]), (100_000, 9));
    drop(parent);
    child.expect_success();
}

// Issue #11, window 3: a client that connects to an authenticated listener and sends nothing
// held every other client's accept for the whole handshake timeout (20 s). Handshakes run
// concurrently now: with 50 silent connections open, a real client in another process connects
// and is served within a second, for every address family.
#[test]
fn fifty_silent_clients_do_not_delay_a_real_one() {
    const NAME: &str = "fifty_silent_clients_do_not_delay_a_real_one";
    const KEY: &[u8] = b"manager key";
    if is_child(NAME) {
        let addr: Address = std::env::var("IPC_TEST_ADDRESS").unwrap().parse().unwrap();
        let t = std::time::Instant::now();
        let conn = connect(&addr, Some(KEY)).unwrap();
        conn.send(&"hello").unwrap();
        assert_eq!(conn.recv::<String>().unwrap(), "served");
        let took = t.elapsed();
        assert!(
            took < std::time::Duration::from_secs(1),
            "served after {took:?}"
        );
        return;
    }
    for addr in every_family("silent") {
        let listener = Listener::bind(&addr, Some(KEY)).unwrap();
        let addr = listener.address().clone();
        // The silent ones: connected (the kernel queued them), never a byte sent.
        let silent: Vec<OwnedFd> = (0..50)
            .map(|_| match &addr {
                Address::Tcp(sa) => OwnedFd::from(std::net::TcpStream::connect(sa).unwrap()),
                _ => {
                    let fd = rustix::net::socket_with(
                        rustix::net::AddressFamily::UNIX,
                        rustix::net::SocketType::SEQPACKET,
                        rustix::net::SocketFlags::CLOEXEC,
                        None,
                    )
                    .unwrap();
                    let sa = match &addr {
                        Address::Unix(p) => rustix::net::SocketAddrUnix::new(p.as_path()),
                        Address::Abstract(n) => {
                            rustix::net::SocketAddrUnix::new_abstract_name(n.as_bytes())
                        }
                        Address::Tcp(_) => unreachable!(),
                    }
                    .unwrap();
                    rustix::net::connect(&fd, &sa).unwrap();
                    fd
                }
            })
            .collect();
        let child = TestChild::spawn(NAME, None, &[("IPC_TEST_ADDRESS", addr.to_string())]);
        // The server loop: the real client is the one connection that completes its handshake.
        let conn = listener.accept().unwrap();
        assert_eq!(conn.recv::<String>().unwrap(), "hello");
        conn.send(&"served").unwrap();
        child.expect_success();
        drop(silent);
    }
}
