//! ipc-sync: synchronization primitives, shared values and queues living in shared memory.
//!
//! Layer 1: depends only on ipc-core. (Primitives land with issue #3.)
#![forbid(unsafe_code)]
