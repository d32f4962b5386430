//! `Dict`, `List`, `Array` and `Value` proxies, and the update functions the server runs for
//! them.
//!
//! ```text
//! read-modify-write, each atomic on the server (under the object's lock):
//!   update(at, f)            f: fn(Option<V>) -> Option<V> (Dict) / fn(T) -> T (List, Array, Value)
//!                            runs in the server: f must be a function of the server's
//!                            executable (a manager this program started; not one reached
//!                            with `connect` from another binary: Error::Function)
//!   fetch_add(at, delta)     the same with `+=`, returns the value before
//!   compare_and_set(at, current, new)
//!                            compares encodings: works with any server, any binary
//! ```

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::ops::{AddAssign, Range};

use ipc_core::process::RemoteFn;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Shared, blob, blobs, count, dec, enc, flag, keys, maybe, or_none, proxy_traits, unit};
use crate::error::{Error, Result};
use crate::wire::{At, Blob, Op, Out, ServerFn, Update, UpdateFn};

/// The update that runs `server_fn` with `operand`.
pub(crate) fn update(server_fn: ServerFn, operand: Blob) -> Result<Update> {
    let f: UpdateFn = RemoteFn::new(server_fn)?;
    Ok(Update {
        f: enc(&f)?,
        operand,
    })
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn decode_in_server<T: DeserializeOwned>(b: &[u8]) -> std::result::Result<T, String> {
    ipc_core::codec::decode_plain(b).map_err(|e| format!("the stored value does not decode: {e}"))
}

fn encode_in_server<T: Serialize>(v: &T) -> std::result::Result<Blob, String> {
    enc(v).map_err(text)
}

/// Server side of `update` on a keyed value: the operand is the user's `RemoteFn`.
fn run_optional<V: Serialize + DeserializeOwned>(
    (current, operand): (Option<Blob>, Blob),
) -> std::result::Result<Option<Blob>, String> {
    let f: RemoteFn<Option<V>, Option<V>> = decode_in_server(&operand)?;
    let current = current.map(|b| decode_in_server::<V>(&b)).transpose()?;
    let new = f.call(current).map_err(text)?;
    new.map(|v| encode_in_server(&v)).transpose()
}

/// Server side of `update` on a present value (list item, array element, Value).
fn run_plain<T: Serialize + DeserializeOwned>(
    (current, operand): (Option<Blob>, Blob),
) -> std::result::Result<Option<Blob>, String> {
    let f: RemoteFn<T, T> = decode_in_server(&operand)?;
    let current: T = decode_in_server(&current.ok_or("no value to update")?)?;
    Ok(Some(encode_in_server(&f.call(current).map_err(text)?)?))
}

/// Server side of `fetch_add`: an absent value counts as `V::default()`.
fn run_add<V: Serialize + DeserializeOwned + AddAssign + Default>(
    (current, operand): (Option<Blob>, Blob),
) -> std::result::Result<Option<Blob>, String> {
    let mut v: V = match current {
        Some(b) => decode_in_server(&b)?,
        None => V::default(),
    };
    v += decode_in_server::<V>(&operand)?;
    Ok(Some(encode_in_server(&v)?))
}

/// The value before an update (absent: `None`).
fn before<V: DeserializeOwned>(h: &Shared, out: Out) -> Result<(Option<V>, Option<V>)> {
    match out {
        Out::Updated(old, new) => Ok((
            old.map(|b| h.load(&b)).transpose()?,
            new.map(|b| h.load(&b)).transpose()?,
        )),
        other => Err(crate::client::unexpected(&other)),
    }
}

fn swap<V: DeserializeOwned>(h: &Shared, out: Out) -> Result<std::result::Result<(), Option<V>>> {
    match out {
        Out::Swap(Ok(())) => Ok(Ok(())),
        Out::Swap(Err(current)) => Ok(Err(current.map(|b| h.load(&b)).transpose()?)),
        other => Err(crate::client::unexpected(&other)),
    }
}

// ---------------------------------------------------------------------------------------------

/// A dictionary held by the manager's server (Python's `manager.dict()`).
///
/// Keys compare by their postcard encoding, which for the usual key types (integers, strings,
/// tuples and structs of them) is the same as comparing the keys. Entries have no order.
///
/// ```
/// let m = ipc_manager::Manager::start()?;
/// let d = m.dict::<String, i64>()?;
/// d.insert("a".into(), 1)?;
/// assert_eq!(d.get("a")?, Some(1));
/// assert_eq!(d.fetch_add("a".into(), 10)?, 1); // atomic on the server
/// assert_eq!(d.update("a".into(), |v| v.map(|x| x * 2))?, Some(22));
/// assert_eq!(d.len()?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "dict")]
pub struct Dict<K, V> {
    pub(crate) h: Shared,
    pub(crate) _t: PhantomData<fn() -> (K, V)>,
}

proxy_traits!(Dict<K, V>, ["Dict"]);

impl<K, V> Dict<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// Sets `key` to `value`; returns the value it had.
    #[doc(alias = "__setitem__")]
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>> {
        maybe(&self.h, Op::Insert(enc(&key)?, self.h.store(&value)?))
    }

    /// The value of `key`.
    #[doc(alias = "__getitem__")]
    pub fn get<Q>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        maybe(&self.h, Op::Get(enc(key)?))
    }

    /// Removes `key`; returns its value.
    #[doc(alias = "pop")]
    #[doc(alias = "__delitem__")]
    pub fn remove<Q>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        maybe(&self.h, Op::Remove(enc(key)?))
    }

    /// Whether `key` is present.
    #[doc(alias = "__contains__")]
    pub fn contains_key<Q>(&self, key: &Q) -> Result<bool>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        flag(&self.h, Op::Contains(enc(key)?))
    }

    /// The value of `key`, after inserting `default` if it was absent (Python's `setdefault`).
    #[doc(alias = "setdefault")]
    pub fn get_or_insert(&self, key: K, default: V) -> Result<V> {
        blob(&self.h, Op::SetDefault(enc(&key)?, self.h.store(&default)?))
    }

    /// Inserts every pair, in one call.
    #[doc(alias = "update")]
    pub fn extend(&self, pairs: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        // The values live until the server holds them: a proxy among them keeps its object.
        let pairs: Vec<(K, V)> = pairs.into_iter().collect();
        let encoded = pairs
            .iter()
            .map(|(k, v)| Ok((enc(k)?, self.h.store(v)?)))
            .collect::<Result<Vec<_>>>()?;
        unit(&self.h, Op::Extend(encoded))
    }

    /// The number of entries.
    #[doc(alias = "__len__")]
    pub fn len(&self) -> Result<usize> {
        count(&self.h, Op::Len).map(|n| n as usize)
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        unit(&self.h, Op::Clear)
    }

    /// The keys, as one snapshot.
    pub fn keys(&self) -> Result<Vec<K>> {
        keys(&self.h)
    }

    /// The values, as one snapshot.
    pub fn values(&self) -> Result<Vec<V>> {
        blobs(&self.h, Op::Values)
    }

    /// The entries, as one snapshot.
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        match self.h.call(Op::Items)? {
            Out::Pairs(p) => p
                .iter()
                .map(|(k, v)| Ok((dec(k)?, self.h.load(v)?)))
                .collect(),
            other => Err(crate::client::unexpected(&other)),
        }
    }

    /// A local copy (Python's `copy()`).
    #[doc(alias = "copy")]
    pub fn to_map(&self) -> Result<HashMap<K, V>>
    where
        K: Eq + Hash,
    {
        Ok(self.items()?.into_iter().collect())
    }

    /// Replaces the value of `key` with `f(current)` (`None`: absent; returning `None` removes
    /// the key), atomically on the server; returns the new value. `f` runs in the server
    /// process, so it must be a function of the server's executable (see the module notes);
    /// a panic in `f` is [`Error::Function`] and leaves the value unchanged.
    pub fn update(&self, key: K, f: fn(Option<V>) -> Option<V>) -> Result<Option<V>> {
        let u = update(run_optional::<V>, enc(&RemoteFn::new(f)?)?)?;
        let out = self.h.call(Op::Apply {
            at: At::Key(enc(&key)?),
            update: u,
        })?;
        Ok(before::<V>(&self.h, out)?.1)
    }

    /// Adds `delta` to the value of `key` (absent: `V::default()`), atomically on the server;
    /// returns the value before.
    pub fn fetch_add(&self, key: K, delta: V) -> Result<V>
    where
        V: AddAssign + Default,
    {
        let u = update(run_add::<V>, enc(&delta)?)?;
        let out = self.h.call(Op::Apply {
            at: At::Key(enc(&key)?),
            update: u,
        })?;
        Ok(before::<V>(&self.h, out)?.0.unwrap_or_default())
    }

    /// Sets `key` to `new` (`None` removes it) if its value is `current` (`None`: absent), as
    /// one step on the server; otherwise returns what it is. Values compare by encoding.
    pub fn compare_and_set(
        &self,
        key: K,
        current: Option<&V>,
        new: Option<&V>,
    ) -> Result<std::result::Result<(), Option<V>>> {
        let out = self.h.call(Op::CompareSet {
            at: At::Key(enc(&key)?),
            expected: current.map(|v| self.h.store(v)).transpose()?,
            new: new.map(|v| self.h.store(v)).transpose()?,
        })?;
        swap(&self.h, out)
    }
}

// ---------------------------------------------------------------------------------------------

/// A set held by the manager's server: members compare by their postcard encoding, as a
/// [`Dict`]'s keys do (so a member cannot be a proxy).
///
/// ```
/// let m = ipc_manager::Manager::start()?;
/// let s = m.set::<String>()?;
/// assert!(s.insert(&"a".into())?);
/// assert!(!s.insert(&"a".into())?, "already a member");
/// s.extend(["b".to_string(), "c".to_string()])?;
/// assert!(s.contains("b")?);
/// assert!(s.remove("c")?);
/// assert_eq!(s.len()?, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "set")]
pub struct Set<T> {
    pub(crate) h: Shared,
    pub(crate) _t: PhantomData<fn() -> T>,
}

proxy_traits!(Set<T>, ["Set"]);

impl<T: Serialize + DeserializeOwned> Set<T> {
    /// Adds `member`; whether it was not a member before.
    #[doc(alias = "add")]
    pub fn insert(&self, member: &T) -> Result<bool> {
        match self.h.call(Op::Insert(enc(member)?, empty()))? {
            Out::Maybe(old) => Ok(old.is_none()),
            other => Err(crate::client::unexpected(&other)),
        }
    }

    /// Removes `member`; whether it was a member (Python's `discard`, and `remove` without
    /// the `KeyError`).
    #[doc(alias = "discard")]
    pub fn remove<Q>(&self, member: &Q) -> Result<bool>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        match self.h.call(Op::Remove(enc(member)?))? {
            Out::Maybe(old) => Ok(old.is_some()),
            other => Err(crate::client::unexpected(&other)),
        }
    }

    /// Whether `member` is a member.
    #[doc(alias = "__contains__")]
    pub fn contains<Q>(&self, member: &Q) -> Result<bool>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        flag(&self.h, Op::Contains(enc(member)?))
    }

    /// Adds every member, in one call.
    #[doc(alias = "update")]
    pub fn extend(&self, members: impl IntoIterator<Item = T>) -> Result<()> {
        let pairs = members
            .into_iter()
            .map(|m| Ok((enc(&m)?, empty())))
            .collect::<Result<Vec<_>>>()?;
        unit(&self.h, Op::Extend(pairs))
    }

    /// The number of members.
    #[doc(alias = "__len__")]
    pub fn len(&self) -> Result<usize> {
        count(&self.h, Op::Len).map(|n| n as usize)
    }

    /// Whether the set has no members.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes every member.
    pub fn clear(&self) -> Result<()> {
        unit(&self.h, Op::Clear)
    }

    /// The members, in no particular order.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        keys(&self.h)
    }

    /// The members as a `HashSet`.
    pub fn to_set(&self) -> Result<std::collections::HashSet<T>>
    where
        T: Eq + Hash,
    {
        Ok(self.to_vec()?.into_iter().collect())
    }
}

/// A Set's value for each member: the item of nothing.
fn empty() -> Blob {
    crate::wire::item([].into_iter(), &[])
}

/// A list held by the manager's server (Python's `manager.list()`).
///
/// Indices are Python's: negative ones count from the end.
///
/// ```
/// let m = ipc_manager::Manager::start()?;
/// let l = m.list(vec![1, 2, 3])?;
/// l.push(4)?;
/// assert_eq!(l.get(-1)?, 4);
/// assert_eq!(l.slice(1..3)?, vec![2, 3]);
/// assert_eq!(l.pop()?, Some(4));
/// assert_eq!(l.iter().collect::<Result<Vec<i32>, _>>()?, vec![1, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "list")]
pub struct List<T> {
    pub(crate) h: Shared,
    pub(crate) _t: PhantomData<fn() -> T>,
}

proxy_traits!(List<T>, ["List"]);

impl<T: Serialize + DeserializeOwned> List<T> {
    /// Appends `item`.
    #[doc(alias = "append")]
    pub fn push(&self, item: T) -> Result<()> {
        unit(&self.h, Op::Push(self.h.store(&item)?))
    }

    /// Appends every item, in one call.
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items: Vec<T> = items.into_iter().collect();
        unit(
            &self.h,
            Op::Append(self.h.handle.client.store_each(&items)?),
        )
    }

    /// Removes and returns the last item (`None` when empty).
    pub fn pop(&self) -> Result<Option<T>> {
        or_none(blob(&self.h, Op::Pop(None)))
    }

    /// Removes and returns the item at `index`.
    pub fn pop_at(&self, index: i64) -> Result<T> {
        blob(&self.h, Op::Pop(Some(index)))
    }

    /// Inserts `item` before `index` (clamped to the list, as Python's `insert`).
    pub fn insert(&self, index: i64, item: T) -> Result<()> {
        unit(&self.h, Op::InsertAt(index, self.h.store(&item)?))
    }

    /// Removes the first item equal to `item` (by encoding); whether there was one.
    pub fn remove_item(&self, item: &T) -> Result<bool> {
        flag(&self.h, Op::Remove(self.h.store(item)?))
    }

    /// Whether an item equals `item` (by encoding).
    pub fn contains(&self, item: &T) -> Result<bool> {
        flag(&self.h, Op::Contains(self.h.store(item)?))
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<()> {
        unit(&self.h, Op::Clear)
    }

    /// Replaces the item at `index` with `f(item)`, atomically on the server; returns the new
    /// item (see [`Dict::update`] for where `f` runs).
    pub fn update(&self, index: i64, f: fn(T) -> T) -> Result<T> {
        seq_update(&self.h, index, f)
    }
}

/// Methods of both [`List`] and [`Array`].
macro_rules! sequence_methods {
    ($name:ident) => {
        impl<T: Serialize + DeserializeOwned> $name<T> {
            /// The item at `index`.
            #[doc(alias = "__getitem__")]
            pub fn get(&self, index: i64) -> Result<T> {
                blob(&self.h, Op::Index(index))
            }

            /// Replaces the item at `index`; returns the one it replaced.
            #[doc(alias = "__setitem__")]
            pub fn set(&self, index: i64, item: T) -> Result<T> {
                blob(&self.h, Op::SetIndex(index, self.h.store(&item)?))
            }

            /// The items in `range` (clamped, as a Python slice).
            pub fn slice(&self, range: Range<i64>) -> Result<Vec<T>> {
                blobs(
                    &self.h,
                    Op::Slice {
                        start: range.start,
                        stop: range.end,
                    },
                )
            }

            /// Every item, as one snapshot.
            pub fn to_vec(&self) -> Result<Vec<T>> {
                blobs(&self.h, Op::Load)
            }

            /// The number of items.
            #[doc(alias = "__len__")]
            pub fn len(&self) -> Result<usize> {
                count(&self.h, Op::Len).map(|n| n as usize)
            }

            /// Whether there are no items.
            pub fn is_empty(&self) -> Result<bool> {
                Ok(self.len()? == 0)
            }

            /// Sets the item at `index` to `new` if it is `current`, as one step on the
            /// server; otherwise returns what it is.
            pub fn compare_and_set(
                &self,
                index: i64,
                current: &T,
                new: &T,
            ) -> Result<std::result::Result<(), T>> {
                let out = self.h.call(Op::CompareSet {
                    at: At::Index(index),
                    expected: Some(self.h.store(current)?),
                    new: Some(self.h.store(new)?),
                })?;
                Ok(swap(&self.h, out)?.map_err(|now| now.expect("an item is present")))
            }

            /// Reads item after item, one call each, until the end: items added meanwhile
            /// are seen, as iterating over a Python list proxy sees them.
            pub fn iter(&self) -> ListIter<'_, T> {
                ListIter {
                    h: &self.h,
                    next: 0,
                    _t: PhantomData,
                }
            }
        }
    };
}

sequence_methods!(List);
sequence_methods!(Array);

fn seq_update<T: Serialize + DeserializeOwned>(h: &Shared, index: i64, f: fn(T) -> T) -> Result<T> {
    let u = update(run_plain::<T>, enc(&RemoteFn::new(f)?)?)?;
    let out = h.call(Op::Apply {
        at: At::Index(index),
        update: u,
    })?;
    before::<T>(h, out)?
        .1
        .ok_or_else(|| Error::Function("the update returned no item".into()))
}

/// An iterator over a [`List`] or [`Array`] that reads one item per call (see
/// [`List::iter`]).
pub struct ListIter<'a, T> {
    h: &'a Shared,
    next: i64,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for ListIter<'_, T> {
    type Item = Result<T>;
    fn next(&mut self) -> Option<Result<T>> {
        match blob(self.h, Op::Index(self.next)) {
            Ok(v) => {
                self.next += 1;
                Some(Ok(v))
            }
            Err(Error::IndexOutOfRange { .. }) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// A fixed-length array held by the manager's server (Python's `manager.Array`).
///
/// ```
/// let m = ipc_manager::Manager::start()?;
/// let a = m.array(vec![0u32; 4])?;
/// a.set(2, 7)?;
/// assert_eq!(a.update(2, |x| x + 1)?, 8);
/// assert_eq!(a.to_vec()?, vec![0, 0, 8, 0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Array<T> {
    pub(crate) h: Shared,
    pub(crate) _t: PhantomData<fn() -> T>,
}

proxy_traits!(Array<T>, ["Array"]);

impl<T: Serialize + DeserializeOwned> Array<T> {
    /// Replaces the element at `index` with `f(element)`, atomically on the server; returns
    /// the new element (see [`Dict::update`] for where `f` runs).
    pub fn update(&self, index: i64, f: fn(T) -> T) -> Result<T> {
        seq_update(&self.h, index, f)
    }

    /// Adds `delta` to the element at `index`, atomically on the server; returns the element
    /// before.
    pub fn fetch_add(&self, index: i64, delta: T) -> Result<T>
    where
        T: AddAssign + Default,
    {
        let u = update(run_add::<T>, enc(&delta)?)?;
        let out = self.h.call(Op::Apply {
            at: At::Index(index),
            update: u,
        })?;
        Ok(before::<T>(&self.h, out)?.0.unwrap_or_default())
    }
}

// ---------------------------------------------------------------------------------------------

/// One value held by the manager's server (Python's `manager.Value`).
///
/// ```
/// let m = ipc_manager::Manager::start()?;
/// let v = m.value(10u64)?;
/// assert_eq!(v.fetch_add(5)?, 10);
/// assert_eq!(v.compare_and_set(&15, &0)?, Ok(()));
/// assert_eq!(v.get()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Value<T> {
    pub(crate) h: Shared,
    pub(crate) _t: PhantomData<fn() -> T>,
}

proxy_traits!(Value<T>, ["Value"]);

impl<T: Serialize + DeserializeOwned> Value<T> {
    /// The value.
    #[doc(alias = "value")]
    pub fn get(&self) -> Result<T> {
        blob(&self.h, Op::Load)
    }

    /// Replaces the value; returns the one it replaced.
    pub fn set(&self, value: T) -> Result<T> {
        blob(&self.h, Op::Store(self.h.store(&value)?))
    }

    /// Replaces the value with `f(value)`, atomically on the server; returns the new value
    /// (see [`Dict::update`] for where `f` runs).
    pub fn update(&self, f: fn(T) -> T) -> Result<T> {
        let u = update(run_plain::<T>, enc(&RemoteFn::new(f)?)?)?;
        let out = self.h.call(Op::Apply {
            at: At::Whole,
            update: u,
        })?;
        before::<T>(&self.h, out)?
            .1
            .ok_or_else(|| Error::Function("the update returned no value".into()))
    }

    /// Adds `delta`, atomically on the server; returns the value before.
    pub fn fetch_add(&self, delta: T) -> Result<T>
    where
        T: AddAssign + Default,
    {
        let u = update(run_add::<T>, enc(&delta)?)?;
        let out = self.h.call(Op::Apply {
            at: At::Whole,
            update: u,
        })?;
        Ok(before::<T>(&self.h, out)?.0.unwrap_or_default())
    }

    /// Sets the value to `new` if it is `current`, as one step on the server; otherwise
    /// returns what it is.
    pub fn compare_and_set(&self, current: &T, new: &T) -> Result<std::result::Result<(), T>> {
        let out = self.h.call(Op::CompareSet {
            at: At::Whole,
            expected: Some(self.h.store(current)?),
            new: Some(self.h.store(new)?),
        })?;
        Ok(swap(&self.h, out)?.map_err(|now| now.expect("a Value always holds one")))
    }
}
