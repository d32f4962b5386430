//! The objects a server holds, and the operations each kind accepts.
//!
//! ```text
//! kind        state (behind the object's own lock)      operations
//! Dict        HashMap<key bytes, Stored>                Get Insert Remove Contains SetDefault
//! Namespace   the same, keyed by attribute name          Extend Keys Values Items Len Clear
//!                                                        CompareSet Apply
//! Set         the same, members as keys (values empty)  Insert Remove Contains Extend Keys
//!                                                        Len Clear
//! List        Vec<Stored>                               Index SetIndex Slice Push Append Pop
//! Array       the same, fixed length                    InsertAt Remove Contains Len Clear
//!                                                        CompareSet Apply (Array: no resizing)
//! Value       Stored                                    Load Store CompareSet Apply
//! Queue, Lock, Semaphore, Event, Condition, Barrier:    see `sync`
//! ```
//! A `Stored` value is an item's bytes, which the server never interprets, and a reference to
//! each object whose proxy it holds (see the wire notes): an item is taken in with
//! [`Caller::hold`] and handed out with [`Caller::give`], which gives the caller's session its
//! references. An `Apply` runs the client's update function (a function of this executable)
//! with the object's lock held, and stores what it returns only if it returned normally.
//!
//! An object is an `Arc`: sessions, names, leases and stored values hold it, and the last one
//! gone frees it (and drops it from the server's [`Registry`], where ids are looked up).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::sync::{Barrier, Condition, Event, Lock, OpResult, Queue, Semaphore, fault};
use super::{Caller, op_name};
use crate::custom::{Context, Failure, Invoke, Reply};
use crate::wire::{At, Blob, Fault, Init, Item, Op, Out, Update, UpdateFn};

/// Every live object of a server, by id. Weak: what keeps an object alive is the `Arc`s that
/// reference it; its `Drop` removes it from here.
pub(crate) type Registry = Mutex<HashMap<u64, Weak<Object>>>;

/// An object held by the server.
pub(crate) struct Object {
    pub(crate) id: u64,
    registry: Arc<Registry>,
    pub(crate) state: State,
}

impl Drop for Object {
    fn drop(&mut self) {
        // Never reached with the registry locked: nothing drops an object while holding it.
        self.registry.lock().remove(&self.id);
    }
}

/// A stored value: an item's bytes and the objects its proxies reference.
pub(crate) struct Stored {
    pub(crate) bytes: Item,
    pub(crate) held: Vec<Arc<Object>>,
}

impl Stored {
    /// A value the server made (an update's result), which holds no proxies.
    fn plain(bytes: Item) -> Stored {
        Stored {
            bytes,
            held: Vec::new(),
        }
    }
}

/// The kinds of keyed object.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapKind {
    Dict,
    Namespace,
    Set,
}

impl MapKind {
    fn name(self) -> &'static str {
        match self {
            MapKind::Dict => "Dict",
            MapKind::Namespace => "Namespace",
            MapKind::Set => "Set",
        }
    }

    /// The operations of a Set (the others of a Dict would see its empty values).
    fn set_op(op: &Op) -> bool {
        matches!(
            op,
            Op::Insert(..)
                | Op::Remove(_)
                | Op::Contains(_)
                | Op::Extend(_)
                | Op::Keys
                | Op::Len
                | Op::Clear
        )
    }
}

/// What an object is, and its state.
pub(crate) enum State {
    Map {
        kind: MapKind,
        map: Mutex<HashMap<Blob, Stored>>,
    },
    Seq {
        fixed: bool,
        items: Mutex<Vec<Stored>>,
    },
    Value(Mutex<Stored>),
    Queue(Queue),
    Lock(Arc<Lock>),
    Semaphore(Semaphore),
    Event(Event),
    Condition(Condition),
    Barrier(Barrier),
    /// A custom type's value (see `custom`), under its lock while a method runs.
    Custom {
        name: &'static str,
        value: Mutex<Box<dyn Invoke>>,
    },
}

impl Object {
    /// A new object with id `id`, entered in `registry`; `lock` is the lock object of a
    /// condition.
    pub(crate) fn create(
        caller: &Caller<'_>,
        id: u64,
        init: Init,
        lock: Option<Arc<Object>>,
    ) -> Result<Arc<Object>, Fault> {
        let hold_all = |items: Vec<Item>| -> Result<Vec<Stored>, Fault> {
            items.into_iter().map(|i| caller.hold(i)).collect()
        };
        let state = match init {
            Init::Dict => State::Map {
                kind: MapKind::Dict,
                map: Mutex::new(HashMap::new()),
            },
            Init::Namespace => State::Map {
                kind: MapKind::Namespace,
                map: Mutex::new(HashMap::new()),
            },
            Init::Set => State::Map {
                kind: MapKind::Set,
                map: Mutex::new(HashMap::new()),
            },
            Init::List(items) => State::Seq {
                fixed: false,
                items: Mutex::new(hold_all(items)?),
            },
            Init::Array(items) => State::Seq {
                fixed: true,
                items: Mutex::new(hold_all(items)?),
            },
            Init::Value(v) => State::Value(Mutex::new(caller.hold(v)?)),
            Init::Queue { maxsize, joinable } => State::Queue(Queue::new(maxsize, joinable)),
            Init::Lock { reentrant } => State::Lock(Arc::new(Lock::new(reentrant))),
            Init::Semaphore { value, bounded } => State::Semaphore(Semaphore::new(value, bounded)),
            Init::Event => State::Event(Event::default()),
            Init::Condition { .. } => {
                let lock = match lock.as_deref().map(|o| &o.state) {
                    Some(State::Lock(l)) => Arc::clone(l),
                    Some(_) => {
                        return Err(Fault::Refused(
                            "a condition's lock must be a manager Lock or RLock".into(),
                        ));
                    }
                    None => Arc::new(Lock::new(true)),
                };
                State::Condition(Condition::new(lock))
            }
            Init::Barrier { parties } => {
                if parties == 0 {
                    return Err(Fault::Refused("a barrier needs at least one party".into()));
                }
                State::Barrier(Barrier::new(parties))
            }
            Init::Custom { name, state } => match crate::custom::construct(&name, &state) {
                None => return Err(Fault::NoSuchType(name)),
                Some((_, Err(why))) => return Err(Fault::Refused(why)),
                Some((name, Ok(value))) => State::Custom {
                    name,
                    value: Mutex::new(value),
                },
            },
        };
        let registry = &caller.shared.registry;
        let object = Arc::new(Object {
            id,
            registry: Arc::clone(registry),
            state,
        });
        registry.lock().insert(id, Arc::downgrade(&object));
        Ok(object)
    }

    /// The kind's name, for errors.
    pub(crate) fn kind(&self) -> &'static str {
        match &self.state {
            State::Map { kind, .. } => kind.name(),
            State::Seq { fixed: false, .. } => "List",
            State::Seq { fixed: true, .. } => "Array",
            State::Value(_) => "Value",
            State::Queue(q) if q.joinable() => "JoinableQueue",
            State::Queue(_) => "Queue",
            State::Lock(l) if l.reentrant() => "RLock",
            State::Lock(_) => "Lock",
            State::Semaphore(s) if s.bounded() => "BoundedSemaphore",
            State::Semaphore(_) => "Semaphore",
            State::Event(_) => "Event",
            State::Condition(_) => "Condition",
            State::Barrier(_) => "Barrier",
            State::Custom { name, .. } => name,
        }
    }

    /// Tells the object that a session ended: a lock it held is released as owner-died.
    pub(crate) fn session_ended(&self, session: u64) {
        match &self.state {
            State::Lock(l) => l.session_ended(session),
            State::Condition(c) => c.session_ended(session),
            _ => {}
        }
    }

    /// Runs one operation.
    pub(crate) fn call(&self, caller: &Caller<'_>, op: Op) -> Result<Out, Fault> {
        let result = match &self.state {
            State::Map {
                kind: MapKind::Set, ..
            } if !MapKind::set_op(&op) => Err(Err(op)),
            State::Map { map, .. } => map_op(caller, &mut map.lock(), op),
            State::Seq { fixed, items } => seq_op(caller, &mut items.lock(), *fixed, op),
            State::Value(v) => value_op(caller, &mut v.lock(), op),
            State::Queue(q) => q.call(caller, op),
            State::Lock(l) => l.call(caller, op),
            State::Semaphore(s) => s.call(caller, op),
            State::Event(e) => e.call(caller, op),
            State::Condition(c) => c.call(caller, op),
            State::Barrier(b) => b.call(caller, op),
            State::Custom { name, value } => invoke(caller, name, &mut **value.lock(), op),
        };
        result.map_err(|e| {
            e.unwrap_or_else(|op| Fault::NoSuchMethod {
                kind: self.kind().into(),
                op: op_name(&op),
            })
        })
    }
}

/// A custom object's method.
fn invoke(caller: &Caller<'_>, name: &str, value: &mut dyn Invoke, op: Op) -> OpResult {
    let Op::Invoke {
        method,
        version,
        args,
    } = op
    else {
        return Err(Err(op));
    };
    let mut cx = Context::new(caller);
    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
        value.invoke(&mut cx, &method, version, &args)
    }));
    match ran {
        Ok(Some(Ok(Reply(stored)))) => Ok(Out::Blob(caller.give(&stored))),
        Ok(Some(Err(Failure::Refused(why)))) => Err(fault(Fault::Refused(why))),
        Ok(Some(Err(Failure::Method(why)))) => Err(fault(Fault::Function(format!(
            "{name}::{method} failed: {why}"
        )))),
        Ok(None) => Err(fault(Fault::NoSuchMethod {
            kind: name.into(),
            op: format!("{method} (version {version})"),
        })),
        Err(p) => Err(fault(Fault::Function(format!(
            "{name}::{method} panicked: {}",
            crate::error::panic_message(&*p)
        )))),
    }
}

fn map_op(c: &Caller<'_>, map: &mut HashMap<Blob, Stored>, op: Op) -> OpResult {
    Ok(match op {
        Op::Get(k) => Out::Maybe(map.get(&k).map(|v| c.give(v))),
        Op::Insert(k, v) => Out::Maybe(map.insert(k, c.hold(v)?).map(|old| c.give(&old))),
        Op::Remove(k) => Out::Maybe(map.remove(&k).map(|old| c.give(&old))),
        Op::Contains(k) => Out::Flag(map.contains_key(&k)),
        Op::SetDefault(k, v) => match map.get(&k) {
            Some(v) => Out::Blob(c.give(v)),
            None => {
                let v = c.hold(v)?;
                let out = Out::Blob(c.give(&v));
                map.insert(k, v);
                out
            }
        },
        Op::Extend(pairs) => {
            let held = pairs
                .into_iter()
                .map(|(k, v)| Ok((k, c.hold(v)?)))
                .collect::<Result<Vec<_>, Fault>>()?;
            map.extend(held);
            Out::Unit
        }
        Op::Keys => Out::Blobs(map.keys().cloned().collect()),
        Op::Values => Out::Blobs(map.values().map(|v| c.give(v)).collect()),
        Op::Items => Out::Pairs(map.iter().map(|(k, v)| (k.clone(), c.give(v))).collect()),
        Op::Len => Out::Count(map.len() as u64),
        Op::Clear => {
            map.clear();
            Out::Unit
        }
        Op::CompareSet {
            at: At::Key(k),
            expected,
            new,
        } => {
            let current = map.get(&k);
            if current.map(|v| &v.bytes) != expected.as_ref() {
                return Ok(Out::Swap(Err(current.map(|v| c.give(v)))));
            }
            match new {
                Some(v) => map.insert(k, c.hold(v)?),
                None => map.remove(&k),
            };
            Out::Swap(Ok(()))
        }
        Op::Apply {
            at: At::Key(k),
            update,
        } => {
            let old = map.get(&k).map(|v| v.bytes.clone());
            let new = run_update(&update, old.clone()).map_err(fault)?;
            let out = new.as_ref().map(|v| v.bytes.clone());
            match new {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
            Out::Updated(old, out)
        }
        other => return Err(Err(other)),
    })
}

/// A Python index (negative counts from the end) into a sequence of `len` items.
fn index(i: i64, len: usize) -> Result<usize, Result<Fault, Op>> {
    let n = len as i64;
    let at = if i < 0 { i + n } else { i };
    if (0..n).contains(&at) {
        Ok(at as usize)
    } else {
        Err(fault(Fault::IndexOutOfRange {
            index: i,
            len: len as u64,
        }))
    }
}

/// A Python slice bound, clamped to `0..=len`.
fn clamp(i: i64, len: usize) -> usize {
    let n = len as i64;
    let at = if i < 0 { (i + n).max(0) } else { i.min(n) };
    at as usize
}

fn seq_op(c: &Caller<'_>, items: &mut Vec<Stored>, fixed: bool, op: Op) -> OpResult {
    let resizes = matches!(
        op,
        Op::Push(_) | Op::Append(_) | Op::Pop(_) | Op::InsertAt(..) | Op::Remove(_) | Op::Clear
    );
    if fixed && resizes {
        return Err(Err(op));
    }
    Ok(match op {
        Op::Index(i) => Out::Blob(c.give(&items[index(i, items.len())?])),
        Op::SetIndex(i, v) => {
            let at = index(i, items.len())?;
            let old = std::mem::replace(&mut items[at], c.hold(v)?);
            Out::Blob(c.give(&old))
        }
        Op::Slice { start, stop } => {
            let (a, b) = (clamp(start, items.len()), clamp(stop, items.len()));
            Out::Blobs(if a < b {
                items[a..b].iter().map(|v| c.give(v)).collect()
            } else {
                Vec::new()
            })
        }
        Op::Load => Out::Blobs(items.iter().map(|v| c.give(v)).collect()),
        Op::Push(v) => {
            items.push(c.hold(v)?);
            Out::Unit
        }
        Op::Append(vs) => {
            let held = vs
                .into_iter()
                .map(|v| c.hold(v))
                .collect::<Result<Vec<_>, Fault>>()?;
            items.extend(held);
            Out::Unit
        }
        Op::Pop(at) => {
            if items.is_empty() {
                return Err(fault(Fault::Empty));
            }
            let at = index(at.unwrap_or(-1), items.len())?;
            Out::Blob(c.give(&items.remove(at)))
        }
        Op::InsertAt(i, v) => {
            let v = c.hold(v)?;
            items.insert(clamp(i, items.len()), v);
            Out::Unit
        }
        Op::Remove(v) => match items.iter().position(|x| x.bytes == v) {
            Some(at) => {
                items.remove(at);
                Out::Flag(true)
            }
            None => Out::Flag(false),
        },
        Op::Contains(v) => Out::Flag(items.iter().any(|x| x.bytes == v)),
        Op::Len => Out::Count(items.len() as u64),
        Op::Clear => {
            items.clear();
            Out::Unit
        }
        Op::CompareSet {
            at: At::Index(i),
            expected,
            new,
        } => {
            let at = index(i, items.len())?;
            let Some(new) = new else {
                return Err(fault(Fault::Refused(
                    "a compare-and-set cannot remove a list item".into(),
                )));
            };
            if expected.as_ref() != Some(&items[at].bytes) {
                return Ok(Out::Swap(Err(Some(c.give(&items[at])))));
            }
            items[at] = c.hold(new)?;
            Out::Swap(Ok(()))
        }
        Op::Apply {
            at: At::Index(i),
            update,
        } => {
            let at = index(i, items.len())?;
            let old = items[at].bytes.clone();
            match run_update(&update, Some(old.clone())).map_err(fault)? {
                Some(new) => {
                    let out = new.bytes.clone();
                    items[at] = new;
                    Out::Updated(Some(old), Some(out))
                }
                None => {
                    return Err(fault(Fault::Function(
                        "an update of a list item returned no value".into(),
                    )));
                }
            }
        }
        other => return Err(Err(other)),
    })
}

fn value_op(c: &Caller<'_>, value: &mut Stored, op: Op) -> OpResult {
    Ok(match op {
        Op::Load => Out::Blob(c.give(value)),
        Op::Store(v) => Out::Blob(c.give(&std::mem::replace(value, c.hold(v)?))),
        Op::CompareSet {
            at: At::Whole,
            expected,
            new: Some(new),
        } => {
            if expected.as_ref() != Some(&value.bytes) {
                return Ok(Out::Swap(Err(Some(c.give(value)))));
            }
            *value = c.hold(new)?;
            Out::Swap(Ok(()))
        }
        Op::Apply {
            at: At::Whole,
            update,
        } => {
            let old = value.bytes.clone();
            match run_update(&update, Some(old.clone())).map_err(fault)? {
                Some(new) => {
                    let out = new.bytes.clone();
                    *value = new;
                    Out::Updated(Some(old), Some(out))
                }
                None => {
                    return Err(fault(Fault::Function(
                        "an update of a Value returned no value".into(),
                    )));
                }
            }
        }
        other => return Err(Err(other)),
    })
}

/// Runs a client's update function on the current item; `Ok(new item)` or why not. The
/// function sees and returns plain postcard bytes: a value that holds proxies cannot be updated
/// (the server cannot decode a proxy).
fn run_update(update: &Update, current: Option<Item>) -> Result<Option<Stored>, Fault> {
    let f: UpdateFn = ipc_core::codec::decode_plain(&update.f).map_err(|e| {
        Fault::Function(format!(
            "the update function cannot run in the manager's server (a function of another \
             executable?): {e}"
        ))
    })?;
    let current = match current {
        None => None,
        Some(item) => match crate::wire::item_ids(&item) {
            Some((ids, bytes)) if ids.is_empty() => Some(Blob::from(bytes.to_vec())),
            _ => {
                return Err(Fault::Function(
                    "the value holds proxies: the server cannot run an update on it".into(),
                ));
            }
        },
    };
    let operand = update.operand.clone();
    match std::panic::catch_unwind(AssertUnwindSafe(|| f.call((current, operand)))) {
        Ok(Ok(Ok(new))) => {
            Ok(new.map(|bytes| Stored::plain(crate::wire::item([].into_iter(), &bytes))))
        }
        Ok(Ok(Err(msg))) => Err(Fault::Function(msg)),
        Ok(Err(e)) => Err(Fault::Function(e.to_string())),
        Err(p) => Err(Fault::Function(format!(
            "the update function panicked: {}",
            crate::error::panic_message(&*p)
        ))),
    }
}
