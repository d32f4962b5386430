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
//! RingHeader (#[repr(C)], 64 bytes, align 8, all-zero = empty, unbounded)
//! | wlock | rlock | not_empty | not_full | get_waiters | put_waiters | done | join_waiters |
//! | tail: u64 = records << 40 | position    (published by the wlock holder)                |
//! | head: u64 = records << 40 | position    (published by the rlock holder)                |
//! | maxsize: u32 (0 = unbounded) | shutdown: u32 (0 open, 1 draining, 2 immediate)          |
//! data: ShmSlice<u8>, capacity a power of two; positions count bytes modulo 2^40
//! frame at an 8-aligned position: | len: u32 | flags: u32 | payload (len) | pad to 8 |
//! ```
//! Flags: `FIRST|LAST` is a whole record; a record larger than a quarter of the ring goes as
//! `FIRST`, `MIDDLE`..., `LAST` chunks; `PAD` frames align large payloads to 64 bytes (glibc's
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
//! The frame bytes are written before a `SeqCst` store of `tail` and read after a `SeqCst` load
//! of it (and symmetrically for `head`), so the bytes a side sees are complete. The futex words
//! `not_empty`/`not_full` are sequence numbers bumped after each publication; a side that is
//! about to sleep announces itself in `get_waiters`/`put_waiters` and re-checks the position,
//! all `SeqCst`, so a publication either is seen by the re-check or sees the waiter and wakes.
//!
//! # Safety
//! The unsafe code copies bytes between private buffers and `data`. The ring protocol gives
//! each side exclusive ranges: the producer writes only `[tail, head + capacity)` (free space,
//! never read by anybody), the consumer reads only `[head, tail)` (published, never written
//! until it is freed), and both hold their side's lock. Every index is reduced modulo the
//! capacity, so copies stay inside the slice whatever a peer writes into the header.
#![allow(unsafe_code)]

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
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct RingHeader {
    wlock: RawLock,
    rlock: RawLock,
    not_empty: AtomicU32,
    not_full: AtomicU32,
    get_waiters: AtomicU32,
    put_waiters: AtomicU32,
    done: AtomicU32,
    join_waiters: AtomicU32,
    tail: AtomicU64,
    head: AtomicU64,
    maxsize: AtomicU32,
    shutdown: AtomicU32,
}

// SAFETY: repr(C) over RawLock (an AtomicU32), AtomicU32 and AtomicU64: any bytes are a valid
// header (all-zero is the empty, unbounded, open ring), nothing process-local inside, and all
// shared mutation goes through atomics.
unsafe impl ShmSafe for RingHeader {}

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
}

/// Where the next record is.
enum Record {
    /// One frame in the ring: payload at `at`, `len` bytes; `next` is the head past it.
    InRing { at: u64, len: usize, next: u64 },
    /// A streamed record, assembled (its frames are already freed).
    Assembled(Vec<u8>),
}

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
        })
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

    fn is_full_by_count(&self) -> bool {
        let max = u64::from(self.maxsize());
        let n = self.len();
        n >= REC_MASK || (max > 0 && n >= max)
    }

    pub(crate) fn full(&self) -> bool {
        let max = self.maxsize();
        max > 0 && self.len() >= u64::from(max)
    }

    /// Copies `bytes` into the ring at position `at` (wrapping).
    fn write_at(&self, at: u64, bytes: &[u8]) {
        let cap = self.cap();
        let i = (at & (cap - 1)) as usize;
        let first = bytes.len().min(cap as usize - i);
        // SAFETY: `i < cap` and `first <= cap - i`, the rest goes to the start and is shorter
        // than `cap` (frames never exceed the ring); the range is free space that only the
        // wlock holder (us) writes and nobody reads (module doc).
        unsafe {
            let base = self.data.as_ptr();
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(i), first);
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), base, bytes.len() - first);
        }
    }

    /// Copies ring bytes at position `at` (wrapping) into `out`.
    fn read_at(&self, at: u64, out: &mut [u8]) {
        let cap = self.cap();
        let i = (at & (cap - 1)) as usize;
        let first = out.len().min(cap as usize - i);
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

    /// Waits on `seq` while `unchanged()` holds, announcing itself in `waiters`.
    fn sleep(
        &self,
        seq: &AtomicU32,
        waiters: &AtomicU32,
        unchanged: impl Fn() -> bool,
        until: Option<Instant>,
    ) -> WaitOutcome {
        if spin::spin(|| !unchanged()) {
            return WaitOutcome::Woken;
        }
        waiters.fetch_add(1, Ordering::SeqCst);
        let s = seq.load(Ordering::SeqCst);
        let out = if unchanged() {
            futex::wait(seq, s, until)
        } else {
            WaitOutcome::Woken
        };
        waiters.fetch_sub(1, Ordering::SeqCst);
        out
    }

    fn publish_tail(&self, w: u64) {
        let h = &*self.header;
        h.tail.store(w, Ordering::SeqCst);
        h.not_empty.fetch_add(1, Ordering::SeqCst);
        if h.get_waiters.load(Ordering::SeqCst) > 0 {
            futex::wake_all(&h.not_empty);
        }
    }

    fn publish_head(&self, w: u64) {
        let h = &*self.header;
        h.head.store(w, Ordering::SeqCst);
        h.not_full.fetch_add(1, Ordering::SeqCst);
        if h.put_waiters.load(Ordering::SeqCst) > 0 {
            futex::wake_all(&h.not_full);
        }
    }

    /// Waits until `need` bytes are free (and, if `count`, a record may be added).
    fn wait_space(&self, need: u64, count: bool, wait: Wait) -> Result<(), Stop> {
        let h = &*self.header;
        let fits = || {
            let used = pos(h.tail.load(Ordering::SeqCst))
                .wrapping_sub(pos(h.head.load(Ordering::SeqCst)))
                & POS_MASK;
            self.cap() - used.min(self.cap()) >= need && !(count && self.is_full_by_count())
        };
        loop {
            if self.shut() != OPEN {
                return Err(Stop::ShutDown);
            }
            if fits() {
                return Ok(());
            }
            if wait == Wait::No {
                return Err(Stop::TimedOut);
            }
            let deadline = wait.deadline();
            let blocked = || !fits() && self.shut() == OPEN;
            if self.sleep(&h.not_full, &h.put_waiters, blocked, deadline) == WaitOutcome::TimedOut
                && blocked()
            {
                return Err(Stop::TimedOut);
            }
        }
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

    fn wake_everybody(&self) {
        let h = &*self.header;
        for w in [&h.not_empty, &h.not_full] {
            w.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(w);
        }
        // `done` is a count, not a sequence number: joiners just re-check it.
        futex::wake_all(&h.done);
    }

    /// Writes one frame at the tail (after any alignment padding) and publishes it.
    fn put_frame(&self, payload: &[u8], flags: u32, wait: Wait) -> Result<(), Stop> {
        let h = &*self.header;
        let t = h.tail.load(Ordering::Relaxed);
        let len = payload.len() as u64;
        let pad = if len >= ALIGN_FROM {
            (64 - ((pos(t) + FRAME_HEADER) & 63)) & 63
        } else {
            0
        };
        let frame = round8(FRAME_HEADER + len);
        self.wait_space(pad + frame, flags & FIRST != 0, wait)?;
        let mut at = pos(t);
        if pad > 0 {
            let mut hdr = [0u8; 8];
            hdr[..4].copy_from_slice(&((pad - FRAME_HEADER) as u32).to_le_bytes());
            hdr[4..].copy_from_slice(&PAD.to_le_bytes());
            self.write_at(at, &hdr);
            at += pad;
        }
        let mut hdr = [0u8; 8];
        hdr[..4].copy_from_slice(&(len as u32).to_le_bytes());
        hdr[4..].copy_from_slice(&flags.to_le_bytes());
        self.write_at(at, &hdr);
        self.write_at(at + FRAME_HEADER, payload);
        let done = u64::from(flags & LAST != 0);
        self.publish_tail(word(recs(t) + done, at + frame));
        Ok(())
    }

    /// Appends one record; `TimedOut` if it could not start in time (nothing was written).
    pub(crate) fn put(&self, record: &[u8], wait: Wait) -> Result<(), Stop> {
        if self.shut() != OPEN {
            return Err(Stop::ShutDown);
        }
        let _side = lock_side(&self.header.wlock, wait)?;
        let whole = round8(FRAME_HEADER + record.len() as u64) + 64 <= self.cap() / 2;
        if whole {
            return self.put_frame(record, FIRST | LAST, wait);
        }
        // Stream: chunks of a quarter of the ring, so the consumer drains while we fill. If a
        // chunk cannot go in time, the record is abandoned: its consumer drops the chunks it
        // has, as it would for a producer that died (our lock is free again).
        let chunk = (self.cap() / 4 - 128) as usize;
        let mut chunks = record.chunks(chunk).peekable();
        let mut flags = FIRST;
        while let Some(c) = chunks.next() {
            if chunks.peek().is_none() {
                flags |= LAST;
            }
            self.put_frame(c, flags, wait)?;
            flags = 0;
        }
        Ok(())
    }

    /// Whether the producer of a record under way is gone (its lock free or its holder dead).
    fn producer_gone(&self) -> bool {
        let w = &self.header.wlock;
        match w.owner() {
            None => true,
            Some(pid) => crate::liveness::is_dead(pid),
        }
    }

    /// Takes the next complete record and hands its bytes to `f`.
    pub(crate) fn get<R>(&self, wait: Wait, f: impl FnOnce(&[u8]) -> R) -> Result<R, Stop> {
        let h = &*self.header;
        if self.shut() == IMMEDIATE {
            return Err(Stop::ShutDown);
        }
        let _side = lock_side(&h.rlock, wait)?;
        match self.next_record(wait)? {
            Record::InRing { at, len, next } => {
                let r = match self.contiguous(at, len) {
                    Some(bytes) => f(bytes),
                    None => {
                        let mut v = vec![0; len];
                        self.read_at(at, &mut v);
                        f(&v)
                    }
                };
                // Free the frame only after `f` is done with its bytes.
                self.publish_head(next);
                Ok(r)
            }
            Record::Assembled(buf) => Ok(f(&buf)),
        }
    }

    /// With `rlock` held: finds the next complete record, streaming chunks as they come.
    fn next_record(&self, wait: Wait) -> Result<Record, Stop> {
        let h = &*self.header;
        let mut partial: Option<Vec<u8>> = None;
        let mut next_check = Instant::now() + SLICE;
        loop {
            let head = h.head.load(Ordering::Relaxed);
            let tail = h.tail.load(Ordering::SeqCst);
            let shut = self.shut();
            if shut == IMMEDIATE {
                return Err(Stop::ShutDown);
            }
            if pos(head) == pos(tail) {
                // Drained after a shutdown: nothing more will come (a record under way is
                // abandoned: its producer cannot finish it).
                if shut != OPEN {
                    return Err(Stop::ShutDown);
                }
                let streaming = partial.is_some();
                let deadline = wait.deadline();
                if streaming && Instant::now() >= next_check {
                    next_check = Instant::now() + SLICE;
                    if self.producer_gone() {
                        partial = None;
                        continue;
                    }
                }
                if !streaming && wait == Wait::No {
                    return Err(Stop::TimedOut);
                }
                // A record under way is finished even past the deadline while its producer
                // lives and holds its lock: giving up would lose it for everybody.
                let until = if streaming {
                    Some(next_check)
                } else {
                    deadline.map(|d| d.min(next_check))
                };
                let nothing =
                    || pos(h.tail.load(Ordering::SeqCst)) == pos(head) && self.shut() == OPEN;
                let out = self.sleep(&h.not_empty, &h.get_waiters, nothing, until);
                if out == WaitOutcome::TimedOut
                    && !streaming
                    && deadline.is_some_and(|d| Instant::now() >= d)
                    && nothing()
                {
                    return Err(Stop::TimedOut);
                }
                continue;
            }
            let (len, flags) = self.frame_header(pos(head));
            let frame = round8(FRAME_HEADER + u64::from(len));
            let at = pos(head) + FRAME_HEADER;
            let used = pos(tail).wrapping_sub(pos(head)) & POS_MASK;
            if frame > used {
                // Only a misbehaving peer publishes a frame longer than what it published:
                // drop everything published so far rather than read past it.
                self.publish_head(word(recs(tail), pos(tail)));
                partial = None;
                continue;
            }
            let counted = u64::from(flags & LAST != 0);
            let next = word(recs(head) + counted, pos(head) + frame);
            if flags & PAD != 0 {
                self.publish_head(word(recs(head), pos(head) + frame));
                continue;
            }
            if flags & FIRST != 0 && flags & LAST != 0 {
                return Ok(Record::InRing {
                    at,
                    len: len as usize,
                    next,
                });
            }
            if flags & FIRST != 0 {
                // A new record: a partial one before it was abandoned by its producer.
                partial = Some(Vec::new());
            }
            // Without a partial record, these are the rest of one whose reader died: skip.
            if let Some(buf) = partial.as_mut() {
                let old = buf.len();
                buf.resize(old + len as usize, 0);
                self.read_at(at, &mut buf[old..]);
            }
            self.publish_head(next);
            if flags & LAST != 0
                && let Some(buf) = partial.take()
            {
                return Ok(Record::Assembled(buf));
            }
        }
    }

    /// JoinableQueue: records put and not yet marked done (modulo 2^24).
    pub(crate) fn unfinished(&self) -> u64 {
        let t = recs(self.header.tail.load(Ordering::SeqCst));
        let d = u64::from(self.header.done.load(Ordering::SeqCst));
        t.wrapping_sub(d) & REC_MASK
    }

    /// JoinableQueue: marks one record done; false if none is unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let h = &*self.header;
        let mut d = h.done.load(Ordering::SeqCst);
        loop {
            let t = recs(h.tail.load(Ordering::SeqCst));
            let left = t.wrapping_sub(u64::from(d)) & REC_MASK;
            if left == 0 {
                return false;
            }
            let nd = ((u64::from(d) + 1) & REC_MASK) as u32;
            match h
                .done
                .compare_exchange(d, nd, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    if left == 1 && h.join_waiters.load(Ordering::SeqCst) > 0 {
                        futex::wake_all(&h.done);
                    }
                    return true;
                }
                Err(now) => d = now,
            }
        }
    }

    /// JoinableQueue: waits until every record put was marked done.
    pub(crate) fn join(&self, wait: Wait) -> Result<(), Stop> {
        let h = &*self.header;
        loop {
            let d = h.done.load(Ordering::SeqCst);
            if self.unfinished() == 0 {
                return Ok(());
            }
            if wait == Wait::No {
                return Err(Stop::TimedOut);
            }
            h.join_waiters.fetch_add(1, Ordering::SeqCst);
            let out = if self.unfinished() != 0 {
                futex::wait(&h.done, d, wait.deadline())
            } else {
                WaitOutcome::Woken
            };
            h.join_waiters.fetch_sub(1, Ordering::SeqCst);
            if out == WaitOutcome::TimedOut && self.unfinished() != 0 {
                return Err(Stop::TimedOut);
            }
        }
    }
}
