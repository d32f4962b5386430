//! The raw states may live in ipc-core's shared heap and be referenced from many processes at
//! once: their `ShmSafe` and `ShmSync` impls, in one place.
//!
//! # Safety
//! Every type here is `#[repr(C)]` over `AtomicU32`/`AtomicU64` fields (or over other types of
//! this list), so: every bit pattern is a valid value (all-zero in particular is each type's
//! documented initial state, pinned by `tests/raw_mappings.rs`); the layout is fixed; nothing
//! process-local is inside; all shared mutation goes through atomics, which is what `ShmSync`
//! asks (a `&RawLock` may live here while another process changes the word). Their algorithms tolerate
//! any word written by a misbehaving peer: they may then block or report errors, never touch
//! memory outside the state. Not compiled under `--cfg loom`, where the atomics are loom's
//! model objects and never live in shared memory.
#![allow(unsafe_code)]

use ipc_core::shm::{ShmSafe, ShmSync};

use crate::raw::{RawBarrier, RawCondition, RawEvent, RawLock, RawRLock, RawSemaphore};

// SAFETY: repr(C) over one AtomicU32; see the module doc.
unsafe impl ShmSafe for RawLock {}
// SAFETY: its fields are atomics (or states of this list); see the module doc.
unsafe impl ShmSync for RawLock {}
// SAFETY: repr(C) over RawLock, AtomicU32, AtomicU64; see the module doc.
unsafe impl ShmSafe for RawRLock {}
// SAFETY: its fields are atomics (or states of this list); see the module doc.
unsafe impl ShmSync for RawRLock {}
// SAFETY: repr(C) over two AtomicU32; see the module doc.
unsafe impl ShmSafe for RawSemaphore {}
// SAFETY: its fields are atomics (or states of this list); see the module doc.
unsafe impl ShmSync for RawSemaphore {}
// SAFETY: repr(C) over one AtomicU32; see the module doc.
unsafe impl ShmSafe for RawEvent {}
// SAFETY: its fields are atomics (or states of this list); see the module doc.
unsafe impl ShmSync for RawEvent {}
// SAFETY: repr(C) over three AtomicU32; see the module doc.
unsafe impl ShmSafe for RawCondition {}
// SAFETY: its fields are atomics (or states of this list); see the module doc.
unsafe impl ShmSync for RawCondition {}
// SAFETY: repr(C) over RawLock, three AtomicU32 and two AtomicU64; see the module doc.
unsafe impl ShmSafe for RawBarrier {}
// SAFETY: its fields are atomics (or states of this list); see the module doc.
unsafe impl ShmSync for RawBarrier {}

// SAFETY: repr(C) over 64 pairs of AtomicU32 (a roster of processes and what they
// hold): any bytes are a valid roster (all-zero: nobody holds anything); see the module doc.
unsafe impl ShmSafe for crate::roster::Roster {}
// SAFETY: its fields are atomics, changed only atomically.
unsafe impl ShmSync for crate::roster::Roster {}
