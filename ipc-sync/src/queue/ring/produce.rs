//! The producer side of the ring: wait for space, write frames, publish the tail.
//!
//! Runs with `wlock` held; see the parent module for the layout and the robustness argument.

use super::*;

impl Ring {
    /// Whether `need` bytes are free (and, if `count`, a record may be added), judged by
    /// `head`'s word `hw` (the real one or an older copy: a copy only underestimates).
    fn fits(&self, hw: u64, need: u64, count: bool) -> bool {
        let t = self.header.tail.load(Ordering::Relaxed);
        let used = pos(t).wrapping_sub(pos(hw)) & POS_MASK;
        if self.cap() - used.min(self.cap()) < need {
            return false;
        }
        if !count {
            return true;
        }
        let max = u64::from(self.maxsize());
        let n = recs(t).wrapping_sub(recs(hw)) & REC_MASK;
        n < REC_MASK && (max == 0 || n < max)
    }

    /// Waits until `need` bytes are free (and, if `count`, a record may be added).
    fn wait_space(&self, need: u64, count: bool, wait: Wait) -> Result<(), Stop> {
        let h = &*self.header;
        // Our copy of `head` first: it keeps the consumers' cache line out of the common case.
        if self.shut() == OPEN && self.fits(h.head_seen.load(Ordering::Acquire), need, count) {
            return Ok(());
        }
        let fits = || {
            let hw = h.head.load(Ordering::SeqCst);
            h.head_seen.store(hw, Ordering::Release);
            self.fits(hw, need, count)
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
            if self.sleep(
                &h.not_full,
                &h.put_waiters,
                &h.consumer_cpu,
                blocked,
                deadline,
            ) == WaitOutcome::TimedOut
                && blocked()
            {
                return Err(Stop::TimedOut);
            }
        }
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
        ipc_core::failpoint::hit("queue.put.reserved");
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
        ipc_core::failpoint::hit("queue.put.copied");
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
}
