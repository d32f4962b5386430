//! Queue, JoinableQueue and SimpleQueue across real processes under every start method:
//! CPython checklist items 53-59, 61, 63-67, records larger than the ring, a shared object
//! refused with a clear error, and exactly-once delivery with several producers and consumers.
//! SIGKILL tests live in `sync_queue_kill.rs`.

mod common;

use std::time::{Duration, Instant};

use common::{KillOnPanic, LONG, METHODS, Reap, builder};
use ipc_core::process::StartMethod;
use ipc_sync::{GetError, JoinableQueue, Lock, PutError, Queue, SimpleQueue};
use serde_bytes::ByteBuf;

// cpython checklist 53: Queue(maxsize=6) filled by every kind of put; then full and not empty.
#[test]
fn cpython_53_fill_a_bounded_queue() {
    let q = Queue::<u32>::with_maxsize(6).unwrap();
    assert_eq!(q.maxsize(), 6);
    q.put(1).unwrap();
    q.put_timeout(2, LONG).unwrap();
    q.put_timeout(3, Duration::from_secs(1)).unwrap();
    q.try_put(4).unwrap();
    q.try_put(5).unwrap();
    q.put(6).unwrap();
    assert!(q.is_full() && !q.is_empty());
    assert_eq!(q.len(), 6);
}

// cpython checklist 54: on a full queue the non-blocking puts fail at once, the timed ones after
// ~t; the item comes back.
#[test]
fn cpython_54_full_queue_refuses_puts() {
    let q = Queue::<String>::with_maxsize(1).unwrap();
    q.put("a".into()).unwrap();
    assert!(matches!(q.try_put("b".into()), Err(PutError::Full(s)) if s == "b"));
    assert!(matches!(q.try_put("c".into()), Err(PutError::Full(_))));
    assert!(matches!(
        q.put_timeout("d".into(), Duration::ZERO),
        Err(PutError::Full(_))
    ));
    let t1 = Instant::now();
    match q.put_timeout("e".into(), Duration::from_millis(100)) {
        Err(e) => assert_eq!(e.into_inner(), "e"),
        Ok(()) => panic!("put into a full queue succeeded"),
    }
    assert!(t1.elapsed() >= Duration::from_millis(100));
    // The three non-blocking puts above returned Full at once: one that waited on this full
    // queue (nobody gets from it) would never have returned. (An assertion that they took
    // under 100 ms, found in review, could not fail: it was or-ed with one that always held.)
    assert_eq!(q.len(), 1);
}

// cpython checklist 55, 56, 57: FIFO gets of every kind; qsize 0->1->2->1->0; on empty the
// non-blocking gets fail at once, the timed ones after >= t; drained queue: empty, not full.
// qsize and empty are exact (known bug 5: no feeder thread makes them racy, no platform lacks
// qsize).
#[test]
fn cpython_55_56_57_gets_and_sizes() {
    let q = Queue::<u64>::with_maxsize(6).unwrap();
    assert_eq!(q.len(), 0);
    q.put(1).unwrap();
    assert_eq!(q.len(), 1);
    q.put(2).unwrap();
    assert_eq!(q.len(), 2);
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.len(), 1);
    assert_eq!(q.get_timeout(Duration::from_secs(1)).unwrap(), 2);
    assert_eq!(q.len(), 0);
    for i in 3..=6 {
        q.put(i).unwrap();
    }
    assert_eq!(q.get().unwrap(), 3);
    assert_eq!(q.get_timeout(LONG).unwrap(), 4);
    assert_eq!(q.try_get().unwrap(), 5);
    assert_eq!(q.try_get().unwrap(), 6);
    assert!(matches!(q.try_get(), Err(GetError::Empty)));
    assert!(matches!(
        q.get_timeout(Duration::ZERO),
        Err(GetError::Empty)
    ));
    let t0 = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(100)),
        Err(GetError::Empty)
    ));
    assert!(t0.elapsed() >= Duration::from_millis(100));
    assert!(q.is_empty() && !q.is_full());
}

fn drain_n((q, n): (Queue<(u32, u32)>, usize)) -> Vec<(u32, u32)> {
    (0..n).map(|_| q.get_timeout(LONG).unwrap()).collect()
}

// cpython checklist 58 and 67: items put in the parent (before and while the child runs) all
// arrive once, in order, under every start method.
#[test]
fn cpython_58_67_items_reach_a_child_under_every_start_method() {
    for m in METHODS {
        let q = Queue::new().unwrap();
        for i in 0..10 {
            q.put((0, i)).unwrap();
        }
        let h = builder(m).spawn((q.clone(), 20), drain_n).unwrap();
        let _kill = KillOnPanic(vec![h.pid()]);
        for i in 10..20 {
            q.put((0, i)).unwrap();
        }
        let got = h.join().unwrap();
        assert_eq!(got, (0..20).map(|i| (0, i)).collect::<Vec<_>>(), "{m}");
        assert!(q.is_empty());
    }
}

fn worker((q, done): (JoinableQueue<u32>, Queue<u32>)) {
    while let Ok(x) = q.get_timeout(Duration::from_secs(2)) {
        if x == u32::MAX {
            q.task_done().unwrap();
            break;
        }
        done.put(x * 2).unwrap();
        q.task_done().unwrap();
    }
}

// cpython checklist 59: 4 workers call task_done; join returns once every item is done; an
// extra task_done is an error.
#[test]
fn cpython_59_joinable_queue() {
    for m in METHODS {
        let q = JoinableQueue::<u32>::new().unwrap();
        let done = Queue::<u32>::new().unwrap();
        let kids: Vec<_> = (0..4)
            .map(|_| builder(m).spawn((q.clone(), done.clone()), worker).unwrap())
            .collect();
        let _reaps: Vec<_> = kids.iter().map(Reap).collect();
        for i in 0..40 {
            q.put(i).unwrap();
        }
        assert_eq!(q.join_timeout(LONG), Ok(()), "{m}");
        assert_eq!(q.unfinished_tasks(), 0);
        let mut results: Vec<u32> = (0..40).map(|_| done.try_get().unwrap()).collect();
        results.sort();
        assert_eq!(results, (0..40).map(|i| i * 2).collect::<Vec<_>>(), "{m}");
        for _ in 0..4 {
            q.put(u32::MAX).unwrap();
        }
        q.join().unwrap();
        for k in &kids {
            assert_eq!(k.join_timeout(LONG).unwrap(), 0, "{m}");
        }
        assert!(
            q.task_done().is_err(),
            "{m}: task_done called too many times"
        );
    }
}

// cpython checklist 61 and the design's "clear error": an item that cannot be encoded (here it
// holds a shared object, which cannot travel as bytes) is refused with its error and given
// back; the queue keeps working and its maxsize accounting stays right.
#[test]
fn cpython_61_unencodable_items_leave_the_queue_intact() {
    let q = Queue::<Option<Lock>>::with_maxsize(1).unwrap();
    let lock = Lock::new().unwrap();
    match q.put(Some(lock.clone())) {
        Err(PutError::Encode(item, e)) => {
            assert!(item.is_some());
            let msg = e.to_string();
            assert!(msg.contains("shared-memory queue"), "{msg}");
        }
        other => panic!("expected an encode error, got {other:?}"),
    }
    assert!(q.is_empty());
    q.put(None).unwrap();
    assert_eq!(q.len(), 1);
    assert!(q.is_full());
    assert!(q.get().unwrap().is_none());
    assert!(q.is_empty());
    // A queue cannot go through a queue either.
    let qq = Queue::<Queue<u8>>::new().unwrap();
    assert!(matches!(
        qq.put(Queue::new().unwrap()),
        Err(PutError::Encode(..))
    ));
}

// cpython checklist 63, 64, 65: close on a never-used queue is harmless; after close, put and
// get fail with Closed (empty() keeps answering: the state is shared memory, not a pipe);
// SimpleQueue: empty across processes, FIFO, close twice is fine.
#[test]
fn cpython_63_64_65_close() {
    let unused = Queue::<u8>::new().unwrap();
    unused.close();
    assert!(unused.is_empty() && unused.is_closed());
    let q = Queue::<u8>::new().unwrap();
    let other = q.clone();
    q.put(1).unwrap();
    q.close();
    assert!(matches!(q.put(2), Err(PutError::Closed(2))));
    assert!(
        matches!(other.get(), Err(GetError::Closed)),
        "clones share the handle"
    );
    // Another process's handle is its own.
    let h = builder(StartMethod::Spawn)
        .spawn(q.clone(), |q: Queue<u8>| q.get_timeout(LONG).unwrap())
        .unwrap();
    assert_eq!(h.join().unwrap(), 1);

    let s = SimpleQueue::<String>::new().unwrap();
    assert!(s.is_empty());
    let h = builder(StartMethod::ForkServer)
        .spawn(s.clone(), |s: SimpleQueue<String>| {
            s.put("a".into()).unwrap();
            s.put("b".into()).unwrap();
        })
        .unwrap();
    h.join().unwrap();
    assert!(!s.is_empty());
    assert_eq!(s.get().unwrap(), "a");
    assert_eq!(s.get_timeout(LONG).unwrap(), "b");
    assert!(s.is_empty());
    s.close();
    s.close();
    assert!(matches!(s.get(), Err(GetError::Closed)));
}

fn to_grandchild(q: Queue<u32>) -> u32 {
    let g = builder(StartMethod::Spawn)
        .spawn(q.clone(), |q: Queue<u32>| {
            q.put(q.get_timeout(LONG).unwrap() + 1).unwrap()
        })
        .unwrap();
    g.join().unwrap();
    q.get_timeout(LONG).unwrap()
}

// cpython checklist 66: a child passes the queue it received on to a grandchild.
#[test]
fn cpython_66_queue_passes_on_to_a_grandchild() {
    for m in METHODS {
        let q = Queue::new().unwrap();
        q.put(41).unwrap();
        let h = builder(m).spawn(q.clone(), to_grandchild).unwrap();
        assert_eq!(h.join().unwrap(), 42, "{m}");
    }
}

fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

fn send_big((q, len): (Queue<ByteBuf>, usize)) -> u64 {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
    let sum = checksum(&data);
    q.put(ByteBuf::from(data)).unwrap();
    sum
}

/// A 64 MiB record streams through a 1 MiB ring, with a small record on each side of it.
#[test]
fn a_record_much_larger_than_the_ring_streams_through_it() {
    let q = Queue::<ByteBuf>::with_capacity(1 << 20, 0).unwrap();
    assert_eq!(q.capacity(), 1 << 20);
    q.put(ByteBuf::from(vec![1u8; 10])).unwrap();
    let h = builder(StartMethod::Spawn)
        .spawn((q.clone(), 64 << 20), send_big)
        .unwrap();
    let _reap = Reap(&h);
    assert_eq!(q.get_timeout(LONG).unwrap().as_ref(), &[1u8; 10]);
    let big = q.get_timeout(LONG).unwrap();
    assert_eq!(big.len(), 64 << 20);
    assert_eq!(h.join_timeout(LONG).unwrap(), 0);
    let data: Vec<u8> = (0..64usize << 20)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    assert_eq!(checksum(&big), checksum(&data));
    assert!(q.is_empty());
}

fn produce((q, id, n): (Queue<(u32, u64)>, u32, u64)) {
    for i in 0..n {
        q.put((id, i)).unwrap();
    }
}

fn consume((q, n): (Queue<(u32, u64)>, u64)) -> (u64, u64, bool) {
    // Per-producer order must hold within one consumer's stream of items.
    let mut last = [None::<u64>; 4];
    let (mut count, mut sum, mut ordered) = (0u64, 0u64, true);
    for _ in 0..n {
        let (id, i) = q.get_timeout(LONG).unwrap();
        let slot = &mut last[id as usize];
        ordered &= slot.is_none_or(|l| l < i);
        *slot = Some(i);
        count += 1;
        sum = sum.wrapping_add(u64::from(id) << 32 | i);
    }
    (count, sum, ordered)
}

/// 4 producers x 4 consumers x 100 000 items each: counts and checksums exact.
#[test]
fn exactly_once_four_by_four() {
    // 100 000 items per producer, as the issue asks (about half a second in a debug build).
    let n: u64 = 100_000;
    let q = Queue::<(u32, u64)>::with_capacity(64 << 10, 0).unwrap();
    let producers: Vec<_> = (0..4)
        .map(|id| {
            builder(StartMethod::ForkServer)
                .spawn((q.clone(), id, n), produce)
                .unwrap()
        })
        .collect();
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            builder(StartMethod::ForkServer)
                .spawn((q.clone(), n), consume)
                .unwrap()
        })
        .collect();
    let pids = producers.iter().map(|h| h.pid());
    let _kill = KillOnPanic(pids.chain(consumers.iter().map(|h| h.pid())).collect());
    for p in producers {
        p.join().unwrap();
    }
    let mut total = (0u64, 0u64);
    for c in consumers {
        let (count, sum, ordered) = c.join().unwrap();
        assert!(ordered, "per-producer FIFO order within a consumer");
        total = (total.0 + count, total.1.wrapping_add(sum));
    }
    let expect: u64 = (0..4u64)
        .flat_map(|id| (0..n).map(move |i| id << 32 | i))
        .fold(0, u64::wrapping_add);
    assert_eq!(total, (4 * n, expect));
    assert!(q.is_empty());
}

fn get_until_shutdown(q: JoinableQueue<u32>) -> (Vec<u32>, bool) {
    let mut got = Vec::new();
    loop {
        match q.get_timeout(LONG) {
            Ok(x) => {
                got.push(x);
                q.task_done().unwrap();
            }
            Err(GetError::ShutDown) => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

// cpython checklist 68 and known bug 21 (CPython PR #138828): shutdown(immediate=False) drains then reports
// ShutDown; immediate=True discards the items, releases join(), and an extra task_done is an
// error. Blocked getters in other processes wake up.
#[test]
fn cpython_68_shutdown() {
    for m in METHODS {
        let q = JoinableQueue::<u32>::new().unwrap();
        let h = builder(m).spawn(q.clone(), get_until_shutdown).unwrap();
        let _kill = KillOnPanic(vec![h.pid()]);
        q.put(1).unwrap();
        q.put(2).unwrap();
        q.join().unwrap();
        // The child now blocks in get; a shutdown wakes it.
        q.shutdown(false);
        assert_eq!(h.join().unwrap(), (vec![1, 2], true), "{m}");
        assert!(matches!(q.put(3), Err(PutError::ShutDown(3))));
    }
    // Draining: what is in the queue is still delivered after shutdown(false).
    let q = Queue::<u32>::new().unwrap();
    q.put(7).unwrap();
    q.shutdown(false);
    assert!(q.is_shut_down());
    assert_eq!(q.get().unwrap(), 7);
    assert!(matches!(q.get(), Err(GetError::ShutDown)));
    // Immediate: discarded, join released, extra task_done refused.
    let j = JoinableQueue::<u32>::new().unwrap();
    for i in 0..3 {
        j.put(i).unwrap();
    }
    let taken = j.get().unwrap();
    j.shutdown(true);
    assert!(matches!(j.try_get(), Err(GetError::ShutDown)));
    assert_eq!(
        (j.len(), j.unfinished_tasks()),
        (0, 1),
        "only the taken item is unfinished"
    );
    assert_eq!(
        j.join_timeout(Duration::from_millis(20)),
        Err(ipc_sync::QueueJoinError::TimedOut)
    );
    assert_eq!(taken, 0);
    j.task_done().unwrap();
    j.join().unwrap();
    assert!(j.task_done().is_err());
}

/// A peer that uses another item type: the record is taken and reported as undecodable, and
/// the queue goes on working.
#[test]
fn a_record_of_another_type_is_a_decode_error() {
    let q = Queue::<Vec<u64>>::new().unwrap();
    q.put(vec![u64::MAX; 3]).unwrap();
    q.put(vec![]).unwrap();
    let mut buf = Vec::new();
    let fds = ipc_core::codec::encode(&q, &mut buf).unwrap();
    let other: Queue<String> = ipc_core::codec::decode(&buf, fds).unwrap();
    match other.try_get() {
        Err(GetError::Decode(e)) => assert!(!e.to_string().is_empty()),
        other => panic!("expected a decode error, got {other:?}"),
    }
    // An empty Vec<u64> encodes as the empty string's bytes: it decodes fine.
    assert_eq!(other.try_get().unwrap(), "");
    assert!(q.is_empty());
}

fn put_and_leave((q, n, len): (Queue<ByteBuf>, u32, usize)) -> u32 {
    for i in 0..n {
        q.put(ByteBuf::from(vec![i as u8; len])).unwrap();
    }
    n
}

// Known bug 3 (CPython gh-73983): a Python child that put more than a pipe buffer (64 KiB) on a
// Queue cannot exit until the items are read (its feeder thread still flushes), so joining it
// before draining deadlocks. Here a put returns once its record is in the shared ring: the child
// exits at once, the parent joins it first and then drains every item.
#[test]
fn a_producer_exits_before_its_items_are_read() {
    for m in METHODS {
        let q: Queue<ByteBuf> = Queue::new().unwrap();
        // 256 KiB in 256 items: four pipe buffers' worth, well inside the 1 MiB ring.
        let h = builder(m)
            .spawn((q.clone(), 256, 1024), put_and_leave)
            .unwrap();
        let _reap = Reap(&h);
        assert_eq!(h.join_timeout(LONG).unwrap(), 0, "{m}: joined first");
        drop(_reap);
        assert_eq!(h.join().unwrap(), 256);
        for i in 0..256u32 {
            let item = q.try_get().unwrap();
            assert_eq!(item.as_slice(), &[i as u8; 1024][..], "{m}");
        }
        assert!(q.is_empty(), "{m}");
    }
}

const STOP: u64 = u64::MAX;

/// A consumer that sleeps in `wait_ready` and takes with `try_get` (as a pool's collector
/// does), or, with `plain`, one that blocks in `get`; until it takes a `STOP`.
fn consume_ready((q, plain): (Queue<u64>, bool)) -> (u64, u64) {
    let (mut count, mut sum) = (0u64, 0u64);
    loop {
        let item = if plain {
            q.get_timeout(LONG).unwrap()
        } else {
            assert!(q.wait_ready(Some(LONG)), "wait_ready timed out");
            match q.try_get() {
                Ok(i) => i,
                Err(GetError::Empty) => continue,
                Err(e) => panic!("{e}"),
            }
        };
        if item == STOP {
            return (count, sum);
        }
        count += 1;
        sum = sum.wrapping_add(item);
    }
}

/// Sleepers in `wait_ready` beside a sleeper in `get`, in other processes: every item is
/// taken exactly once and nobody stays asleep beside an item (the handshake with several
/// sleepers, see the ring's `wait_ready`).
#[test]
fn wait_ready_sleepers_beside_a_blocked_get() {
    let q = Queue::<u64>::with_capacity(4096, 0).unwrap();
    let consumers: Vec<_> = [false, false, true]
        .into_iter()
        .map(|plain| {
            builder(StartMethod::ForkServer)
                .spawn((q.clone(), plain), consume_ready)
                .unwrap()
        })
        .collect();
    let _kill = KillOnPanic(consumers.iter().map(|h| h.pid()).collect());
    let n = 20_000u64;
    for i in 0..n {
        q.put(i).unwrap();
        if i % 1000 == 0 {
            // Let the consumers fall asleep now and then.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    for _ in &consumers {
        q.put(STOP).unwrap();
    }
    let mut total = (0u64, 0u64);
    for c in consumers {
        let (count, sum) = c.join().unwrap();
        total = (total.0 + count, total.1.wrapping_add(sum));
    }
    assert_eq!(total, (n, (0..n).sum::<u64>()));
    // A shut queue ends a wait at once.
    q.shutdown(false);
    let t0 = Instant::now();
    assert!(q.wait_ready(None));
    assert!(t0.elapsed() < LONG);
}

/// Sleeps in `wait_ready` (no limit) and says how it returned.
fn wait_ready_once(q: Queue<u64>) -> bool {
    q.wait_ready(None)
}

/// A sleeper in `wait_ready` returns when a put wakes it, even if another consumer took the
/// item before it looked. Before, it slept on, to be woken by every such put and never return
/// (a pool's collector was woken by every result its caller took itself).
#[test]
fn wait_ready_returns_when_woken_even_if_the_item_is_gone() {
    let q = Queue::<u64>::new().unwrap();
    let h = builder(StartMethod::ForkServer)
        .spawn(q.clone(), wait_ready_once)
        .unwrap();
    let _reap = Reap(&h);
    // Long enough for the child to be asleep (its spin lasts microseconds).
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..3u64 {
        q.put(i).unwrap();
        // Taken long before the woken child can look.
        assert_eq!(q.try_get().unwrap(), i);
    }
    assert_eq!(h.join_timeout(LONG).unwrap(), 0, "still asleep");
    drop(_reap);
    assert!(h.join().unwrap());
}
