//! `RemoteFn`: function handles sent to running workers of the same program, and refused by
//! anything else (another executable, another process family, forged bytes).

mod common;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::{LONG, METHODS, Reap, builder};
use ipc_core::Error;
use ipc_core::conn::Connection;
use ipc_core::process::RemoteFn;
use serde::{Deserialize, Serialize};

fn square(x: u64) -> u64 {
    x * x
}

fn shout(s: String) -> String {
    s.to_uppercase()
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

fn swap(p: Point) -> Point {
    Point { x: p.y, y: p.x }
}

fn fails(_: ()) -> u8 {
    panic!("task failed on purpose")
}

/// One task for the worker: a handle and its encoded argument; `None` ends the worker (under
/// fork the worker holds a copy of our end too, so closing ours would not reach it).
type Task = Option<(RemoteFn<(), ()>, Vec<u8>)>;

/// A worker that knows no function: it runs every (handle, encoded argument) that arrives and
/// sends back the encoded result, or the error / panic message, until told to stop.
fn worker(conn: Connection) -> u32 {
    let mut calls = 0;
    while let Ok(Some((f, arg))) = conn.recv::<Task>() {
        calls += 1;
        let outcome = std::panic::catch_unwind(|| f.call_encoded(&arg, Vec::new()));
        let reply: Result<Vec<u8>, String> = match outcome {
            Ok(Ok((bytes, _fds))) => Ok(bytes),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("panicked".into()),
        };
        conn.send(&reply).unwrap();
    }
    calls
}

fn ask<A: Serialize, R: serde::de::DeserializeOwned>(
    conn: &Connection,
    f: RemoteFn<A, R>,
    arg: &A,
) -> Result<R, String> {
    let task: Task = Some((f.erase(), postcard::to_stdvec(arg).unwrap()));
    conn.send(&task).unwrap();
    let reply: Result<Vec<u8>, String> = conn.recv().unwrap();
    reply.map(|bytes| postcard::from_bytes(&bytes).unwrap())
}

// Several handles of different types go to one worker that is already running, under every start
// method; a panic in one task does not stop the worker.
#[test]
fn several_handles_run_in_one_running_worker() {
    for m in METHODS {
        let (ours, theirs) = ipc_core::conn::pipe().unwrap();
        let h = builder(m).spawn(theirs, worker).unwrap();
        let _reap = Reap(&h);
        let sq = RemoteFn::new(square).unwrap();
        let sh = RemoteFn::new(shout).unwrap();
        let sw = RemoteFn::new(swap).unwrap();
        for x in [0u64, 3, 1 << 20] {
            assert_eq!(ask(&ours, sq, &x), Ok(x * x), "{m}");
        }
        assert_eq!(ask(&ours, sh, &"hi".to_string()), Ok("HI".to_string()));
        assert_eq!(
            ask(&ours, sw, &Point { x: 1, y: -2 }),
            Ok(Point { x: -2, y: 1 })
        );
        assert_eq!(
            ask(&ours, RemoteFn::new(fails).unwrap(), &()),
            Err::<u8, _>("panicked".into())
        );
        // A non-capturing closure is a function too.
        let add = RemoteFn::new(|(a, b): (i64, i64)| a + b).unwrap();
        assert_eq!(ask(&ours, add, &(2, -5)), Ok(-3));
        // Bytes that do not decode as the handle's argument type are an error, not a call.
        ours.send::<Task>(&Some((sw.erase(), vec![0xffu8; 3])))
            .unwrap();
        let reply: Result<Vec<u8>, String> = ours.recv().unwrap();
        assert!(reply.is_err(), "{m}: {reply:?}");
        ours.send::<Task>(&None).unwrap();
        drop(_reap);
        assert_eq!(h.join().unwrap(), 8, "{m}");
    }
}

/// A worker state: a running total and the calls seen.
struct Tally {
    total: u64,
    calls: u32,
}

fn open_tally(start: u64) -> Tally {
    Tally {
        total: start,
        calls: 0,
    }
}

fn add_to_tally(t: &mut Tally, x: u64) -> u64 {
    t.calls += 1;
    t.total += x;
    t.total
}

fn add_then_panic(t: &mut Tally, x: u64) -> u64 {
    t.total += x;
    panic!("after changing the state")
}

fn close_tally(t: Tally) -> (u64, u32) {
    (t.total, t.calls)
}

fn wrong_state(s: &mut u32, _: u64) -> u32 {
    *s
}

// A worker state made by an initializer handle, borrowed by stateful handles and consumed by a
// finisher, all sent to a running worker under every start method; the wrong state type, a
// missing state and a panicking task are clear errors, and the state survives the panic.
#[test]
fn worker_state_through_handles() {
    for m in METHODS {
        let (ours, theirs) = ipc_core::conn::pipe().unwrap();
        let h = builder(m).spawn(theirs, worker).unwrap();
        let _reap = Reap(&h);
        let add = RemoteFn::with_state(add_to_tally).unwrap();
        let missing = ask(&ours, add, &1).unwrap_err();
        assert!(missing.contains("no worker state"), "{m}: {missing}");
        assert_eq!(
            ask(&ours, RemoteFn::initializer(open_tally).unwrap(), &100),
            Ok(())
        );
        assert_eq!(ask(&ours, add, &1), Ok(101), "{m}");
        assert_eq!(ask(&ours, add, &2), Ok(103), "{m}");
        let wrong = ask(&ours, RemoteFn::with_state(wrong_state).unwrap(), &0).unwrap_err();
        assert!(wrong.contains("not a u32"), "{m}: {wrong}");
        let panicked = ask(&ours, RemoteFn::with_state(add_then_panic).unwrap(), &10);
        assert_eq!(panicked, Err("panicked".into()));
        assert_eq!(
            ask(&ours, add, &3),
            Ok(116),
            "{m}: the state outlived the panic"
        );
        let fin = RemoteFn::finisher(close_tally).unwrap();
        assert_eq!(ask(&ours, fin, &()), Ok((116, 3)), "{m}");
        assert!(
            ask(&ours, add, &1).is_err(),
            "{m}: the finisher took the state"
        );
        ours.send::<Task>(&None).unwrap();
        drop(_reap);
        h.join().unwrap();
    }
}

// A typed call here goes through the same bytes as a worker's.
#[test]
fn a_handle_calls_here_and_after_a_round_trip() {
    let f = RemoteFn::new(square).unwrap();
    assert_eq!(f.call(9).unwrap(), 81);
    let mut buf = Vec::new();
    let fds = ipc_core::codec::encode(&f, &mut buf).unwrap();
    let back: RemoteFn<u64, u64> = ipc_core::codec::decode(&buf, fds).unwrap();
    assert_eq!(back.call(5).unwrap(), 25);
    // Decoded with other types than it was made with: the call fails to decode, it never runs
    // `square` on a String.
    let wrong: RemoteFn<String, String> = postcard::from_bytes(&buf).unwrap();
    assert!(matches!(wrong.call("x".repeat(40)), Err(Error::Decode(_))));
}

// A handle's bytes changed in transit (offsets pointed elsewhere) are refused before any call.
#[test]
fn a_forged_handle_is_refused() {
    let f = RemoteFn::new(square).unwrap();
    let good = postcard::to_stdvec(&f).unwrap();
    // The wire form ends with the 32-byte tag (after its length byte), preceded by the two
    // offsets (varints: flipping bit 0 of a byte changes the value, not the length), preceded
    // by the executable id: change each part.
    for i in [good.len() - 1, good.len() - 34, good.len() - 40, 3] {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        let err = ipc_core::codec::decode::<RemoteFn<u64, u64>>(&bad, Vec::new()).unwrap_err();
        assert!(
            matches!(&err, Error::Decode(m) if m.message().contains("did not make") || m.message().contains("executable")),
            "byte {i}: {err}"
        );
    }
}

/// What a peer process answers when it receives a handle: the decode error, or "accepted".
fn peer_verdict(path: &std::path::Path) -> String {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut child = Command::new(path)
        .args(["--exact", "peer_mode", "--nocapture", "--test-threads=1"])
        .env("REMOTE_FN_PEER", "1")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let conn = Connection::from_socket(ours.into());
    conn.send(&RemoteFn::new(square).unwrap()).unwrap();
    assert!(conn.poll(Some(LONG)).unwrap(), "the peer never answered");
    let verdict: String = conn.recv().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "peer: {status}");
    verdict
}

/// Not a test of its own: the body a peer process runs (another build of this test binary, or
/// an unrelated run of this one) when `REMOTE_FN_PEER` is set.
#[test]
fn peer_mode() {
    if std::env::var_os("REMOTE_FN_PEER").is_none() {
        return;
    }
    let stdin = std::io::stdin();
    let fd = std::os::fd::AsFd::as_fd(&stdin)
        .try_clone_to_owned()
        .unwrap();
    let conn = Connection::from_socket(fd);
    let verdict = match conn.recv::<RemoteFn<u64, u64>>() {
        Ok(f) => format!("accepted; square(7) = {:?}", f.call(7)),
        Err(e) => e.to_string(),
    };
    conn.send(&verdict).unwrap();
}

/// A copy of this test binary with another identity: its build id changed by one bit (or, for a
/// binary linked without one, a byte appended, which changes its digest). Same code, another
/// executable as far as any handle can tell.
fn other_build() -> TempPath {
    let me = std::fs::read("/proc/self/exe").unwrap();
    let mut other = me.clone();
    // An ELF note: namesz 4, descsz, type 3 (NT_GNU_BUILD_ID), "GNU\0", then the id.
    let header = |descsz: u32| {
        let mut h = Vec::new();
        h.extend_from_slice(&4u32.to_ne_bytes());
        h.extend_from_slice(&descsz.to_ne_bytes());
        h.extend_from_slice(&3u32.to_ne_bytes());
        h.extend_from_slice(b"GNU\0");
        h
    };
    let found = [20u32, 16, 8, 32].into_iter().find_map(|n| {
        let h = header(n);
        me.windows(h.len())
            .position(|w| w == h)
            .map(|at| at + h.len())
    });
    match found {
        Some(id) => other[id] ^= 0x01,
        None => other.push(0),
    }
    let path = TempPath::new("remote-fn-other-build");
    let mut f = std::fs::File::create(&path.0).unwrap();
    f.write_all(&other).unwrap();
    f.set_permissions(std::fs::Permissions::from_mode(0o755))
        .unwrap();
    drop(f);
    path
}

/// A temporary file, removed on drop.
struct TempPath(std::path::PathBuf);

impl TempPath {
    fn new(stem: &str) -> TempPath {
        TempPath(std::env::temp_dir().join(format!("{stem}-{}", std::process::id())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// A handle that reaches another program is refused, never called: here the program is this very
// test binary with one bit of its build id changed, so its code offsets would even be right.
#[test]
fn a_handle_sent_to_another_binary_is_refused() {
    let other = other_build();
    let verdict = peer_verdict(&other.0);
    assert!(verdict.contains("another executable"), "{verdict}");
}

// The same binary, run by someone else (not our child): a process family of its own, whose key
// we do not share. It refuses our handle too.
#[test]
fn a_handle_sent_to_an_unrelated_run_of_this_binary_is_refused() {
    let verdict = peer_verdict(std::path::Path::new("/proc/self/exe"));
    assert!(verdict.contains("did not make"), "{verdict}");
}

// Review finding 2(d): a function that lives in a shared object (here one of libc.so's, given a
// Rust signature) is loaded at its own random address in each process, so its offset from our
// code names nothing in a child. Naming it is refused, by every start method and by RemoteFn;
// before, a spawned child jumped to an arbitrary address.
#[test]
#[allow(unsafe_code)]
fn a_function_in_a_shared_object_is_refused() {
    // SAFETY: the pointer is only compared and offset, never called with this signature.
    let elsewhere: fn(u64) -> u64 =
        unsafe { std::mem::transmute::<*const (), fn(u64) -> u64>(libc::labs as *const ()) };
    let err = RemoteFn::new(elsewhere).unwrap_err();
    assert!(
        matches!(&err, Error::Misuse(m) if m.contains("another loaded object")),
        "{err}"
    );
    for m in [
        ipc_core::process::StartMethod::Spawn,
        ipc_core::process::StartMethod::ForkServer,
    ] {
        let err = builder(m).spawn(3, elsewhere).unwrap_err();
        assert!(
            matches!(&err, Error::Misuse(m) if m.contains("another loaded object")),
            "{m}: {err}"
        );
    }
}
