//! A queue whose shared words and bytes a hostile (or broken) process overwrote: the consumer
//! refuses what it finds, quickly and within the ring, and the queue works again afterwards.
//! Each case is an input the fuzzer of `cargo xtask chaos` found (target `queue-ring`); the
//! queue's `__scribble` (test support, `failpoints` feature) writes the memory as such a peer.
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
