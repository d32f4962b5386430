//! `Connection` and `pipe` inside one process: framing, message boundaries, end of file against
//! malformed streams, the maximum message size, descriptor passing, one-way pipes, large
//! messages, and descriptors in unusual modes. Ports CPython checklist items 30-43.

mod conn_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use conn_support::{LIVENESS, header, raw_pair, raw_records, within_liveness, write_and_close};
use ipc_core::Error;
use ipc_core::codec::TransferFd;
use ipc_core::conn::{Connection, DEFAULT_MAX_MESSAGE, HEADER_LEN, Kind, pipe, pipe_oneway};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Circle { r: f64 },
    Named(String, Vec<i64>),
    Unit,
}

#[test]
fn duplex_ends_send_and_receive_typed_values_both_ways() {
    // cpython checklist 30
    let (a, b) = pipe().unwrap();
    assert_eq!((a.kind(), b.kind()), (Kind::Socket, Kind::Socket));
    let () = a.send(&Shape::Circle { r: 1.5 }).unwrap();
    a.send(&Shape::Named("x".into(), vec![-1, 2, i64::MAX]))
        .unwrap();
    a.send(&Shape::Unit).unwrap();
    let map: BTreeMap<String, Option<u8>> = [("a".into(), Some(1)), ("b".into(), None)].into();
    b.send(&map).unwrap();
    b.send(&(1u8, "two", [3u16; 3], ())).unwrap();
    assert_eq!(b.recv::<Shape>().unwrap(), Shape::Circle { r: 1.5 });
    assert_eq!(
        b.recv::<Shape>().unwrap(),
        Shape::Named("x".into(), vec![-1, 2, i64::MAX])
    );
    assert_eq!(b.recv::<Shape>().unwrap(), Shape::Unit);
    assert_eq!(a.recv::<BTreeMap<String, Option<u8>>>().unwrap(), map);
    assert_eq!(
        a.recv::<(u8, String, [u16; 3], ())>().unwrap(),
        (1, "two".to_string(), [3; 3], ())
    );
}

#[test]
fn bytes_round_trip_and_an_empty_message_is_a_real_message() {
    // cpython checklist 31
    let (a, b) = pipe().unwrap();
    a.send_bytes(b"abc").unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"abc");
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    a.send_bytes(b"").unwrap();
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    // Polling again does not consume it.
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(b.recv_bytes().unwrap(), b"");
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
}

#[test]
fn recv_bytes_into_returns_the_count_and_honours_an_offset() {
    // cpython checklist 32
    let (a, b) = pipe().unwrap();
    let mut buf = [0xAAu8; 32];
    a.send_bytes(b"hello").unwrap();
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(buf[5], 0xAA);
    // At a byte offset: the bytes before it are untouched.
    a.send_bytes(b"world").unwrap();
    assert_eq!(b.recv_bytes_into(&mut buf[10..]).unwrap(), 5);
    assert_eq!(&buf[10..15], b"world");
    assert_eq!(buf[9], 0xAA);
    // Typed buffers: the bytes of an array of integers, decoded back.
    let ints: [i32; 4] = [1, -2, 3, i32::MIN];
    let bytes: Vec<u8> = ints.iter().flat_map(|i| i.to_ne_bytes()).collect();
    a.send_bytes(&bytes).unwrap();
    let mut raw = [0u8; 16];
    assert_eq!(b.recv_bytes_into(&mut raw).unwrap(), 16);
    let back: Vec<i32> = raw
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(back, ints);
    // A message that exactly fills the buffer.
    a.send_bytes(&[7u8; 32]).unwrap();
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 32);
    assert_eq!(buf, [7u8; 32]);
}

#[test]
fn too_small_buffer_returns_the_whole_message_and_the_stream_continues() {
    // cpython checklist 33
    let (a, b) = pipe().unwrap();
    let msg: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    a.send_bytes(&msg).unwrap();
    a.send_bytes(b"next").unwrap();
    let mut small = [0u8; 100];
    match b.recv_bytes_into(&mut small) {
        Err(Error::BufferTooShort(whole)) => assert_eq!(whole, msg),
        other => panic!("expected BufferTooShort, got {other:?}"),
    }
    assert_eq!(b.recv_bytes().unwrap(), b"next");
}

#[test]
fn send_bytes_range_checks_offset_and_size() {
    // cpython checklist 34
    let (a, b) = pipe().unwrap();
    let buf = b"0123456789";
    a.send_bytes_range(buf, 0, None).unwrap();
    a.send_bytes_range(buf, 3, None).unwrap();
    a.send_bytes_range(buf, 3, Some(4)).unwrap();
    a.send_bytes_range(buf, 10, None).unwrap();
    a.send_bytes_range(buf, 10, Some(0)).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"0123456789");
    assert_eq!(b.recv_bytes().unwrap(), b"3456789");
    assert_eq!(b.recv_bytes().unwrap(), b"3456");
    assert_eq!(b.recv_bytes().unwrap(), b"");
    assert_eq!(b.recv_bytes().unwrap(), b"");
    for (offset, size) in [
        (11, None),
        (5, Some(6)),
        (0, Some(11)),
        (1, Some(usize::MAX)),
    ] {
        let err = a.send_bytes_range(buf, offset, size).unwrap_err();
        assert!(matches!(err, Error::Misuse(_)), "{offset} {size:?}: {err}");
    }
    // Nothing was sent by the refused calls.
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
}

#[test]
fn poll_waits_the_timeout_sees_data_at_once_and_never_consumes() {
    // cpython checklist 35
    let (a, b) = pipe().unwrap();
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    let t = Duration::from_millis(100);
    let start = Instant::now();
    assert!(!b.poll(Some(t)).unwrap());
    assert!(
        start.elapsed() >= t,
        "poll returned after {:?}",
        start.elapsed()
    );

    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        a.send(&42u64).unwrap();
        a
    });
    // Returns as soon as the message arrives (well before the liveness bound).
    assert!(b.poll(Some(LIVENESS)).unwrap());
    let _a = sender.join().unwrap();
    for _ in 0..3 {
        assert!(b.poll(None).unwrap());
    }
    assert_eq!(b.recv::<u64>().unwrap(), 42);
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect()
}

#[test]
fn a_16_mib_message_round_trips() {
    // cpython checklist 36
    let (a, b) = pipe().unwrap();
    let msg = pattern(16 << 20);
    let expected = msg.clone();
    let reader = std::thread::spawn(move || b.recv_bytes().unwrap());
    a.send_bytes(&msg).unwrap();
    assert!(reader.join().unwrap() == expected);
}

#[test]
fn a_64_mib_message_round_trips_both_raw_and_typed() {
    // The socket buffer is a few hundred KiB: the sender blocks until the reader thread drains.
    let (a, b) = pipe().unwrap();
    let msg = pattern(64 << 20);
    let expected = msg.clone();
    let reader = std::thread::spawn(move || {
        let raw = b.recv_bytes().unwrap();
        let typed: serde_bytes::ByteBuf = b.recv().unwrap();
        (raw, typed.into_vec())
    });
    a.send_bytes(&msg).unwrap();
    a.send(serde_bytes::Bytes::new(&msg)).unwrap();
    let (raw, typed) = reader.join().unwrap();
    assert!(raw == expected, "raw bytes differ");
    assert!(typed == expected, "typed bytes differ");
}

#[test]
fn lengths_are_64_bit_and_oversize_frames_are_refused_before_allocation() {
    // cpython checklist 36: lengths above 4 GiB are representable; the maximum guards memory.
    let (conn, raw) = raw_pair();
    let len = 3u64 << 30;
    write_and_close(raw, &header(len, 0));
    match conn.recv_bytes() {
        Err(Error::MessageTooLarge { len: l, max }) => {
            assert_eq!((l, max), (len, DEFAULT_MAX_MESSAGE));
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    // An absurd length (a lie of u64::MAX) is refused the same way, not allocated.
    let (conn, raw) = raw_pair();
    write_and_close(raw, &header(u64::MAX, 0));
    assert!(matches!(
        conn.recv::<u8>(),
        Err(Error::MessageTooLarge { len: u64::MAX, .. })
    ));
}

#[test]
fn the_maximum_is_configurable_and_the_stream_is_unusable_after_an_oversize_frame() {
    let (a, b) = pipe().unwrap();
    assert_eq!(b.max_message_size(), DEFAULT_MAX_MESSAGE);
    b.set_max_message_size(10);
    a.send_bytes(&[1; 10]).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), [1; 10]);
    a.send_bytes(&[2; 11]).unwrap();
    a.send_bytes(b"after").unwrap();
    assert!(matches!(
        b.recv_bytes(),
        Err(Error::MessageTooLarge { len: 11, max: 10 })
    ));
    // The unread payload would otherwise be read as a header: refuse instead.
    let err = b.recv_bytes().unwrap_err();
    assert!(
        matches!(&err, Error::Misuse(m) if m.contains("lost its place")),
        "{err}"
    );
    // The maximum travels with a connection sent to another holder.
    let (c, d) = pipe().unwrap();
    let (carrier_tx, carrier_rx) = pipe().unwrap();
    c.set_max_message_size(5);
    carrier_tx.send(&c).unwrap();
    let c2: Connection = carrier_rx.recv().unwrap();
    assert_eq!(c2.max_message_size(), 5);
    d.send_bytes(b"123456").unwrap();
    assert!(matches!(
        c2.recv_bytes(),
        Err(Error::MessageTooLarge { len: 6, max: 5 })
    ));
}

#[test]
fn end_of_file_after_the_peer_closes_once_everything_is_drained() {
    // cpython checklist 37
    let (a, b) = pipe().unwrap();
    a.send(&1u8).unwrap();
    a.send_bytes(b"two").unwrap();
    drop(a);
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    assert_eq!(b.recv::<u8>().unwrap(), 1);
    assert_eq!(b.recv_bytes().unwrap(), b"two");
    // EOF is "ready" for poll, and stays EOF.
    assert!(b.poll(Some(Duration::ZERO)).unwrap());
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
    assert!(matches!(b.recv::<u8>(), Err(Error::Eof)));
    // Also on a one-way pipe.
    let (r, w) = pipe_oneway().unwrap();
    w.send(&"last").unwrap();
    drop(w);
    assert_eq!(r.recv::<String>().unwrap(), "last");
    assert!(matches!(r.recv::<String>(), Err(Error::Eof)));
}

#[test]
fn a_peer_that_closes_with_unread_data_still_reads_as_end_of_file() {
    // A Unix socket closed with unread data makes the survivor's reads fail with ECONNRESET
    // after its queue drains; between frames that is the peer being gone: end of file.
    let (a, b) = pipe().unwrap();
    b.send_bytes(b"never read by a").unwrap();
    a.send_bytes(b"read by b").unwrap();
    drop(a);
    assert_eq!(b.recv_bytes().unwrap(), b"read by b");
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
    // The same when the reset arrives in the middle of a large frame that is still queued.
    let (a, b) = pipe().unwrap();
    b.send_bytes(b"never read by a").unwrap();
    let big = pattern(3 << 20);
    let expected = big.clone();
    let sender = std::thread::spawn(move || {
        a.send_bytes(&big).unwrap();
        a.send_bytes(b"last").unwrap();
    });
    std::thread::sleep(Duration::from_millis(20));
    let got = b.recv_bytes().unwrap();
    sender.join().unwrap();
    assert!(got == expected);
    assert_eq!(b.recv_bytes().unwrap(), b"last");
    assert!(matches!(b.recv_bytes(), Err(Error::Eof)));
}

fn send_record(fd: &OwnedFd, bytes: &[u8]) {
    let n = rustix::net::send(fd, bytes, rustix::net::SendFlags::empty()).unwrap();
    assert_eq!(n, bytes.len());
}

#[test]
fn records_that_break_the_framing_rules_are_malformed() {
    let frame = |len: u64, payload: &[u8]| [&header(len, 0)[..], payload].concat();
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("a first record shorter than a header", vec![vec![1, 2, 3]]),
        (
            "a first record above 8 KiB",
            vec![frame(9000, &[0; 9000 - 12])],
        ),
        (
            "a first record with more than its message",
            vec![frame(2, b"abcde")],
        ),
        (
            "a later record that runs into the next message",
            vec![frame(10, b"12345"), b"6789012345".to_vec()],
        ),
        (
            "a stream that ends inside a frame",
            vec![frame(10, b"12345")],
        ),
    ];
    for (what, records) in cases {
        let (conn, raw) = raw_records();
        for r in &records {
            send_record(&raw, r);
        }
        drop(raw);
        let err = conn.recv_bytes().unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{what}: {err}");
        assert!(matches!(conn.recv_bytes(), Err(Error::Misuse(_))), "{what}");
    }
    // A frame split into records of any size is fine, and so is an empty message.
    let (conn, raw) = raw_records();
    send_record(&raw, &frame(6, b"a"));
    send_record(&raw, b"bc");
    send_record(&raw, b"def");
    send_record(&raw, &frame(0, b""));
    drop(raw);
    assert_eq!(conn.recv_bytes().unwrap(), b"abcdef");
    assert_eq!(conn.recv_bytes().unwrap(), b"");
    assert!(matches!(conn.recv_bytes(), Err(Error::Eof)));
}

#[test]
fn a_small_send_buffer_makes_records_smaller_not_sends_fail() {
    // A record must fit the socket's send buffer; on EMSGSIZE the sender halves its records.
    let (a, b) = pipe().unwrap();
    rustix::net::sockopt::set_socket_send_buffer_size(&a, 4096).unwrap();
    let msg = pattern(1 << 20);
    let expected = msg.clone();
    let reader = std::thread::spawn(move || (b.recv_bytes().unwrap(), b.recv::<String>().unwrap()));
    a.send_bytes(&msg).unwrap();
    a.send(&"x".repeat(9000)).unwrap();
    let (got, s) = reader.join().unwrap();
    assert!(got == expected);
    assert_eq!(s.len(), 9000);
}

#[test]
fn truncated_frames_are_malformed_not_end_of_file() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("half a header", header(4, 0)[..5].to_vec()),
        ("header without payload", header(4, 0).to_vec()),
        ("short payload", [&header(4, 0)[..], b"ab"].concat()),
    ];
    for (what, bytes) in cases {
        let (conn, raw) = raw_pair();
        write_and_close(raw, &bytes);
        let err = conn.recv_bytes().unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{what}: {err}");
        // The place in the stream is lost: later calls say so instead of misreading.
        assert!(matches!(conn.recv_bytes(), Err(Error::Misuse(_))), "{what}");
    }
    // A complete frame followed by nothing is a message, then end of file.
    let (conn, raw) = raw_pair();
    write_and_close(raw, &[&header(2, 0)[..], b"ok"].concat());
    assert_eq!(conn.recv_bytes().unwrap(), b"ok");
    assert!(matches!(conn.recv_bytes(), Err(Error::Eof)));
}

#[test]
fn a_header_that_lies_about_descriptors_is_malformed() {
    let (conn, raw) = raw_pair();
    write_and_close(raw, &[&header(1, 2)[..], b"x"].concat());
    let err = conn.recv_bytes().unwrap_err();
    assert!(
        matches!(&err, Error::Malformed(m) if m.contains("2 descriptors")),
        "{err}"
    );
}

#[test]
fn a_message_that_does_not_decode_is_consumed_and_the_connection_stays_usable() {
    let (a, b) = pipe().unwrap();
    a.send(&"not a number").unwrap();
    a.send(&7u32).unwrap();
    assert!(matches!(b.recv::<(u64, u64, u64)>(), Err(Error::Decode(_))));
    assert_eq!(b.recv::<u32>().unwrap(), 7);
    // Trailing bytes are a decode error too (postcard alone would ignore them).
    a.send(&(1u8, 2u8)).unwrap();
    assert!(matches!(b.recv::<u8>(), Err(Error::Decode(_))));
}

#[test]
fn one_way_pipes_refuse_the_wrong_direction() {
    // cpython checklist 38
    let (r, w) = pipe_oneway().unwrap();
    assert_eq!((r.kind(), w.kind()), (Kind::PipeReader, Kind::PipeWriter));
    assert!(r.readable() && !r.writable());
    assert!(w.writable() && !w.readable());
    for err in [
        r.send(&1u8).unwrap_err(),
        r.send_bytes(b"x").unwrap_err(),
        w.recv::<u8>().unwrap_err(),
        w.recv_bytes().unwrap_err(),
        w.recv_bytes_into(&mut [0; 4]).unwrap_err(),
        w.poll(Some(Duration::ZERO)).unwrap_err(),
    ] {
        assert!(matches!(err, Error::Misuse(_)), "{err}");
    }
    // The right direction works, including a message larger than the pipe buffer.
    let big = pattern(1 << 20);
    let expected = big.clone();
    let reader = std::thread::spawn(move || r.recv_bytes().unwrap());
    w.send_bytes(&big).unwrap();
    assert!(reader.join().unwrap() == expected);
}

#[test]
fn descriptors_cannot_travel_over_a_pipe_and_nothing_is_sent() {
    let (r, w) = pipe_oneway().unwrap();
    let (x, _y) = pipe().unwrap();
    let err = w.send(&x).unwrap_err();
    assert!(matches!(err, Error::Encode(_)), "{err}");
    w.send(&5u8).unwrap();
    assert_eq!(r.recv::<u8>().unwrap(), 5);
}

#[test]
fn dropping_an_end_closes_it_and_sending_to_a_closed_peer_is_an_error_not_a_signal() {
    // cpython checklist 40: closing (here: dropping) an end; the survivor sees end of file, and
    // a send gets EPIPE instead of killing the process with SIGPIPE.
    let (a, b) = pipe().unwrap();
    drop(b);
    assert!(matches!(a.recv_bytes(), Err(Error::Eof)));
    let err = a.send_bytes(b"to nobody").unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe),
        "{err}"
    );
}

#[test]
fn three_sends_are_three_receives() {
    // cpython checklist 41
    let (a, b) = pipe().unwrap();
    a.send_bytes(b"one").unwrap();
    a.send_bytes(b"").unwrap();
    a.send_bytes(b"three").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(b.recv_bytes().unwrap(), b"one");
    assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 0);
    assert_eq!(b.recv_bytes().unwrap(), b"three");
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
}

#[test]
fn a_frame_written_in_pieces_is_received_whole_and_polling_never_pulls_part_of_it() {
    // cpython checklist 41: the writer sends one frame in slow pieces while another thread keeps
    // polling; polls consume nothing and the receive sees the whole message.
    let (conn, mut raw) = raw_pair();
    let payload = pattern(3000);
    let frame = [&header(payload.len() as u64, 0)[..], &payload[..]].concat();
    let writer = std::thread::spawn(move || {
        for piece in frame.chunks(7).take(20) {
            raw.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        for piece in frame.chunks(7).skip(20) {
            raw.write_all(piece).unwrap();
        }
        raw
    });
    let mut polls = 0;
    while !conn.poll(Some(Duration::from_millis(1))).unwrap() {
        polls += 1;
        assert!(polls < 100_000, "no data ever arrived");
    }
    for _ in 0..50 {
        assert!(conn.poll(Some(Duration::ZERO)).unwrap());
    }
    assert!(conn.recv_bytes().unwrap() == payload);
    let _raw = writer.join().unwrap();
}

#[test]
fn the_descriptor_number_is_exposed_and_from_fd_checks_what_it_wraps() {
    // cpython checklist 42: fileno() is an int; wrapping an invalid handle is an error.
    let (a, _b) = pipe().unwrap();
    assert!(a.as_raw_fd() >= 0);
    assert_eq!(a.as_raw_fd(), a.as_fd().as_raw_fd());

    let (s, _t) = UnixStream::pair().unwrap();
    assert_eq!(
        Connection::from_fd(OwnedFd::from(s)).unwrap().kind(),
        Kind::Socket
    );
    let (r, w) = rustix::pipe::pipe().unwrap();
    assert_eq!(Connection::from_fd(r).unwrap().kind(), Kind::PipeReader);
    assert_eq!(Connection::from_fd(w).unwrap().kind(), Kind::PipeWriter);
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    assert!(matches!(
        Connection::from_fd(OwnedFd::from(file)),
        Err(Error::Misuse(_))
    ));
    let dgram = std::os::unix::net::UnixDatagram::unbound().unwrap();
    assert!(matches!(
        Connection::from_fd(OwnedFd::from(dgram)),
        Err(Error::Misuse(_))
    ));
}

#[test]
fn a_connection_sent_through_a_connection_works_on_the_receiving_side() {
    // cpython checklist 43 (within one process; tests/conn_process.rs crosses processes)
    let (carrier_a, carrier_b) = pipe().unwrap();
    let (x, y) = pipe().unwrap();
    carrier_a.send(&x).unwrap();
    drop(x); // The sender's copy is gone; the received one is an independent descriptor.
    let x2: Connection = carrier_b.recv().unwrap();
    x2.send(&"through the received end").unwrap();
    assert_eq!(y.recv::<String>().unwrap(), "through the received end");
    y.send(&9i8).unwrap();
    assert_eq!(x2.recv::<i8>().unwrap(), 9);
    // One-way pipe ends travel too, keeping their direction.
    let (r, w) = pipe_oneway().unwrap();
    carrier_a.send(&(r, w)).unwrap();
    let (r2, w2): (Connection, Connection) = carrier_b.recv().unwrap();
    assert_eq!((r2.kind(), w2.kind()), (Kind::PipeReader, Kind::PipeWriter));
    w2.send_bytes(b"p").unwrap();
    assert_eq!(r2.recv_bytes().unwrap(), b"p");
}

#[test]
fn raw_descriptors_travel_including_numbers_above_256() {
    // cpython checklist 43: send_handle / recv_handle, with a descriptor number > 256.
    let (a, b) = pipe().unwrap();
    let (mut s, t) = UnixStream::pair().unwrap();
    let high = rustix::io::fcntl_dupfd_cloexec(&t, 300).unwrap();
    assert!(high.as_raw_fd() >= 300);
    a.send_fd(high.as_fd()).unwrap();
    drop(high);
    drop(t);
    let got = b.recv_fd().unwrap();
    let mut got = UnixStream::from(got);
    s.write_all(b"via the passed descriptor").unwrap();
    let mut buf = [0u8; 25];
    got.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"via the passed descriptor");
    // A message without a descriptor is an error for recv_fd.
    a.send(&0u32).unwrap();
    assert!(matches!(b.recv_fd(), Err(Error::Decode(_))));
    // A typed message carrying descriptors is not raw bytes: an error, and it is consumed.
    a.send_fd(s.as_fd()).unwrap();
    a.send_bytes(b"after").unwrap();
    assert!(matches!(b.recv_bytes(), Err(Error::Decode(_))));
    assert_eq!(b.recv_bytes().unwrap(), b"after");
}

#[test]
fn the_kernel_maximum_of_253_descriptors_per_message_travels_and_254_is_refused() {
    let (a, b) = pipe().unwrap();
    let (s, _t) = UnixStream::pair().unwrap();
    let fds: Vec<TransferFd> = (0..253)
        .map(|_| TransferFd(s.as_fd().try_clone_to_owned().unwrap()))
        .collect();
    a.send(&fds).unwrap();
    let got: Vec<TransferFd> = b.recv().unwrap();
    assert_eq!(got.len(), 253);
    drop(got);
    let mut fds = fds;
    fds.push(TransferFd(s.as_fd().try_clone_to_owned().unwrap()));
    assert!(matches!(a.send(&fds), Err(Error::Encode(_))));
    // Nothing was sent.
    assert!(!b.poll(Some(Duration::ZERO)).unwrap());
}

#[test]
fn non_blocking_descriptors_still_behave_as_blocking_connections() {
    // cpython checklist 50 in Rust terms: a descriptor inherited in non-blocking mode (from an
    // event loop, say) must not turn sends and receives into spurious EAGAIN errors.
    let (a, b) = pipe().unwrap();
    for c in [&a, &b] {
        let fl = rustix::fs::fcntl_getfl(c).unwrap();
        rustix::fs::fcntl_setfl(c, fl | rustix::fs::OFlags::NONBLOCK).unwrap();
    }
    let msg = pattern(4 << 20);
    let expected = msg.clone();
    let echo = std::thread::spawn(move || {
        let m = b.recv_bytes().unwrap();
        b.send_bytes(&m).unwrap();
        b.recv::<u8>().unwrap()
    });
    a.send_bytes(&msg).unwrap();
    assert!(a.recv_bytes().unwrap() == expected);
    a.send(&3u8).unwrap();
    assert_eq!(echo.join().unwrap(), 3);
}

#[test]
fn sends_larger_than_the_socket_buffer_complete_while_the_peer_reads_slowly() {
    let (a, b) = pipe().unwrap();
    let msg = pattern(2 << 20);
    let expected = msg.clone();
    let reader = within_liveness(move || {
        let r = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut out = Vec::new();
            for _ in 0..3 {
                out.push(b.recv_bytes().unwrap());
            }
            out
        });
        a.send_bytes(&msg).unwrap();
        a.send_bytes(b"small").unwrap();
        a.send_bytes(&msg).unwrap();
        r.join().unwrap()
    });
    assert!(reader[0] == expected);
    assert_eq!(reader[1], b"small");
    assert!(reader[2] == expected);
}

#[test]
fn descriptors_over_tcp_are_a_clear_error_and_the_stream_stays_intact() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let a = Connection::from_socket(OwnedFd::from(client));
    let b = Connection::from_socket(OwnedFd::from(server));
    let (x, _y) = pipe().unwrap();
    let err = a.send(&x).unwrap_err();
    assert!(
        matches!(&err, Error::Encode(m) if m.message().contains("Unix socket")),
        "{err}"
    );
    a.send(&"still fine").unwrap();
    assert_eq!(b.recv::<String>().unwrap(), "still fine");
}

#[test]
fn the_header_is_twelve_bytes_little_endian() {
    // The frame format is part of the contract (other languages may speak it).
    let (a, b) = pipe().unwrap();
    let mut raw = UnixStream::from(OwnedFd::from(b));
    a.send_bytes(b"xyz").unwrap();
    let mut frame = [0u8; HEADER_LEN + 3];
    raw.read_exact(&mut frame).unwrap();
    assert_eq!(&frame[..HEADER_LEN], &header(3, 0));
    assert_eq!(&frame[HEADER_LEN..], b"xyz");
}
