//! A queue whose shared words and bytes a hostile (or broken) process overwrote: the consumer
//! refuses what it finds, quickly and within the ring, and the queue works again afterwards.
//! Each case is something `cargo xtask chaos` found (its fuzzer's target `queue-ring`, or a
//! scenario); the queue's `__scribble` (test support, `failpoints` feature) writes the memory
//! as such a peer would.
#![cfg(feature = "failpoints")]

use std::time::{Duration, Instant};

use ipc_sync::{GetError, Queue};

const POS_BITS: u32 = 40;

fn word(records: u64, pos: u64) -> u64 {
    (records << POS_BITS) | pos
}

/// A 4 KiB queue, the fuzzer's.
fn queue() -> Queue<String> {
    Queue::with_capacity(4096, 0).unwrap()
}

/// After the peer's damage: a get returns at once, and the queue carries items again.
fn recovers(q: &Queue<String>) {
    let start = Instant::now();
    let r = q.try_get();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "a get over garbage took {:?}",
        start.elapsed()
    );
    assert!(
        matches!(r, Err(GetError::Empty) | Err(GetError::Decode(_))),
        "{r:?}"
    );
    while q.try_get().is_ok() {}
    q.put("after".to_string()).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), "after");
}

// The fuzzer's first find: a frame header claiming 0x78787878 bytes under a tail word far
// ahead. The consumer checked the frame against the published span only, not the ring, and
// copied a ring's worth and more out of the mapping (SIGSEGV).
#[test]
fn a_frame_longer_than_the_ring_is_dropped_not_read() {
    let q = queue();
    let mut data = vec![0x78u8; 4096];
    data[..4].copy_from_slice(&0x7878_7878u32.to_le_bytes());
    data[4..8].copy_from_slice(&3u32.to_le_bytes()); // FIRST | LAST
    q.__scribble(0, word(1, 1 << 35), &data);
    recovers(&q);
}

// The second: a tail word more than a ring ahead of the head, over frames of 8 bytes. The
// consumer walked the whole claimed span frame by frame: 2^37 steps, a hang.
#[test]
fn a_tail_more_than_a_ring_ahead_is_dropped_at_once() {
    let q = queue();
    q.__scribble(0, word(5, (1 << 40) - 8), &[0u8; 4096]);
    recovers(&q);
}

// And the honest case next to them: a ring written by a real producer reads back.
#[test]
fn an_honest_ring_reads_back() {
    let q = queue();
    q.put("one".to_string()).unwrap();
    q.put("two".to_string()).unwrap();
    let (head, tail, data) = q.__snapshot();
    let copy = queue();
    copy.__scribble(head, tail, &data);
    assert_eq!(copy.try_get().unwrap(), "one");
    assert_eq!(copy.try_get().unwrap(), "two");
    assert!(matches!(copy.try_get(), Err(GetError::Empty)));
}

/// A frame as a producer writes it: length, flags, payload, padding to 8 bytes.
fn frame(payload: &[u8], flags: u32) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend(flags.to_le_bytes());
    f.extend(payload);
    f.resize(f.len().div_ceil(8) * 8, 0);
    f
}

// Found by `cargo xtask chaos` (queue-producer): a consumer in the middle of a streamed record
// found the ring dry, then found the producer gone, and dropped the record, though the
// producer had published its LAST chunk (and committed the record) between those two looks;
// the LAST chunk was then skipped as a remnant and the record lost. The consumer now reads what
// was published before it gives a record up. The window is held open with a pause failpoint;
// the producer's lock is free throughout, as after a producer that finished and left.
#[test]
fn a_record_finished_while_the_consumer_looked_away_is_delivered() {
    let q = Queue::<Vec<u8>>::with_capacity(4096, 0).unwrap();
    let record = postcard::to_allocvec(&vec![7u8; 100]).unwrap();
    let (a, b) = record.split_at(50);
    let (first, last) = (frame(a, 1), frame(b, 2));
    q.__scribble(0, word(0, first.len() as u64), &first);
    ipc_core::failpoint::arm_pause("queue.get.dry", Duration::from_millis(500));
    let (tx, rx) = std::sync::mpsc::channel();
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || tx.send(q.get_timeout(Duration::from_secs(5))).unwrap())
    };
    // The consumer took FIRST, found the ring dry and pauses: publish LAST now.
    std::thread::sleep(Duration::from_millis(200));
    let both: Vec<u8> = first.iter().chain(&last).copied().collect();
    q.__scribble(
        word(0, first.len() as u64),
        word(1, both.len() as u64),
        &both,
    );
    let got = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    consumer.join().unwrap();
    assert_eq!(
        got.unwrap(),
        vec![7u8; 100],
        "the finished record was dropped"
    );
}
