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
    let (a, b) = pipe().unwrap();
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
            let (a, b) = pipe().unwrap();
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
            assert_eq!(q.try_get().unwrap(), "from afar");
            assert_eq!(jq.try_get().unwrap(), 3);
            assert_eq!(sq.get().unwrap(), (1, 2));
        }
    }
}

/// What a process in a new pid namespace made of shared objects crossing into or out of it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum AcrossNamespaces {
    /// `unshare(CLONE_NEWPID)` was refused (not root): nothing was tested.
    Skipped(String),
    /// What a fork into the new namespace gave, and the grandchild's report.
    Ran {
        fork: String,
        grandchild: (u32, String),
    },
}

/// In a forked child: enter a new pid namespace, try to fork into it (refused), and spawn a
/// grandchild into it (its pid 1), which gets the parent's held lock on `conn`.
fn cross_pid_namespaces(conn: Connection) -> AcrossNamespaces {
    // SAFETY: CLONE_NEWPID changes only where later children go; this process's own memory,
    // descriptors and threads (it has one) are untouched, so nothing of Rust's is invalidated.
    if let Err(e) = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWPID) }
    {
        return AcrossNamespaces::Skipped(format!("unshare(CLONE_NEWPID): {e}"));
    }
    let fork = match ipc_core::process::Builder::new()
        .start_method(StartMethod::Fork)
        .fork(|| 1u8)
    {
        Ok(h) => format!("forked: {:?}", h.join()),
        Err(e) => format!("refused: {e}"),
    };
    let grandchild = ipc_core::process::Builder::new()
        .start_method(StartMethod::Spawn)
        .spawn(conn, in_the_new_namespace)
        .and_then(|h| h.join().map_err(|e| ipc_core::Error::Misuse(e.to_string())))
        .unwrap_or_else(|e| (0, format!("spawn failed: {e}")));
    AcrossNamespaces::Ran { fork, grandchild }
}

/// The grandchild, first process of its pid namespace: receives the parent's lock, then sends
/// one of its own, held, the other way. Returns its pid and what receiving gave.
fn in_the_new_namespace(conn: Connection) -> (u32, String) {
    let received = match conn.recv::<Lock>() {
        // Before the fix: the parent's pid is invisible here, so its live holder looked dead and
        // the lock was taken over.
        Ok(lock) => {
            let taken = !matches!(lock.try_acquire(), Err(ipc_sync::TryLockError::WouldBlock));
            format!("accepted; taken over from its live holder: {taken}")
        }
        Err(e) => format!("refused: {e}"),
    };
    let mine = Lock::new().unwrap();
    let _held = mine.acquire().unwrap();
    conn.send(&mine).unwrap();
    // Hold the lock until the parent has looked at it.
    let _ = conn.recv::<()>();
    (ipc_core::process::pid(), received)
}

// Review finding 3: a live holder in another pid namespace looks dead (its pid means no one
// there), so a lock crossing namespaces would be granted twice, and a Value's &mut T with it.
// Shared objects refuse to cross, both ways, and fork into another namespace is refused.
#[test]
fn shared_objects_refuse_to_cross_a_pid_namespace() {
    let (parent, child) = pipe().unwrap();
    let lock = Lock::new().unwrap();
    let _held = lock.acquire().unwrap();
    let h = builder(StartMethod::Fork)
        .fork(move || cross_pid_namespaces(child))
        .unwrap();
    let _reap = common::Reap(&h);
    parent.send(&lock).unwrap();
    // The grandchild's lock coming the other way (or the end of the connection, if skipped).
    let theirs = match parent.poll(Some(LONG)).unwrap() {
        true => parent.recv::<Lock>().map(|l| l.locked()),
        false => panic!("nothing came back from the new pid namespace"),
    };
    let _ = parent.send(&());
    drop(_reap);
    match h.join().unwrap() {
        AcrossNamespaces::Skipped(why) => {
            eprintln!("skipped: this process may not create a pid namespace ({why})");
        }
        AcrossNamespaces::Ran { fork, grandchild } => {
            assert!(
                fork.starts_with("refused") && fork.contains("pid namespace"),
                "{fork}"
            );
            let (pid, received) = grandchild;
            assert_eq!(
                pid, 1,
                "the grandchild is its namespace's first process: {received}"
            );
            assert!(
                received.starts_with("refused") && received.contains("pid namespace"),
                "{received}"
            );
            let err = theirs.expect_err("a lock from another pid namespace was accepted");
            assert!(err.to_string().contains("pid namespace"), "{err}");
        }
    }
}
