//! Per-call deadlines (`with_timeout` on every proxy) and the `Set` proxy, under every start
//! method: a call that blocks on the server gives up there; a server that does not answer
//! (stopped with SIGSTOP) makes a call with a deadline `Error::Timeout` in bounded time, and
//! the proxy works again once the server does.

use std::time::{Duration, Instant};

use ipc_core::process::{Builder, StartMethod};
use ipc_manager::{Dict, Error, Manager, Queue};
use rustix::process::{Pid, Signal, kill_process};

mod common;
use common::{LONG, under_each};

const DEADLINE: Duration = Duration::from_millis(300);

/// Generous: the deadline, the client's grace, and a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(5);

/// Stops a process until dropped (also when the test fails).
struct Stopped(u32);

impl Stopped {
    /// Sends SIGSTOP and waits until every thread of `pid` is stopped (the signal lands
    /// asynchronously: a thread already running could answer one more call).
    fn new(pid: u32) -> Stopped {
        kill_process(Pid::from_raw(pid as i32).unwrap(), Signal::STOP).unwrap();
        let stopped = Stopped(pid);
        let all_stopped = || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .all(|task| {
                    let stat = std::fs::read_to_string(task.unwrap().path().join("stat"))
                        .unwrap_or_default();
                    // The state follows the parenthesized command name.
                    stat.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('T'))
                })
        };
        assert!(common::eventually(all_stopped), "the server did not stop");
        stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill_process(Pid::from_raw(self.0 as i32).unwrap(), Signal::CONT);
    }
}

/// How long `f` took, and what it returned.
fn timed<R>(f: impl FnOnce() -> R) -> (Duration, R) {
    let start = Instant::now();
    let r = f();
    (start.elapsed(), r)
}

fn blocking_call_gives_up_on_the_server(m: &Manager) {
    let q = m.queue::<u8>(0).unwrap();
    let qt = q.with_timeout(DEADLINE);
    assert_eq!(qt.timeout(), Some(DEADLINE));
    assert_eq!(q.timeout(), None, "the original keeps no deadline");
    let (took, r) = timed(|| qt.get());
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(took >= DEADLINE && took < BOUND, "{took:?}");
    // The server answered: the proxy, and its connection, work on.
    q.put(1).unwrap();
    assert_eq!(qt.get().unwrap(), 1);
    // A timeout of its own, shorter than the deadline, still counts.
    let (took, r) = timed(|| qt.get_timeout(Duration::from_millis(50)));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(took < DEADLINE, "{took:?}");
}

fn silent_server_times_out(m: &Manager) {
    let d = m.dict::<u32, u32>().unwrap();
    d.insert(1, 1).unwrap();
    let dt = d.with_timeout(DEADLINE);
    {
        let _stopped = Stopped::new(m.server_pid());
        for _ in 0..2 {
            let (took, r) = timed(|| dt.get(&1));
            assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
            assert!(took >= DEADLINE && took < BOUND, "{took:?}");
        }
    }
    assert_eq!(dt.get(&1).unwrap(), Some(1), "the server answers again");
    assert_eq!(d.insert(2, 2).unwrap(), None);
}

// A proxy received by a child: its client has no key, so over TCP it has one connection only;
// a late answer on it is skipped before the next call's.
fn child_with_a_deadline((d, server): (Dict<u32, u32>, u32)) -> bool {
    let dt = d.with_timeout(DEADLINE);
    let timed_out = {
        let _stopped = Stopped::new(server);
        matches!(dt.get(&1), Err(Error::Timeout))
    };
    timed_out && dt.get(&1).unwrap() == Some(1) && d.get(&1).unwrap() == Some(1)
}

fn deadlines(method: StartMethod) {
    for address in [None, Some("127.0.0.1:0")] {
        let mut b = Manager::builder().start_method(method);
        if let Some(a) = address {
            b = b.address(a.parse().unwrap());
        }
        let m = b.start().unwrap();
        blocking_call_gives_up_on_the_server(&m);
        silent_server_times_out(&m);
        let d = m.dict::<u32, u32>().unwrap();
        d.insert(1, 1).unwrap();
        let child = Builder::new()
            .start_method(method)
            .spawn((d.clone(), m.server_pid()), child_with_a_deadline)
            .unwrap();
        let reap = common::Reap(&child);
        child.join_timeout(LONG).unwrap();
        drop(reap);
        assert!(
            child.join().unwrap(),
            "under {method}, at {:?}",
            m.address()
        );
        m.shutdown().unwrap();
    }
}

#[test]
fn calls_with_a_deadline_end_by_it_under_every_start_method() {
    under_each(deadlines);
}

// The Set proxy, from a child too.
fn add_members((s, from): (ipc_manager::Set<String>, u32)) {
    for i in 0..100 {
        s.insert(&format!("m{}", i % 50 + from)).unwrap();
    }
}

fn sets(method: StartMethod) {
    let m = Manager::builder().start_method(method).start().unwrap();
    let s = m.set::<String>().unwrap();
    assert!(s.is_empty().unwrap());
    assert!(s.insert(&"a".into()).unwrap());
    assert!(!s.insert(&"a".into()).unwrap());
    assert!(s.contains("a").unwrap());
    assert!(!s.contains("b").unwrap());
    assert!(s.remove("a").unwrap());
    assert!(!s.remove("a").unwrap());
    let children: Vec<_> = [0, 25]
        .into_iter()
        .map(|from| {
            Builder::new()
                .start_method(method)
                .spawn((s.clone(), from), add_members)
                .unwrap()
        })
        .collect();
    for c in &children {
        c.join_timeout(LONG).unwrap();
    }
    // m0..m49 and m25..m74: 75 distinct members.
    let members = s.to_set().unwrap();
    assert_eq!(members.len(), 75);
    assert!((0..75).all(|i| members.contains(&format!("m{i}"))));
    s.extend(["x".to_string(), "m0".to_string()]).unwrap();
    assert_eq!(s.len().unwrap(), 76);
    // A set is not a dict: a dict's operations are refused by name.
    let as_dict: Result<Dict<String, ()>, _> = {
        m.publish("s", &s).unwrap();
        m.lookup("s")
    };
    assert!(
        matches!(as_dict, Err(Error::WrongKind { .. })),
        "{as_dict:?}"
    );
    s.clear().unwrap();
    assert_eq!(s.len().unwrap(), 0);
    m.shutdown().unwrap();
}

#[test]
fn a_set_proxy_under_every_start_method() {
    under_each(sets);
}

#[test]
fn a_queue_proxy_in_a_child_keeps_no_deadline_of_the_parents() {
    let m = Manager::start().unwrap();
    let q = m.queue::<u8>(0).unwrap().with_timeout(DEADLINE);
    let child = Builder::new()
        .start_method(StartMethod::Spawn)
        .spawn(q.clone(), |q: Queue<u8>| q.timeout().is_none())
        .unwrap();
    child.join_timeout(LONG).unwrap();
    assert!(child.join().unwrap());
}
