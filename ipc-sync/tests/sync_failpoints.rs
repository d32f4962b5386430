//! Deaths at a precise step of a primitive's protocol, reproduced with failpoints
//! (ipc-sync's `--features failpoints`, which `cargo xtask test` turns on): a random kill would hit these
//! few instructions once in millions of runs.
#![cfg(feature = "failpoints")]

mod common;

use std::time::{Duration, Instant};

use common::{LONG, METHODS, Reap, builder};
use ipc_core::process::StartMethod;
use ipc_sync::{Event, Queue};

/// Puts `item` with the failpoint armed: killed after the item is committed, before the
/// consumer's wake-up.
fn put_and_die((q, item): (Queue<u32>, u32)) {
    ipc_core::failpoint::arm("queue.wake.announced");
    let _ = q.put(item);
    unreachable!("the failpoint kills this process");
}

fn put_one((q, item): (Queue<u32>, u32)) {
    q.put(item).unwrap();
}

/// A consumer thread taking two items with untimed gets (each sent on `got` as it arrives),
/// returned once it is seen asleep in its futex wait.
fn sleeping_consumer(
    q: &Queue<u32>,
) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Receiver<u32>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (got, items) = std::sync::mpsc::channel();
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || {
            tx.send(common::current_tid()).unwrap();
            for _ in 0..2 {
                got.send(q.get().unwrap()).unwrap();
            }
        })
    };
    let tid = rx.recv().unwrap();
    let deadline = Instant::now() + LONG;
    while common::blocked_in(ipc_core::process::pid(), tid) != Some(common::SYS_FUTEX) {
        assert!(Instant::now() < deadline, "the consumer never slept");
        std::thread::sleep(Duration::from_millis(1));
    }
    (consumer, items)
}

/// The window itself, set up: a consumer asleep in an untimed get, and a producer (started by
/// `m`) killed after committing `item` and before waking it; the item is in the queue.
fn strand_an_item(
    m: StartMethod,
    item: u32,
) -> (
    Queue<u32>,
    std::thread::JoinHandle<()>,
    std::sync::mpsc::Receiver<u32>,
) {
    let q = Queue::<u32>::new().unwrap();
    let (consumer, items) = sleeping_consumer(&q);
    let h = builder(m).spawn((q.clone(), item), put_and_die).unwrap();
    let _reap = Reap(&h);
    assert_eq!(h.join_timeout(LONG).unwrap(), -9, "{m}");
    assert_eq!(q.len(), 1, "{m}: the item was committed");
    (q, consumer, items)
}

// Issue #11, window 1: a producer SIGKILLed after committing its item and seeing the consumer's
// announcement, before waking it. The publisher cleared the announcement before waking, so the
// consumer slept beside the item even through later puts. Now the announcement is cleared only
// after the wake: the next put, by anybody, wakes the consumer, which gets both items.
#[test]
fn a_producer_killed_before_its_wake_is_repaired_by_the_next_put() {
    for m in METHODS {
        let (q, consumer, items) = strand_an_item(m, 1);
        let other = builder(m).spawn((q.clone(), 2), put_one).unwrap();
        assert_eq!(other.join_timeout(LONG).unwrap(), 0);
        let got: Vec<u32> = (0..2)
            .map(|_| {
                items
                    .recv_timeout(LONG)
                    .unwrap_or_else(|_| panic!("{m}: the consumer slept through the next put"))
            })
            .collect();
        assert_eq!(got, [1, 2], "{m}");
        consumer.join().unwrap();
    }
}

// The same death with no later put: the consumer sleeps beside the committed item until
// whoever learns of the death (here the parent that reaped the producer, in a pool its
// supervisor) calls wake_waiters.
#[test]
fn wake_waiters_repairs_a_death_with_no_later_put() {
    for m in METHODS {
        let (q, consumer, items) = strand_an_item(m, 7);
        // The window itself: the item is there and nobody woke the consumer.
        assert!(
            items.recv_timeout(Duration::from_millis(300)).is_err(),
            "{m}: the consumer was woken after all"
        );
        q.wake_waiters();
        assert_eq!(items.recv_timeout(LONG), Ok(7), "{m}");
        q.put(8).unwrap();
        assert_eq!(items.recv_timeout(LONG), Ok(8), "{m}");
        consumer.join().unwrap();
    }
}

fn set_and_die(ev: Event) {
    ipc_core::failpoint::arm("event.set.before_wake");
    ev.set();
    unreachable!("the failpoint kills this process");
}

// Found by `cargo xtask chaos` (scenario event): a setter SIGKILLed after setting the flag and
// before its wake left untimed waiters asleep beside a set event for good. Waiters now sleep in
// slices and look at the flag between them.
#[test]
fn a_setter_killed_before_its_wake_still_releases_the_waiters() {
    for m in METHODS {
        let ev = Event::new().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done, finished) = std::sync::mpsc::channel();
        let waiter = {
            let ev = ev.clone();
            std::thread::spawn(move || {
                tx.send(common::current_tid()).unwrap();
                ev.wait();
                done.send(()).unwrap();
            })
        };
        let tid = rx.recv().unwrap();
        let deadline = Instant::now() + LONG;
        while common::blocked_in(ipc_core::process::pid(), tid) != Some(common::SYS_FUTEX) {
            assert!(Instant::now() < deadline, "the waiter never slept");
            std::thread::sleep(Duration::from_millis(1));
        }
        let h = builder(m).spawn(ev.clone(), set_and_die).unwrap();
        let _reap = Reap(&h);
        assert_eq!(h.join_timeout(LONG).unwrap(), -9, "{m}");
        assert!(ev.is_set(), "{m}: the flag was set before the death");
        assert!(
            finished.recv_timeout(LONG).is_ok(),
            "{m}: the waiter slept on beside a set event"
        );
        waiter.join().unwrap();
    }
}
