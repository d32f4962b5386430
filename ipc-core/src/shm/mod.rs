//! Shared memory: anonymous memfd segments, named segments, and a heap that packs small objects.
//!
//! - [`Segment`]: an anonymous memfd mapping. The kernel frees it when the last descriptor and the
//!   last mapping go, so a crashed process leaks nothing. It travels to other processes by
//!   descriptor passing.

mod segment;

pub use segment::Segment;
