//! The shared heap: many small zero-initialised objects packed into few memfd segments.
//!
//! A lock or a counter needs a few bytes of shared memory; giving each its own memfd would cost a
//! file descriptor, a mapping and a page apiece, so 100 000 locks would exhaust the descriptor
//! limit. Instead [`ShmBox`] and [`ShmSlice`] take *blocks* from *arenas*: memfd [`Segment`]s of
//! 64 KiB, then 128 KiB, ... up to 1 MiB each, so 100 000 small objects live in a handful of
//! descriptors. An allocation above [`BIG_ALLOCATION`] bytes gets a segment of its own, so it is
//! returned to the kernel as soon as its last handle goes.
//!
//! # Arena layout
//! ```text
//! offset 0                                                     64
//! +-----------+-------------+--------------+---- padding ------+---- blocks ...  ----+
//! | magic u64 | next: u64   | live: u64    |                   | bump-allocated,     |
//! | "ipcheap1"| (atomic)    | (atomic)     |                   | never reused        |
//! +-----------+-------------+--------------+-------------------+---------------------+
//! ```
//! - `magic` tells a received descriptor that is an arena from any other segment.
//! - `next` is the bump cursor. It lives in the shared header, not in the allocating process, so
//!   that a process forked while it had a current arena and its parent, which both keep
//!   allocating from that arena through one `MAP_SHARED` mapping, never get the same block.
//! - `live` counts the handles ([`ShmBox`], [`ShmSlice`]) into the arena in every process:
//!   each `new`, `clone` and deserialization adds one, each drop takes one. It is a diagnostic
//!   ([`ShmBox::arena_handles`]): handles copied by `fork` are not counted, so it may be low
//!   after a fork, and no decision that could hand out a block twice depends on it.
//!
//! # Freeing
//! Blocks are never reused: the cursor only moves forward, so a block cannot be handed out twice
//! while a handle to it exists anywhere (in this process, in a process that received it, or in a
//! message still in flight, whose duplicated descriptor keeps the memory alive). What is freed is
//! whole arenas:
//! - Every handle holds an `Arc` of its arena's mapping in its process. A process unmaps an arena
//!   and closes its descriptor when it holds no handle into it and the arena is not its
//!   allocator's current arena.
//! - The kernel frees the memory when the last mapping and the last descriptor (in any process,
//!   or in a message in flight) are gone.
//!
//! Costs of this scheme: memory freed by dropping one object is only returned when its whole
//! arena is unused everywhere, so one long-lived object keeps up to 1 MiB alive (Python's
//! `multiprocessing.heap` has the same granularity with its arenas); a program that creates and
//! drops objects forever creates a new arena per 1 MiB allocated, costing a few syscalls each;
//! and every clone and drop of a handle is one atomic operation on the arena's header, a cache
//! line shared by all processes using that arena.
//!
//! # Receiving
//! A handle travels as `(descriptor, offset, count, element size, pid namespace)` through
//! [`codec::encode`] and [`codec::decode`]. A handle from another pid namespace is refused: the
//! locks built on this heap name their holders by pid, which means someone else (or no one) in
//! another namespace, so a live holder would look dead and its lock be granted twice. A process receiving many handles into one arena maps it once: a per-process
//! registry keyed by the memfd's inode (`st_dev`, `st_ino`) holds weak references to the arenas
//! mapped here. A received handle is checked before use: the descriptor must be a sealed arena (so
//! no peer can shrink it under us, which would make reads a SIGBUS), and the block must lie inside
//! it, be aligned for `T` and have `T`'s size. A bad message is an [`Error`], never an
//! out-of-bounds access.
//!
//! # Zero state
//! Every block starts all-zero: arenas are fresh `ftruncate`d memfds and blocks are never
//! reused, so no dirty memory is ever handed out. This is why [`ShmSafe`] types must take
//! all-zero bytes as a valid value.
//!
//! # Safety
//! This module turns offsets in mapped segments into references. The argument rests on four
//! facts checked here: a block lies inside its arena's mapping (checked on allocation and on
//! receipt); the mapping lives as long as any handle (each handle holds an `Arc` of it); the
//! block is aligned for `T` (arena mappings are page aligned, offsets are multiples of
//! `align_of::<T>()`, which is at most a page); and any bytes are a valid `T` (the contract of
//! [`ShmSafe`]), so whatever another process wrote there, reading it is defined.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{
    AtomicI8, AtomicI16, AtomicI32, AtomicI64, AtomicIsize, AtomicU8, AtomicU16, AtomicU32,
    AtomicU64, AtomicUsize, Ordering,
};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use rustix::fs::SealFlags;
use serde::{Deserialize, Serialize};

use super::Segment;
use crate::codec::{self, TransferFd};
use crate::error::{Error, Os, Result};
use crate::sys;

/// Types that may live in shared memory.
///
/// A `T: ShmSafe` is created by the heap as all-zero bytes, read by several processes at once,
/// mapped at different addresses in each, and written by processes this one does not control.
///
/// # Safety
/// Implement it only for types where all of this holds:
/// - **Every bit pattern is a valid value**, all-zero bytes in particular (it is the initial
///   value, and another process may have written anything). So `bool`, `char`, enums,
///   references and `NonZero*` are out; `AtomicBool` too (only 0 and 1 are valid `bool`s).
/// - **A stable layout**: `#[repr(C)]` (or `#[repr(transparent)]`) over `ShmSafe` fields, or a
///   primitive, so every process of the same binary agrees on the bytes.
/// - **Nothing process-local inside**: no pointers, references, file descriptors, or ownership of
///   heap memory. The heap never runs the type's destructor.
/// - **Sync**: shared mutation happens only through atomics, or through raw pointers by callers
///   that hold a lock (see [`ShmBox::as_ptr`]).
///
/// A `ShmSafe` type may be plain data (`u64`, a `#[repr(C)]` struct of numbers), which other
/// processes may write at any moment: a [`ShmBox`] of it gives copies ([`ShmBox::read`],
/// [`ShmBox::write`]), never a `&T`. Types whose every shared mutation goes through atomics
/// are also [`ShmSync`], and a box of one derefs to `&T`.
///
/// ```
/// use std::sync::atomic::{AtomicU32, AtomicU64};
/// use ipc_core::shm::{ShmBox, ShmSafe, ShmSync};
///
/// #[repr(C)]
/// struct Counter {
///     state: AtomicU32,
///     hits: AtomicU64,
/// }
/// // SAFETY: repr(C) over atomics: any bytes are a valid Counter, nothing process-local inside.
/// unsafe impl ShmSafe for Counter {}
/// // SAFETY: every field is an atomic, so every change through `&Counter` is atomic.
/// unsafe impl ShmSync for Counter {}
///
/// let c = ShmBox::<Counter>::new().unwrap();
/// assert_eq!(c.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
/// ```
pub unsafe trait ShmSafe: Sync + Sized + 'static {}

/// A [`ShmSafe`] type that may be *referenced* from many processes at once: every change another
/// process can make to it while a `&T` lives here goes through atomics (Rust's `&T` promises
/// that nothing else changes the bytes, unless they sit in an `UnsafeCell` such as an atomic's).
/// A [`ShmBox`] or [`ShmSlice`] of such a type derefs to `&T`.
///
/// # Safety
/// All of `T`'s bytes that any process may change while it is shared are inside atomics (or
/// other `UnsafeCell`s changed only by atomic operations): no method reachable through `&T`
/// writes them non-atomically.
///
/// ```compile_fail
/// // A plain number can be written by another process at any moment: no `&u64` to it.
/// let b = ipc_core::shm::ShmBox::<u64>::new().unwrap();
/// let r: &u64 = &*b;
/// ```
pub unsafe trait ShmSync: ShmSafe {}

macro_rules! shm_safe {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: a primitive number: every bit pattern is a valid value, its layout is
            // fixed, and it holds nothing process-local.
            unsafe impl ShmSafe for $t {}
        )*
    };
}

macro_rules! shm_sync {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: an atomic of a primitive: every bit pattern is valid, its layout is that of
            // the primitive, it holds nothing process-local, and every change through `&Self` is
            // an atomic operation.
            unsafe impl ShmSafe for $t {}
            // SAFETY: as above: all mutation through `&Self` is atomic.
            unsafe impl ShmSync for $t {}
        )*
    };
}

shm_safe!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64,
);

shm_sync!(
    AtomicU8,
    AtomicU16,
    AtomicU32,
    AtomicU64,
    AtomicUsize,
    AtomicI8,
    AtomicI16,
    AtomicI32,
    AtomicI64,
    AtomicIsize,
);

// SAFETY: a zero-sized type has no bytes to be invalid, shared, or changed.
unsafe impl ShmSafe for () {}
// SAFETY: as above: nothing to change.
unsafe impl ShmSync for () {}

// SAFETY: an array has no padding between elements and no bytes of its own, so its bit patterns
// are exactly the sequences of valid `T`s; everything else follows from `T: ShmSafe`.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}
// SAFETY: an array's bytes are its elements', each changed only atomically (`T: ShmSync`).
unsafe impl<T: ShmSync, const N: usize> ShmSync for [T; N] {}

/// Allocations larger than this many bytes get a segment of their own.
///
/// Such a segment is returned to the kernel as soon as its last handle (in any process) goes,
/// where small objects share arenas and are returned only together.
///
/// ```
/// use ipc_core::shm::{BIG_ALLOCATION, ShmSlice};
/// let own = ShmSlice::<u8>::new(BIG_ALLOCATION + 1).unwrap();
/// assert_eq!(own.arena_handles(), 1); // nothing else lives in its segment
/// ```
pub const BIG_ALLOCATION: usize = 256 * 1024;

/// The header's size; blocks start after it, so block offsets are never below it.
const HEADER: usize = 64;
/// The size of a process's first arena; each next one doubles, up to [`LAST_ARENA`].
const FIRST_ARENA: usize = 64 * 1024;
const LAST_ARENA: usize = 1024 * 1024;
/// Allocations of at least this many bytes are aligned to a cache line.
const CACHE_LINE: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"ipcheap1");

/// The first cache line of every arena (see the module doc).
#[repr(C)]
struct Header {
    magic: AtomicU64,
    next: AtomicU64,
    live: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER);

/// One arena mapped into this process.
struct Arena {
    seg: Segment,
    /// The memfd's identity (`st_dev`, `st_ino`): the registry key.
    key: (u64, u64),
}

/// Arenas mapped in this process, by inode, so that handles into one arena share one mapping.
///
/// Lock order: the allocator's lock may be held while this one is taken (dropping the old
/// current arena), never the other way round.
static REGISTRY: Mutex<BTreeMap<(u64, u64), Weak<Arena>>> = Mutex::new(BTreeMap::new());

impl Arena {
    /// Creates a fresh arena of `len` bytes (`len > HEADER`) and registers it.
    fn create(len: usize) -> Result<Arc<Arena>> {
        let seg = Segment::new(len)?;
        let key = inode_key(&seg)?;
        let arena = Arc::new(Arena { seg, key });
        let h = arena.header();
        h.next.store(HEADER as u64, Ordering::Relaxed);
        // Release: a process that maps this arena after receiving a handle sees the cursor too.
        h.magic.store(MAGIC, Ordering::Release);
        REGISTRY.lock().insert(key, Arc::downgrade(&arena));
        Ok(arena)
    }

    /// The arena behind a received descriptor: the one mapped here already, or a new mapping.
    fn receive(fd: OwnedFd) -> Result<Arc<Arena>> {
        let st = rustix::fs::fstat(&fd).os()?;
        let key = (st.st_dev as u64, st.st_ino as u64);
        if let Some(a) = REGISTRY.lock().get(&key).and_then(Weak::upgrade) {
            return Ok(a);
        }
        super::check_seals(fd.as_fd(), SealFlags::SHRINK, "a shared-heap handle")?;
        let size = usize::try_from(st.st_size).unwrap_or(0);
        if size < HEADER {
            return Err(Error::malformed(format!(
                "a shared-heap handle arrived with a segment of {size} bytes, too small for an arena"
            )));
        }
        let seg = Segment::from_fd(fd, size)?;
        let fresh = Arc::new(Arena { seg, key });
        if fresh.header().magic.load(Ordering::Acquire) != MAGIC {
            return Err(Error::malformed(
                "a shared-heap handle arrived with a segment that is not a shared-heap arena",
            ));
        }
        let mut reg = REGISTRY.lock();
        // Another thread may have mapped the same arena meanwhile: use its mapping, and drop
        // ours after unlocking (an arena's drop takes this lock).
        if let Some(existing) = reg.get(&key).and_then(Weak::upgrade) {
            drop(reg);
            drop(fresh);
            return Ok(existing);
        }
        reg.insert(key, Arc::downgrade(&fresh));
        Ok(fresh)
    }

    fn header(&self) -> &Header {
        // SAFETY: every arena is at least HEADER bytes (checked on creation and receipt) and
        // page aligned, so its first bytes hold an aligned Header for as long as `self` lives;
        // Header is atomics only, for which any bytes are valid and shared mutation is defined.
        unsafe { &*(self.seg.as_ptr() as *const Header) }
    }

    /// Takes `size` bytes aligned to `align` from the cursor, never below `floor`.
    ///
    /// `floor` is the end of this process's last block here: even if a peer moved the shared
    /// cursor back, this process never hands out the same block twice.
    fn bump(&self, size: usize, align: usize, floor: &mut u64) -> Option<usize> {
        let len = self.seg.len() as u64;
        let mut start = 0;
        self.header()
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                let s = align_up(cur.max(*floor).max(HEADER as u64), align as u64)?;
                let end = s.checked_add(size as u64)?;
                // The closure's last run is the one whose result was stored.
                start = s;
                (end <= len).then_some(end)
            })
            .ok()?;
        *floor = start + size as u64;
        Some(start as usize)
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        let mut reg = REGISTRY.lock();
        // Remove our entry unless it already names a newer mapping of the same inode.
        // (`strong_count`, not `upgrade`: a temporary strong handle could be the last one and
        // run this drop again under the lock.)
        if reg.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
            reg.remove(&self.key);
        }
    }
}

fn inode_key(fd: impl AsFd) -> Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd).os()?;
    Ok((st.st_dev as u64, st.st_ino as u64))
}

fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// This process's allocator: the arena blocks are taken from now.
struct Allocator {
    current: Option<Arc<Arena>>,
    /// The end of the last block taken from `current` by this process.
    floor: u64,
    /// The size of the next arena.
    next_len: usize,
}

static ALLOCATOR: Mutex<Allocator> = Mutex::new(Allocator {
    current: None,
    floor: 0,
    next_len: FIRST_ARENA,
});

/// Allocates a zeroed block of `size` bytes aligned to `align` (a power of two).
fn allocate(size: usize, align: usize) -> Result<(Arc<Arena>, usize)> {
    let page = rustix::param::page_size();
    if align > page {
        return Err(Error::misuse(format!(
            "the shared heap aligns to at most a page ({page} bytes); this type needs {align}"
        )));
    }
    let align = if size >= CACHE_LINE {
        align.max(CACHE_LINE)
    } else {
        align
    };
    let too_big = || Error::misuse(format!("a shared allocation of {size} bytes is too large"));
    if size > BIG_ALLOCATION {
        // A segment of its own: the block starts at the first aligned offset after the header.
        let offset = HEADER.next_multiple_of(align);
        let len = offset.checked_add(size).ok_or_else(too_big)?;
        if len > isize::MAX as usize {
            return Err(too_big());
        }
        let arena = Arena::create(len)?;
        let mut floor = 0;
        let got = arena.bump(size, align, &mut floor);
        debug_assert_eq!(got, Some(offset));
        return got.map(|o| (arena, o)).ok_or_else(too_big);
    }
    let mut a = ALLOCATOR.lock();
    let a = &mut *a;
    if let Some(cur) = &a.current
        && let Some(offset) = cur.bump(size, align, &mut a.floor)
    {
        return Ok((cur.clone(), offset));
    }
    // The current arena is full: start the next one, big enough for this block.
    let len = a
        .next_len
        .max((HEADER + align + size).next_multiple_of(page));
    let arena = Arena::create(len)?;
    a.next_len = (a.next_len * 2).min(LAST_ARENA);
    a.floor = 0;
    let offset = arena
        .bump(size, align, &mut a.floor)
        .expect("a fresh arena holds the block it was sized for");
    // The old arena is dropped here if no handle holds it (it unregisters under the registry
    // lock, which is taken after the allocator's, as the lock order says).
    a.current = Some(arena.clone());
    Ok((arena, offset))
}

/// A handle on a block: keeps its arena mapped and counted.
struct Block {
    arena: Arc<Arena>,
    offset: usize,
}

impl Block {
    /// Counts a new handle and wraps it.
    fn new(arena: Arc<Arena>, offset: usize) -> Block {
        arena.header().live.fetch_add(1, Ordering::Relaxed);
        Block { arena, offset }
    }

    #[inline]
    fn ptr(&self) -> *mut u8 {
        // SAFETY: `offset` lies inside the mapping (checked by `allocate` or `receive_block`),
        // so the pointer stays within the same allocated object.
        unsafe { self.arena.seg.as_ptr().add(self.offset) }
    }

    fn live(&self) -> u64 {
        self.arena.header().live.load(Ordering::Relaxed)
    }
}

impl Clone for Block {
    fn clone(&self) -> Block {
        Block::new(self.arena.clone(), self.offset)
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // Saturating: after a fork the children's copies were never counted (see module doc).
        let _ = self
            .arena
            .header()
            .live
            .fetch_update(Ordering::Release, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inode {} offset {}", self.arena.key.1, self.offset)
    }
}

/// Allocates a block for `count` `T`s.
fn allocate_for<T: ShmSafe>(count: usize) -> Result<Block> {
    let size = std::mem::size_of::<T>()
        .checked_mul(count)
        .ok_or_else(|| Error::misuse(format!("a shared slice of {count} elements is too large")))?;
    let (arena, offset) = allocate(size, std::mem::align_of::<T>())?;
    Ok(Block::new(arena, offset))
}

/// The wire form of a handle: `(descriptor, offset, count, element size, pid namespace)`.
fn serialize_block<S: serde::Serializer>(
    b: &Block,
    count: usize,
    elem: usize,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeTuple;
    struct Fd<'a>(&'a Segment);
    impl Serialize for Fd<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            codec::serialize_fd(self.0.as_fd(), s)
        }
    }
    let mut t = s.serialize_tuple(5)?;
    t.serialize_element(&Fd(&b.arena.seg))?;
    t.serialize_element(&(b.offset as u64))?;
    t.serialize_element(&(count as u64))?;
    t.serialize_element(&(elem as u64))?;
    t.serialize_element(&sys::pid_namespace())?;
    t.end()
}

/// Reads the wire form and checks it describes `count` `T`s inside a real arena.
///
/// `expect_count` is `Some(1)` for a box; a slice takes whatever count arrived.
fn deserialize_block<'de, T: ShmSafe, D: serde::Deserializer<'de>>(
    d: D,
    expect_count: Option<u64>,
) -> std::result::Result<(Block, usize), D::Error> {
    let (fd, offset, count, elem, pid_ns) = <(TransferFd, u64, u64, u64, u64)>::deserialize(d)?;
    check_pid_namespace(pid_ns)
        .and_then(|()| receive_block::<T>(fd.0, offset, count, elem, expect_count))
        .map_err(|e| serde::de::Error::custom(codec::remember(e.to_string())))
}

/// Refuses a handle sent from another pid namespace. ipc-sync's locks name their holders by
/// pid, and a pid read in another namespace names someone else or no one: a live holder would
/// look dead, and its lock (with the `&mut T` of a `Value` under it) would be granted twice.
/// A side that cannot read its namespace (0: no `/proc`) cannot tell, and is not refused.
fn check_pid_namespace(theirs: u64) -> Result<()> {
    let ours = sys::pid_namespace();
    if theirs == ours || theirs == 0 || ours == 0 {
        return Ok(());
    }
    Err(Error::misuse(format!(
        "received a shared object from another pid namespace (its {theirs}, ours {ours}): \
         shared objects cannot cross pid namespaces, because their locks name holders by pid, \
         which another namespace reads as someone else; share them only between processes of \
         one pid namespace"
    )))
}

fn receive_block<T: ShmSafe>(
    fd: OwnedFd,
    offset: u64,
    count: u64,
    elem: u64,
    expect_count: Option<u64>,
) -> Result<(Block, usize)> {
    let ty = std::any::type_name::<T>();
    let size = std::mem::size_of::<T>() as u64;
    if elem != size {
        return Err(Error::malformed(format!(
            "received a shared object of {elem}-byte elements where {ty} ({size} bytes) was expected"
        )));
    }
    if let Some(n) = expect_count
        && n != count
    {
        return Err(Error::malformed(format!(
            "received a shared slice of {count} elements where one {ty} was expected"
        )));
    }
    let arena = Arena::receive(fd)?;
    let bytes = count.checked_mul(size);
    let end = bytes.and_then(|b| offset.checked_add(b));
    let inside = end.is_some_and(|e| e <= arena.seg.len() as u64);
    if offset < HEADER as u64 || !inside {
        return Err(Error::malformed(format!(
            "received a shared object at offset {offset} ({count} x {size} bytes) that does not \
             lie inside its {}-byte arena",
            arena.seg.len()
        )));
    }
    // The mapping is only page aligned: an offset aligned for `T` gives an aligned address only
    // when `T` needs no more than a page (as `allocate` also requires).
    let align = std::mem::align_of::<T>() as u64;
    if align > rustix::param::page_size() as u64 || !offset.is_multiple_of(align) {
        return Err(Error::malformed(format!(
            "received a shared object at offset {offset}, which is not aligned for {ty}"
        )));
    }
    let count = usize::try_from(count).map_err(|_| Error::malformed("count out of range"))?;
    Ok((Block::new(arena, offset as usize), count))
}

/// One zero-initialised `T` in the shared heap.
///
/// Packed with other objects into few memfd segments (the [module doc](crate::shm::heap) tells how,
/// and when memory is freed). Clones share the same memory; so does a copy that travelled to
/// another process through a [`Connection`](crate::conn::Connection) or as a process argument, and
/// many boxes of one segment arriving in a process share one mapping.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use ipc_core::shm::ShmBox;
///
/// let counter = ShmBox::<AtomicU64>::new().unwrap();
/// let other = counter.clone(); // the same shared memory
/// other.fetch_add(5, Ordering::SeqCst);
/// assert_eq!(counter.load(Ordering::SeqCst), 5);
///
/// // Through a connection, as another process would receive it.
/// let (a, b) = ipc_core::conn::pipe().unwrap();
/// a.send(&counter).unwrap();
/// let received: ShmBox<AtomicU64> = b.recv().unwrap();
/// received.fetch_add(1, Ordering::SeqCst);
/// assert_eq!(counter.load(Ordering::SeqCst), 6);
/// ```
pub struct ShmBox<T: ShmSafe> {
    block: Block,
    _t: PhantomData<T>,
}

// SAFETY: a ShmBox only hands out `&T` (and a raw pointer): sending it to another thread is
// sharing `&T`, which `T: Sync` (a supertrait of ShmSafe) allows; it never drops a `T`.
unsafe impl<T: ShmSafe> Send for ShmBox<T> {}
// SAFETY: `&ShmBox<T>` gives only `&T` and a raw pointer; `T: Sync`.
unsafe impl<T: ShmSafe> Sync for ShmBox<T> {}

impl<T: ShmSafe> ShmBox<T> {
    /// Allocates an all-zero `T` in the shared heap.
    ///
    /// Errors: the type is aligned above a page ([`Error::Misuse`]), or the system refused a
    /// new segment ([`Error::Io`], for example when out of descriptors or memory).
    ///
    /// ```
    /// let b = ipc_core::shm::ShmBox::<[u32; 4]>::new().unwrap();
    /// assert_eq!(b.read(), [0; 4]);
    /// ```
    pub fn new() -> Result<Self> {
        Ok(ShmBox {
            block: allocate_for::<T>(1)?,
            _t: PhantomData,
        })
    }

    /// The object's address in this process, for callers that write plain data under a lock.
    ///
    /// Writing through it is `unsafe` for the caller: no other thread or process may read or
    /// write the same bytes non-atomically at the same time.
    ///
    /// ```
    /// let b = ipc_core::shm::ShmBox::<u64>::new().unwrap();
    /// // SAFETY: nobody else has this box yet.
    /// unsafe { b.as_ptr().write(7) };
    /// assert_eq!(b.read(), 7);
    /// ```
    pub fn as_ptr(&self) -> *mut T {
        self.block.ptr().cast()
    }

    /// How many handles into this object's arena are alive in all processes (a diagnostic).
    ///
    /// Every `new`, `clone` and received copy counts one, every drop takes one away; handles
    /// copied by `fork` are not counted. Objects share arenas, so this counts their handles too.
    ///
    /// ```
    /// let a = ipc_core::shm::ShmBox::<[u8; 300_000]>::new().unwrap(); // its own segment
    /// let b = a.clone();
    /// assert_eq!(a.arena_handles(), 2);
    /// drop(b);
    /// assert_eq!(a.arena_handles(), 1);
    /// ```
    pub fn arena_handles(&self) -> u64 {
        self.block.live()
    }
}

/// Copies in and out, for plain data that other processes may write at any moment (a plain
/// `ShmSafe` box has no `Deref`: a `&T` would let the compiler assume the bytes do not change).
impl<T: ShmSafe + Copy> ShmBox<T> {
    /// A copy of the value (a volatile read).
    ///
    /// Safe whatever other processes do, but not a snapshot: a value written concurrently may
    /// be read half old, half new (any bytes are a valid `T`). Hold a lock around writers and
    /// readers, or use an atomic `T`, where that matters. Volatile accesses are how memory that
    /// others change is read without a `&T` the compiler may cache (rust-vmm's `vm-memory`
    /// reads guest memory the same way).
    ///
    /// ```
    /// let b = ipc_core::shm::ShmBox::<[u16; 3]>::new()?;
    /// b.write([1, 2, 3]);
    /// assert_eq!(b.read(), [1, 2, 3]);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn read(&self) -> T {
        // SAFETY: the block holds one T, aligned and inside the mapping that `self.block.arena`
        // keeps alive; any bytes are a valid T (ShmSafe), so a torn read is still a T.
        unsafe { self.as_ptr().read_volatile() }
    }

    /// Replaces the value (a volatile write); see [`read`](Self::read) for what concurrent
    /// readers may see.
    pub fn write(&self, value: T) {
        // SAFETY: as in `read`; no `&T` to these bytes exists (a plain `ShmSafe` box never
        // hands one out: only `ShmSync` types, changed through atomics, deref).
        unsafe { self.as_ptr().write_volatile(value) }
    }
}

impl<T: ShmSync> Deref for ShmBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the block holds one T, aligned and inside the mapping that `self.block.arena`
        // keeps alive; any bytes are a valid T (ShmSafe). Other processes change a ShmSync type
        // only through atomics, which a `&T` permits (they live in UnsafeCells).
        unsafe { &*self.as_ptr() }
    }
}

impl<T: ShmSafe> Clone for ShmBox<T> {
    /// Another handle on the same shared memory.
    fn clone(&self) -> Self {
        ShmBox {
            block: self.block.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: ShmSafe> fmt::Debug for ShmBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ShmBox<{}>({:?})",
            std::any::type_name::<T>(),
            self.block
        )
    }
}

impl<T: ShmSafe> Serialize for ShmBox<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_block(&self.block, 1, std::mem::size_of::<T>(), s)
    }
}

impl<'de, T: ShmSafe> Deserialize<'de> for ShmBox<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (block, _) = deserialize_block::<T, D>(d, Some(1))?;
        Ok(ShmBox {
            block,
            _t: PhantomData,
        })
    }
}

/// `len` zero-initialised `T`s, contiguous, in the shared heap.
///
/// Small slices are packed into shared arenas like [`ShmBox`]; a slice above
/// [`BIG_ALLOCATION`] bytes gets a segment of its own. Clones and received copies share the
/// memory.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use ipc_core::shm::ShmSlice;
///
/// let s = ShmSlice::<AtomicU32>::new(1000).unwrap();
/// assert_eq!(s.len(), 1000);
/// s[999].store(3, Ordering::Relaxed);
/// let t = s.clone();
/// assert_eq!(t[999].load(Ordering::Relaxed), 3);
/// ```
pub struct ShmSlice<T: ShmSafe> {
    block: Block,
    len: usize,
    _t: PhantomData<T>,
}

// SAFETY: as for ShmBox: only `&[T]` and a raw pointer are handed out, and `T: Sync`.
unsafe impl<T: ShmSafe> Send for ShmSlice<T> {}
// SAFETY: as for ShmBox.
unsafe impl<T: ShmSafe> Sync for ShmSlice<T> {}

impl<T: ShmSafe> ShmSlice<T> {
    /// Allocates `len` all-zero `T`s in the shared heap.
    ///
    /// Errors as [`ShmBox::new`], and [`Error::Misuse`] when `len * size_of::<T>()` overflows.
    ///
    /// ```
    /// let s = ipc_core::shm::ShmSlice::<u8>::new(1 << 20).unwrap(); // its own segment
    /// assert!(s.to_vec().iter().all(|&b| b == 0));
    /// ```
    pub fn new(len: usize) -> Result<Self> {
        Ok(ShmSlice {
            block: allocate_for::<T>(len)?,
            len,
            _t: PhantomData,
        })
    }

    /// The first element's address in this process, for callers that write plain data under a
    /// lock (see [`ShmBox::as_ptr`]).
    ///
    /// ```
    /// let s = ipc_core::shm::ShmSlice::<u16>::new(4).unwrap();
    /// // SAFETY: nobody else has this slice yet; index 3 is in bounds.
    /// unsafe { s.as_ptr().add(3).write(9) };
    /// assert_eq!(s.to_vec(), [0, 0, 0, 9]);
    /// ```
    pub fn as_ptr(&self) -> *mut T {
        self.block.ptr().cast()
    }

    /// The number of elements.
    ///
    /// ```
    /// assert_eq!(ipc_core::shm::ShmSlice::<u32>::new(7).unwrap().len(), 7);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slice has no elements.
    ///
    /// ```
    /// assert!(ipc_core::shm::ShmSlice::<u32>::new(0).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maps elements `range` into this process's page tables now, as a writer (`write`) or a
    /// reader would, without touching their contents: best effort (nothing happens on a kernel
    /// before 5.14). For a ring that is filled front to back: a page fault costs 2-5 us on this
    /// kind of VM, and populating 16 pages at once costs about one.
    ///
    /// ```
    /// let s = ipc_core::shm::ShmSlice::<u8>::new(1 << 20).unwrap(); // its own segment
    /// s.populate(0..65536, true);
    /// assert!(s.to_vec().iter().all(|&b| b == 0)); // the contents are unchanged
    /// ```
    pub fn populate(&self, range: std::ops::Range<usize>, write: bool) {
        let size = std::mem::size_of::<T>();
        let end = range.end.min(self.len).saturating_mul(size);
        let start = range.start.saturating_mul(size);
        if start >= end {
            return;
        }
        let page = rustix::param::page_size();
        let base = self.as_ptr() as usize;
        let from = (base + start) & !(page - 1);
        let to = (base + end).next_multiple_of(page);
        let advice = if write {
            rustix::mm::Advice::LinuxPopulateWrite
        } else {
            rustix::mm::Advice::LinuxPopulateRead
        };
        let at = from as *mut std::ffi::c_void;
        // SAFETY: whole pages around this slice's elements, in the mapping `self.block` keeps
        // alive (mappings are whole pages); populating leaves contents as they are (madvise(2)).
        let _ = unsafe { rustix::mm::madvise(at, to - from, advice) };
    }

    /// How many handles into this slice's arena are alive in all processes (a diagnostic; see
    /// [`ShmBox::arena_handles`]).
    ///
    /// ```
    /// let s = ipc_core::shm::ShmSlice::<u8>::new(1 << 20).unwrap(); // its own segment
    /// let t = s.clone();
    /// assert_eq!(t.arena_handles(), 2);
    /// ```
    pub fn arena_handles(&self) -> u64 {
        self.block.live()
    }
}

/// Copies in and out, for plain data (see [`ShmBox::read`]: volatile accesses, which may see a
/// concurrent write half done, never a `&T` to bytes other processes change).
impl<T: ShmSafe + Copy> ShmSlice<T> {
    /// A copy of element `i`, or `None` if `i` is out of bounds.
    ///
    /// ```
    /// let s = ipc_core::shm::ShmSlice::<u32>::new(3)?;
    /// s.write(1, 7).unwrap();
    /// assert_eq!((s.read(1), s.read(3)), (Some(7), None));
    /// assert_eq!(s.to_vec(), [0, 7, 0]);
    /// # Ok::<(), ipc_core::Error>(())
    /// ```
    pub fn read(&self, i: usize) -> Option<T> {
        // SAFETY: `i < len`, so the element lies inside the block (aligned, in the mapping kept
        // alive by `self.block.arena`); any bytes are a valid T.
        (i < self.len).then(|| unsafe { self.as_ptr().add(i).read_volatile() })
    }

    /// Replaces element `i`; gives `value` back if `i` is out of bounds.
    pub fn write(&self, i: usize, value: T) -> std::result::Result<(), T> {
        if i >= self.len {
            return Err(value);
        }
        // SAFETY: as in `read`; no `&T` into a plain slice is ever handed out.
        unsafe { self.as_ptr().add(i).write_volatile(value) };
        Ok(())
    }

    /// Copies of all elements, in order.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len).filter_map(|i| self.read(i)).collect()
    }
}

impl<T: ShmSync> Deref for ShmSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the block holds `len` contiguous Ts, aligned and inside the mapping kept
        // alive by `self.block.arena` (for len 0 the pointer is still aligned and non-null);
        // any bytes are valid Ts, changed by other processes only atomically (ShmSync).
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }
}

impl<T: ShmSafe> Clone for ShmSlice<T> {
    /// Another handle on the same shared memory.
    fn clone(&self) -> Self {
        ShmSlice {
            block: self.block.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: ShmSafe> fmt::Debug for ShmSlice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ShmSlice<{}>(len {}, {:?})",
            std::any::type_name::<T>(),
            self.len,
            self.block
        )
    }
}

impl<T: ShmSafe> Serialize for ShmSlice<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_block(&self.block, self.len, std::mem::size_of::<T>(), s)
    }
}

impl<'de, T: ShmSafe> Deserialize<'de> for ShmSlice<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (block, len) = deserialize_block::<T, D>(d, None)?;
        Ok(ShmSlice {
            block,
            len,
            _t: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A received descriptor mapped a second time (the registry bypassed), as a process that
    /// never had the arena would map it, sees the same bytes.
    #[test]
    fn a_second_mapping_shares_the_block() {
        let b = ShmBox::<AtomicU32>::new().unwrap();
        let fd = b.block.arena.seg.as_fd().try_clone_to_owned().unwrap();
        let len = b.block.arena.seg.len();
        let second = Segment::from_fd(fd, len).unwrap();
        assert_ne!(second.as_ptr(), b.block.arena.seg.as_ptr());
        // SAFETY: the second mapping has the same length, so the box's offset is in bounds and
        // aligned (page-aligned base); AtomicU32 takes any bytes.
        let w = unsafe { &*(second.as_ptr().add(b.block.offset) as *const AtomicU32) };
        b.store(0xdead_beef, Ordering::SeqCst);
        assert_eq!(w.load(Ordering::SeqCst), 0xdead_beef);
        w.store(5, Ordering::SeqCst);
        assert_eq!(b.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn cursor_never_goes_below_the_floor() {
        let arena = Arena::create(FIRST_ARENA).unwrap();
        let mut floor = 0;
        let a = arena.bump(8, 8, &mut floor).unwrap();
        // A peer rewinds the shared cursor: this process still moves forward.
        arena.header().next.store(HEADER as u64, Ordering::Relaxed);
        let b = arena.bump(8, 8, &mut floor).unwrap();
        assert_eq!((a, b), (HEADER, HEADER + 8));
    }

    #[test]
    fn bump_respects_alignment_and_capacity() {
        let arena = Arena::create(4096).unwrap();
        let mut floor = 0;
        assert_eq!(arena.bump(1, 1, &mut floor), Some(64));
        assert_eq!(arena.bump(4, 4, &mut floor), Some(68));
        assert_eq!(arena.bump(64, 64, &mut floor), Some(128));
        assert_eq!(arena.bump(4096, 64, &mut floor), None);
        assert_eq!(arena.bump(4096 - 192, 1, &mut floor), Some(192));
        assert_eq!(arena.bump(1, 1, &mut floor), None);
    }
}
