//! Custom types: a user's own type held by the server, with methods clients call by name and
//! version (Python's `BaseManager.register`).
//!
//! ```text
//! #[served] impl Counter { fn add(&mut self, by: i64) -> i64 {..} ... }   (ipc-manager-derive)
//!   server side   impl Served for Counter: invoke(method, version, args) -> the method's result
//!   client side   CounterProxy { add(&self, by: i64) -> Result<i64>, ... }: each a call
//!
//! create   client: Op::Create(Init::Custom{name, state: postcard of the value})
//!          server: the type registered under `name` in its process decodes the state
//!                  (none: Fault::NoSuchType)
//! call     client: Op::Invoke{method, version, args: postcard of the argument tuple}
//!          server: under the object's lock, the method of that name and version runs (none:
//!                  Fault::NoSuchMethod; a panic: Fault::Function, the server lives on) and its
//!                  result is the reply's item
//! ```
//! Methods are found by name and version, never by code address, so a client built as another
//! binary (or on another host) calls them; a client that knows a method the server does not (a
//! newer version, say) gets [`Error::NoSuchMethod`](crate::Error::NoSuchMethod).
//!
//! A method may create objects on the server through its [`Context`] and return them as
//! [`Ref`]s: the client's proxy method returns the proxy (`Ref<List<i64>>` on the server is
//! `List<i64>` in the client), with the reference the reply carries (see the ownership rule in
//! the wire notes). A `Ref` kept in the type's state keeps its object for as long as the state
//! holds it.
//!
//! Registration is per process: [`register`] in the process that runs the server (a
//! standalone [`Server`](crate::Server)), or [`Builder::register`](crate::Builder::register)
//! for the server a [`Manager`](crate::Manager) starts.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::proxy::{Dict, List, Proxy, Queue, Set, Value};
use crate::server::{Caller, Object, Stored};
use crate::wire::Init;

/// A type the manager's server can hold, with methods clients call by name and version.
///
/// Implemented by the [`served`](crate::served) attribute on the type's `impl` block (which
/// also writes the proxy), not by hand.
pub trait Served: Invoke + Sized + 'static {
    /// The name clients create it by, and the server knows it by.
    const NAME: &'static str;
    /// The methods, as `(name, version)`.
    const METHODS: &'static [(&'static str, u32)];
    /// The client's proxy for it.
    type Proxy: Proxy;
}

/// How the server calls a [`Served`] type's methods (object-safe: the server holds each
/// object as a `Box<dyn Invoke>`). Written by `#[served]`.
#[doc(hidden)]
pub trait Invoke: Send {
    /// Runs method `method` of version `version` with the argument tuple `args` (postcard);
    /// `None` when the type has no such method.
    fn invoke(
        &mut self,
        cx: &mut Context<'_>,
        method: &str,
        version: u32,
        args: &[u8],
    ) -> Option<std::result::Result<Reply, Failure>>;
}

/// A method's result, encoded for the reply (with the references of the [`Ref`]s inside it).
#[doc(hidden)]
pub struct Reply(pub(crate) Stored);

/// Why a method call failed on the server.
#[doc(hidden)]
pub enum Failure {
    /// The call could not be made (arguments that do not decode, a result that does not
    /// encode): `Error::Refused`.
    Refused(String),
    /// The method failed (returned the error of its `Result<T>`, or panicked):
    /// `Error::Function`.
    Method(String),
}

/// What a method of a [`Served`] type can do on the server besides changing its state: make
/// objects, which it returns (or keeps) as [`Ref`]s.
pub struct Context<'a> {
    caller: &'a Caller<'a>,
}

/// An object on the server, as a [`Served`] type's method holds it: returned, it is the
/// client's proxy `P`. Made by a [`Context`].
pub struct Ref<P> {
    object: Arc<Object>,
    _t: PhantomData<fn() -> P>,
}

impl<P> Clone for Ref<P> {
    fn clone(&self) -> Self {
        Ref {
            object: Arc::clone(&self.object),
            _t: PhantomData,
        }
    }
}

impl<P> std::fmt::Debug for Ref<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ref")
            .field("id", &self.object.id)
            .field("kind", &self.object.kind())
            .finish()
    }
}

impl<P> Serialize for Ref<P> {
    /// As a proxy's `Held(id)`, inside a method's result only.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::server::hold_in_reply(&self.object).map_err(serde::ser::Error::custom)?;
        crate::client::held(self.object.id).serialize(s)
    }
}

impl<'de, P> Deserialize<'de> for Ref<P> {
    /// Never: a `Ref` is made on the server by a [`Context`] (a type's state that holds one
    /// cannot be sent by a client; skip the field, `#[serde(skip)]`).
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> std::result::Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "a Ref is made on the server by a method's Context, not decoded",
        ))
    }
}

impl<'a> Context<'a> {
    pub(crate) fn new(caller: &'a Caller<'a>) -> Context<'a> {
        Context { caller }
    }

    fn make<P>(&mut self, init: Init) -> Result<Ref<P>> {
        let object = self.caller.create(init)?;
        Ok(Ref {
            object,
            _t: PhantomData,
        })
    }

    /// A new [`List`] holding `items` (which may hold [`Ref`]s).
    pub fn list<T: Serialize>(
        &mut self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<Ref<List<T>>> {
        // The items live until the list holds them: a `Ref` among them keeps its object.
        let items: Vec<T> = items.into_iter().collect();
        let encoded = items
            .iter()
            .map(|i| crate::server::encode_item(i).map_err(Error::Refused))
            .collect::<Result<Vec<_>>>()?;
        self.make(Init::List(encoded))
    }

    /// A new empty [`Dict`].
    pub fn dict<K, V>(&mut self) -> Result<Ref<Dict<K, V>>> {
        self.make(Init::Dict)
    }

    /// A new empty [`Set`].
    pub fn set<T>(&mut self) -> Result<Ref<Set<T>>> {
        self.make(Init::Set)
    }

    /// A new [`Value`] holding `value`.
    pub fn value<T: Serialize>(&mut self, value: &T) -> Result<Ref<Value<T>>> {
        let item = crate::server::encode_item(value).map_err(Error::Refused)?;
        self.make(Init::Value(item))
    }

    /// A new [`Queue`] of at most `maxsize` items (0: unbounded).
    pub fn queue<T>(&mut self, maxsize: usize) -> Result<Ref<Queue<T>>> {
        self.make(Init::Queue {
            maxsize: maxsize as u64,
            joinable: false,
        })
    }

    /// Encodes a method's result for the reply.
    #[doc(hidden)]
    pub fn reply<R: Serialize>(&mut self, result: &R) -> std::result::Result<Reply, Failure> {
        crate::server::encode_stored(result)
            .map(Reply)
            .map_err(Failure::Refused)
    }
}

/// A method's argument tuple, from its postcard bytes.
#[doc(hidden)]
pub fn args<A: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<A, Failure> {
    ipc_core::codec::decode_plain(bytes).map_err(|e| {
        Failure::Refused(format!(
            "the arguments do not decode as the server's method takes them: {e}"
        ))
    })
}

/// A method's own failure (the error of a method returning a one-argument `Result`).
#[doc(hidden)]
pub fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::Method(e.to_string())
}

// ---------------------------------------------------------------------------------------------
// The registry of a process's types.

/// A registered type's object, or why its state does not decode.
type Made = std::result::Result<Box<dyn Invoke>, String>;

/// A registered type's constructor: its state from postcard bytes.
type Make = fn(&[u8]) -> Made;

static TYPES: LazyLock<Mutex<HashMap<&'static str, Make>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Registers `T` in this process: the servers it runs can hold `T` objects (created by
/// [`Manager::create`](crate::Manager::create) from any client). Registering a type twice, or
/// another type under the same name, keeps the last.
pub fn register<T: Served + DeserializeOwned>() {
    TYPES.lock().insert(T::NAME, make::<T>);
}

/// [`register`] as a function that the server a [`Builder`](crate::Builder) starts runs.
pub(crate) fn register_remote<T: Served + DeserializeOwned>(_: ()) {
    register::<T>();
}

fn make<T: Served + DeserializeOwned>(
    state: &[u8],
) -> std::result::Result<Box<dyn Invoke>, String> {
    let value: T = ipc_core::codec::decode_plain(state)
        .map_err(|e| format!("the state does not decode as the server's {}: {e}", T::NAME))?;
    Ok(Box::new(value))
}

/// A new object of the type registered as `name`, from its state; `None` if there is none.
pub(crate) fn construct(name: &str, state: &[u8]) -> Option<(&'static str, Made)> {
    let (name, make) = TYPES.lock().get_key_value(name).map(|(n, m)| (*n, *m))?;
    Some((name, make(state)))
}
