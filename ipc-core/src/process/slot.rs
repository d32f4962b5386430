//! Outcome slots: where a forked child leaves a small outcome, so that its parent wakes once.
//!
//! A child reports its [`Outcome`](super::child::Outcome) and exits. Sent on its connection,
//! the outcome wakes the parent (readable), which reads it and sleeps again until the exit is
//! reported: two wake-ups per start, the second costing 25-35 us here. A child started by fork
//! shares this process's memory map, so instead it writes an outcome that fits, and carries no
//! descriptor, into a slot of a shared mapping made once per process, and sends nothing. Its
//! parent holds the child's end of the connection as well (so that the child's exit is no
//! hang-up there either) and wakes once, at the exit, to find the outcome in the slot. An
//! outcome too large for a slot, or carrying descriptors, goes on the connection as before; the
//! parent then closes its copy of the child's end at once, so that a child dying mid-message is
//! still an end of file.
//!
//! # Layout
//! One `MAP_SHARED | MAP_ANONYMOUS` mapping per process that forks, never unmapped:
//! ```text
//! slot k at k * SLOT_BYTES, SLOTS of them
//! +-------------+-----------+--------------------------------------------+
//! | state: u32  | len: u32  | bytes: the encoded outcome (len of them)   |
//! | generation  |           | SLOT_BYTES - 8                             |
//! | << 2, and   |           |                                            |
//! | EMPTY,      |           |                                            |
//! | WRITING or  |           |                                            |
//! | FULL        |           |                                            |
//! +-------------+-----------+--------------------------------------------+
//! ```
//! Which slots are taken is this process's own business (a bitmap in its private memory): only
//! the process that made the mapping claims slots from it. A forked child inherits the mapping
//! and the bitmap, writes its one slot, and makes a mapping of its own if it forks in turn.
//!
//! # States
//! ```text
//! parent: claim (bit set, new generation g), state := EMPTY|g --fork--> child: state
//!   EMPTY|g -> WRITING|g (CAS), bytes, len, then state := FULL|g (Release) --exit--> parent
//!   (after the exit is reported): reads state (Acquire), copies len bytes if FULL|g, release
//! ```
//! Only the process that moved the state from EMPTY|g writes the bytes, and the parent reads
//! them only once they are FULL|g, which their writer sets last. A copy of the child made by a
//! raw `fork` in its function, which would report too, finds WRITING or FULL and uses the
//! connection; if it got there first and outlives the child, its late stores carry the old
//! generation, which the slot's next child and parent ignore (its bytes could still mix with
//! the next child's: a raw fork whose copies both return from the function is not supported).
//! A child killed before it sets FULL leaves no outcome, as on a connection closed without a
//! message.
//! A slot whose child's record goes away unreaped (a copy of a record in a forked process) is
//! never released: it stays taken, and a process with every slot taken reports on connections.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::Serialize;

use crate::codec;
use crate::error::Result;

/// Slots per process: children started by fork and not reaped yet beyond this report through
/// their connections.
const SLOTS: usize = 64;
/// Bytes per slot, header included (an outcome of up to 504 bytes fits).
const SLOT_BYTES: usize = 512;
const HEADER: usize = 8;
const EMPTY: u32 = 0;
const WRITING: u32 = 1;
const FULL: u32 = 2;
/// The state's low bits: the phase; the others: the generation.
const PHASE_BITS: u32 = 2;

/// One process's mapping and which of its slots are taken (kept in the process-wide state,
/// `Global::slots`).
pub(crate) struct Region {
    /// The process that made it: the only one that claims its slots.
    owner: i32,
    base: NonNull<u8>,
    taken: AtomicU64,
    /// The last generation handed out.
    generation: AtomicU32,
}

// SAFETY: `base` points into a mapping that lives as long as the process and is only reached
// through atomics (the header) and through the disjoint-in-time protocol of the module doc (the
// bytes), so a `Region` may be shared and sent between threads.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// A claimed slot: the parent's handle to read it after the child's exit, and the child's to
/// write its outcome.
pub(crate) struct Slot {
    region: &'static Region,
    index: usize,
    /// This claim's generation, shifted into place (the phase bits are zero).
    generation: u32,
}

impl Slot {
    /// Claims a free slot of this process's region `cell` (made on first use, and again in a
    /// forked child, whose inherited one is its parent's to claim from), emptied for a child
    /// about to be forked; `None` if all are taken or no mapping could be made (the child then
    /// reports on its connection).
    pub(crate) fn claim(cell: &mut Option<&'static Region>) -> Option<Slot> {
        let me = crate::sys::pid();
        let region = match *cell {
            Some(r) if r.owner == me => r,
            _ => {
                let r = Region::new(me)?;
                *cell = Some(r);
                r
            }
        };
        let mut taken = region.taken.load(Ordering::Relaxed);
        loop {
            let index = (!taken).trailing_zeros() as usize;
            if index >= SLOTS {
                return None;
            }
            match region.taken.compare_exchange_weak(
                taken,
                taken | 1 << index,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let generation = region
                        .generation
                        .fetch_add(1, Ordering::Relaxed)
                        .wrapping_add(1);
                    let slot = Slot {
                        region,
                        index,
                        generation: generation << PHASE_BITS,
                    };
                    slot.state()
                        .store(slot.generation | EMPTY, Ordering::Relaxed);
                    return Some(slot);
                }
                Err(now) => taken = now,
            }
        }
    }

    fn at(&self) -> NonNull<u8> {
        // SAFETY: `index < SLOTS`, so the offset stays inside the region's mapping.
        unsafe { self.region.base.add(self.index * SLOT_BYTES) }
    }

    fn state(&self) -> &AtomicU32 {
        // SAFETY: the slot starts page-aligned plus a multiple of 512, so 4-aligned; the mapping
        // lives forever; any bits are a valid `AtomicU32`, and other processes touch it only
        // through atomics too.
        unsafe { self.at().cast::<AtomicU32>().as_ref() }
    }

    fn len(&self) -> &AtomicU32 {
        // SAFETY: as for `state`, four bytes further.
        unsafe { self.at().add(4).cast::<AtomicU32>().as_ref() }
    }

    /// In the child: writes `value` into the slot if it fits and carries no descriptor; whether
    /// it did (if not, nothing is reported here, and the caller sends it on the connection).
    pub(crate) fn write<T: Serialize>(&self, value: &T) -> Result<bool> {
        if self
            .state()
            .compare_exchange(
                self.generation | EMPTY,
                self.generation | WRITING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Ok(false);
        }
        // SAFETY: the state moved from EMPTY to WRITING here, so no other process of this
        // generation writes these bytes, and the parent reads them only after this process
        // sets FULL (module doc); the range lies inside the mapping.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(self.at().add(HEADER).as_ptr(), SLOT_BYTES - HEADER)
        };
        match codec::encode_to_slice(value, bytes)? {
            Some((n, fds)) if fds.is_empty() => {
                self.len().store(n as u32, Ordering::Relaxed);
                self.state()
                    .store(self.generation | FULL, Ordering::Release);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// In the parent, once the child's exit was reported: the outcome it left, if it left one;
    /// the slot is free again.
    pub(crate) fn take(self) -> Option<Vec<u8>> {
        let full = self.state().load(Ordering::Acquire) == self.generation | FULL;
        let len = self.len().load(Ordering::Relaxed) as usize;
        let out = (full && len <= SLOT_BYTES - HEADER).then(|| {
            let mut bytes = vec![0u8; len];
            // SAFETY: FULL|generation is the last store of this generation's one writer, which
            // writes nothing more (module doc), and its writes are visible (the Acquire above);
            // the source lies in the mapping, the destination is `len` bytes of our own.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.at().add(HEADER).as_ptr(),
                    bytes.as_mut_ptr(),
                    len,
                )
            };
            bytes
        });
        self.release();
        out
    }

    /// In the parent: frees the slot, whose child will not write it (it was never forked, or
    /// has exited, or reports on its connection).
    pub(crate) fn release(&self) {
        self.region
            .taken
            .fetch_and(!(1 << self.index), Ordering::Release);
    }
}

impl Region {
    fn new(owner: i32) -> Option<&'static Region> {
        use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous};
        // SAFETY: a fresh shared anonymous mapping at a kernel-chosen address aliases no Rust
        // object; it is never unmapped, so the pointers made from it stay valid.
        let base = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                SLOTS * SLOT_BYTES,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
            )
        }
        .ok()?;
        let region = Region {
            owner,
            base: NonNull::new(base.cast())?,
            taken: AtomicU64::new(0),
            generation: AtomicU32::new(0),
        };
        Some(Box::leak(Box::new(region)))
    }
}

#[cfg(test)]
mod tests {
    use super::{FULL, Ordering, Region, SLOTS, Slot};

    /// This test binary's region (the fork start keeps its own in `Global`).
    fn claim() -> Option<Slot> {
        static CELL: std::sync::Mutex<Option<&'static Region>> = std::sync::Mutex::new(None);
        Slot::claim(&mut CELL.lock().unwrap())
    }

    #[test]
    fn slots_are_claimed_once_and_read_back() {
        let mut held: Vec<Slot> = (0..SLOTS).map_while(|_| claim()).collect();
        // Other tests of this binary may hold slots meanwhile: at least one was free.
        assert!(!held.is_empty());
        let mut indexes: Vec<usize> = held.iter().map(|s| s.index).collect();
        indexes.sort_unstable();
        indexes.dedup();
        assert_eq!(indexes.len(), held.len(), "a slot was handed out twice");
        let s = held.pop().unwrap();
        assert!(s.write(&(7u64, "seven")).unwrap());
        let bytes = s.take().expect("the outcome written");
        assert_eq!(
            postcard::from_bytes::<(u64, String)>(&bytes).unwrap(),
            (7, "seven".into())
        );
        // Too large for a slot: not written, and the slot reads as no outcome.
        let s = claim().expect("the slot just freed");
        assert!(!s.write(&vec![1u8; 600]).unwrap());
        assert_eq!(s.take(), None);
        // A second writer (a copy of the child made by a raw fork) finds the slot taken.
        let s = claim().expect("the slot just freed");
        assert!(s.write(&1u8).unwrap());
        assert!(!s.write(&2u8).unwrap());
        assert_eq!(s.take(), Some(vec![1]));
        for s in held {
            assert_eq!(s.take(), None);
        }
    }

    #[test]
    fn a_late_writer_of_an_old_generation_is_ignored() {
        let first = claim().unwrap();
        // A copy of the child made by a raw fork, still holding the first claim.
        let late = Slot {
            region: first.region,
            index: first.index,
            generation: first.generation,
        };
        let index = first.index;
        first.release();
        // The same slot again (other tests may take slots meanwhile: look for it).
        let mut others = Vec::new();
        let next = loop {
            let s = claim().expect("a free slot");
            if s.index == index {
                break s;
            }
            others.push(s);
        };
        assert!(!late.write(&1u8).unwrap(), "the old generation wrote");
        late.state()
            .store(late.generation | FULL, Ordering::Release);
        assert!(
            !next.write(&2u8).unwrap(),
            "the slot looks taken to the next child"
        );
        assert_eq!(next.take(), None, "the late writer's store was read");
        for s in others {
            s.release();
        }
    }
}
