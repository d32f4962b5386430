//! The `Namespace` proxy: named attributes whose values carry their type ([`Dynamic`]).
//!
//! ```text
//! server:  name (postcard str) -> Dynamic (an item), as a Dict
//! set      T -> Dynamic on the client, then stored (a proxy inside is held, as in a Dict)
//! get::<T> Dynamic -> T on the client: a missing name is Error::NoSuchAttribute, a value of
//!          another type Error::WrongType (never bytes read as the wrong type)
//! fetch_add, update: run on the server on the Dynamic, through T
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::AddAssign;

use ipc_core::process::RemoteFn;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::containers::update;
use super::{Shared, dec, enc, flag, maybe, proxy_traits, unit};
use crate::dynamic::Dynamic;
use crate::error::{Error, Result};
use crate::wire::{At, Blob, Op, Out, ServerFn};

/// A namespace held by the manager's server (Python's `manager.Namespace()`): attributes by
/// name, each value with its own type.
///
/// ```
/// let m = ipc_manager::Manager::start()?;
/// let ns = m.namespace()?;
/// ns.set("a", &1)?;
/// ns.set("b", &"x")?;
/// assert_eq!(ns.get::<i32>("a")?, 1);
/// assert!(ns.get::<String>("a").is_err()); // Error::WrongType: it holds an integer
/// assert_eq!(ns.snapshot()?.to_string(), "Namespace(a=1, b='x')");
/// assert_eq!(ns.fetch_add("a", 41)?, 1); // atomic on the server
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Namespace {
    pub(crate) h: Shared,
    pub(crate) _t: PhantomData<()>,
}

proxy_traits!(Namespace, ["Namespace"]);

/// A namespace's attributes at one moment, sorted by name; prints as Python's
/// `Namespace(a=1, b='x')`.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceSnapshot(pub Vec<(String, Dynamic)>);

impl fmt::Display for NamespaceSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Namespace(")?;
        for (i, (name, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}={v}")?;
        }
        f.write_str(")")
    }
}

fn dynamic<T: Serialize + ?Sized>(value: &T) -> Result<Dynamic> {
    Dynamic::from_value(value).map_err(|e| Error::Refused(format!("not a namespace value: {e}")))
}

fn typed<T: DeserializeOwned>(name: &str, d: &Dynamic) -> Result<T> {
    d.to_value().map_err(|e| Error::WrongType {
        name: name.into(),
        detail: format!("{e} (it holds {}: {d})", d.kind()),
    })
}

/// Server side of `fetch_add`: the stored Dynamic as a `T`, plus the operand.
fn run_add<T: Serialize + DeserializeOwned + AddAssign + Default>(
    (current, operand): (Option<Blob>, Blob),
) -> std::result::Result<Option<Blob>, String> {
    let mut v: T = match current {
        Some(b) => {
            let d: Dynamic = dec(&b).map_err(|e| e.to_string())?;
            d.to_value()
                .map_err(|e| format!("the attribute holds another type: {e}"))?
        }
        None => T::default(),
    };
    v += dec::<T>(&operand).map_err(|e| e.to_string())?;
    let d = Dynamic::from_value(&v).map_err(|e| e.to_string())?;
    Ok(Some(enc(&d).map_err(|e| e.to_string())?))
}

/// Server side of `update`: the user's function, on the stored Dynamic as a `T`.
fn run_update<T: Serialize + DeserializeOwned>(
    (current, operand): (Option<Blob>, Blob),
) -> std::result::Result<Option<Blob>, String> {
    let f: RemoteFn<Option<T>, Option<T>> = dec(&operand).map_err(|e| e.to_string())?;
    let current: Option<T> = match current {
        Some(b) => {
            let d: Dynamic = dec(&b).map_err(|e| e.to_string())?;
            Some(
                d.to_value()
                    .map_err(|e| format!("the attribute holds another type: {e}"))?,
            )
        }
        None => None,
    };
    match f.call(current).map_err(|e| e.to_string())? {
        Some(v) => {
            let d = Dynamic::from_value(&v).map_err(|e| e.to_string())?;
            Ok(Some(enc(&d).map_err(|e| e.to_string())?))
        }
        None => Ok(None),
    }
}

fn apply(
    h: &Shared,
    name: &str,
    f: ServerFn,
    operand: Blob,
) -> Result<(Option<Dynamic>, Option<Dynamic>)> {
    let out = h.call(Op::Apply {
        at: At::Key(enc(name)?),
        update: update(f, operand)?,
    })?;
    match out {
        Out::Updated(old, new) => Ok((
            old.map(|b| h.load(&b)).transpose()?,
            new.map(|b| h.load(&b)).transpose()?,
        )),
        other => Err(crate::client::unexpected(&other)),
    }
}

/// A value, with any proxy inside it held by the server (see the wire notes).
fn store<T: Serialize + ?Sized>(h: &Shared, value: &T) -> Result<Blob> {
    h.handle.client.store_with(|buf| {
        let d = dynamic(value)?;
        Ok(ipc_core::codec::encode_plain(&d, buf)?)
    })
}

impl Namespace {
    /// Sets attribute `name` to `value` (Python's `ns.name = value`).
    #[doc(alias = "__setattr__")]
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        match self
            .h
            .call(Op::Insert(enc(name)?, store(&self.h, value)?))?
        {
            Out::Maybe(old) => old.map_or(Ok(()), |old| self.h.handle.client.discard(&old)),
            other => Err(crate::client::unexpected(&other)),
        }
    }

    /// Attribute `name` as a `T` (Python's `ns.name`): [`Error::NoSuchAttribute`] if absent,
    /// [`Error::WrongType`] if it holds another type.
    #[doc(alias = "__getattr__")]
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        match self.h.call(Op::Get(enc(name)?))? {
            // The conversion runs while the proxies the value holds are there to take.
            Out::Maybe(Some(item)) => self.h.handle.client.load_with(&item, |bytes| {
                let d: Dynamic = dec(bytes)?;
                typed(name, &d)
            }),
            Out::Maybe(None) => Err(Error::NoSuchAttribute(name.into())),
            other => Err(crate::client::unexpected(&other)),
        }
    }

    /// Attribute `name` with its type.
    pub fn get_dynamic(&self, name: &str) -> Result<Dynamic> {
        maybe::<Dynamic>(&self.h, Op::Get(enc(name)?))?
            .ok_or_else(|| Error::NoSuchAttribute(name.into()))
    }

    /// Removes attribute `name`; whether it existed (Python's `del ns.name`).
    #[doc(alias = "__delattr__")]
    pub fn remove(&self, name: &str) -> Result<bool> {
        match self.h.call(Op::Remove(enc(name)?))? {
            Out::Maybe(None) => Ok(false),
            Out::Maybe(Some(old)) => self.h.handle.client.discard(&old).map(|()| true),
            other => Err(crate::client::unexpected(&other)),
        }
    }

    /// Whether attribute `name` exists (Python's `hasattr`).
    #[doc(alias = "hasattr")]
    pub fn contains(&self, name: &str) -> Result<bool> {
        flag(&self.h, Op::Contains(enc(name)?))
    }

    /// Every attribute with its value, sorted by name.
    #[doc(alias = "__repr__")]
    pub fn snapshot(&self) -> Result<NamespaceSnapshot> {
        let mut attrs = match self.h.call(Op::Items)? {
            Out::Pairs(p) => p
                .iter()
                .map(|(k, v)| Ok((dec::<String>(k)?, self.h.load::<Dynamic>(v)?)))
                .collect::<Result<Vec<_>>>()?,
            other => return Err(crate::client::unexpected(&other)),
        };
        attrs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(NamespaceSnapshot(attrs))
    }

    /// Removes every attribute.
    pub fn clear(&self) -> Result<()> {
        unit(&self.h, Op::Clear)
    }

    /// Adds `delta` to attribute `name` (absent: `T::default()`), atomically on the server;
    /// returns the value before. An attribute of another type is [`Error::Function`].
    pub fn fetch_add<T>(&self, name: &str, delta: T) -> Result<T>
    where
        T: Serialize + DeserializeOwned + AddAssign + Default,
    {
        let (old, _) = apply(&self.h, name, run_add::<T>, enc(&delta)?)?;
        old.map(|d| typed(name, &d))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Replaces attribute `name` with `f(current)` (`None`: absent; returning `None` removes
    /// it), atomically on the server; returns the new value. `f` runs in the server (see
    /// [`Dict::update`](crate::Dict::update)).
    pub fn update<T>(&self, name: &str, f: fn(Option<T>) -> Option<T>) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
    {
        let (_, new) = apply(&self.h, name, run_update::<T>, enc(&RemoteFn::new(f)?)?)?;
        new.map(|d| typed(name, &d)).transpose()
    }
}

impl fmt::Display for Namespace {
    /// Fetches the attributes and prints them as Python does (`Namespace(a=1, b='x')`); a
    /// failed fetch prints as `Namespace(<error: ...>)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.snapshot() {
            Ok(s) => write!(f, "{s}"),
            Err(e) => write!(f, "Namespace(<error: {e}>)"),
        }
    }
}
