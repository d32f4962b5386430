//! Queues survive producers and consumers killed by SIGKILL at random points, many times:
//! nothing committed is lost, nothing is delivered twice, nothing partial is delivered, and a
//! killed consumer loses at most the record it was taking. Records of every size are mixed in,
//! including ones streamed through the (small) ring in chunks, so kills land mid-stream too.
//! These prove we do not repeat known bug 4 (CPython: killing a process while it uses a Queue
//! corrupts it for everyone).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{KillOnPanic, LONG, METHODS, builder};
use ipc_sync::{AtomicValue, GetError, Queue};
use serde_bytes::ByteBuf;

type Item = (u64, ByteBuf);

/// Sizes cycle through tiny, small, medium and (for a 16 KiB ring) streamed records.
fn item(seq: u64) -> Item {
    let len = [0usize, 40, 900, 3000, 9000, 20000][(seq % 6) as usize];
    let bytes: Vec<u8> = (0..len)
        .map(|k| (seq as usize).wrapping_mul(31).wrapping_add(k) as u8)
        .collect();
    (seq, ByteBuf::from(bytes))
}

fn intact(it: &Item) -> bool {
    it == &item(it.0)
}

/// A small xorshift generator; the seed is printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        println!("random seed {seed}");
        Rng(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn endless_producer((q, start): (Queue<Item>, u64)) {
    let mut seq = start;
    loop {
        q.put(item(seq)).unwrap();
        seq += 1;
    }
}

const ROUND: u64 = 1 << 32;
const END: u64 = u64::MAX;

#[test]
fn producers_killed_at_random_points_lose_nothing_committed() {
    let q = Queue::<Item>::with_capacity(16 << 10, 0).unwrap();
    let reader = {
        let q = q.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                let it = q.get_timeout(LONG).expect("the queue keeps working");
                assert!(intact(&it), "record {} arrived damaged", it.0);
                if it.0 == END {
                    return got;
                }
                got.push(it.0);
            }
        })
    };
    let mut rng = Rng::new();
    let rounds = 30;
    for r in 0..rounds {
        let m = METHODS[r % 3];
        let h = builder(m)
            .spawn((q.clone(), r as u64 * ROUND), endless_producer)
            .unwrap();
        let _kill = KillOnPanic(vec![h.pid()]);
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(30_000)));
        h.kill().unwrap();
        assert_eq!(h.join_timeout(LONG).unwrap(), -9, "{m}");
    }
    // A last producer takes over the (possibly dead-held) producer lock and ends the test.
    let end = builder(METHODS[0])
        .spawn(q.clone(), |q: Queue<Item>| q.put(item(END)).unwrap())
        .unwrap();
    end.join().unwrap();
    let got = reader.join().unwrap();
    // Each round's records arrive once, in order, without a gap: only the record in flight at
    // the kill (never committed) is missing, and it was the last of its round.
    println!("records received from 30 killed producers: {}", got.len());
    let mut expect_round = 0;
    let mut next = 0;
    for seq in got {
        let (round, i) = (seq / ROUND, seq % ROUND);
        if round != expect_round {
            assert!(round > expect_round, "rounds arrive in order");
            expect_round = round;
            next = 0;
        }
        assert_eq!(i, next, "round {round}: a gap or a duplicate");
        next += 1;
    }
    assert!(q.is_empty());
}

fn reporting_consumer((q, next, bad): (Queue<Item>, AtomicValue<u64>, AtomicValue<u32>)) {
    loop {
        let it = match q.get_timeout(LONG) {
            Ok(it) => it,
            Err(_) => return,
        };
        if !intact(&it) || it.0 != next.load() {
            bad.fetch_add(1);
        }
        next.store(it.0 + 1);
    }
}

#[test]
fn consumers_killed_at_random_points_lose_at_most_the_record_in_hand() {
    let q = Queue::<Item>::with_capacity(16 << 10, 0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (q, stop) = (q.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                if q.put_timeout(item(seq), Duration::from_millis(50)).is_ok() {
                    seq += 1;
                }
            }
        })
    };
    let next = AtomicValue::new(0u64).unwrap();
    let bad = AtomicValue::new(0u32).unwrap();
    let mut rng = Rng::new();
    let mut lost = 0;
    for r in 0..24 {
        let m = METHODS[r % 3];
        let h = builder(m)
            .spawn((q.clone(), next.clone(), bad.clone()), reporting_consumer)
            .unwrap();
        let _kill = KillOnPanic(vec![h.pid()]);
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(30_000)));
        h.kill().unwrap();
        assert_eq!(h.join_timeout(LONG).unwrap(), -9, "{m}");
        // The next record we get is the one after the last the child reported, or the one
        // after that if the child died holding a record it had taken.
        let expected = next.load();
        let it = q.get_timeout(LONG).expect("the queue keeps working");
        assert!(intact(&it));
        assert!(
            it.0 == expected || it.0 == expected + 1,
            "round {r} ({m}): got {} after {expected}",
            it.0
        );
        lost += it.0 - expected;
        next.store(it.0 + 1);
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    assert_eq!(
        bad.load(),
        0,
        "a consumer saw a damaged, duplicated or out-of-order record"
    );
    // Drain: the rest is contiguous.
    let mut expected = next.load();
    loop {
        match q.try_get() {
            Ok(it) => {
                assert_eq!(it.0, expected);
                expected += 1;
            }
            Err(GetError::Empty) => break,
            Err(e) => panic!("{e}"),
        }
    }
    println!("records lost with their killed consumer: {lost} of 24 kills");
}

/// Takes `n` items, marks the first one done, tells the parent, and waits to be killed.
fn take_and_die((q, n, told): (ipc_sync::JoinableQueue<u32>, u32, ipc_sync::Event)) {
    for _ in 0..n {
        q.get().unwrap();
    }
    q.task_done().unwrap();
    told.set();
    std::thread::sleep(std::time::Duration::from_secs(60));
}

// Issue #11, window 2: JoinableQueue::join waited forever when a consumer died owing task_done.
// Now join reports the items that can never be done (and who owed them), writes them off, and
// a later join returns at once; work marked done by another process than its taker still
// counts.
#[test]
fn join_reports_work_owed_by_a_dead_consumer() {
    for m in METHODS {
        let q = ipc_sync::JoinableQueue::<u32>::new().unwrap();
        for i in 0..3 {
            q.put(i).unwrap();
        }
        let told = ipc_sync::Event::new().unwrap();
        let h = builder(m)
            .spawn((q.clone(), 3, told.clone()), take_and_die)
            .unwrap();
        let _reap = common::Reap(&h);
        assert!(
            told.wait_timeout(LONG),
            "{m}: the consumer never took its items"
        );
        // Another process finishes one of the dead consumer's items for it.
        q.task_done().unwrap();
        h.kill().unwrap();
        assert_eq!(h.join_timeout(LONG).unwrap(), -9);
        let pid = h.pid();
        drop(_reap);
        assert_eq!(
            q.join_timeout(LONG),
            Err(ipc_sync::QueueJoinError::Abandoned {
                tasks: 1,
                pids: vec![pid]
            }),
            "{m}"
        );
        assert_eq!(q.unfinished_tasks(), 0);
        assert_eq!(q.join_timeout(std::time::Duration::ZERO), Ok(()), "{m}");
    }
}
