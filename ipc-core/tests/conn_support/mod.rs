//! Helpers shared by the connection tests: raw socket ends for writing hand-made frames, and
//! child processes made by re-running this test binary on one test (the test is both the parent
//! and, with an environment variable set, the child), which is how a test reaches a real second
//! process before the process API exists.
#![allow(dead_code)] // Each test file uses a different subset.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipc_core::conn::{Connection, HEADER_LEN};

/// Generous bound for liveness on a loaded two-core machine.
pub(crate) const LIVENESS: Duration = Duration::from_secs(30);

/// The environment variable that tells a re-run test binary which test plays the child.
const CHILD_ENV: &str = "IPC_CONN_TEST_CHILD";

/// A connection and the raw other end of its socketpair, to write arbitrary bytes into.
pub(crate) fn raw_pair() -> (Connection, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    (Connection::from_socket(OwnedFd::from(a)), b)
}

/// A connection over a `SOCK_SEQPACKET` pair, and the raw other end to send records on.
pub(crate) fn raw_records() -> (Connection, OwnedFd) {
    let (a, b) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair");
    (Connection::from_socket(a), b)
}

/// A frame header announcing `len` payload bytes and `nfds` descriptors.
pub(crate) fn header(len: u64, nfds: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&len.to_le_bytes());
    h[8..].copy_from_slice(&nfds.to_le_bytes());
    h
}

/// Writes `bytes` to `raw` and closes it.
pub(crate) fn write_and_close(mut raw: UnixStream, bytes: &[u8]) {
    raw.write_all(bytes).expect("write raw bytes");
    drop(raw);
}

/// Whether this process is the child side of `test`.
pub(crate) fn is_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == test)
}

/// In the child side of a test: the connection the parent handed over as standard input.
pub(crate) fn child_connection() -> Connection {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .expect("dup stdin");
    Connection::from_fd(fd).expect("stdin is a socket or a pipe")
}

/// A child process running one test of this binary in child mode; killed and reaped on drop,
/// so a failing test leaves nothing behind.
pub(crate) struct TestChild {
    child: Option<Child>,
}

impl TestChild {
    /// Re-runs this test binary on `test` alone, with `stdin` (usually one end of a
    /// connection) as its standard input and `env` added to its environment.
    pub(crate) fn spawn(test: &str, stdin: Option<OwnedFd>, env: &[(&str, String)]) -> TestChild {
        let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
        cmd.args(["--exact", test, "--test-threads=1", "--nocapture", "-q"])
            .env(CHILD_ENV, test)
            .stdout(Stdio::null())
            .stdin(match stdin {
                Some(fd) => Stdio::from(fd),
                None => Stdio::null(),
            });
        for (k, v) in env {
            cmd.env(k, v);
        }
        TestChild {
            child: Some(cmd.spawn().expect("spawn the test binary as a child")),
        }
    }

    /// The child's pid.
    pub(crate) fn id(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    /// Waits (up to [`LIVENESS`]) for the child's test to finish; panics unless it passed.
    pub(crate) fn expect_success(mut self) {
        let mut child = self.child.take().expect("child");
        let deadline = Instant::now() + LIVENESS;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                assert!(status.success(), "the child test failed: {status}");
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child test did not finish within {LIVENESS:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestChild {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `f` on a thread and returns its result, panicking if it takes longer than
/// [`LIVENESS`] (a hang becomes a failure instead of a stuck test run).
pub(crate) fn within_liveness<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(LIVENESS) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked: surface its panic, not a misleading "hung".
            std::panic::resume_unwind(handle.join().expect_err("the sender is gone"))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the operation hung (no result within {LIVENESS:?})")
        }
    }
}

/// A Unix socket path no other test (or test run) uses.
pub(crate) fn unique_path(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "ipc-conn-{tag}-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// One address of each family, all unused.
pub(crate) fn every_family(tag: &str) -> Vec<ipc_core::conn::Address> {
    use ipc_core::conn::Address;
    let path = unique_path(tag);
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    vec![
        Address::Unix(path),
        Address::Abstract(name),
        Address::Tcp("127.0.0.1:0".parse().unwrap()),
    ]
}
