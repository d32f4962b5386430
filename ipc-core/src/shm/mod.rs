//! Shared memory: anonymous memfd segments, named segments, and a heap that packs small objects.
//!
//! - [`Segment`]: an anonymous memfd mapping. The kernel frees it when the last descriptor and the
//!   last mapping go, so a crashed process leaks nothing. It travels to other processes by
//!   descriptor passing.
//! - [`NamedSegment`]: a segment with a name in `/dev/shm` that unrelated processes can open
//!   (Python's `SharedMemory`); its creator's handle unlinks the name when dropped.
//! - [`ShmBox`], [`ShmSlice`]: one `T` or `len` `T`s, zero-initialised, in the shared heap
//!   ([`heap`]), which packs many small objects into few segments; they travel like segments.
//! - [`ShmSafe`]: the marker for types that may live in shared memory.

pub mod heap;
mod named;
mod segment;

pub use heap::{BIG_ALLOCATION, ShmBox, ShmSafe, ShmSlice};
pub use named::{MAX_NAME_LEN, NamedSegment};
pub use segment::Segment;
