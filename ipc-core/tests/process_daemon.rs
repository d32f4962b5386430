//! Daemon semantics (the seed's experiment, and CPython checklist item 7): at a normal exit a
//! process terminates its daemon children and joins the others; when it is killed, its daemon
//! children die too. Every start method, for the parent and for the children.

mod common;

use std::time::Duration;

use common::{METHODS, Reap, builder, wait_gone};
use ipc_core::conn::{Connection, pipe};
use ipc_core::process::{JoinError, JoinHandle, StartMethod};

fn sleep_forever((): ()) {
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Reports only once its parent has begun to exit (it says so on `exiting`): still running
/// then, it must be joined by the parent's exit handler, not abandoned.
fn late_reporter((report, exiting): (Connection, Connection)) {
    let _ = exiting.recv::<()>();
    report.send(&"non-daemon finished").unwrap();
}

/// Starts a daemon and a non-daemon child with `method`, reports their pids, then leaves through
/// `std::process::exit`, so the exit handler (atexit) does the cleanup, as after `main` returns.
fn parent_that_exits((conn, method): (Connection, StartMethod)) {
    let d = builder(method)
        .daemon(true)
        .spawn((), sleep_forever)
        .unwrap();
    let (a, b) = pipe().unwrap();
    let (exiting, told) = pipe().unwrap();
    let n = builder(method).spawn((b, told), late_reporter).unwrap();
    conn.send(&(d.pid(), n.pid())).unwrap();
    conn.send(&a).unwrap();
    exiting.send(&()).unwrap();
    std::process::exit(0)
}

// At normal exit: daemons terminated, non-daemons joined (they finish their work first).
#[test]
fn normal_exit_terminates_daemons_and_joins_others() {
    for parent_method in METHODS {
        for child_method in METHODS {
            let (ours, theirs) = pipe().unwrap();
            let p = builder(parent_method)
                .spawn((theirs, child_method), parent_that_exits)
                .unwrap();
            let _reap = Reap(&p);
            let (daemon, non_daemon): (u32, u32) = ours.recv().unwrap();
            let report: Connection = ours.recv().unwrap();
            let code = p.join_timeout(Duration::from_secs(60)).unwrap();
            assert_eq!(code, 0, "{parent_method}/{child_method}");
            // The non-daemon's report was sent before its parent finished exiting.
            assert!(
                report.poll(Some(Duration::ZERO)).unwrap(),
                "{parent_method}/{child_method}"
            );
            assert_eq!(report.recv::<String>().unwrap(), "non-daemon finished");
            assert!(
                wait_gone(daemon, Duration::from_secs(10)),
                "{parent_method}/{child_method}: daemon"
            );
            assert!(wait_gone(non_daemon, Duration::from_secs(10)));
            drop(_reap);
            assert!(matches!(p.join(), Err(JoinError::Exited(0))));
        }
    }
}

fn parent_that_waits((conn, method): (Connection, StartMethod)) {
    let d = builder(method)
        .daemon(true)
        .spawn((), sleep_forever)
        .unwrap();
    let n = builder(method).spawn((), sleep_forever).unwrap();
    conn.send(&(d.pid(), n.pid())).unwrap();
    sleep_forever(())
}

// When the parent is killed, its daemon children die with it (their lifeline); the
// non-daemon children live on, as in Python.
#[test]
fn killed_parent_takes_its_daemons_along() {
    for parent_method in METHODS {
        for child_method in METHODS {
            let (ours, theirs) = pipe().unwrap();
            let p = builder(parent_method)
                .spawn((theirs, child_method), parent_that_waits)
                .unwrap();
            let _reap = Reap(&p);
            let (daemon, non_daemon): (u32, u32) = ours.recv().unwrap();
            p.kill().unwrap();
            assert_eq!(p.join_timeout(Duration::from_secs(30)).unwrap(), -9);
            let daemon_gone = wait_gone(daemon, Duration::from_secs(30));
            let non_daemon_alive = !wait_gone(non_daemon, Duration::from_millis(200));
            common::kill_pid(daemon);
            common::kill_pid(non_daemon);
            assert!(
                daemon_gone,
                "{parent_method}/{child_method}: the daemon outlived its parent"
            );
            assert!(
                non_daemon_alive,
                "{parent_method}/{child_method}: the non-daemon died too"
            );
            assert!(wait_gone(non_daemon, Duration::from_secs(30)));
        }
    }
}

/// Starts the forkserver, a forkserver daemon and a spawn daemon from a short-lived thread,
/// which then exits, and a third daemon from the main thread; reports whether all were alive
/// after the thread had gone, and their pids; then waits to be killed.
fn parent_whose_starting_thread_exits(conn: Connection) {
    let [first, second] = std::thread::spawn(|| {
        [StartMethod::ForkServer, StartMethod::Spawn]
            .map(|m| builder(m).daemon(true).spawn((), sleep_forever).unwrap())
    })
    .join()
    .unwrap();
    let third = builder(StartMethod::ForkServer)
        .daemon(true)
        .spawn((), sleep_forever)
        .unwrap();
    // The thread is gone (joined). A daemon tied to it by a parent-death signal was sent
    // SIGKILL as it went; give a kill in flight time to land before looking.
    std::thread::sleep(Duration::from_millis(300));
    let alive = first.is_alive() && second.is_alive() && third.is_alive();
    conn.send(&(alive, [first.pid(), second.pid(), third.pid()]))
        .unwrap();
    sleep_forever(())
}

// A daemon belongs to its parent process, not to the thread that started it (or, under
// forkserver, the thread that started the server, whose sibling it is): that thread's exit
// kills nobody, the parent's death kills all (found in review: a parent-death signal follows
// the thread, so spawn's daemons died with a short-lived starting thread).
#[test]
fn daemons_outlive_the_thread_that_started_them() {
    let (ours, theirs) = pipe().unwrap();
    let p = builder(StartMethod::Spawn)
        .spawn(theirs, parent_whose_starting_thread_exits)
        .unwrap();
    let _reap = Reap(&p);
    let (alive, daemons): (bool, [u32; 3]) = ours.recv().unwrap();
    p.kill().unwrap();
    assert_eq!(p.join_timeout(Duration::from_secs(30)).unwrap(), -9);
    let gone = daemons.map(|d| wait_gone(d, Duration::from_secs(30)));
    daemons.into_iter().for_each(common::kill_pid);
    assert!(alive, "a daemon died with the thread that started it");
    assert_eq!(gone, [true; 3], "daemons outlived their killed parent");
}

/// Starts a sleeping daemon through the forkserver, then kills the server and waits until it
/// is gone; returns the daemon.
fn daemon_of_a_killed_server() -> JoinHandle<()> {
    let d = builder(StartMethod::ForkServer)
        .daemon(true)
        .spawn((), sleep_forever)
        .unwrap();
    let server = ipc_core::process::forkserver_pid().unwrap();
    common::kill_pid(server);
    assert!(wait_gone(server, Duration::from_secs(30)));
    d
}

/// Runs `parent` in a spawned process; it reports the pid of a daemon of its own, then waits.
/// Kills the parent and checks that the daemon dies too.
fn assert_daemon_dies_with(parent: fn(Connection)) {
    let (ours, theirs) = pipe().unwrap();
    let p = builder(StartMethod::Spawn).spawn(theirs, parent).unwrap();
    let _reap = Reap(&p);
    let daemon: u32 = ours.recv().unwrap();
    p.kill().unwrap();
    assert_eq!(p.join_timeout(Duration::from_secs(30)).unwrap(), -9);
    let gone = wait_gone(daemon, Duration::from_secs(30));
    common::kill_pid(daemon);
    assert!(gone, "the daemon outlived its killed parent");
}

/// Starts a daemon through the forkserver, kills the server, starts another child (which
/// replaces the server), reports the daemon's pid and waits to be killed. All of it on a
/// thread other than the main one.
fn parent_that_loses_its_server(conn: Connection) {
    std::thread::spawn(move || {
        let d = daemon_of_a_killed_server();
        let server = ipc_core::process::forkserver_pid();
        // The next start finds the server dead and replaces it.
        let n = builder(StartMethod::ForkServer)
            .spawn(21, |x: u32| x * 2)
            .unwrap();
        assert_eq!(n.join().unwrap(), 42);
        assert_ne!(ipc_core::process::forkserver_pid(), server);
        conn.send(&d.pid()).unwrap();
        sleep_forever(())
    })
    .join()
    .unwrap();
}

// A daemon whose forkserver was killed and replaced still dies with its parent.
#[test]
fn a_daemon_of_a_replaced_forkserver_dies_with_its_parent() {
    assert_daemon_dies_with(parent_that_loses_its_server);
}

/// Starts a daemon through the forkserver (from the main thread), kills the server, reports the
/// daemon's pid and waits to be killed, starting nothing more.
fn parent_whose_server_dies_idle(conn: Connection) {
    let d = daemon_of_a_killed_server();
    conn.send(&d.pid()).unwrap();
    sleep_forever(())
}

/// The same from a thread other than the main one, which then exits.
fn parent_whose_server_dies_idle_off_the_main_thread(conn: Connection) {
    let d = std::thread::spawn(daemon_of_a_killed_server)
        .join()
        .unwrap();
    conn.send(&d.pid()).unwrap();
    sleep_forever(())
}

// A server killed while idle is only replaced at the next start, which may never come; its
// daemons die with their parent all the same, whichever thread started them (found in review:
// started off the main thread, they were unwatched until the next start).
#[test]
fn daemons_of_a_dead_idle_forkserver_still_die_with_their_parent() {
    assert_daemon_dies_with(parent_whose_server_dies_idle);
    assert_daemon_dies_with(parent_whose_server_dies_idle_off_the_main_thread);
}
