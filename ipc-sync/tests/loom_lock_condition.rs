//! Model checks of the lock and condition state machines with loom, over every interleaving.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p ipc-sync --test loom_lock_condition --release`
//! (a separate `CARGO_TARGET_DIR` keeps the normal build cached). Under `--cfg loom` the atomics
//! and the futex of `src/primitive.rs` are loom's; loom reports a lost wake-up as a deadlock and
//! a critical section entered twice as a concurrent `UnsafeCell` access.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use ipc_sync::raw::{
    Acquire, Passage, RawBarrier, RawCondition, RawEvent, RawLock, RawRLock, RawSemaphore, Wakeup,
};

/// Explores every interleaving with up to three preemptions (loom's recommended bound: bugs
/// that need more are rare, and the unbounded space of these models takes hours).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

struct Guarded<T> {
    lock: RawLock,
    data: UnsafeCell<T>,
}

// SAFETY: `data` is only touched while `lock` is held (what the model checks).
unsafe impl<T: Send> Sync for Guarded<T> {}

impl<T> Guarded<T> {
    /// Releases the lock at the end of a critical section.
    fn unlock(&self) -> bool {
        // SAFETY: every caller has finished touching `data` (its critical section ended).
        unsafe { self.lock.unlock() }
    }
}

#[test]
fn lock_excludes_and_never_loses_a_wake() {
    model(|| {
        let g = Arc::new(Guarded {
            lock: RawLock::new(),
            data: UnsafeCell::new(0u32),
        });
        let ts: Vec<_> = (0..1)
            .map(|_| {
                let g = g.clone();
                thread::spawn(move || {
                    assert_eq!(g.lock.lock(None), Acquire::Acquired);
                    // SAFETY: under the lock; loom flags a second concurrent access.
                    g.data.with_mut(|p| unsafe { *p += 1 });
                    assert!(g.unlock());
                })
            })
            .collect();
        assert_eq!(g.lock.lock(None), Acquire::Acquired);
        // SAFETY: as above.
        g.data.with_mut(|p| unsafe { *p += 1 });
        assert!(g.unlock());
        for t in ts {
            t.join().unwrap();
        }
        // SAFETY: every thread has joined.
        assert_eq!(g.data.with(|p| unsafe { *p }), 2);
        assert!(!g.lock.is_locked());
    });
}

#[test]
fn rlock_nests_and_excludes() {
    model(|| {
        let r = Arc::new(RawRLock::new());
        let r2 = r.clone();
        let t = thread::spawn(move || {
            assert_eq!(r2.lock(None), Acquire::Acquired);
            assert_eq!(r2.lock(None), Acquire::Acquired);
            assert!(r2.unlock() && r2.unlock());
        });
        assert_eq!(r.lock(None), Acquire::Acquired);
        assert_eq!(r.count(), 1);
        assert!(r.unlock());
        t.join().unwrap();
        assert!(!r.is_locked());
    });
}

/// A waiter in the full wait protocol (register, release, sleep, re-acquire, resolve).
fn wait_until_flag(g: &Guarded<bool>, c: &RawCondition) -> u32 {
    let mut wakeups = 0;
    g.lock.lock(None);
    // SAFETY: under the lock.
    while !g.data.with(|p| unsafe { *p }) {
        let registered = c.register();
        let mut ticket = registered;
        loop {
            g.unlock();
            c.sleep(ticket, None);
            g.lock.lock(None);
            match c.resolve(registered, false) {
                Wakeup::Notified => break,
                Wakeup::Spurious => ticket = c.ticket(),
                Wakeup::TimedOut => unreachable!("no deadline"),
            }
        }
        wakeups += 1;
    }
    g.unlock();
    wakeups
}

#[test]
fn condition_never_loses_a_notify() {
    model(|| {
        let g = Arc::new(Guarded {
            lock: RawLock::new(),
            data: UnsafeCell::new(false),
        });
        let c = Arc::new(RawCondition::new());
        let (g2, c2) = (g.clone(), c.clone());
        let waiter = thread::spawn(move || wait_until_flag(&g2, &c2));
        g.lock.lock(None);
        // SAFETY: under the lock.
        g.data.with_mut(|p| unsafe { *p = true });
        c.notify(1);
        g.unlock();
        // The waiter returns (no deadlock) having consumed at most the one notify.
        assert!(waiter.join().unwrap() <= 1);
        assert_eq!(c.waiting(), 0);
    });
}

#[test]
fn notify_all_reaches_two_waiters() {
    model(|| {
        let g = Arc::new(Guarded {
            lock: RawLock::new(),
            data: UnsafeCell::new(false),
        });
        let c = Arc::new(RawCondition::new());
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let (g, c) = (g.clone(), c.clone());
                thread::spawn(move || wait_until_flag(&g, &c))
            })
            .collect();
        g.lock.lock(None);
        // SAFETY: under the lock.
        g.data.with_mut(|p| unsafe { *p = true });
        let n = c.notify(u32::MAX);
        g.unlock();
        let woken: u32 = ts.into_iter().map(|t| t.join().unwrap()).sum();
        // Exactly the waiters that were registered at the notify were selected and left
        // through it; the others saw the flag and never waited.
        assert_eq!(woken, n);
        assert_eq!(c.waiting(), 0);
    });
}

#[test]
fn semaphore_hands_every_unit_to_a_sleeper() {
    model(|| {
        let s = Arc::new(RawSemaphore::new(0, None));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || assert!(s.acquire(None)))
            })
            .collect();
        s.release(1).unwrap();
        s.release(1).unwrap();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(s.value(), 0);
    });
}

#[test]
fn event_set_reaches_every_waiter() {
    model(|| {
        let e = Arc::new(RawEvent::new());
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let e = e.clone();
                thread::spawn(move || assert!(e.wait(None)))
            })
            .collect();
        e.set();
        for t in ts {
            t.join().unwrap();
        }
    });
}

#[test]
fn barrier_releases_both_parties_once() {
    model(|| {
        let b = Arc::new(RawBarrier::new(2));
        let b2 = b.clone();
        let t = thread::spawn(move || b2.wait(None, || {}));
        let mine = b.wait(None, || {});
        let theirs = t.join().unwrap();
        let mut idx = [mine, theirs].map(|p| match p {
            Passage::Passed(i) => i,
            other => panic!("{other:?}"),
        });
        idx.sort();
        assert_eq!(idx, [0, 1]);
        assert_eq!(b.n_waiting(), 0);
    });
}
