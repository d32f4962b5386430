//! Blocking connection calls survive signals: a handler installed without `SA_RESTART` makes the
//! kernel fail blocking system calls with `EINTR`, and every call must retry transparently.
//! Ports CPython checklist items 44 and 24 (joining a process). The signals target one thread
//! (`pthread_kill`), and the handler only counts, so the other tests of this binary are not
//! disturbed.

mod common;

use std::time::{Duration, Instant};

use common::{METHODS, builder, install_handler, pester};
use ipc_core::conn::{Address, Listener, connect, pipe, pipe_oneway};

#[test]
fn a_blocking_receive_retries_after_signals() {
    // cpython checklist 44
    install_handler();
    let (a, b) = pipe().unwrap();
    let receiver = std::thread::spawn(move || (b.recv::<String>(), b.recv_bytes()));
    let n = pester(&receiver, Duration::from_millis(150));
    assert!(n > 0, "no signal was delivered");
    a.send(&"after the signals").unwrap();
    a.send_bytes(b"and more").unwrap();
    let (typed, raw) = receiver.join().unwrap();
    assert_eq!(typed.unwrap(), "after the signals");
    assert_eq!(raw.unwrap(), b"and more");
}

#[test]
fn a_send_larger_than_the_socket_buffer_retries_after_signals() {
    // cpython checklist 44: the sender blocks in a send larger than the buffer and is signalled.
    install_handler();
    for duplex in [true, false] {
        let (r, w) = if duplex {
            let (a, b) = pipe().unwrap();
            (b, a)
        } else {
            pipe_oneway().unwrap()
        };
        let msg: Vec<u8> = (0..8usize << 20).map(|i| (i % 251) as u8).collect();
        let expected = msg.clone();
        let sender = std::thread::spawn(move || {
            let res = w.send_bytes(&msg);
            (res, w)
        });
        let n = pester(&sender, Duration::from_millis(150));
        assert!(n > 0, "no signal was delivered");
        let got = r.recv_bytes().unwrap();
        let (res, _w) = sender.join().unwrap();
        res.unwrap();
        assert!(
            got == expected,
            "the message was corrupted (duplex: {duplex})"
        );
    }
}

#[test]
fn poll_keeps_its_timeout_across_signals() {
    // cpython checklist 44: an interrupted wait resumes with the time left; it neither fails
    // nor returns early.
    install_handler();
    let (_a, b) = pipe().unwrap();
    let t = Duration::from_millis(300);
    let poller = std::thread::spawn(move || {
        let start = Instant::now();
        let ready = b.poll(Some(t));
        (ready, start.elapsed())
    });
    let n = pester(&poller, Duration::from_millis(150));
    assert!(n > 0, "no signal was delivered");
    let (ready, elapsed) = poller.join().unwrap();
    assert!(!ready.unwrap());
    assert!(elapsed >= t, "poll returned after {elapsed:?}");
}

#[test]
fn a_blocking_accept_and_handshake_retry_after_signals() {
    // cpython checklist 44: accept retries on EINTR (and so does the handshake's waiting).
    install_handler();
    let path = std::env::temp_dir().join(format!("ipc-conn-eintr-{}.sock", std::process::id()));
    let addr = Address::Unix(path);
    let listener = Listener::bind(&addr, Some(b"k")).unwrap();
    let acceptor = std::thread::spawn(move || {
        let conn = listener.accept();
        (conn, listener)
    });
    let n = pester(&acceptor, Duration::from_millis(150));
    assert!(n > 0, "no signal was delivered");
    let client = connect(&addr, Some(b"k")).unwrap();
    client.send(&"accepted").unwrap();
    let (conn, _listener) = acceptor.join().unwrap();
    assert_eq!(conn.unwrap().recv::<String>().unwrap(), "accepted");
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn join_retries_after_signals_and_keeps_its_timeout() {
    // cpython checklist 24: join() is robust against EINTR from signals delivered to the parent.
    install_handler();
    for m in METHODS {
        let h = builder(m).spawn(400, sleep_ms).unwrap();
        let joiner = std::thread::spawn(move || h.join().map_err(|e| e.to_string()));
        let n = pester(&joiner, Duration::from_millis(150));
        assert!(n > 0, "no signal was delivered");
        assert_eq!(joiner.join().unwrap(), Ok(400), "{m}");

        // A timed join neither fails nor returns early when interrupted.
        let h = builder(m).spawn(60_000, sleep_ms).unwrap();
        let t = Duration::from_millis(300);
        let joiner = std::thread::spawn(move || {
            let start = Instant::now();
            let r = h.join_timeout(t).map_err(|e| e.to_string());
            let elapsed = start.elapsed();
            h.kill().unwrap();
            let _ = h.join();
            (r, elapsed)
        });
        let n = pester(&joiner, Duration::from_millis(150));
        assert!(n > 0, "no signal was delivered");
        let (r, elapsed) = joiner.join().unwrap();
        assert_eq!(r, Err(ipc_core::Error::Timeout.to_string()), "{m}");
        assert!(elapsed >= t, "{m}: join_timeout returned after {elapsed:?}");
    }
}
