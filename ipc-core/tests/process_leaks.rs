//! The suite's no-leak guarantee, checked per operation: a battery of everything ipc-core does
//! (children under every start method that return, panic, exit, are killed, terminated,
//! interrupted or detached, grandchildren; pipes, descriptor passing; segments, named segments,
//! heap allocations; listeners and clients of every family, failed handshakes; waits) runs in a
//! child process, round after round, and after each round this test inspects the child from the
//! outside: its descriptor table (`/proc/<pid>/fd`) and its shared mappings (`/proc/<pid>/maps`)
//! are back to their baseline, it has no child but its forkserver and the idle child prepared for
//! its next forkserver start (no zombie, no straggler), the forkserver has no child, and no
//! `/dev/shm` entry or socket file the round made remains.
//!
//! Why a child: the test binary's own descriptor table and children are shared with the tests
//! that plain `cargo test` runs beside this one as threads, so they cannot be compared; a spawned
//! child has a table of its own whatever the harness does (nextest runs each test in its own
//! process, which works the same). The baseline is taken after a first warm-up round, because two
//! things are created once per process and then reused: the forkserver with its control channel,
//! and the shared heap's current arena. Anything that grows per round is a leak. (The run as a
//! whole is checked by `cargo xtask ci`'s leak check, see xtask/src/leaks.rs.)

mod common;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{METHODS, Reap, builder, children_of};
use ipc_core::conn::{Address, Connection, Listener, connect, pipe, pipe_oneway, wait};
use ipc_core::process::{self, JoinError, StartMethod, active_children};
use ipc_core::shm::{BIG_ALLOCATION, NamedSegment, Segment, ShmBox, ShmSlice};

const LONG: Duration = Duration::from_secs(30);

/// What the child reports after a round.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Report {
    forkserver: Option<u32>,
    /// Names of the named segments and socket files the round made (all must be gone).
    shm_names: Vec<String>,
    socket_files: Vec<PathBuf>,
}

fn sleep_forever((): ()) {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn grandchild(m: StartMethod) -> u32 {
    let h = process::Builder::new()
        .start_method(if m == StartMethod::Fork {
            StartMethod::Spawn
        } else {
            m
        })
        .spawn(20u32, |x| x + 1)
        .unwrap();
    h.join().unwrap()
}

fn processes(round: u32) {
    for m in METHODS {
        // Returns, panics, exits.
        assert_eq!(
            builder(m).spawn(round, |x| x * 2).unwrap().join().unwrap(),
            round * 2
        );
        let panicked = builder(m)
            .spawn((), |()| -> u8 {
                panic!("expected panic in the leak battery")
            })
            .unwrap()
            .join();
        assert!(matches!(panicked, Err(JoinError::Panicked(_))), "{m}");
        let exited = builder(m)
            .spawn(3, |c: i32| -> u8 { std::process::exit(c) })
            .unwrap()
            .join();
        assert!(matches!(exited, Err(JoinError::Exited(3))), "{m}");
        // Killed, terminated, interrupted, and one that outlives a timed join.
        for (i, sig) in [9, 15, 2, 9].into_iter().enumerate() {
            let h = builder(m).spawn((), sleep_forever).unwrap();
            if i == 3 {
                assert!(
                    matches!(
                        h.join_timeout(Duration::from_millis(1)),
                        Err(ipc_core::Error::Timeout)
                    ),
                    "{m}"
                );
            }
            match sig {
                9 => h.kill().unwrap(),
                15 => h.terminate().unwrap(),
                _ => h.interrupt().unwrap(),
            }
            assert!(
                matches!(h.join(), Err(JoinError::Signaled(s)) if s == sig),
                "{m}"
            );
        }
        // Detached: the handle is dropped once the child has exited; the next query reaps it.
        let h = builder(m).spawn((), |()| ()).unwrap();
        assert_eq!(wait(&[h.sentinel()], Some(LONG)).unwrap(), vec![0]);
        drop(h);
        let _ = active_children();
        // A grandchild, and a batch of siblings at once.
        assert_eq!(builder(m).spawn(m, grandchild).unwrap().join().unwrap(), 21);
        let batch: Vec<_> = (0..8u32)
            .map(|i| builder(m).spawn(i, |i| i + 1).unwrap())
            .collect();
        for (i, h) in batch.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), i as u32 + 1);
        }
    }
    // A closure by fork.
    let captured = String::from("abc");
    assert_eq!(
        builder(StartMethod::Fork)
            .fork(move || captured.len())
            .unwrap()
            .join()
            .unwrap(),
        3
    );
    // An argument that cannot travel starts nothing, after its descriptors were collected.
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let seg = Segment::new(64).unwrap();
        let (a, _b) = pipe().unwrap();
        let refused = builder(m).spawn((seg, a, Refuses), |_| ());
        assert!(matches!(refused, Err(ipc_core::Error::Encode(_))), "{m}");
    }
}

/// A value whose serialization fails.
struct Refuses;

impl serde::Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value refuses to travel"))
    }
}

impl<'de> serde::Deserialize<'de> for Refuses {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Refuses)
    }
}

fn pipes() {
    for duplex in [true, false] {
        let (r, w) = if duplex {
            let (a, b) = pipe().unwrap();
            (b, a)
        } else {
            pipe_oneway().unwrap()
        };
        w.send(&"typed").unwrap();
        w.send_bytes(b"raw").unwrap();
        assert_eq!(r.recv::<String>().unwrap(), "typed");
        assert_eq!(r.recv_bytes().unwrap(), b"raw");
        assert!(!r.poll(Some(Duration::ZERO)).unwrap());
        drop(w);
        assert!(r.recv_bytes().is_err(), "end of file");
    }
    // Descriptors and connections through a connection.
    let (a, b) = pipe().unwrap();
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    a.send_fd(file.as_fd()).unwrap();
    drop(b.recv_fd().unwrap());
    let (x, y) = pipe().unwrap();
    a.send(&x).unwrap();
    drop(x);
    let x: Connection = b.recv().unwrap();
    x.send(&7u8).unwrap();
    assert_eq!(y.recv::<u8>().unwrap(), 7);
    // A message with descriptors that is never read is closed with its connection.
    a.send(&y).unwrap();
    assert_eq!(wait(&[&b], Some(LONG)).unwrap(), vec![0]);
}

fn shared_memory(round: u32, report: &mut Report) {
    let seg = Segment::new(4096).unwrap();
    let copy = seg.try_clone().unwrap();
    let (a, b) = pipe().unwrap();
    a.send(&copy).unwrap();
    let got: Segment = b.recv().unwrap();
    assert_eq!(got.len(), 4096);
    drop((seg, copy, got));

    let name = format!("ipc-core-process-leaks-{}-{round}", std::process::id());
    report.shm_names.push(name.clone());
    {
        let created = NamedSegment::create(&name, 100).unwrap();
        let opened = NamedSegment::open(&name).unwrap();
        a.send(&opened).unwrap();
        let _received: NamedSegment = b.recv().unwrap();
        assert!(NamedSegment::create(&name, 100).is_err());
        created.unlink().unwrap();
    }
    let other = format!("{name}-oc");
    report.shm_names.push(other.clone());
    {
        let _x = NamedSegment::open_or_create(&other, 10).unwrap();
        let _y = NamedSegment::open_or_create(&other, 10).unwrap();
    }
    let unique = NamedSegment::create_unique(10).unwrap();
    report.shm_names.push(unique.name().to_owned());
    drop(unique);
    assert!(NamedSegment::open(&name).is_err());

    let boxes: Vec<ShmBox<AtomicU32>> = (0..2000).map(|_| ShmBox::new().unwrap()).collect();
    boxes[1999].store(round, Ordering::Relaxed);
    a.send(&boxes[1999]).unwrap();
    let travelled: ShmBox<AtomicU32> = b.recv().unwrap();
    assert_eq!(travelled.load(Ordering::Relaxed), round);
    let big = ShmSlice::<u8>::new(BIG_ALLOCATION * 2).unwrap();
    a.send(&big).unwrap();
    let big_copy: ShmSlice<u8> = b.recv().unwrap();
    assert_eq!(big_copy.len(), big.len());
    drop((boxes, travelled, big, big_copy));
}

fn listeners(round: u32, report: &mut Report) {
    let path = std::env::temp_dir().join(format!(
        "ipc-core-process-leaks-{}-{round}.sock",
        std::process::id()
    ));
    report.socket_files.push(path.clone());
    let families = [
        Address::Unix(path),
        Address::Abstract(format!(
            "ipc-core-process-leaks-{}-{round}",
            std::process::id()
        )),
        Address::Tcp("127.0.0.1:0".parse().unwrap()),
    ];
    for addr in families {
        let listener = Listener::bind(&addr, Some(b"key")).unwrap();
        let at = listener.address().clone();
        let client = std::thread::spawn(move || {
            let c = connect(&at, Some(b"key")).unwrap();
            c.send(&"hello").unwrap();
            assert_eq!(c.recv::<String>().unwrap(), "bye");
            // A client with the wrong key is refused; the listener's side fails too.
            assert!(connect(&at, Some(b"wrong")).is_err());
        });
        let conn = listener.accept().unwrap();
        assert_eq!(wait(&[&conn], Some(LONG)).unwrap(), vec![0]);
        assert_eq!(conn.recv::<String>().unwrap(), "hello");
        conn.send(&"bye").unwrap();
        assert!(listener.accept().is_err());
        client.join().unwrap();
    }
    // Connecting to nothing fails without leaving a socket behind.
    let nowhere = Address::Abstract(format!("ipc-core-nowhere-{}", std::process::id()));
    assert!(connect(&nowhere, None).is_err());
}

/// The child: rounds until told to stop; each round ends with a report.
fn battery(ctl: Connection) {
    while let Ok(round) = ctl.recv::<u32>() {
        if round == 0 {
            return;
        }
        let mut report = Report {
            forkserver: None,
            shm_names: Vec::new(),
            socket_files: Vec::new(),
        };
        processes(round);
        pipes();
        shared_memory(round, &mut report);
        listeners(round, &mut report);
        report.forkserver = process::forkserver_pid();
        ctl.send(&report).unwrap();
    }
}

/// fd number -> what it refers to.
fn fd_table(pid: u32) -> BTreeMap<u32, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect()
}

/// What the descriptors refer to, with how many of each, sockets counted together: the
/// connection of the child prepared for the next forkserver start is a new socket after each
/// start (at whatever number is free then), so only counts can be compared across rounds.
fn descriptor_kinds(table: &BTreeMap<u32, String>) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for target in table.values() {
        let kind = if target.starts_with("socket:") {
            "socket".to_string()
        } else {
            target.clone()
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    kinds
}

/// The shared-memory mappings (memfd segments, heap arenas, /dev/shm files).
fn shared_mappings(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:") || l.contains("/dev/shm/"))
        .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Polls `f` until it holds or a generous deadline passes (children signalled at the very end of
/// a round may still be on their way out of the kernel for a moment after being reaped).
fn settles(f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn a_battery_of_operations_leaves_no_descriptor_process_or_shm_entry() {
    let (ctl, theirs) = pipe().unwrap();
    let h = builder(StartMethod::Spawn).spawn(theirs, battery).unwrap();
    let _reap = Reap(&h);
    let pid = h.pid();
    let mut baseline = None;
    for round in 1..=3u32 {
        ctl.send(&round).unwrap();
        let report: Report = ctl.recv().unwrap();
        let server = report.forkserver.expect("the battery started a forkserver");
        // The child is now blocked in recv: its tables are still. Its children: the forkserver
        // and at most one idle child prepared for the next forkserver start (forked by the server
        // as a sibling of its own, so the child's), itself childless.
        assert!(
            settles(|| {
                let c = children_of(pid);
                c.contains(&(server, 'S'))
                    && c.len() <= 2
                    && c.iter().all(|&(p, state)| {
                        state == 'S' && (p == server || is_prepared_child(p, server))
                    })
            }),
            "round {round}: the child's children are {:?}, expected its forkserver {server} \
             and at most one idle prepared child; their descriptors: {:?}",
            children_of(pid),
            children_of(pid)
                .iter()
                .map(|&(p, _)| (p, fd_table(p)))
                .collect::<Vec<_>>()
        );
        assert!(
            settles(|| children_of(server).is_empty()),
            "round {round}: the forkserver's children are {:?}, expected none",
            children_of(server)
        );
        let prefix = format!("ipc-core-process-leaks-{pid}-");
        let left: Vec<String> = std::fs::read_dir("/dev/shm")
            .unwrap()
            .filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_owned()))
            .filter(|n| n.starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "round {round}: left in /dev/shm: {left:?}");
        for name in &report.shm_names {
            assert!(
                !PathBuf::from("/dev/shm").join(name).exists(),
                "round {round}: /dev/shm/{name} was left"
            );
        }
        for file in &report.socket_files {
            assert!(!file.exists(), "round {round}: {} was left", file.display());
        }
        let now = (descriptor_kinds(&fd_table(pid)), shared_mappings(pid));
        match &baseline {
            None => baseline = Some(now),
            Some(base) => {
                assert_eq!(
                    &now.0, &base.0,
                    "round {round}: the child's descriptors differ from the baseline"
                );
                assert_eq!(
                    &now.1, &base.1,
                    "round {round}: the child's shared mappings differ from the baseline"
                );
            }
        }
    }
    ctl.send(&0u32).unwrap();
    drop(_reap);
    h.join().unwrap();
}

fn double(x: u32) -> u32 {
    x * 2
}

/// Whether `pid` looks like the idle child a forkserver prepares: no children, and nothing open
/// but its one connection and what the server inherited itself (the standard streams, and
/// whatever the test environment leaves open across `exec`), none of the server's sockets.
fn is_prepared_child(pid: u32, server: u32) -> bool {
    let server_fds = fd_table(server);
    let (shared, own): (Vec<_>, Vec<_>) = fd_table(pid)
        .into_iter()
        .partition(|(fd, target)| server_fds.get(fd) == Some(target));
    children_of(pid).is_empty()
        && (0..3).all(|fd| shared.iter().any(|(f, _)| *f == fd))
        && shared.iter().all(|(_, t)| !t.starts_with("socket:"))
        && own.len() == 1
        && own[0].1.starts_with("socket:")
}

/// The idle children prepared for forkserver starts among `children` (all but the server).
fn prepared(children: &[(u32, char)], server: u32) -> Vec<(u32, char)> {
    children
        .iter()
        .copied()
        .filter(|&(p, _)| p != server)
        .collect()
}

/// In its own process (so that its forkserver is its own): kills the child prepared for the next
/// forkserver start, then starts children through the server; returns their results and this
/// process's children afterwards.
fn kill_the_spare((): ()) -> (Vec<u32>, u32, Vec<(u32, char)>) {
    let me = std::process::id();
    let first = builder(StartMethod::ForkServer).spawn(1, double).unwrap();
    assert_eq!(first.join().unwrap(), 2);
    let server = process::forkserver_pid().expect("a forkserver runs");
    assert!(
        settles(|| matches!(prepared(&children_of(me), server).as_slice(), [(_, 'S')])),
        "one idle child is prepared: {:?}",
        children_of(me)
    );
    let (spare, _) = prepared(&children_of(me), server)[0];
    common::kill_pid(spare);
    // SIGKILL takes a moment; a start that races it is handed to the dying child and reports
    // "killed by signal 9", which is the truth. Once it is dead (a zombie of ours), the next
    // start must reap it and take another.
    assert!(settles(|| children_of(me).contains(&(spare, 'Z'))));
    let results = (2..5)
        .map(|i| {
            builder(StartMethod::ForkServer)
                .spawn(i, double)
                .unwrap()
                .join()
                .unwrap()
        })
        .collect();
    settles(|| {
        prepared(&children_of(me), server)
            .iter()
            .all(|&(p, s)| p != spare && s == 'S')
    });
    (results, server, children_of(me))
}

// The child prepared for the next forkserver start is an implementation detail that must not
// leak or jam: killed while idle, it is reaped and replaced, and starts go on.
#[test]
fn a_killed_spare_is_reaped_and_replaced() {
    let h = builder(StartMethod::Spawn)
        .spawn((), kill_the_spare)
        .unwrap();
    let _kill = common::KillOnPanic(vec![h.pid()]);
    let (results, server, children) = h.join().unwrap();
    assert_eq!(results, vec![4, 6, 8]);
    let spares = prepared(&children, server);
    assert!(
        children.contains(&(server, 'S'))
            && spares.len() <= 1
            && spares.iter().all(|&(_, s)| s == 'S'),
        "the children after the kill: {children:?} (server {server})"
    );
}
