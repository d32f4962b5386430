//! The byte ring under every queue: framed records in shared memory, robust to SIGKILL.
//!
//! # Design
//! A single-producer single-consumer ring (Lamport's SPSC queue: the producer owns `tail`, the
//! consumer owns `head`) made multi-producer multi-consumer by two robust [`RawLock`]s, as
//! CPython serialises its pipe ends with `_wlock` and `_rlock`: one producer at a time writes
//! one record (`wlock`), one consumer at a time reads one (`rlock`), and a producer and a
//! consumer work at the same time, which is what lets a record larger than the ring stream
//! through it.
//!
//! # Shared-memory layout
//! ```text
//! RingHeader (#[repr(C, align(64))], 192 bytes, all-zero = empty, unbounded, open)
//! line 0, written by producers:  | wlock | get_waiters | not_empty | producer_cpu | tail | head_seen | pad |
//! line 1, written by consumers:  | rlock | put_waiters | not_full  | consumer_cpu | head | tail_seen | pad |
//! line 2, rarely written:        | maxsize (0 = unbounded) | shutdown (0 open, 1 draining,
//!                                  2 immediate) | done | join_waiters | pad |
//! tail, head: u64 = records << 40 | position (published by the wlock / rlock holder)
//! head_seen, tail_seen: the other side's word as this side last read it (never ahead of it)
//! data: ShmSlice<u8>, capacity a power of two; positions count bytes modulo 2^40
//! frame at an 8-aligned position: | len: u32 | flags: u32 | payload (len) | pad to 8 |
//! per process, not shared: how far its page tables cover the data, as writer and as reader
//! (`Warm`: populated 64 KiB ahead during the first lap)
//! ```
//! Flags: `FIRST|LAST` is a whole record; a record larger than half the ring (frame and
//! alignment included) goes as `FIRST`, `MIDDLE`..., `LAST` chunks of a quarter of the ring; `PAD` frames align large payloads to 64 bytes (glibc's
//! memcpy is many times slower for some misalignments on this CPU).
//!
//! # Visibility and robustness
//! - A producer writes a whole frame, then publishes it with one store of `tail`; a record that
//!   fits in the ring is one frame, so it becomes visible (and counted: the record count is in
//!   the same word) only when complete. A producer killed before that store leaves nothing
//!   visible; the next producer takes `wlock` over (OwnerDied) and overwrites the garbage.
//! - A consumer reads a frame, then frees it with one store of `head`. Killed before, the frame
//!   stays for the next consumer; killed after, it loses only the record it was taking.
//! - A streamed record is assembled privately by the consumer and returned only when `LAST`
//!   arrives. A consumer that finds chunks of a record whose start it did not see (its reader
//!   died) skips them; one that sees a new `FIRST` in the middle of a record, or whose producer
//!   is gone (the `wlock` is free or held by a dead process), drops the partial record. The
//!   record count moves only with `LAST`, so `qsize` never counts a partial record.
//!
//! - Shutdown (`shutdown` word, only ever raised): puts stop; gets drain, then stop (DRAIN) or
//!   stop at once (IMMEDIATE, and the shutting-down process moves `head` to `tail` under
//!   `rlock`, counting the discarded records as done). Both futex sequence words are bumped
//!   and every sleeper woken, so nobody stays blocked on a queue that is shut.
//!
//! # Memory ordering
//! The frame bytes are written before a `SeqCst` store of `tail` and read after a `SeqCst` (or
//! `Acquire`) load of it (and symmetrically for `head`), so the bytes a side sees are complete.
//! Each side keeps its own cache line (false sharing between the producer's and the consumer's
//! words cost a line transfer per access) and a copy of the other side's word: `head_seen` and
//! `tail_seen` are only ever behind the word they copy (positions move forward), so a side that
//! trusts its copy sees less free space or fewer records than there are, never more, and reloads
//! the real word only when the copy says it must wait. A copy is stored with `Release` after the
//! load it copies, and loaded with `Acquire`, so the next holder of the side's lock (or the
//! one that takes it over from a dead holder) inherits what the load saw.
//!
//! Sleeping is a Dekker handshake on two words per direction. A side about to sleep reads the
//! futex sequence word (`not_empty`/`not_full`), announces itself in its waiters word
//! (`get_waiters`/`put_waiters`, `SeqCst`) with the sequence value it read, re-checks the
//! position, and sleeps only if the sequence word is unchanged. A publisher stores its position
//! (`SeqCst`), then reads the waiters word (`SeqCst`): if it holds an announcement, it bumps the
//! sequence word, wakes, and then clears that announcement (a CAS from the value it read). In
//! the single total order either the announcement comes first (the publisher sees it and
//! wakes) or the publication does (the re-check sees it). Clearing means one wake per sleep, not
//! per publication: a producer that keeps putting while a woken consumer has not run yet makes
//! no more syscalls, and a sleeper killed in its sleep costs one spurious wake.
//!
//! A publisher SIGKILLed after its position store never leaves the announcement cleared
//! without a wake: the next publication, by anybody, wakes the sleeper. Until then (if none
//! comes) the sleeper of an untimed get sleeps beside the committed record: whoever learns of
//! the death (a pool's supervisor reaping its worker) calls `wake_waiters`. Timed waits look
//! again at least every 100 ms.
//!
//! # Safety
//! The unsafe code copies bytes between private buffers and `data`. The ring protocol gives
//! each side exclusive ranges: the producer writes only `[tail, head + capacity)` (free space,
//! never read by anybody), the consumer reads only `[head, tail)` (published, never written
//! until it is freed), and both hold their side's lock. Every index is reduced modulo the
//! capacity and every copy is cut to the capacity, so copies stay inside the slice whatever a
//! peer writes into the header or the frames (a frame longer than the ring is dropped).
#![allow(unsafe_code)]

mod consume;
mod produce;
mod tasks;

// Process-local marks (`Warm`), outside what loom models.
use std::sync::atomic::AtomicU32 as AtomicU32Local;
use std::time::{Duration, Instant};

use ipc_core::shm::{ShmBox, ShmSafe, ShmSlice};
use serde::{Deserialize, Serialize};

use crate::lock::{Acquire, RawLock, SLICE};
use crate::primitive::{AtomicU32, AtomicU64, Ordering, WaitOutcome, futex};
use crate::spin;

const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
/// Records in the ring are counted modulo 2^24.
pub(crate) const REC_MASK: u64 = (1 << 24) - 1;
const FRAME_HEADER: u64 = 8;
const FIRST: u32 = 1;
const LAST: u32 = 2;
const PAD: u32 = 4;
/// Payloads from this size start on a 64-byte boundary.
const ALIGN_FROM: u64 = 1024;

/// The words of a ring (see the module doc).
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub(crate) struct RingHeader {
    // Line 0: producers' words.
    wlock: RawLock,
    get_waiters: AtomicU32,
    not_empty: AtomicU32,
    /// The CPU (+ 1; 0: unknown) of the last producer that woke a sleeping consumer.
    producer_cpu: AtomicU32,
    tail: AtomicU64,
    head_seen: AtomicU64,
    _line0: [u64; 4],
    // Line 1: consumers' words.
    rlock: RawLock,
    put_waiters: AtomicU32,
    not_full: AtomicU32,
    /// The CPU (+ 1; 0: unknown) of the last consumer that woke a sleeping producer.
    consumer_cpu: AtomicU32,
    head: AtomicU64,
    tail_seen: AtomicU64,
    _line1: [u64; 4],
    // Line 2: read-mostly words and `JoinableQueue`'s.
    maxsize: AtomicU32,
    shutdown: AtomicU32,
    done: AtomicU32,
    join_waiters: AtomicU32,
}

// SAFETY: repr(C) over RawLock (an AtomicU32), AtomicU32, AtomicU64 and plain integer padding:
// any bytes are a valid header (all-zero is the empty, unbounded, open ring), nothing process-local inside, and all
// shared mutation goes through atomics.
unsafe impl ShmSafe for RingHeader {}
// SAFETY: every field that changes after creation is an atomic (the padding is never written).
unsafe impl ipc_core::shm::ShmSync for RingHeader {}

/// A sleeper's announcement: the sequence value it sleeps on, never 0 (0 = nobody sleeps).
fn announce(seq: u32) -> u32 {
    seq.wrapping_add(1).max(1)
}

/// How long an operation may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Not at all (`*_nowait`).
    No,
    /// Until this instant.
    Until(Instant),
    /// As long as it takes.
    Forever,
}

impl Wait {
    pub(crate) fn timeout(t: Duration) -> Wait {
        Instant::now()
            .checked_add(t)
            .map_or(Wait::Forever, Wait::Until)
    }
    fn deadline(self) -> Option<Instant> {
        match self {
            Wait::No => Some(Instant::now()),
            Wait::Until(d) => Some(d),
            Wait::Forever => None,
        }
    }
}

/// Why a ring operation stopped without completing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Not in its time (full, empty, or its side's lock stayed busy).
    TimedOut,
    /// The queue was shut down.
    ShutDown,
}

/// `shutdown` word: open.
const OPEN: u32 = 0;
/// `shutdown` word: no more puts; gets drain what is there.
const DRAIN: u32 = 1;
/// `shutdown` word: no more puts or gets; what was there is discarded.
const IMMEDIATE: u32 = 2;

fn pos(w: u64) -> u64 {
    w & POS_MASK
}
fn recs(w: u64) -> u64 {
    w >> POS_BITS
}
fn word(recs: u64, pos: u64) -> u64 {
    ((recs & REC_MASK) << POS_BITS) | (pos & POS_MASK)
}
fn round8(n: u64) -> u64 {
    (n + 7) & !7
}

/// A ring: its header and its data, both in the shared heap.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Ring {
    header: ShmBox<RingHeader>,
    data: ShmSlice<u8>,
    #[serde(skip)]
    warm: Warm,
}

/// How far into the data this process has populated its page tables, as a writer and as a
/// reader (in `WARM_UNIT`s from the start: 8 bytes in all, since a queue is carried inside
/// other types; this process's own, like its mapping). A new ring's pages are faulted in
/// `WARM_STEP` at a time, ahead of the first lap, instead of one fault per page on each side:
/// a fault costs 2-5 us on this kind of VM, and a stream of small records paid two every
/// 4 KiB (an `apply` of ipc-pool took 10 us instead of 1.5 every 50 calls).
#[derive(Default)]
struct Warm {
    write: AtomicU32Local,
    read: AtomicU32Local,
}

impl Clone for Warm {
    fn clone(&self) -> Self {
        Warm {
            write: AtomicU32Local::new(self.write.load(Ordering::Relaxed)),
            read: AtomicU32Local::new(self.read.load(Ordering::Relaxed)),
        }
    }
}

const WARM_UNIT: usize = 4096;
const WARM_STEP: usize = 64 << 10;

/// Releases a side's lock when an operation ends, however it ends.
struct Side<'a>(&'a RawLock);
impl Drop for Side<'_> {
    fn drop(&mut self) {
        self.0.unlock_held();
    }
}

fn lock_side(lock: &RawLock, wait: Wait) -> Result<Side<'_>, Stop> {
    let a = match wait {
        Wait::No => lock.try_lock(),
        w => lock.lock(w.deadline()),
    };
    match a {
        // A holder that died left its side consistent: positions are published only at frame
        // boundaries, and a reader's partial record was private to it.
        Acquire::Acquired | Acquire::OwnerDied => Ok(Side(lock)),
        Acquire::Failed => Err(Stop::TimedOut),
    }
}

impl Ring {
    /// A ring of at least `capacity` bytes (rounded up to a power of two, at least 4 KiB).
    pub(crate) fn new(capacity: usize, maxsize: u32) -> ipc_core::Result<Ring> {
        let cap = capacity.clamp(4096, 1 << 39).next_power_of_two();
        let header = ShmBox::<RingHeader>::new()?;
        header.maxsize.store(maxsize, Ordering::Relaxed);
        Ok(Ring {
            header,
            data: ShmSlice::new(cap)?,
            warm: Warm::default(),
        })
    }

    /// Makes sure bytes `..end` of the data are in this process's page tables, as a writer
    /// (`write`) or a reader: a load and a compare once the first lap is done.
    #[inline]
    fn warm(&self, end: usize, write: bool) {
        let mark = if write {
            &self.warm.write
        } else {
            &self.warm.read
        };
        let done = mark.load(Ordering::Relaxed) as usize * WARM_UNIT;
        if end > done {
            self.warm_slow(mark, done, end, write);
        }
    }

    #[cold]
    fn warm_slow(&self, mark: &AtomicU32Local, done: usize, end: usize, write: bool) {
        let to = (end + WARM_STEP)
            .next_multiple_of(WARM_STEP)
            .min(self.capacity());
        self.data.populate(done..to, write);
        // The capacity is at most 2^39 bytes: 2^27 units.
        mark.fetch_max((to / WARM_UNIT) as u32, Ordering::Relaxed);
    }

    fn cap(&self) -> u64 {
        self.data.len() as u64
    }

    pub(crate) fn capacity(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn maxsize(&self) -> u32 {
        self.header.maxsize.load(Ordering::Relaxed)
    }

    /// Complete records in the ring (a snapshot).
    pub(crate) fn len(&self) -> u64 {
        let h = self.header.head.load(Ordering::SeqCst);
        let t = self.header.tail.load(Ordering::SeqCst);
        recs(t).wrapping_sub(recs(h)) & REC_MASK
    }

    pub(crate) fn full(&self) -> bool {
        let max = self.maxsize();
        max > 0 && self.len() >= u64::from(max)
    }

    /// Test support (the `failpoints` feature): what a hostile process with the ring's memory
    /// could do, for the fuzzer. Writes `data` at the start of the ring (cut to its capacity)
    /// and stores raw `head` and `tail` words.
    #[cfg(feature = "failpoints")]
    pub(crate) fn scribble(&self, head: u64, tail: u64, data: &[u8]) {
        let n = data.len().min(self.capacity());
        self.write_at(0, &data[..n]);
        self.header.head.store(head, Ordering::SeqCst);
        self.header.head_seen.store(head, Ordering::SeqCst);
        self.header.tail.store(tail, Ordering::SeqCst);
        self.header.tail_seen.store(tail, Ordering::SeqCst);
    }

    /// Test support: the raw `head` and `tail` words and the ring's bytes.
    #[cfg(feature = "failpoints")]
    pub(crate) fn snapshot(&self) -> (u64, u64, Vec<u8>) {
        let mut data = vec![0; self.capacity()];
        self.read_at(0, &mut data);
        (
            self.header.head.load(Ordering::SeqCst),
            self.header.tail.load(Ordering::SeqCst),
            data,
        )
    }

    /// Copies `bytes` into the ring at position `at` (wrapping; at most a ring's worth, as
    /// frames never exceed the ring).
    fn write_at(&self, at: u64, bytes: &[u8]) {
        let cap = self.cap();
        let i = (at & (cap - 1)) as usize;
        let bytes = &bytes[..bytes.len().min(cap as usize)];
        let first = bytes.len().min(cap as usize - i);
        self.warm(i + first, true);
        // SAFETY: `i < cap` and `first <= cap - i`, the rest goes to the start and is at most
        // `cap` long (`bytes` was cut to the ring's size); the range is free space that only the
        // wlock holder (us) writes and nobody reads (module doc).
        unsafe {
            let base = self.data.as_ptr();
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(i), first);
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), base, bytes.len() - first);
        }
    }

    /// Copies ring bytes at position `at` (wrapping) into `out` (at most a ring's worth: the
    /// callers never ask for more, and a longer `out` keeps its tail).
    fn read_at(&self, at: u64, out: &mut [u8]) {
        let cap = self.cap();
        let i = (at & (cap - 1)) as usize;
        let n = out.len().min(cap as usize);
        let out = &mut out[..n];
        let first = out.len().min(cap as usize - i);
        self.warm(i + first, false);
        // SAFETY: as in `write_at`; the range is published and not freed yet, so only the
        // rlock holder (us) reads it and nobody writes it.
        unsafe {
            let base = self.data.as_ptr();
            std::ptr::copy_nonoverlapping(base.add(i), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(base, out.as_mut_ptr().add(first), out.len() - first);
        }
    }

    /// The ring bytes at `at`, if they do not wrap (decode in place, no copy).
    fn contiguous(&self, at: u64, len: usize) -> Option<&[u8]> {
        let cap = self.cap() as usize;
        let i = (at & (self.cap() - 1)) as usize;
        if i + len <= cap {
            self.warm(i + len, false);
        }
        // SAFETY: `i + len <= cap`; the range is published and ours to read until we publish
        // `head` past it, which happens after the returned borrow ends (module doc).
        (i + len <= cap)
            .then(|| unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(i), len) })
    }

    fn frame_header(&self, at: u64) -> (u32, u32) {
        let mut h = [0u8; 8];
        self.read_at(at, &mut h);
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let flags = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        (len, flags)
    }

    /// Waits on `seq` while `unchanged()` holds, announcing itself in `waiters` (module doc,
    /// "Memory ordering").
    ///
    /// `peer_cpu` is where the other side last ran when it woke a sleeper of ours (see
    /// [`spin::spin_for_peer`]).
    fn sleep(
        &self,
        seq: &AtomicU32,
        waiters: &AtomicU32,
        peer_cpu: &AtomicU32,
        unchanged: impl Fn() -> bool,
        until: Option<Instant>,
    ) -> WaitOutcome {
        if spin::spin_for_peer(peer_cpu.load(Ordering::Relaxed), || !unchanged()) {
            return WaitOutcome::Woken;
        }
        // The announcement names the sequence value we sleep on, so that a publisher clears
        // exactly the announcement it served (see `wake_sleeper`).
        let s = seq.load(Ordering::SeqCst);
        waiters.store(announce(s), Ordering::SeqCst);
        if unchanged() {
            futex::wait(seq, s, until)
        } else {
            WaitOutcome::Woken
        }
        // The announcement stays for a publisher to clear after its wake (after a timeout that
        // costs it one needless wake): only one process at a time sleeps per side.
    }

    /// The publisher's half of the handshake: wake the other side if it announced a sleep, and
    /// tell it (in `our_cpu`) where we run, so that its next wait knows whether to spin.
    ///
    /// The announcement is cleared only after the wake, and only if it is still the one served:
    /// a publisher killed anywhere between its position store and that clear leaves it in
    /// place, so the next publication (by anyone) wakes the sleeper. (Clearing first, as a swap,
    /// left a sleeper beside the dead publisher's record for good once it died between the swap
    /// and the wake.) A sleeper that announces anew after our bump names another sequence value,
    /// and our clear leaves it alone.
    #[inline]
    fn wake_sleeper(seq: &AtomicU32, waiters: &AtomicU32, our_cpu: &AtomicU32) {
        // The load keeps the common case (nobody sleeps) free of a locked instruction on a
        // word the other side owns.
        let announced = waiters.load(Ordering::SeqCst);
        if announced != 0 {
            ipc_core::failpoint::hit("queue.wake.announced");
            our_cpu.store(ipc_core::spin::cpu_tag(), Ordering::Relaxed);
            seq.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(seq);
            let _ = waiters.compare_exchange(announced, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    fn publish_tail(&self, w: u64) {
        let h = &*self.header;
        h.tail.store(w, Ordering::SeqCst);
        ipc_core::failpoint::hit("queue.put.committed");
        Self::wake_sleeper(&h.not_empty, &h.get_waiters, &h.producer_cpu);
    }

    fn publish_head(&self, w: u64) {
        let h = &*self.header;
        h.head.store(w, Ordering::SeqCst);
        Self::wake_sleeper(&h.not_full, &h.put_waiters, &h.consumer_cpu);
    }

    fn shut(&self) -> u32 {
        self.header.shutdown.load(Ordering::SeqCst)
    }

    /// Whether the queue was shut down (by any process).
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut() != OPEN
    }

    /// Shuts the queue down for every process: puts fail from now on; gets drain what is there
    /// (or, if `immediate`, fail at once, the items are discarded and marked done for `join`).
    pub(crate) fn shutdown(&self, immediate: bool) {
        let h = &*self.header;
        let to = if immediate { IMMEDIATE } else { DRAIN };
        h.shutdown.fetch_max(to, Ordering::SeqCst);
        self.wake_everybody();
        if immediate {
            // Sleeping consumers saw the flag and give the consumer lock up; take it to discard.
            let _side = lock_side(&h.rlock, Wait::Forever);
            let head = h.head.load(Ordering::SeqCst);
            let tail = h.tail.load(Ordering::SeqCst);
            let dropped = recs(tail).wrapping_sub(recs(head)) & REC_MASK;
            self.publish_head(word(recs(tail), pos(tail)));
            // Discarded records count as done, so `join` waits only for items already taken.
            let mut d = h.done.load(Ordering::SeqCst);
            loop {
                let nd = ((u64::from(d) + dropped) & REC_MASK) as u32;
                match h
                    .done
                    .compare_exchange(d, nd, Ordering::SeqCst, Ordering::SeqCst)
                {
                    Ok(_) => break,
                    Err(now) => d = now,
                }
            }
            self.wake_everybody();
        }
    }

    /// Wakes every sleeper on both sides, to look again: the repair after a process that used
    /// the queue died (a publisher killed between committing and waking leaves its sleeper
    /// asleep until the next publication).
    pub(crate) fn wake_everybody(&self) {
        let h = &*self.header;
        for w in [&h.not_empty, &h.not_full] {
            w.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(w);
        }
        // `done` is a count, not a sequence number: joiners just re-check it.
        futex::wake_all(&h.done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A producer that wakes a sleeping consumer leaves its CPU in the header, for the
    /// consumer's next wait (and the consumer likewise for a sleeping producer).
    #[test]
    fn a_waker_leaves_its_cpu_for_the_sleeper() {
        let r = Ring::new(1, 1).unwrap();
        assert_eq!(r.header.producer_cpu.load(Ordering::Relaxed), 0);
        let consumer = {
            let r = r.clone();
            std::thread::spawn(move || r.get(Wait::Forever, |b| b.to_vec()))
        };
        while r.header.get_waiters.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        r.put(b"x", Wait::Forever).unwrap();
        assert_eq!(consumer.join().unwrap(), Ok(b"x".to_vec()));
        assert_ne!(r.header.producer_cpu.load(Ordering::Relaxed), 0);
        // Full (maxsize 1): a producer sleeps until a get frees the space.
        r.put(b"y", Wait::Forever).unwrap();
        let producer = {
            let r = r.clone();
            std::thread::spawn(move || r.put(b"z", Wait::Forever))
        };
        while r.header.put_waiters.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        assert_eq!(r.get(Wait::Forever, |b| b.to_vec()), Ok(b"y".to_vec()));
        producer.join().unwrap().unwrap();
        assert_ne!(r.header.consumer_cpu.load(Ordering::Relaxed), 0);
    }

    /// The header's ABI, and a zeroed header (a fresh heap block) is an empty, open,
    /// unbounded ring.
    #[test]
    fn header_abi_and_zero_state() {
        assert_eq!(
            (size_of::<RingHeader>(), align_of::<RingHeader>()),
            (192, 64)
        );
        assert_eq!(std::mem::offset_of!(RingHeader, rlock), 64);
        assert_eq!(std::mem::offset_of!(RingHeader, maxsize), 128);
        let r = Ring::new(1, 0).unwrap();
        assert_eq!(r.capacity(), 4096, "rounded up to the minimum");
        assert_eq!((r.len(), r.maxsize(), r.full()), (0, 0, false));
        assert!(!r.is_shut_down());
        assert_eq!(r.unfinished(), 0);
        assert_eq!(r.get(Wait::No, |b| b.len()), Err(Stop::TimedOut));
        r.put(b"abc", Wait::No).unwrap();
        assert_eq!(r.get(Wait::No, |b| b.to_vec()), Ok(b"abc".to_vec()));
        assert_eq!(Ring::new(5000, 0).unwrap().capacity(), 8192);
    }
}
