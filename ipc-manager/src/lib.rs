//! ipc-manager: a server process holding shared objects (dict, list, namespace, ...) reached
//! through typed proxies over a Unix socket or TCP.
//!
//! Layer 2: depends on ipc-core and ipc-sync, never on ipc-pool. It holds no code yet: the
//! manager is a later issue. The crate exists so that the layering rule is checked from day one.
#![forbid(unsafe_code)]
