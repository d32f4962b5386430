//! The shared ring that carries large payloads beside a `SOCK_SEQPACKET` connection.
//!
//! A payload of [`RING_MIN`] bytes or more does not go through the socket: the sender copies it
//! into a ring of shared memory that it owns, and the socket carries only the frame's header
//! record, which says where in the ring the payload starts and passes the ring's descriptor.
//! The kernel path copies a payload twice too (into a socket buffer, out of it), but in records
//! of at most 128 KiB, each a system call and often a wake-up; through the ring, a 1 MiB
//! message is two `memcpy`s and a few atomic stores (about 4x the socket's throughput here).
//!
//! # Shared-memory layout
//! ```text
//! page 0 (RingHeader, #[repr(C)], all-zero = empty):
//!   line 0: magic: u64
//!   line 1, written by the sender:   head: u64 | rx_sleeping: u32 | data_seq: u32
//!   line 2, written by the receiver: tail: u64 | tx_sleeping: u32 | room_seq: u32
//! pages 1..: data, a power of two of bytes (RING_BYTES); position p is at p mod capacity
//! ```
//! `head` counts the bytes the sender has ever written, `tail` those the receiver has freed.
//! The sender owns `[head, tail + capacity)`, the receiver `[tail, head)`.
//!
//! # Frame
//! A ring frame is one record on the socket: the usual 12-byte header, whose descriptor count
//! has [`RING_FLAG`] set, then the payload's start position (`u64`, little endian). The
//! descriptors are the message's own; the first frame of a ring also carries the ring's memfd,
//! last, and says so with [`FD_FLAG`]. The receiver keeps its mapping of the ring:
//! - a receiving end sent to another process takes the mapping's descriptor along (its wire
//!   form), and [`split`](super::Connection::split) gives it to the receive half;
//! - a sending end sent to another process makes a new ring there and announces it; the
//!   receiver recognises a new ring by the memfd's inode and maps it instead;
//! - an end turned into its bare descriptor loses the mapping: a ring frame without the
//!   descriptor on an end that has none is [`Error::Malformed`], with a message that says so.
//!
//! Sending the memfd with every frame would make the receiver stateless, but a descriptor's
//! passing, install, `fstat` and close per message took 32 KiB ping-pongs from 16 us to 76 us
//! here (the extra microseconds on each side outlast the receive's spin).
//!
//! # States of one message
//! ```text
//! sender:   fill what is free now -> send the header record -> stream the rest (waiting for room)
//! receiver: header record -> publish tail := start -> copy what is published, free it, until len
//! ```
//! The payload starts at `head` rounded up to 64 bytes (glibc's `memcpy` is several times
//! slower for some misalignments on this CPU); the receiver moves `tail` to the start it was
//! told, which also frees bytes a sender wrote for a header it then failed to send.
//!
//! # Waiting and dead peers
//! Each side publishes its position with a `SeqCst` store, then wakes the other side if it
//! announced a sleep (`rx_sleeping` / `tx_sleeping`, a Dekker handshake as in ipc-sync's queue
//! ring: the sleeper reads the sequence word, announces, re-checks the position, and sleeps
//! only while the sequence word is unchanged; the waker bumps it). A waiter spins for
//! [`SPIN`] first when another CPU can run its peer. Sleeps last at most [`LOOK_EVERY`]: then
//! the waiter asks the socket whether the peer hung up (`POLLHUP`), so a peer killed in the
//! middle of a message ends the wait with an error ([`Error::Malformed`] for the receiver, a
//! broken pipe for the sender), never a hang.
//!
//! # Safety
//! The unsafe code maps the header and copies bytes between private buffers and the data pages.
//! Every position is reduced modulo the capacity and every copy is cut to it, so copies stay
//! inside the mapping whatever a peer writes into the header. The mapping itself cannot shrink:
//! the receiver maps only a memfd sealed against shrinking, of the exact layout above. By the
//! protocol, the ranges the two sides copy never overlap (the sender writes only free space, the
//! receiver reads only published bytes); a peer that breaks the protocol can garble the bytes
//! of its own messages, nothing else.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::fs::SealFlags;
use rustix::io::Errno;

use crate::error::{Error, Os, Result};
use crate::futex::{self, WaitOutcome};
use crate::shm::Segment;

/// Payloads of at least this many bytes travel through the ring (on `SOCK_SEQPACKET` sockets).
pub(super) const RING_MIN: usize = 32 << 10;

/// Set in a frame header's descriptor count: the payload is in the sender's ring.
pub(super) const RING_FLAG: u32 = 1 << 31;

/// Set with [`RING_FLAG`] when the ring's memfd comes with the frame (its last descriptor).
pub(super) const FD_FLAG: u32 = 1 << 30;

/// Bytes of a ring frame's record after the header: the payload's start position.
pub(super) const START_LEN: usize = 8;

/// The data capacity of a ring (a power of two).
const RING_BYTES: usize = 2 << 20;

/// The header page before the data.
const PAGE: usize = 4096;

/// The most a sender copies before it publishes, so the receiver can start on a large payload.
const PIECE: usize = 256 << 10;

/// Payload starts are rounded up to this.
const ALIGN: u64 = 64;

/// How long a waiter polls its peer's position before it sleeps.
const SPIN: Duration = Duration::from_micros(10);

/// The longest sleep before a waiter checks whether its peer hung up.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// "ipcring1", little endian: a mapped ring that was set up by a sender.
const MAGIC: u64 = u64::from_le_bytes(*b"ipcring1");

#[repr(C, align(64))]
struct Line<T>(T);

/// The ring's header page (see the module documentation).
#[repr(C)]
struct RingHeader {
    magic: Line<AtomicU64>,
    sender: Line<Side>,
    receiver: Line<Side>,
}

/// One side's words: its position, and the other side's sleep announcement and sequence word.
#[repr(C)]
struct Side {
    /// `head` for the sender, `tail` for the receiver.
    pos: AtomicU64,
    /// Set by the other side before it sleeps on `seq`.
    sleeping: AtomicU32,
    /// Bumped by this side to wake the other.
    seq: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<RingHeader>() <= PAGE);

/// A mapped ring: the segment and views of its header and data.
struct Mapped {
    seg: Segment,
}

impl Mapped {
    fn header(&self) -> &RingHeader {
        // SAFETY: the mapping is at least a page long and page aligned (checked or made so when
        // it was mapped), a `RingHeader` fits in a page, all-zero is a valid `RingHeader`
        // (atomics only), and it lives as long as `self.seg`.
        unsafe { &*self.seg.as_ptr().cast::<RingHeader>() }
    }

    fn capacity(&self) -> u64 {
        (self.seg.len() - PAGE) as u64
    }

    /// Copies `src` into the ring at position `at` (wrapping; at most a ring's worth).
    fn write_at(&self, at: u64, src: &[u8]) {
        let cap = self.capacity() as usize;
        let i = (at & (cap as u64 - 1)) as usize;
        let src = &src[..src.len().min(cap)];
        let first = src.len().min(cap - i);
        // SAFETY: `i < cap`, `first <= cap - i`, the rest (`<= cap - first`: `src` was cut to
        // `cap`) goes to the data's start; the `cap` data bytes follow the header page. Only
        // the sender writes free space, and nobody reads it (module doc).
        unsafe {
            let base = self.seg.as_ptr().add(PAGE);
            std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(i), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), base, src.len() - first);
        }
    }

    /// Copies ring bytes at position `at` (wrapping) into `dst` (at most a ring's worth).
    fn read_at(&self, at: u64, dst: &mut [MaybeUninit<u8>]) {
        let cap = self.capacity() as usize;
        let i = (at & (cap as u64 - 1)) as usize;
        let n = dst.len().min(cap);
        let first = n.min(cap - i);
        // SAFETY: as in `write_at`, with `dst` cut to `cap`; the range is published and not
        // freed yet, so only the receiver reads it and nobody writes it (module doc).
        unsafe {
            let base = self.seg.as_ptr().add(PAGE);
            let out = dst.as_mut_ptr().cast::<u8>();
            std::ptr::copy_nonoverlapping(base.add(i), out, first);
            std::ptr::copy_nonoverlapping(base, out.add(first), n - first);
        }
    }
}

/// The sending end's ring, made on its first large message.
pub(super) struct Outgoing {
    ring: Mapped,
    /// Whether a frame carrying the ring's memfd has been sent.
    announced: std::cell::Cell<bool>,
}

impl Outgoing {
    pub(super) fn new() -> Result<Outgoing> {
        let seg = Segment::new(PAGE + RING_BYTES)?;
        let m = Mapped { seg };
        m.header().magic.0.store(MAGIC, Ordering::Release);
        Ok(Outgoing {
            ring: m,
            announced: std::cell::Cell::new(false),
        })
    }

    /// Whether the receiver has been sent the ring's memfd.
    pub(super) fn announced(&self) -> bool {
        self.announced.get()
    }

    /// Records that a frame with the ring's memfd went out.
    pub(super) fn set_announced(&self) {
        self.announced.set(true);
    }

    /// The ring's memfd, sent with the ring's first frame.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.ring.seg.as_fd()
    }

    /// Starts a message of `parts` (concatenated): copies what fits now without waiting and
    /// returns the writer, whose [`start`](Writer::start) goes in the header.
    pub(super) fn begin<'a>(&'a self, parts: [&'a [u8]; 2]) -> Result<Writer<'a>> {
        let head = self.ring.header().sender.0.pos.load(Ordering::Relaxed);
        let start = head.next_multiple_of(ALIGN);
        let mut w = Writer {
            ring: &self.ring,
            parts,
            start,
            pos: start,
        };
        w.copy_free()?;
        Ok(w)
    }
}

/// A message being written into an [`Outgoing`] ring.
pub(super) struct Writer<'a> {
    ring: &'a Mapped,
    parts: [&'a [u8]; 2],
    start: u64,
    pos: u64,
}

impl Writer<'_> {
    /// The ring position of the payload's first byte.
    pub(super) fn start(&self) -> u64 {
        self.start
    }

    fn len(&self) -> u64 {
        (self.parts[0].len() + self.parts[1].len()) as u64
    }

    /// Free bytes at `pos`, from the receiver's published `tail`.
    fn room(&self) -> Result<u64> {
        let tail = self.ring.header().receiver.0.pos.load(Ordering::Acquire);
        match self.pos.checked_sub(tail) {
            Some(used) => Ok(self.ring.capacity().saturating_sub(used)),
            None => Err(Error::malformed(
                "the receiver of a connection's ring freed bytes that were never written",
            )),
        }
    }

    /// Copies as much as there is room for, publishing every [`PIECE`]; returns whether any
    /// byte was copied.
    fn copy_free(&mut self) -> Result<bool> {
        let mut any = false;
        loop {
            let done = self.pos - self.start;
            let left = self.len() - done;
            let room = self.room()?;
            if left == 0 || room == 0 {
                return Ok(any);
            }
            let n = left.min(room).min(PIECE as u64) as usize;
            let mut at = self.pos;
            let mut skip = done as usize;
            let mut todo = n;
            for part in self.parts {
                if skip >= part.len() {
                    skip -= part.len();
                    continue;
                }
                let take = (part.len() - skip).min(todo);
                self.ring.write_at(at, &part[skip..skip + take]);
                at += take as u64;
                todo -= take;
                skip = 0;
                if todo == 0 {
                    break;
                }
            }
            self.pos += n as u64;
            publish(&self.ring.header().sender.0, self.pos);
            any = true;
        }
    }

    /// Copies the rest of the message, waiting for the receiver to free room. `socket` is the
    /// connection's descriptor, asked whether the receiver hung up when a wait is long.
    pub(super) fn finish(mut self, socket: BorrowedFd<'_>) -> Result<()> {
        while self.pos - self.start < self.len() {
            crate::failpoint::hit("conn.send.partial");
            if self.copy_free()? {
                continue;
            }
            let ring = self.ring;
            let pos = self.pos;
            let cap = ring.capacity();
            let room = || -> Result<bool> {
                let tail = ring.header().receiver.0.pos.load(Ordering::SeqCst);
                Ok(pos.saturating_sub(tail) < cap)
            };
            match wait(&ring.header().receiver.0, room, None, socket)? {
                Waited::Ready => {}
                Waited::HungUp => return Err(Error::os(Errno::PIPE)),
                Waited::TimedOut => unreachable!("a send has no deadline"),
            }
        }
        Ok(())
    }
}

/// The receiving end's mapping of the peer's ring, kept while the peer sends with it.
pub(super) struct Incoming {
    ring: Mapped,
    key: (u64, u64),
}

impl Incoming {
    /// The ring behind `fd` (the last descriptor of a ring frame): `current` if it is the same
    /// ring, else a new mapping after checking the descriptor.
    pub(super) fn get(current: Option<Incoming>, fd: OwnedFd) -> Result<Incoming> {
        let st = rustix::fs::fstat(&fd).os()?;
        let key = (st.st_dev, st.st_ino);
        if let Some(c) = current.filter(|c| c.key == key) {
            return Ok(c);
        }
        crate::shm::check_seals(fd.as_fd(), SealFlags::SHRINK, "a connection's ring frame")?;
        let size = usize::try_from(st.st_size).unwrap_or(0);
        if size != PAGE + RING_BYTES {
            return Err(Error::malformed(format!(
                "a connection's ring frame came with a segment of {size} bytes, not {}",
                PAGE + RING_BYTES
            )));
        }
        let ring = Mapped {
            seg: Segment::from_fd(fd, size)?,
        };
        if ring.header().magic.0.load(Ordering::Acquire) != MAGIC {
            return Err(Error::malformed(
                "a connection's ring frame came with a segment that is not a ring",
            ));
        }
        Ok(Incoming { ring, key })
    }

    /// The ring's memfd (sent along when the receiving end moves to another process).
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.ring.seg.as_fd()
    }

    /// Reads the payload of `dst.len()` bytes that starts at `start`, freeing it as it goes.
    ///
    /// [`Error::Timeout`] if `deadline` passes first; [`Error::Malformed`] if the sender hung
    /// up before the payload was complete or its positions make no sense.
    pub(super) fn read(
        &self,
        start: u64,
        dst: &mut [MaybeUninit<u8>],
        deadline: Option<Instant>,
        socket: BorrowedFd<'_>,
    ) -> Result<()> {
        let ring = &self.ring;
        let cap = ring.capacity();
        // Acquire: the last reader may have been another process (the end moved).
        let tail = ring.header().receiver.0.pos.load(Ordering::Acquire);
        // The start is past the alignment padding and any bytes of a header that was never
        // sent, at most a ring's worth.
        if start < tail || start - tail > cap + ALIGN {
            return Err(Error::malformed(format!(
                "a ring frame's payload starts at {start}, outside the ring (freed up to {tail})"
            )));
        }
        if start > tail {
            // Free the padding and any orphaned bytes now: a sender whose orphans filled the
            // ring waits for this room before it can write the payload.
            publish(&ring.header().receiver.0, start);
        }
        let mut pos = start;
        let end = start + dst.len() as u64;
        while pos < end {
            let published = ring.header().sender.0.pos.load(Ordering::Acquire);
            if published <= pos {
                let ready = || Ok(ring.header().sender.0.pos.load(Ordering::SeqCst) > pos);
                match wait(&ring.header().sender.0, ready, deadline, socket)? {
                    Waited::Ready => continue,
                    Waited::TimedOut => return Err(Error::Timeout),
                    Waited::HungUp => {
                        return Err(Error::malformed(format!(
                            "the peer hung up after {} of {} payload bytes",
                            pos - start,
                            dst.len()
                        )));
                    }
                }
            }
            if published - pos > cap {
                return Err(Error::malformed(
                    "the sender of a connection's ring published bytes it had no room for",
                ));
            }
            let n = (published.min(end) - pos) as usize;
            let at = (pos - start) as usize;
            ring.read_at(pos, &mut dst[at..at + n]);
            pos += n as u64;
            publish(&ring.header().receiver.0, pos);
        }
        Ok(())
    }

    /// [`read`](Self::read) into initialised memory.
    pub(super) fn read_to_slice(
        &self,
        start: u64,
        dst: &mut [u8],
        deadline: Option<Instant>,
        socket: BorrowedFd<'_>,
    ) -> Result<()> {
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and `read` only ever writes
        // initialised bytes through the view, so `dst` stays initialised.
        let dst = unsafe { &mut *(std::ptr::from_mut(dst) as *mut [MaybeUninit<u8>]) };
        self.read(start, dst, deadline, socket)
    }

    /// [`read`](Self::read) appending to `body` (whose spare capacity holds at least `len`).
    pub(super) fn read_to_vec(
        &self,
        start: u64,
        len: usize,
        body: &mut Vec<u8>,
        deadline: Option<Instant>,
        socket: BorrowedFd<'_>,
    ) -> Result<()> {
        let old = body.len();
        self.read(
            start,
            &mut body.spare_capacity_mut()[..len],
            deadline,
            socket,
        )?;
        // SAFETY: `read` returned Ok, so it initialised all `len` bytes of the spare capacity
        // after `old` (its loop copies every byte of `dst`, in order, before it returns Ok).
        unsafe { body.set_len(old + len) };
        Ok(())
    }
}

/// Publishes a side's new position and wakes the other side if it announced a sleep.
fn publish(side: &Side, pos: u64) {
    side.pos.store(pos, Ordering::SeqCst);
    if side.sleeping.load(Ordering::SeqCst) != 0 && side.sleeping.swap(0, Ordering::SeqCst) != 0 {
        side.seq.fetch_add(1, Ordering::Release);
        futex::wake_one(&side.seq);
    }
}

enum Waited {
    Ready,
    TimedOut,
    HungUp,
}

/// Waits until `ready()` holds, for a change published on `side` (the other side's words).
fn wait(
    side: &Side,
    mut ready: impl FnMut() -> Result<bool>,
    deadline: Option<Instant>,
    socket: BorrowedFd<'_>,
) -> Result<Waited> {
    if crate::spin::several_cpus() {
        let until = Instant::now() + SPIN;
        while Instant::now() < until {
            if ready()? {
                return Ok(Waited::Ready);
            }
            std::hint::spin_loop();
        }
    }
    loop {
        let seq = side.seq.load(Ordering::Acquire);
        side.sleeping.store(1, Ordering::SeqCst);
        if ready()? {
            side.sleeping.store(0, Ordering::Relaxed);
            return Ok(Waited::Ready);
        }
        let look = Instant::now() + LOOK_EVERY;
        let until = deadline.map_or(look, |d| d.min(look));
        if futex::wait(&side.seq, seq, Some(until)) == WaitOutcome::Woken {
            continue;
        }
        if ready()? {
            return Ok(Waited::Ready);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Waited::TimedOut);
        }
        if hung_up(socket)? {
            // The peer published everything before it closed: look once more.
            return Ok(if ready()? {
                Waited::Ready
            } else {
                Waited::HungUp
            });
        }
    }
}

/// Whether the peer of `socket` has closed its end.
fn hung_up(socket: BorrowedFd<'_>) -> Result<bool> {
    let mut pfd = [PollFd::new(&socket, PollFlags::empty())];
    crate::deadline::poll_until(&mut pfd, Some(Instant::now()))?;
    Ok(pfd[0]
        .revents()
        .intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL))
}
