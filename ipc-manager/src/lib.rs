//! ipc-manager: a server process holding shared objects (dicts, lists, namespaces, values,
//! queues, locks ...) reached through typed proxies, for local processes and other hosts.
//! Python's `multiprocessing.Manager`, without pickle on the wire, without hangs when the server
//! dies, and with `d[k] += 1` as one atomic step.
//!
//! ```
//! use ipc_manager::Manager;
//!
//! let manager = Manager::start()?; // the server is a child process
//! let ns = manager.namespace()?;
//! let scores = manager.dict::<String, u32>()?;
//! ns.set("round", &1)?;
//! scores.insert("ada".into(), 3)?;
//! scores.fetch_add("ada".into(), 2)?; // on the server, under the dict's lock
//! assert_eq!(scores.get("ada")?, Some(5));
//! assert_eq!(ns.to_string(), "Namespace(round=1)");
//! manager.shutdown()?; // the server exits with code 0
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Protocol
//! ```text
//! client                                   server (one thread per connection)
//!   connect ── HMAC handshake on the authkey, both ways ──> accepted (handshakes concurrent)
//!   Hello{version, new or join session} ──>   <── Welcome{session, ticket, server} | Fault
//!   Request{object id, op} ──>                <── Out | Fault     (one at a time, in order)
//! ```
//! A local client (a Unix socket) moves each connection's calls to shared memory after its
//! first call: requests and replies then travel through two of ipc-sync's queues, woken by
//! futexes, and the socket stays for liveness (its end of file ends the path, either way) and
//! for the operations that carry descriptors. Remote clients use TCP.
//!
//! Everything is postcard: the server stores values as bytes and runs no code from the wire
//! except functions of its own executable (the `update` methods, named by ipc-core's function
//! handle). Frames are capped before anything is allocated ([`DEFAULT_MAX_MESSAGE`]). The
//! handshake authenticates; it does not encrypt: over TCP, use a trusted network or a tunnel.
//! The wire types and the session rules are in `wire.rs`; the server's threads in `server/`.
//!
//! # Failures
//! - The server dies: every call fails with [`Error::ServerGone`] at once (its sockets close).
//! - A client process dies: the server drops what only it referenced, and a lock it held is
//!   released; the next acquirer gets [`Error::OwnerDied`] (holding the lock).
//! - A client blocked in a call (a queue get, a lock acquire, a barrier) blocks only its own
//!   connection; other clients, and other threads of its process, carry on.
//! - The owner of a started manager is killed: the server (a daemon child) dies with it.
//!
//! # Proxies inside shared objects
//! A proxy stored in another object of its manager (a dict of lists, a queue in a list, a
//! namespace attribute) is stored as a reference: the object lives while any stored value,
//! reply or proxy names it, and is freed once none does (`wire.rs` states the rule). Keys and
//! the operands of `update` cannot hold proxies (the server compares keys as bytes).
//!
//! # Custom types
//! `#[served]` on a type's `impl` block serves its public methods from the server by name and
//! version, and writes a proxy for them (Python's `BaseManager.register`); see [`Served`].
//!
//! ```
//! use ipc_manager::{Manager, served};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! pub struct Counter {
//!     n: i64,
//! }
//!
//! #[served]
//! impl Counter {
//!     pub fn add(&mut self, by: i64) -> i64 {
//!         self.n += by;
//!         self.n
//!     }
//! }
//!
//! let m = Manager::builder().register::<Counter>().start()?;
//! let c: CounterProxy = m.create(&Counter::default())?;
//! assert_eq!(c.add(2)? + c.add(3)?, 7); // each call runs on the server
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Passing proxies to other processes
//! A proxy is `Serialize`: as a process argument (every start method) or through a
//! `Connection`, it travels as a connection of its own (a descriptor made for it, holding a
//! reference to the object until the receiver drops it), never as the authkey. A proxy copied
//! by a raw `fork` refuses to call (its sockets are its parent's).
//!
//! Layer 2: depends on ipc-core and ipc-sync, never on ipc-pool.
#![forbid(unsafe_code)]

mod client;
mod custom;
mod dynamic;
mod error;
mod link;
mod manager;
mod proxy;
mod server;
mod wire;

pub use custom::{Context, Ref, Served, register};
pub use dynamic::{Dynamic, DynamicError};
pub use error::{Error, Result};
/// Serves a type's methods from the manager's server and writes its typed proxy: see
/// [`Served`] and the crate `ipc-manager-derive`.
pub use ipc_manager_derive::served;
pub use manager::{AsLock, Builder, Manager, SHUTDOWN_GRACE, Stats};
pub use proxy::{
    Array, Barrier, Condition, Dict, Event, JoinableQueue, List, ListIter, Lock, LockGuard,
    Namespace, NamespaceSnapshot, Proxy, Queue, RLock, Semaphore, Set, Value,
};
pub use server::{Server, serve};
pub use wire::DEFAULT_MAX_MESSAGE;

/// What the code `#[served]` writes names: not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::custom::{Failure, Invoke, Reply, args, failed};
    pub use crate::proxy::Shared;
    pub use crate::proxy::internal::Internal;
    pub use serde;
}
