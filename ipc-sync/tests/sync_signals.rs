//! Signals during blocking waits. CPython checklist item 81: SIGINT delivered while a process
//! waits in `Condition.wait` raises `KeyboardInterrupt` there, that is, the wait is no
//! uninterruptible sleep. Rust has no `KeyboardInterrupt`: a waiter with SIGINT's default action
//! ends (exit code -2) and the condition keeps working for the others; a waiter whose signals are
//! handled (here SIGUSR1, without `SA_RESTART`, so the futex wait fails with `EINTR`) neither
//! fails nor wakes early nor misses its notify. The same holds for every blocking primitive.
//! The signals target one thread (`pthread_kill`) so the other tests of the binary are not
//! disturbed.

mod common;

use std::os::unix::thread::JoinHandleExt;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{LONG, METHODS, Reap, builder, eventually};
use ipc_sync::{Barrier, Condition, Event, Lock, Queue, Semaphore};

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
/// counted meanwhile. The thread must stay blocked (alive) for the whole period.
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
        assert_eq!(h.join_timeout(LONG).unwrap(), Some(-2), "{m}");

        let live = builder(m).spawn(cond.clone(), wait_once).unwrap();
        let _reap_live = Reap(&live);
        // The dead waiter stays counted (see condition.rs, "Robustness"): wait for two.
        assert!(
            eventually(|| cond.acquire().unwrap().waiting() == 2),
            "{m}: the second child waits"
        );
        cond.acquire().unwrap().notify_all();
        assert_eq!(live.join_timeout(LONG).unwrap(), Some(0), "{m}");
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
