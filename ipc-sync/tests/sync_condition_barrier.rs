//! Condition and Barrier across real processes (and threads) under every start method.
//! Ports CPython checklist items 76-80 and 83-90.

mod common;

use std::time::{Duration, Instant};

use common::{KillOnPanic, LONG, METHODS, Reap, builder, eventually};
use ipc_core::process::{JoinHandle, StartMethod};
use ipc_sync::{AtomicValue, Barrier, BarrierError, Condition, LockError, RLock, Value};

/// Waits once on `cond` (with a timeout), then counts itself in `woken` if notified.
fn waiter((cond, woken, timeout_ms): (Condition, AtomicValue<u32>, u64)) -> bool {
    let g = cond.acquire().unwrap();
    let (_g, notified) = g.wait_timeout(Duration::from_millis(timeout_ms)).unwrap();
    if notified {
        woken.fetch_add(1);
    }
    notified
}

fn waiting(cond: &Condition) -> u32 {
    cond.acquire().unwrap().waiting()
}

fn start_waiters(
    m: StartMethod,
    cond: &Condition,
    woken: &AtomicValue<u32>,
    n: usize,
    timeout_ms: u64,
) -> Vec<JoinHandle<bool>> {
    (0..n)
        .map(|_| {
            builder(m)
                .spawn((cond.clone(), woken.clone(), timeout_ms), waiter)
                .unwrap()
        })
        .collect()
}

// cpython checklist 76 and 78: notify() wakes exactly one waiter (process or thread), a second
// notify the next; notify(2) wakes 2, notify(4) the remaining 4, further notifies are harmless.
#[test]
fn cpython_76_78_notify_wakes_exactly_n() {
    for m in METHODS {
        let cond = Condition::new().unwrap();
        let woken = AtomicValue::new(0u32).unwrap();
        let mut kids = start_waiters(m, &cond, &woken, 4, 60_000);
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (c, w) = (cond.clone(), woken.clone());
                std::thread::spawn(move || waiter((c, w, 60_000)))
            })
            .collect();
        let reaps: Vec<_> = kids.iter().map(Reap).collect();
        assert!(eventually(|| waiting(&cond) == 7), "{m}");
        assert_eq!(cond.acquire().unwrap().notify(1), 1);
        assert!(eventually(|| woken.load() == 1), "{m}");
        assert_eq!(cond.acquire().unwrap().notify(1), 1);
        assert!(eventually(|| woken.load() == 2), "{m}");
        // Nobody else wakes without a notify.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(woken.load(), 2, "{m}");
        assert_eq!(cond.acquire().unwrap().notify(2), 2);
        assert!(eventually(|| woken.load() == 4), "{m}");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(woken.load(), 4, "{m}");
        assert_eq!(cond.acquire().unwrap().notify(4), 3);
        assert!(eventually(|| woken.load() == 7), "{m}");
        assert_eq!(cond.acquire().unwrap().notify(4), 0, "{m}: harmless");
        drop(reaps);
        for k in kids.drain(..) {
            assert!(k.join().unwrap(), "{m}");
        }
        for t in threads {
            assert!(t.join().unwrap());
        }
        assert_eq!(waiting(&cond), 0);
    }
}

// cpython checklist 77: waiters with a timeout and no notify all time out; notify_all() wakes
// 3 processes + 3 threads.
#[test]
fn cpython_77_timeouts_and_notify_all() {
    for m in METHODS {
        let cond = Condition::new().unwrap();
        let woken = AtomicValue::new(0u32).unwrap();
        let kids = start_waiters(m, &cond, &woken, 3, 100);
        for k in kids {
            assert!(!k.join().unwrap(), "{m}: timed out");
        }
        assert_eq!((woken.load(), waiting(&cond)), (0, 0), "{m}");
        let kids = start_waiters(m, &cond, &woken, 3, 60_000);
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (c, w) = (cond.clone(), woken.clone());
                std::thread::spawn(move || waiter((c, w, 60_000)))
            })
            .collect();
        let reaps: Vec<_> = kids.iter().map(Reap).collect();
        assert!(eventually(|| waiting(&cond) == 6), "{m}");
        assert_eq!(cond.acquire().unwrap().notify_all(), 6);
        drop(reaps);
        for k in kids {
            assert!(k.join().unwrap(), "{m}");
        }
        for t in threads {
            assert!(t.join().unwrap());
        }
        assert_eq!(woken.load(), 6);
    }
}

// cpython checklist 79: wait(t) returns false after ~t; wait(0) false; a long wait returns true
// when notified.
#[test]
fn cpython_79_wait_timeouts() {
    let cond = Condition::new().unwrap();
    let g = cond.acquire().unwrap();
    let t0 = Instant::now();
    let (g, notified) = g.wait_timeout(Duration::from_millis(100)).unwrap();
    assert!(!notified && t0.elapsed() >= Duration::from_millis(100));
    let (g, notified) = g.wait_timeout(Duration::ZERO).unwrap();
    assert!(!notified);
    drop(g);
    let woken = AtomicValue::new(0u32).unwrap();
    let kids = start_waiters(StartMethod::ForkServer, &cond, &woken, 1, 60_000);
    let _reap = Reap(&kids[0]);
    assert!(eventually(|| waiting(&cond) == 1));
    cond.acquire().unwrap().notify(1);
    assert_eq!(kids[0].join_timeout(LONG).unwrap(), 0);
    assert_eq!(woken.load(), 1);
}

fn make_true_later((cond, state): (Condition, Value<u32>)) {
    for i in 1..=5 {
        std::thread::sleep(Duration::from_millis(10));
        let g = cond.acquire().unwrap();
        state.set(i);
        g.notify_all();
    }
}

// cpython checklist 80: wait_for(pred) returns true once another process makes pred true
// (through a shared Value); wait_for(pred, 0.1) returns false after >= 0.1 s if never true.
#[test]
fn cpython_80_wait_for_a_predicate() {
    for m in METHODS {
        let cond = Condition::new().unwrap();
        let state = Value::new(0u32).unwrap();
        let h = builder(m)
            .spawn((cond.clone(), state.clone()), make_true_later)
            .unwrap();
        let _reap = Reap(&h);
        let g = cond.acquire().unwrap();
        let g = g.wait_for(|| state.get() == 5).unwrap();
        assert_eq!(state.get(), 5, "{m}");
        let t0 = Instant::now();
        let (_g, ok) = g
            .wait_for_timeout(Duration::from_millis(100), || state.get() == 6)
            .unwrap();
        assert!(!ok && t0.elapsed() >= Duration::from_millis(100), "{m}");
        assert_eq!(h.join_timeout(LONG).unwrap(), 0);
    }
}

#[test]
fn condition_over_an_rlock_restores_the_depth() {
    let r = RLock::new().unwrap();
    let cond = Condition::with_rlock(r.clone()).unwrap();
    let outer = r.acquire().unwrap();
    let g = cond.acquire().unwrap();
    assert_eq!(r.count(), 2);
    let c2 = cond.clone();
    let r2 = r.clone();
    let t = std::thread::spawn(move || {
        // The wait released both levels, so another thread can take the lock.
        let g = c2.acquire().unwrap();
        assert_eq!(r2.count(), 1);
        g.notify(1)
    });
    let g = g.wait().unwrap();
    assert_eq!(t.join().unwrap(), 1);
    assert_eq!(r.count(), 2, "both levels are back");
    drop(g);
    drop(outer);
    assert!(!r.locked());
}

fn hold_condition_lock((cond, ev): (Condition, ipc_sync::Event)) {
    std::mem::forget(cond.acquire().unwrap());
    ev.set();
    std::thread::sleep(Duration::from_secs(60));
}

/// A condition waiter learns that the lock's holder died: its wait times out while a child
/// holds the lock, the child is killed, and the waiter gets the lock back with OwnerDied.
#[test]
fn condition_waiter_learns_of_a_dead_lock_holder() {
    for m in METHODS {
        let cond = Condition::new().unwrap();
        let ev = ipc_sync::Event::new().unwrap();
        let c2 = cond.clone();
        let t = std::thread::spawn(move || {
            let g = c2.acquire().unwrap();
            matches!(
                g.wait_timeout(Duration::from_millis(300)),
                Err(LockError::OwnerDied((_, false)))
            )
        });
        assert!(eventually(|| waiting(&cond) == 1), "{m}");
        let h = builder(m)
            .spawn((cond.clone(), ev.clone()), hold_condition_lock)
            .unwrap();
        let _reap = Reap(&h);
        assert!(ev.wait_timeout(LONG), "{m}");
        // Let the waiter time out and block on the child's lock, then kill the child.
        std::thread::sleep(Duration::from_millis(400));
        h.kill().unwrap();
        assert!(t.join().unwrap(), "{m}");
        let _ = h.join_timeout(LONG);
    }
}

/// Waits on `cond` with no timeout until the test kills it.
fn wait_until_killed(cond: Condition) {
    let g = cond.acquire().unwrap_or_else(LockError::into_guard);
    let _ = g.wait();
}

// A waiter killed while it waits is no longer counted (found in review: `waiting()` stayed one
// too high for good, and notify kept selecting the dead waiter). A live waiter beside it gets
// the next notify, and the counts are exact.
#[test]
fn a_killed_waiter_is_not_counted() {
    for m in METHODS {
        let cond = Condition::new().unwrap();
        let h = builder(m).spawn(cond.clone(), wait_until_killed).unwrap();
        let _reap = Reap(&h);
        assert!(eventually(|| waiting(&cond) == 1), "{m}");
        let c2 = cond.clone();
        let live = std::thread::spawn(move || {
            let g = c2.acquire().unwrap_or_else(LockError::into_guard);
            g.wait_timeout(LONG).unwrap_or_else(LockError::into_guard).1
        });
        assert!(eventually(|| waiting(&cond) == 2), "{m}");
        h.kill().unwrap();
        assert_eq!(h.join_timeout(LONG).unwrap(), -9, "{m}");
        let g = cond.acquire().unwrap_or_else(LockError::into_guard);
        assert_eq!(g.waiting(), 1, "{m}: the dead waiter is still counted");
        assert_eq!(g.notify(2), 1, "{m}");
        drop(g);
        assert!(
            live.join().unwrap(),
            "{m}: the live waiter was not notified"
        );
        assert_eq!(waiting(&cond), 0, "{m}");
    }
}

// The waiters' own sleep slices settle for a dead waiter too: with nobody calling `waiting()`,
// a notify after the death selects only the live waiter (notify's count says so).
#[test]
fn sleeping_waiters_settle_for_a_killed_one() {
    let cond = Condition::new().unwrap();
    let h = builder(StartMethod::Spawn)
        .spawn(cond.clone(), wait_until_killed)
        .unwrap();
    let _reap = Reap(&h);
    assert!(eventually(|| waiting(&cond) == 1));
    let c2 = cond.clone();
    let live = std::thread::spawn(move || {
        let g = c2.acquire().unwrap_or_else(LockError::into_guard);
        g.wait_timeout(LONG).unwrap_or_else(LockError::into_guard).1
    });
    assert!(eventually(|| waiting(&cond) == 2));
    h.kill().unwrap();
    assert_eq!(h.join_timeout(LONG).unwrap(), -9);
    // Read the raw count (no settling) until the live waiter's slice has done it.
    assert!(eventually(|| format!("{cond:?}").contains("waiting: 1")));
    assert_eq!(cond.acquire().unwrap().notify(2), 1);
    assert!(live.join().unwrap());
}

// A waiter killed after a notify selected it and before it departed (it waits for the lock the
// notifier holds): no wake-up is lost for the live waiters, and the condition stays exact.
#[test]
fn a_waiter_killed_after_being_selected_loses_nobody_a_wake_up() {
    let cond = Condition::new().unwrap();
    let flag = AtomicValue::new(0u32).unwrap();
    let h = builder(StartMethod::Spawn)
        .spawn(cond.clone(), wait_until_killed)
        .unwrap();
    let _reap = Reap(&h);
    let g = once_one_waits(&cond);
    assert_eq!(g.notify(1), 1);
    h.kill().unwrap();
    assert_eq!(h.join_timeout(LONG).unwrap(), -9);
    drop(g);
    let (c2, f2) = (cond.clone(), flag.clone());
    let live = std::thread::spawn(move || {
        let g = c2.acquire().unwrap_or_else(LockError::into_guard);
        let _g = g.wait_for(|| f2.load() == 1).unwrap();
    });
    assert!(eventually(|| waiting(&cond) == 1));
    flag.store(1);
    assert_eq!(cond.acquire().unwrap().notify(1), 1);
    live.join().unwrap();
    let g = cond.acquire().unwrap();
    assert_eq!(g.waiting(), 0);
    assert_eq!(g.notify_all(), 0);
}

fn barrier_party((b, rounds, actions): (Barrier, u32, AtomicValue<u32>)) -> Vec<u32> {
    (0..rounds)
        .map(|_| {
            let i = b
                .wait_with(Some(LONG), || {
                    actions.fetch_add(1);
                })
                .unwrap();
            // cpython checklist 85: the action ran before anybody was released.
            assert!(actions.load() >= 1);
            i
        })
        .collect()
}

// cpython checklist 83, 84, 85: 5 parties pass in lockstep for 1 and 10 generations, exactly
// one gets index 0 per generation, the action runs exactly once per generation; afterwards
// n_waiting is 0 and the barrier is not broken.
#[test]
fn cpython_83_84_85_barrier_generations() {
    for m in METHODS {
        for rounds in [1, 10] {
            let b = Barrier::new(5).unwrap();
            let actions = AtomicValue::new(0u32).unwrap();
            let kids: Vec<_> = (0..4)
                .map(|_| {
                    builder(m)
                        .spawn((b.clone(), rounds, actions.clone()), barrier_party)
                        .unwrap()
                })
                .collect();
            let reaps: Vec<_> = kids.iter().map(Reap).collect();
            let mut all = vec![barrier_party((b.clone(), rounds, actions.clone()))];
            drop(reaps);
            all.extend(kids.into_iter().map(|k| k.join().unwrap()));
            for r in 0..rounds as usize {
                let mut idx: Vec<u32> = all.iter().map(|v| v[r]).collect();
                idx.sort();
                assert_eq!(idx, [0, 1, 2, 3, 4], "{m}: generation {r}");
            }
            assert_eq!(actions.load(), rounds, "{m}");
            assert_eq!((b.n_waiting(), b.broken()), (0, false));
        }
    }
}

fn wait_at(b: Barrier) -> Result<u32, BarrierError> {
    b.wait_timeout(LONG)
}

fn start_partial(
    m: StartMethod,
    b: &Barrier,
    n: usize,
) -> Vec<JoinHandle<Result<u32, BarrierError>>> {
    let kids: Vec<_> = (0..n)
        .map(|_| builder(m).spawn(b.clone(), wait_at).unwrap())
        .collect();
    assert!(eventually(|| b.n_waiting() == n as u32), "{m}");
    kids
}

// cpython checklist 86, 87, 88: abort breaks the barrier for every waiter; reset while N-1 wait
// breaks them and leaves the barrier usable; abort then reset makes it usable again.
#[test]
fn cpython_86_87_88_abort_and_reset() {
    for m in METHODS {
        let b = Barrier::new(3).unwrap();
        let kids = start_partial(m, &b, 2);
        b.abort();
        for k in kids {
            assert_eq!(k.join().unwrap(), Err(BarrierError::Broken), "{m}");
        }
        assert!(b.broken());
        assert_eq!(b.wait(), Err(BarrierError::Broken));
        b.reset();
        assert!(!b.broken());
        let kids = start_partial(m, &b, 2);
        b.reset();
        for k in kids {
            assert_eq!(k.join().unwrap(), Err(BarrierError::Broken), "{m}");
        }
        let kids = start_partial(m, &b, 2);
        assert!(b.wait_timeout(LONG).is_ok(), "{m}: usable after reset");
        for k in kids {
            assert!(k.join().unwrap().is_ok());
        }
    }
}

// cpython checklist 89: a wait timeout breaks the barrier for all; the constructor's timeout is
// the default.
#[test]
fn cpython_89_timeout_breaks_the_barrier() {
    for m in METHODS {
        let b = Barrier::with_timeout(3, Some(Duration::from_millis(100))).unwrap();
        let kids = start_partial(m, &b, 1);
        let t0 = Instant::now();
        assert_eq!(b.wait(), Err(BarrierError::Timeout), "{m}");
        assert!(t0.elapsed() >= Duration::from_millis(100));
        for k in kids {
            assert_eq!(k.join().unwrap(), Err(BarrierError::Broken), "{m}");
        }
        assert!(b.broken());
    }
}

fn lockstep((b, n, count): (Barrier, u32, AtomicValue<u32>)) -> bool {
    (0..n).all(|i| {
        count.fetch_add(1);
        b.wait_timeout(LONG).is_ok() && count.load() >= 5 * (i + 1)
    })
}

// cpython checklist 90: Barrier(1).wait() returns at once, repeatedly; 5 processes x 1000
// passes stay in lockstep.
#[test]
fn cpython_90_single_party_and_lockstep() {
    let one = Barrier::new(1).unwrap();
    for _ in 0..100 {
        assert_eq!(one.wait(), Ok(0));
    }
    assert!(Barrier::new(0).is_err());
    let b = Barrier::new(5).unwrap();
    let count = AtomicValue::new(0u32).unwrap();
    let kids: Vec<_> = (0..5)
        .map(|_| {
            builder(StartMethod::ForkServer)
                .spawn((b.clone(), 1000, count.clone()), lockstep)
                .unwrap()
        })
        .collect();
    for k in kids {
        assert!(k.join().unwrap());
    }
    assert_eq!(count.load(), 5000);
}

fn arrive_and_die(b: Barrier) {
    let _ = b.wait_timeout(LONG);
}

/// A party killed while it waits does not hang the others: the next generation, which it
/// will never join, breaks after its timeout.
#[test]
fn a_killed_party_breaks_the_barrier_after_the_timeout() {
    let b = Barrier::with_timeout(2, Some(Duration::from_millis(200))).unwrap();
    let h = builder(StartMethod::Spawn)
        .spawn(b.clone(), arrive_and_die)
        .unwrap();
    let _reap = Reap(&h);
    assert!(eventually(|| b.n_waiting() == 1));
    h.kill().unwrap();
    let _ = h.join_timeout(LONG);
    // Its arrival still counts: this generation passes...
    assert_eq!(b.wait(), Ok(1));
    // ...and the next one, which the dead party never joins, breaks after the timeout.
    assert_eq!(b.wait(), Err(BarrierError::Timeout));
    assert!(b.broken());
}

fn die_in_the_action((b, ev): (Barrier, ipc_sync::Event)) {
    let _ = b.wait_with(None, || {
        ev.set();
        std::thread::sleep(Duration::from_secs(60));
    });
}

/// The last party is killed while it runs the action (holding the barrier's internal lock):
/// the waiting party, which has no timeout, learns the barrier broke instead of hanging.
#[test]
fn a_party_killed_in_the_action_breaks_the_barrier() {
    for m in METHODS {
        let b = Barrier::new(2).unwrap();
        let ev = ipc_sync::Event::new().unwrap();
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || b2.wait());
        assert!(eventually(|| b.n_waiting() == 1), "{m}");
        let h = builder(m)
            .spawn((b.clone(), ev.clone()), die_in_the_action)
            .unwrap();
        let _reap = Reap(&h);
        assert!(ev.wait_timeout(LONG), "{m}");
        h.kill().unwrap();
        assert_eq!(waiter.join().unwrap(), Err(BarrierError::Broken), "{m}");
        assert!(b.broken());
        b.reset();
        assert!(!b.broken());
        let _ = h.join_timeout(LONG);
    }
}

/// Arrives last and runs an action that lasts until `release` is set, holding the barrier's
/// internal lock all along; `in_action` says it started.
fn last_with_a_long_action(
    (b, in_action, release): (Barrier, ipc_sync::Event, ipc_sync::Event),
) -> Result<u32, BarrierError> {
    b.wait_with(None, || {
        in_action.set();
        release.wait_timeout(LONG);
    })
}

/// Starts the last party of a 2-party barrier, which holds the internal lock in its action.
fn start_long_action(b: &Barrier) -> (JoinHandle<Result<u32, BarrierError>>, ipc_sync::Event) {
    let in_action = ipc_sync::Event::new().unwrap();
    let release = ipc_sync::Event::new().unwrap();
    let h = builder(StartMethod::Spawn)
        .spawn(
            (b.clone(), in_action.clone(), release.clone()),
            last_with_a_long_action,
        )
        .unwrap();
    assert!(
        in_action.wait_timeout(LONG),
        "the last party never ran its action"
    );
    (h, release)
}

// cpython checklist 89, kept to the letter: a waiter's timeout bounds its whole call, even when
// it passes while the last party's action holds the internal lock (found in review: the
// waiter then blocked on that lock until the action ended). The generation ends broken for
// every party, the one in the action included.
#[test]
fn a_timeout_is_kept_while_the_last_party_runs_its_action() {
    let b = Barrier::new(2).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let b2 = b.clone();
    std::thread::spawn(move || {
        let t = Instant::now();
        let r = b2.wait_timeout(Duration::from_secs(3));
        let _ = tx.send((r, t.elapsed()));
    });
    assert!(eventually(|| b.n_waiting() == 1));
    let (h, release) = start_long_action(&b);
    let _kill = KillOnPanic(vec![h.pid()]);
    let (r, took) = rx
        .recv_timeout(LONG)
        .expect("the timed waiter overran its timeout");
    assert_eq!(r, Err(BarrierError::Timeout));
    assert!(took >= Duration::from_secs(3) && took < LONG, "{took:?}");
    assert!(b.broken());
    release.set();
    assert_eq!(h.join().unwrap(), Err(BarrierError::Broken));
}

// The same bound for a party that cannot even arrive: the action holds the lock it needs to
// count itself in. It breaks the generation it would have joined, and its waiter wakes.
#[test]
fn a_timeout_is_kept_by_a_party_that_cannot_arrive() {
    let b = Barrier::new(2).unwrap();
    let b2 = b.clone();
    let first = std::thread::spawn(move || b2.wait());
    assert!(eventually(|| b.n_waiting() == 1));
    let (h, release) = start_long_action(&b);
    let _kill = KillOnPanic(vec![h.pid()]);
    let t = Instant::now();
    assert_eq!(
        b.wait_timeout(Duration::from_millis(300)),
        Err(BarrierError::Timeout)
    );
    assert!(t.elapsed() < LONG, "{:?}", t.elapsed());
    assert_eq!(first.join().unwrap(), Err(BarrierError::Broken));
    release.set();
    assert_eq!(h.join().unwrap(), Err(BarrierError::Broken));
    b.reset();
    assert!(!b.broken());
}

/// Holds the condition's lock until its one waiter has registered.
fn once_one_waits(cond: &Condition) -> ipc_sync::ConditionGuard<'_> {
    loop {
        let g = cond.acquire().unwrap_or_else(LockError::into_guard);
        if g.waiting() == 1 {
            return g;
        }
        drop(g);
        std::thread::sleep(Duration::from_millis(1));
    }
}

// cpython checklist 76: notify(1) wakes the waiter it selected. A waiter that arrives after the
// notify and times out before the selected one re-acquires the lock must not take its wake-up
// (found in review: it reported "notified" and the selected waiter slept on).
#[test]
fn a_late_timed_out_waiter_does_not_take_a_notify_meant_for_another() {
    let cond = Condition::new().unwrap();
    let c2 = cond.clone();
    let selected = std::thread::spawn(move || {
        let g = c2.acquire().unwrap_or_else(LockError::into_guard);
        let (_g, notified) = g.wait_timeout(LONG).unwrap_or_else(LockError::into_guard);
        notified
    });
    let g = once_one_waits(&cond);
    assert_eq!(g.notify(1), 1);
    // Keep the lock a moment: the selected waiter wakes and queues on the lock word.
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let (g, late_notified) = g
        .wait_timeout(Duration::ZERO)
        .unwrap_or_else(LockError::into_guard);
    drop(g);
    assert!(!late_notified, "the late waiter took the notify");
    assert!(
        selected.join().unwrap(),
        "the selected waiter was not notified"
    );
    assert!(t.elapsed() < LONG);
}

// The same race under wait_for: the selected waiter, whose predicate holds, returns.
#[test]
fn wait_for_returns_when_notified_despite_a_late_timed_out_waiter() {
    let cond = Condition::new().unwrap();
    let flag = AtomicValue::new(0u32).unwrap();
    let (c2, f2) = (cond.clone(), flag.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let g = c2.acquire().unwrap_or_else(LockError::into_guard);
        let _g = g
            .wait_for(|| f2.load() == 1)
            .unwrap_or_else(LockError::into_guard);
        tx.send(()).unwrap();
    });
    let g = once_one_waits(&cond);
    flag.store(1);
    g.notify(1);
    std::thread::sleep(Duration::from_millis(50));
    let (g, _) = g
        .wait_timeout(Duration::ZERO)
        .unwrap_or_else(LockError::into_guard);
    drop(g);
    assert!(
        rx.recv_timeout(LONG).is_ok(),
        "wait_for never returned although notified with its predicate true"
    );
}
