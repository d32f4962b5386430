//! The consumer side of the ring: find the next complete record, assembling streamed ones,
//! skipping the remnants of records whose reader died, then free its frames.
//!
//! Runs with `rlock` held; see the parent module for the layout and the robustness argument.

use std::time::Instant;

use super::*;

/// Where the next record is.
enum Record {
    /// One frame in the ring: payload at `at`, `len` bytes; `next` is the head past it.
    InRing { at: u64, len: usize, next: u64 },
    /// A streamed record, assembled (its frames are already freed).
    Assembled(Vec<u8>),
}

impl Ring {
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
                ipc_core::failpoint::hit("queue.get.copied");
                self.publish_head(next);
                ipc_core::failpoint::hit("queue.get.taken");
                Ok(r)
            }
            Record::Assembled(buf) => {
                ipc_core::failpoint::hit("queue.get.taken");
                Ok(f(&buf))
            }
        }
    }

    /// Waits, without `rlock` and without taking anything, until bytes are published past
    /// `head` (a record, or the start of a streamed one), the ring is shut, a publisher woke
    /// it, or `deadline`: true unless it timed out. For consumers that take with `Wait::No`
    /// under a lock of their own, so that a sleeper does not hold `rlock` against them.
    ///
    /// Such a sleeper may sleep beside one in [`get`](Self::get): the handshake (module doc)
    /// holds for several sleepers, since every sleeper sleeps on the sequence value it read
    /// and announced, a publisher that serves an announcement bumps that value and wakes all
    /// of them, and its clear (a CAS from what it served) leaves a newer announcement alone.
    pub(crate) fn wait_ready(&self, deadline: Option<Instant>) -> bool {
        let h = &*self.header;
        let empty = || {
            pos(h.tail.load(Ordering::SeqCst)) == pos(h.head.load(Ordering::SeqCst))
                && self.shut() == OPEN
        };
        loop {
            if !empty() {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            // Timed waits look again every slice, as `get`'s do (module doc).
            let until = deadline.map(|d| d.min(Instant::now() + SLICE));
            let slept = self.sleep(&h.not_empty, &h.get_waiters, &h.producer_cpu, empty, until);
            if let WaitOutcome::Woken = slept {
                // Something was put (or a spurious wake): the caller looks, even if another
                // consumer took it first. Sleeping on would be woken by every put that
                // consumer races us for, and never return.
                return true;
            }
        }
    }

    /// With `rlock` held: finds the next complete record, streaming chunks as they come.
    fn next_record(&self, wait: Wait) -> Result<Record, Stop> {
        let h = &*self.header;
        let mut partial: Option<Vec<u8>> = None;
        // When to ask whether a streaming producer is still alive; set (to now) the first time
        // a streamed record runs dry, so a get that finds its record at once never reads the
        // clock.
        let mut next_check: Option<Instant> = None;
        loop {
            let head = h.head.load(Ordering::Relaxed);
            let shut = self.shut();
            if shut == IMMEDIATE {
                return Err(Stop::ShutDown);
            }
            // Our copy of `tail` first: it keeps the producers' cache line out of the common
            // case; the real word when the copy says we caught up, or is not ahead of `head`
            // within one ring (an immediate shutdown moves `head` past it).
            let mut tail = h.tail_seen.load(Ordering::Acquire);
            let ahead = pos(tail).wrapping_sub(pos(head)) & POS_MASK;
            if ahead == 0 || ahead > self.cap() {
                tail = h.tail.load(Ordering::SeqCst);
                h.tail_seen.store(tail, Ordering::Release);
            }
            if pos(tail).wrapping_sub(pos(head)) & POS_MASK > self.cap() {
                // Only a misbehaving peer publishes more than a ring: walking it frame by
                // frame could take hours (found by the fuzzer of `cargo xtask chaos`). Drop
                // everything published so far.
                self.publish_head(word(recs(tail), pos(tail)));
                partial = None;
                continue;
            }
            if pos(head) == pos(tail) {
                // Drained after a shutdown: nothing more will come (a record under way is
                // abandoned: its producer cannot finish it).
                if shut != OPEN {
                    return Err(Stop::ShutDown);
                }
                let streaming = partial.is_some();
                if !streaming && wait == Wait::No {
                    return Err(Stop::TimedOut);
                }
                let deadline = wait.deadline();
                let until = if streaming {
                    let now = Instant::now();
                    // The first time a streamed record runs dry, look at its producer at once:
                    // a record whose producer is already gone would otherwise cost a slice.
                    let check = next_check.get_or_insert(now);
                    if now >= *check {
                        *check = now + SLICE;
                        ipc_core::failpoint::hit("queue.get.dry");
                        if self.producer_gone() {
                            // Gone now, but it may have published the rest (its LAST chunk)
                            // after we saw the ring dry and before it went: read that first.
                            // Only a ring still dry after its death means the record is
                            // abandoned (the chaos suite found records lost in this window:
                            // committed, then skipped as remnants).
                            if pos(h.tail.load(Ordering::SeqCst)) == pos(head) {
                                partial = None;
                            }
                            continue;
                        }
                    }
                    // A record under way is finished even past the deadline while its
                    // producer lives and holds its lock: giving up would lose it for everybody.
                    Some(*check)
                } else {
                    // Until the deadline, looking again every slice as `wait_ready` does: a
                    // bound computed now, never one already past (a sleep until a past time
                    // returns at once, and the loop would spin).
                    deadline.map(|d| d.min(Instant::now() + SLICE))
                };
                let nothing =
                    || pos(h.tail.load(Ordering::SeqCst)) == pos(head) && self.shut() == OPEN;
                let out = self.sleep(
                    &h.not_empty,
                    &h.get_waiters,
                    &h.producer_cpu,
                    nothing,
                    until,
                );
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
            if frame > used.min(self.cap()) {
                // Only a misbehaving peer publishes a frame longer than what it published, or
                // than the ring (a tail word more than a ring ahead: found by the fuzzer of
                // `cargo xtask chaos`, which then read past the ring): drop everything
                // published so far rather than read past it.
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
}
