//! Process lifecycle under every start method: start, join, timeouts, signals, exit codes,
//! names, identities. Ports CPython's checklist items 1-18 (see
//! shared/reference/python-behaviours.md), each test citing its items.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{METHODS, Reap, builder};
use ipc_core::conn::Connection;
use ipc_core::process::{
    self, JoinError, StartMethod, active_children, current_process, parent_process,
};

fn identity((): ()) -> (String, u32, Option<(u32, String)>, bool) {
    let me = current_process();
    let parent = parent_process().map(|p| (p.pid(), p.name().to_string()));
    (me.name, me.pid, parent, me.daemon)
}

// cpython checklist 1, 11: the child sees its name and its own pid, the parent's identity.
#[test]
fn child_sees_its_name_pid_and_parent() {
    let me = current_process();
    assert_eq!(me.name, "MainProcess");
    assert!(!me.daemon);
    assert!(
        parent_process().is_none(),
        "cpython checklist 12: no parent in main"
    );
    for m in METHODS {
        let h = builder(m)
            .name(format!("child-{m}"))
            .spawn((), identity)
            .unwrap();
        let pid = h.pid();
        let (name, child_pid, parent, daemon) = h.join().unwrap();
        assert_eq!(name, format!("child-{m}"));
        assert_eq!(
            child_pid, pid,
            "{m}: the child's own pid is the one the parent sees"
        );
        assert_eq!(parent, Some((me.pid, "MainProcess".to_string())), "{m}");
        assert!(!daemon);
    }
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

// cpython checklist 2, 3: alive and listed while running; after join not alive, exit code 0,
// not listed.
#[test]
fn alive_while_running_and_listed() {
    for m in METHODS {
        let h = builder(m).spawn(300, sleep_ms).unwrap();
        let _reap = Reap(&h);
        assert!(h.is_alive() && !h.is_finished(), "{m}");
        assert_eq!(h.exitcode(), None, "{m}");
        assert!(active_children().iter().any(|c| c.pid == h.pid()), "{m}");
        assert_eq!(h.join_timeout(Duration::from_secs(30)).unwrap(), 0, "{m}");
        assert!(!h.is_alive() && h.is_finished());
        assert_eq!(h.exitcode(), Some(0));
        assert!(!active_children().iter().any(|c| c.pid == h.pid()), "{m}");
    }
}

// cpython checklist 4: join with a zero or short timeout returns while the child runs, the exit
// code still unset; the result stays available to a later join.
#[test]
fn join_timeout_returns_while_running() {
    for m in METHODS {
        let h = builder(m).spawn(600, sleep_ms).unwrap();
        let _reap = Reap(&h);
        assert!(
            matches!(
                h.join_timeout(Duration::ZERO),
                Err(ipc_core::Error::Timeout)
            ),
            "{m}"
        );
        let t = Instant::now();
        assert!(
            matches!(
                h.join_timeout(Duration::from_millis(100)),
                Err(ipc_core::Error::Timeout)
            ),
            "{m}"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "{m}: waited the timeout"
        );
        assert_eq!(h.exitcode(), None);
        drop(_reap);
        assert_eq!(h.join().unwrap(), 600, "{m}");
    }
}

fn sleep_forever((): ()) {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

// cpython checklist 5: terminate gives -SIGTERM, kill gives -SIGKILL.
#[test]
fn terminate_and_kill_exit_codes() {
    for m in METHODS {
        let h = builder(m).spawn((), sleep_forever).unwrap();
        let _reap = Reap(&h);
        h.terminate().unwrap();
        assert_eq!(h.join_timeout(Duration::from_secs(30)).unwrap(), -15, "{m}");
        let h2 = builder(m).spawn((), sleep_forever).unwrap();
        let _reap2 = Reap(&h2);
        h2.kill().unwrap();
        assert_eq!(h2.join_timeout(Duration::from_secs(30)).unwrap(), -9, "{m}");
        drop(_reap2);
        assert!(matches!(h2.join(), Err(JoinError::Signaled(9))), "{m}");
        // Signalling a finished process is a no-op.
        h.terminate().unwrap();
    }
}

fn start_grandchild((): ()) -> String {
    match process::Builder::new().spawn(1u8, |x| x) {
        Ok(_) => "started".into(),
        Err(e) => e.to_string(),
    }
}

// cpython checklist 7: a daemon cannot start children (a clear error).
#[test]
fn daemon_cannot_start_children() {
    for m in METHODS {
        let msg = builder(m)
            .daemon(true)
            .spawn((), start_grandchild)
            .unwrap()
            .join()
            .unwrap();
        assert!(
            msg.contains("daemon") && msg.contains("cannot start"),
            "{m}: {msg}"
        );
    }
}

// cpython checklist 8: join, terminate from a process that did not start the child are errors.
#[test]
fn join_from_a_non_creator_is_an_error() {
    let h = Arc::new(builder(StartMethod::Spawn).spawn(200, sleep_ms).unwrap());
    let _reap = Reap(&*h);
    let hr = h.clone();
    // The forked child has a copy of the handle: it is not the creator.
    let msg = builder(StartMethod::Fork)
        .fork(move || {
            let a = hr
                .join_timeout(Duration::from_millis(1))
                .map_err(|e| e.to_string());
            let b = hr.terminate().map_err(|e| e.to_string());
            format!("{a:?} {b:?}")
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(
        msg.matches("only the process that started it").count() == 2,
        "{msg}"
    );
    drop(_reap);
    let h = Arc::into_inner(h).expect("the fork closure's copy is dropped");
    assert_eq!(h.join().unwrap(), 200);
}

// cpython checklist 8: is_alive and exitcode from a process that did not start the child (a
// fork child holding a copy of the handle) neither wait for nor reap the child, and above all do
// not consume the result the real parent will join for.
#[test]
fn a_non_creator_polling_the_child_leaves_its_result_alone() {
    let h = Arc::new(builder(StartMethod::Spawn).spawn(5u32, |x| x + 1).unwrap());
    let _reap = Reap(&*h);
    // Let the child finish, so that its result is waiting on the connection.
    assert_eq!(
        ipc_core::conn::wait(&[h.sentinel()], Some(Duration::from_secs(30))).unwrap(),
        vec![0]
    );
    let hr = h.clone();
    let seen = builder(StartMethod::Fork)
        .fork(move || (hr.is_alive(), hr.exitcode()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        seen,
        (false, None),
        "the non-creator sees the child gone but cannot know its exit code"
    );
    drop(_reap);
    let h = Arc::into_inner(h).expect("the fork closure's copy is dropped");
    assert_eq!(h.join().unwrap(), 6, "the creator still gets the result");
}

// cpython checklist 12: a grandchild observes its parent as dead after the parent is killed.
#[test]
fn grandchild_sees_parent_die() {
    fn parent(conn: ipc_core::conn::Connection) {
        let g = process::Builder::new()
            .start_method(StartMethod::Spawn)
            .spawn(conn, |conn: ipc_core::conn::Connection| {
                let p = parent_process().expect("has a parent");
                conn.send(&p.pid()).unwrap();
                // Wait until the parent is killed, then report.
                let gone = p.join_timeout(Duration::from_secs(60)).is_ok();
                conn.send(&gone).unwrap();
            })
            .unwrap();
        let _ = g.join();
    }
    for m in METHODS {
        let (a, b) = ipc_core::conn::pipe().unwrap();
        let h = builder(m).spawn(b, parent).unwrap();
        let _reap = Reap(&h);
        let parent_pid: u32 = a.recv().unwrap();
        assert_eq!(parent_pid, h.pid(), "{m}");
        h.kill().unwrap();
        let gone: bool = a.recv().unwrap();
        assert!(gone, "{m}: the grandchild saw its parent die");
    }
}

fn tree(depth: u32) -> Vec<String> {
    let mut names = vec![current_process().name];
    if depth > 0 {
        let h = process::Builder::new()
            .start_method(StartMethod::Spawn)
            .spawn(depth - 1, tree)
            .unwrap();
        names.extend(h.join().unwrap());
    }
    names
}

// cpython checklist 13: processes create processes (depth 2); default names follow Python's
// `Process-N:M` scheme.
#[test]
fn processes_create_processes() {
    for m in METHODS {
        let names = builder(m).spawn(2, tree).unwrap().join().unwrap();
        assert_eq!(names.len(), 3, "{m}");
        assert!(names[0].starts_with("Process-"), "{m}: {names:?}");
        assert_eq!(names[1], format!("{}:1", names[0]), "{m}: {names:?}");
        assert_eq!(names[2], format!("{}:1", names[1]), "{m}: {names:?}");
    }
}

// cpython checklist 14: 100 processes started and joined all exit 0; 100 terminated right after
// start all report -SIGTERM. The function is a closure under every start method (known bug 20:
// CPython's spawn cannot pickle lambdas; a non-capturing closure is found by its address here).
#[test]
fn a_hundred_processes() {
    for m in METHODS {
        let hs: Vec<_> = (0..100u32)
            .map(|i| builder(m).spawn(i, |i| i * 2).unwrap())
            .collect();
        for (i, h) in hs.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), i as u32 * 2, "{m}");
        }
        let hs: Vec<_> = (0..100)
            .map(|_| builder(m).spawn((), sleep_forever).unwrap())
            .collect();
        for h in &hs {
            h.terminate().unwrap();
        }
        for h in hs {
            assert_eq!(h.join_timeout(Duration::from_secs(60)).unwrap(), -15, "{m}");
        }
    }
}

fn count_fds((): ()) -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

// cpython checklist 15: a (non-fork) child's descriptor count does not grow with the number of
// running siblings.
#[test]
fn child_fds_do_not_grow_with_siblings() {
    for m in [StartMethod::Spawn, StartMethod::ForkServer] {
        let before = builder(m).spawn((), count_fds).unwrap().join().unwrap();
        let siblings: Vec<_> = (0..10)
            .map(|_| builder(m).spawn((), sleep_forever).unwrap())
            .collect();
        let during = builder(m).spawn((), count_fds).unwrap().join().unwrap();
        for s in &siblings {
            s.kill().unwrap();
        }
        for s in siblings {
            assert_eq!(s.join_timeout(Duration::from_secs(30)).unwrap(), -9);
        }
        assert_eq!(before, during, "{m}");
    }
}

// cpython checklist 18: a panic in the child gives exit code 1 and the message in the join error.
#[test]
fn panic_is_exit_code_one_with_message() {
    for m in METHODS {
        let h = builder(m)
            .spawn(41, |x: u32| -> u32 { panic!("the answer is not {x}") })
            .unwrap();
        assert_eq!(h.join_timeout(Duration::from_secs(30)).unwrap(), 1, "{m}");
        match h.join() {
            Err(JoinError::Panicked(msg)) => assert_eq!(msg, "the answer is not 41", "{m}"),
            other => panic!("{m}: {other:?}"),
        }
    }
}

// An explicit process exit inside the function is an exit code without a result.
#[test]
fn exit_without_result() {
    for m in METHODS {
        let h = builder(m)
            .spawn(7, |code: i32| -> u8 { std::process::exit(code) })
            .unwrap();
        assert!(matches!(h.join(), Err(JoinError::Exited(7))), "{m}");
    }
}

// cpython checklist 26: non-fork children do not inherit unrelated descriptors; fork children do.
#[test]
fn unrelated_descriptors_are_not_inherited() {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    let fd = file.as_raw_fd();
    fn has_fd(fd: i32) -> bool {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .is_ok_and(|p| p.ends_with("exe") || p.exists())
    }
    for m in METHODS {
        let inherited = builder(m).spawn(fd, has_fd).unwrap().join().unwrap();
        assert_eq!(inherited, m == StartMethod::Fork, "{m}");
    }
}

// Without the opt-in, fork in a multithreaded process is refused with a clear error (known bug 6:
// CPython forks multithreaded parents and the child may deadlock on another thread's lock).
#[test]
fn fork_with_threads_is_refused() {
    let err = process::Builder::new()
        .start_method(StartMethod::Fork)
        .spawn(1u8, |x| x)
        .unwrap_err();
    assert!(err.to_string().contains("threads"), "{err}");
    let err = process::Builder::new()
        .start_method(StartMethod::Spawn)
        .fork(|| 1u8)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot use the spawn start method"),
        "{err}"
    );
}

// cpython checklist 22: killing the forkserver does not break running children, and the next
// start works with a new server. Run inside a spawned child, which has a forkserver of its own,
// so that killing it cannot disturb the other tests' children.
#[test]
fn forkserver_death_spares_children() {
    fn scenario((): ()) -> (u64, u8, bool) {
        let h = builder(StartMethod::ForkServer)
            .spawn(500, sleep_ms)
            .unwrap();
        let server = process::forkserver_pid().expect("a forkserver is running");
        common::kill_pid(server);
        assert!(common::wait_gone(server, Duration::from_secs(30)));
        let slept = h.join().unwrap();
        let h2 = builder(StartMethod::ForkServer)
            .spawn(3u8, |x| x + 1)
            .unwrap();
        let next = h2.join().unwrap();
        (slept, next, process::forkserver_pid() != Some(server))
    }
    let got = builder(StartMethod::Spawn)
        .spawn((), scenario)
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(got, (500, 4, true));
}

/// Pins itself to its first allowed CPU and reports both counts.
fn counts_when_pinned((): ()) -> (usize, usize) {
    let mut one = rustix::thread::CpuSet::new();
    let first = (0..rustix::thread::CpuSet::MAX_CPU)
        .find(|&c| rustix::thread::sched_getaffinity(None).is_ok_and(|s| s.is_set(c)))
        .expect("some CPU is allowed");
    one.set(first);
    rustix::thread::sched_setaffinity(None, &one).unwrap();
    (process::cpu_count(), process::process_cpu_count())
}

// cpu_count is the system's (Python's os.cpu_count), process_cpu_count the affinity mask's
// (Python 3.13's os.process_cpu_count): a child pinned to one CPU sees 1 of all.
#[test]
fn cpu_counts_system_and_process() {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let system: usize = online
        .trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum();
    assert_eq!(process::cpu_count(), system);
    let h = builder(StartMethod::Spawn)
        .spawn((), counts_when_pinned)
        .unwrap();
    assert_eq!(h.join().unwrap(), (system, 1));
}

// Handles are Send and Sync like std's.
#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<process::JoinHandle<Vec<u8>>>();
    check::<process::Builder>();
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_interrupt(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Handles SIGINT, says so, then waits (at most a minute) for the interrupt.
fn handle_interrupt(ready: Connection) -> bool {
    // SAFETY: an all-zero `sigaction` is valid (empty mask, no flags); the handler is an
    // `extern "C" fn(c_int)` doing only an atomic store.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = note_interrupt as *const () as libc::sighandler_t;
    // SAFETY: `action` is initialised and outlives the call; a null old-action is allowed.
    let rc = unsafe { libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut()) };
    assert_eq!(rc, 0);
    ready.send(&"ready").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

// cpython checklist 6: interrupt() delivers SIGINT. A child with the default disposition ends
// with -SIGINT; a child that handles it (Python's KeyboardInterrupt, here a handler) sees it and
// finishes normally.
#[test]
fn interrupt_is_sigint() {
    for m in METHODS {
        let h = builder(m).spawn((), sleep_forever).unwrap();
        let _reap = Reap(&h);
        h.interrupt().unwrap();
        assert_eq!(h.join_timeout(Duration::from_secs(30)).unwrap(), -2, "{m}");
        drop(_reap);
        assert!(matches!(h.join(), Err(JoinError::Signaled(2))), "{m}");

        let (a, b) = ipc_core::conn::pipe().unwrap();
        let h = builder(m).spawn(b, handle_interrupt).unwrap();
        let _reap = Reap(&h);
        assert_eq!(a.recv::<String>().unwrap(), "ready", "{m}");
        h.interrupt().unwrap();
        assert_eq!(h.join_timeout(Duration::from_secs(30)).unwrap(), 0, "{m}");
        drop(_reap);
        assert!(h.join().unwrap(), "{m}: the handler saw the interrupt");
    }
}

fn exists_unreaped(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn wait_then_report(conn: Connection) -> u8 {
    let go: u8 = conn.recv().unwrap();
    conn.send(&"still running").unwrap();
    go
}

// cpython checklist 10: Python's close() releases a Process object and refuses a running one;
// afterwards every method refuses. In Rust the handle is released by dropping it and the type
// system rules out any use after that. Dropping the handle of a running child detaches it (as
// std::thread does): it keeps running, and once it exits it is still reaped (by
// active_children, the next start, or exit), so the released handle leaves no zombie.
#[test]
fn a_dropped_handle_detaches_and_the_child_is_still_reaped() {
    for m in METHODS {
        let (a, b) = ipc_core::conn::pipe().unwrap();
        let h = builder(m).spawn(b, wait_then_report).unwrap();
        let pid = h.pid();
        drop(h);
        a.send(&1u8).unwrap();
        assert_eq!(a.recv::<String>().unwrap(), "still running", "{m}");
        assert!(common::wait_gone(pid, Duration::from_secs(30)), "{m}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while exists_unreaped(pid) && Instant::now() < deadline {
            assert!(
                !active_children().iter().any(|c| c.pid == pid),
                "{m}: an exited child is not active"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!exists_unreaped(pid), "{m}: child {pid} was never reaped");
    }
}

fn with_threads((): ()) -> u32 {
    // A thread the function joins (here: scoped) finishes before the child exits ...
    let joined = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            7
        })
        .join()
        .unwrap()
    });
    // ... and a detached one does not keep the child alive (Python's daemon thread).
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    });
    joined
}

// cpython checklist 16: Python waits for a child's non-daemon threads but not for daemon ones.
// Rust has no daemon flag; as when `main` returns, the child ends once its function returns:
// threads it joined are done, detached threads do not hold it up.
#[test]
fn child_exits_when_its_function_returns_whatever_threads_run() {
    for m in METHODS {
        let h = builder(m).spawn((), with_threads).unwrap();
        let _reap = Reap(&h);
        assert_eq!(
            h.join_timeout(Duration::from_secs(30)).unwrap(),
            0,
            "{m}: a detached thread kept the child alive"
        );
        drop(_reap);
        assert_eq!(h.join().unwrap(), 7, "{m}");
    }
}

/// Python's `Process` subclass overriding `run()`, with pipe ends given to its constructor.
#[derive(serde::Serialize, serde::Deserialize)]
struct Doubler {
    input: Connection,
    output: Connection,
}

impl Doubler {
    fn new(input: Connection, output: Connection) -> Doubler {
        Doubler { input, output }
    }

    fn run(self) -> u32 {
        let mut handled = 0;
        loop {
            let n: u64 = self.input.recv().unwrap();
            if n == 0 {
                return handled;
            }
            self.output.send(&(n * 2)).unwrap();
            handled += 1;
        }
    }
}

// cpython checklist 20: a type with its own `run`, holding pipe ends given to its constructor,
// runs in the child (the method is the function, the value its argument).
#[test]
fn a_type_with_a_run_method_holding_pipe_ends() {
    for m in METHODS {
        // pipe_oneway() is (reader, writer), as Python's Pipe(duplex=False).
        let (input, to_child) = ipc_core::conn::pipe_oneway().unwrap();
        let (from_child, output) = ipc_core::conn::pipe_oneway().unwrap();
        let h = builder(m)
            .spawn(Doubler::new(input, output), Doubler::run)
            .unwrap();
        let _reap = Reap(&h);
        for n in 1..=5u64 {
            to_child.send(&n).unwrap();
            assert_eq!(from_child.recv::<u64>().unwrap(), n * 2, "{m}");
        }
        to_child.send(&0u64).unwrap();
        drop(_reap);
        assert_eq!(h.join().unwrap(), 5, "{m}");
    }
}

/// The socket inodes among a process's descriptors.
fn socket_inodes(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

// cpython checklist 23 (and known bug 11, CVE-2022-42919): Python 3.14 authenticates the
// forkserver's control socket because it has an address others can connect to. Ours has none:
// every socket the server holds is an unnamed, non-listening Unix socket (a socketpair end), so
// there is nothing to authenticate against. Starting a child still works afterwards.
#[test]
fn the_forkserver_has_no_address_to_connect_to() {
    builder(StartMethod::ForkServer)
        .spawn((), |()| ())
        .unwrap()
        .join()
        .unwrap();
    let server = process::forkserver_pid().expect("a forkserver is running");
    let inodes = socket_inodes(server);
    assert!(!inodes.is_empty(), "the server holds its control channel");
    let unix = std::fs::read_to_string("/proc/net/unix").unwrap();
    for inode in inodes {
        // Num RefCount Protocol Flags Type St Inode [Path]
        let line = unix
            .lines()
            .skip(1)
            .find(|l| l.split_whitespace().nth(6) == Some(&inode.to_string()))
            .unwrap_or_else(|| panic!("socket {inode} of the forkserver is not a Unix socket"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 7, "socket {inode} has an address: {line}");
        let flags = u32::from_str_radix(cols[3], 16).unwrap();
        assert_eq!(flags & 0x1_0000, 0, "socket {inode} listens: {line}");
    }
    let h = builder(StartMethod::ForkServer)
        .spawn(2u8, |x| x * 3)
        .unwrap();
    assert_eq!(h.join().unwrap(), 6);
}

fn my_name_len((): ()) -> usize {
    process::current_process().name.len()
}

// A name far larger than a socket buffer travels like any argument (the forkserver sends small
// boot messages ahead of the fork, and must not block on a large one before the child exists).
#[test]
fn a_one_mebibyte_name_travels() {
    for m in METHODS {
        let h = builder(m)
            .name("x".repeat(1 << 20))
            .spawn((), my_name_len)
            .unwrap();
        let _kill = common::KillOnPanic(vec![h.pid()]);
        assert_eq!(h.join().unwrap(), 1 << 20, "{m}");
    }
}

/// Starts a forkserver daemon and a forkserver child, forks by hand (as `libc::fork` or nix
/// would, outside ipc-core) a child that leaves through `std::process::exit` (so our exit
/// handler runs in it), then reports whether the daemon survived and starts one more child.
#[allow(unsafe_code)]
fn parent_with_a_foreign_fork((): ()) -> (bool, u32) {
    let d = builder(StartMethod::ForkServer)
        .daemon(true)
        .spawn(60_000, sleep_ms)
        .unwrap();
    let first = builder(StartMethod::ForkServer)
        .spawn(1u32, |x| x + 1)
        .unwrap();
    assert_eq!(first.join().unwrap(), 2);
    // SAFETY: this spawned process is single-threaded (its function runs before `main`, and
    // starting children makes no thread), so the child's copy of every lock is free.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // The foreign child starts a child of its own through the forkserver (its own: ours is
        // not its to use), then leaves through its exit handler.
        let own = builder(StartMethod::ForkServer)
            .spawn(5u32, |x| x + 1)
            .ok()
            .and_then(|h| h.join().ok());
        std::process::exit(if own == Some(6) { 0 } else { 7 });
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked, writing its status into a live local.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert_eq!(
        status, 0,
        "the foreign child's exit (7: its own start failed)"
    );
    let alive = d.is_alive();
    let next = builder(StartMethod::ForkServer)
        .spawn(41u32, |x| x + 1)
        .unwrap()
        .join()
        .unwrap();
    d.kill().unwrap();
    d.join_timeout(Duration::from_secs(30)).unwrap();
    (alive, next)
}

// A process forked outside ipc-core inherits our records and our exit handler. It must leave
// our children and our forkserver alone, at its exit and when it starts children of its own:
// it is not their parent (once it read our pid from a stale cache and terminated our daemons,
// or took the hello of our forkserver's prepared child, after which our next start waited
// forever).
#[test]
fn a_foreign_fork_leaves_our_children_and_forkserver_alone() {
    let h = builder(StartMethod::Spawn)
        .spawn((), parent_with_a_foreign_fork)
        .unwrap();
    let _reap = Reap(&h);
    let done = h.join_timeout(Duration::from_secs(60));
    assert!(
        done.is_ok(),
        "the parent hung after its foreign child exited: {done:?}"
    );
    drop(_reap);
    assert_eq!(h.join().unwrap(), (true, 42));
}

/// Starts a forkserver child, forks by hand a child that holds copies of everything (the
/// forkserver's control channel, the prepared child's connection) for a minute, reports its
/// pid and returns: this process then exits, and its exit handler stops the forkserver.
#[allow(unsafe_code)]
fn parent_outlived_by_a_foreign_fork(conn: Connection) {
    let h = builder(StartMethod::ForkServer)
        .spawn(1u32, |x| x + 1)
        .unwrap();
    assert_eq!(h.join().unwrap(), 2);
    // SAFETY: single-threaded, as in `parent_with_a_foreign_fork`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        std::thread::sleep(Duration::from_secs(60));
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(0) };
    }
    conn.send(&(pid as u32, process::forkserver_pid().unwrap()))
        .unwrap();
}

// Stopping the forkserver at exit waits for no descriptor to close: a foreign child holding
// copies of them must not hold our exit up.
#[test]
fn exit_is_not_held_up_by_a_foreign_fork() {
    let (ours, theirs) = ipc_core::conn::pipe().unwrap();
    let h = builder(StartMethod::Spawn)
        .spawn(theirs, parent_outlived_by_a_foreign_fork)
        .unwrap();
    let _reap = Reap(&h);
    let (foreign, server): (u32, u32) = ours.recv().unwrap();
    let _kill = common::KillOnPanic(vec![foreign, server]);
    let code = h.join_timeout(Duration::from_secs(20)).ok();
    common::kill_pid(foreign);
    // Both gone before the test ends (the server leaves once the foreign copy of its control
    // channel closes), so neither holds the harness's output pipes.
    assert!(common::wait_gone(foreign, common::LONG));
    assert!(common::wait_gone(server, common::LONG));
    assert_eq!(
        code,
        Some(0),
        "the parent's exit waited for its foreign child"
    );
}

// Review finding 6: one thread in join_timeout held the child's state for the whole wait, so
// kill, terminate, exitcode, is_alive and Debug from another thread waited as long. Each now
// answers at once, and the joining thread sees the signal.
#[test]
fn a_join_in_one_thread_never_blocks_another_threads_kill() {
    for m in METHODS {
        let h = Arc::new(builder(m).spawn(120_000, sleep_ms).unwrap());
        let _reap = Reap(&*h);
        let (tx, rx) = std::sync::mpsc::channel();
        let joiner = {
            let h = h.clone();
            std::thread::spawn(move || {
                tx.send(common::current_tid()).unwrap();
                h.join_timeout(Duration::from_secs(60))
            })
        };
        let tid = rx.recv().unwrap();
        // The joiner is inside its wait (blocked in poll) before we act.
        assert!(
            common::eventually(|| {
                common::blocked_in(process::pid(), tid)
                    .is_some_and(|n| common::SYS_POLL.contains(&n))
            }),
            "{m}: the joining thread never started waiting"
        );
        let quick = |what: &str, t: Instant| {
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "{m}: {what} waited {:?} behind the join",
                t.elapsed()
            );
        };
        let t = Instant::now();
        assert_eq!(h.exitcode(), None);
        quick("exitcode", t);
        let t = Instant::now();
        assert!(h.is_alive());
        quick("is_alive", t);
        let t = Instant::now();
        assert_eq!(h.try_wait().unwrap(), None);
        quick("try_wait", t);
        let t = Instant::now();
        assert!(format!("{h:?}").contains("exitcode: None"));
        quick("Debug", t);
        let t = Instant::now();
        h.kill().unwrap();
        quick("kill", t);
        assert_eq!(joiner.join().unwrap().unwrap(), -9, "{m}");
        assert_eq!(h.exitcode(), Some(-9));
    }
}

fn what_a_spawned_child_sees((): ()) -> (Vec<String>, Option<String>) {
    (
        std::env::args().collect(),
        std::thread::current().name().map(str::to_owned),
    )
}

fn panics_with(msg: String) {
    panic!("{msg}");
}

// Review finding 7: a spawned child runs its function from an .init_array constructor, before
// std's `main` machinery. What std sets up earlier than that works there: the arguments are the
// parent's, and a panic is caught and reported with its message. (The main thread has no name
// there, and std's stack-overflow handler is not installed: documented in the process module.)
#[test]
fn a_spawned_child_has_its_arguments_and_reports_panics() {
    let h = builder(StartMethod::Spawn)
        .spawn((), what_a_spawned_child_sees)
        .unwrap();
    let (args, thread_name) = h.join().unwrap();
    assert_eq!(args, std::env::args().collect::<Vec<_>>());
    assert_eq!(
        thread_name, None,
        "std names the main thread only in its `main` machinery"
    );
    let h = builder(StartMethod::Spawn)
        .spawn("lost in init_array".to_string(), panics_with)
        .unwrap();
    match h.join() {
        Err(JoinError::Panicked(m)) => assert_eq!(m, "lost in init_array"),
        other => panic!("expected the panic message, got {other:?}"),
    }
}
