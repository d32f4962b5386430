//! The progress bar (feature `progress`, issue #13): drawn on standard error when it is a
//! terminal (a pseudo-terminal here), nothing at all when it is a pipe. The pool runs in a
//! child (this test binary started again in `child_mode`), whose standard error we choose.
#![cfg(feature = "progress")]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// The child's part: a map and an imap with the bar on (run only when started by the tests).
#[test]
fn child_mode() {
    if std::env::var_os("IPC_POOL_PROGRESS_CHILD").is_none() {
        return;
    }
    let pool = ipc_pool::Pool::builder()
        .processes(2)
        .progress_bar(true)
        .build()
        .unwrap();
    assert_eq!(pool.map(nap, vec![20u64; 30]).unwrap().len(), 30);
    assert_eq!(pool.imap(nap, vec![10u64; 10]).count(), 10);
}

fn run_child(stderr: Stdio) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_mode", "--nocapture", "--test-threads=1"])
        .env("IPC_POOL_PROGRESS_CHILD", "1")
        .env("TERM", "xterm")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

#[test]
fn nothing_is_written_to_a_pipe() {
    let mut child = run_child(Stdio::piped());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        !err.contains("tasks") && !err.contains('\u{1b}'),
        "bar output on a pipe: {err:?}"
    );
}

#[test]
fn a_bar_is_drawn_on_a_terminal() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let mut child = run_child(Stdio::from(slave));
    let mut out = std::fs::File::from(master);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the child is gone (EIO on the master once every slave end is closed).
    while let Ok(n) = out.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(child.wait().unwrap().success());
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("30/30 tasks"),
        "no finished map bar in: {text:?}"
    );
    assert!(text.contains("10 tasks"), "no imap counter in: {text:?}");
}
