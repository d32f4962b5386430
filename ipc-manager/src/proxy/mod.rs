//! Typed proxies: each is an object id and a connection, cheap to clone, and passable to other
//! processes (as a process argument or through a `Connection`).
//!
//! A proxy's methods are calls to the server (one round trip each); the types `K`, `V`, `T` are
//! the client's promise about what the object holds: values travel as postcard bytes and a
//! proxy of the wrong types reads an error (or, for layouts that coincide, other values of the
//! same shape), never memory of another type.

mod containers;
mod namespace;
mod queue;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

pub use containers::{Array, Dict, List, ListIter, Set, Value};
pub(crate) use internal::Internal;
pub use namespace::{Namespace, NamespaceSnapshot};
pub use queue::{JoinableQueue, Queue};
pub use sync::{Barrier, Condition, Event, Lock, LockGuard, RLock, Semaphore};

use crate::client::{Handle, unexpected};
use crate::error::{Error, Result};
use crate::wire::{Blob, Op, Out};

/// What every proxy holds: the handle its clones share (the last one releases the object), and
/// the deadline of each of its calls.
#[allow(unreachable_pub)] // named by the sealed `Proxy` trait (see `Handle`)
#[derive(Clone)]
pub struct Shared {
    pub(crate) handle: Arc<Handle>,
    pub(crate) timeout: Option<Duration>,
}

impl Shared {
    pub(crate) fn new(handle: Handle) -> Shared {
        Shared {
            handle: Arc::new(handle),
            timeout: None,
        }
    }

    /// One call, by the proxy's deadline if it has one.
    pub(crate) fn call(&self, op: Op) -> Result<Out> {
        self.handle.call(op, self.timeout)
    }

    /// `value` as an item for the server (proxies inside it become references).
    pub(crate) fn store<T: Serialize + ?Sized>(&self, value: &T) -> Result<Blob> {
        self.handle.client.store(value)
    }

    /// A value from an item the server returned.
    pub(crate) fn load<T: DeserializeOwned>(&self, item: &[u8]) -> Result<T> {
        self.handle.client.load(item)
    }

    /// A copy with a deadline on each call.
    #[doc(hidden)]
    pub fn with_timeout(&self, timeout: Duration) -> Shared {
        Shared {
            handle: Arc::clone(&self.handle),
            timeout: Some(timeout),
        }
    }

    /// The deadline of each call.
    #[doc(hidden)]
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// A proxy's `Debug`.
    #[doc(hidden)]
    pub fn debug(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(name)
            .field("id", &self.handle.obj)
            .field("server_pid", &self.handle.client.server_pid())
            .field("timeout", &self.timeout)
            .finish()
    }

    /// A custom type's method: its result, from its name, version and argument tuple.
    #[doc(hidden)]
    pub fn invoke<A: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        version: u32,
        args: &A,
    ) -> Result<R> {
        match self.call(Op::Invoke {
            method: method.into(),
            version,
            args: enc(args)?,
        })? {
            Out::Blob(item) => self.load(&item),
            other => Err(unexpected(&other)),
        }
    }
}

impl Serialize for Shared {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Shared {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Shared::new(Handle::deserialize(d)?))
    }
}

/// A key's or an operand's postcard bytes (a proxy inside is refused). Values go through
/// [`Handle::store`] instead, which carries proxies.
pub(crate) fn enc<T: Serialize + ?Sized>(value: &T) -> Result<Blob> {
    crate::client::plain(|| {
        let mut buf = Vec::new();
        ipc_core::codec::encode_plain(value, &mut buf)?;
        Ok(ByteBuf::from(buf))
    })
}

/// A key from its postcard bytes.
pub(crate) fn dec<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(ipc_core::codec::decode_plain(bytes)?)
}

/// A timeout in whole milliseconds, rounded up (a nonzero wait never becomes a poll).
pub(crate) fn millis(timeout: Duration) -> Option<u64> {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    Some(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Calls and expects a reply of one shape.
macro_rules! expect_reply {
    ($handle:expr, $op:expr, $pat:pat => $val:expr) => {
        match $handle.call($op)? {
            $pat => Ok($val),
            other => Err($crate::client::unexpected(&other)),
        }
    };
}

pub(crate) fn unit(h: &Shared, op: Op) -> Result<()> {
    expect_reply!(h, op, Out::Unit => ())
}

pub(crate) fn flag(h: &Shared, op: Op) -> Result<bool> {
    expect_reply!(h, op, Out::Flag(b) => b)
}

pub(crate) fn count(h: &Shared, op: Op) -> Result<u64> {
    expect_reply!(h, op, Out::Count(n) => n)
}

pub(crate) fn counts(h: &Shared) -> Result<Vec<u64>> {
    expect_reply!(h, Op::Describe, Out::Counts(v) => v)
}

pub(crate) fn blob<T: DeserializeOwned>(h: &Shared, op: Op) -> Result<T> {
    match h.call(op)? {
        Out::Blob(b) => h.load(&b),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn maybe<T: DeserializeOwned>(h: &Shared, op: Op) -> Result<Option<T>> {
    match h.call(op)? {
        Out::Maybe(b) => b.map(|b| h.load(&b)).transpose(),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn blobs<T: DeserializeOwned>(h: &Shared, op: Op) -> Result<Vec<T>> {
    match h.call(op)? {
        Out::Blobs(v) => v.iter().map(|b| h.load(b)).collect(),
        other => Err(unexpected(&other)),
    }
}

/// A keyed object's keys.
pub(crate) fn keys<K: DeserializeOwned>(h: &Shared) -> Result<Vec<K>> {
    match h.call(Op::Keys)? {
        Out::Blobs(v) => v.iter().map(|b| dec(b)).collect(),
        other => Err(unexpected(&other)),
    }
}

/// An empty result as an `Option` (an empty queue or list).
pub(crate) fn or_none<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::Empty) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A proxy type: what [`Manager::lookup`](crate::Manager::lookup) can return and
/// [`Manager::publish`](crate::Manager::publish) can name. Implemented by every proxy of this
/// crate (sealed).
pub trait Proxy: internal::Internal {}

pub(crate) mod internal {
    /// What the crate needs of a proxy (not nameable outside it).
    pub trait Internal: Sized {
        /// The server-side kinds this proxy type can stand for.
        const KINDS: &'static [&'static str];
        /// The proxy of a handle.
        fn from_shared(h: super::Shared) -> Self;
        /// The proxy's handle.
        fn shared(&self) -> &super::Shared;
    }
}

/// Implements `Clone`, `Serialize`, `Deserialize`, `Debug`, [`Proxy`], `with_timeout` and
/// `timeout` for a proxy `$name<..>` whose fields are `h: Shared` and `_t: PhantomData<..>`,
/// standing for objects of the server-side kinds `$kinds`. Exported (hidden) for the proxies
/// `#[served]` writes; names only what `__private` re-exports.
#[doc(hidden)]
#[macro_export]
macro_rules! __proxy_traits {
    ($name:ident $(<$($g:ident),*>)?, $kinds:expr) => {
        impl$(<$($g),*>)? $crate::__private::Internal for $name$(<$($g),*>)? {
            const KINDS: &'static [&'static str] = &$kinds;
            fn from_shared(h: $crate::__private::Shared) -> Self {
                $name { h, _t: ::std::marker::PhantomData }
            }
            fn shared(&self) -> &$crate::__private::Shared {
                &self.h
            }
        }

        impl$(<$($g),*>)? $crate::Proxy for $name$(<$($g),*>)? {}

        impl$(<$($g),*>)? ::std::clone::Clone for $name$(<$($g),*>)? {
            fn clone(&self) -> Self {
                $name {
                    h: self.h.clone(),
                    _t: ::std::marker::PhantomData,
                }
            }
        }

        impl$(<$($g),*>)? $crate::__private::serde::Serialize for $name$(<$($g),*>)? {
            /// A proxy travels with a connection of its own (a descriptor), never the authkey:
            /// as a process argument or through a `Connection`; or, stored in an object of its
            /// manager, as a reference.
            fn serialize<S: $crate::__private::serde::Serializer>(
                &self,
                s: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                self.h.serialize(s)
            }
        }

        impl<'de $($(, $g)*)?> $crate::__private::serde::Deserialize<'de> for $name$(<$($g),*>)? {
            fn deserialize<D: $crate::__private::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                Ok($name {
                    h: $crate::__private::Shared::deserialize(d)?,
                    _t: ::std::marker::PhantomData,
                })
            }
        }

        impl$(<$($g),*>)? ::std::fmt::Debug for $name$(<$($g),*>)? {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.h.debug(stringify!($name), f)
            }
        }

        impl$(<$($g),*>)? $name$(<$($g),*>)? {
            /// This proxy with a deadline on each of its calls, `timeout` from the call's
            /// start (its clones keep it; a copy sent to another process does not). A call
            /// that blocks on the server (a get, an acquire, a wait) gives up there by then;
            /// a server that does not answer by then (stopped, swamped, gone) makes the call
            /// [`Error::Timeout`]($crate::Error::Timeout), its outcome unknown.
            pub fn with_timeout(&self, timeout: ::std::time::Duration) -> Self {
                $name {
                    h: self.h.with_timeout(timeout),
                    _t: ::std::marker::PhantomData,
                }
            }

            /// The deadline of each call ([`with_timeout`](Self::with_timeout)).
            pub fn timeout(&self) -> ::std::option::Option<::std::time::Duration> {
                self.h.timeout()
            }
        }
    };
}
pub(crate) use __proxy_traits as proxy_traits;
