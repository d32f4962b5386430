//! Every shared object travels to another process through a `Connection` (by descriptor) and
//! works there, under every start method; the child also forwards them to a grandchild. With the
//! many tests that pass shared objects as `spawn` arguments, this shows we do not repeat known
//! bug 19 (CPython: locks and queues "should only be shared through inheritance").

mod common;

use std::time::Duration;

use common::{LONG, METHODS, builder};
use ipc_core::conn::{Connection, pipe};
use ipc_core::process::StartMethod;
use ipc_sync::{
    Array, AtomicValue, Barrier, BoundedSemaphore, Condition, Event, JoinableQueue, Lock, RLock,
    Semaphore, SimpleQueue, Value,
};

type Locks = (Lock, RLock, Semaphore, BoundedSemaphore, Condition);
type Signals = (Event, Barrier);
type Data = (Value<u64>, AtomicValue<i32>, Array<u16>);
type Queues = (
    ipc_sync::Queue<String>,
    JoinableQueue<u8>,
    SimpleQueue<(u8, u8)>,
);
type All = (Locks, Signals, Data, Queues);

fn use_everything(all: All) {
    let ((lock, rlock, sem, bsem, cond), (ev, barrier), (v, a, arr), (q, jq, sq)) = all;
    lock.release().unwrap(); // Held by the parent: any process may release a Lock.
    drop(rlock.acquire_timeout(LONG).unwrap());
    sem.release().unwrap();
    bsem.acquire().forget();
    cond.acquire().unwrap().notify_all();
    v.update(|x| *x += 1);
    a.fetch_add(5);
    arr.set(2, 9).unwrap();
    q.put("from afar".into()).unwrap();
    jq.put(3).unwrap();
    sq.put((1, 2)).unwrap();
    assert!(barrier.wait_timeout(LONG).is_ok());
    ev.set();
}

fn receive_and_use(conn: Connection) {
    let all: All = conn.recv().unwrap();
    use_everything(all);
}

fn forward(conn: Connection) {
    let all: All = conn.recv().unwrap();
    let (a, b) = pipe(true).unwrap();
    let g = builder(StartMethod::Spawn)
        .spawn(b, receive_and_use)
        .unwrap();
    a.send(&all).unwrap();
    g.join().unwrap();
}

#[test]
fn every_object_travels_through_a_connection() {
    for m in METHODS {
        for hop in [receive_and_use as fn(Connection), forward] {
            let locks: Locks = (
                Lock::new().unwrap(),
                RLock::new().unwrap(),
                Semaphore::new(0).unwrap(),
                BoundedSemaphore::new(1).unwrap(),
                Condition::new().unwrap(),
            );
            let signals: Signals = (Event::new().unwrap(), Barrier::new(2).unwrap());
            let data: Data = (
                Value::new(1).unwrap(),
                AtomicValue::new(-5).unwrap(),
                Array::new(4).unwrap(),
            );
            let queues: Queues = (
                ipc_sync::Queue::new().unwrap(),
                JoinableQueue::new().unwrap(),
                SimpleQueue::new().unwrap(),
            );
            locks.0.acquire().unwrap().leak();
            let all: All = (locks, signals, data, queues);
            let (a, b) = pipe(true).unwrap();
            let h = builder(m).spawn(b, hop).unwrap();
            let _kill = common::KillOnPanic(vec![h.pid()]);
            a.send(&all).unwrap();
            let ((lock, _rlock, sem, bsem, _cond), (ev, barrier), (v, at, arr), (q, jq, sq)) = all;
            assert!(barrier.wait_timeout(LONG).is_ok(), "{m}");
            assert!(ev.wait_timeout(LONG), "{m}");
            h.join().unwrap();
            assert!(!lock.locked(), "{m}");
            assert!(sem.acquire_timeout(Duration::ZERO).is_some());
            assert_eq!(bsem.value(), 0);
            assert_eq!((v.get(), at.load(), arr.get(2)), (2, 0, Some(9)));
            assert_eq!(q.get_nowait().unwrap(), "from afar");
            assert_eq!(jq.get_nowait().unwrap(), 3);
            assert_eq!(sq.get().unwrap(), (1, 2));
        }
    }
}
