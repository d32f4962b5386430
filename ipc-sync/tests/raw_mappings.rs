//! The raw state machines across two mappings of one memfd segment, driven by threads.
//!
//! Two mappings at different addresses are what two processes see: the shared futex is keyed by
//! the page (inode + offset), so a waiter on one mapping is woken through the other. These tests
//! also pin the shared-memory ABI (size, alignment, all-zero initial state) of every raw type.
#![allow(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc_core::shm::Segment;
use ipc_sync::raw::{
    Acquire, OWNER_DIED, PID_MASK, Passage, RELEASABLE, RawBarrier, RawCondition, RawEvent,
    RawLock, RawRLock, RawSemaphore, WAITERS,
};

/// `RawLock::unlock`, for words that guard no data here: each test's holder is done with the lock
/// when it calls this, which is the contract.
fn release(lock: &RawLock) -> bool {
    // SAFETY: the raw words in these tests guard nothing but the test's own counters, and each
    // call site releases only after its critical section ended.
    unsafe { lock.unlock() }
}

/// Two mappings of one zeroed segment; `at::<T>(i, off)` views mapping `i` at `off` as a `T`.
struct Shared {
    maps: [Segment; 2],
}

impl Shared {
    fn new() -> Arc<Shared> {
        let a = Segment::new(4096).unwrap();
        let b = a.try_clone().unwrap();
        assert_ne!(a.as_ptr(), b.as_ptr());
        Arc::new(Shared { maps: [a, b] })
    }

    /// # Safety
    /// `off` is aligned for `T`, `off + size_of::<T>() <= 4096`, and every view of those bytes
    /// is of a type made of atomics only (shared mutation goes through atomics).
    unsafe fn at<T>(&self, map: usize, off: usize) -> &T {
        assert!(off + size_of::<T>() <= 4096 && off.is_multiple_of(align_of::<T>()));
        // SAFETY: bounds and alignment checked above; the caller promises atomics-only types;
        // the mapping lives as long as `self`.
        unsafe { &*(self.maps[map].as_ptr().add(off) as *const T) }
    }
}

const LONG: Duration = Duration::from_secs(30);

#[test]
fn abi_sizes_alignments_and_zero_states() {
    assert_eq!((size_of::<RawLock>(), align_of::<RawLock>()), (4, 4));
    assert_eq!((size_of::<RawRLock>(), align_of::<RawRLock>()), (16, 8));
    assert_eq!(
        (size_of::<RawSemaphore>(), align_of::<RawSemaphore>()),
        (8, 4)
    );
    assert_eq!((size_of::<RawEvent>(), align_of::<RawEvent>()), (4, 4));
    assert_eq!(
        (size_of::<RawCondition>(), align_of::<RawCondition>()),
        (20, 4)
    );
    assert_eq!((size_of::<RawBarrier>(), align_of::<RawBarrier>()), (32, 8));
    assert_eq!(
        (OWNER_DIED, WAITERS, RELEASABLE, PID_MASK),
        (1 << 30, 1 << 31, 1 << 29, (1 << 29) - 1)
    );

    let s = Shared::new();
    // SAFETY: disjoint, aligned offsets in a zeroed page; every type is atomics only.
    let (l, r, sem, ev, b) = unsafe {
        (
            s.at::<RawLock>(0, 0),
            s.at::<RawRLock>(0, 64),
            s.at::<RawSemaphore>(0, 128),
            s.at::<RawEvent>(0, 192),
            s.at::<RawBarrier>(0, 256),
        )
    };
    assert!(!l.is_locked() && l.owner().is_none());
    assert!(!r.is_locked() && r.count() == 0);
    assert_eq!(
        (sem.value(), sem.max_value()),
        (0, ipc_sync::raw::VALUE_MASK)
    );
    assert!(!sem.try_acquire());
    assert!(!ev.is_set());
    assert_eq!((b.parties(), b.n_waiting(), b.is_broken()), (1, 0, false));
    assert_eq!(b.wait(None, || {}), Passage::Passed(0));
    // The constructors agree with the zero state.
    assert_eq!(RawLock::new().word(), 0);
}

#[test]
fn lock_excludes_across_mappings() {
    let s = Shared::new();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                // SAFETY: offset 0 is the lock, offset 64 a counter, atomics only.
                let (lock, counter) =
                    unsafe { (s.at::<RawLock>(t % 2, 0), s.at::<AtomicU64>(t % 2, 64)) };
                for _ in 0..20_000 {
                    assert_eq!(lock.lock(None), Acquire::Acquired);
                    // A non-atomic read-modify-write: lost updates would show a broken lock.
                    let v = counter.load(Ordering::Relaxed);
                    counter.store(v + 1, Ordering::Relaxed);
                    assert!(release(lock));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // SAFETY: as above.
    let counter = unsafe { s.at::<AtomicU64>(1, 64) };
    assert_eq!(counter.load(Ordering::Relaxed), 80_000);
}

#[test]
fn lock_words_follow_the_documented_states() {
    let l = RawLock::new();
    let me = std::process::id();
    assert!(!release(&l), "release of an unlocked lock is refused");
    assert_eq!(l.lock(None), Acquire::Acquired);
    assert_eq!(l.word(), me);
    assert_eq!(l.owner(), Some(me));
    assert_eq!(l.try_lock(), Acquire::Failed);
    let t0 = Instant::now();
    assert_eq!(
        l.lock(Some(Instant::now() + Duration::from_millis(50))),
        Acquire::Failed
    );
    assert!(t0.elapsed() >= Duration::from_millis(50));
    // The timed-out waiter left the WAITERS bit behind: the release must wake (harmlessly).
    assert_eq!(l.word(), me | WAITERS);
    assert!(release(&l));
    assert_eq!(l.word(), 0);
}

/// A pid that certainly names no live process: a child that exited and was reaped.
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn a_dead_owner_is_taken_over_by_a_blocked_acquirer() {
    let s = Shared::new();
    // SAFETY: offset 0 holds the lock, viewed as its word too (RawLock is repr(C) over a u32).
    let (word, lock) = unsafe { (s.at::<AtomicU32>(0, 0), s.at::<RawLock>(1, 0)) };
    word.store(dead_pid(), Ordering::Relaxed);
    let t0 = Instant::now();
    assert_eq!(lock.lock(Some(Instant::now() + LONG)), Acquire::OwnerDied);
    assert!(t0.elapsed() < LONG);
    assert_eq!(lock.word(), std::process::id() | OWNER_DIED | WAITERS);
    assert!(release(lock));
    assert_eq!(lock.lock(None), Acquire::Acquired);
    assert!(release(lock));
}

#[test]
fn a_zombie_owner_is_dead_for_try_lock() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let s = Shared::new();
    // SAFETY: offset 0, atomics only.
    let (word, lock) = unsafe { (s.at::<AtomicU32>(0, 0), s.at::<RawLock>(1, 0)) };
    word.store(child.id(), Ordering::Relaxed);
    let deadline = Instant::now() + LONG;
    let got = loop {
        match lock.try_lock() {
            Acquire::Failed if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            other => break other,
        }
    };
    // The child is still unreaped (a zombie) here, and the lock was recovered anyway.
    assert_eq!(got, Acquire::OwnerDied);
    child.wait().unwrap();
    assert!(release(lock));
    assert!(!lock.is_locked());
}

#[test]
fn rlock_nests_and_refuses_strangers() {
    let s = Shared::new();
    // SAFETY: offset 0, atomics only.
    let r = unsafe { s.at::<RawRLock>(0, 0) };
    for n in 1..=3 {
        assert_eq!(r.lock(None), Acquire::Acquired);
        assert_eq!(r.count(), n);
    }
    let s2 = s.clone();
    std::thread::spawn(move || {
        // SAFETY: as above, through the other mapping.
        let r = unsafe { s2.at::<RawRLock>(1, 0) };
        assert!(!r.unlock(), "a non-owner's release is refused");
        assert_eq!(r.try_lock(), Acquire::Failed);
        assert!(r.is_locked() && !r.is_owned_by_current_thread());
    })
    .join()
    .unwrap();
    for n in (0..3).rev() {
        assert!(r.is_locked());
        assert!(r.unlock());
        assert_eq!(r.count(), n);
    }
    assert!(!r.is_locked());
    assert!(!r.unlock());
}

#[test]
fn semaphore_counts_and_wakes_across_mappings() {
    let s = Shared::new();
    // SAFETY: offset 0, atomics only.
    let sem = unsafe { s.at::<RawSemaphore>(0, 0) };
    sem.init(2, None);
    assert!(sem.try_acquire() && sem.try_acquire() && !sem.try_acquire());
    let s2 = s.clone();
    let waiter = std::thread::spawn(move || {
        // SAFETY: as above.
        let sem = unsafe { s2.at::<RawSemaphore>(1, 0) };
        (0..3).all(|_| sem.acquire(Some(Instant::now() + LONG)))
    });
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..3 {
        sem.release(1).unwrap();
    }
    assert!(waiter.join().unwrap());
    assert_eq!(sem.value(), 0);
    let t0 = Instant::now();
    assert!(!sem.acquire(Some(Instant::now() + Duration::from_millis(30))));
    assert!(t0.elapsed() >= Duration::from_millis(30));
}

#[test]
fn bounded_semaphore_refuses_over_release() {
    let sem = RawSemaphore::new(2, Some(2));
    assert_eq!(sem.release(1), Err(2));
    assert!(sem.try_acquire());
    assert_eq!(sem.release(1), Ok(()));
    assert_eq!(sem.release(1), Err(2));
    assert_eq!(sem.value(), 2);
    let unbounded = RawSemaphore::new(ipc_sync::raw::VALUE_MASK, None);
    assert!(unbounded.release(1).is_err());
}

#[test]
fn event_wakes_waiters_in_the_other_mapping() {
    let s = Shared::new();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                // SAFETY: offset 0, atomics only.
                let ev = unsafe { s.at::<RawEvent>(1, 0) };
                ev.wait(Some(Instant::now() + LONG))
            })
        })
        .collect();
    // SAFETY: as above.
    let ev = unsafe { s.at::<RawEvent>(0, 0) };
    std::thread::sleep(Duration::from_millis(30));
    ev.set();
    ev.clear();
    // Every waiter returns true: the pulse happened after they began waiting.
    for w in waiters {
        assert!(w.join().unwrap());
    }
    assert!(!ev.is_set());
    assert!(!ev.wait(Some(Instant::now() + Duration::from_millis(20))));
}

#[test]
fn condition_notify_wakes_exactly_n() {
    let s = Shared::new();
    let woken = Arc::new(AtomicU32::new(0));
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let (s, woken) = (s.clone(), woken.clone());
            std::thread::spawn(move || {
                // SAFETY: lock at 0, condition at 64, atomics only.
                let (l, c) =
                    unsafe { (s.at::<RawLock>(i % 2, 0), s.at::<RawCondition>(i % 2, 64)) };
                assert_eq!(l.lock(None), Acquire::Acquired);
                let registered = c.register();
                let mut ticket = registered;
                loop {
                    assert!(release(l));
                    let out = c.sleep(ticket, Some(Instant::now() + LONG));
                    assert_eq!(l.lock(None), Acquire::Acquired);
                    let timed_out = out == ipc_core::futex::WaitOutcome::TimedOut;
                    match c.resolve(registered, timed_out) {
                        ipc_sync::raw::Wakeup::Spurious => ticket = c.ticket(),
                        w => {
                            woken.fetch_add(1, Ordering::SeqCst);
                            assert!(release(l));
                            return w;
                        }
                    }
                }
            })
        })
        .collect();
    // SAFETY: as above.
    let (l, c) = unsafe { (s.at::<RawLock>(0, 0), s.at::<RawCondition>(0, 64)) };
    let wait_for_waiting = |n| {
        let deadline = Instant::now() + LONG;
        loop {
            l.lock(None);
            let w = c.waiting();
            release(l);
            if w == n || Instant::now() > deadline {
                return w;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    assert_eq!(wait_for_waiting(4), 4);
    l.lock(None);
    assert_eq!(c.notify(1), 1);
    release(l);
    // Exactly one departs; give the others time to (wrongly) leave too.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(woken.load(Ordering::SeqCst), 1);
    l.lock(None);
    assert_eq!(c.notify(2), 2);
    release(l);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(woken.load(Ordering::SeqCst), 3);
    l.lock(None);
    assert_eq!(c.notify(10), 1);
    assert_eq!(c.notify(10), 0);
    release(l);
    for w in waiters {
        assert_eq!(w.join().unwrap(), ipc_sync::raw::Wakeup::Notified);
    }
}

#[test]
fn barrier_passes_generations_across_mappings() {
    let s = Shared::new();
    // SAFETY: barrier at 0, a counter at 64, atomics only.
    unsafe { s.at::<RawBarrier>(0, 0) }.init(3, None);
    let actions = Arc::new(AtomicU32::new(0));
    let parties: Vec<_> = (0..3)
        .map(|i| {
            let (s, actions) = (s.clone(), actions.clone());
            std::thread::spawn(move || {
                // SAFETY: as above.
                let b = unsafe { s.at::<RawBarrier>(i % 2, 0) };
                let mut zeros = 0;
                for round in 0..50 {
                    match b.wait(Some(Instant::now() + LONG), || {
                        actions.fetch_add(1, Ordering::SeqCst);
                    }) {
                        Passage::Passed(0) => zeros += 1,
                        Passage::Passed(_) => {}
                        other => panic!("generation {round}: {other:?}"),
                    }
                    // Lockstep: the action of this generation has run before anyone passes.
                    assert!(actions.load(Ordering::SeqCst) > round);
                }
                zeros
            })
        })
        .collect();
    let zeros: u32 = parties.into_iter().map(|p| p.join().unwrap()).sum();
    assert_eq!(zeros, 50, "exactly one party per generation gets index 0");
    assert_eq!(actions.load(Ordering::SeqCst), 50);
}

#[test]
fn barrier_timeout_abort_and_reset() {
    let b = Arc::new(RawBarrier::new(3));
    let b2 = b.clone();
    let waiter = std::thread::spawn(move || b2.wait(Some(Instant::now() + LONG), || {}));
    let deadline = Instant::now() + LONG;
    while b.n_waiting() != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // A second arrival times out: it breaks the barrier for the first too.
    assert_eq!(
        b.wait(Some(Instant::now() + Duration::from_millis(30)), || {}),
        Passage::TimedOut
    );
    assert_eq!(waiter.join().unwrap(), Passage::Broken);
    assert!(b.is_broken());
    assert_eq!(b.wait(None, || {}), Passage::Broken);
    b.reset();
    assert!(!b.is_broken());
    // Reset while a party waits: it fails; the barrier is usable afterwards.
    let b2 = b.clone();
    let waiter = std::thread::spawn(move || b2.wait(Some(Instant::now() + LONG), || {}));
    while b.n_waiting() != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    b.reset();
    assert_eq!(waiter.join().unwrap(), Passage::Broken);
    b.abort();
    assert!(b.is_broken());
    b.reset();
    let ths: Vec<_> = (0..3)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || b.wait(Some(Instant::now() + LONG), || {}))
        })
        .collect();
    for t in ths {
        assert!(matches!(t.join().unwrap(), Passage::Passed(_)));
    }
}

/// Two quick releases while two waiters sleep: both units reach a sleeper (the second release
/// finds the WAITERS bit cleared by the first; the woken waiter passes the unit on). Loom found
/// the lost wake-up this guards against; here real threads hammer the same window.
#[test]
fn semaphore_back_to_back_releases_wake_both_sleepers() {
    for _ in 0..200 {
        let sem = Arc::new(RawSemaphore::new(0, None));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let s = sem.clone();
                std::thread::spawn(move || s.acquire(Some(Instant::now() + LONG)))
            })
            .collect();
        std::thread::sleep(Duration::from_micros(200));
        sem.release(1).unwrap();
        sem.release(1).unwrap();
        for t in ts {
            assert!(t.join().unwrap());
        }
    }
}
