//! Regression tests for bugs a review found (each failed before its fix): a crafted shared-heap
//! handle, a listener that never accepts, and a send during thread-local teardown. Its own test
//! binary: one test raises the descriptor limit and holds a thousand pending connections.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use ipc_core::codec::{self, TransferFd};
use ipc_core::conn::{Address, Listener, connect_timeout};
use ipc_core::shm::{BIG_ALLOCATION, ShmBox, ShmSafe, ShmSlice};

/// A type aligned above a page: the allocator refuses it, and so must deserialization (the
/// arena is only page aligned, so an offset multiple of the alignment proves nothing).
#[repr(C, align(65536))]
struct Huge([u8; 65536]);
// SAFETY: a byte array: any bytes valid, nothing process-local; alignment is not restricted by
// the ShmSafe contract.
unsafe impl ShmSafe for Huge {}

#[test]
fn a_received_box_of_an_over_page_aligned_type_is_refused() {
    assert!(
        ShmBox::<Huge>::new().is_err(),
        "allocation refuses align > page"
    );
    // Find an own-segment arena whose mapping is not 64 KiB aligned (almost every one).
    let mut keep = Vec::new();
    let (slice, base) = loop {
        let s = ShmSlice::<u8>::new(BIG_ALLOCATION + 2 * 65536).unwrap();
        let base = s.as_ptr() as usize - 64; // own segment: block at offset 64
        if !base.is_multiple_of(65536) {
            break (s, base);
        }
        keep.push(s);
    };
    // The arena's descriptor, as the codec would carry it.
    let mut buf = Vec::new();
    let fds = codec::encode(&slice, &mut buf).unwrap();
    let fd: OwnedFd = fds.into_iter().next().unwrap();
    // A crafted (or buggy) peer's wire form of a ShmBox<Huge>: offset 65536 is a multiple of
    // align_of::<Huge>() and lies inside the arena.
    let mut wire = Vec::new();
    // The last field, 0, is "pid namespace unknown", which every receiver accepts.
    let forged = (TransferFd(fd), 65536u64, 1u64, 65536u64, 0u64);
    let fds = codec::encode(&forged, &mut wire).unwrap();
    let err = codec::decode::<ShmBox<Huge>>(&wire, fds)
        .map(|b| b.as_ptr() as usize)
        .expect_err("a box of a type aligned above a page must be refused on receipt");
    assert!(err.to_string().contains("not aligned"), "{err}");
    drop((slice, base));
}

/// `connect_timeout` bounds the whole operation, also a Unix connect to a listener whose backlog
/// is full (a blocking connect(2) would wait there without limit).
#[test]
fn connect_timeout_to_a_full_unix_backlog_times_out() {
    // Room for the pending connections.
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if lim.current.unwrap_or(u64::MAX) < 3000 {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: lim.maximum.map(|m| m.min(8192)),
                maximum: lim.maximum,
            },
        );
    }
    let addr: Address = format!("@ipc-core-test-backlog-{}", std::process::id())
        .parse()
        .unwrap();
    let _listener = Listener::bind(&addr, None).unwrap(); // never accepts (a stuck server)
    // Fill the backlog (1024) with non-blocking connects so that the test itself never blocks.
    let Address::Abstract(name) = &addr else {
        unreachable!()
    };
    let sa = rustix::net::SocketAddrUnix::new_abstract_name(name.as_bytes()).unwrap();
    let mut pending = Vec::new();
    loop {
        let fd = rustix::net::socket_with(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        match rustix::net::connect(&fd, &sa) {
            Ok(()) => pending.push(fd),
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(pending.len() < 5000);
    }
    // Now a client with a 300 ms bound; run it in a thread so the test can report a hang.
    let (tx, rx) = std::sync::mpsc::channel();
    let a2 = addr.clone();
    std::thread::spawn(move || {
        let t = Instant::now();
        let r = connect_timeout(&a2, Some(b"key"), Some(Duration::from_millis(300)));
        let _ = tx.send((r.map(drop), t.elapsed()));
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok((r, took)) => {
            assert!(matches!(r, Err(ipc_core::Error::Timeout)), "{r:?}");
            assert!(took < Duration::from_secs(2), "{r:?} after {took:?}");
        }
        Err(_) => panic!(
            "connect_timeout(.., 300 ms) still blocked after 5 s ({} pending connections)",
            pending.len()
        ),
    }
}

/// A send from a thread-local's destructor works (the codec's tables may already be gone).
/// Run in a child process: a panic in a TLS destructor would abort the whole test binary.
#[test]
fn send_from_a_thread_local_destructor() {
    if std::env::var_os("IPC_CORE_TEST_TLS_CHILD").is_some() {
        struct Bye(ipc_core::conn::Connection);
        impl Drop for Bye {
            fn drop(&mut self) {
                // A "goodbye" message from a thread-local's destructor.
                let r = self.0.send(&42u32);
                eprintln!("send from TLS dtor: {r:?}");
            }
        }
        thread_local! { static BYE: std::cell::RefCell<Option<Bye>> = const { std::cell::RefCell::new(None) }; }
        let (a, b) = ipc_core::conn::pipe().unwrap();
        std::thread::spawn(move || {
            BYE.with(|t| *t.borrow_mut() = Some(Bye(a))); // registered first, destroyed last
            let (c, _d) = ipc_core::conn::pipe().unwrap();
            c.send(&1u8).unwrap(); // registers the codec's tables
        })
        .join()
        .unwrap();
        assert_eq!(b.recv::<u32>().unwrap(), 42);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "send_from_a_thread_local_destructor",
            "--nocapture",
        ])
        .env("IPC_CORE_TEST_TLS_CHILD", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
