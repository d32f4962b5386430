//! Blocking connection calls survive signals: a handler installed without `SA_RESTART` makes the
//! kernel fail blocking system calls with `EINTR`, and every call must retry transparently.
//! Ports CPython checklist items 44 and 24 (joining a process). The signals target one thread
//! (`pthread_kill`), and the handler only counts, so the other tests of this binary are not
//! disturbed.

mod common;

use std::os::unix::thread::JoinHandleExt;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{METHODS, builder};
use ipc_core::conn::{Address, Listener, connect, pipe};

static DELIVERED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    // Only an atomic increment: async-signal-safe.
    DELIVERED.fetch_add(1, Ordering::Relaxed);
}

/// Installs the counting SIGUSR1 handler, deliberately without `SA_RESTART`.
fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags); we then set a
        // handler that is an `extern "C" fn(c_int)` doing only async-signal-safe work.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = count_signal as *const () as libc::sighandler_t;
        action.sa_flags = 0; // No SA_RESTART: blocking calls fail with EINTR.
        // SAFETY: `action` is fully initialised and outlives the call; a null old-action pointer
        // is allowed.
        let rc = unsafe { libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "sigaction failed");
    });
}

/// Sends SIGUSR1 to `thread` every few milliseconds for `period`; returns how many the handler
/// counted meanwhile. The thread must stay alive for the whole period.
fn pester<T>(thread: &JoinHandle<T>, period: Duration) -> usize {
    let before = DELIVERED.load(Ordering::Relaxed);
    let end = Instant::now() + period;
    while Instant::now() < end {
        // SAFETY: the pthread_t comes from a JoinHandle we hold and have not joined, so the
        // thread has not been reaped and the id is valid (the callers keep it blocked meanwhile).
        let rc = unsafe { libc::pthread_kill(thread.as_pthread_t(), libc::SIGUSR1) };
        assert_eq!(rc, 0, "pthread_kill failed");
        std::thread::sleep(Duration::from_millis(3));
    }
    // Let the last signal land before counting.
    std::thread::sleep(Duration::from_millis(20));
    DELIVERED.load(Ordering::Relaxed) - before
}

#[test]
fn a_blocking_receive_retries_after_signals() {
    // cpython checklist 44
    install_handler();
    let (a, b) = pipe(true).unwrap();
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
            let (a, b) = pipe(true).unwrap();
            (b, a)
        } else {
            pipe(false).unwrap()
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
    let (_a, b) = pipe(true).unwrap();
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
        assert_eq!(r, Ok(None), "{m}");
        assert!(elapsed >= t, "{m}: join_timeout returned after {elapsed:?}");
    }
}
