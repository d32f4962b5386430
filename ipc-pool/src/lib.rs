//! ipc-pool: a pool of worker processes (`map`, `imap`, `apply_async`, ...).
//!
//! Layer 2: depends on ipc-core and ipc-sync, never on ipc-manager. It holds no code yet: the
//! pool is a later issue. The crate exists so that the layering rule is checked from day one.
#![forbid(unsafe_code)]
