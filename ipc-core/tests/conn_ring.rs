//! Large payloads through a connection's shared ring (see `ipc_core::conn`'s module doc):
//! order with small messages, every receive call, connections that move to another process,
//! peers killed or stopped mid-message, and hostile ring frames. Children are this test binary
//! re-run on one test, with one end of a connection as standard input.

mod conn_support;

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use conn_support::{
    LIVENESS, TestChild, child_connection, header, is_child, raw_records, within_liveness,
};
use ipc_core::Error;
use ipc_core::conn::{Connection, pipe};
use serde_bytes::ByteBuf;

/// Sizes around the ring's threshold (64 KiB), one that fills most of it, and two larger than
/// the whole ring (2 MiB), odd-sized so payload starts move around the ring.
const SIZES: [usize; 8] = [
    (64 << 10) - 1,
    64 << 10,
    (64 << 10) + 1,
    (1 << 20) + 7,
    (2 << 20) - 5,
    (5 << 20) + 3,
    100_003,
    (2 << 20) + 64,
];

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8 ^ seed)
        .collect()
}

/// Mappings of memfds in this process (`/proc/self/maps`): rings and other segments.
fn memfd_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("/memfd:"))
        .count()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Sends the test's sequence: each size raw, a small typed value between, then each size typed.
fn send_sequence(conn: &Connection, seed: u8) {
    for (i, &len) in SIZES.iter().enumerate() {
        conn.send_bytes(&pattern(len, seed ^ i as u8)).unwrap();
        conn.send(&(i as u32)).unwrap();
    }
    for (i, &len) in SIZES.iter().enumerate() {
        conn.send(serde_bytes::Bytes::new(&pattern(len, !seed ^ i as u8)))
            .unwrap();
    }
}

/// Receives [`send_sequence`] and checks every byte; raw messages alternate between
/// `recv_bytes` and `recv_bytes_into`.
fn check_sequence(conn: &Connection, seed: u8) {
    let mut buf = vec![0u8; 6 << 20];
    for (i, &len) in SIZES.iter().enumerate() {
        let expected = pattern(len, seed ^ i as u8);
        if i % 2 == 0 {
            assert!(conn.recv_bytes().unwrap() == expected, "raw message {i}");
        } else {
            assert_eq!(conn.recv_bytes_into(&mut buf).unwrap(), len);
            assert!(buf[..len] == expected[..], "raw message {i} (into)");
        }
        assert_eq!(conn.recv::<u32>().unwrap(), i as u32, "small message {i}");
    }
    for (i, &len) in SIZES.iter().enumerate() {
        let typed: ByteBuf = conn.recv().unwrap();
        assert!(
            typed.into_vec() == pattern(len, !seed ^ i as u8),
            "typed {i}"
        );
    }
}

#[test]
fn large_messages_cross_processes_whole_and_in_order_through_one_ring_each_way() {
    const NAME: &str =
        "large_messages_cross_processes_whole_and_in_order_through_one_ring_each_way";
    if is_child(NAME) {
        let conn = child_connection();
        let maps = memfd_mappings();
        let fds = open_fds();
        check_sequence(&conn, 1);
        // One mapping of the parent's ring for every ring frame; it keeps the descriptor that
        // came with the first, and those of the others are closed.
        assert_eq!(
            memfd_mappings(),
            maps + 1,
            "the child maps the parent's ring once"
        );
        assert_eq!(open_fds(), fds + 1, "ring descriptors are closed after use");
        send_sequence(&conn, 2);
        assert_eq!(memfd_mappings(), maps + 2, "and makes one ring of its own");
        return;
    }
    let (ours, theirs) = pipe().unwrap();
    let child = TestChild::spawn(NAME, Some(OwnedFd::from(theirs)), &[]);
    within_liveness(move || {
        send_sequence(&ours, 1);
        check_sequence(&ours, 2);
        drop(ours);
        child.expect_success();
    });
}

#[test]
fn a_too_small_buffer_gets_the_whole_ring_message_and_the_stream_goes_on() {
    let (a, b) = pipe().unwrap();
    let big = pattern(300_000, 7);
    let writer = std::thread::spawn(move || {
        a.send_bytes(&big).unwrap();
        a.send_bytes(b"after").unwrap();
        a
    });
    let mut small = [0u8; 1000];
    match b.recv_bytes_into(&mut small) {
        Err(Error::BufferTooShort(whole)) => assert!(whole == pattern(300_000, 7)),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.recv_bytes().unwrap(), b"after");
    drop(writer.join().unwrap());
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
}

#[test]
fn large_messages_carry_descriptors_with_them() {
    // A typed message above the ring's threshold that holds a connection: the descriptor comes
    // through beside the ring's own, and works.
    let (a, b) = pipe().unwrap();
    let (inner_a, inner_b) = pipe().unwrap();
    let payload = pattern(500_000, 3);
    let msg = (inner_b, serde_bytes::ByteBuf::from(payload.clone()));
    let writer = std::thread::spawn(move || a.send(&msg).map(|()| a));
    let (conn, bytes): (Connection, ByteBuf) = b.recv().unwrap();
    let _a = writer.join().unwrap().unwrap();
    assert!(bytes.into_vec() == payload);
    inner_a.send(&"through").unwrap();
    assert_eq!(conn.recv::<String>().unwrap(), "through");
}

#[test]
fn connections_moved_to_another_process_go_on_with_large_messages() {
    // Both ends have used a ring before they move: the receiving end takes its mapping of the
    // sender's ring along (the sender announced it once, here), and the sending end makes a new
    // ring there and announces it.
    const NAME: &str = "connections_moved_to_another_process_go_on_with_large_messages";
    if is_child(NAME) {
        let carrier = child_connection();
        let (rx, tx): (Connection, Connection) = carrier.recv().unwrap();
        // Sent by the parent before the move, and after it.
        assert!(rx.recv_bytes().unwrap() == pattern(1 << 20, 10));
        assert!(rx.recv_bytes().unwrap() == pattern(3 << 20, 11));
        tx.send_bytes(&pattern(3 << 20, 12)).unwrap();
        carrier.send(&"done").unwrap();
        return;
    }
    let (carrier, theirs) = pipe().unwrap();
    let child = TestChild::spawn(NAME, Some(OwnedFd::from(theirs)), &[]);
    within_liveness(move || {
        // rx_far is read here first, then moves; tx_far sends here first, then moves.
        let (rx_near, rx_far) = pipe().unwrap();
        let (tx_far, tx_near) = pipe().unwrap();
        rx_near.send_bytes(&pattern(200_000, 1)).unwrap();
        assert!(rx_far.recv_bytes().unwrap() == pattern(200_000, 1));
        tx_far.send_bytes(&pattern(200_000, 2)).unwrap();
        assert!(tx_near.recv_bytes().unwrap() == pattern(200_000, 2));
        // Left in the ring, unread, when the receiving end moves.
        rx_near.send_bytes(&pattern(1 << 20, 10)).unwrap();
        carrier.send(&(rx_far, tx_far)).unwrap();
        rx_near.send_bytes(&pattern(3 << 20, 11)).unwrap();
        assert!(tx_near.recv_bytes().unwrap() == pattern(3 << 20, 12));
        assert_eq!(carrier.recv::<String>().unwrap(), "done");
        child.expect_success();
    });
}

#[test]
fn split_halves_stream_large_messages_both_ways_at_once() {
    let (a, b) = pipe().unwrap();
    let (tx, rx) = a.split().unwrap();
    let echo = std::thread::spawn(move || {
        while let Ok(m) = b.recv_bytes() {
            b.send_bytes(&m).unwrap();
        }
    });
    let sender = std::thread::spawn(move || {
        for i in 0..20u8 {
            tx.send_bytes(&pattern(700_000 + i as usize, i)).unwrap();
        }
        tx
    });
    for i in 0..20u8 {
        assert!(
            rx.recv_bytes().unwrap() == pattern(700_000 + i as usize, i),
            "echo {i}"
        );
    }
    drop(sender.join().unwrap());
    drop(rx);
    echo.join().unwrap();
}

#[test]
fn a_sender_killed_mid_message_is_an_error_for_the_receiver_not_a_hang() {
    const NAME: &str = "a_sender_killed_mid_message_is_an_error_for_the_receiver_not_a_hang";
    if is_child(NAME) {
        // Fills the ring, sends the header, and waits for room that never comes.
        let conn = child_connection();
        conn.send_bytes(&pattern(16 << 20, 0)).unwrap();
        unreachable!("the parent kills this process before it reads anything");
    }
    let (ours, theirs) = pipe().unwrap();
    let child = TestChild::spawn(NAME, Some(OwnedFd::from(theirs)), &[]);
    // Readable: the header is here, so the child has filled the ring and is waiting.
    assert!(ours.poll(Some(LIVENESS)).unwrap());
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let err = within_liveness(move || {
        let err = ours.recv_bytes().unwrap_err();
        // The place in the stream is lost.
        assert!(matches!(ours.recv_bytes(), Err(Error::Misuse(_))));
        err
    });
    assert!(
        matches!(&err, Error::Malformed(m) if m.contains("hung up after 2097152 of 16777216")),
        "{err}"
    );
}

#[test]
fn a_timeout_inside_a_ring_message_breaks_the_receive_side() {
    const NAME: &str = "a_timeout_inside_a_ring_message_breaks_the_receive_side";
    if is_child(NAME) {
        let conn = child_connection();
        let _ = conn.send_bytes(&pattern(16 << 20, 0));
        return;
    }
    let (ours, theirs) = pipe().unwrap();
    let child = TestChild::spawn(NAME, Some(OwnedFd::from(theirs)), &[]);
    assert!(ours.poll(Some(LIVENESS)).unwrap());
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    // Stopped, the sender cannot refill the ring: the receive gets the first 2 MiB and then
    // waits until its deadline.
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let t0 = Instant::now();
    let res = ours.recv_timeout::<ByteBuf>(Duration::from_millis(300));
    assert!(matches!(res, Err(Error::Timeout)), "{res:?}");
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(matches!(ours.recv_bytes(), Err(Error::Misuse(_))));
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    drop(ours); // the child's send fails, it exits
    drop(child);
}

#[test]
fn a_receiver_killed_mid_message_is_an_error_for_the_sender_not_a_hang() {
    const NAME: &str = "a_receiver_killed_mid_message_is_an_error_for_the_sender_not_a_hang";
    if is_child(NAME) {
        let _conn = child_connection();
        std::thread::sleep(LIVENESS);
        return;
    }
    let (ours, theirs) = pipe().unwrap();
    let child = TestChild::spawn(NAME, Some(OwnedFd::from(theirs)), &[]);
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    // Made before the killer starts its clock (a debug build on a loaded machine took more
    // than its 300 ms to make it, and the kill came before the header went out).
    let payload = pattern(16 << 20, 0);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
        child
    });
    let res = within_liveness(move || {
        let res = ours.send_bytes(&payload);
        (res, ours.send_bytes(b"more"))
    });
    drop(killer.join().unwrap());
    assert!(
        matches!(&res.0, Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe),
        "{:?}",
        res.0
    );
    // The header went out before the kill: the stream is broken on this side.
    assert!(matches!(res.1, Err(Error::Misuse(_))), "{:?}", res.1);
}

/// Sends one record with descriptors.
fn send_with_fds(raw: &OwnedFd, bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); 64];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(fds)));
    }
    let iov = [std::io::IoSlice::new(bytes)];
    let n = rustix::net::sendmsg(raw, &iov, &mut control, rustix::net::SendFlags::empty()).unwrap();
    assert_eq!(n, bytes.len());
}

fn memfd(len: u64, seal: bool) -> OwnedFd {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd =
        rustix::fs::memfd_create("test", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, len).unwrap();
    if seal {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
    }
    fd
}

/// Runs `body` alone in a child process (this binary re-run on the test), where descriptor
/// and mapping counts are not disturbed by tests running on other threads.
fn isolated(name: &str, body: impl FnOnce()) {
    if is_child(name) {
        body();
    } else {
        TestChild::spawn(name, None, &[]).expect_success();
    }
}

/// The descriptor of a memfd ring this process holds (its sender's, or its mapping's).
fn ring_descriptor() -> OwnedFd {
    let n: i32 = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            target
                .to_str()?
                .starts_with("/memfd:ipc-core")
                .then_some(())?;
            e.file_name().to_str()?.parse().ok()
        })
        .expect("a ring descriptor");
    let path = format!("/proc/self/fd/{n}");
    OwnedFd::from(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap(),
    )
}

#[test]
fn hostile_ring_frames_are_malformed_never_a_crash_or_a_hang() {
    isolated(
        "hostile_ring_frames_are_malformed_never_a_crash_or_a_hang",
        || {
            const RING: u32 = 1 << 31;
            const WITH_FD: u32 = RING | 1 << 30;
            let ring_record =
                |len: u64, start: u64| [&header(len, WITH_FD)[..], &start.to_le_bytes()].concat();
            let ring_record_without_fd =
                |len: u64, start: u64| [&header(len, RING)[..], &start.to_le_bytes()].concat();
            let (pipe_r, _pipe_w) = rustix::pipe::pipe().unwrap();
            let unsealed = memfd(4096 + (2 << 20), false);
            let small = memfd(8192, true);
            let zeroes = memfd(4096 + (2 << 20), true); // the right size, not set up as a ring
            let cases: Vec<(&str, Vec<u8>, Vec<&OwnedFd>)> = vec![
                ("no descriptor", ring_record(100_000, 0), vec![]),
                (
                    "no ring given yet",
                    ring_record_without_fd(100_000, 0),
                    vec![],
                ),
                (
                    "no ring given yet, and a descriptor of the message's own",
                    ring_record_without_fd(100_000, 0),
                    vec![&small],
                ),
                ("a pipe", ring_record(100_000, 0), vec![&pipe_r]),
                (
                    "an unsealed memfd",
                    ring_record(100_000, 0),
                    vec![&unsealed],
                ),
                (
                    "a memfd of the wrong size",
                    ring_record(100_000, 0),
                    vec![&small],
                ),
                (
                    "a memfd that is not a ring",
                    ring_record(100_000, 0),
                    vec![&zeroes],
                ),
                (
                    "no start position",
                    header(100_000, WITH_FD).to_vec(),
                    vec![&small],
                ),
            ];
            for (what, record, fds) in cases {
                let (conn, raw) = raw_records();
                let before = open_fds();
                let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
                send_with_fds(&raw, &record, &borrowed);
                let err = within_liveness(move || {
                    let err = conn.recv_bytes().unwrap_err();
                    assert!(matches!(conn.recv_bytes(), Err(Error::Misuse(_))), "{what}");
                    err
                });
                assert!(matches!(err, Error::Malformed(_)), "{what}: {err}");
                // The connection is gone; what remains of the pair is `raw`: nothing else stays open.
                assert_eq!(
                    open_fds(),
                    before - 1,
                    "{what}: descriptors that came are closed"
                );
            }
            // A ring frame on a byte stream.
            let (conn, raw) = conn_support::raw_pair();
            conn_support::write_and_close(raw, &ring_record(100_000, 0));
            assert!(matches!(conn.recv_bytes(), Err(Error::Malformed(_))));
        },
    );
}

#[test]
fn a_real_ring_with_lying_positions_is_malformed() {
    isolated("a_real_ring_with_lying_positions_is_malformed", || {
        // The peer is one of ours and has a ring; then hand-made frames on the same socket
        // point at it with positions it never published.
        let (conn, raw) = raw_records();
        let sender = Connection::from_socket(raw.try_clone().unwrap());
        sender.send_bytes(&pattern(100_000, 0)).unwrap();
        assert!(conn.recv_bytes().unwrap() == pattern(100_000, 0));
        let ring = ring_descriptor();
        let lie = |start: u64| [&header(100_000, 3 << 30)[..], &start.to_le_bytes()].concat();
        // Behind what the receiver already freed.
        send_with_fds(&raw, &lie(0), &[ring.as_fd()]);
        let err = within_liveness(move || conn.recv_bytes().unwrap_err());
        assert!(
            matches!(&err, Error::Malformed(m) if m.contains("outside the ring")),
            "{err}"
        );
        // Published nothing, and the sender hangs up: the receiver does not wait forever.
        let (conn, raw) = raw_records();
        send_with_fds(&raw, &lie(1 << 40), &[ring.as_fd()]);
        let err = within_liveness(move || conn.recv_bytes().unwrap_err());
        assert!(matches!(&err, Error::Malformed(_)), "{err}");
        let (conn, raw) = raw_records();
        send_with_fds(&raw, &lie(1 << 20), &[ring.as_fd()]);
        drop(raw);
        let err = within_liveness(move || conn.recv_bytes().unwrap_err());
        assert!(
            matches!(&err, Error::Malformed(m) if m.contains("hung up")),
            "{err}"
        );
    });
}

#[test]
fn without_a_ring_large_messages_go_through_the_socket() {
    isolated(
        "without_a_ring_large_messages_go_through_the_socket",
        || {
            use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
            let (a, b) = pipe().unwrap();
            let maps = memfd_mappings();
            // With no descriptor to spare, the sender cannot make its ring.
            let was = getrlimit(Resource::Nofile);
            // A new descriptor takes the lowest free number: below it, every number is taken.
            let lowest_free = {
                use std::os::fd::AsRawFd;
                rustix::io::dup(std::io::stdin().as_fd())
                    .unwrap()
                    .as_raw_fd() as u64
            };
            let tight = Rlimit {
                current: Some(lowest_free), // no descriptor number left below it
                maximum: was.maximum,
            };
            setrlimit(Resource::Nofile, tight).unwrap();
            let writer = std::thread::spawn(move || a.send_bytes(&pattern(300_000, 9)).map(|()| a));
            let got = b.recv_bytes();
            let sent = writer.join().unwrap();
            setrlimit(Resource::Nofile, was).unwrap();
            assert!(got.unwrap() == pattern(300_000, 9));
            drop(sent.unwrap());
            assert_eq!(memfd_mappings(), maps, "no ring was made");
        },
    );
}
