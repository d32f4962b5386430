//! Shared memory: anonymous memfd segments, named segments, and a heap that packs small objects.
//!
//! Segments:
//! - [`Segment`]: an anonymous memfd mapping, freed with its last user; travels by descriptor.
//! - [`NamedSegment`]: a segment named in `/dev/shm` for unrelated processes (`SharedMemory`).
//! - [`Frozen`]: plain data written once and sealed read-only: `&[T]` in every process.
//!
//! Heap ([`heap`]: layout, freeing scheme and costs):
//! - [`ShmBox`]: one zero-initialised `T` in the shared heap; clones and received copies share it.
//! - [`ShmSlice`]: `len` zero-initialised `T`s, contiguous, in the shared heap.
//! - [`ShmSafe`]: the marker for types that may live in shared memory (any bytes valid).
//! - [`BIG_ALLOCATION`]: the size above which an allocation gets a segment of its own.
//!
//! Names:
//! - [`MAX_NAME_LEN`]: the longest name of a [`NamedSegment`], in bytes.
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use ipc_core::shm::ShmBox;
//!
//! // A word in shared memory that a child process can receive as an argument.
//! let flag = ShmBox::<AtomicU32>::new().unwrap();
//! flag.store(1, Ordering::Release);
//! assert_eq!(flag.load(Ordering::Acquire), 1);
//! ```

mod frozen;
pub mod heap;
mod named;
mod segment;

pub use frozen::Frozen;
pub use heap::{BIG_ALLOCATION, ShmBox, ShmSafe, ShmSlice, ShmSync};
pub use named::{MAX_NAME_LEN, NamedSegment};
pub use segment::Segment;
pub(crate) use segment::check_seals;
