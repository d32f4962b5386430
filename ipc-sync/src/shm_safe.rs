//! The raw states may live in ipc-core's shared heap: their `ShmSafe` impls, in one place.
//!
//! # Safety
//! Every type here is `#[repr(C)]` over `AtomicU32`/`AtomicU64` fields (or over other types of
//! this list), so: every bit pattern is a valid value (all-zero in particular is each type's
//! documented initial state, pinned by `tests/raw_mappings.rs`); the layout is fixed; nothing
//! process-local is inside; all shared mutation goes through atomics. Their algorithms tolerate
//! any word written by a misbehaving peer: they may then block or report errors, never touch
//! memory outside the state. Not compiled under `--cfg loom`, where the atomics are loom's
//! model objects and never live in shared memory.
#![allow(unsafe_code)]

use ipc_core::shm::ShmSafe;

use crate::raw::{RawBarrier, RawCondition, RawEvent, RawLock, RawRLock, RawSemaphore};

// SAFETY: repr(C) over one AtomicU32; see the module doc.
unsafe impl ShmSafe for RawLock {}
// SAFETY: repr(C) over RawLock, AtomicU32, AtomicU64; see the module doc.
unsafe impl ShmSafe for RawRLock {}
// SAFETY: repr(C) over two AtomicU32; see the module doc.
unsafe impl ShmSafe for RawSemaphore {}
// SAFETY: repr(C) over one AtomicU32; see the module doc.
unsafe impl ShmSafe for RawEvent {}
// SAFETY: repr(C) over three AtomicU32; see the module doc.
unsafe impl ShmSafe for RawCondition {}
// SAFETY: repr(C) over RawLock, three AtomicU32 and two AtomicU64; see the module doc.
unsafe impl ShmSafe for RawBarrier {}
