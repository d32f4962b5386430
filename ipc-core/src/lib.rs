//! ipc-core: the first layer of multiprocessing for Rust.
//!
//! Real OS processes that run your functions, and what they need to talk: shared memory, futexes
//! and connections. Higher layers (ipc-sync, ipc-pool, ipc-manager) build on these.
//!
//! # Map
//! - [`process`]: start a process running a function under fork, spawn or forkserver; join it for
//!   its typed result; terminate, kill, exit codes with Python's convention;
//!   [`RemoteFn`](process::RemoteFn), a function handle that a running worker of the same
//!   program can call, and that any other program refuses.
//! - [`shm`]: anonymous memfd segments, named segments, a heap for small shared objects.
//! - [`futex`]: wait and wake on an `AtomicU32` in shared memory.
//! - [`conn`]: [`Connection`](conn::Connection)s carrying typed messages and raw bytes, descriptor
//!   passing, listeners and clients with an authkey.
//! - [`codec`]: postcard encoding of values that carry file descriptors.
//! - [`Error`]: what can go wrong.
#![deny(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "ipc-core supports Linux only: it is built on memfd, futexes, pidfds, clone3, SCM_RIGHTS and /proc"
);

pub mod codec;
pub mod conn;
mod deadline;
pub mod error;
/// Test support (feature `failpoints`): named kill points. Not part of the API.
#[doc(hidden)]
pub mod failpoint;
pub mod futex;
pub mod process;
pub mod shm;
#[doc(hidden)] // Tuning internals shared with ipc-sync, not part of the API.
pub mod spin;
mod sys;

pub use error::{CodecError, Error, Result};
