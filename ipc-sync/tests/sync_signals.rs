//! Signals during blocking waits. CPython checklist item 81: SIGINT delivered while a process
//! waits in `Condition.wait` raises `KeyboardInterrupt` there, that is, the wait is no
//! uninterruptible sleep. Rust has no `KeyboardInterrupt`: a waiter with SIGINT's default action
//! ends (exit code -2) and the condition keeps working for the others; a waiter whose signals are
//! handled (here SIGUSR1, without `SA_RESTART`, so the futex wait fails with `EINTR`) neither
//! fails nor wakes early nor misses its notify. The same holds for every blocking primitive.
//! The signals target one thread (`pthread_kill`) so the other tests of the binary are not
//! disturbed.

mod common;

use std::time::{Duration, Instant};

use common::{LONG, METHODS, Reap, builder, eventually, install_handler, pester};
use ipc_sync::{Barrier, Condition, Event, Lock, Queue, Semaphore};

const PESTER: Duration = Duration::from_millis(150);

fn wait_forever(cond: Condition) {
    let mut g = cond.acquire().unwrap();
    loop {
        g = g.wait().unwrap();
    }
}

fn wait_once(cond: Condition) -> bool {
    let g = cond.acquire().unwrap();
    let (_g, notified) = g.wait_timeout(LONG).unwrap();
    notified
}

// cpython checklist 81: SIGINT reaches a process blocked in Condition::wait and ends it with
// -SIGINT; a notify afterwards still reaches a live waiter.
#[test]
fn sigint_ends_a_process_waiting_on_a_condition() {
    for m in METHODS {
        let cond = Condition::new().unwrap();
        let h = builder(m).spawn(cond.clone(), wait_forever).unwrap();
        let _reap = Reap(&h);
        assert!(
            eventually(|| cond.acquire().unwrap().waiting() == 1),
            "{m}: the child waits"
        );
        h.interrupt().unwrap();
        assert_eq!(h.join_timeout(LONG).unwrap(), -2, "{m}");

        let live = builder(m).spawn(cond.clone(), wait_once).unwrap();
        let _reap_live = Reap(&live);
        // The dead waiter is no longer counted (see condition.rs, "Robustness").
        assert!(
            eventually(|| cond.acquire().unwrap().waiting() == 1),
            "{m}: the second child waits"
        );
        cond.acquire().unwrap().notify_all();
        assert_eq!(live.join_timeout(LONG).unwrap(), 0, "{m}");
        drop(_reap_live);
        assert!(live.join().unwrap(), "{m}: the live waiter was notified");
    }
}

// cpython checklist 81, the handled side: an interrupted Condition wait resumes, keeps its
// timeout, and still receives the notify that comes after the signals.
#[test]
fn condition_waits_survive_handled_signals() {
    install_handler();
    let cond = Condition::new().unwrap();
    let c = cond.clone();
    let t = Duration::from_millis(300);
    let timed = std::thread::spawn(move || {
        let start = Instant::now();
        let (_g, notified) = c.acquire().unwrap().wait_timeout(t).unwrap();
        (notified, start.elapsed())
    });
    assert!(pester(&timed, PESTER) > 0, "no signal was delivered");
    let (notified, elapsed) = timed.join().unwrap();
    assert!(!notified);
    assert!(elapsed >= t, "the wait returned after {elapsed:?}");

    let c = cond.clone();
    let waiter = std::thread::spawn(move || wait_once(c));
    assert!(eventually(|| cond.acquire().unwrap().waiting() == 1));
    assert!(pester(&waiter, PESTER) > 0, "no signal was delivered");
    assert_eq!(
        cond.acquire().unwrap().waiting(),
        1,
        "the signals did not end the wait"
    );
    assert_eq!(cond.acquire().unwrap().notify(1), 1);
    assert!(waiter.join().unwrap(), "notified after the signals");
}

#[test]
fn lock_semaphore_event_barrier_and_queue_waits_survive_handled_signals() {
    // cpython checklist 81, for every other blocking call.
    install_handler();

    let lock = Lock::new().unwrap();
    let held = lock.acquire().unwrap();
    let l = lock.clone();
    let t = std::thread::spawn(move || l.acquire().map(drop).is_ok());
    assert!(pester(&t, PESTER) > 0);
    assert!(!t.is_finished(), "lock: the signals ended the wait");
    drop(held);
    assert!(t.join().unwrap(), "lock");

    let sem = Semaphore::new(0).unwrap();
    let s = sem.clone();
    let t = std::thread::spawn(move || s.acquire().forget());
    assert!(pester(&t, PESTER) > 0);
    assert!(!t.is_finished(), "semaphore: the signals ended the wait");
    sem.release().unwrap();
    t.join().unwrap();
    assert_eq!(sem.value(), 0);

    let ev = Event::new().unwrap();
    let e = ev.clone();
    let t = std::thread::spawn(move || e.wait());
    assert!(pester(&t, PESTER) > 0);
    assert!(!t.is_finished(), "event: the signals ended the wait");
    ev.set();
    t.join().unwrap();

    let barrier = Barrier::new(2).unwrap();
    let b = barrier.clone();
    let t = std::thread::spawn(move || b.wait());
    assert!(pester(&t, PESTER) > 0);
    assert!(!t.is_finished(), "barrier: the signals ended the wait");
    assert_eq!(barrier.n_waiting(), 1);
    let mine = barrier.wait().unwrap();
    let theirs = t.join().unwrap().unwrap();
    assert_eq!(mine + theirs, 1, "indices 0 and 1");

    let q: Queue<u32> = Queue::new().unwrap();
    let r = q.clone();
    let t = std::thread::spawn(move || r.get());
    assert!(pester(&t, PESTER) > 0);
    assert!(!t.is_finished(), "queue: the signals ended the get");
    q.put(9).unwrap();
    assert_eq!(t.join().unwrap().unwrap(), 9);
}
