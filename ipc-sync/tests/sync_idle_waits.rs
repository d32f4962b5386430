//! Every timed wait sleeps while it waits: one that times out uses a small fraction of its time
//! on a CPU (`common::sleeps`). A timed queue get once spun for its whole timeout (see
//! CHANGELOG.md); these tests catch that kind of bug in every primitive.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{LONG, sleeps};

use ipc_sync::{
    Barrier, BarrierError, BoundedSemaphore, Condition, Event, GetError, JoinableQueue, Lock,
    LockTimeoutError, PutError, Queue, QueueJoinError, RLock, Semaphore, SimpleQueue,
};

/// How long each wait lasts.
const WAIT: Duration = Duration::from_millis(300);

/// Holds `acquire`'s guard on another thread until the returned sender is dropped.
fn held_elsewhere<F: FnOnce(mpsc::Sender<()>, mpsc::Receiver<()>) + Send + 'static>(
    hold: F,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let holder = std::thread::spawn(move || hold(held_tx, release_rx));
    held_rx.recv().expect("the holder took the lock");
    (release_tx, holder)
}

#[test]
fn timed_lock_waits_sleep() {
    let lock = Lock::new().unwrap();
    let (release, holder) = held_elsewhere({
        let lock = lock.clone();
        move |held, release| {
            let _g = lock.acquire().unwrap();
            held.send(()).unwrap();
            let _ = release.recv();
        }
    });
    sleeps("Lock::acquire_timeout", WAIT, || {
        matches!(lock.acquire_timeout(WAIT), Err(LockTimeoutError::Timeout))
    });
    drop(release);
    holder.join().unwrap();

    let rlock = RLock::new().unwrap();
    let (release, holder) = held_elsewhere({
        let rlock = rlock.clone();
        move |held, release| {
            let _g = rlock.acquire().unwrap();
            held.send(()).unwrap();
            let _ = release.recv();
        }
    });
    sleeps("RLock::acquire_timeout", WAIT, || {
        matches!(rlock.acquire_timeout(WAIT), Err(LockTimeoutError::Timeout))
    });
    drop(release);
    holder.join().unwrap();

    let cond = Condition::new().unwrap();
    sleeps("Condition::wait_timeout", WAIT, || {
        let (_guard, notified) = cond.acquire().unwrap().wait_timeout(WAIT).unwrap();
        !notified
    });
}

#[test]
fn timed_semaphore_event_and_barrier_waits_sleep() {
    let s = Semaphore::new(0).unwrap();
    sleeps("Semaphore::acquire_timeout", WAIT, || {
        s.acquire_timeout(WAIT).is_none()
    });
    let b = BoundedSemaphore::new(1).unwrap();
    let _unit = b.acquire();
    sleeps("BoundedSemaphore::acquire_timeout", WAIT, || {
        b.acquire_timeout(WAIT).is_none()
    });
    let e = Event::new().unwrap();
    sleeps("Event::wait_timeout", WAIT, || !e.wait_timeout(WAIT));
    let barrier = Barrier::new(2).unwrap();
    sleeps("Barrier::wait_timeout", WAIT, || {
        matches!(barrier.wait_timeout(WAIT), Err(BarrierError::Timeout))
    });
}

#[test]
fn timed_queue_waits_sleep() {
    let q = Queue::<u32>::with_maxsize(1).unwrap();
    sleeps("Queue::get_timeout", WAIT, || {
        matches!(q.get_timeout(WAIT), Err(GetError::Empty))
    });
    sleeps("Queue::wait_ready", WAIT, || !q.wait_ready(Some(WAIT)));
    q.put(1).unwrap();
    sleeps("Queue::put_timeout", WAIT, || {
        matches!(q.put_timeout(2, WAIT), Err(PutError::Full(2)))
    });
    // An item put meanwhile still ends a timed get at once (here, long before its timeout).
    assert_eq!(q.get_timeout(LONG).unwrap(), 1);
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            std::thread::sleep(WAIT / 6);
            q.put(7).unwrap();
        })
    };
    assert_eq!(q.get_timeout(LONG).unwrap(), 7);
    producer.join().unwrap();
    let s = SimpleQueue::<u32>::new().unwrap();
    sleeps("SimpleQueue::get_timeout", WAIT, || {
        matches!(s.get_timeout(WAIT), Err(GetError::Empty))
    });
    let j = JoinableQueue::<u32>::new().unwrap();
    sleeps("JoinableQueue::get_timeout", WAIT, || {
        matches!(j.get_timeout(WAIT), Err(GetError::Empty))
    });
    j.put(1).unwrap();
    sleeps("JoinableQueue::join_timeout", WAIT, || {
        matches!(j.join_timeout(WAIT), Err(QueueJoinError::TimedOut))
    });
}
